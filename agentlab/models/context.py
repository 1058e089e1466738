"""What the model wrappers of one step share: the run's budget, the attempts made,
and which model served the step and why.

The run loop opens a :class:`CallContext` for each step's model request
(:func:`model_call`); the wrappers (retry, breaker, fallback, router, metering)
read and annotate it through :func:`current_call`. A model used outside a run has
no context: the wrappers then only do their own job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from agentlab.budgets import BudgetTracker
from agentlab.messages import Message
from agentlab.usage import PriceTable

__all__ = ["Attempt", "CallContext", "current_call", "model_call"]


@dataclass(slots=True)
class Attempt:
    """One request sent (or refused before sending) to one model endpoint."""

    number: int  # 1-based, within the step
    model: str
    started_at: float  # seconds since the epoch
    latency_ms: float
    status: Literal["ok", "error", "skipped"]  # skipped: refused before sending
    error: str | None = None
    error_type: str | None = None
    wait_s: float | None = None  # the wait before the next attempt, when retried

    def to_dict(self) -> dict[str, Any]:
        """The attempt as stored in ``model_calls.attempts``."""
        return {
            "number": self.number,
            "model": self.model,
            "started_at": self.started_at,
            "latency_ms": round(self.latency_ms, 3),
            "status": self.status,
            "error": self.error,
            "error_type": self.error_type,
            "wait_s": None if self.wait_s is None else round(self.wait_s, 3),
        }


@dataclass(slots=True)
class CallContext:
    """One step's model request as its wrappers see it."""

    run_id: str
    step: int
    budget: BudgetTracker | None = None
    prices: PriceTable | None = None
    count_tokens: Callable[[Sequence[Message]], int] | None = None
    emit: Callable[[Any], None] | None = None  # breaker transitions go to the run's trace
    attempts: list[Attempt] = field(default_factory=list)
    served_by: str | None = None
    route: str | None = None  # why that model served: "primary", "fallback: ...", "router: ..."
    fallbacks: list[str] = field(default_factory=list)  # "model: why it was left" in order

    def note_route(self, model: str, why: str) -> None:
        """Record the model that served the step and why (the last wrapper to say wins)."""
        self.served_by = model
        self.route = why


_call: ContextVar[CallContext | None] = ContextVar("agentlab_model_call", default=None)


def current_call() -> CallContext | None:
    """The step's call context, or None outside a run."""
    return _call.get()


class model_call:
    """Make `context` the current one for the model request in the block (a plain
    class, not a generator: it is entered on every step)."""

    __slots__ = ("_token", "context")

    def __init__(self, context: CallContext) -> None:
        self.context = context

    def __enter__(self) -> CallContext:
        self._token = _call.set(self.context)
        return self.context

    def __exit__(self, *exc: object) -> None:
        _call.reset(self._token)
