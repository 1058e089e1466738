"""Offline accuracy of the local model's tool calling on a customer-support agent.

Measures, at temperature 0 with the tools the demo agent uses:

* first-call accuracy: the first reply is the right tool with the right arguments
  (or an answer, for the cases that need no tool);
* answer-after-result accuracy: with a tool result in the history, the reply is an
  answer that states the fact the user asked for;
* chained-call accuracy: with one tool result in the history, the reply is the
  right next call (e.g. ``list_orders`` with the customer id just found).

Variants of the prompt and grammar are applied by patching the private module
:mod:`agentlab.models._tool_grammar`; the default is what ``LocalModel`` ships.

    python benchmarks/local_tool_calling.py [--variant NAME ...] [--threads 1] [-v]

Prints one line per failure with ``-v`` and a final JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agentlab.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from agentlab.models import _tool_grammar, allow_model_requests
from agentlab.models.local import LocalModel
from agentlab.tools import tool

SYSTEM = (
    "You are a customer-support agent for an online shop. Use the tools to look "
    "up customers, orders and shipments. Be brief and friendly."
)


@tool
def find_customer(email: str) -> dict:
    """Find a customer by email address and return their record (id, name).

    Args:
        email: The customer's email address, like ana@example.com.
    """
    return {}


@tool
def get_order(order_id: str) -> dict:
    """Get the details of one order: status, items and total.

    Args:
        order_id: The order id, like O-1001.
    """
    return {}


@tool
def list_orders(customer_id: str) -> list:
    """List all orders of a customer.

    Args:
        customer_id: The customer id, like C-001.
    """
    return []


@tool
def track_shipment(order_id: str) -> dict:
    """Track the shipment of an order: carrier, status and estimated delivery date.

    Args:
        order_id: The order id, like O-1001.
    """
    return {}


TOOLS = [t.definition for t in (find_customer, get_order, list_orders, track_shipment)]

# (user message, acceptable tool names (None = an answer), arguments)
FIRST_CALLS: list[tuple[str, set[str] | None, dict[str, str]]] = [
    (
        "Can you look up the customer with email ana@example.com?",
        {"find_customer"},
        {"email": "ana@example.com"},
    ),
    ("What's the status of my order O-1001?", {"get_order"}, {"order_id": "O-1001"}),
    ("Where is my package? The order is O-1002.", {"track_shipment"}, {"order_id": "O-1002"}),
    ("Show me all orders for customer C-001.", {"list_orders"}, {"customer_id": "C-001"}),
    ("How much did order O-1003 cost?", {"get_order"}, {"order_id": "O-1003"}),
    ("When will order O-1004 arrive?", {"track_shipment"}, {"order_id": "O-1004"}),
    (
        "Hi, I'm bob@example.com. Can you find my account?",
        {"find_customer"},
        {"email": "bob@example.com"},
    ),
    ("List the orders of customer C-002 please.", {"list_orders"}, {"customer_id": "C-002"}),
    ("Which carrier is shipping O-1005?", {"track_shipment"}, {"order_id": "O-1005"}),
    ("What items are in order O-1006?", {"get_order"}, {"order_id": "O-1006"}),
    (
        "My email is carla.m@example.com, what is my customer id?",
        {"find_customer"},
        {"email": "carla.m@example.com"},
    ),
    ("What has customer C-003 ordered so far?", {"list_orders"}, {"customer_id": "C-003"}),
    ("Track the shipment for order O-1007.", {"track_shipment"}, {"order_id": "O-1007"}),
    ("Give me the details of order O-1008.", {"get_order"}, {"order_id": "O-1008"}),
    ("Is order O-1009 delivered yet?", {"track_shipment", "get_order"}, {"order_id": "O-1009"}),
    ("Find the customer dan@example.com.", {"find_customer"}, {"email": "dan@example.com"}),
    ("Hi! Can you check the total of O-1010?", {"get_order"}, {"order_id": "O-1010"}),
    ("What's the delivery estimate for O-1011?", {"track_shipment"}, {"order_id": "O-1011"}),
    ("Pull up the order history for C-004.", {"list_orders"}, {"customer_id": "C-004"}),
    ("Look up eve@example.com for me.", {"find_customer"}, {"email": "eve@example.com"}),
    ("Thanks, that's all I needed!", None, {}),
    ("Hello! Who am I talking to?", None, {}),
]


@dataclass
class AfterResult:
    """A conversation ending in a tool result; the reply should answer or call next."""

    question: str
    tool: str
    arguments: dict[str, str]
    result: object
    expect_any: list[str] = field(default_factory=list)  # answer must contain one
    next_tool: str | None = None  # or: the next call expected
    next_arguments: dict[str, str] = field(default_factory=dict)

    def messages(self) -> list[Message]:
        call = ToolCall(id="call_1", name=self.tool, arguments=json.dumps(self.arguments))
        return [
            SystemMessage(content=SYSTEM),
            UserMessage(content=self.question),
            AssistantMessage(tool_calls=(call,)),
            ToolMessage(tool_call_id="call_1", name=self.tool, content=json.dumps(self.result)),
        ]


ANSWERS = [
    AfterResult(
        "What's the status of my order O-1001?",
        "get_order",
        {"order_id": "O-1001"},
        {"order_id": "O-1001", "status": "shipped", "total": 42.5, "items": ["blue mug"]},
        ["shipped"],
    ),
    AfterResult(
        "Where is my package? The order is O-1002.",
        "track_shipment",
        {"order_id": "O-1002"},
        {"carrier": "DHL", "status": "in transit", "eta": "2026-12-03"},
        ["in transit", "DHL", "2026-12-03", "December 3"],
    ),
    AfterResult(
        "My email is ana@example.com, what is my customer id?",
        "find_customer",
        {"email": "ana@example.com"},
        {"customer_id": "C-001", "name": "Ana Lima", "email": "ana@example.com"},
        ["C-001"],
    ),
    AfterResult(
        "How many orders does customer C-001 have?",
        "list_orders",
        {"customer_id": "C-001"},
        [
            {"order_id": "O-1001", "status": "shipped"},
            {"order_id": "O-1003", "status": "delivered"},
        ],
        ["2", "two"],
    ),
    AfterResult(
        "How much did order O-1003 cost?",
        "get_order",
        {"order_id": "O-1003"},
        {"order_id": "O-1003", "status": "delivered", "total": 19.99, "items": ["notebook"]},
        ["19.99"],
    ),
    AfterResult(
        "When will order O-1004 arrive?",
        "track_shipment",
        {"order_id": "O-1004"},
        {"carrier": "UPS", "status": "in transit", "eta": "2026-12-05"},
        ["2026-12-05", "December 5"],
    ),
    AfterResult(
        "Has order O-1006 shipped?",
        "get_order",
        {"order_id": "O-1006"},
        {"order_id": "O-1006", "status": "cancelled", "total": 10.0, "items": []},
        ["cancel"],
    ),
    AfterResult(
        "Hi, I'm bob@example.com. What name is on my account?",
        "find_customer",
        {"email": "bob@example.com"},
        {"customer_id": "C-002", "name": "Bob Stone", "email": "bob@example.com"},
        ["Bob Stone"],
    ),
]

CHAINED = [
    AfterResult(
        "I'm ana@example.com. Please list my orders.",
        "find_customer",
        {"email": "ana@example.com"},
        {"customer_id": "C-001", "name": "Ana Lima", "email": "ana@example.com"},
        next_tool="list_orders",
        next_arguments={"customer_id": "C-001"},
    ),
    AfterResult(
        "Where is the most recent order of customer C-002?",
        "list_orders",
        {"customer_id": "C-002"},
        [{"order_id": "O-1012", "status": "shipped", "date": "2026-11-20"}],
        next_tool="track_shipment",
        next_arguments={"order_id": "O-1012"},
    ),
    AfterResult(
        "I'm carla.m@example.com, what's in my orders?",
        "find_customer",
        {"email": "carla.m@example.com"},
        {"customer_id": "C-003", "name": "Carla Mendes"},
        next_tool="list_orders",
        next_arguments={"customer_id": "C-003"},
    ),
]


def _set(name: str, value: object) -> Callable[[], None]:
    return lambda: setattr(_tool_grammar, name, value)


def _with_patterns() -> None:
    """Tools whose id parameters carry a regex pattern (as a careful author would add)."""
    patterns = {
        "order_id": "^O-[0-9]{4}$",
        "customer_id": "^C-[0-9]{3}$",
        "email": "^[a-z0-9._-]+@[a-z0-9.-]+[.][a-z]+$",
    }
    for i, t in enumerate(TOOLS):
        params = json.loads(json.dumps(t.parameters))
        for name, spec in params["properties"].items():
            spec["pattern"] = patterns[name]
        TOOLS[i] = t.model_copy(update={"parameters": params})


# Variants measured against the shipped default ("default"); combine them freely.
VARIANTS: dict[str, list[Callable[[], None]]] = {
    "default": [],
    "patterns": [_with_patterns],  # the tools' id and email parameters carry a pattern
    "no_copy": [_set("COPY_VALUES", False)],  # pattern arguments are not copy-constrained
    "no_spans": [_set("SPAN_WORDS", 0)],  # other string arguments are free (bounded)
    "span1": [_set("SPAN_WORDS", 1)],  # spans of up to 1, 2, 4 words (default 3)
    "span2": [_set("SPAN_WORDS", 2)],
    "span4": [_set("SPAN_WORDS", 4)],
    "no_retry": [_set("is_repeated_call", lambda call, messages: False)],
    "spaced_json": [_set("SEPARATORS", (": ", ", "))],
}


@dataclass
class Score:
    ok: int = 0
    total: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def add(self, ok: bool, seconds: float, why: str) -> None:
        self.ok += ok
        self.total += 1
        self.seconds += seconds
        if not ok:
            self.failures.append(why)

    @property
    def accuracy(self) -> float:
        return round(self.ok / self.total, 3) if self.total else 0.0


async def _reply(
    model: LocalModel, messages: list[Message]
) -> tuple[AssistantMessage | str, float]:
    start = time.perf_counter()
    try:
        reply: AssistantMessage | str = (await model.request(messages, TOOLS)).message
    except Exception as e:  # a failure to parse counts as a wrong reply
        reply = f"{type(e).__name__}: {e}"
    return reply, time.perf_counter() - start


def _describe(reply: AssistantMessage | str) -> str:
    if isinstance(reply, str):
        return reply
    if reply.tool_calls:
        return f"{reply.tool_calls[0].name}({reply.tool_calls[0].arguments})"
    return f"answer {reply.content!r}"


def _is_call(reply: AssistantMessage | str, tools: set[str], arguments: dict[str, str]) -> bool:
    if isinstance(reply, str) or not reply.tool_calls:
        return False
    call = reply.tool_calls[0]
    return call.name in tools and call.parsed_arguments() == arguments


async def run(threads: int) -> dict[str, object]:
    model = LocalModel(threads=threads)
    first, answers, chained = Score(), Score(), Score()
    with allow_model_requests(True):
        await model.request([UserMessage(content="hi")], settings=None)  # load + warm up
        for question, tools, arguments in FIRST_CALLS:
            reply, dt = await _reply(
                model, [SystemMessage(content=SYSTEM), UserMessage(content=question)]
            )
            ok = (
                (
                    isinstance(reply, AssistantMessage)
                    and not reply.tool_calls
                    and bool(reply.content)
                )
                if tools is None
                else _is_call(reply, tools, arguments)
            )
            first.add(ok, dt, f"first  {question!r} -> {_describe(reply)}")
        for case in ANSWERS:
            reply, dt = await _reply(model, case.messages())
            text = reply.content or "" if isinstance(reply, AssistantMessage) else ""
            ok = (
                isinstance(reply, AssistantMessage)
                and not reply.tool_calls
                and any(k.lower() in text.lower() for k in case.expect_any)
            )
            answers.add(ok, dt, f"answer {case.question!r} -> {_describe(reply)}")
        for case in CHAINED:
            reply, dt = await _reply(model, case.messages())
            ok = _is_call(reply, {case.next_tool or ""}, case.next_arguments)
            chained.add(ok, dt, f"chain  {case.question!r} -> {_describe(reply)}")
    calls = first.total + answers.total + chained.total
    return {
        "first_call_accuracy": first.accuracy,
        "answer_after_result_accuracy": answers.accuracy,
        "chained_call_accuracy": chained.accuracy,
        "seconds_per_call": round((first.seconds + answers.seconds + chained.seconds) / calls, 2),
        "calls": calls,
        "failures": first.failures + answers.failures + chained.failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=["default"], nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print each failure")
    args = parser.parse_args()
    for variant in args.variant:
        for patch in VARIANTS[variant]:
            patch()
    result = asyncio.run(run(args.threads))
    failures = result.pop("failures")
    if args.verbose:
        for line in failures:  # type: ignore[attr-defined]
            print(line)
    print(json.dumps({"variant": "+".join(args.variant), "threads": args.threads, **result}))


if __name__ == "__main__":
    main()
