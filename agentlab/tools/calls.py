"""A tool call as a chain of layers: each layer takes the call and the rest of the
chain, and returns the outcome the model and the trace get.

    validate -> cap output -> budget -> (approval) -> (cache) -> (breaker)
        -> (record start) -> invoke (timeout, serialise)

The innermost step, :func:`invoke`, calls the function and turns its result into
text inside the same error handling, so a result that cannot be serialised is a
tool error the model sees, never an exception out of the run. Layers that need
the run (its budget, its memory) read it from the invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from agentlab._context import active_run
from agentlab.errors import ApprovalRequired, OutcomeUnknown, ToolRetry
from agentlab.events import CacheOutcome, ToolCallStarted, ToolCallStatus, breaker_event
from agentlab.messages import ToolCall
from agentlab.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerStore,
    BreakerTransition,
    CircuitBreaker,
    breaker_registry,
)
from agentlab.tools.tool import Tool, format_validation_error, serialize_result

__all__ = [
    "DEFAULT_MAX_RESULT_CHARS",
    "ToolHandler",
    "ToolInvocation",
    "ToolLayer",
    "ToolOutcome",
    "approval",
    "build_chain",
    "cap_output",
    "capped",
    "count_tool_call",
    "invoke",
    "record_start",
    "tool_breaker",
    "validate",
]

DEFAULT_MAX_RESULT_CHARS = 20_000
"""What the model is shown of one tool result, at most (the trace keeps it whole)."""


@dataclass(slots=True)
class ToolInvocation:
    """One call of `tool` being made. `key` identifies it across restarts (the
    idempotency key a side-effecting tool can deduplicate on); `run` is the run
    making it (None outside a run)."""

    tool: Tool
    call: ToolCall
    step: int
    key: str
    run: Any = None
    args: BaseModel | None = None


@dataclass(slots=True)
class ToolOutcome:
    """What a call produced: `content` is what the model sees; `result` the whole
    result when `content` was cut; the cache fields are set by the cache layer;
    `served_by` (the tool that answered) and `fallback` (each failed try: tool,
    status, error) by the fallback layer of a tool that has alternatives."""

    status: ToolCallStatus
    content: str
    result: str | None = None
    cache: CacheOutcome | None = None
    saved_cost: float | None = None
    saved_latency_ms: float | None = None
    served_by: str | None = None
    fallback: list[dict[str, Any]] | None = None
    fault: bool = False
    """The tool or the service behind it failed (it raised or timed out): what its
    circuit breaker counts. A correction for the model (:class:`ToolRetry`), a bug in
    the tool's result or a refused duplicate call is an error, but no fault."""


ToolHandler = Callable[[ToolInvocation], Awaitable[ToolOutcome]]
ToolLayer = Callable[[ToolInvocation, ToolHandler], Awaitable[ToolOutcome]]


def build_chain(layers: Sequence[ToolLayer], innermost: ToolHandler | None = None) -> ToolHandler:
    """One handler running `layers` outermost first, then `innermost` (:func:`invoke`)."""
    handler: ToolHandler = innermost or invoke
    for layer in reversed(layers):
        handler = _bind(layer, handler)
    return handler


def _bind(layer: ToolLayer, rest: ToolHandler) -> ToolHandler:
    async def handler(invocation: ToolInvocation) -> ToolOutcome:
        return await layer(invocation, rest)

    return handler


# -- layers -----------------------------------------------------------------------


async def validate(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
    """Parse and check the model's arguments; a mistake goes back to the model."""
    tool = invocation.tool
    try:
        invocation.args = tool.args_model.model_validate_json(invocation.call.arguments or "{}")
    except ValidationError as exc:
        return ToolOutcome("invalid_arguments", format_validation_error(tool.name, exc))
    return await rest(invocation)


async def count_tool_call(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
    """Count the call against the run's budget (tool calls, wall time) before it runs;
    over budget, :class:`~agentlab.errors.BudgetExceededError` ends the run."""
    run = invocation.run
    if run is not None and run.budget is not None:
        run.budget.before_tool_call(invocation.tool.name)
    return await rest(invocation)


async def approval(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
    """Pause the run before a call that needs approval; run it once approved, and
    tell the model when a person declined it."""
    run = invocation.run
    decision = run.approvals.get(invocation.key) if run is not None else None
    if decision is None:
        raise ApprovalRequired(invocation.tool.name, invocation.call.arguments, invocation.key)
    if not decision.get("approve"):
        note = f" Their note: {decision['note']}" if decision.get("note") else ""
        return ToolOutcome(
            "denied",
            f"A person declined this call to {invocation.tool.name!r}, so it was not made."
            f"{note} Do not try it again; tell the user, or do something else.",
        )
    return await rest(invocation)


async def record_start(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
    """Record that a call with side effects starts, with its idempotency key, before
    it runs (a durable trace writes it at once): recovering a run whose process died
    inside the call then knows its outcome is unknown and never makes it blindly.

    Such a call (its key is in ``run.unknown_outcomes``) is made again only by a tool
    that takes the key and so deduplicates it; for any other tool the run pauses
    with :class:`~agentlab.errors.OutcomeUnknown` until a person says what happened.
    """
    run = invocation.run
    if run is not None:
        key = invocation.key
        starts = run.call_starts.get(key, 0)
        if key in run.unknown_outcomes and invocation.tool.key_parameter is None:
            # A decision settles the outcome of one start: the one it was asked about.
            asked = f"{key}-unknown-{starts}"
            settled = _settle_unknown(invocation, asked, run.approvals.get(asked))
            if settled is not None:
                return settled
        run.unknown_outcomes.discard(key)
        run.call_starts[key] = starts + 1
        call = invocation.call
        run.emit(
            ToolCallStarted(
                key=invocation.key,
                run_id=run.id,
                step=invocation.step,
                tool=invocation.tool.name,
                call_id=call.id,
                arguments=call.arguments,
                started_at=time.time(),
            )
        )
    return await rest(invocation)


def _settle_unknown(
    invocation: ToolInvocation, asked: str, decision: dict[str, Any] | None
) -> ToolOutcome | None:
    """A person's decision (under the key `asked`) on a call whose outcome was
    unknown: their account of it, not making it, or None to make it again; no
    decision yet pauses the run."""
    tool, call = invocation.tool, invocation.call
    if decision is None:
        raise OutcomeUnknown(tool.name, call.arguments, asked)
    note = f" Their note: {decision['note']}" if decision.get("note") else ""
    if decision.get("answer") is not None:
        return ToolOutcome(
            "ok",
            f"This call to {tool.name!r} was interrupted; a person checked what happened: "
            f"{decision['answer']}{note}",
        )
    if not decision.get("approve"):
        return ToolOutcome(
            "denied",
            f"This call to {tool.name!r} was interrupted and a person decided not to make "
            f"it again.{note} Do not try it again; tell the user.",
        )
    return None


def cap_output(max_chars: int) -> ToolLayer:
    """Show the model at most `max_chars` of a result, saying that it was cut."""

    async def layer(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
        outcome = await rest(invocation)
        content = outcome.content
        if len(content) <= max_chars:
            return outcome
        outcome.result = outcome.result if outcome.result is not None else content
        outcome.content = capped(content, max_chars)
        return outcome

    return layer


def capped(content: str, max_chars: int) -> str:
    """`content` as the model is shown it: at most `max_chars`, saying when it was cut."""
    if len(content) <= max_chars:
        return content
    return (
        content[:max_chars] + f"\n[result cut: the first {max_chars:,} of "
        f"{len(content):,} characters are shown. Ask for less (a narrower query, "
        "fewer fields) if you need the rest.]"
    )


# -- the call itself ----------------------------------------------------------------


async def invoke(invocation: ToolInvocation) -> ToolOutcome:
    """Call the function with its validated arguments, within its time limit, and
    serialise the result; every failure becomes a message for the model."""
    tool = invocation.tool
    try:
        kwargs = tool.keyword_arguments(invocation.args, invocation.key)
        if tool.timeout is None:
            result = tool.function(**kwargs)
            if tool.is_async:
                result = await result
        elif tool.is_async:
            async with asyncio.timeout(tool.timeout):
                result = await tool.function(**kwargs)
        else:
            result = await _in_own_thread(tool, kwargs, invocation.call.arguments)
    except TimeoutError as exc:
        if tool.timeout is None:  # the function's own, not its time limit
            return ToolOutcome("error", _raised(tool, exc), fault=True)
        return ToolOutcome("timeout", _timed_out(tool), fault=True)
    except (ToolRetry, _StillRunning) as exc:
        return ToolOutcome("error", str(exc))
    except Exception as exc:
        return ToolOutcome("error", _raised(tool, exc), fault=True)
    try:
        return ToolOutcome("ok", serialize_result(result))
    except Exception as exc:
        return ToolOutcome(
            "error",
            f"Tool {tool.name!r} returned a value that cannot be sent to the model "
            f"({type(exc).__name__}: {exc}). This is a bug in the tool: it must return "
            "text, numbers, lists, dicts or a pydantic model.",
        )


def _raised(tool: Tool, exc: Exception) -> str:
    return (
        f"Tool {tool.name!r} raised {type(exc).__name__}: {exc}. Try different "
        "arguments, another tool, or explain the problem in your answer."
    )


def _timed_out(tool: Tool) -> str:
    if tool.is_async:
        return (
            f"Tool {tool.name!r} did not finish within {tool.timeout:g} s and was stopped. "
            "Try different arguments or another approach."
        )
    return (
        f"Tool {tool.name!r} did not finish within {tool.timeout:g} s. It may still be "
        "running, so its effect may still happen: do not call it again for the same "
        "request. Tell the user it is taking long, or try another approach."
    )


class _StillRunning(Exception):
    """The same call is still running in its thread after an earlier timeout."""


# Sync calls that timed out and are still running, by (tool, arguments): a call with
# the same arguments is refused until they finish, so a slow side effect is never
# started twice because of a timeout.
_RUNNING: dict[tuple[int, str], float] = {}
_RUNNING_LOCK = threading.Lock()


async def _in_own_thread(tool: Tool, kwargs: dict[str, Any], arguments: str) -> Any:
    """Run a sync tool in a daemon thread of its own, waiting at most its timeout.

    A thread cannot be stopped: after a timeout the call goes on in its thread (it
    never blocks other tools, as a shared pool would, nor the process exit), and
    a call with the same arguments is refused until it ends.
    """
    key = (id(tool), _canonical(arguments))
    with _RUNNING_LOCK:
        since = _RUNNING.get(key)
    if since is not None:
        raise _StillRunning(
            f"Tool {tool.name!r} is still running the same call from "
            f"{time.monotonic() - since:.0f} s ago (it timed out, but a running call "
            "cannot be stopped). Do not call it again; wait, or tell the user."
        )
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    finished = False

    def target() -> None:
        nonlocal finished
        try:
            value, ok = tool.function(**kwargs), True
        except BaseException as exc:
            value, ok = exc, False
        with _RUNNING_LOCK:
            finished = True
            _RUNNING.pop(key, None)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, value)

    thread = threading.Thread(target=target, name=f"agentlab-tool-{tool.name}", daemon=True)
    thread.start()
    try:
        return await asyncio.wait_for(asyncio.shield(future), tool.timeout)
    except TimeoutError:
        with _RUNNING_LOCK:
            if not finished:
                _RUNNING.setdefault(key, time.monotonic())
        raise


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments or "{}"), sort_keys=True)
    except ValueError:
        return arguments


def tool_breaker(tool: Tool, config: BreakerConfig, store: BreakerStore | None = None) -> ToolLayer:
    """A circuit breaker around the service behind `tool`: after the configured
    failures (the tool raised or timed out: :attr:`ToolOutcome.fault`) calls fail
    fast, telling the model the tool is unavailable and its last error, until a
    probe call after the cooldown succeeds."""
    breaker = breaker_registry().get(f"tool:{tool.name}", config, store)
    if breaker not in _TRACED:
        _TRACED.add(breaker)
        breaker.subscribe(_record_transition)

    async def layer(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
        try:
            ticket = breaker.acquire()
        except BreakerOpen as exc:
            last = f" Last error: {exc.last_error}" if exc.last_error else ""
            return ToolOutcome(
                "error",
                f"Tool {tool.name!r} is unavailable right now: it failed {exc.failures} times "
                f"and its circuit breaker is open (next try in {exc.retry_in:.1f} s).{last} "
                "Do not call it again now; use another tool or tell the user.",
            )
        outcome = await rest(invocation)
        if outcome.fault:
            breaker.record_failure(ticket, error=outcome.content)
        else:
            breaker.record_success(ticket)
        return outcome

    return layer


_TRACED: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def _record_transition(transition: BreakerTransition) -> None:
    """Send a tool breaker's transition to the trace of the run that saw it."""
    run = active_run()
    if run is None:
        return
    run.emit(breaker_event(transition, run.id, run.current_step))
