"""Evaluation: datasets, scorers, tool-call matching, metrics, gates and the runner
writing its results into the trace store next to the runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from agentlab.agents import RunResult
from agentlab.demo import build_support_agent, create_demo_database
from agentlab.errors import UserError
from agentlab.evals import (
    Case,
    CaseResult,
    Dataset,
    DatasetError,
    ExpectedToolCall,
    MadeCall,
    Score,
    build_scorer,
    compute_metrics,
    evaluate,
    evaluate_sync,
    load_dataset,
    made_calls,
    match_tool_calls,
    registry,
    scorer,
)
from agentlab.evals.report import EvalReport
from agentlab.evals.scorers import outcome_scorer
from agentlab.events import EvalCaseResult, EvalRunSummary, dump_event, parse_event
from agentlab.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore
from agentlab.usage import Usage

SUPPORT_DATASET = Path(__file__).parents[1] / "evals" / "support_agent.jsonl"
Reply = AssistantMessage | str
ReplyFunction = Callable[[Sequence[Message], Sequence[ToolDefinition]], Reply]


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    registry.reset()
    yield
    registry.reset()


def _case(**fields) -> Case:
    data = {"id": "c1", "input": "q", "expected_outcome": {"kind": "contains", "value": "x"}}
    return Case.model_validate({**data, **fields})


def _result(output: str | None = "ok", status: str = "completed", **fields) -> RunResult:
    values = {
        "run_id": "r1",
        "status": status,
        "output": output,
        "explanation": None if status == "completed" else "the model was unreachable",
        "steps": 1,
        "tools_called": [],
        "usage": Usage(),
        "cost": 0.0,
        "latency_ms": 1.0,
        "messages": [],
    }
    return RunResult(**{**values, **fields})


# -- datasets -------------------------------------------------------------------------------


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"id": "a", "input": "q", "expected_outcome": {"kind": "exact", "value": "yes"}})


def test_load_dataset_reads_cases(tmp_path):
    path = _write(tmp_path, GOOD, "", json.dumps({**json.loads(GOOD), "id": "b", "tags": ["t"]}))
    dataset = load_dataset(path)
    assert (dataset.name, len(dataset), [c.id for c in dataset]) == ("cases", 2, ["a", "b"])
    assert dataset.cases[1].tags == ["t"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", r"line 2: not valid JSON"),
        (
            json.dumps({"id": "b", "input": "q"}),
            r"line 2: field 'expected_outcome': Field required",
        ),
        (
            json.dumps(
                {"id": "b", "input": "q", "expected_outcome": {"kind": "fuzzy", "value": 1}}
            ),
            r"line 2: field 'expected_outcome.kind': Input should be 'exact'.*"
            r"field 'expected_outcome.value'",
        ),
        (
            json.dumps(
                {"id": "b", "input": "q", "expected_outcome": {"kind": "regex", "value": "("}}
            ),
            r"line 2: field 'expected_outcome': value is not a valid regular expression",
        ),
        (
            json.dumps(
                {
                    "id": "b",
                    "input": "q",
                    "expected_outcome": {"kind": "exact", "value": "y"},
                    "expected_tool_calls": [{"arguments": {}}],
                }
            ),
            r"line 2: field 'expected_tool_calls.0.name': Field required",
        ),
        (
            json.dumps({**json.loads(GOOD), "max_steps": 0}),
            r"line 2: field 'max_steps': Input should be greater than or equal to 1",
        ),
        (GOOD, r"line 2: the case id 'a' is already used on line 1"),
    ],
)
def test_load_dataset_errors_name_file_line_and_field(tmp_path, bad, message):
    path = _write(tmp_path, GOOD, bad)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, UserError)


def test_load_dataset_refuses_empty_and_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="has no cases"):
        load_dataset(_write(tmp_path, ""))
    with pytest.raises(DatasetError, match="cannot read the dataset"):
        load_dataset(tmp_path / "nope.jsonl")


# -- scorers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "output", "passed"),
    [
        ({"kind": "exact", "value": "Delivered"}, "  delivered ", True),
        ({"kind": "exact", "value": "Delivered", "case_sensitive": True}, "delivered", False),
        ({"kind": "exact", "value": "delivered"}, "it was delivered", False),
        ({"kind": "contains", "value": "DHL"}, "Shipped with dhl.", True),
        ({"kind": "contains", "value": "DHL", "case_sensitive": True}, "Shipped with dhl.", False),
        ({"kind": "contains", "value": "UPS"}, "Shipped with DHL.", False),
        ({"kind": "regex", "value": r"\bO-10\d\d\b"}, "Your order is o-1013.", True),
        ({"kind": "regex", "value": r"O-10\d\d", "case_sensitive": True}, "o-1013", False),
        ({"kind": "regex", "value": r"^no$"}, "maybe", False),
    ],
)
def test_outcome_kinds(outcome, output, passed):
    case = _case(expected_outcome=outcome)
    built = build_scorer(
        outcome["kind"], value=outcome["value"], case_sensitive=outcome.get("case_sensitive", False)
    )
    score = built(case, _result(output))
    assert (score.passed, score.value) == (passed, 1.0 if passed else 0.0)
    assert score.explanation


def test_a_run_that_did_not_complete_scores_zero():
    score = build_scorer("contains", value="x")(_case(), _result(None, status="failed"))
    assert not score.passed
    assert "failed" in score.explanation and "unreachable" in score.explanation


def test_mentions_scores_the_share_of_checks_that_hold():
    built = build_scorer("mentions", any_of=["don't have"], none_of=["30 days"])
    assert built(_case(), _result("I don't have our refund policy.")).passed
    half = built(_case(), _result("I don't have it; you get 30 days."))
    assert (half.passed, half.value) == (False, 0.5)
    assert "30 days" in half.explanation
    with pytest.raises(UserError, match="needs all_of, any_of or none_of"):
        build_scorer("mentions")


def test_custom_scorers_register_with_their_kwargs_and_rebuild():
    @scorer("max_length")
    def max_length(limit: int) -> Callable[[Case, RunResult], Score]:
        def score(case: Case, result: RunResult) -> Score:
            ok = len(result.output or "") <= limit
            return Score(float(ok), ok, f"{len(result.output or '')} chars (limit {limit})")

        return score

    built = max_length(limit=5)
    assert built.spec == {"name": "max_length", "kwargs": {"limit": 5}}
    assert built(_case(), _result("short")).passed
    rebuilt = build_scorer(built.spec["name"], **built.spec["kwargs"])
    assert not rebuilt(_case(), _result("far too long")).passed
    with pytest.raises(UserError, match=r"scorer 'max_length' cannot take kwargs \{'size': 1\}"):
        build_scorer("max_length", size=1)

    @scorer("max_length")  # re-running a notebook cell redefines it
    def max_length(limit: int) -> Callable[[Case, RunResult], Score]:
        return lambda case, result: Score(1.0, True, "always")

    assert max_length(limit=1)(_case(), _result("far too long")).explanation == "always"

    with pytest.raises(UserError, match="already registered"):
        registry.register("max_length", lambda: None)

    registry.reset()
    assert "max_length" not in registry.names()
    assert {"exact", "contains", "regex", "mentions"} <= set(registry.names())
    with pytest.raises(UserError, match=r"no scorer is registered as 'max_length'; known: "):
        build_scorer("max_length", limit=5)


# -- tool-call matching ---------------------------------------------------------------------


def _expected(*specs: dict) -> list[ExpectedToolCall]:
    return [ExpectedToolCall.model_validate(s) for s in specs]


def test_tool_calls_match_by_argument_subset_and_alternatives():
    expected = _expected(
        {"name": "get_order", "arguments": {"order_id": "O-1001"}},
        {
            "name": "find_customer",
            "arguments": {"email": "ana@example.com"},
            "alternatives": [{"name": "list_orders", "arguments": {"customer_id": "C-001"}}],
        },
    )
    made = [
        MadeCall("get_order", {"order_id": "O-1001", "verbose": True}),  # extra args are fine
        MadeCall("list_orders", {"customer_id": "C-001"}),  # the alternative
        MadeCall("get_order", {"order_id": "O-1001"}),  # a repeat: made, not matched
        MadeCall("get_order", None),  # malformed arguments
    ]
    match = match_tool_calls(expected, made)
    assert (match.expected, match.made, match.matched) == (2, 4, 2)
    wrong_args = match_tool_calls(expected, [MadeCall("get_order", {"order_id": "O-1002"})])
    assert wrong_args.matched == 0


def test_tool_call_matching_finds_the_best_pairing():
    # A greedy pairing would give the first made call to the first expectation.
    expected = _expected(
        {"name": "a", "alternatives": [{"name": "b"}]},
        {"name": "b"},
    )
    assert match_tool_calls(expected, [MadeCall("b", {}), MadeCall("a", {})]).matched == 2
    assert match_tool_calls(expected, [MadeCall("b", {})]).matched == 1


def test_made_calls_reads_the_run_messages():
    messages = [
        UserMessage(content="q"),
        AssistantMessage(
            tool_calls=(
                ToolCall(id="1", name="get_order", arguments='{"order_id": "O-1001"}'),
                ToolCall(id="2", name="get_order", arguments="{oops"),
            )
        ),
        ToolMessage(tool_call_id="1", name="get_order", content="{}"),
        AssistantMessage(content="done"),
    ]
    assert made_calls(_result(messages=messages)) == [
        MadeCall("get_order", {"order_id": "O-1001"}),
        MadeCall("get_order", None),
    ]


# -- metrics and gates ----------------------------------------------------------------------


def _row(case_id: str, passed: bool, **fields) -> CaseResult:
    values = {
        "run_id": f"run-{case_id}",
        "status": "completed",
        "score": float(passed),
        "explanation": "",
        "steps": 2,
        "cost": 0.01,
        "latency_ms": 100.0,
        "calls_expected": 1,
        "calls_made": 1,
        "calls_matched": 1,
        "tags": [],
    }
    return CaseResult(case_id=case_id, passed=passed, **{**values, **fields})


def test_metrics_on_hand_made_results():
    rows = [
        _row("a", True, steps=1, latency_ms=10.0, tags=["adversarial"]),
        _row("b", True, steps=2, latency_ms=20.0, calls_made=2, cost=0.03),
        _row("c", False, steps=3, latency_ms=30.0, calls_matched=0, tags=["adversarial"]),
        _row("d", True, steps=6, latency_ms=1000.0, calls_expected=2, cost=None),
    ]
    m = compute_metrics(rows)
    assert (m.cases, m.passed, m.task_completion_rate, m.avg_steps) == (4, 3, 0.75, 3.0)
    assert m.tool_precision == pytest.approx(3 / 5)  # matched 3 of 5 made
    assert m.tool_recall == pytest.approx(3 / 5)  # matched 3 of 5 expected
    assert m.cost_per_task == pytest.approx((0.01 + 0.03 + 0.01) / 3)  # unknown cost skipped
    assert (m.latency_p50_ms, m.latency_p95_ms) == (20.0, 1000.0)
    assert {t: (c.cases, c.passed) for t, c in m.tags.items()} == {"adversarial": (2, 1)}


def test_metrics_of_nothing_and_of_no_calls():
    empty = compute_metrics([])
    assert (empty.task_completion_rate, empty.latency_p95_ms, empty.cost_per_task) == (0, 0, None)
    none = compute_metrics([_row("a", True, calls_expected=0, calls_made=0, calls_matched=0)])
    assert (none.tool_precision, none.tool_recall) == (1.0, 1.0)


def _report(rows: list[CaseResult]) -> EvalReport:
    return EvalReport("e" * 32, "n", "d", "agent", "model", compute_metrics(rows), rows)


def test_gates_pass_fail_and_refuse_unknown_metrics():
    report = _report([_row("a", True, latency_ms=500.0), _row("b", False, latency_ms=900.0)])
    assert report.check_gates({"task_completion_rate": ">=0.5", "latency_p95_ms": "<= 1000"}) == []
    failures = report.check_gates({"task_completion_rate": ">0.6", "tool_recall": "==1"})
    assert [f.metric for f in failures] == ["task_completion_rate"]
    assert str(failures[0]) == "task_completion_rate is 0.5; the gate requires >0.6"
    unpriced = _report([_row("a", True, cost=None)])
    assert "cost_per_task was not measured" in str(
        unpriced.check_gates({"cost_per_task": "<=0.1"})[0]
    )
    with pytest.raises(UserError, match=r"unknown metric 'accuracy'.*task_completion_rate"):
        report.check_gates({"accuracy": ">=0.5"})
    with pytest.raises(UserError, match=r"like '>=0.8'"):
        report.check_gates({"task_completion_rate": "0.5"})


def test_report_table_and_dict():
    report = _report([_row("order-status", True), _row("refund", False, explanation="lacks x")])
    text = str(report)
    assert "order-status" in text and "NO" in text and "lacks x" in text
    assert "task_completion_rate 0.50 (1/2)" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["metrics"]["task_completion_rate"] == 0.5
    assert [r["case_id"] for r in data["results"]] == ["order-status", "refund"]
    assert '<table class="agentlab-eval-cases">' in report._repr_html_()
    assert "results" not in report.to_dict(results=False)


def test_a_long_report_lists_failed_cases_first_and_says_where_the_rest_are():
    report = _report([_row(f"ok-{i}", True) for i in range(60)] + [_row("bad", False)])
    table = report.table(max_rows=5)
    listed = [line.split()[0] for line in table.splitlines()[2:7]]
    assert listed == ["ok-0", "ok-1", "ok-2", "ok-3", "bad"]  # dataset order, the failure kept
    assert (
        "... 56 more cases (all of them: SELECT * FROM eval_results WHERE eval_id = 'eee" in table
    )
    assert "ok-59" in str(report) and "more cases" not in str(report)
    html = report._repr_html_()  # the notebook view: failures first, up to HTML_MAX_ROWS
    assert html.index(">bad<") < html.index(">ok-0<") and ">ok-48<" in html
    assert ">ok-49<" not in html and "11 more cases" in html


def test_on_case_is_told_of_each_case_as_it_is_recorded(tmp_path):
    seen: list[tuple[str, bool, int, int]] = []
    agent = build_support_agent(
        "scripted:schema", db_path=tmp_path / "shop.duckdb", trace=tmp_path / "ws"
    )
    cases = load_dataset(SUPPORT_DATASET).cases[:3]
    report = evaluate_sync(
        agent,
        Dataset(cases, name="three"),
        on_case=lambda r, done, total: seen.append((r.case_id, r.passed, done, total)),
    )
    assert seen == [(r.case_id, r.passed, i, 3) for i, r in enumerate(report.results, 1)]


def test_eval_events_round_trip():
    case = EvalCaseResult(
        eval_id="e",
        case_id="c",
        run_id="r",
        passed=True,
        score=1.0,
        explanation="ok",
        scorer={"name": "contains", "kwargs": {"value": "x"}},
        tags=["t"],
        calls_expected=1,
        calls_made=1,
        calls_matched=1,
        steps=2,
        latency_ms=3.0,
        ended_at=4.0,
    )
    summary = EvalRunSummary(
        eval_id="e",
        name="n",
        dataset="d",
        agent="a",
        model="m",
        cases=1,
        metrics={"task_completion_rate": 1.0},
        started_at=1.0,
        ended_at=2.0,
    )
    for event in (case, summary):
        assert parse_event(dump_event(event)) == event


# -- the runner on the demo agent, with scripted models --------------------------------------


def oracle(dataset: Dataset, answer: Callable[[list[str]], str]) -> ReplyFunction:
    """A scripted model that makes each case's expected tool calls (in one step), then
    answers with `answer(tool results)`."""
    cases = {case.input: case for case in dataset}

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Reply:
        question = next(m.content for m in messages if isinstance(m, UserMessage))
        results = [m.content for m in messages if isinstance(m, ToolMessage)]
        calls = cases[question].expected_tool_calls
        if results or not calls:
            return answer(results)
        return AssistantMessage(
            tool_calls=tuple(
                ToolCall(id=f"call_{i}", name=c.name, arguments=json.dumps(c.arguments))
                for i, c in enumerate(calls)
            )
        )

    return reply


def _read_results(results: list[str]) -> str:
    return " ".join(results) if results else "Sorry, I don't have that information."


def _answer(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Reply:
    return "x"


@pytest.fixture
def shop(tmp_path) -> Path:
    return create_demo_database(tmp_path / "shop.duckdb")


def test_support_dataset_is_valid_for_the_demo_agent(shop):
    dataset = load_dataset(SUPPORT_DATASET)
    assert len(dataset) >= 15
    assert sum("adversarial" in c.tags for c in dataset) * 3 >= len(dataset)
    tools = {
        t.name: t
        for t in build_support_agent(FunctionModel(_answer), db_path=shop, trace=False).tools
    }
    for case in dataset:
        for expected in case.expected_tool_calls:
            for call in (expected, *expected.alternatives):
                assert call.name in tools, f"case {case.id}: no demo tool {call.name!r}"
                tools[call.name].validate(json.dumps(call.arguments))
        outcome_scorer(case.expected_outcome)  # a registered scorer with valid kwargs


async def test_evaluate_records_results_next_to_the_runs(shop, tmp_path):
    dataset = load_dataset(SUPPORT_DATASET)
    store = TraceStore(tmp_path / "ws")
    model = FunctionModel(oracle(dataset, _read_results), name="oracle")
    agent = build_support_agent(model, db_path=shop, trace=store)
    report = await evaluate(agent, dataset, concurrency=4, metadata={"model_param": "oracle"})

    # The oracle's answers quote the tool results: every fact of the dataset is in seed.sql.
    failed = [(r.case_id, r.explanation) for r in report.results if not r.passed]
    assert failed == []
    m = report.metrics
    assert (m.task_completion_rate, m.tool_precision, m.tool_recall) == (1.0, 1.0, 1.0)
    assert [r.case_id for r in report.results] == [c.id for c in dataset]
    assert m.tags["adversarial"].cases == 9
    assert report.check_gates({"task_completion_rate": ">=0.6", "latency_p95_ms": "<=20000"}) == []

    rows = store.sql(
        "SELECT e.case_id, r.metadata->>'case_id', r.metadata->>'model_param', e.passed, "
        "e.scorer->>'name', r.status, r.agent FROM eval_results e JOIN runs r USING (run_id) "
        "WHERE e.eval_id = ? ORDER BY e.case_id",
        [report.eval_id],
    )
    assert len(rows) == len(dataset)
    assert all(r[0] == r[1] and r[2] == "oracle" and r[3] and r[5] == "completed" for r in rows)
    assert {r[4] for r in rows} == {"contains", "regex", "mentions"}
    calls = store.sql(
        "SELECT count(*) FROM eval_results JOIN tool_calls USING (run_id) WHERE eval_id = ?",
        [report.eval_id],
    )
    assert calls[0][0] == sum(r.calls_made for r in report.results)
    (summary,) = store.sql(
        "SELECT name, dataset, model, cases, metrics->>'task_completion_rate', "
        "metadata->>'model_param' FROM eval_runs WHERE eval_id = ?",
        [report.eval_id],
    )
    assert summary == ("support_agent", "support_agent", "scripted:oracle", 22, "1.0", "oracle")
    print(report)


def test_wrong_answers_and_wrong_calls_lower_the_metrics(shop, tmp_path):
    dataset = load_dataset(SUPPORT_DATASET)
    confident = FunctionModel(oracle(dataset, lambda results: "All good, it arrives tomorrow."))
    agent = build_support_agent(confident, db_path=shop, trace=tmp_path / "ws")
    report = evaluate_sync(agent, SUPPORT_DATASET, name="confident")  # a path works too
    assert report.metrics.task_completion_rate < 0.2
    assert report.metrics.tool_recall == 1.0
    assert report.check_gates({"task_completion_rate": ">=0.6"})[0].metric == "task_completion_rate"

    def no_tools(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Reply:
        return "Order O-1003 was delivered."

    lazy = build_support_agent(FunctionModel(no_tools), db_path=shop, trace=tmp_path / "ws")
    lazy_report = evaluate_sync(lazy, dataset)
    assert lazy_report.metrics.tool_recall == 0.0
    assert lazy_report.results[0].passed  # right answer, no evidence: recall shows it


def test_case_max_steps_limits_that_case_only(shop, workspace):
    def loops(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Reply:
        n = sum(isinstance(m, ToolMessage) for m in messages)
        return AssistantMessage(
            tool_calls=(ToolCall(id=f"c{n}", name="get_order", arguments='{"order_id":"O-1001"}'),)
        )

    agent = build_support_agent(FunctionModel(loops), db_path=shop, trace=False, max_steps=5)
    dataset = Dataset(
        [
            _case(id="short", max_steps=2),
            _case(id="default"),
        ]
    )
    report = evaluate_sync(agent, dataset, concurrency=2)
    assert [(r.status, r.steps) for r in report.results] == [("max_steps", 2), ("max_steps", 5)]
    assert agent.max_steps == 5
    assert "max_steps" in report.results[0].explanation


def test_evaluate_checks_scorers_before_running(shop, workspace):
    agent = build_support_agent(FunctionModel(_answer), db_path=shop, trace=False)
    dataset = Dataset([_case(expected_outcome={"kind": "scorer", "value": "nope"})])
    with pytest.raises(UserError, match="no scorer is registered as 'nope'"):
        evaluate_sync(agent, dataset)
    with pytest.raises(UserError, match="concurrency must be at least 1"):
        evaluate_sync(agent, dataset, concurrency=0)
