"""Loop alerts: the same call repeated, no progress; recorded, called back, and
optionally stopping the run with an explanation."""

from __future__ import annotations

from collections.abc import Sequence

from typer.testing import CliRunner

from agentlab import ReActAgent, tool
from agentlab.agents.alerts import LoopAlerts
from agentlab.cli import app
from agentlab.events import AlertEvent
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore


@tool
def status(order_id: str) -> str:
    """The status of an order.

    Args:
        order_id: The order id.
    """
    return "pending"


def asks_forever(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    n = len(messages)
    call = ToolCall(id=f"c{n}", name="status", arguments='{"order_id": "O-1"}')
    return AssistantMessage(tool_calls=(call,))


def test_a_looping_run_raises_alerts_and_can_be_stopped(workspace) -> None:
    seen: list[AlertEvent] = []
    store = TraceStore(workspace)
    agent = ReActAgent(
        FunctionModel(asks_forever),
        [status],
        trace=store,
        max_steps=10,
        alerts=LoopAlerts(repeat=3, no_progress=None, stop=True, on_alert=seen.append),
    )
    result = agent.run_sync("Is O-1 shipped yet?")
    assert result.status == "failed" and result.steps == 3
    assert result.failure["kind"] == "loop"
    assert "stopped because it is looping" in result.explanation
    assert [a.alert for a in seen] == ["repeated_call"]
    rows = store.sql("select run_id, step, alert, stopped, detail->>'times' from alerts")
    assert rows == [(result.run_id, 3, "repeated_call", True, "3")]

    out = CliRunner().invoke(app, ["alerts", "--workspace", str(workspace)])
    assert out.exit_code == 0, out.output
    assert "repeated_call (run stopped)" in out.output and result.run_id[:8] in out.output


def test_no_progress_is_noticed_without_stopping_by_default(workspace) -> None:
    store = TraceStore(workspace)
    agent = ReActAgent(
        FunctionModel(asks_forever),
        [status],
        trace=store,
        max_steps=6,
        alerts=LoopAlerts(repeat=100, no_progress=2),
    )
    result = agent.run_sync("Is O-1 shipped yet?")
    assert result.status == "max_steps", "alerts alone do not stop a run"
    assert store.sql("select alert, step, stopped from alerts") == [("no_progress", 3, False)]
