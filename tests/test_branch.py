"""Branching a run: carry on from an edited system prompt, question or tool result,
or ask the model again at one of its replies."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agentlab.agents import ReActAgent
from agentlab.errors import UserError
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing import TraceStore


@tool
def order_status(order_id: str) -> str:
    """Look up the delivery status of a customer's order.

    Args:
        order_id: The order id, like "O-1".
    """
    return "shipped"


def support(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    """Look the order up once, then answer with what the tool said (and the prompt's tone)."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        call = ToolCall(id="c1", name="order_status", arguments='{"order_id": "O-1"}')
        return AssistantMessage(tool_calls=(call,))
    tone = "!" if "cheerful" in str(messages[0].content) else "."
    return AssistantMessage(content=f"{messages[1].content} -> {results[-1].content}{tone}")


@pytest.fixture
def done(tmp_path):
    agent = ReActAgent(FunctionModel(support), [order_status], trace=tmp_path / "ws")
    run = agent.start("Where is O-1?")
    run.finish_sync()
    assert [m.role for m in run.messages] == ["system", "user", "assistant", "tool", "assistant"]
    return run


def test_an_edited_tool_result_changes_what_the_model_answers(done):
    branch = done.branch(3, "lost in transit")
    assert [m.role for m in branch.messages] == ["system", "user", "assistant", "tool"]
    assert branch.steps == [] and branch.id != done.id
    assert branch.finish_sync().output == "Where is O-1? -> lost in transit."
    assert done.output == "Where is O-1? -> shipped.", "the original is untouched"


def test_an_edited_question_or_prompt_runs_from_the_start(done):
    asked = done.branch(1, "Where is O-2?")
    assert [m.role for m in asked.messages] == ["system", "user"]
    assert asked.input == "Where is O-2?"
    assert asked.finish_sync().output == "Where is O-2? -> shipped."
    prompted = done.branch(0, "Be cheerful.")
    assert [m.content for m in prompted.messages] == ["Be cheerful.", "Where is O-1?"]
    assert prompted.finish_sync().output == "Where is O-1? -> shipped!"


def test_at_a_reply_the_model_is_asked_again(done):
    again = done.branch(4)
    assert len(again.messages) == 4
    assert again.finish_sync().output == done.output
    assert len(again.steps) == 1, "only the last step is taken again"


def test_a_branch_is_traced_with_where_it_came_from(done):
    branch = done.branch(3, "lost in transit")
    branch.finish_sync()
    store = TraceStore(done.agent.tracer.workspace)
    row = store.run(branch.id)
    assert row is not None and row["metadata"] == {"branched_from": done.id, "branched_at": 3}
    first = store.steps(branch.id).iloc[0]
    assert "lost in transit" in first["input"], "the edited conversation is what step 1 sent"


@pytest.mark.parametrize(
    ("at", "content", "message"),
    [
        (9, None, r"has messages 0 to 4; cannot branch at 9"),
        (-1, None, r"cannot branch at -1"),
        (2, "no", r"Message 2 is the model's reply, which cannot be edited"),
    ],
)
def test_bad_branches_say_what_to_do(done, at, content, message):
    with pytest.raises(UserError, match=message):
        done.branch(at, content)
