"""Plain-language explanations for runs that cannot finish."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from agentlab.agents.records import Step


def summarize_attempts(steps: Sequence[Step]) -> str:
    """What was tried, e.g. "3 model calls; tools: get_order 2x (1 failed)"."""
    calls: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for step in steps:
        for call in step.tool_calls:
            calls[call.name] += 1
            if call.status != "ok":
                failed[call.name] += 1
    n = len(steps)
    text = f"{n} model call{'s' if n != 1 else ''}"
    if calls:
        parts = [
            f"{name} {count}x" + (f" ({failed[name]} failed)" if failed[name] else "")
            for name, count in calls.items()
        ]
        text += "; tools called: " + ", ".join(parts)
    else:
        text += "; no tool was called"
    return text


def explanation(what: str, steps: Sequence[Step], next_: str) -> str:
    """The three parts every explanation has: what went wrong, what was tried,
    what to do next."""
    return (
        f"What went wrong: {what}\n"
        f"What was tried: {summarize_attempts(steps)}.\n"
        f"What to do next: {next_}"
    )
