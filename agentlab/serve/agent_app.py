"""Serve one agent over HTTP: ``POST /v1/runs``, ``GET /v1/runs/{id}``,
``POST /v1/runs/{id}/resume`` (a paused run's approval; an interrupted run's recovery),
``GET /healthz``, docs at ``/docs``.

>>> app = create_agent_app(lambda: build_support_agent("local:smollm2"))
>>> serve_app(app, port=8000)  # or: uvicorn mypackage.app:app

A run that fails is still a 200 answer with ``status`` and a plain-language
``explanation``; only a malformed request is an error (422, naming the field).
"""

# No `from __future__ import annotations`: FastAPI must see the real classes of the
# handlers defined inside create_agent_app (fastapi is imported lazily).
import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agentlab.agents import Agent, RunResult
from agentlab.errors import MissingExtraError, UserError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "ResumeRequest",
    "RunRequest",
    "RunResponse",
    "RunState",
    "UsageOut",
    "create_agent_app",
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


def _response(result: RunResult) -> RunResponse:
    usage = result.usage
    return RunResponse(
        run_id=result.run_id,
        status=result.status,
        output=result.output,
        explanation=result.explanation,
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
        pending=result.pending,
    )


def _failed(error: Exception, started: float) -> RunResponse:
    return RunResponse(
        run_id=os.urandom(16).hex(),
        status="failed",
        output=None,
        explanation=f"The run could not start or crashed: {type(error).__name__}: {error}",
        steps=0,
        tools_called=[],
        usage=UsageOut(input_tokens=0, output_tokens=0, total_tokens=0, requests=0),
        cost=None,
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def _field_errors(errors: Any) -> str:
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_agent_app(agent_factory: Callable[[], Agent] | Agent) -> "FastAPI":
    """A FastAPI app that runs the agent `agent_factory()` builds (once, now)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
    except ImportError as e:
        raise MissingExtraError("fastapi", "serve") from e

    agent = agent_factory if isinstance(agent_factory, Agent) else agent_factory()
    app = FastAPI(
        title=f"{agent.name} agent",
        description=f"Runs the {agent.name!r} agent (model {agent.model.name}).",
    )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Any:
        message = (
            "Invalid request: " + _field_errors(exc.errors()) + ". Send a JSON object like "
            '{"input": "your question", "metadata": {}}.'
        )
        return JSONResponse(
            status_code=422,
            content={"error": {"message": message, "type": "invalid_request_error"}},
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the agent is built and the app answers."""
        return {"status": "ok", "agent": agent.name, "model": agent.model.name}

    def trace_store() -> Any:
        from agentlab.tracing import TraceStore

        return TraceStore(getattr(agent.tracer, "workspace", None))

    @app.get("/v1/runs/{run_id}", response_model=RunState)
    async def get_run(run_id: str) -> Any:
        """A run's status, answer or explanation, and what a paused run waits for."""
        row = await asyncio.to_thread(trace_store().run, run_id)
        if row is None:
            return JSONResponse(
                status_code=404,
                content={"error": {"message": f"no run {run_id!r}", "type": "not_found"}},
            )
        return RunState(**{k: row.get(k) for k in RunState.model_fields})

    @app.post("/v1/runs/{run_id}/resume", response_model=RunResponse)
    async def resume_run(run_id: str, request: ResumeRequest) -> Any:
        """Resume a paused run with a decision on its pending call, or an interrupted
        run (its process died) with an empty body; then finish it."""
        started = time.perf_counter()
        try:
            result = await agent.resume(
                run_id, approve=request.approve, note=request.note, answer=request.answer
            )
        except UserError as e:  # unknown, not paused, another agent's
            return JSONResponse(
                status_code=409, content={"error": {"message": str(e), "type": "conflict"}}
            )
        except Exception as e:
            return _failed(e, started)
        return _response(result)

    @app.post("/v1/runs", response_model=RunResponse)
    async def create_run(request: RunRequest) -> RunResponse:
        """Run the agent on `input` until it answers, hits a limit or fails."""
        started = time.perf_counter()
        try:
            result = await agent.run(request.input, metadata=request.metadata)
        except Exception as e:  # the run loop explains most failures itself
            return _failed(e, started)
        return _response(result)

    return app


def serve_app(app: Any, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise MissingExtraError("uvicorn", "serve") from e
    uvicorn.run(app, host=host, port=port, log_level="warning")
