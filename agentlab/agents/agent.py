"""The agent definition: model, tools, instructions and limits. No I/O happens
until a run starts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentlab._sync import run_sync
from agentlab.agents.records import RunResult
from agentlab.agents.run import Run, Tracer
from agentlab.errors import UserError
from agentlab.messages import Message
from agentlab.models import Model, ModelSettings, infer_model
from agentlab.tools import Tool
from agentlab.usage import PriceTable
from agentlab.workspace import resolve_workspace

if TYPE_CHECKING:
    from agentlab.memory.agent_memory import Memory
    from agentlab.memory.short_term import ShortTermStore
    from agentlab.memory.tokens import TokenCounter

__all__ = ["Agent", "TraceTarget"]

TraceTarget = bool | str | Path | Tracer | Any


def _resolve_tracer(trace: TraceTarget) -> Tracer | None:
    if trace is False or trace is None:
        return None
    if hasattr(trace, "emit"):
        return cast(Tracer, trace)
    from agentlab.tracing import TraceStore

    if isinstance(trace, TraceStore):
        return trace.writer()
    if trace is True:
        return TraceStore().writer()
    if isinstance(trace, str | Path):
        return TraceStore(trace).writer()
    raise UserError(
        f"trace={trace!r} is not understood; pass True (the default workspace), "
        "False, a workspace path, a TraceStore, or an object with emit()."
    )


@functools.cache
def _workspace_store(workspace: Path) -> ShortTermStore:
    """One embedded short-term store per workspace and process, for tool caches."""
    from agentlab.memory.short_term import EmbeddedStore

    return EmbeddedStore.in_workspace(workspace)


class Agent:
    """Base of every agent pattern; subclasses decide the opening messages.

    Args:
        model: a :class:`Model` or a string for :func:`infer_model`.
        tools: :class:`Tool` objects or typed, documented functions.
        name: the agent's name in traces.
        instructions: the system prompt.
        max_steps: model calls allowed per run before it stops with an explanation.
        max_retries: consecutive failures allowed per tool (and for the model)
            before the run stops; each failure is sent back to the model first.
        settings: model settings (temperature, max_tokens, ...).
        prices: the price table for cost; defaults to the built-in prices.
        trace: where to record runs: True (the default workspace), False, a
            workspace path, a TraceStore, or any object with ``emit(event)``.
        memory: the agent's memory tiers (:class:`~agentlab.memory.Memory`):
            working memory, short-term and long-term stores, recall. Tools marked
            ``cache_ttl`` use the short-term store (the workspace's embedded one
            when none is given).
    """

    default_instructions = "You are a helpful assistant."

    def __init__(
        self,
        model: Model | str,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        *,
        name: str = "agent",
        instructions: str | None = None,
        max_steps: int = 10,
        max_retries: int = 2,
        settings: ModelSettings | None = None,
        prices: PriceTable | None = None,
        trace: TraceTarget = True,
        memory: Memory | None = None,
    ) -> None:
        if max_steps < 1:
            raise UserError(f"max_steps must be at least 1 (got {max_steps}).")
        if max_retries < 0:
            raise UserError(f"max_retries must be 0 or more (got {max_retries}).")
        self.model = infer_model(model)
        self.memory = memory
        self.tools = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        if memory is not None:
            from agentlab.memory.tools import memory_tools

            self.tools += memory_tools(memory)
        self.tools_by_name = {t.name: t for t in self.tools}
        if len(self.tools_by_name) != len(self.tools):
            names = [t.name for t in self.tools]
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise UserError(
                f"Agent {name!r} has several tools named {dupes}; names must "
                "be unique (pass @tool(name=...) to rename one)."
            )
        self.tool_names = [t.name for t in self.tools]
        self.tool_definitions = [t.definition for t in self.tools]
        self.name = name
        self.instructions = instructions or self.default_instructions
        self.max_steps = max_steps
        self.max_retries = max_retries
        self.settings = settings
        self.prices = prices or PriceTable()
        self.trace = trace
        self._tracer: Tracer | None = None
        self._tracer_resolved = False
        self.cacheable_tools = [t.name for t in self.tools if t.cache_ttl is not None]
        self._tool_cache_store: ShortTermStore | None = None
        self._token_counter: TokenCounter | None = None

    def opening_messages(self, input: str) -> list[Message]:
        """The conversation a run starts from."""
        raise NotImplementedError

    @property
    def tracer(self) -> Tracer | None:
        """Where this agent's runs are recorded (resolved from `trace` on first use)."""
        if not self._tracer_resolved:
            self._tracer = _resolve_tracer(self.trace)
            self._tracer_resolved = True
        return self._tracer

    @property
    def tool_cache_store(self) -> ShortTermStore | None:
        """Where cacheable tools keep results: the memory's short-term store, else the
        workspace's embedded one (opened on first use); None without cacheable tools."""
        if self.memory is not None and self.memory.short_term is not None:
            return self.memory.short_term
        if not self.cacheable_tools:
            return None
        if self._tool_cache_store is None:
            self._tool_cache_store = _workspace_store(resolve_workspace())
        return self._tool_cache_store

    @property
    def token_counter(self) -> TokenCounter:
        """How working memory counts tokens for this agent's model."""
        if self._token_counter is None:
            self._token_counter = self.model.token_counter()
        return self._token_counter

    def start(
        self,
        input: str,
        *,
        session: str | None = None,
        user: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        """Start a run without taking a step (advance it with ``step``).

        `session` scopes short-term memory and the tool cache (default: this run
        only); `user` filters long-term recall and labels what is remembered.
        """
        return Run(
            self,
            input,
            self.opening_messages(input),
            self.tracer,
            metadata,
            session=session,
            user=user,
        )

    async def run(
        self,
        input: str,
        *,
        session: str | None = None,
        user: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunResult:
        """Run until a final answer, the step limit or an unrecoverable error."""
        return await self.start(input, session=session, user=user, metadata=metadata).finish()

    def run_sync(
        self,
        input: str,
        *,
        session: str | None = None,
        user: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RunResult:
        """:meth:`run` for synchronous code; also works inside a notebook cell."""
        return run_sync(self.run(input, session=session, user=user, metadata=metadata))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, model={self.model.name!r}, "
            f"tools={self.tool_names})"
        )

    def _repr_html_(self) -> str:
        from agentlab._html import agent_html

        return agent_html(self)
