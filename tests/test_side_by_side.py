"""Several agents on one dataset, side by side."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

import pytest

from agentlab.agents import ReActAgent
from agentlab.errors import UserError
from agentlab.evals import Case, Dataset, EvalReport, evaluate_sync
from agentlab.evals.side_by_side import side_by_side
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, UserMessage
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore
from agentlab.usage import Price, PriceTable

PRICES = PriceTable({"scripted:*": Price(1.0, 2.0)})


def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: what to look up.
    """
    return f"found {key}"


def _report(
    store: TraceStore, name: str, passing: Collection[str], looks_up: bool, ids: Sequence[str]
) -> EvalReport:
    def reply(
        messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AssistantMessage | str:
        case = next(m.content for m in messages if isinstance(m, UserMessage)).split()[-1]
        if looks_up and not any(m.role == "tool" for m in messages):
            call = ToolCall(id="t1", name="lookup", arguments=json.dumps({"key": case}))
            return AssistantMessage(tool_calls=(call,))
        return "ok" if case in passing else "no idea"

    agent = ReActAgent(
        FunctionModel(reply, name=name), [lookup], name=name, trace=store, prices=PRICES
    )
    outcome = {"kind": "contains", "value": "ok"}
    cases = [Case(id=i, input=f"question {i}", expected_outcome=outcome) for i in ids]
    return evaluate_sync(agent, Dataset(cases, name="support"), name=name)


def test_rows_follow_the_labels_and_the_best_value_of_each_metric_is_marked(tmp_path) -> None:
    store = TraceStore(tmp_path)
    ids = ["a", "b", "c", "d"]
    reports = {
        "direct": _report(store, "direct", {"a", "b"}, looks_up=False, ids=ids),
        "looks up": _report(store, "looks_up", {"a", "b", "c"}, looks_up=True, ids=ids),
    }
    table = side_by_side(reports)
    assert list(table.rows) == ["direct", "looks up"]
    assert table.rows["direct"].task_completion_rate == 0.5
    assert table.rows["looks up"].task_completion_rate == 0.75
    assert table.best("task_completion_rate") == ["looks up"]
    assert table.best("avg_steps") == ["direct"]  # 1 step against 2
    assert table.best("cost_per_task") == ["direct"]
    text = str(table)
    assert text.splitlines()[0] == "support: 4 cases each"
    assert "direct" in text and "75%" in text and "50%" in text
    html = table._repr_html_()
    assert "<b>75%</b>" in html and "<b>1.0</b>" in html and "(best in bold)" in html
    frame = table.frame()
    assert frame.loc["looks up", "avg_steps"] == 2.0
    assert list(frame.index) == ["direct", "looks up"]


def test_runs_of_different_cases_are_refused_with_what_differs(tmp_path) -> None:
    store = TraceStore(tmp_path)
    a = _report(store, "a", {"a"}, looks_up=False, ids=["a", "b"])
    b = _report(store, "b", {"a"}, looks_up=False, ids=["a"])
    with pytest.raises(
        UserError, match=r"same cases.*a: support \(2 cases\), b: support \(1 case\)"
    ):
        side_by_side({"a": a, "b": b})
    with pytest.raises(UserError, match="at least one eval report"):
        side_by_side({})
