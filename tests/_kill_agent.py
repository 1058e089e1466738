"""A 5-step refund agent with two side-effecting tools, and the kill switch the
recovery tests use to SIGKILL its process at a chosen point.

- ``refund`` pays through a "payment service" (an append-only ledger file) that
  deduplicates on the idempotency key the tool is handed.
- ``send_email`` writes to an outbox that cannot deduplicate: the tool takes no
  key, so a call whose outcome is unknown must go to a person.

Kill points are counted per process: every trace event (after the durable writer
has written it: the trace is the first observer) and two points inside every tool
call (before and after its effect). :func:`arm` sets which point kills.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from agentlab import ReActAgent, tool
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tools import IdempotencyKey

ORDERS = {"O-1": 42.0, "O-2": 10.0}
_state: dict[str, Any] = {"dir": None, "kill_at": 0, "points": 0}


def arm(state_dir: str | os.PathLike[str], kill_at: int) -> None:
    """Count kill points from 0 in this process; SIGKILL it at point `kill_at` (0: never)."""
    _state.update(dir=Path(state_dir), kill_at=kill_at, points=0)


def point(label: str) -> None:
    """One kill point: the process dies here when it is the armed one."""
    _state["points"] += 1
    if _state["points"] == _state["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)


def points() -> int:
    """Kill points passed so far in this process."""
    return int(_state["points"])


def _append(name: str, record: dict[str, Any]) -> None:
    path = _state["dir"] / name
    with path.open("a") as f:  # one write: a kill leaves the line whole or absent
        f.write(json.dumps(record) + "\n")


def read(name: str) -> list[dict[str, Any]]:
    """The records in the state file `name` (ledger.jsonl, outbox.jsonl)."""
    path = _state["dir"] / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@tool
def lookup(order_id: str) -> dict[str, Any]:
    """Look up an order's total.

    Args:
        order_id: The order id, like "O-1".
    """
    point("lookup")
    return {"order_id": order_id, "total_usd": ORDERS[order_id]}


@tool
def refund(order_id: str, amount_usd: float, key: IdempotencyKey) -> str:
    """Refund an order through the payment service.

    Args:
        order_id: The order id.
        amount_usd: How much to refund.
    """
    point("refund:before")
    if not any(r["key"] == key for r in read("ledger.jsonl")):  # the service deduplicates
        _append("ledger.jsonl", {"key": key, "order_id": order_id, "amount_usd": amount_usd})
    point("refund:after")
    return f"refunded {amount_usd} on {order_id}"


@tool(side_effects=True)
def send_email(to: str, subject: str) -> str:
    """Send an email to a customer.

    Args:
        to: The address.
        subject: The subject line.
    """
    point("email:before")
    _append("outbox.jsonl", {"to": to, "subject": subject})
    point("email:after")
    return f"sent {subject!r} to {to}"


def _call(call_id: str, name: str, **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=json.dumps(arguments))


def script(messages: list[Message], tools: Any) -> AssistantMessage:
    """Five steps, decided by which tool results the conversation holds."""
    done = [m.name for m in messages if isinstance(m, ToolMessage)]
    if "lookup" not in done:
        return AssistantMessage(tool_calls=(_call("c1", "lookup", order_id="O-1"),))
    if done.count("refund") == 0:
        return AssistantMessage(
            tool_calls=(_call("c2", "refund", order_id="O-1", amount_usd=42.0),)
        )
    if done.count("send_email") == 0:
        return AssistantMessage(
            tool_calls=(_call("c3", "send_email", to="a@example.com", subject="Refund O-1"),)
        )
    if done.count("refund") == 1:
        return AssistantMessage(
            tool_calls=(
                _call("c4", "refund", order_id="O-2", amount_usd=10.0),
                _call("c5", "send_email", to="b@example.com", subject="Refund O-2"),
            )
        )
    return AssistantMessage(content="Refunded O-1 and O-2 and told both customers.")


class KillObserver:
    """A kill point after each trace event (the durable trace wrote it first)."""

    def emit(self, event: Any) -> None:
        point(f"event:{event.kind}")


def build_agent(workspace: str | os.PathLike[str]) -> ReActAgent:
    return ReActAgent(
        FunctionModel(script),
        [lookup, refund, send_email],
        name="refunds",
        trace=workspace,
        observers=[KillObserver()],
    )


def agent_from_env() -> ReActAgent:
    """The agent for the CLI (``--agent _kill_agent:agent_from_env``): its workspace
    and state directory from ``AGENTLAB_WORKSPACE`` and ``KILL_AGENT_STATE``."""
    arm(Path(os.environ["KILL_AGENT_STATE"]), 0)
    return build_agent(os.environ["AGENTLAB_WORKSPACE"])
