"""Serve one agent over HTTP: ``POST /v1/runs``, ``GET /v1/runs/{id}``,
``POST /v1/runs/{id}/resume`` (a paused run's approval; an interrupted run's recovery),
``GET /healthz``, docs at ``/docs``.

>>> app = create_agent_app(lambda: build_support_agent("local:smollm2"))
>>> serve_app(app, port=8000)  # or: uvicorn mypackage.app:app

A run that fails is still a 200 answer with ``status`` and a plain-language
``explanation``; a run that crashed or failed inside the agent (a model or tool
error) answers with its real ``run_id``, ``status: "failed"`` and an ``error_id``
under which the trace store holds the details: no exception text, path or
traceback is ever in a response. Every rejection (422 naming the field, unreadable
or non-strict JSON, 404, 405, 409, 500) has the one envelope of
:mod:`agentlab.serve.gateway.errors`.
"""

# No `from __future__ import annotations`: FastAPI must see the real classes of the
# handlers defined inside create_agent_app (fastapi is imported lazily).
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agentlab.agents import Agent, Run, RunResult
from agentlab.errors import AgentlabError, MissingExtraError, UserError
from agentlab.events import RunFinished
from agentlab.serve.gateway.errors import (
    ApiError,
    install_error_handlers,
    log,
    record_error,
    record_failure,
)
from agentlab.serve.gateway.hygiene import strict_json_route
from agentlab.tracing import TraceStore
from agentlab.usage import Usage

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "ResumeRequest",
    "RunRequest",
    "RunResponse",
    "RunState",
    "UsageOut",
    "create_agent_app",
    "guarded_run",
    "mark_failed",
    "public_state",
    "resumable",
    "serve_app",
]


class RunRequest(BaseModel):
    """A run of the agent on one input."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="The user's message.")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Recorded with the run in the trace store."
    )


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    requests: int


class RunResponse(BaseModel):
    """The outcome of a run; `explanation` says why one that did not complete stopped."""

    run_id: str
    status: str
    output: str | None
    explanation: str | None
    steps: int
    tools_called: list[str]
    usage: UsageOut
    cost: float | None
    latency_ms: float
    pending: dict[str, Any] | None = Field(
        default=None, description="A paused run: the call it waits for a person to approve."
    )
    error_id: str | None = Field(
        default=None,
        description="A run that crashed or failed inside the agent: where the trace store "
        "holds the details.",
    )


class ResumeRequest(BaseModel):
    """A person's decision on the call a paused run waits for."""

    model_config = ConfigDict(extra="forbid")

    approve: bool | None = Field(
        default=None,
        description="Make the pending call (true) or decline it (false); for an escalated "
        "run: retry (true) or let it fail (false).",
    )
    note: str | None = Field(default=None, description="A note passed on to the model.")
    answer: str | None = Field(
        default=None, description="An escalated run: the answer for the user, from a person."
    )


class RunState(BaseModel):
    """A run as the trace store has it."""

    run_id: str
    status: str
    output: str | None
    explanation: str | None
    steps: int | None
    pending: dict[str, Any] | None
    error_id: str | None = None


# Failures whose explanation agentlab writes itself, with no exception text in it.
_PLAIN_KINDS = frozenset({"budget", "max_steps", "cancelled", "loop", "anomaly", "timeout"})
_PUBLIC_WHAT = {
    "model": "The model could not answer (its retries and fallbacks were tried).",
    "tool": "A tool the agent needed kept failing.",
    "crash": "The run crashed.",
}


def _public_explanation(failure: dict[str, Any] | None, error_id: str) -> str:
    what = _PUBLIC_WHAT.get((failure or {}).get("kind", ""), "The run failed inside the agent.")
    return (
        f"{what} The details are recorded under error id {error_id}: give it to the "
        "operator of this service."
    )


def _needs_hiding(status: str, failure: dict[str, Any] | None) -> bool:
    return status == "failed" and (failure or {}).get("kind") not in _PLAIN_KINDS


def _escalated(pending: dict[str, Any] | None) -> bool:
    return (pending or {}).get("kind") == "escalation"


def _public_pending(pending: dict[str, Any] | None, error_id: str | None) -> dict[str, Any] | None:
    """What a paused run waits for, as answered to clients: an escalated run's
    question and failure may quote an exception, so they give way to a plain question
    that names `error_id` (the record of the details, if the server made one)."""
    if not _escalated(pending):
        return pending
    assert pending is not None
    what = _PUBLIC_WHAT.get((pending.get("failure") or {}).get("kind", ""), "The run failed.")
    where = (
        f"the details are recorded under error id {error_id}"
        if error_id
        else "the operator of this service has the details"
    )
    question = f"{what} Answer for the user, retry, or let the run fail? ({where}.)"
    public = {k: v for k, v in pending.items() if k not in ("question", "failure")}
    return {**public, "question": question, "error_id": error_id}


def _response(result: RunResult, workspace: Path | None) -> RunResponse:
    """The public answer: a failure that may quote an exception is recorded under an
    error id and explained without it."""
    usage = result.usage
    explanation, error_id = result.explanation, None
    if _needs_hiding(result.status, result.failure):
        error_id = record_failure(workspace, result.run_id, result.failure, explanation)
        explanation = _public_explanation(result.failure, error_id)
    elif result.status == "paused" and _escalated(result.pending):
        failure = (result.pending or {}).get("failure")
        error_id = record_failure(workspace, result.run_id, failure, (failure or {}).get("what"))
    return RunResponse(
        run_id=result.run_id,
        status=result.status,
        output=result.output,
        explanation=explanation,
        steps=result.steps,
        tools_called=list(result.tools_called),
        usage=UsageOut(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            requests=usage.requests,
        ),
        cost=result.cost,
        latency_ms=result.latency_ms,
        pending=_public_pending(result.pending, error_id),
        error_id=error_id,
    )


def public_state(row: dict[str, Any], error_id: str | None) -> RunState:
    """A trace-store run row as answered to clients: a failure that may quote an
    exception is replaced by a plain explanation naming `error_id` (the error
    record of the run, if the server made one)."""
    state = RunState.model_validate({k: row.get(k) for k in RunState.model_fields})
    if _needs_hiding(state.status, row.get("failure")):
        state.explanation = (
            _public_explanation(row.get("failure"), error_id)
            if error_id
            else "The run failed inside the agent; ask the operator of this service."
        )
        state.error_id = error_id
    state.pending = _public_pending(state.pending, error_id)
    return state


@dataclass(frozen=True)
class _Spent:
    """What a run did before it stopped: its steps, tools called, tokens and cost."""

    steps: int = 0
    tools_called: tuple[str, ...] = ()
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None

    @classmethod
    def of(cls, agent: Agent, run_id: str, run: Run | None) -> "_Spent":
        """From `run`; without it (a resumption that crashed before handing its run
        back), from what the trace recorded of run `run_id`, so nothing is lost."""
        if run is not None:
            tools = tuple(c.name for s in run.steps for c in s.tool_calls)
            return cls(len(run.steps), tools, run.usage, run.cost)
        if agent.tracer is None:
            return cls()
        store = TraceStore(getattr(agent.tracer, "workspace", None))
        try:
            [(steps, tin, tout, calls, cost)] = store.sql(_SPENT, [run_id])
            called = [name for (name,) in store.sql(_TOOLS_CALLED, [run_id])]
        except AgentlabError as exc:  # the failure must still be recorded
            log.warning("run %s: its steps so far could not be read back (%s)", run_id, exc)
            return cls()
        usage = Usage(input_tokens=tin or 0, output_tokens=tout or 0, requests=calls or 0)
        return cls(steps or 0, tuple(called), usage, cost)


_SPENT = """
SELECT max(step), sum(input_tokens), sum(output_tokens), count(*), sum(cost)
FROM model_calls WHERE run_id = ?
"""
_TOOLS_CALLED = "SELECT tool FROM tool_calls WHERE run_id = ? ORDER BY step, started_at"


def mark_failed(
    agent: Agent, run_id: str, run: Run | None, kind: str, explanation: str, error_id: str | None
) -> None:
    """Record run `run_id` as failed (after the run loop recorded it cancelled, or
    never recorded an end): a later ``run_finished`` event wins in the store."""
    _mark_failed(agent, run_id, _Spent.of(agent, run_id, run), kind, explanation, error_id)


def _mark_failed(
    agent: Agent, run_id: str, spent: _Spent, kind: str, explanation: str, error_id: str | None
) -> None:
    tracer = agent.tracer
    if tracer is None:
        return
    tracer.emit(
        RunFinished(
            run_id=run_id,
            status="failed",
            explanation=explanation,
            steps=spent.steps,
            input_tokens=spent.usage.input_tokens,
            output_tokens=spent.usage.output_tokens,
            cost=spent.cost,
            latency_ms=0.0,
            ended_at=time.time(),
            failure={"kind": kind, "what": explanation, "error": error_id, "next": ""},
        )
    )


async def guarded_run(
    agent: Agent,
    work: Awaitable[RunResult],
    *,
    run_id: str,
    run: Run | None = None,
    timeout_s: float | None = None,
    workspace: Path | None = None,
) -> RunResponse:
    """Await `work` (``run.finish()`` or ``agent.resume(run_id, ...)``) within
    `timeout_s`; a run that times out or crashes is marked failed in the trace store
    and answered with its real `run_id` and a plain explanation (a crash: with the
    error id its details are recorded under)."""
    started = time.perf_counter()
    error_id = None
    try:
        async with asyncio.timeout(timeout_s):
            return _response(await work, workspace)
    except ApiError:
        raise
    except TimeoutError:
        kind = "timeout"
        explanation = (
            f"The run took longer than this server's limit of {timeout_s:g} s per run "
            "(run_timeout_s) and was stopped. Ask for something smaller, or ask the "
            "operator to raise the limit."
        )
    except Exception as exc:
        kind = "crash"
        error_id = record_error(workspace, exc, where=f"run {run_id}", run_id=run_id)
        explanation = (
            f"The run crashed. The details are recorded under error id {error_id}: give "
            "it to the operator of this service."
        )
    spent = await asyncio.to_thread(_Spent.of, agent, run_id, run)
    _mark_failed(agent, run_id, spent, kind, explanation, error_id)
    return RunResponse(
        run_id=run_id,
        status="failed",
        output=None,
        explanation=explanation,
        steps=spent.steps,
        tools_called=list(spent.tools_called),
        usage=UsageOut(
            input_tokens=spent.usage.input_tokens,
            output_tokens=spent.usage.output_tokens,
            total_tokens=spent.usage.total_tokens,
            requests=spent.usage.requests,
        ),
        cost=spent.cost,
        latency_ms=(time.perf_counter() - started) * 1000,
        error_id=error_id,
    )


def run_error_id(store: Any, run_id: str) -> str | None:
    """The id of the latest error record of run `run_id` in `store`, if any."""
    rows = store.sql(
        "SELECT id FROM alerts WHERE run_id = ? AND alert = 'server_error' "
        "ORDER BY started_at DESC LIMIT 1",
        [run_id],
    )
    return str(rows[0][0]) if rows else None


def create_agent_app(agent_factory: Callable[[], Agent] | Agent) -> "FastAPI":
    """A FastAPI app that runs the agent `agent_factory()` builds (once, now)."""
    try:
        from fastapi import APIRouter, FastAPI
    except ImportError as e:
        raise MissingExtraError("fastapi", "serve") from e

    agent = agent_factory if isinstance(agent_factory, Agent) else agent_factory()
    app = FastAPI(
        title=f"{agent.name} agent",
        description=f"Runs the {agent.name!r} agent (model {agent.model.name}).",
    )
    router = APIRouter(route_class=strict_json_route())

    def workspace() -> Path | None:
        return getattr(agent.tracer, "workspace", None)

    install_error_handlers(app, workspace())

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the agent is built and the app answers."""
        return {"status": "ok", "agent": agent.name, "model": agent.model.name}

    def trace_store() -> Any:
        from agentlab.tracing import TraceStore

        return TraceStore(workspace())

    def read_state(run_id: str) -> RunState | None:
        store = trace_store()
        row = store.run(run_id)
        if row is None:
            return None
        return public_state(row, run_error_id(store, run_id))

    @router.get("/v1/runs/{run_id}", response_model=RunState)
    async def get_run(run_id: str) -> Any:
        """A run's status, answer or explanation, and what a paused run waits for."""
        state = await asyncio.to_thread(read_state, run_id)
        if state is None:
            raise ApiError(404, f"No run has the id {run_id!r}.")
        return state

    @router.post("/v1/runs/{run_id}/resume", response_model=RunResponse)
    async def resume_run(run_id: str, request: ResumeRequest) -> Any:
        """Resume a paused run with a decision on its pending call, or an interrupted
        run (its process died) with an empty body; then finish it."""
        work = agent.resume(
            run_id, approve=request.approve, note=request.note, answer=request.answer
        )
        return await guarded_run(agent, resumable(work), run_id=run_id, workspace=workspace())

    @router.post("/v1/runs", response_model=RunResponse)
    async def create_run(request: RunRequest) -> RunResponse:
        """Run the agent on `input` until it answers, hits a limit or fails."""
        run = agent.start(request.input, metadata=request.metadata)
        return await guarded_run(agent, run.finish(), run_id=run.id, run=run, workspace=workspace())

    app.include_router(router)
    return app


async def resumable(work: Awaitable[RunResult]) -> RunResult:
    """``agent.resume(...)``: a run that cannot be resumed (unknown, not paused,
    another agent's: found before anything runs) is a 409."""
    try:
        return await work
    except UserError as e:
        raise ApiError(409, str(e)) from None


def serve_app(app: Any, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise MissingExtraError("uvicorn", "serve") from e
    uvicorn.run(app, host=host, port=port, log_level="warning")
