"""Scripted-model agents for the gateway tests: `tests.gateway_fixtures.agents:NAME`.

Each factory builds a fresh agent; the gateway's workers build them once each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from agentlab.agents import ReActAgent
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tools import tool

SECRET_TEXT = "cannot open /home/alice/.ssh/id_rsa with token sk-abcdef1234567890abcdef12"


def _last_user(messages: Sequence[Message]) -> str:
    return str(getattr(messages[-1], "content", ""))


def echo() -> ReActAgent:
    """Answers `echo: <input>`."""
    return ReActAgent(
        FunctionModel(lambda m, t: f"echo: {_last_user(m)}", name="echo"), name="echo"
    )


def echo_v2() -> ReActAgent:
    """Version 2 of echo: answers `v2: <input>`."""
    return ReActAgent(FunctionModel(lambda m, t: f"v2: {_last_user(m)}", name="echo2"), name="echo")


def failing_model() -> ReActAgent:
    """Its model raises an error whose text holds a file path and a token."""

    def broken(messages: Sequence[Message], tools: Any) -> str:
        raise RuntimeError(SECRET_TEXT)

    return ReActAgent(FunctionModel(broken, name="broken"), name="failing", max_retries=0)


class _BrokenObserver:
    """Raises on the first model call: the run loop cannot catch it (a crash)."""

    def emit(self, event: Any) -> None:
        if getattr(event, "kind", "") == "model_call":
            raise ValueError(SECRET_TEXT)


def crashing() -> ReActAgent:
    """A run that crashes out of the run loop after it started."""
    return ReActAgent(
        FunctionModel(lambda m, t: "never seen", name="crash"),
        name="crashing",
        observers=[_BrokenObserver()],
    )


def slow() -> ReActAgent:
    """Answers after sleeping the number of seconds its input says (default 0.2)."""

    async def sleepy(messages: Sequence[Message], tools: Any) -> str:
        text = _last_user(messages)
        try:
            delay = float(text)
        except ValueError:
            delay = 0.2
        await asyncio.sleep(delay)
        return f"slept {delay}"

    return ReActAgent(FunctionModel(sleepy, name="slow"), name="slow")


@tool
def lookup(order_id: str) -> dict[str, Any]:
    """Look up an order.

    Args:
        order_id: The order id.
    """
    return {"order_id": order_id, "total_usd": 42.0}


@tool(requires_approval=True)
def refund(order_id: str, amount_usd: float) -> str:
    """Refund an order (a person approves it first).

    Args:
        order_id: The order id.
        amount_usd: How much to refund.
    """
    return f"refunded {amount_usd} on {order_id}"


def _refund_reply(messages: Sequence[Message], tools: Any) -> AssistantMessage:
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        call = ToolCall(id="c1", name="lookup", arguments='{"order_id": "O-1"}')
        return AssistantMessage(content="Looking it up.", tool_calls=(call,))
    if len(results) == 1:
        call = ToolCall(id="c2", name="refund", arguments='{"order_id": "O-1", "amount_usd": 42}')
        return AssistantMessage(tool_calls=(call,))
    return AssistantMessage(content="Outcome: " + results[-1].content)


def refunds() -> ReActAgent:
    """Looks an order up, then refunds it: the refund waits for a person's approval."""
    return ReActAgent(
        FunctionModel(_refund_reply, name="refunds"), [lookup, refund], name="refunds"
    )
