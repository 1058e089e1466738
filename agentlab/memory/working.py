"""Working memory: what enters the context window at each step, within a token budget.

The policy, in order of priority:

1. **Always kept**: the system prompt, pinned notes, the tool definitions the model
   is sent, the latest user message and the latest turn (the model's last reply
   with its tool results). If these alone exceed the budget the step cannot be
   taken: :class:`ContextOverflowError` says what takes the room.
2. **Relevant long-term memories**, best score first, each if it still fits.
3. **A summary of the dropped turns** (when ``summarize`` is on). The run loop asks
   a model to summarise turns as they are dropped and keeps the summary up to date;
   a turn dropped to make room for the summary is summarised at the next step.
4. **Earlier turns**, newest first, while they fit; a turn (a reply and its tool
   results) is kept or dropped whole, so no tool result loses its call.

Every step's window is recorded in the trace (``context_windows``): which messages
were sent, dropped or summarised, the summary, pinned notes and memories.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentlab.errors import RunError, UserError
from agentlab.messages import Message, SystemMessage, ToolDefinition
from agentlab.tokens import MESSAGE_OVERHEAD, TokenCounter, count_message

if TYPE_CHECKING:
    from agentlab.models import Model

__all__ = [
    "HEADERS",
    "ContextOverflowError",
    "ContextWindow",
    "RecalledMemory",
    "WorkingMemory",
    "block_message",
    "leading_system",
]

HEADERS = {
    "pinned": "Pinned notes (always true for this conversation):",
    "memories": "Relevant memories from earlier conversations (may be out of date):",
    "summary": "Summary of the earlier part of this conversation:",
}
"""The first line of each system message working memory adds."""


class ContextOverflowError(RunError):
    """What must be in the context window does not fit the working-memory budget."""

    def __init__(self, message: str, *, needed: int, budget: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.budget = budget


@dataclass(frozen=True, slots=True)
class RecalledMemory:
    """A long-term memory offered to the window (`id`, `text`, its retrieval `score`)."""

    id: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class ContextWindow:
    """What the model is sent at one step and what was left out.

    Indices refer to the run's conversation (``run.messages``).
    """

    messages: list[Message]
    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    summarized: tuple[int, ...]
    summary: str | None
    pinned: tuple[str, ...]
    memories: tuple[str, ...]  # ids of the recalled memories that entered
    tokens: int
    budget: int
    counter: str


@dataclass
class WorkingMemory:
    """The context-window policy of an agent.

    Args:
        max_tokens: the budget for everything the model is sent at a step
            (messages and tool definitions); leave room for its reply below the
            model's context size.
        pinned: notes that stay in the window at every step.
        summarize: summarise dropped turns with a model instead of only dropping
            them: True uses the agent's model, or pass a model (or model string).
        summary_max_tokens: the longest summary asked of the model.
    """

    max_tokens: int
    pinned: list[str] = field(default_factory=list)
    summarize: bool | Model | str = False
    summary_max_tokens: int = 200

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise UserError(
                f"WorkingMemory(max_tokens=...) must be at least 1, not {self.max_tokens}"
            )
        if self.summary_max_tokens < 1:
            raise UserError("WorkingMemory(summary_max_tokens=...) must be at least 1")
        self.pinned = [str(p) for p in self.pinned]
        if isinstance(self.summarize, str):  # resolve once, not at every summary
            from agentlab.models import infer_model

            self.summarize = infer_model(self.summarize)

    def pin(self, note: str) -> None:
        """Keep `note` in the window at every step from now on."""
        self.pinned.append(str(note))

    def window(
        self,
        conversation: Sequence[Message],
        counts: Sequence[int],
        counter: TokenCounter,
        *,
        tools: Sequence[ToolDefinition] = (),
        memories: Sequence[RecalledMemory] = (),
        summary: str | None = None,
        summary_covers: frozenset[int] = frozenset(),
    ) -> ContextWindow:
        """Choose the messages for one step.

        `counts` holds the tokens of each conversation message (with
        :func:`~agentlab.tokens.count_message`); `summary` summarises the
        messages in `summary_covers`, and is used if some of them are dropped.
        """
        head = leading_system(conversation)
        units = _units(conversation, head)
        last_user = next((u for u in reversed(units) if conversation[u[0]].role == "user"), None)
        required_units = [u for u in (last_user, units[-1] if units else None) if u is not None]
        required = set(range(head)).union(*map(set, required_units))
        pinned_block = block_message("pinned", self.pinned)
        tool_tokens = _tool_tokens(tools, counter)
        used = (
            sum(counts[i] for i in required)
            + (count_message(counter, pinned_block) if pinned_block else 0)
            + tool_tokens
        )
        if used > self.max_tokens:
            raise self._overflow(
                conversation, counts, head, required_units, pinned_block, tool_tokens, used, counter
            )

        entered: list[RecalledMemory] = []
        memory_tokens = 0
        for memory in sorted(memories, key=lambda m: -m.score):
            more = [*entered, memory]
            block = block_message("memories", [f"[{m.id}] {m.text}" for m in more])
            cost = count_message(counter, block) if block else 0
            if used + cost <= self.max_tokens:  # else skip it: a shorter one may fit
                entered, memory_tokens = more, cost
        used += memory_tokens

        kept, filled = _fill(units, set(required), counts, used, self.max_tokens)
        summary_message: SystemMessage | None = None
        if summary and summary_covers.difference(kept):
            # The summary stands in for dropped turns: it goes before older turns.
            message = SystemMessage(content=f"{HEADERS['summary']}\n{summary}")
            cost = count_message(counter, message)
            if used + cost <= self.max_tokens:
                summary_message = message
                kept, filled = _fill(units, set(required), counts, used + cost, self.max_tokens)
        used = filled
        left_out = [i for i in range(len(conversation)) if i not in kept]
        summarized = tuple(i for i in left_out if summary_message and i in summary_covers)
        memory_block = block_message("memories", [f"[{m.id}] {m.text}" for m in entered])
        extra = [m for m in (pinned_block, memory_block, summary_message) if m is not None]
        ordered = sorted(kept)
        messages = [conversation[i] for i in ordered[:head]] + extra
        messages += [conversation[i] for i in ordered[head:]]
        return ContextWindow(
            messages=messages,
            kept=tuple(ordered),
            dropped=tuple(i for i in left_out if i not in summarized),
            summarized=summarized,
            summary=summary if summary_message else None,
            pinned=tuple(self.pinned),
            memories=tuple(m.id for m in entered),
            tokens=used,
            budget=self.max_tokens,
            counter=counter.name,
        )

    def _overflow(
        self,
        conversation: Sequence[Message],
        counts: Sequence[int],
        head: int,
        required_units: list[tuple[int, ...]],
        pinned_block: Message | None,
        tool_tokens: int,
        used: int,
        counter: TokenCounter,
    ) -> ContextOverflowError:
        parts = [f"system prompt {sum(counts[:head])}"]
        if pinned_block is not None:
            parts.append(f"pinned notes {count_message(counter, pinned_block)}")
        if tool_tokens:
            parts.append(f"tool definitions {tool_tokens}")
        for unit in dict.fromkeys(required_units):
            role = conversation[unit[0]].role
            label = "latest user message" if role == "user" else "latest turn and tool results"
            parts.append(f"{label} {sum(counts[i] for i in unit)}")
        return ContextOverflowError(
            f"what this step must send the model is {used} tokens ({', '.join(parts)}; counted "
            f"with the {counter.name}), over the working-memory budget of {self.max_tokens} "
            "tokens, even with every earlier turn trimmed",
            needed=used,
            budget=self.max_tokens,
        )


def _fill(
    units: list[tuple[int, ...]], kept: set[int], counts: Sequence[int], used: int, budget: int
) -> tuple[set[int], int]:
    """Add whole turns, newest first, while they fit; return the kept indices and tokens."""
    for unit in reversed(units):
        if kept.issuperset(unit):
            continue
        cost = sum(counts[i] for i in unit)
        if used + cost > budget:
            break
        kept.update(unit)
        used += cost
    return kept, used


def leading_system(conversation: Sequence[Message]) -> int:
    """How many system messages open the conversation."""
    head = 0
    while head < len(conversation) and conversation[head].role == "system":
        head += 1
    return head


def _units(conversation: Sequence[Message], start: int) -> list[tuple[int, ...]]:
    """Turns after the system prompt: a user message, or a reply with its tool results."""
    units: list[list[int]] = []
    for i in range(start, len(conversation)):
        if conversation[i].role == "tool" and units:
            units[-1].append(i)
        else:
            units.append([i])
    return [tuple(u) for u in units]


def block_message(kind: str, lines: Sequence[str]) -> SystemMessage | None:
    """A system message of `kind` (a key of :data:`HEADERS`) listing `lines`; None if empty."""
    if not lines:
        return None
    return SystemMessage(content="\n".join([HEADERS[kind], *(f"- {line}" for line in lines)]))


def _tool_tokens(tools: Sequence[ToolDefinition], counter: TokenCounter) -> int:
    if not tools:
        return 0
    text = json.dumps([t.model_dump() for t in tools], separators=(",", ":"))
    return counter.count(text) + MESSAGE_OVERHEAD
