"""The demo shop's refund flow: a :class:`~agentlab.agents.StateMachineAgent`
following ``refund_flow.yaml`` (identify_order → check_eligibility → issue_refund |
deny → done) over the demo database.

The spec ships inside the package beside its tools and guards, so
``build_refund_agent()`` works from any notebook, an exported package and an
installed agentlab alike. Issuing a refund needs a person's approval (the tool's
``requires_approval``): the run pauses before the money moves. Refunds are written
to a JSON-lines ledger in the workspace, deduplicated by the call's idempotency key.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, TypedDict

from agentlab.agents.agent import TraceTarget
from agentlab.agents.state_machine import Guard, StateMachine
from agentlab.agents.state_machine_agent import StateMachineAgent, last_result
from agentlab.demo.database import connect_readonly, shared_demo_database
from agentlab.demo.support import OrderId, support_tools
from agentlab.errors import ToolRetry
from agentlab.models import Model
from agentlab.tools import IdempotencyKey, Tool, tool
from agentlab.workspace import resolve_workspace

__all__ = [
    "REFUND_FLOW_SPEC",
    "REFUND_GUARDS",
    "build_refund_agent",
    "refund_ledger",
    "refund_tools",
]

REFUND_FLOW_SPEC = Path(__file__).with_name("refund_flow.yaml")
"""The refund flow's spec (YAML)."""

_LEDGER_LOCK = threading.Lock()


class Eligibility(TypedDict):
    order_id: str
    eligible: bool
    reason: str
    amount_usd: str


class Refund(TypedDict):
    refund_id: str
    order_id: str
    amount_usd: str


def refund_ledger(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The refunds written to the ledger at `path`, oldest first."""
    file = Path(path)
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line]


def refund_tools(db_path: str | os.PathLike[str], ledger: str | os.PathLike[str]) -> list[Tool]:
    """The refund flow's tools over the demo database at `db_path`, writing refunds
    to the JSON-lines `ledger` (``get_order`` is the support demo's)."""
    db, book = Path(db_path), Path(ledger)
    get_order = next(t for t in support_tools(db) if t.name == "get_order")

    def order_row(order_id: str) -> tuple[str, Any]:
        with connect_readonly(db) as con:
            rows = con.execute(
                "SELECT status, total_usd FROM orders WHERE order_id = ?", [order_id]
            ).fetchall()
        if not rows:
            raise ToolRetry(f"No order {order_id}. Order ids look like O-1001; check the id.")
        return rows[0][0], rows[0][1]

    @tool
    def check_refund_eligibility(order_id: OrderId) -> Eligibility:
        """Check whether an order can be refunded, and for how much.

        Delivered orders can be refunded in full; orders not delivered yet (or
        cancelled) cannot.

        Args:
            order_id: The order id, like O-1001.
        """
        status, total = order_row(order_id)
        reasons = {
            "delivered": "delivered orders can be refunded in full",
            "cancelled": "the order was cancelled, so it was never charged",
        }
        reason = reasons.get(status, f"the order is {status}, not delivered yet: cancel it instead")
        return Eligibility(
            order_id=order_id,
            eligible=status == "delivered",
            reason=reason,
            amount_usd=f"{total:.2f}",
        )

    @tool(requires_approval=True)
    def issue_refund(order_id: OrderId, key: IdempotencyKey) -> Refund:
        """Refund a delivered order in full (money leaves the shop: a person approves it).

        Args:
            order_id: The order id, like O-1001.
        """
        status, total = order_row(order_id)
        if status != "delivered":
            raise ToolRetry(f"Order {order_id} is {status}: only delivered orders are refunded.")
        with _LEDGER_LOCK:
            done = refund_ledger(book)
            made = next((r for r in done if r["key"] == key), None)  # made again: a recovery
            if made is None:
                made = {
                    "refund_id": f"R-{len(done) + 1:04d}",
                    "order_id": order_id,
                    "amount_usd": f"{total:.2f}",
                    "key": key,
                }
                book.parent.mkdir(parents=True, exist_ok=True)
                with book.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(made) + "\n")
        return Refund(
            refund_id=made["refund_id"], order_id=made["order_id"], amount_usd=made["amount_usd"]
        )

    return [get_order, check_refund_eligibility, issue_refund]


def order_found(run: Any) -> bool:
    """An order was looked up successfully."""
    return isinstance(last_result(run, "get_order"), dict)


def eligible(run: Any) -> bool:
    """The latest eligibility check says the order can be refunded."""
    checked = last_result(run, "check_refund_eligibility")
    return isinstance(checked, dict) and checked.get("eligible") is True


def not_eligible(run: Any) -> bool:
    """The latest eligibility check says the order cannot be refunded."""
    checked = last_result(run, "check_refund_eligibility")
    return isinstance(checked, dict) and checked.get("eligible") is False


def refund_decided(run: Any) -> bool:
    """The refund was issued, or a person declined it."""
    return any(
        call.name == "issue_refund" and call.status in ("ok", "denied")
        for step in run.steps
        for call in step.tool_calls
    )


REFUND_GUARDS: dict[str, Guard] = {
    g.__name__: g for g in (order_found, eligible, not_eligible, refund_decided)
}
"""The guards ``refund_flow.yaml`` names."""


def build_refund_agent(
    model: Model | str = "local:smollm2",
    *,
    db_path: str | os.PathLike[str] | None = None,
    ledger: str | os.PathLike[str] | None = None,
    trace: TraceTarget = True,
    max_steps: int = 12,
) -> StateMachineAgent:
    """The refund flow agent over the demo database (default: the workspace's,
    created if missing); refunds go to `ledger` (default
    ``<workspace>/demo/refunds.jsonl``)."""
    workspace = resolve_workspace()
    db = Path(db_path) if db_path is not None else shared_demo_database(workspace)
    book = Path(ledger) if ledger is not None else workspace / "demo" / "refunds.jsonl"
    machine = StateMachine.from_spec(REFUND_FLOW_SPEC, guards=REFUND_GUARDS)
    return StateMachineAgent(
        model,
        machine,
        refund_tools(db, book),
        name="refund-flow",
        max_steps=max_steps,
        trace=trace,
    )
