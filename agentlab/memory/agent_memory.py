"""The memory an agent is given: which tiers, and how it recalls and remembers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agentlab.errors import UserError
from agentlab.memory.working import WorkingMemory

if TYPE_CHECKING:
    from agentlab.memory.long_term import LongTermMemory
    from agentlab.memory.short_term import ShortTermStore

__all__ = ["Memory", "RecallMode"]

RecallMode = Literal["auto", "tool", "both", "off"]


@dataclass
class Memory:
    """The memory tiers of an agent (``Agent(..., memory=Memory(...))``).

    Args:
        working: the context-window policy; None sends the whole conversation.
        short_term: session state and the tool-result cache, namespaced by agent
            and session (an :class:`~agentlab.memory.EmbeddedStore` or
            :class:`~agentlab.memory.RedisStore`); tools reach it through
            ``current_run().short_term``.
        long_term: the agent's :class:`~agentlab.memory.LongTermMemory`.
        recall: how long-term memories reach the model: ``"auto"`` retrieves the
            best `recall_k` for the latest user message into working memory,
            among the run's user's memories and those of no user (shared knowledge);
            ``"tool"`` gives the model a ``recall`` tool, ``"both"``, or ``"off"``.
        recall_k: memories retrieved per search.
        recall_mode: ``"semantic"``, ``"fulltext"`` or ``"hybrid"`` search.
        min_score: automatic recall leaves out hits scoring below this.
        remember_tool: give the model a ``remember`` tool that writes to long-term memory.
        summarize_sessions: when a run completes, write a summary of it to
            long-term memory (kind ``history``), made by the agent's model.
    """

    working: WorkingMemory | None = None
    short_term: ShortTermStore | None = None
    long_term: LongTermMemory | None = None
    recall: RecallMode = "auto"
    recall_k: int = 3
    recall_mode: Literal["semantic", "fulltext", "hybrid"] = "hybrid"
    min_score: float | None = None
    remember_tool: bool = True
    summarize_sessions: bool = False

    def __post_init__(self) -> None:
        if self.recall not in ("auto", "tool", "both", "off"):
            raise UserError(f"Memory(recall={self.recall!r}): use 'auto', 'tool', 'both' or 'off'")
        if self.recall_k < 1:
            raise UserError(f"Memory(recall_k=...) must be at least 1, not {self.recall_k}")
        if self.summarize_sessions and self.long_term is None:
            raise UserError(
                "Memory(summarize_sessions=True) needs long_term=LongTermMemory(...) to "
                "write the summaries to"
            )

    @property
    def auto_recall(self) -> bool:
        """Whether each step retrieves long-term memories into working memory."""
        return self.long_term is not None and self.recall in ("auto", "both")

    @property
    def recall_tool(self) -> bool:
        """Whether the model gets a ``recall`` tool."""
        return self.long_term is not None and self.recall in ("tool", "both")
