"""Async runs for long work: ``"async": true`` answers 202 at once, the run goes on in
a background task of the worker, and ``GET /v1/runs/{run_id}/events`` streams its
steps as server-sent events.

* :class:`BackgroundRuns` keeps every background run's task (none is garbage
  collected mid-run). The task does what a synchronous request does: it holds its
  run slot and its quota admission until the run ends, with the same timeout and
  crash handling (:func:`~agentlab.serve.agent_app.guarded_run`). Admission
  failures (503, 429) still answer the request itself. At shutdown
  (:meth:`BackgroundRuns.aclose`) the tasks are cancelled and their runs marked
  failed in the trace store with an explanation, never left ``running``.
* Usage: the 202 request is recorded like any other (its run id, no tokens yet);
  when the run ends, one more record under the route :data:`ASYNC_END_ROUTE`
  carries its tokens, cost and duration (status 200, or 503 when a shutdown stopped
  it), so cost per client adds up to what the runs spent; the usage report counts
  the two records as one request.
* Events are read from the trace store, polled every :data:`POLL_S` seconds: a
  stream works on any worker of the machine, whichever runs the run, and replays a
  finished run. Event ``step`` is sent once a step is complete (the next step began,
  or the run stopped): its number, the model's reply (text, tool calls), tokens,
  cost and the tool calls made with their status. The stream ends with ``end``
  (what ``GET /v1/runs/{run_id}`` answers) or ``paused`` (the same, with what it
  waits for); ``timeout`` when the run is still running past the server's run
  limit (its worker may have stopped). A ``: ping`` comment every 15 s keeps
  proxies from closing an idle stream. With Redis, a run paused or resumed through
  another gateway machine ends its stream with the state that machine shared
  (:mod:`~agentlab.serve.gateway.paused_runs`): the steps this machine's trace store
  holds (none for a run it never saw), then ``paused`` or ``end``.
"""

# No `from __future__ import annotations`: FastAPI must see the real classes of the
# handlers defined in add_event_routes (fastapi is imported lazily).
import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from agentlab.agents import Run
from agentlab.errors import MissingExtraError
from agentlab.serve.agent_app import RunResponse, UsageOut, mark_failed
from agentlab.serve.gateway.keys import ApiKey
from agentlab.serve.gateway.paused_runs import RunView
from agentlab.serve.gateway.usage import record_request
from agentlab.tracing import TraceStore
from agentlab.tracing.gateway_requests import ASYNC_END_ROUTE

if TYPE_CHECKING:
    from fastapi.responses import JSONResponse

__all__ = [
    "ASYNC_END_ROUTE",
    "POLL_S",
    "AcceptedRun",
    "BackgroundRuns",
    "RunLinks",
    "add_event_routes",
    "run_events",
]

log = logging.getLogger("agentlab.gateway")

POLL_S = 0.2
"""How often an event stream reads the trace store for new steps (seconds)."""
SHUTDOWN_EXPLANATION = (
    "The gateway shut down while this run was running, and the run was stopped. Start it again."
)

Started = Callable[[Run, dict[str, str]], None]
"""Called by the run's work once the run started: the run and the quota headers."""
Execute = Callable[[Started], Awaitable[tuple[RunResponse, Any]]]
"""A run's whole work (slot, admission, run, settle): the app's ``execute``."""


class RunLinks(BaseModel):
    self: str
    events: str


class AcceptedRun(BaseModel):
    """An async run, accepted: follow ``links``."""

    run_id: str
    status: str
    agent: str
    version: str
    links: RunLinks


class BackgroundRuns:
    """The async runs of one worker, each a task kept here until it ends."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.tasks: set[asyncio.Task[None]] = set()

    async def launch(
        self, execute: Execute, *, request: Any, key: ApiKey, agent: str, version: str
    ) -> "JSONResponse":
        """Start `execute` in the background; answer 202 once its run started (or
        raise what stopped it before: no slot, over quota)."""
        from fastapi.responses import JSONResponse

        loop = asyncio.get_running_loop()
        started: asyncio.Future[tuple[Run, dict[str, str]]] = loop.create_future()

        def on_start(run: Run, headers: dict[str, str]) -> None:
            started.set_result((run, headers))

        task = loop.create_task(
            self._carry(execute, on_start, started, key=key, agent=agent, version=version)
        )
        self.tasks.add(task)
        task.add_done_callback(self._ended)
        first: set[asyncio.Future[Any]] = {started, task}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            task.result()  # raises the refusal (ApiError)
            raise RuntimeError("an async run ended without starting")  # pragma: no cover
        run, headers = started.result()
        request.state.run = _accepted_response(run.id)
        body = AcceptedRun(
            run_id=run.id,
            status="running",
            agent=agent,
            version=version,
            links=RunLinks(self=f"/v1/runs/{run.id}", events=f"/v1/runs/{run.id}/events"),
        )
        return JSONResponse(
            body.model_dump(mode="json"),
            status_code=202,
            headers={**headers, "Location": body.links.self},
        )

    async def _carry(
        self,
        execute: Execute,
        on_start: Started,
        started: "asyncio.Future[tuple[Run, dict[str, str]]]",
        *,
        key: ApiKey,
        agent: str,
        version: str,
    ) -> None:
        began, clock = time.time(), time.perf_counter()
        status, response = 200, None
        try:
            response, _ = await execute(on_start)
        except asyncio.CancelledError:
            run = started.result()[0] if started.done() else None
            # stopped by this cancellation (the run loop recorded it cancelled), not a run
            # that had ended on its own and was settling its quota: that one keeps its end
            if run is not None and (not run.done or run.status == "cancelled"):
                mark_failed(run.agent, run.id, run, "cancelled", SHUTDOWN_EXPLANATION, None)
                status = 503
            raise
        finally:
            if started.done():  # a run that started: its usage, however it ended
                run = started.result()[0]
                record_request(
                    self.workspace,
                    time=began,
                    key_id=key.id,
                    owner=key.owner,
                    agent=agent,
                    version=version,
                    route=ASYNC_END_ROUTE,
                    status_code=status,
                    run_id=run.id,
                    input_tokens=run.usage.input_tokens,
                    output_tokens=run.usage.output_tokens,
                    cost=run.cost,
                    latency_ms=(time.perf_counter() - clock) * 1000,
                    error_id=response.error_id if response else None,
                )

    def _ended(self, task: "asyncio.Task[None]") -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not _is_refusal(exc):
                log.error("an async run's task failed: %r", exc)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Cancel every background run (its run is marked failed) and wait for the
        tasks to finish, at most `timeout_s`."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


def _is_refusal(exc: BaseException | None) -> bool:
    from agentlab.serve.gateway.errors import ApiError

    return isinstance(exc, ApiError)


def _accepted_response(run_id: str) -> RunResponse:
    """What the usage record of the 202 request reads: the run id, no tokens yet."""
    return RunResponse(
        run_id=run_id,
        status="running",
        output=None,
        explanation=None,
        steps=0,
        tools_called=[],
        usage=UsageOut(input_tokens=0, output_tokens=0, total_tokens=0, requests=0),
        cost=None,
        latency_ms=0.0,
    )


# -- events ------------------------------------------------------------------------------

_MODEL_CALLS = """
SELECT step, CAST(response AS VARCHAR), status, input_tokens, output_tokens, cost
FROM model_calls WHERE run_id = ? AND step > ? ORDER BY step, started_at
"""
_TOOL_CALLS = """
SELECT step, tool, status, call_id FROM tool_calls WHERE run_id = ? AND step > ?
ORDER BY step, started_at
"""


def _steps_after(store: TraceStore, run_id: str, after: int) -> list[dict[str, Any]]:
    """The recorded steps of run `run_id` numbered above `after`, in order."""
    with store.connect() as con:
        models = con.execute(_MODEL_CALLS, [run_id, after]).fetchall()
        tools = con.execute(_TOOL_CALLS, [run_id, after]).fetchall()
    steps: dict[int, dict[str, Any]] = {}
    for step, response, status, tokens_in, tokens_out, cost in models:
        entry = steps.setdefault(step, _empty_step(step))
        reply = json.loads(response) if response else {}
        entry["reply"] = {
            "text": reply.get("content"),
            "tool_calls": [
                {"name": c.get("name"), "arguments": c.get("arguments")}
                for c in reply.get("tool_calls") or ()
            ],
        }
        entry["model_status"] = status
        entry["input_tokens"] += tokens_in or 0
        entry["output_tokens"] += tokens_out or 0
        entry["cost"] = (entry["cost"] or 0.0) + cost if cost is not None else entry["cost"]
    for step, tool, status, call_id in tools:
        entry = steps.setdefault(step, _empty_step(step))
        entry["tool_calls"].append({"name": tool, "status": status, "call_id": call_id})
    return [steps[n] for n in sorted(steps)]


def _empty_step(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "reply": None,
        "model_status": None,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost": None,
        "tool_calls": [],
    }


ReadRun = Callable[[str], Awaitable[RunView | None]]
"""The app's reader of a run: from this machine's trace store, or the state another
gateway machine shared (:mod:`~agentlab.serve.gateway.paused_runs`)."""


async def run_events(
    store: TraceStore, run_id: str, read_run: ReadRun, *, timeout_s: float
) -> AsyncIterator[dict[str, str]]:
    """Server-sent events of run `run_id` (see the module docstring), as dicts of
    ``event`` and ``data`` (JSON) for ``EventSourceResponse``; gives up waiting
    after `timeout_s`."""
    sent = 0
    deadline = time.monotonic() + timeout_s
    while True:
        view = await read_run(run_id)
        if view is None:  # pruned meanwhile
            return
        status = view.status
        steps = await asyncio.to_thread(_steps_after, store, run_id, sent)
        if status == "running" and steps:
            steps = steps[:-1]  # the last one may still be making its tool calls
        for step in steps:
            sent = step["step"]
            yield {"event": "step", "data": json.dumps(step)}
        if status != "running":
            state = view.state.model_dump(mode="json")
            state.update(
                input_tokens=view.row.get("input_tokens"),
                output_tokens=view.row.get("output_tokens"),
                cost=view.row.get("cost"),
            )
            yield {"event": "paused" if status == "paused" else "end", "data": json.dumps(state)}
            return
        if time.monotonic() > deadline:
            note = (
                f"The run is still running after {timeout_s:g} s, this server's limit per "
                "run; its worker may have stopped. Ask GET /v1/runs/{id} later."
            )
            yield {"event": "timeout", "data": json.dumps({"run_id": run_id, "message": note})}
            return
        await asyncio.sleep(POLL_S)


def add_event_routes(
    router: Any,
    authenticated: Any,
    visible_run: Callable[[str, ApiKey], Awaitable[Any]],
    read_run: ReadRun,
    workspace: Path,
    run_timeout_s: float,
) -> None:
    """Add ``GET /v1/runs/{run_id}/events`` to `router`: the run's events, to the
    keys that may see the run (`visible_run` raises 404 otherwise)."""
    try:
        from sse_starlette import EventSourceResponse
    except ImportError as e:
        raise MissingExtraError("sse-starlette", "serve") from e

    store = TraceStore(workspace)

    @router.get(
        "/v1/runs/{run_id}/events",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def run_events_route(run_id: str, key: ApiKey = authenticated) -> Any:
        """Server-sent events of your run: ``step`` per completed step, then ``end``
        (its outcome) or ``paused`` (what it waits for)."""
        await visible_run(run_id, key)
        events = run_events(store, run_id, read_run, timeout_s=run_timeout_s + 5.0)
        return EventSourceResponse(events, ping=15)
