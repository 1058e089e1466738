"""HTML views of core objects and the run inspector widget (Python level)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from html import escape

import pytest

from agentlab.agents import ReActAgent
from agentlab.demo import build_support_agent
from agentlab.errors import MissingExtraError
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing import TraceStore

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from agentlab.ui import RunInspector


def support_script(
    messages: Sequence[Message], tools: Sequence[ToolDefinition]
) -> AssistantMessage:
    """Look order O-1003 up, then answer with its status."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        call = ToolCall(id="c1", name="get_order", arguments='{"order_id": "O-1003"}')
        return AssistantMessage(content="Let me look <b>that</b> up.", tool_calls=(call,))
    status = json.loads(results[-1].content)["status"]
    return AssistantMessage(content=f"Order O-1003 is {status}.")


@pytest.fixture
def agent(tmp_path):
    return build_support_agent(
        FunctionModel(support_script, name="support"),
        db_path=tmp_path / "shop.duckdb",
        trace=tmp_path / "ws",
    )


@pytest.fixture
def store(tmp_path):
    return TraceStore(tmp_path / "ws")


# -- _repr_html_ -------------------------------------------------------------------------


def test_tool_html_shows_the_schema_and_escapes():
    @tool
    def lookup(query: str) -> str:
        """Find <script>alert(1)</script> things.

        Args:
            query: what to look for, e.g. "a & b".
        """
        return query

    html = lookup._repr_html_()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    schema = json.dumps(lookup.definition.parameters, indent=2)
    assert escape(schema) in html
    assert "a &amp; b" in html


def test_agent_html_lists_model_tools_and_limits(agent):
    html = agent._repr_html_()
    assert "scripted:support" in html
    for name in ("find_customer", "get_order", "list_orders"):
        assert name in html
    assert "max_steps=6" in html


def test_run_step_and_result_html(agent):
    run = agent.start("Status of O-1003? <img src=x onerror=alert(1)>")
    assert "running" in run._repr_html_()
    step = run.step_sync()
    html = step._repr_html_()
    assert "tool_calls" in html and "get_order" in html
    assert "Let me look &lt;b&gt;that&lt;/b&gt; up." in html
    assert "<b>that</b>" not in html
    run.step_sync()
    assert run.done
    html = run._repr_html_()
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert "completed" in html and "Order O-1003 is delivered." in html
    result_html = run.result._repr_html_()
    assert "completed" in result_html and "get_order" in result_html


def test_failed_result_html_shows_the_explanation(tmp_path):
    agent = ReActAgent(
        FunctionModel(lambda m, t: AssistantMessage(content="")), trace=False, max_retries=0
    )
    result = agent.run_sync("hi")
    assert not result.ok
    html = result._repr_html_()
    assert "Why it stopped" in html and "What went wrong" in html


# -- RunInspector ------------------------------------------------------------------------


def test_inspector_follows_a_live_run_through_the_store(agent, store):
    run = agent.start("What is the status of order O-1003?")
    inspector = RunInspector(live_run=run)
    assert inspector.store.workspace == store.workspace
    assert inspector.rows == [] and not inspector.next_button.disabled
    assert "running" in inspector.summary.value

    inspector.next_button.click()  # step 1: model call + tool call
    assert [(r["kind"], r["name"]) for r in inspector.rows] == [
        ("model_call", "scripted:support"),
        ("tool_call", "get_order"),
    ]
    stored = store.steps(run.id)
    assert list(stored["id"]) == [r["id"] for r in inspector.rows]
    html = inspector.steps_view.value
    assert "model call" in html and "tool call" in html and "O-1003" in html
    assert "Let me look &lt;b&gt;that&lt;/b&gt; up." in html  # the stored reply, escaped
    assert not inspector.next_button.disabled
    assert len(inspector.chart.outputs) == 1
    assert "image/png" in inspector.chart.outputs[0]["data"]

    inspector.next_button.click()  # step 2: the answer
    assert run.done
    assert [r["step"] for r in inspector.rows] == [1, 1, 2]
    assert inspector.next_button.disabled
    assert "completed" in inspector.summary.value
    assert "Order O-1003 is delivered." in inspector.summary.value
    inspector.next_button.click()  # disabled: nothing happens
    assert len(run.steps) == 2


def test_inspector_lists_the_last_runs(agent, store):
    ids = [agent.run_sync(f"order O-1003, try {i}").run_id for i in range(3)]
    inspector = RunInspector(store, last=2)
    assert inspector.run_selector is not None
    assert [v for _, v in inspector.run_selector.options] == ids[:0:-1]
    assert inspector.run_id == ids[2]
    assert inspector.next_button.layout.display == "none"
    inspector.run_selector.value = ids[1]
    assert inspector.run_id == ids[1]
    assert {r["name"] for r in inspector.rows} == {"scripted:support", "get_order"}
    assert "try 1" in inspector.summary.value


def test_inspector_on_an_unknown_run(store):
    inspector = RunInspector(store, run_id="nope")
    assert inspector.rows == []
    assert "not found" in inspector.summary.value
    assert inspector.next_button.disabled


def test_import_names_the_notebook_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    for name in [m for m in sys.modules if m == "agentlab.ui" or m.startswith("agentlab.ui.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError) as info:
        import agentlab.ui  # noqa: F401
    assert info.value.extra == "notebook"
    assert "agentlab[notebook]" in str(info.value)
