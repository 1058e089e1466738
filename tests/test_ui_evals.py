"""The evaluation views: an eval report's HTML table, the EvalReportView and EvalCompare
widgets (Python level: widget state after the controls' handlers run, and the runs
they open read back from a real trace store) and the EvalProgress bar."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence

import pytest
from IPython.core.formatters import DisplayFormatter

from agentlab.agents import ReActAgent
from agentlab.errors import UserError
from agentlab.evals import (
    Case,
    CaseResult,
    Dataset,
    EvalReport,
    compare_evals,
    compute_metrics,
    evaluate_sync,
)
from agentlab.evals.report import HTML_MAX_ROWS
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, UserMessage
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore
from agentlab.usage import Price, PriceTable

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from agentlab.ui import EvalCompare, EvalProgress, EvalReportView

CASES = [f"c{i}" for i in range(12)]  # c10 and c11 sort after c9 by case id
TAGS = {
    c: (["even"] if i % 2 == 0 else []) + (["low"] if i < 5 else []) for i, c in enumerate(CASES)
}
BASE = set(CASES[:8])  # c0..c7 pass; c8..c11 fail
LOOKS_UP = {"c3": 1, "c9": 2}  # lookups before the answer: more steps, more cost
NEW = (BASE - {"c0", "c2"}) | {"c8"}  # against BASE: c0, c2 regress; c8 improves
PRICES = PriceTable({"scripted:*": Price(1.0, 2.0)})


def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: what to look up.
    """
    return f"found {key}"


def _model(passing: Collection[str]) -> FunctionModel:
    """'ok' (the case passes) for the cases in `passing`, else 'no idea'; first the
    lookups of LOOKS_UP."""

    def reply(
        messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AssistantMessage | str:
        case = next(m.content for m in messages if isinstance(m, UserMessage)).split()[-1]
        done = sum(m.role == "tool" for m in messages)
        if done < LOOKS_UP.get(case, 0):
            call = ToolCall(id=f"t{done}", name="lookup", arguments=json.dumps({"key": case}))
            return AssistantMessage(tool_calls=(call,))
        return "ok, done" if case in passing else "no idea"

    return FunctionModel(reply, name="views")


def _evaluate(
    store: TraceStore, passing: Collection[str], name: str, ids: Sequence[str]
) -> EvalReport:
    outcome = {"kind": "contains", "value": "ok"}
    cases = [
        Case(id=i, input=f"question {i}", expected_outcome=outcome, tags=TAGS.get(i, []))
        for i in ids
    ]
    agent = ReActAgent(_model(passing), [lookup], name="viewer", trace=store, prices=PRICES)
    return evaluate_sync(agent, Dataset(cases, name="views"), name=name)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TraceStore:
    return TraceStore(tmp_path_factory.mktemp("views") / "ws")


@pytest.fixture(scope="module")
def base(store) -> EvalReport:
    return _evaluate(store, BASE, "base", CASES)


@pytest.fixture(scope="module")
def new(store) -> EvalReport:
    return _evaluate(store, NEW, "new", [*CASES[1:], "c12"])  # c0 only in A, c12 only in B


def _ids(results: Sequence[CaseResult]) -> list[str]:
    return [r.case_id for r in results]


def _listed(html: str) -> list[str]:
    """The case ids of an HTML case table, in order."""
    return re.findall(
        r'<tr class="(?:pass|fail)?"?[^>]*><td><span class="nowrap (?:ok|bad)">([^<]+)</span>', html
    )


def _report(results: list[CaseResult]) -> EvalReport:
    return EvalReport("f" * 32, "hand", "d", "agent", "model", compute_metrics(results), results)


def _row(case_id: str, passed: bool, **fields) -> CaseResult:
    values = dict(
        run_id="",
        status="completed",
        score=float(passed),
        explanation="",
        steps=1,
        cost=0.01,
        latency_ms=10.0,
        calls_expected=0,
        calls_made=0,
        calls_matched=0,
        tags=[],
    )
    return CaseResult(case_id=case_id, passed=passed, **{**values, **fields})


# -- the report's own HTML ---------------------------------------------------------------


def test_the_report_html_is_a_coloured_table_failures_first(base):
    html = base._repr_html_()
    assert "<pre>" not in html and '<table class="agentlab-eval-cases">' in html
    assert "var(--jp-success-color1" in html and "var(--jp-error-color1" in html
    assert _listed(html) == ["c8", "c9", "c10", "c11", *CASES[:8]]  # failed, then passed
    assert html.count('<tr class="fail">') == 4 and html.count('<tr class="pass">') == 8
    assert (
        '<span class="pill bad">FAIL</span>' in html and '<span class="pill ok">pass</span>' in html
    )
    assert '<span class="nowrap bad">c8</span>' in html  # ids never wrap
    assert "the answer lacks &#x27;ok&#x27;" in html  # explanations are escaped prose
    metrics = re.search(r'<table class="agentlab-eval-metrics">.*?</table>', html).group(0)
    assert "<b>0.67</b>" in metrics and '<span class="ok">8</span> of 12' in metrics
    assert 'low <span class="ok">5/5</span>' in html  # each tag's pass rate
    assert 'even <span class="">4/6</span>' in html


def test_a_long_report_html_lists_failures_first_up_to_the_limit():
    rows = [_row(f"ok-{i}", True) for i in range(60)] + [_row("bad", False, explanation="<b>x</b>")]
    html = _report(rows)._repr_html_()
    assert _listed(html)[:2] == ["bad", "ok-0"] and len(_listed(html)) == HTML_MAX_ROWS
    assert "ok-48" in html and "ok-49<" not in html
    assert "11 more cases; all of them: <code>SELECT * FROM eval_results WHERE eval_id = " in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def test_the_notebook_shows_the_table_and_its_text_not_the_dataclass(base):
    data, _ = DisplayFormatter().format(base)
    assert data["text/html"] == base._repr_html_()
    assert data["text/plain"] == base.table(max_rows=HTML_MAX_ROWS)
    assert "CaseResult(" not in data["text/plain"]


# -- EvalReportView ------------------------------------------------------------------------


def test_the_report_view_sorts_the_cases(base):
    view = EvalReportView(base)
    assert _ids(view.shown) == ["c8", "c9", "c10", "c11", *CASES[:8]]  # failed first
    assert _listed(view.table.value) == _ids(view.shown)
    assert "agentlab-eval-metrics" in view.header.value and "Eval base" in view.header.value
    view.sort.value = "case"
    assert _ids(view.shown) == CASES  # c2 before c10
    view.sort.value = "steps"
    assert _ids(view.shown)[:2] == ["c9", "c3"] and view.shown[0].steps == 3
    view.sort.value = "cost"
    costs = [r.cost for r in view.shown]
    assert costs == sorted(costs, reverse=True) and _ids(view.shown)[:2] == ["c9", "c3"]
    view.sort.value = "latency"
    latencies = [r.latency_ms for r in view.shown]
    assert latencies == sorted(latencies, reverse=True)
    assert _listed(view.table.value) == _ids(view.shown)


def test_an_unknown_cost_sorts_last():
    report = _report([_row("a", True, cost=None), _row("b", True, cost=0.5), _row("c", False)])
    view = EvalReportView(report)
    view.sort.value = "cost"
    assert _ids(view.shown) == ["b", "c", "a"]


def test_failures_only_and_the_tag_filter(base):
    view = EvalReportView(base)
    view.failures_only.value = True
    assert _ids(view.shown) == ["c8", "c9", "c10", "c11"]
    assert "4 of 12 cases" in view.count.value
    view.tag.value = "even"
    assert _ids(view.shown) == ["c8", "c10"]
    view.failures_only.value = False
    assert _ids(view.shown) == ["c8", "c10", "c0", "c2", "c4", "c6"]  # still failed first
    assert [label for label, _ in view.tag.options] == ["all tags", "even (6)", "low (5)"]
    view.tag.value = ""
    assert len(view.shown) == 12 and "12 cases" in view.count.value


def test_picking_a_case_opens_its_run_in_an_inspector(base, store):
    view = EvalReportView(base.eval_id[:10], store=store)  # read back by id prefix
    assert view.report.eval_id == base.eval_id and view.inspector is None
    view.failures_only.value = True
    options = view.picker.dropdown.options
    assert [value for _, value in options] == [None, "c8", "c9", "c10", "c11"]
    assert options[2][0] == "c9 · FAIL"
    view.picker.dropdown.value = "c9"  # what a person's pick does
    c9 = next(r for r in base.results if r.case_id == "c9")
    assert view.opened == "c9" and view.inspector is not None
    assert view.inspector.run_id == c9.run_id
    assert view.inspector.run_row["input"] == "question c9"
    assert len({row["step"] for row in view.inspector.rows}) == 3  # two lookups, the answer
    assert "case c9" in view.run_box.children[0].children[0].value
    view.sort.value = "case"  # re-listing keeps the pick and does not reopen
    inspector = view.inspector
    assert view.picker.dropdown.value == "c9" and view.inspector is inspector
    view.failures_only.value = False
    view.tag.value = "low"  # c9 is filtered out: the pick clears, its run stays shown
    assert view.picker.dropdown.value is None and view.inspector is inspector
    view.open_case("c1")
    assert view.inspector.run_id == next(r.run_id for r in base.results if r.case_id == "c1")
    assert view.picker.dropdown.value == "c1"


def test_the_report_view_by_name_and_its_errors(base, store):
    assert EvalReportView("base", store=store).report.eval_id == base.eval_id
    with pytest.raises(UserError, match="no eval run 'nope'"):
        EvalReportView("nope", store=store)
    with pytest.raises(UserError, match=r"takes an EvalReport .* not dict"):
        EvalReportView({"eval_id": "x"}, store=store)  # type: ignore[arg-type]
    view = EvalReportView(base, store=store)
    with pytest.raises(UserError, match="has no case 'c99'"):
        view.open_case("c99")


def test_a_case_without_a_run_id_says_so():
    view = EvalReportView(_report([_row("a", False)]))
    view.open_case("a")
    assert (
        view.inspector is None
        and "no run id was recorded" in view.run_box.children[0].children[1].value
    )


# -- EvalCompare -----------------------------------------------------------------------------


def test_compare_filters_regressed_improved_and_changed(base, new, store):
    view = EvalCompare(base, new, store=store)
    assert [label for label, _ in view.show.options] == [
        "all (13)",
        "regressed (1)",
        "improved (1)",
        "changed (4)",
    ]
    assert [x.case_id for x in view.shown][:5] == ["c2", "c8", "c0", "c12", "c9"]
    view.show.value = "regressed"
    assert [x.case_id for x in view.shown] == ["c2"]
    view.show.value = "improved"
    assert [x.case_id for x in view.shown] == ["c8"]
    view.show.value = "changed"
    assert [x.case_id for x in view.shown] == ["c2", "c8", "c0", "c12"]
    assert '<tr class="fail"><td><span class="bad">c2</span>' in view.table.value
    assert '<tr class="pass"><td><span class="ok">c8</span>' in view.table.value
    assert "4 of 13 cases" in view.count.value
    view.tag.value = "even"
    assert [x.case_id for x in view.shown] == ["c2", "c8", "c0"]  # c12 has no tags
    header = view.header.value
    assert "McNemar exact p = " in header and "agentlab-compare-metrics" in header
    assert "agentlab-compare-paired" in header and "Eval comparison: base" in header


def test_compare_opens_a_case_in_both_runs(base, new, store):
    view = EvalCompare(base.eval_id, new.name, store=store)  # read back by id and name
    view.show.value = "regressed"
    view.picker.dropdown.value = "c2"
    a, b = view.inspectors
    run_of = {r.case_id: r.run_id for r in base.results}
    assert a is not None and b is not None and view.opened == "c2"
    assert a.run_id == run_of["c2"] and b.run_id == next(
        r.run_id for r in new.results if r.case_id == "c2"
    )
    assert a.run_row["output"] == "ok, done" and b.run_row["output"] == "no idea"
    titles = [box.children[0].value for box in view.run_box.children]
    assert "A: base" in titles[0] and "passed" in titles[0]
    assert "B: new" in titles[1] and "failed" in titles[1]
    view.open_case("c0")  # only in A
    a, b = view.inspectors
    assert a is not None and a.run_id == run_of["c0"] and b is None
    assert "case c0 is not in run B" in view.run_box.children[1].value


def test_compare_takes_a_comparison_and_refuses_bad_arguments(base, new, store):
    comparison = compare_evals(base, new)
    view = EvalCompare(comparison, store=store)
    assert view.comparison is comparison
    with pytest.raises(UserError, match="needs two eval runs"):
        EvalCompare(base)
    with pytest.raises(UserError, match="alone"):
        EvalCompare(comparison, new)
    with pytest.raises(UserError, match=r"EvalCompare\(b=...\) takes an EvalReport .* not int"):
        EvalCompare(base, 3)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="neither eval run of this comparison has a case 'zz'"):
        view.open_case("zz")


# -- EvalProgress --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_cases_and_estimates_the_time_left():
    clock = Clock()
    progress = EvalProgress(4, clock=clock)
    assert (progress.bar.value, progress.bar.max, progress.eta_s) == (0, 4, None)
    assert "<b>0</b> / 4 cases" in progress.text.value
    clock.now = 110.0
    progress.update(_row("a", True))
    assert (progress.done, progress.passed, progress.failed, progress.bar.value) == (1, 1, 0, 1)
    assert progress.eta_s == pytest.approx(30.0)  # 10 s per case, 3 left
    assert "about 30 s left" in progress.text.value and "last: a pass" in progress.text.value
    clock.now = 120.0
    progress.update(_row("b", False), done=2, total=4)
    assert (
        progress.eta_s == pytest.approx(20.0)
        and '<span class="bad">1 failed</span>' in progress.text.value
    )
    clock.now = 200.0
    progress.update(_row("c", True))
    progress.update(_row("d", True))
    assert progress.finished and progress.eta_s is None and progress.bar.value == 4
    assert progress.bar.bar_style == "warning"  # finished, with a failure
    assert "<b>4</b> cases in 1 min 40 s" in progress.text.value
    assert " left" not in progress.text.value  # no time left once done


def test_progress_without_a_total_and_with_more_cases_than_announced():
    progress = EvalProgress()
    progress.update(_row("a", True))
    assert progress.eta_s is None and "<b>1</b> cases" in progress.text.value
    one = EvalProgress(1)
    one.update(_row("a", True))
    assert one.finished and one.bar.bar_style == "success"
    one.update(_row("b", True))
    assert (one.total, one.bar.max, one.bar.value) == (2, 2, 2)
    for bad in (-1, 2.5, True):
        with pytest.raises(UserError, match="give the number of cases"):
            EvalProgress(bad)  # type: ignore[arg-type]
