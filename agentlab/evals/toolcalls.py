"""Matching the tool calls a run made against the ones a case expects."""

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
    """Counts for precision (matched / made) and recall (matched / expected)."""

    expected: int
    made: int
    matched: int


def made_calls(result: RunResult) -> list[MadeCall]:
    """Every tool call the model asked for during the run, in order."""
    calls: list[MadeCall] = []
    for message in result.messages:
        if not isinstance(message, AssistantMessage):
            continue
        for call in message.tool_calls:
            try:
                arguments = json.loads(call.arguments)
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
    accepts = [
        [j for j, call in enumerate(made) if exp.accepts(call.name, call.arguments)]
        for exp in expected
    ]
    owner: dict[int, int] = {}  # made index -> expected index

    def assign(i: int, visited: set[int]) -> bool:  # augmenting path (Kuhn's algorithm)
        for j in accepts[i]:
            if j in visited:
                continue
            visited.add(j)
            if j not in owner or assign(owner[j], visited):
                owner[j] = i
                return True
        return False

    matched = sum(assign(i, set()) for i in range(len(expected)))
    return ToolCallMatch(expected=len(expected), made=len(made), matched=matched)
