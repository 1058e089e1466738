"""The tools that let a model use long-term memory: ``recall`` and ``remember``.

They act on the memory of the run that calls them (see
:func:`~agentlab.current_run`); an agent gets them from its
:class:`~agentlab.memory.agent_memory.Memory` settings.
"""

from __future__ import annotations

from typing import Literal

from agentlab._context import current_run
from agentlab.errors import UserError
from agentlab.memory.agent_memory import Memory
from agentlab.memory.session import RunMemory
from agentlab.tools import Tool

__all__ = ["memory_tools"]

MemoryKind = Literal["preference", "knowledge", "history", "note"]


def recall(query: str, kind: MemoryKind | None = None) -> str:
    """Search your long-term memory of earlier conversations: the user's preferences,
    facts you were told, summaries of past sessions. Use it when the answer may
    depend on something said before this conversation.

    Args:
        query: what to look for, in a few words
        kind: only memories of this kind (preference, knowledge, history or note)
    """
    hits = _run_memory().recall(query, kind)
    if not hits:
        return "No memories found for that query."
    return "\n".join(f"[{h.id}] ({h.kind}, score {h.score:.2f}) {h.text}" for h in hits)


def remember(text: str, kind: Literal["preference", "knowledge", "note"] = "note") -> str:
    """Save something to your long-term memory for later conversations: a preference
    the user stated, a fact worth keeping. Write it as one self-contained sentence.

    Args:
        text: the memory, as one self-contained sentence
        kind: preference (what the user likes or wants), knowledge (a fact) or note
    """
    memory_id = _run_memory().remember(text, kind)
    return f"Saved to long-term memory as {memory_id}."


def _run_memory() -> RunMemory:
    memory = current_run().memory
    if memory is None:  # only agents with memory get these tools
        raise UserError("this run has no memory; give the agent Memory(long_term=...)")
    return memory


def memory_tools(memory: Memory) -> list[Tool]:
    """The memory tools `memory` asks for (none without long-term memory)."""
    tools = []
    if memory.recall_tool:
        tools.append(Tool(recall))
    if memory.long_term is not None and memory.remember_tool:
        tools.append(Tool(remember))
    return tools
