"""The support agent of the demo shop: three read-only tools and a ReAct agent.

Every tool opens the database read-only for the duration of one call, returns a
small JSON-able record, and raises :class:`~agentlab.errors.ToolRetry` with a
message the model can act on when nothing matches.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from pydantic import Field

from agentlab.agents import ReActAgent
from agentlab.agents.agent import TraceTarget
from agentlab.demo.database import connect_readonly, create_demo_database, demo_database_path
from agentlab.errors import ToolRetry
from agentlab.models import Model
from agentlab.tools import Tool, tool
from agentlab.workspace import resolve_workspace

if TYPE_CHECKING:
    from agentlab.memory.agent_memory import Memory

__all__ = ["INSTRUCTIONS", "build_support_agent", "support_tools"]

INSTRUCTIONS = (
    "You are the support assistant of an online shop. Look facts up with the tools, then "
    "answer briefly with the facts from the tool result (status, carrier, dates, amounts, "
    "ids); never guess them. If nothing was found, say so and ask the customer to check "
    "the id or email."
)

OrderId = Annotated[str, Field(pattern=r"^O-[0-9]{4}$")]
CustomerId = Annotated[str, Field(pattern=r"^C-[0-9]{3}$")]
Email = Annotated[str, Field(pattern=r"^[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")]


class Customer(TypedDict):
    customer_id: str
    name: str
    email: str
    tier: str


class OrderSummary(TypedDict):
    order_id: str
    placed_on: str
    status: str
    total_usd: str


class Order(OrderSummary):
    items: list[str]
    carrier: str | None
    tracking_number: str | None
    delivery_status: str
    eta: str | None


def _usd(amount: Decimal) -> str:
    return f"{amount:.2f}"


def support_tools(db_path: str | os.PathLike[str]) -> list[Tool]:
    """The support tools, bound to the demo database at `db_path`."""
    path = Path(db_path)

    def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with connect_readonly(path) as con:
            return con.execute(sql, list(params)).fetchall()

    def order_not_found(order_id: str) -> ToolRetry:
        return ToolRetry(
            f"No order {order_id}. Order ids look like O-1001; check the id the customer "
            "gave (or list their orders with list_orders) and call again."
        )

    @tool
    def find_customer(email: Email) -> Customer:
        """Find a customer by email address: customer id, name and tier.

        Use it when the user gives an email address, e.g. to get the customer id
        that list_orders needs.

        Args:
            email: The customer's email address exactly as written, like ana@example.com.
        """
        rows = query(
            "SELECT customer_id, name, email, tier FROM customers WHERE lower(email) = lower(?)",
            email.strip(),
        )
        if not rows:
            raise ToolRetry(
                f"No customer has the email {email}. Emails look like ana@example.com; "
                "check the spelling in the user's message, or ask the customer to confirm it."
            )
        customer_id, name, email_on_file, tier = rows[0]
        return Customer(customer_id=customer_id, name=name, email=email_on_file, tier=tier)

    @tool
    def get_order(order_id: OrderId) -> Order:
        """Get an order by order id: status, date, total in USD, items and its shipment.

        The shipment part gives the carrier, tracking number, delivery status and
        estimated delivery date (eta; the delivery date once delivered). Use it for
        any question about one order: status, cost, contents, where it is, when it
        arrives.

        Args:
            order_id: The order id, like O-1001.
        """
        rows = query(
            "SELECT o.placed_on, o.status, o.total_usd, s.carrier, "
            "s.tracking_number, s.status, s.eta FROM orders o "
            "LEFT JOIN shipments s USING (order_id) WHERE o.order_id = ?",
            order_id,
        )
        if not rows:
            raise ToolRetry(
                f"No order {order_id}. Order ids look like O-1001; check the id the customer "
                "gave (or list their orders with list_orders) and call again."
            )
        placed_on, status, total, carrier, tracking, delivery, eta = rows[0]
        items = query(
            "SELECT quantity, product FROM order_items WHERE order_id = ? ORDER BY rowid", order_id
        )
        if carrier is None:
            delivery = "nothing to ship" if status == "cancelled" else "not shipped yet"
        return Order(
            order_id=order_id,
            placed_on=placed_on.isoformat(),
            status=status,
            total_usd=_usd(total),
            items=[f"{quantity} x {product}" for quantity, product in items],
            carrier=carrier,
            tracking_number=tracking,
            delivery_status=delivery,
            eta=eta.isoformat() if eta else None,
        )

    @tool
    def list_orders(customer_id: CustomerId) -> list[OrderSummary]:
        """List all orders of a customer by customer id, newest first.

        Gives each order's id, date, status and total. If you only have the
        customer's email, call find_customer first to get the customer id.

        Args:
            customer_id: The customer id, like C-001 (not an email).
        """
        if not query("SELECT 1 FROM customers WHERE customer_id = ?", customer_id):
            raise ToolRetry(
                f"No customer {customer_id}. Customer ids look like C-001; if you only have "
                "the customer's email, call find_customer to get their id."
            )
        rows = query(
            "SELECT order_id, placed_on, status, total_usd FROM orders "
            "WHERE customer_id = ? ORDER BY placed_on DESC, order_id DESC",
            customer_id,
        )
        return [
            OrderSummary(
                order_id=oid, placed_on=placed_on.isoformat(), status=status, total_usd=_usd(total)
            )
            for oid, placed_on, status, total in rows
        ]

    return [find_customer, get_order, list_orders]


def build_support_agent(
    model: Model | str = "local:smollm2",
    *,
    db_path: str | os.PathLike[str] | None = None,
    trace: TraceTarget = True,
    max_steps: int = 6,
    memory: Memory | None = None,
    cache_ttl: float | None = None,
) -> ReActAgent:
    """A ReAct support agent over the demo shop database.

    `db_path` defaults to ``<workspace>/demo/shop.duckdb``; the database is created
    there if it does not exist yet. `trace` is passed to the agent (True records
    runs in the default workspace), and so is `memory`. With `cache_ttl`, lookup
    results are cached for that many seconds per session.
    """
    path = Path(db_path) if db_path is not None else demo_database_path(resolve_workspace())
    if not path.is_file():
        create_demo_database(path)
    tools = support_tools(path)
    if cache_ttl is not None:
        tools = [
            Tool(t.function, name=t.name, description=t.description, cache_ttl=cache_ttl)
            for t in tools
        ]
    return ReActAgent(
        model,
        tools,
        name="support-demo",
        instructions=INSTRUCTIONS,
        max_steps=max_steps,
        trace=trace,
        memory=memory,
    )
