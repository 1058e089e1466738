"""The run loop shared by every agent pattern: one step = one model call plus the
tool calls it asks for. A run can be advanced step by step and inspected."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import ValidationError

from agentlab._sync import run_sync
from agentlab.agents.current import _current
from agentlab.agents.explain import explanation
from agentlab.agents.records import RunResult, Step, ToolCallRecord
from agentlab.errors import (
    MemoryStoreError,
    ModelAuthError,
    ModelError,
    ModelRequestsBlockedError,
    ModelUnavailableError,
    ToolRetry,
    UnexpectedModelOutputError,
    UserError,
)
from agentlab.events import (
    Event,
    ModelCallEvent,
    RunFinished,
    RunStarted,
    RunStatus,
    ToolCallEvent,
    ToolCallStatus,
)
from agentlab.memory.working import ContextOverflowError
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolMessage
from agentlab.tools import Tool, format_validation_error, serialize_result
from agentlab.usage import Usage

if TYPE_CHECKING:
    from agentlab.agents.agent import Agent
    from agentlab.agents.run_memory import RunMemory
    from agentlab.memory.short_term import SessionMemory

__all__ = ["Run", "Tracer"]

log = logging.getLogger("agentlab.run")


class Tracer(Protocol):
    """Anything that records events (the trace store's writer, a test list)."""

    def emit(self, event: Event) -> None: ...


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
        tracer: Tracer | None,
        metadata: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        user: str | None = None,
    ) -> None:
        self.id = os.urandom(16).hex()
        self.agent = agent
        self.input = input
        self.messages = messages
        self.session = session or self.id
        self.user = user
        self.current_step = 0  # the step being taken (memory events carry it)
        self.steps: list[Step] = []
        self.status: RunStatus = "running"
        self.output: str | None = None
        self.explanation: str | None = None
        self._tracer = tracer
        self._sent = 0  # messages already recorded with a model call
        self._input_tokens = 0
        self._output_tokens = 0
        self._cost: float | None = 0.0
        self._failures: dict[str, int] = {}  # consecutive failures per tool / "model"
        self._started = time.perf_counter()
        self._epoch = time.time() - self._started  # wall clock = _epoch + perf_counter()
        self._latency_ms = 0.0
        if tracer is not None:
            tracer.emit(
                RunStarted(
                    run_id=self.id,
                    agent=agent.name,
                    model=agent.model.name,
                    input=input,
                    started_at=time.time(),
                    metadata=metadata or {},
                    session=session,
                    user=user,
                )
            )
        self.memory: RunMemory | None = None
        """This run's memory state (recall, remember, the tool cache); None without memory."""
        if agent.memory is not None or agent.cacheable_tools:
            from agentlab.agents.run_memory import RunMemory

            self.memory = RunMemory(self, agent.memory, agent.tool_cache_store)

    # -- public API -----------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.status != "running"

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self._input_tokens,
            output_tokens=self._output_tokens,
            requests=len(self.steps),
        )

    @property
    def cost(self) -> float | None:
        """US dollars so far; ``None`` when a model's price is unknown."""
        return self._cost

    @property
    def tracer(self) -> Tracer | None:
        """Where this run's events go (None: not traced)."""
        return self._tracer

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

    def account(self, usage: Usage, model_name: str) -> float | None:
        """Add a model request made for this run (a step or a summary) to its usage
        and cost; return that request's cost (None: the model's price is unknown)."""
        price = self.agent.prices.price(model_name)
        cost = None if price is None else price.cost(usage)
        self._input_tokens += usage.input_tokens
        self._output_tokens += usage.output_tokens
        self._cost = None if cost is None or self._cost is None else self._cost + cost
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
        )

    async def step(self) -> Step:
        """Run one step: call the model, then the tools it asked for."""
        if self.status != "running":
            raise UserError(f"Run {self.id} already finished ({self.status}); start a new run.")
        token = _current.set(self)  # tools called in this step see current_run()
        try:
            return await self._step()
        finally:
            _current.reset(token)

    async def _step(self) -> Step:
        step = await self._take_step(len(self.steps) + 1)
        if self.done:
            await self._finished()
        return step

    async def _take_step(self, index: int) -> Step:
        agent = self.agent
        self.current_step = index
        t0 = time.perf_counter()
        started_at = self._epoch + t0
        try:
            context = self.messages if self.memory is None else await self.memory.context()
            response = await agent.model.request(context, agent.tool_definitions, agent.settings)
        except ContextOverflowError as exc:
            return self._not_sent(
                index,
                exc,
                started_at,
                t0,
                "Raise WorkingMemory(max_tokens=...) if the model's context allows it; "
                "otherwise shorten the system prompt or pinned notes, send fewer tools, "
                "or make the tool that returned the long result return less.",
            )
        except MemoryStoreError as exc:  # recall failed: the model was not asked
            return self._not_sent(
                index,
                exc,
                started_at,
                t0,
                "Check that the agent's long-term memory store can be opened and searched "
                "(the message above names it), or run without automatic recall "
                "(Memory(recall='tool') or 'off').",
            )
        except ModelError as exc:
            return self._model_failed(index, exc, started_at, t0)
        except Exception as exc:  # a provider bug must still end in an explanation
            error = ModelError(f"{type(exc).__name__}: {exc}", model=agent.model.name)
            return self._model_failed(index, error, started_at, t0)
        latency_ms = (time.perf_counter() - t0) * 1000
        usage = response.usage
        cost = self.account(usage, response.model_name)
        reply = response.message
        step = Step(index, reply, usage, cost, latency_ms, [])
        self.steps.append(step)
        if self._tracer is not None:
            self._emit_model_call(step, started_at, reply=reply)
        self.messages.append(reply)
        if reply.tool_calls:
            if self._failures:
                self._failures.pop("model", None)
            for call in reply.tool_calls:
                await self._call_tool(step, call)
        elif reply.content:
            self._finish("completed", output=reply.content)
        else:
            self._model_failed(
                index,
                UnexpectedModelOutputError(
                    "the model replied with neither a tool call nor any text",
                    model=agent.model.name,
                ),
                started_at,
                t0,
                recorded=step,
            )
        if self.status == "running" and len(self.steps) >= agent.max_steps:
            self._finish(
                "max_steps",
                explanation=explanation(
                    f"the agent used all {agent.max_steps} steps (max_steps) without reaching "
                    "a final answer.",
                    self.steps,
                    "Look at the last steps: if a tool kept failing or returning the same thing, "
                    "fix the tool or its description; if the task needs more steps, raise "
                    "max_steps.",
                ),
            )
        return step

    async def finish(self) -> RunResult:
        """Run steps until the run is done; return the result."""
        if self.done:
            return self.result
        token = _current.set(self)  # once per run: setting it costs microseconds
        try:
            while not self.done:
                await self._step()
        finally:
            _current.reset(token)
        return self.result

    def step_sync(self) -> Step:
        """:meth:`step` for synchronous code and notebook cells."""
        return run_sync(self.step())

    def finish_sync(self) -> RunResult:
        """:meth:`finish` for synchronous code and notebook cells."""
        return run_sync(self.finish())

    def __repr__(self) -> str:
        return f"<Run {self.id[:8]} {self.status} steps={len(self.steps)}>"

    def _repr_html_(self) -> str:
        from agentlab._html import run_html

        return run_html(self)

    # -- internals --------------------------------------------------------------------

    def _emit_model_call(
        self,
        step: Step,
        started_at: float,
        *,
        reply: AssistantMessage | None,
        error: str | None = None,
    ) -> None:
        if self._tracer is None:
            return
        context = len(self.messages)
        self._tracer.emit(
            ModelCallEvent(
                id=f"{self.id}-{step.index}",
                run_id=self.id,
                step=step.index,
                model=self.agent.model.name,
                messages=self.messages[self._sent : context],
                context_messages=context,
                tools=self.agent.tool_names,
                response=reply,
                input_tokens=step.usage.input_tokens,
                output_tokens=step.usage.output_tokens,
                cost=step.cost,
                latency_ms=step.latency_ms,
                status="ok" if error is None else "error",
                error=error,
                started_at=started_at,
            )
        )
        self._sent = context + (reply is not None)

    def _not_sent(
        self, index: int, exc: Exception, started_at: float, t0: float, next_: str
    ) -> Step:
        """The step's context could not be made (too big, recall failed): record the
        step as a call that was not sent and end the run."""
        step = Step(index, None, Usage(), 0.0, (time.perf_counter() - t0) * 1000, error=str(exc))
        self.steps.append(step)
        self._emit_model_call(step, started_at, reply=None, error=f"not sent: {exc}")
        self._finish(
            "failed",
            explanation=explanation(
                f"step {index} could not be sent to the model: {exc}.", self.steps, next_
            ),
        )
        return step

    def _model_failed(
        self,
        index: int,
        exc: ModelError,
        started_at: float,
        t0: float,
        recorded: Step | None = None,
    ) -> Step:
        """Record a failed model call; retry on the next step or end the run."""
        if recorded is None:
            recorded = Step(
                index=index,
                response=None,
                usage=Usage(),
                cost=0.0,
                latency_ms=(time.perf_counter() - t0) * 1000,
                error=str(exc),
            )
            self.steps.append(recorded)
            self._emit_model_call(recorded, started_at, reply=None, error=str(exc))
        else:
            recorded.error = str(exc)
        failures = self._failures.get("model", 0) + 1
        self._failures["model"] = failures
        retryable = exc.retryable and not isinstance(exc, ModelAuthError)
        if retryable and failures <= self.agent.max_retries:
            return recorded
        model = self.agent.model.name
        if isinstance(exc, ModelAuthError):
            next_ = (
                "Check the API key (the api_key argument or OPENAI_API_KEY) and that "
                "it is allowed to use this model."
            )
        elif isinstance(exc, ModelUnavailableError):
            next_ = (
                "Check that the model server is running and reachable at the "
                "configured base URL, then run again; or configure a fallback model."
            )
        elif isinstance(exc, ModelRequestsBlockedError):
            next_ = "Use a scripted model here, or opt in with allow_model_requests(True)."
        elif isinstance(exc, UnexpectedModelOutputError):
            next_ = "Try a more capable model, a lower temperature, or fewer and clearer tools."
        else:
            next_ = "Read the error above; if it is a bug in a provider, report it."
        tries = f" (after {failures} attempts)" if failures > 1 else ""
        self._finish(
            "failed",
            explanation=explanation(f"the model {model} failed{tries}: {exc}", self.steps, next_),
        )
        return recorded

    async def _call_tool(self, step: Step, call: ToolCall) -> None:
        agent = self.agent
        t0 = time.perf_counter()
        started_at = self._epoch + t0
        tool = agent.tools_by_name.get(call.name)
        status: ToolCallStatus = "ok"
        error: str | None = None
        cache: Literal["hit", "miss"] | None = None
        saved_cost = saved_latency_ms = None
        if tool is None:
            status = "unknown_tool"
            content = (
                f"Unknown tool {call.name!r}. Available tools: "
                f"{', '.join(agent.tool_names) or '(none)'}. Call one of these, or "
                "answer directly."
            )
        else:
            try:
                args = tool.args_model.model_validate_json(call.arguments or "{}")
            except ValidationError as exc:
                status, content = "invalid_arguments", format_validation_error(tool.name, exc)
            else:
                memory = self.memory if tool.cache_ttl is not None else None
                hit = memory.cached(tool, args) if memory is not None else None
                if hit is not None:
                    cache, content = "hit", str(hit["result"])
                    saved_cost, saved_latency_ms = tool.cost, hit.get("latency_ms")
                else:
                    if tool.timeout is None and not tool.is_async:  # fast path: inline
                        try:
                            content = serialize_result(tool.function(**args.__dict__))
                        except Exception as exc:
                            status, content = _tool_error(tool, exc)
                    else:
                        status, content = await _invoke(tool, args)
                    if memory is not None:
                        cache = "miss"
                        if status == "ok":
                            elapsed_ms = (time.perf_counter() - t0) * 1000
                            memory.cache(tool, args, content, elapsed_ms)
        if status != "ok":
            error = content
        latency_ms = (time.perf_counter() - t0) * 1000
        step.tool_calls.append(
            ToolCallRecord(
                name=call.name,
                arguments=call.arguments,
                result=content,
                status=status,
                latency_ms=latency_ms,
                error=error,
            )
        )
        self.messages.append(
            ToolMessage(
                tool_call_id=call.id, name=call.name, content=content, is_error=status != "ok"
            )
        )
        if self._tracer is not None:
            self._tracer.emit(
                ToolCallEvent(
                    id=f"{self.id}-{step.index}-{len(step.tool_calls)}",
                    run_id=self.id,
                    step=step.index,
                    tool=call.name,
                    arguments=call.arguments,
                    result=content,
                    status=status,
                    error=error,
                    latency_ms=latency_ms,
                    started_at=started_at,
                    cache=cache,
                    saved_cost=saved_cost,
                    saved_latency_ms=saved_latency_ms,
                )
            )
        if status == "ok":
            if self._failures:
                self._failures.pop(call.name, None)
            return
        failures = self._failures.get(call.name, 0) + 1
        self._failures[call.name] = failures
        if failures > agent.max_retries and not self.done:
            self._finish(
                "failed",
                explanation=explanation(
                    f"the call to tool {call.name!r} failed {failures} times in a row; last "
                    f"error: {content}",
                    self.steps,
                    "If the model keeps sending bad arguments, make the tool's parameter "
                    "descriptions more precise or use a more capable model; if the tool "
                    "itself raised or timed out, fix the tool or the service behind it.",
                ),
            )

    def _finish(
        self, status: RunStatus, *, output: str | None = None, explanation: str | None = None
    ) -> None:
        """Set the outcome; :meth:`_finished` records it at the end of the step."""
        self.status = status
        self.output = output
        self.explanation = explanation

    async def _finished(self) -> None:
        """After the last step: the session summary (if asked for), then the record."""
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
        if self._tracer is not None:
            self._tracer.emit(
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
                )
            )


async def _invoke(tool: Tool, args: Any) -> tuple[ToolCallStatus, str]:
    """Call a tool with its time limit; failures become messages for the model."""
    try:
        if tool.timeout is None:
            result = await tool.call(args)
        else:
            async with asyncio.timeout(tool.timeout):
                if tool.is_async:
                    result = await tool.call(args)
                else:  # a sync tool cannot be interrupted: wait for it in a thread
                    result = await asyncio.to_thread(tool.function, **args.__dict__)
    except TimeoutError:
        return "timeout", (
            f"Tool {tool.name!r} did not finish within {tool.timeout} s and "
            "was abandoned. Try different arguments or another approach."
        )
    except Exception as exc:
        return _tool_error(tool, exc)
    return "ok", serialize_result(result)


def _tool_error(tool: Tool, exc: Exception) -> tuple[ToolCallStatus, str]:
    """The message the model gets when a tool raises."""
    if isinstance(exc, ToolRetry):
        return "error", str(exc)
    return "error", (
        f"Tool {tool.name!r} raised {type(exc).__name__}: {exc}. Try different "
        "arguments, another tool, or explain the problem in your answer."
    )
