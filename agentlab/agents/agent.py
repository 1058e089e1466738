"""The agent definition: model, tools, instructions, limits and the production
layers around each model endpoint and each tool. No I/O happens until a run starts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentlab._context import EventSink
from agentlab._sync import run_sync
from agentlab.agents.alerts import LoopAlerts
from agentlab.agents.records import RunResult
from agentlab.agents.recovery import read_run
from agentlab.agents.run import Run
from agentlab.agents.turn import Turn
from agentlab.budgets import Budget
from agentlab.errors import UserError
from agentlab.messages import Message
from agentlab.models import FallbackModel, Model, ModelSettings, infer_model
from agentlab.models.breaker import CircuitBreakerModel
from agentlab.models.metered import MeteredModel
from agentlab.models.retry import RetryModel, RetryPolicy
from agentlab.resilience import BreakerConfig, BreakerStore
from agentlab.tools import Tool
from agentlab.tools.calls import (
    DEFAULT_MAX_RESULT_CHARS,
    ToolHandler,
    ToolLayer,
    approval,
    build_chain,
    cap_output,
    count_tool_call,
    record_start,
    tool_breaker,
    validate,
)
from agentlab.tools.fallback import fallback_layer
from agentlab.tracing import TraceStore
from agentlab.usage import PriceTable
from agentlab.workspace import resolve_workspace

if TYPE_CHECKING:
    from agentlab.memory.agent_memory import Memory
    from agentlab.memory.short_term import ShortTermStore
    from agentlab.tokens import TokenCounter

__all__ = ["Agent", "TraceTarget", "Tracer"]

Tracer = EventSink
"""Anything that records events: ``emit(event)`` (the trace writer, a list in a test)."""

TraceTarget = bool | str | Path | TraceStore | EventSink | None
"""Where runs are recorded: True (the default workspace), False/None, a workspace
path, a :class:`~agentlab.tracing.TraceStore`, or any object with ``emit(event)``."""


def _resolve_tracer(trace: Any) -> EventSink | None:
    if trace is False or trace is None:
        return None
    if hasattr(trace, "emit"):
        return cast(EventSink, trace)
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


def _shared_breaker_store(memory: Memory | None) -> BreakerStore | None:
    """Breaker state in Redis when the agent's short-term memory is there (shared by
    every process), else in this process (None)."""
    store = memory.short_term if memory is not None else None
    make = getattr(store, "breaker_store", None)
    return None if make is None else cast(BreakerStore, make())


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
        max_steps: steps allowed per run (failed ones count) before it stops with
            status ``max_steps``.
        max_retries: consecutive failed calls allowed per tool (and unusable model
            replies) before the run stops; each failure is sent back to the model first.
        settings: model settings (temperature, max_tokens, ...).
        prices: the price table for cost; defaults to the built-in prices.
        trace: where to record runs (see :data:`TraceTarget`).
        memory: the agent's memory tiers (:class:`~agentlab.memory.Memory`).
            Tools marked ``cache_ttl`` use its short-term store (the workspace's
            embedded one when none is given).
        budget: per-run limits (:class:`~agentlab.budgets.Budget`); a run can
            override them (``agent.run(q, budget=Budget(...))``).
        retry: how failed model requests are retried (:class:`RetryPolicy`);
            ``None`` turns retries off.
        fallback: models that take a request when the model fails (after its
            retries); each gets the same retry, metering and breaker layers.
        breaker: the circuit breaker of each model endpoint and each tool (``None``:
            none). State is shared by every agent of the process using the endpoint
            or the tool.
        breaker_store: where breaker state lives; default: Redis when the memory's
            short-term store is a :class:`~agentlab.memory.RedisStore` (shared by
            every process), else this process.
        max_tool_result_chars: the most the model is shown of one tool result
            (the trace keeps the whole result).
        alerts: when to raise loop alerts (and alerts for steps or cost far above
            the agent's own history) and whether to stop the run on one
            (:class:`~agentlab.agents.alerts.LoopAlerts`; ``None``: off).
        escalate: when the model or a tool fails for good (retries and fallbacks
            spent), pause the run with a question for a person instead of failing it
            (resume with ``answer=``, ``approve=True`` to retry, or ``approve=False``).
        observers: more event sinks that see every event of every run (callbacks,
            exporters), besides the trace.
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
        budget: Budget | None = None,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        fallback: Sequence[Model | str] = (),
        breaker: BreakerConfig | None = BreakerConfig(),  # noqa: B008 - frozen
        breaker_store: BreakerStore | None = None,
        max_tool_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
        alerts: LoopAlerts | None = LoopAlerts(),  # noqa: B008 - frozen
        escalate: bool = False,
        observers: Sequence[EventSink] = (),
    ) -> None:
        if max_steps < 1:
            raise UserError(f"max_steps must be at least 1 (got {max_steps}).")
        if max_retries < 0:
            raise UserError(f"max_retries must be 0 or more (got {max_retries}).")
        if max_tool_result_chars < 100:
            raise UserError(
                f"max_tool_result_chars must be at least 100 (got {max_tool_result_chars})."
            )
        primary = infer_model(model)
        self.model: Model = FallbackModel([primary, *fallback]) if fallback else primary
        self.memory = memory
        self.retry = retry
        self.breaker = breaker
        self.breaker_store = breaker_store or _shared_breaker_store(memory)
        self.stack: Model = self.model.map_leaves(self._endpoint_stack)
        """The model with its production layers: what the run loop calls."""
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
        self._every_tool = Turn(self.tool_definitions)
        self.name = name
        self.instructions = instructions or self.default_instructions
        self.max_steps = max_steps
        self.max_retries = max_retries
        self.settings = settings
        self.prices = prices or PriceTable()
        self.budget = Budget(steps=max_steps).merged(budget)
        self.check_budget(self.budget)
        self.max_tool_result_chars = max_tool_result_chars
        self.trace = trace
        self.alerts = alerts
        self.escalate = escalate
        self.observers = tuple(observers)
        self._tracer: EventSink | None = None
        self._tracer_resolved = False
        reachable = [*self.tools, *(f.tool or t for t in self.tools for f in t.fallback)]
        self.cacheable_tools = list(
            dict.fromkeys(t.name for t in reachable if t.cache_ttl is not None)
        )
        self.tool_handlers: dict[str, ToolHandler] = {
            t.name: build_chain(self._tool_layers(t)) for t in self.tools
        }
        """Each tool's call chain: validation, budget, cache, output cap, the call."""
        self._tool_cache_store: ShortTermStore | None = None
        self._token_counter: TokenCounter | None = None

    # -- composition ---------------------------------------------------------------

    def _endpoint_stack(self, endpoint: Model) -> Model:
        """The layers around one model endpoint, outermost first: retry; the budget
        check and attempt record of every request; the endpoint's circuit breaker."""
        guarded: Model = endpoint
        if self.breaker is not None:
            guarded = CircuitBreakerModel(endpoint, self.breaker, self.breaker_store)
        metered: Model = MeteredModel(guarded)
        return metered if self.retry is None else RetryModel(metered, self.retry)

    def _tool_layers(self, tool: Tool, *, fallbacks: bool = True) -> list[ToolLayer]:
        """`tool`'s call chain, outermost first. A tool with fallbacks tries them after
        validation, each through its own chain (built here, without fallbacks of its
        own); see :mod:`agentlab.tools.fallback` for why there."""
        layers: list[ToolLayer] = [validate]
        if fallbacks and tool.fallback:
            chains = [
                build_chain(self._tool_layers(f.tool or tool, fallbacks=False))
                for f in tool.fallback
            ]
            layers.append(fallback_layer(tool, chains))
        layers.append(cap_output(self.max_tool_result_chars))
        layers.append(count_tool_call)
        if tool.requires_approval:
            layers.append(approval)
        if tool.cache_ttl is not None:
            from agentlab.memory.tool_cache import cache_layer

            layers.append(cache_layer)
        if self.breaker is not None:
            layers.append(tool_breaker(tool, self.breaker, self.breaker_store))
        if tool.side_effects:
            layers.append(record_start)
        return layers

    def check_budget(self, budget: Budget) -> None:
        """Raise :class:`UserError` when `budget` cannot be kept with this agent's models
        (a cost limit with a model that has no price)."""
        if budget.cost is None:
            return
        unpriced = [m.name for m in self.model.leaves if self.prices.price(m.name) is None]
        if unpriced:
            raise UserError(
                f"Budget(cost={budget.cost:g}) cannot be kept: {', '.join(unpriced)} has no "
                "price. Add it to the agent's PriceTable (Price(0, 0) for a free model)."
            )

    # -- resources -----------------------------------------------------------------

    def opening_messages(self, input: str) -> list[Message]:
        """The conversation a run starts from."""
        raise NotImplementedError

    def structure_html(self, run: Run) -> str:
        """HTML of what this pattern adds to a run's view (the plan, the state path);
        empty for ReAct. Shown by the run's notebook view."""
        return ""

    def turn(self, run: Run) -> Turn:
        """What `run`'s next step offers the model (see :mod:`agentlab.agents.turn`).
        The default: every tool, the model's choice, no instruction. Patterns that
        constrain the model override it, deciding from ``run.steps`` alone; raise
        :class:`~agentlab.agents.turn.StopRun` to end the run instead."""
        return self._every_tool

    @property
    def tracer(self) -> EventSink | None:
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
        """How working memory and budgets count tokens for this agent's model."""
        if self._token_counter is None:
            self._token_counter = self.model.token_counter()
        return self._token_counter

    # -- running -------------------------------------------------------------------

    def start(
        self,
        input: str,
        *,
        session: str | None = None,
        user: str | None = None,
        metadata: dict[str, Any] | None = None,
        budget: Budget | None = None,
        messages: Sequence[Message] | None = None,
    ) -> Run:
        """Start a run without taking a step (advance it with ``step``).

        `session` scopes short-term memory and the tool cache (default: this run
        only); `user` filters long-term recall and labels what is remembered;
        `budget` overrides the agent's limits for this run; `messages` is the
        conversation to start from (default: the agent's opening messages for
        `input`), as :meth:`Run.branch` uses it.
        """
        limits = self.budget.merged(budget)
        if budget is not None:
            self.check_budget(limits)
        return Run(
            self,
            input,
            list(messages) if messages is not None else self.opening_messages(input),
            self.run_observers(),
            metadata,
            session=session,
            user=user,
            budget=limits,
        )

    def run_observers(self) -> tuple[EventSink, ...]:
        """Where a run's events go: the trace (if any), then the other observers."""
        tracer = self.tracer
        return (tracer, *self.observers) if tracer is not None else self.observers

    async def resume(
        self,
        run_id: str,
        *,
        approve: bool | None = None,
        note: str | None = None,
        answer: str | None = None,
        store: TraceStore | None = None,
    ) -> RunResult:
        """Carry on a run of this agent that stopped before it finished, in this or
        any other process (after a restart too), from its trace; then finish it.

        A run that paused for a person needs their decision (`approve`, `note`,
        `answer`: see :meth:`Run.resume`). A run whose process died (status
        ``interrupted``) needs none: it goes on from its last recorded step, and
        no side-effecting call that completed is made again (see :class:`Tool`'s
        ``side_effects``).
        """
        if store is None:
            store = TraceStore(getattr(self.tracer, "workspace", None))
        record = read_run(self, run_id, store)
        status = record.row["status"]
        if status == "paused" and record.row.get("pending"):
            return await Run.restore(self, record).resume(approve=approve, note=note, answer=answer)
        if status != "interrupted":
            alive = " (its process is still running it)" if status == "running" else ""
            raise UserError(
                f"Run {run_id} is {status}{alive}, not paused or interrupted: nothing to resume."
            )
        if approve is not None or answer is not None:
            raise UserError(
                f"Run {run_id} was interrupted (its process stopped), not paused: nobody was "
                "asked anything, so resume it without approve= or answer=."
            )
        run = Run.restore(self, record)
        return await run.recover(record.pending_calls, answer=record.final_answer)

    def resume_sync(
        self,
        run_id: str,
        *,
        approve: bool | None = None,
        note: str | None = None,
        answer: str | None = None,
        store: TraceStore | None = None,
    ) -> RunResult:
        """:meth:`resume` for synchronous code; also works inside a notebook cell."""
        return run_sync(self.resume(run_id, approve=approve, note=note, answer=answer, store=store))

    async def run(
        self,
        input: str,
        *,
        session: str | None = None,
        user: str | None = None,
        metadata: dict[str, Any] | None = None,
        budget: Budget | None = None,
    ) -> RunResult:
        """Run until a final answer, a limit or an unrecoverable error."""
        run = self.start(input, session=session, user=user, metadata=metadata, budget=budget)
        return await run.finish()

    def run_sync(
        self,
        input: str,
        *,
        session: str | None = None,
        user: str | None = None,
        metadata: dict[str, Any] | None = None,
        budget: Budget | None = None,
    ) -> RunResult:
        """:meth:`run` for synchronous code; also works inside a notebook cell."""
        return run_sync(
            self.run(input, session=session, user=user, metadata=metadata, budget=budget)
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, model={self.model.name!r}, "
            f"tools={self.tool_names})"
        )

    def _repr_html_(self) -> str:
        from agentlab.agents.html import agent_html

        return agent_html(self)
