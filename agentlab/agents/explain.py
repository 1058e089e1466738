"""Why a run ended badly, as one structured record and in plain language.

Every run that does not complete carries a :class:`Failure`: what went wrong,
what was tried (steps, model requests and their attempts, fallbacks, tool calls,
budget spent) and what to do next. It is stored whole in ``runs.failure`` and
its prose form is the run's ``explanation``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentlab.agents.records import Step

__all__ = ["Failure", "summarize_attempts", "tried"]


@dataclass(frozen=True)
class Failure:
    """Why a run stopped: `kind` (``model``, ``tool``, ``budget``, ``max_steps``,
    ``context``, ``memory``, ``cancelled``, ``definition``, ``loop``, ``anomaly``),
    `what` went wrong, what was `tried`,
    and what to do `next`. `error` is the type of the error behind it, if any."""

    kind: str
    what: str
    next: str
    tried: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def text(self) -> str:
        """The plain-language explanation: the three parts every one has."""
        return (
            f"What went wrong: {self.what}\n"
            f"What was tried: {self.tried.get('summary', 'nothing')}.\n"
            f"What to do next: {self.next}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The record stored in ``runs.failure``."""
        return {
            "kind": self.kind,
            "what": self.what,
            "next": self.next,
            "error": self.error,
            "tried": self.tried,
        }


def summarize_attempts(steps: Sequence[Step]) -> str:
    """What was tried, e.g. "3 model calls (4 requests); tools called: get_order 2x (1 failed)"."""
    calls: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    requests = 0
    for step in steps:
        requests += max(1, len(step.attempts))
        for call in step.tool_calls:
            calls[call.name] += 1
            if call.status != "ok":
                failed[call.name] += 1
    n = len(steps)
    text = f"{n} model call{'s' if n != 1 else ''}"
    if requests > n:
        text += f" ({requests} requests, retries and fallbacks included)"
    if calls:
        parts = [
            f"{name} {count}x" + (f" ({failed[name]} failed)" if failed[name] else "")
            for name, count in calls.items()
        ]
        text += "; tools called: " + ", ".join(parts)
    else:
        text += "; no tool was called"
    return text


def tried(steps: Sequence[Step], budget_spent: dict[str, Any]) -> dict[str, Any]:
    """The structured "what was tried" of a run: per step its attempts, the model
    that served it and why, its tool calls; the budget spent; a one-line summary."""
    return {
        "summary": summarize_attempts(steps),
        "steps": [
            {
                "step": s.index,
                "served_by": s.served_by,
                "route": s.route,
                "error": s.error,
                "attempts": s.attempts,
                "fallbacks": s.fallbacks,
                "tool_calls": [{"tool": c.name, "status": c.status} for c in s.tool_calls],
            }
            for s in steps[-5:]  # the last five: what led to the end
        ],
        "budget_spent": budget_spent,
    }
