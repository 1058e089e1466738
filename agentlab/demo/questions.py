"""The demo's customer questions, each with the tool calls and the fact its answer
needs. Each is answerable in one or two tool calls against ``seed.sql``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["QUESTIONS", "DemoQuestion", "ExpectedCall"]


@dataclass(frozen=True)
class ExpectedCall:
    """A tool call a correct run makes: the tool and its exact arguments."""

    tool: str
    arguments: Mapping[str, object]


@dataclass(frozen=True)
class DemoQuestion:
    """A question, the calls a correct run makes (in any order, possibly among
    others), and a text its answer must contain (case-insensitive)."""

    question: str
    expected_calls: tuple[ExpectedCall, ...]
    answer_contains: str
    also_accepted: tuple[str, ...] = ()

    def answer_matches(self, answer: str | None) -> bool:
        """Whether `answer` contains the expected text (or an accepted equivalent)."""
        text = (answer or "").lower()
        return any(w.lower() in text for w in (self.answer_contains, *self.also_accepted))


QUESTIONS: tuple[DemoQuestion, ...] = (
    DemoQuestion(
        "What is the status of order O-1003?",
        (ExpectedCall("get_order", {"order_id": "O-1003"}),),
        "delivered",
    ),
    DemoQuestion(
        "Where is the package for order O-1007? Which carrier is shipping it?",
        (ExpectedCall("get_order", {"order_id": "O-1007"}),),
        "DHL",
    ),
    DemoQuestion(
        "Which customer has the email grace.kim@example.com?",
        (ExpectedCall("find_customer", {"email": "grace.kim@example.com"}),),
        "Grace Kim",
    ),
    DemoQuestion(
        "List the orders of customer C-004.",
        (ExpectedCall("list_orders", {"customer_id": "C-004"}),),
        "O-1015",
    ),
    DemoQuestion(
        "How much did order O-1013 cost?",
        (ExpectedCall("get_order", {"order_id": "O-1013"}),),
        "58.98",
    ),
    DemoQuestion(
        "When will order O-1015 arrive?",
        (ExpectedCall("get_order", {"order_id": "O-1015"}),),
        "2026-11-28",
        also_accepted=("November 28",),
    ),
    DemoQuestion(
        "My email is eve@example.com. Can you list my orders?",
        (
            ExpectedCall("find_customer", {"email": "eve@example.com"}),
            ExpectedCall("list_orders", {"customer_id": "C-005"}),
        ),
        "O-1019",
    ),
)
