"""Matching the tool calls a run made against the ones a case expects.

Expected calls and made calls are paired one to one, as many pairs as possible; an
expected call accepts a made call when its arguments match (accepted values, optional
and extra arguments, string normalisation: see :mod:`agentlab.evals.dataset`). Each
unmatched expected call is explained from the calls made to the same tool, argument
by argument, e.g. ``argument 'unit' is "kilometers"; accepted "km/h", or left out``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentlab.agents import RunResult
from agentlab.evals.dataset import ExpectedToolCall
from agentlab.messages import AssistantMessage

__all__ = ["MadeCall", "ToolCallMatch", "made_calls", "match_tool_calls"]


@dataclass(frozen=True, slots=True)
class MadeCall:
    """A tool call a run made; `arguments` is None when the model's JSON was malformed."""

    name: str
    arguments: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ToolCallMatch:
    """Counts for precision (matched / made) and recall (matched / expected), and
    `problems`: why each unmatched expected call was not met, then the made calls
    that matched nothing."""

    expected: int
    made: int
    matched: int
    problems: tuple[str, ...] = ()

    @property
    def explanation(self) -> str:
        """How many expected calls matched, then the problems, as sentences."""
        head = f"{self.matched} of {self.expected} expected tool calls matched"
        return ". ".join((head, *self.problems))


def made_calls(result: RunResult) -> list[MadeCall]:
    """Every tool call the model asked for during the run, in order."""
    calls: list[MadeCall] = []
    for message in result.messages:
        if not isinstance(message, AssistantMessage):
            continue
        for call in message.tool_calls:
            try:
                arguments = json.loads(call.arguments or "{}")  # as the tools read them
            except ValueError:
                arguments = None
            calls.append(MadeCall(call.name, arguments if isinstance(arguments, dict) else None))
    return calls


def match_tool_calls(
    expected: Sequence[ExpectedToolCall], made: Sequence[MadeCall]
) -> ToolCallMatch:
    """Pair expected calls with made calls one to one, as many pairs as possible.

    A made call satisfies an expected one when it matches it or one of its
    alternatives; a repeated call counts once, so repeats lower precision.
    """
    rejections = [[exp.rejections(call.name, call.arguments) for call in made] for exp in expected]
    owner: dict[int, int] = {}  # made index -> expected index

    def assign(i: int, visited: set[int]) -> bool:  # augmenting path (Kuhn's algorithm)
        for j, rejected in enumerate(rejections[i]):
            if rejected or j in visited:
                continue
            visited.add(j)
            if j not in owner or assign(owner[j], visited):
                owner[j] = i
                return True
        return False

    matched = sum(assign(i, set()) for i in range(len(expected)))
    problems: list[str] = []
    explained: set[int] = set()
    for i, exp in enumerate(expected):
        if i not in owner.values():
            tried = [j for j, call in enumerate(made) if call.name in exp.names][:_SHOWN]
            problems.append(_unmet(i, exp, tried, rejections[i], owner))
            explained.update(tried)
    problems.extend(
        _unexpected(j, call, expected, [row[j] for row in rejections])
        for j, call in enumerate(made)
        if j not in owner and j not in explained
    )
    return ToolCallMatch(len(expected), len(made), matched, tuple(problems))


_SHOWN = 3  # made calls explained per unmet expectation


def _unmet(
    i: int,
    expected: ExpectedToolCall,
    tried: list[int],
    rejections: list[list[str]],
    owner: dict[int, int],
) -> str:
    """Why expected call `i` has no made call, from the `tried` calls to its tools."""
    label = f"expected call {i + 1}, {' or '.join(expected.names)}"
    if not tried:
        return f"{label}: no such call was made"
    reasons = (
        f"call {j + 1} differs: {'; '.join(rejections[j])}"
        if rejections[j]
        else f"call {j + 1} matches but counts for expected call {owner[j] + 1}"
        for j in tried
    )
    return f"{label}: {' / '.join(reasons)}"


def _unexpected(
    j: int, call: MadeCall, expected: Sequence[ExpectedToolCall], rejections: list[list[str]]
) -> str:
    """Why made call `j`, paired with no expectation, counts for nothing."""
    if any(not rejected for rejected in rejections):
        return f"call {j + 1}, {call.name}, repeats a call already counted"
    why = next(
        (r for exp, r in zip(expected, rejections, strict=True) if call.name in exp.names), []
    )
    return f"call {j + 1}, {call.name}, matches no expected call" + (
        f": {'; '.join(why)}" if why else ""
    )
