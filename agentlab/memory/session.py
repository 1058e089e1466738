"""A run's use of its agent's memory: the context window of each step, recall,
remembering, the tool-result cache, and the trace events for all of them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agentlab.errors import MemoryStoreError
from agentlab.events import ContextWindowEvent, MemoryOpEvent, MemoryRetrievalEvent
from agentlab.memory.working import (
    ContextOverflowError,
    ContextWindow,
    RecalledMemory,
    block_message,
    leading_system,
)
from agentlab.messages import Message, SystemMessage, UserMessage
from agentlab.models import Model, ModelSettings
from agentlab.redact import redact_text
from agentlab.tokens import count_message, message_text
from agentlab.usage import Usage

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agentlab._context import RunContext
    from agentlab.memory.agent_memory import Memory
    from agentlab.memory.long_term import MemoryHit
    from agentlab.memory.short_term import KeyAccess, SessionMemory, ShortTermStore
    from agentlab.tools import Tool

__all__ = ["RunMemory"]

log = logging.getLogger("agentlab.memory")

_SESSION_SUMMARY_TOKENS = 200  # the longest session summary asked of the model
_SUMMARY_PROMPT = (
    "You write the memory of an assistant. Summarise the conversation below for the "
    "assistant's own later use: keep facts, ids, numbers, names, decisions and open "
    "questions; drop pleasantries. At most {words} words. Reply with the summary only."
)


class RunMemory:
    """Memory state of one run; the run loop calls it, tools reach it through the run."""

    def __init__(
        self, run: RunContext, memory: Memory | None, cache_store: ShortTermStore | None
    ) -> None:
        self.run = run
        self.memory = memory
        store = memory.short_term if memory is not None else None
        agent = quote(run.agent.name, safe="")  # a '/' would split the namespace
        self.session_memory: SessionMemory | None = (
            store.session(agent, run.session, observer=self._key_accessed)
            if store is not None
            else None
        )
        cache_backend = store or cache_store
        # Cache reads and writes are short-term operations like any other: traced.
        self._cache = (
            cache_backend.session(agent, run.session, observer=self._key_accessed)
            if cache_backend
            else None
        )
        self._counts: list[int] = []
        self._summary: str | None = None
        self._covered: frozenset[int] = frozenset()
        self._query: str | None = None
        self._recalled: list[RecalledMemory] = []
        self._serial = 0

    # -- the context window ------------------------------------------------------

    async def context(self) -> list[Message]:
        """The messages to send the model at the current step (recorded in the trace).

        Raises :class:`~agentlab.memory.working.ContextOverflowError` when the
        required part does not fit the budget, and a model's error when a summary
        cannot be made.
        """
        run, memory = self.run, self.memory
        if memory is None:
            return run.messages
        started_at = time.time()
        retrieval = await self._auto_recall() if memory.auto_recall else None
        working = memory.working
        if working is None:
            block = block_message("memories", [f"[{m.id}] {m.text}" for m in self._recalled])
            if retrieval is not None:
                self._emit(retrieval(tuple(m.id for m in self._recalled)))
            if block is None:
                return run.messages
            head = leading_system(run.messages)
            return [*run.messages[:head], block, *run.messages[head:]]
        try:
            window, usage, cost = await self._summarized_window()
        except ContextOverflowError:
            if retrieval is not None:  # retrieved, but nothing could enter
                self._emit(retrieval(()))
            raise
        self._emit(
            ContextWindowEvent(
                id=f"{run.id}-{run.current_step}",
                run_id=run.id,
                step=run.current_step,
                budget=window.budget,
                tokens=window.tokens,
                counter=window.counter,
                kept=list(window.kept),
                dropped=list(window.dropped),
                summarized=list(window.summarized),
                summary=window.summary,
                pinned=list(window.pinned),
                memories=list(window.memories),
                summary_input_tokens=usage.input_tokens,
                summary_output_tokens=usage.output_tokens,
                summary_cost=cost,
                started_at=started_at,
            )
        )
        if retrieval is not None:
            self._emit(retrieval(window.memories))
        return window.messages

    async def _summarized_window(self) -> tuple[ContextWindow, Usage, float | None]:
        """The window, after summarising the turns it newly drops (when asked to)."""
        assert self.memory is not None and self.memory.working is not None
        window = await self._window()
        new = set(window.dropped) - self._covered
        if not (self.memory.working.summarize and new):
            return window, Usage(), 0.0
        dropped = [self.run.messages[i] for i in sorted(new)]
        self._summary, usage, cost = await self._summarize(dropped, self._summary)
        self._covered = self._covered | new
        return await self._window(), usage, cost

    async def _window(self) -> ContextWindow:
        run = self.run
        assert self.memory is not None and self.memory.working is not None
        counter = run.agent.token_counter
        new = run.messages[len(self._counts) :]
        if new:  # the local model's tokenizer may load the model: not on the event loop
            counts = await asyncio.to_thread(lambda: [count_message(counter, m) for m in new])
            self._counts.extend(counts)
        return self.memory.working.window(
            run.messages,
            self._counts,
            counter,
            tools=run.agent.tool_definitions,
            memories=self._recalled,
            summary=self._summary,
            summary_covers=self._covered,
        )

    async def _summarize(
        self, messages: list[Message], previous: str | None
    ) -> tuple[str, Usage, float | None]:
        """A model's summary of `messages` (extending `previous`); its usage is the run's."""
        assert self.memory is not None and self.memory.working is not None
        working = self.memory.working
        model = working.summarize if isinstance(working.summarize, Model) else self.run.agent.model
        return await self.summarize_with(model, messages, previous, working.summary_max_tokens)

    async def summarize_with(
        self, model: Model, messages: Sequence[Message], previous: str | None, max_tokens: int
    ) -> tuple[str, Usage, float | None]:
        """Ask `model` for a summary; add its usage and cost to the run's."""
        lines = [f"Summary so far: {previous}", ""] if previous else []
        lines += [f"{m.role}: {_plain(m)}" for m in messages]
        prompt: list[Message] = [
            SystemMessage(content=_SUMMARY_PROMPT.format(words=max(20, max_tokens * 3 // 4))),
            UserMessage(content="\n".join(lines)),
        ]
        response = await model.request(prompt, (), ModelSettings(max_tokens=max_tokens))
        cost = self.run.account(response.usage, response.model_name)
        return (response.message.content or "").strip(), response.usage, cost

    # -- long-term memory -----------------------------------------------------------

    async def _auto_recall(self) -> Callable[[Sequence[str]], MemoryRetrievalEvent] | None:
        """Retrieve memories for the latest user message when it changed; return a
        function making the retrieval's event from the ids that entered (or None)."""
        query = next((m.content for m in reversed(self.run.messages) if m.role == "user"), None)
        if not query or query == self._query:
            return None
        self._query = query
        assert self.memory is not None
        hits, filters, latency_ms, started_at = await asyncio.to_thread(self._search, query, None)
        floor = self.memory.min_score
        self._recalled = [
            RecalledMemory(h.id, h.text, h.score) for h in hits if floor is None or h.score >= floor
        ]
        return lambda entered: self._retrieval_event(
            "auto", query, filters, hits, list(entered), latency_ms, started_at
        )

    def recall(self, query: str, kind: str | None = None) -> list[MemoryHit]:
        """Search long-term memory for the ``recall`` tool (every hit enters the context)."""
        hits, filters, latency_ms, started_at = self._search(query, kind)
        self._emit(
            self._retrieval_event(
                "tool", query, filters, hits, [h.id for h in hits], latency_ms, started_at
            )
        )
        return hits

    def remember(self, text: str, kind: str = "note") -> str:
        """Write a memory for this run's user and session; return its id."""
        memory, run = self.memory, self.run
        assert memory is not None and memory.long_term is not None
        text = redact_text(text)  # a secret must not live on in long-term memory
        memory_id = memory.long_term.add(
            text, kind=kind, user=run.user, session=run.session, source=f"run:{run.id}"
        )
        self._emit(
            MemoryOpEvent(
                id=self._next_id("o"),
                run_id=run.id,
                step=run.current_step,
                tier="long_term",
                op="add",
                namespace=kind,
                key=memory_id,
                detail=text,
                started_at=time.time(),
            )
        )
        return memory_id

    async def summarize_session(self) -> None:
        """Write a summary of the finished run to long-term memory (kind ``history``)."""
        run = self.run
        conversation = [m for m in run.messages if m.role != "system"]
        summary, _, _ = await self.summarize_with(
            run.agent.model, conversation, None, _SESSION_SUMMARY_TOKENS
        )
        if summary:
            await asyncio.to_thread(self.remember, summary, "history")

    def _search(
        self, query: str, kind: str | None
    ) -> tuple[list[MemoryHit], dict[str, Any], float, float]:
        memory, run = self.memory, self.run
        assert memory is not None and memory.long_term is not None
        filters: dict[str, Any] = {}
        if run.user is not None:
            filters["user"] = run.user
        if kind is not None:
            filters["kind"] = kind
        started_at, t0 = time.time(), time.perf_counter()
        hits = memory.long_term.search(
            query, mode=memory.recall_mode, k=memory.recall_k, shared=True, **filters
        )
        return hits, filters, (time.perf_counter() - t0) * 1000, started_at

    def _retrieval_event(
        self,
        source: Any,
        query: str,
        filters: dict[str, Any],
        hits: list[MemoryHit],
        entered: list[str],
        latency_ms: float,
        started_at: float,
    ) -> MemoryRetrievalEvent:
        assert self.memory is not None
        return MemoryRetrievalEvent(
            id=self._next_id("r"),
            run_id=self.run.id,
            step=self.run.current_step,
            source=source,
            mode=self.memory.recall_mode,
            query=query,
            filters=filters,
            k=self.memory.recall_k,
            hits=[h.to_dict() for h in hits],
            entered=entered,
            latency_ms=latency_ms,
            started_at=started_at,
        )

    # -- short-term memory and the tool cache ------------------------------------------

    def cached(self, tool: Tool, args: BaseModel) -> dict[str, Any] | None:
        """The cached ``{"result", "latency_ms"}`` of this call, if any."""
        if self._cache is None:
            return None
        try:
            value = self._cache.get(_cache_key(tool, args))
        except MemoryStoreError as exc:
            log.warning("tool cache unavailable, calling %s: %s", tool.name, exc)
            return None
        return value if isinstance(value, dict) else None

    def cache(self, tool: Tool, args: BaseModel, result: str, latency_ms: float) -> None:
        """Keep a successful result for ``tool.cache_ttl`` seconds."""
        if self._cache is None:
            return
        try:
            self._cache.set(
                _cache_key(tool, args),
                {"result": result, "latency_ms": latency_ms},
                ttl=tool.cache_ttl,
            )
        except MemoryStoreError as exc:
            log.warning("tool cache unavailable, %s result not cached: %s", tool.name, exc)

    def _key_accessed(self, access: KeyAccess) -> None:
        self._emit(
            MemoryOpEvent(
                id=self._next_id("o"),
                run_id=self.run.id,
                step=self.run.current_step,
                tier="short_term",
                op=access.op,
                namespace=access.namespace,
                key=access.key,
                hit=access.hit,
                ttl=access.ttl,
                started_at=time.time(),
            )
        )

    # -- helpers -------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._serial += 1
        return f"{self.run.id}-{self.run.current_step}-{prefix}{self._serial:06d}"

    def _emit(self, event: Any) -> None:
        self.run.emit(event)


def _cache_key(tool: Tool, args: BaseModel) -> str:
    digest = hashlib.sha256(args.model_dump_json().encode()).hexdigest()[:32]
    return f"tool-cache/{tool.name}/{digest}"


def _plain(message: Message) -> str:
    return " ".join(message_text(message).split())
