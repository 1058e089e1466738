"""The run loop shared by every agent pattern: one step = one model request plus
the tool calls it asks for. A run can be advanced step by step and inspected.

The loop only loops. What happens around a model request (retries, fallbacks,
routing, budget checks, attempt records) is the agent's model stack; what happens
around a tool call (validation, budget, cache, output cap, timeout) is each tool's
call chain; recording is the observers' job (the trace writer is one). The loop
builds the step's records and events and decides when the run ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentlab._context import EventSink, _current
from agentlab._sync import run_sync
from agentlab.agents.explain import Failure, tried
from agentlab.agents.records import RunResult, Step, ToolCallRecord
from agentlab.agents.turn import StopRun
from agentlab.budgets import Budget, BudgetTracker
from agentlab.errors import (
    ApprovalRequired,
    BudgetExceededError,
    MemoryStoreError,
    ModelError,
    UnexpectedModelOutputError,
    UserError,
)
from agentlab.events import (
    ModelCallEvent,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    RunStatus,
    ToolCallEvent,
)
from agentlab.memory.working import ContextOverflowError
from agentlab.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from agentlab.models.base import ModelSettings
from agentlab.models.context import CallContext, model_call
from agentlab.tokens import count_message
from agentlab.tools.calls import ToolInvocation, ToolOutcome
from agentlab.usage import Usage

if TYPE_CHECKING:
    from agentlab.agents.agent import Agent
    from agentlab.agents.recovery import RunRecord
    from agentlab.memory.session import RunMemory
    from agentlab.memory.short_term import SessionMemory

__all__ = ["Run"]

log = logging.getLogger("agentlab.run")

_CONTEXT_NEXT = (
    "Raise WorkingMemory(max_tokens=...) if the model's context allows it; otherwise "
    "shorten the system prompt or pinned notes, send fewer tools, or make the tool "
    "that returned the long result return less."
)
_MEMORY_NEXT = (
    "Check that the agent's long-term memory store can be opened and searched (the "
    "message above names it), or run without automatic recall (Memory(recall='tool') "
    "or 'off')."
)

_TOOL_NEXT = {
    "invalid_arguments": "Make the tool's parameter descriptions more precise (types, "
    "formats, examples), or use a more capable model.",
    "unknown_tool": "The model keeps calling a tool the agent does not have: name the "
    "tools in the instructions, give them clearer names, or use a more capable model.",
    "timeout": "Make the tool faster or raise its timeout, or fix the service behind it.",
    "denied": "A person declined the call: change the request, or what the agent is asked.",
    "error": "If the tool itself raised, fix the tool or the service behind it; if the "
    "model sends arguments it cannot handle, describe its parameters more precisely.",
}


_MAY_ANSWER = (None, "auto", "none")  # tool_choice values under which text is an answer


class Run:
    """One execution of an agent on one input.

    Advance it with :meth:`step` (or :meth:`step_sync` in a notebook) and look at
    :attr:`steps` and :attr:`messages` in between, or call :meth:`finish`.
    `messages` is the whole conversation; with working memory, what the model is
    sent at each step is chosen from it (and recorded in the trace).
    """

    def __init__(
        self,
        agent: Agent,
        input: str,
        messages: list[Message],
        observers: Sequence[EventSink] = (),
        metadata: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        user: str | None = None,
        budget: Budget | None = None,
        run_id: str | None = None,
    ) -> None:
        restored = run_id is not None
        self.id = run_id or os.urandom(16).hex()
        self.agent = agent
        self.input = input
        self.messages = messages
        self.session = session or self.id
        self.user = user
        self.current_step = 0  # the step being taken (memory events carry it)
        self.steps: list[Step] = []
        self.status: RunStatus = "running"
        self.output: str | None = None
        self.failure: Failure | None = None
        self.observers = tuple(observers)
        self.budget = BudgetTracker(budget or agent.budget)
        """What this run has spent against its limits."""
        self._sent = 0  # messages already recorded with a model call
        self._offered: frozenset[str] | None = None  # the tools of the latest step's turn
        self._input_tokens = 0
        self._output_tokens = 0
        self._cost: float | None = 0.0
        self._failures: dict[str, int] = {}  # consecutive failures per tool / "model"
        self._token_counted = 0  # the run's first messages whose tokens are counted
        self._token_total = 0  # their tokens, for budget estimates
        self._started = time.perf_counter()
        self._epoch = time.time() - self._started  # wall clock = _epoch + perf_counter()
        self._latency_ms = 0.0
        self.approvals: dict[str, dict[str, Any]] = {}
        """A person's decisions on calls that needed approval, by call key."""
        self.pending: dict[str, Any] | None = None
        """What a paused run waits for (None unless ``status == "paused"``)."""
        self.unknown_outcomes: set[str] = set()
        """Keys of side-effecting calls a dead process started and never finished."""
        self.call_starts: dict[str, int] = {}
        """How many times each side-effecting call (by key) was started (recorded)."""
        if not restored:
            self._started_event(metadata)
        if agent.alerts is not None:  # watches this run's own events
            self.observers = (*self.observers, agent.alerts.watch(self))
        self.memory: RunMemory | None = None
        """This run's memory state (recall, remember, the tool cache); None without memory."""
        if agent.memory is not None or agent.cacheable_tools:
            from agentlab.memory.session import RunMemory

            self.memory = RunMemory(self, agent.memory, agent.tool_cache_store)

    def _started_event(self, metadata: dict[str, Any] | None) -> None:
        agent = self.agent
        self.emit(
            RunStarted(
                run_id=self.id,
                agent=agent.name,
                model=agent.model.name,
                input=self.input,
                started_at=time.time(),
                metadata=metadata or {},
                session=self.session if self.session != self.id else None,
                user=self.user,
                limits=self.budget.budget.limits,
            )
        )

    # -- public API -----------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.status != "running"

    @property
    def explanation(self) -> str | None:
        """Why the run ended badly, in plain language (None while it has not)."""
        return None if self.failure is None else self.failure.text()

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self._input_tokens,
            output_tokens=self._output_tokens,
            requests=sum(max(1, len(s.attempts)) for s in self.steps),
        )

    @property
    def cost(self) -> float | None:
        """US dollars so far; ``None`` when a model's price is unknown."""
        return self._cost

    @property
    def tracer(self) -> EventSink | None:
        """The agent's trace writer, if the run is traced."""
        return self.agent.tracer

    @property
    def short_term(self) -> SessionMemory:
        """The session's short-term memory (namespaced by agent and session; every
        access is traced). Tools reach it with ``current_run().short_term``."""
        session = self.memory.session_memory if self.memory is not None else None
        if session is None:
            raise UserError(
                f"agent {self.agent.name!r} has no short-term memory; give it one with "
                "Agent(..., memory=Memory(short_term=EmbeddedStore.in_workspace()))"
            )
        return session

    def emit(self, event: Any) -> None:
        """Send one event of this run to every observer (the trace, alerts, callbacks)."""
        for observer in self.observers:
            observer.emit(event)

    def stop(self, kind: str, what: str, next_: str) -> None:
        """End the run, status ``failed``, at the end of this step, with a failure
        record of `kind` saying `what` went wrong and what to do `next_` (used by
        observers such as :class:`~agentlab.agents.alerts.LoopAlerts` with
        ``stop=True``). A run already done is left as it is."""
        if not self.done:
            self._fail("failed", kind, what, next_)

    def account(self, usage: Usage, model_name: str) -> float | None:
        """Add a model request made for this run (a step or a summary) to its usage,
        cost and budget; return that request's cost (None: the price is unknown)."""
        price = self.agent.prices.price(model_name)
        cost = None if price is None else price.cost(usage)
        self._input_tokens += usage.input_tokens
        self._output_tokens += usage.output_tokens
        self._cost = None if cost is None or self._cost is None else self._cost + cost
        self.budget.add_usage(usage, cost)
        return cost

    @property
    def result(self) -> RunResult:
        """The result; only available once the run is done."""
        if not self.done:
            raise UserError(
                f"Run {self.id} is still running ({len(self.steps)} steps so far); "
                "call finish() or step() until done."
            )
        return RunResult(
            run_id=self.id,
            status=self.status,
            output=self.output,
            explanation=self.explanation,
            steps=len(self.steps),
            tools_called=[c.name for s in self.steps for c in s.tool_calls],
            usage=self.usage,
            cost=self._cost,
            latency_ms=self._latency_ms,
            messages=list(self.messages),
            failure=None if self.failure is None else self.failure.to_dict(),
            pending=self.pending,
        )

    async def step(self) -> Step:
        """Run one step: call the model, then the tools it asked for."""
        if self.status != "running":
            raise UserError(f"Run {self.id} already finished ({self.status}); start a new run.")
        token = _current.set(self)  # tools called in this step see current_run()
        try:
            return await self._guarded_step()
        finally:
            _current.reset(token)

    async def finish(self) -> RunResult:
        """Run steps until the run is done; return the result."""
        if self.done:
            return self.result
        token = _current.set(self)  # once per run: setting it costs microseconds
        try:
            while not self.done:
                await self._guarded_step()
        finally:
            _current.reset(token)
        return self.result

    async def resume(
        self, *, approve: bool | None = None, note: str | None = None, answer: str | None = None
    ) -> RunResult:
        """Resume a paused run with a person's decision, then finish it.

        Waiting for an approval: `approve` makes the call, or declines it (the model
        is told, with `note`). Escalated after a failure: `answer` is the run's answer
        for the user; ``approve=True`` tries again; ``approve=False`` ends it failed.
        """
        if self.status != "paused" or self.pending is None:
            raise UserError(f"Run {self.id} is {self.status}, not paused: nothing to resume.")
        pending = self.pending
        escalated = pending["kind"] == "escalation"
        answerable = escalated or pending["kind"] == "outcome_unknown"
        if approve is None and not (answerable and answer is not None):
            raise UserError(
                f"Run {self.id} waits for: {pending['question']} Resume it with approve=True "
                "or approve=False" + (", or answer='...'." if answerable else ".")
            )
        decision = {"key": pending["key"], "approve": approve, "note": note, "answer": answer}
        self.approvals[pending["key"]] = decision
        self.status, self.pending = "running", None
        self._resumed_event(decision)
        if escalated:
            self._decide_escalation(pending, approve, answer)
        return await self._carry_on([ToolCall(**c) for c in pending["calls"]])

    async def recover(
        self, calls: Sequence[ToolCall] = (), *, answer: str | None = None
    ) -> RunResult:
        """Carry on a run rebuilt from the trace after its process died: make the last
        step's `calls` that recorded no result (a side-effecting one whose outcome is
        unknown is made again only if its tool takes an idempotency key; otherwise
        the run pauses for a person), or finish with the recorded `answer`; then
        finish the run. Use :meth:`Agent.resume` rather than calling this directly."""
        self._resumed_event({"recovered": True, "from_step": len(self.steps)})
        if answer is not None:
            self._finish("completed", output=answer)
        return await self._carry_on(calls)

    def _resumed_event(self, decision: dict[str, Any]) -> None:
        self.emit(
            RunResumed(
                run_id=self.id, decision=decision, resumed_at=time.time(), agent=self.agent.name
            )
        )

    async def _carry_on(self, calls: Sequence[ToolCall]) -> RunResult:
        """Make the last step's remaining `calls`, then finish the run."""
        token = _current.set(self)
        try:
            if calls and not self.done:
                await self._call_tools(self.steps[-1], calls)
            if not self.done and len(self.steps) >= self.step_limit:
                self._stop_at_step_limit()
            if self.done:
                await self._finished()
            while not self.done:
                await self._guarded_step()
        finally:
            _current.reset(token)
        return self.result

    def _decide_escalation(
        self, pending: dict[str, Any], approve: bool | None, answer: str | None
    ) -> None:
        failure = Failure(**pending["failure"])
        if answer is not None:
            self._finish("completed", output=answer)
        elif approve:
            self._failures.clear()  # a fresh start for the failing model or tool
        else:
            self.failure, self.status = failure, "failed"

    def resume_sync(
        self, *, approve: bool | None = None, note: str | None = None, answer: str | None = None
    ) -> RunResult:
        """:meth:`resume` for synchronous code and notebook cells."""
        return run_sync(self.resume(approve=approve, note=note, answer=answer))

    def checkpoint(self) -> dict[str, Any]:
        """What resuming this run needs beyond its trace (stored with a pause): the
        counters the trace does not hold exactly, and the decisions made so far. The
        conversation and the steps are read back from the trace
        (:func:`agentlab.agents.recovery.read_run`)."""
        return {
            "input_tokens": self._input_tokens,
            "output_tokens": self._output_tokens,
            "cost": self._cost,
            "failures": dict(self._failures),
            "approvals": dict(self.approvals),
            "spent": {
                "tokens": self.budget.tokens,
                "cost": self.budget.cost,
                "model_calls": self.budget.model_calls,
                "tool_calls": self.budget.tool_calls,
            },
        }

    def branch(self, at: int, content: str | None = None) -> Run:
        """A new run of the same agent that carries on from this run's conversation
        at message `at` (an index into :attr:`messages`), with that message's text
        replaced by `content`: edit the system prompt, the question or a tool result
        and see what the model does from there. Without `content`, the conversation
        is kept as it is up to that point; at a model reply, the model is asked again.

        A system, user or tool message is kept with the messages after it up to the
        next model reply (the rest of that step's tool results). A model's reply
        cannot be edited (branch at it to ask again). The new run has not taken a
        step; its metadata names this run and the message (``branched_from``,
        ``branched_at``).
        """
        messages = self.messages
        if not 0 <= at < len(messages):
            raise UserError(
                f"Run {self.id[:8]} has messages 0 to {len(messages) - 1}; cannot branch at {at}."
            )
        message = messages[at]
        if isinstance(message, AssistantMessage):
            if content is not None:
                raise UserError(
                    f"Message {at} is the model's reply, which cannot be edited: branch at "
                    f"it without content to ask the model again, or edit message {at - 1}."
                )
            conversation = messages[:at]
        else:
            end = next(
                (
                    i
                    for i in range(at + 1, len(messages))
                    if isinstance(messages[i], AssistantMessage)
                ),
                len(messages),
            )
            edited = message if content is None else message.model_copy(update={"content": content})
            conversation = [*messages[:at], edited, *messages[at + 1 : end]]
        question = next((m.content for m in conversation if m.role == "user"), self.input)
        return self.agent.start(
            str(question),
            session=None if self.session == self.id else self.session,
            user=self.user,
            metadata={"branched_from": self.id, "branched_at": at},
            messages=conversation,
        )

    @classmethod
    def restore(cls, agent: Agent, record: RunRecord) -> Run:
        """A run rebuilt from its trace (by any process): paused, ready for
        :meth:`resume`, or interrupted, ready for :meth:`recover`."""
        row = record.row
        run = cls(
            agent,
            row["input"],
            record.messages,
            agent.run_observers(),
            session=row.get("session"),
            user=row.get("user_id"),
            budget=Budget.from_limits(row["limits"]) if row.get("limits") else None,
            run_id=row["run_id"],
        )
        run.steps = record.steps
        run._sent = record.sent
        saved = (row.get("checkpoint") or {}) if row["status"] == "paused" else {}
        costs = [s.cost for s in record.steps]
        run._input_tokens = saved.get("input_tokens", sum(s.usage.input_tokens for s in run.steps))
        run._output_tokens = saved.get(
            "output_tokens", sum(s.usage.output_tokens for s in run.steps)
        )
        run._cost = saved.get("cost", None if None in costs else sum(c or 0.0 for c in costs))
        run._failures = dict(record.failures)
        run.approvals = dict(record.approvals)
        run.unknown_outcomes = set(record.unknown_outcomes)
        run.call_starts = dict(record.call_starts)
        spent, budget = record.spent, run.budget
        budget.tokens, budget.cost = spent["tokens"], spent["cost"]
        budget.model_calls, budget.tool_calls = spent["model_calls"], spent["tool_calls"]
        if row["status"] == "paused":
            run.status, run.pending = "paused", row["pending"]
        return run

    def step_sync(self) -> Step:
        """:meth:`step` for synchronous code and notebook cells."""
        return run_sync(self.step())

    def finish_sync(self) -> RunResult:
        """:meth:`finish` for synchronous code and notebook cells."""
        return run_sync(self.finish())

    def __repr__(self) -> str:
        return f"<Run {self.id[:8]} {self.status} steps={len(self.steps)}>"

    def _repr_html_(self) -> str:
        from agentlab.agents.html import run_html

        return run_html(self)

    # -- the loop -------------------------------------------------------------------

    async def _guarded_step(self) -> Step:
        """One step; a cancelled run (a timeout, a client that went away) still ends
        with a recorded status and explanation before the cancellation goes on."""
        try:
            step = await self._take_step(len(self.steps) + 1)
        except asyncio.CancelledError:
            if not self.done:
                self._fail(
                    "cancelled",
                    "cancelled",
                    "the run was cancelled while it was running (a timeout around it, or "
                    "the client that asked for it went away).",
                    "If a timeout cancelled it, raise that timeout or set a wall-time "
                    "budget (Budget(wall_time=...)) so the run ends on its own terms.",
                )
                await self._finished()
            raise
        if not self.done and len(self.steps) >= self.step_limit:
            self._stop_at_step_limit()  # every step counts, failed ones included
        if self.done:
            await self._finished()
        return step

    async def _take_step(self, index: int) -> Step:
        agent = self.agent
        self.current_step = index
        t0 = time.perf_counter()
        started_at = self._epoch + t0
        call = CallContext(
            self.id,
            index,
            budget=self.budget,
            prices=agent.prices,
            count_tokens=self._count_tokens,
            emit=self.emit,
        )
        try:
            turn = agent.turn(self)
            if turn.instruction is not None and not self._instructed(turn.instruction):
                self.messages.append(UserMessage(content=turn.instruction))
            self._offered = turn.names
            settings = agent.settings
            if turn.tool_choice is not None:
                settings = (settings or ModelSettings()).model_copy(
                    update={"tool_choice": turn.tool_choice}
                )
            context = self.messages if self.memory is None else await self.memory.context()
            with model_call(call):
                response = await agent.stack.request(context, turn.tools, settings)
        except StopRun as exc:  # the pattern ends the run: the model was not asked
            return self._not_sent(index, exc, started_at, t0, exc.kind, exc.next)
        except ContextOverflowError as exc:
            return self._not_sent(index, exc, started_at, t0, "context", _CONTEXT_NEXT)
        except MemoryStoreError as exc:  # recall failed: the model was not asked
            return self._not_sent(index, exc, started_at, t0, "memory", _MEMORY_NEXT)
        except BudgetExceededError as exc:
            step = self._failed_step(index, call, exc, started_at, t0)
            self._fail("budget_exceeded", "budget", f"{exc}.", exc.hint, exc)
            return step
        except ModelError as exc:
            return self._model_failed(self._failed_step(index, call, exc, started_at, t0), exc)
        except UserError as exc:  # a definition mistake found at request time
            step = self._failed_step(index, call, exc, started_at, t0)
            self._fail("failed", "definition", f"{exc}", "Fix the definition named above.", exc)
            return step
        except Exception as exc:  # a provider bug must still end in an explanation
            error = ModelError(f"{type(exc).__name__}: {exc}", model=agent.model.name)
            return self._model_failed(self._failed_step(index, call, error, started_at, t0), error)
        latency_ms = (time.perf_counter() - t0) * 1000
        usage = response.usage
        cost = self.account(usage, response.model_name)
        reply = response.message
        step = Step(index, reply, usage, cost, latency_ms, [], **_routing(call))
        self.steps.append(step)
        self._emit_model_call(step, started_at, reply=reply)
        self.messages.append(reply)
        try:
            self.budget.check_spent()
        except BudgetExceededError as exc:
            self.output = reply.content if not reply.tool_calls else None
            self._fail("budget_exceeded", "budget", f"{exc}.", exc.hint, exc)
            return step
        if reply.tool_calls:
            self._failures.pop("model", None)
            await self._call_tools(step, reply.tool_calls)
        elif reply.content and turn.tool_choice in _MAY_ANSWER:
            self._finish("completed", output=reply.content)
        else:
            step.error = (
                "the model replied with neither a tool call nor any text"
                if not reply.content
                else f"the model answered in text where it had to call a tool "
                f"(tool_choice={turn.tool_choice!r}; a server that ignores tool_choice?)"
            )
            self._model_failed(
                step, UnexpectedModelOutputError(step.error, model=response.model_name)
            )
        return step

    def _instructed(self, instruction: str) -> bool:
        """Whether the conversation ends with `instruction` already (a step asked
        again after an unusable reply, or after a failed request)."""
        last = self.messages[-1] if self.messages else None
        return isinstance(last, UserMessage) and last.content == instruction

    @property
    def step_limit(self) -> int:
        """Steps this run may take (the agent's max_steps, or the run's step budget)."""
        return self.budget.budget.steps or self.agent.max_steps

    def _stop_at_step_limit(self) -> None:
        limit = self.step_limit
        self._fail(
            "max_steps",
            "max_steps",
            f"the agent used all {limit} steps (max_steps) without reaching a final answer.",
            "Look at the last steps: if a tool kept failing or returning the same thing, "
            "fix the tool or its description; if the task needs more steps, raise max_steps.",
        )

    # -- tool calls -----------------------------------------------------------------

    async def _call_tools(self, step: Step, calls: Sequence[ToolCall]) -> None:
        """Make the step's tool calls in order; pause before one that needs approval."""
        for i, call in enumerate(calls):
            if self.done:
                return
            needed = await self._call_tool(step, call)
            if needed is not None:
                self._pause(step, calls[i:], needed)
                return

    def _pause(self, step: Step, calls: Sequence[ToolCall], needed: ApprovalRequired) -> None:
        self.status = "paused"
        self.pending = {
            "kind": needed.kind,
            "step": step.index,
            "key": needed.key,
            "tool": needed.tool,
            "arguments": needed.arguments,
            "question": needed.question,
            "calls": [c.model_dump(mode="json") for c in calls],
        }

    async def _call_tool(self, step: Step, call: ToolCall) -> ApprovalRequired | None:
        agent = self.agent
        t0 = time.perf_counter()
        started_at = self._epoch + t0
        handler = agent.tool_handlers.get(call.name)
        offered = self._offered
        if handler is None or (offered is not None and call.name not in offered):
            names = agent.tool_names if offered is None else sorted(offered)
            unknown = "Unknown tool" if handler is None else "Tool not available at this step:"
            outcome = ToolOutcome(
                "unknown_tool",
                f"{unknown} {call.name!r}. Available tools: {', '.join(names) or '(none)'}. "
                "Call one of these, or answer directly.",
            )
        else:
            invocation = ToolInvocation(
                agent.tools_by_name[call.name],
                call,
                step.index,
                f"{self.id}-{step.index}-{call.id}",
                self,
            )
            try:
                outcome = await handler(invocation)
            except ApprovalRequired as exc:
                return exc
            except BudgetExceededError as exc:
                self._fail("budget_exceeded", "budget", f"{exc}.", exc.hint, exc)
                return None
        ok = outcome.status == "ok"
        error = None if ok else outcome.content
        latency_ms = (time.perf_counter() - t0) * 1000
        step.tool_calls.append(
            ToolCallRecord(
                name=call.name,
                arguments=call.arguments,
                result=outcome.content,
                status=outcome.status,
                latency_ms=latency_ms,
                error=error,
                call_id=call.id,
            )
        )
        self.messages.append(
            ToolMessage(
                tool_call_id=call.id, name=call.name, content=outcome.content, is_error=not ok
            )
        )
        self.emit(
            ToolCallEvent(
                id=f"{self.id}-{step.index}-{len(step.tool_calls)}",
                run_id=self.id,
                step=step.index,
                tool=call.name,
                arguments=call.arguments,
                result=outcome.content if outcome.result is None else outcome.result,
                status=outcome.status,
                error=error,
                latency_ms=latency_ms,
                started_at=started_at,
                cache=outcome.cache,
                saved_cost=outcome.saved_cost,
                saved_latency_ms=outcome.saved_latency_ms,
                call_id=call.id,
                served_by=outcome.served_by,
                fallback=outcome.fallback,
            )
        )
        if ok:
            if self._failures:
                self._failures.pop(call.name, None)
            return None
        failures = self._failures.get(call.name, 0) + 1
        self._failures[call.name] = failures
        if failures > agent.max_retries and not self.done:
            self._fail(
                "failed",
                "tool",
                f"the call to tool {call.name!r} failed {failures} times in a row; last "
                f"error: {outcome.content}",
                _TOOL_NEXT.get(outcome.status, _TOOL_NEXT["error"]),
                outcome.status,
            )
        return None

    # -- failures -------------------------------------------------------------------

    def _failed_step(
        self, index: int, call: CallContext, exc: Exception, started_at: float, t0: float
    ) -> Step:
        """Record a step whose model request failed (after its retries and fallbacks)."""
        step = Step(
            index,
            None,
            Usage(),
            0.0,
            (time.perf_counter() - t0) * 1000,
            error=str(exc),
            **_routing(call),
        )
        self.steps.append(step)
        self._emit_model_call(step, started_at, reply=None, error=str(exc))
        return step

    def _not_sent(
        self, index: int, exc: Exception, started_at: float, t0: float, kind: str, next_: str
    ) -> Step:
        """The step's context could not be made (too big, recall failed): record the
        step as a call that was not sent and end the run."""
        step = Step(index, None, Usage(), 0.0, (time.perf_counter() - t0) * 1000, error=str(exc))
        self.steps.append(step)
        self._emit_model_call(step, started_at, reply=None, error=f"not sent: {exc}")
        what = f"step {index} could not be sent to the model: {exc}."
        self._fail("failed", kind, what, next_, exc)
        return step

    def _model_failed(self, step: Step, exc: ModelError) -> Step:
        """A model request failed for good (its layers retried and fell back as they
        were told): an unusable reply may be asked again; anything else ends the run."""
        if isinstance(exc, UnexpectedModelOutputError):
            failures = self._failures.get("model", 0) + 1
            self._failures["model"] = failures
            if failures <= self.agent.max_retries:
                return step
            model = exc.model or self.agent.model.name
            what = f"the model {model} failed {failures} times in a row: {exc}"
        else:
            attempts = len(step.attempts)
            tries = f" (after {attempts} attempts)" if attempts > 1 else ""
            what = f"the model {exc.model or self.agent.model.name} failed{tries}: {exc}"
        self._fail("failed", "model", what, exc.hint, exc)
        return step

    def _fail(
        self,
        status: RunStatus,
        kind: str,
        what: str,
        next_: str,
        error: BaseException | str | None = None,
    ) -> None:
        """End the run badly with one failure record (`error`: the error behind it, or
        for a tool the status of its last call)."""
        failure = Failure(
            kind=kind,
            what=what,
            next=next_,
            tried=tried(self.steps, self.budget.spent()),
            error=error if error is None or isinstance(error, str) else type(error).__name__,
        )
        if self.agent.escalate and status == "failed" and kind in ("model", "tool"):
            step = self.steps[-1].index if self.steps else 0
            self.status = "paused"  # a person decides instead of failing the run
            self.pending = {
                "kind": "escalation",
                "step": step,
                "key": f"{self.id}-{step}-escalation",
                "question": f"The run cannot go on by itself: {what} Answer for the user, "
                "retry, or let it fail?",
                "failure": failure.to_dict(),
                "calls": [],
            }
            return
        self.failure = failure
        self.status = status

    def _finish(self, status: RunStatus, *, output: str | None = None) -> None:
        """Set the outcome; :meth:`_finished` records it at the end of the step."""
        self.status = status
        self.output = output

    async def _finished(self) -> None:
        """After the last step: the session summary (if asked for), then the record;
        a paused run records what it waits for and what resuming it needs."""
        if self.status == "paused":
            assert self.pending is not None
            self.emit(
                RunPaused(
                    run_id=self.id,
                    step=self.pending["step"],
                    pending=self.pending,
                    checkpoint=self.checkpoint(),
                    paused_at=time.time(),
                )
            )
            return
        memory = self.agent.memory
        if (
            self.status == "completed"
            and memory is not None
            and memory.summarize_sessions
            and self.memory is not None
        ):
            try:
                await self.memory.summarize_session()
            except (ModelError, MemoryStoreError) as exc:  # the answer stands; say so
                log.warning("run %s: the session summary was not saved: %s", self.id, exc)
        self._latency_ms = (time.perf_counter() - self._started) * 1000
        self.emit(
            RunFinished(
                run_id=self.id,
                status=self.status,
                output=self.output,
                explanation=self.explanation,
                steps=len(self.steps),
                input_tokens=self._input_tokens,
                output_tokens=self._output_tokens,
                cost=self._cost,
                latency_ms=self._latency_ms,
                ended_at=time.time(),
                failure=None if self.failure is None else self.failure.to_dict(),
            )
        )

    # -- records ----------------------------------------------------------------------

    def _emit_model_call(
        self,
        step: Step,
        started_at: float,
        *,
        reply: AssistantMessage | None,
        error: str | None = None,
    ) -> None:
        context = len(self.messages)
        self.emit(
            ModelCallEvent(
                id=f"{self.id}-{step.index}",
                run_id=self.id,
                step=step.index,
                model=self.agent.model.name,
                messages=self.messages[self._sent : context],
                context_messages=context,
                tools=self.agent.tool_names if self._offered is None else sorted(self._offered),
                response=reply,
                input_tokens=step.usage.input_tokens,
                output_tokens=step.usage.output_tokens,
                cost=step.cost,
                latency_ms=step.latency_ms,
                status="ok" if error is None else "error",
                error=error,
                started_at=started_at,
                attempts=step.attempts,
                served_by=step.served_by,
                route=step.route,
            )
        )
        self._sent = context + (reply is not None)

    def _count_tokens(self, messages: Sequence[Message]) -> int:
        """The token counter's estimate of `messages` (counts of the run's own
        messages are kept, so a step counts only what is new)."""
        if messages is self.messages:
            counted = self._token_counted
            if counted < len(messages):
                counter = self.agent.token_counter
                self._token_total += sum(count_message(counter, m) for m in messages[counted:])
                self._token_counted = len(messages)
            return self._token_total
        counter = self.agent.token_counter
        return sum(count_message(counter, m) for m in messages)


def _routing(call: CallContext) -> dict[str, Any]:
    """The step's routing facts from its call context."""
    return {
        "attempts": [a.to_dict() for a in call.attempts],
        "served_by": call.served_by or (call.attempts[-1].model if call.attempts else None),
        "route": call.route,
        "fallbacks": list(call.fallbacks),
    }
