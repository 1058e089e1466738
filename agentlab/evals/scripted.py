"""Scripted models for eval notebooks and benchmarks: free, instant, deterministic.

Select them in the eval notebook with ``model="scripted:echo"`` or
``model="scripted:one_call"`` (see :func:`agentlab.evals.notebook_support.resolve_model`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition
from agentlab.models import FunctionModel, Model

__all__ = ["SCRIPTED_MODELS", "echo", "one_call"]

Reply = AssistantMessage | str


def _last_user(messages: Sequence[Message]) -> str:
    return next((m.content or "" for m in reversed(messages) if m.role == "user"), "")


def echo() -> Model:
    """Answers at once with the user's message (no tool call): one step per case."""

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        return _last_user(messages)

    return FunctionModel(reply, name="echo")


def one_call(tool: str = "get_order", arguments: dict | None = None) -> Model:
    """Calls `tool` once (default ``get_order(order_id="O-1001")``), then echoes the
    user's message: two steps per case."""
    args = json.dumps(arguments if arguments is not None else {"order_id": "O-1001"})

    def reply(
        messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AssistantMessage | str:
        if any(m.role == "tool" for m in messages):
            return _last_user(messages)
        return AssistantMessage(tool_calls=(ToolCall(id="call-1", name=tool, arguments=args),))

    return FunctionModel(reply, name="one_call")


SCRIPTED_MODELS: dict[str, Callable[[], Model]] = {"echo": echo, "one_call": one_call}
