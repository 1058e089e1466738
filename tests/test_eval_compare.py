"""Run-to-run comparison of eval runs: cases paired by id, metric deltas, McNemar's
exact test, the seeded paired bootstrap, the regression gate, eval runs read back
from a real trace store by id, prefix or name, and `agentlab eval compare`."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Collection, Sequence
from dataclasses import fields, replace

import pytest
from typer.testing import CliRunner

from agentlab.agents import ReActAgent
from agentlab.cli import app
from agentlab.errors import MissingExtraError, UserError
from agentlab.evals import (
    Case,
    Dataset,
    EvalComparison,
    EvalMetrics,
    EvalReport,
    compare_evals,
    evaluate_sync,
    load_eval,
)
from agentlab.evals.stats import mcnemar_exact, paired_bootstrap_ci
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, UserMessage
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore
from agentlab.usage import Price, PriceTable

CASES = [f"c{i}" for i in range(10)]
BASE = set(CASES[:7])  # c0..c6 pass, c7..c9 fail
MIXED = set(CASES[1:])  # against BASE: c0 regresses, c7, c8 and c9 improve
WORSE = {"c6"}  # against BASE: c0..c5 regress, nothing improves
PRICES = PriceTable({"scripted:*": Price(1.0, 2.0)})  # a known, non-zero cost per case


def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: what to look up.
    """
    return f"found {key}"


def _model(passing: Collection[str], looks_up: Collection[str] = ()) -> FunctionModel:
    """Answers 'ok' (the case passes) for the cases in `passing`, else 'no idea'; in
    the cases of `looks_up` it first calls `lookup` (two steps, one tool call)."""

    def reply(
        messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AssistantMessage | str:
        case = next(m.content for m in messages if isinstance(m, UserMessage)).split()[-1]
        if case in looks_up and not any(m.role == "tool" for m in messages):
            call = ToolCall(id="t1", name="lookup", arguments=json.dumps({"key": case}))
            return AssistantMessage(tool_calls=(call,))
        return "ok, done" if case in passing else "no idea"

    return FunctionModel(reply, name="flips")


def _evaluate(
    store: TraceStore, model: FunctionModel, name: str, ids: Sequence[str] = CASES
) -> EvalReport:
    outcome = {"kind": "contains", "value": "ok"}
    cases = [Case(id=i, input=f"question {i}", expected_outcome=outcome) for i in ids]
    agent = ReActAgent(model, [lookup], name="flipper", trace=store, prices=PRICES)
    return evaluate_sync(agent, Dataset(cases, name="flips"), name=name)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TraceStore:
    return TraceStore(tmp_path_factory.mktemp("compare") / "ws")


@pytest.fixture(scope="module")
def runs(store) -> dict[str, EvalReport]:
    return {
        "base": _evaluate(store, _model(BASE), "base"),
        "mixed": _evaluate(store, _model(MIXED, looks_up={"c7", "c8"}), "mixed"),
        "worse": _evaluate(store, _model(WORSE), "worse"),
        "worse again": _evaluate(store, _model(WORSE), "worse"),  # the name is ambiguous
        "shifted": _evaluate(store, _model(BASE), "shifted", [*CASES[1:], "c10"]),
    }


def _row(text: str, case_id: str) -> list[str]:
    """The cells of a case's row in the text table."""
    (line,) = [line for line in text.splitlines() if line.split()[:1] == [case_id]]
    return re.split(r"\s{2,}", line)


# -- case by case ----------------------------------------------------------------------


def test_cases_are_paired_by_id_and_the_flips_listed_first(runs):
    c = compare_evals(runs["base"], runs["mixed"])
    assert c.ids("regressed") == ["c0"] and c.ids("improved") == ["c7", "c8", "c9"]
    assert c.ids("passing") == CASES[1:7] and c.ids("failing") == [] and c.paired == 10
    c7, c9 = c.cases[7], c.cases[9]
    assert (c7.delta("steps"), c7.delta("calls_made"), c9.delta("steps")) == (1, 1, 0)
    assert c7.delta("cost") > 0 and c9.delta("cost") == pytest.approx(0.0, abs=1e-9)

    text = str(c)
    assert _row(text, "c0")[:5] == ["c0", "regressed", "yes -> NO", "1 -> 1", "0 -> 0"]
    assert _row(text, "c7")[:5] == ["c7", "improved", "NO -> yes", "1 -> 2", "0 -> 1"]
    assert _row(text, "c9")[:5] == ["c9", "improved", "NO -> yes", "1 -> 1", "0 -> 0"]
    assert _row(text, "c1")[:3] == ["c1", "still passes", "yes -> yes"]
    listed = [line.split()[0] for line in text.splitlines() if re.match(r"c\d+ ", line)]
    assert listed == ["c0", "c7", "c8", "c9", *CASES[1:7]]  # regressed, improved, the rest
    assert "10 cases in both: 1 regressed, 3 improved, 0 still fails, 6 still passes" in text


def test_every_metric_has_its_delta(runs):
    c = compare_evals(runs["base"], runs["mixed"])
    deltas = {m.metric: m for m in c.metrics}
    numeric = {f.name for f in fields(EvalMetrics)} - {"tags"}
    assert numeric <= set(deltas)
    rate = deltas["task_completion_rate"]
    assert (rate.a, rate.b, rate.delta) == (0.7, 0.9, pytest.approx(0.2))
    assert (deltas["passed"].a, deltas["passed"].b, deltas["passed"].delta) == (7, 9, 2)
    assert deltas["avg_steps"].delta == pytest.approx(0.2)  # c7 and c8 took a second step
    assert deltas["tool_precision"].delta == -1.0  # 2 calls made, none expected
    assert deltas["cost_per_task"].delta > 0
    assert "task_completion_rate  0.7000     0.9000     +0.2000" in str(c)
    assert re.search(r"passed\s+7\s+9\s+\+2\n", str(c))


def test_cases_in_one_run_only_are_listed_and_left_out_of_the_statistics(runs):
    c = compare_evals(runs["base"], runs["shifted"])
    assert c.ids("only_a") == ["c0"] and c.ids("only_b") == ["c10"] and c.paired == 9
    assert c.completion is not None and c.completion.cases == 9
    assert (c.completion.a, c.completion.b) == (6 / 9, 6 / 9)
    assert (c.flips.regressed, c.flips.improved, c.flips.p_value) == (0, 0, 1.0)
    text = str(c)
    assert _row(text, "c0")[:3] == ["c0", "only in A", "yes -> -"]
    assert _row(text, "c10")[:3] == ["c10", "only in B", "- -> NO"]
    assert "9 cases in both: 0 regressed, 0 improved, 3 still fails, 6 still passes; " in text
    assert "1 only in A, 1 only in B" in text


# -- paired statistics -----------------------------------------------------------------


def test_mcnemar_p_values_are_the_binomial_ones_computed_by_hand(runs):
    mixed = compare_evals(runs["base"], runs["mixed"])  # 1 regressed, 3 improved
    by_hand = 2 * (math.comb(4, 0) + math.comb(4, 1)) / 2**4
    assert (mixed.flips.regressed, mixed.flips.improved) == (1, 3)
    assert mixed.flips.p_value == pytest.approx(by_hand) == 0.625
    assert mixed.verdict == "no significant change"

    worse = compare_evals(runs["base"], runs["worse"])  # 6 regressed, 0 improved
    assert (worse.flips.regressed, worse.flips.improved) == (6, 0)
    assert worse.flips.p_value == pytest.approx(2 * 0.5**6) == 0.03125
    assert worse.verdict == "regressed"
    assert compare_evals(runs["worse"], runs["base"]).verdict == "improved"
    assert compare_evals(runs["base"], runs["worse"], alpha=0.01).verdict == (
        "no significant change"
    )
    assert "B regressed significantly (McNemar exact p = 0.03125 on 6 flips" in str(worse)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0


def test_the_bootstrap_interval_is_seeded_and_brackets_the_difference(runs):
    first = compare_evals(runs["base"], runs["mixed"], seed=7)
    again = compare_evals(runs["base"], runs["mixed"], seed=7)
    assert first.completion == again.completion and first.cost == again.cost
    d = first.completion
    assert d is not None and d.cases == 10 and d.difference == pytest.approx(0.2)
    assert d.low <= d.difference <= d.high and d.low < d.high
    assert first.cost is not None and first.cost.low <= first.cost.difference <= first.cost.high
    assert first.cost.difference > 0  # c7 and c8 made a second model request

    worse = compare_evals(runs["base"], runs["worse"]).completion
    assert worse is not None and worse.difference == pytest.approx(-0.6)
    assert worse.low <= -0.6 <= worse.high < 0  # the interval excludes "no change"
    text = str(compare_evals(runs["base"], runs["worse"]))
    assert re.search(
        r"\ncompletion rate\s+0\.7000\s+0\.1000\s+-0\.6000\s+\[-0\.\d+, -0\.\d+\]", text
    )

    spread = [i / 10 for i in range(-10, 20)]
    seeded = [
        paired_bootstrap_ci(spread, confidence=0.9, n_resamples=999, seed=s) for s in (1, 1, 2)
    ]
    assert seeded[0] == seeded[1] != seeded[2]
    assert paired_bootstrap_ci([0.5], confidence=0.95, n_resamples=99, seed=0) == (0.5, 0.5)


def test_missing_scipy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    expected = re.escape("pip install 'agentlab-toolkit[evals]'")
    with pytest.raises(MissingExtraError, match=expected) as info:
        mcnemar_exact(1, 2)
    assert isinstance(info.value, ImportError)


def test_bad_settings_are_clear_errors(runs):
    with pytest.raises(UserError, match="confidence and alpha must be between 0 and 1"):
        compare_evals(runs["base"], runs["mixed"], alpha=5)
    with pytest.raises(UserError, match="n_resamples must be at least 1"):
        compare_evals(runs["base"], runs["mixed"], n_resamples=0)


# -- eval runs from the trace store ----------------------------------------------------


def test_eval_runs_are_read_back_by_id_prefix_or_name(runs, store):
    base, mixed = runs["base"], runs["mixed"]
    from_store = compare_evals(base.eval_id, mixed.eval_id, store=store)
    assert from_store.to_dict() == compare_evals(base, mixed).to_dict()
    loaded = load_eval(base.eval_id[:6], store)
    assert loaded.results == base.results and loaded.metrics == base.metrics
    assert compare_evals(base.eval_id[:10], "mixed", store=store.workspace).b.eval_id == (
        mixed.eval_id
    )


def test_unknown_and_ambiguous_runs_are_clear_errors_listing_candidates(runs, store):
    worse = {runs["worse"].eval_id, runs["worse again"].eval_id}
    with pytest.raises(UserError, match=r"'worse' names 2 eval runs in .*pass more of an eval id"):
        load_eval("worse", store)
    try:
        load_eval("worse", store)
    except UserError as exc:
        assert all(eval_id in str(exc) for eval_id in worse)
    with pytest.raises(UserError, match=r"no eval run 'nope' in .*; the latest are:") as info:
        compare_evals("nope", runs["base"], store=store)
    assert runs["base"].eval_id in str(info.value) and "dataset flips" in str(info.value)
    with pytest.raises(UserError, match=r"no eval run 'x' in .*it has none yet"):
        load_eval("x", store.workspace / "empty")
    with pytest.raises(UserError, match="reference is empty"):
        load_eval(" ", store)
    with pytest.raises(UserError, match="no eval run '12345678'"):  # -p baseline=12345678
        load_eval(12345678, store)
    with pytest.raises(UserError, match=r"not 100000\.0; on the command line quote a prefix"):
        load_eval(1e5, store)  # type: ignore[arg-type]  # -p baseline=1e5 is a JSON number


# -- the regression gate ---------------------------------------------------------------


def test_the_regression_gate_fails_with_the_flipped_cases_and_the_p_value(runs, store):
    base, worse = runs["base"], runs["worse"]
    (failure,) = worse.check_gates({"task_completion_rate": ">=0.05"}, baseline=base)
    assert failure.metric == "regression" and failure.actual == pytest.approx(0.03125)
    message = str(failure)
    assert "regression against the baseline base" in message
    assert (
        "6 case(s) passed there and fail now (c0, c1, c2, c3, c4, c5), 0 the other way" in message
    )
    assert "McNemar exact p = 0.0312 < alpha 0.05" in message
    assert f"agentlab eval compare {base.eval_id[:8]} {worse.eval_id[:8]}" in message
    assert "make this run the new baseline" in message
    # explicit gate, an eval id from the store, a stricter alpha
    assert worse.check_gates({"regression": "Not  Significant"}, baseline=base.eval_id, store=store)
    assert worse.check_gates({}, baseline=base, alpha=0.01) == []
    assert runs["mixed"].check_gates({"regression": "not significant"}, baseline=base) == []


def test_the_regression_gate_needs_a_baseline_with_cases_in_common(runs):
    base = runs["base"]
    with pytest.raises(UserError, match="compares with a baseline run: pass baseline="):
        base.check_gates({"regression": "not significant"})
    with pytest.raises(UserError, match=r"gate regression='<0.05' is not understood"):
        base.check_gates({"regression": "<0.05"}, baseline=base)
    with pytest.raises(
        UserError, match=r"unknown metric 'regresion'.*'regression' with a baseline"
    ):
        base.check_gates({"regresion": "not significant"}, baseline=base)
    other = replace(
        base, eval_id="f" * 32, results=[replace(r, case_id=f"x-{r.case_id}") for r in base.results]
    )
    (failure,) = other.check_gates({}, baseline=base)
    assert failure.actual is None and "no case of this run is in the baseline base" in str(failure)


# -- views -----------------------------------------------------------------------------


def test_views_html_dict_and_repr(runs):
    c = compare_evals(runs["base"], runs["mixed"])
    html = c._repr_html_()
    assert "var(--jp-success-color1" in html and "var(--jp-error-color1" in html
    assert '<span class="bad">c0</span>' in html and '<span class="ok">c7</span>' in html
    assert "McNemar exact p = 0.625" in html and "yes → NO" in html
    data = json.loads(json.dumps(c.to_dict()))
    assert data["regressed"] == ["c0"] and data["improved"] == ["c7", "c8", "c9"]
    assert data["flips"] == {"regressed": 1, "improved": 3, "p_value": 0.625}
    assert data["cases"][7]["delta"]["steps"] == 1 and data["cases"][0]["change"] == "regressed"
    assert data["completion"]["difference"] == pytest.approx(0.2) and "cases" not in c.to_dict(
        cases=False
    )
    assert repr(c) == (
        f"EvalComparison(a={runs['base'].eval_id[:8]!r}, b={runs['mixed'].eval_id[:8]!r}, "
        "paired=10, regressed=1, improved=3, p_value=0.625, verdict='no significant change')"
    )
    short = c.table(max_rows=2)
    assert _row(short, "c0") and _row(short, "c7") and "... 8 more cases" in short
    assert isinstance(c, EvalComparison)


# -- the command line ------------------------------------------------------------------


def test_cli_compare_prints_the_table_or_json(runs, store):
    base, mixed = runs["base"], runs["mixed"]
    cli = CliRunner()
    args = ["eval", "compare", base.eval_id[:12], "mixed", "--workspace", str(store.workspace)]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip("\n") == str(compare_evals(base, mixed))
    result = cli.invoke(app, [*args, "--json", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(
        json.dumps(compare_evals(base, mixed, seed=3).to_dict())
    )
    result = cli.invoke(
        app, ["eval", "compare", "worse", "mixed", "--workspace", str(store.workspace)]
    )
    assert isinstance(result.exception, UserError) and "names 2 eval runs" in str(result.exception)
