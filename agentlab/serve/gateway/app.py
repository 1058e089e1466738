"""The gateway app: configured agents behind API keys, quotas and request hygiene.

>>> app = create_gateway_app("gateway.yaml")   # or `agentlab serve gateway.yaml`

Routes: ``POST /v1/agents/{agent}/runs``, ``GET /v1/runs/{run_id}``,
``GET /v1/runs/{run_id}/events`` (server-sent events; ``"async": true`` runs in the
background: :mod:`~agentlab.serve.gateway.async_runs`),
``POST /v1/runs/{run_id}/resume``, ``GET /healthz`` (no key) and, with the ``admin``
scope, ``GET``/``POST /v1/admin/keys`` and ``DELETE /v1/admin/keys/{key_id}``, and
the weights, flags and audit routes of :mod:`~agentlab.serve.gateway.routing`
(which also chooses each request's agent version: A/B weights, flags, breakers).

A run request passes, in order: the body limit (413), the API key (401), the
scope (403), the agent (404), strict JSON and the fields (422), the input length
(413), a run slot of this worker (503), the key's and the agent's quotas (429);
then the run, within ``run_timeout_s``. Every request but ``/healthz`` is
recorded in the trace store (:func:`~agentlab.serve.gateway.usage.record_request`).
Each worker builds every configured agent version once, when the app is made.
"""

# No `from __future__ import annotations`: FastAPI must see the real classes of the
# handlers defined inside create_gateway_app (fastapi is imported lazily).
import asyncio
import gc
import importlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agentlab.agents import Agent
from agentlab.errors import MissingExtraError, UserError
from agentlab.serve.agent_app import (
    ResumeRequest,
    RunResponse,
    RunState,
    guarded_run,
    resumable,
    run_error_id,
)
from agentlab.serve.gateway.async_runs import AcceptedRun, BackgroundRuns, add_event_routes
from agentlab.serve.gateway.auth import Authenticator, require
from agentlab.serve.gateway.config import CONFIG_ENV, ConfigError, GatewayConfig, load_config
from agentlab.serve.gateway.errors import ERROR_RESPONSES, ApiError, install_error_handlers
from agentlab.serve.gateway.hygiene import (
    BodyLimitMiddleware,
    RunSlots,
    check_input,
    strict_json_route,
)
from agentlab.serve.gateway.keys import ApiKey, UnknownKeyError, open_key_store
from agentlab.serve.gateway.metrics import metrics_response, observe_request, run_in_flight
from agentlab.serve.gateway.paused_runs import META_KEY, PausedRuns, RunView
from agentlab.serve.gateway.quotas import Admission, Limits, QuotaExceeded, Quotas
from agentlab.serve.gateway.routing import Routing, add_admin_routes
from agentlab.serve.gateway.usage import record_request
from agentlab.tracing import TraceStore
from agentlab.tracing.otel import configure_otel
from agentlab.workspace import resolve_workspace

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GatewayRunRequest", "GatewayRunResponse", "NewKeyRequest", "create_gateway_app"]


class GatewayRunRequest(BaseModel):
    """A run of an agent on one input."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="The user's message.")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Recorded with the run in the trace store."
    )
    user: str | None = Field(
        default=None, max_length=200, description="Your end user's id (recorded with the run)."
    )
    async_: bool = Field(
        default=False,
        alias="async",
        description="Answer 202 at once and run in the background: follow its links.",
    )


class GatewayRunResponse(RunResponse):
    """The run, and which agent version served it."""

    agent: str
    version: str


class NewKeyRequest(BaseModel):
    """An API key to create."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, description="The client the key belongs to.")
    scopes: list[str] = Field(min_length=1, description="e.g. ['agents:*'], ['admin'].")
    groups: list[str] = Field(default_factory=list, description="Feature-flag groups.")
    limits: Limits = Field(default_factory=Limits)


class NewKeyResponse(BaseModel):
    key: str = Field(description="The API key: shown this once, never stored.")
    record: ApiKey


def _build(spec: str, agent: str, version: str) -> Agent:
    module, _, name = spec.partition(":")
    try:
        built = getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"agents.{agent} version {version!r}: cannot import {spec!r} ({exc}); install "
            "the exported package in this environment, or fix 'package'/'factory'"
        ) from None
    if not isinstance(built, Agent):
        raise ConfigError(
            f"agents.{agent} version {version!r}: {spec}() returned {type(built).__name__}, "
            "not an agentlab Agent"
        )
    return built


def _key_limits(key: ApiKey, defaults: Limits) -> Limits:
    """The key's own limits; the config's defaults where it sets none."""
    own = key.limits.model_dump()
    return Limits(**{k: v if v is not None else getattr(defaults, k) for k, v in own.items()})


def _owned(key: ApiKey, row: dict[str, Any] | None) -> bool:
    """Whether `key` may see and resume the run `row`."""
    if row is None:
        return False
    if key.allows("runs:read"):
        return True
    meta = (row.get("metadata") or {}).get(META_KEY) or {}
    return meta.get("owner") == key.owner and key.allows(f"agents:{meta.get('agent')}")


_REJECTIONS = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}
"""The reason label of ``agentlab_gateway_rejections_total`` per status code."""


class _Usage:
    """Pure ASGI middleware recording every request (but ``/healthz``) with
    :func:`record_request`, from what the handlers put in ``scope["state"]``."""

    def __init__(self, app: "ASGIApp", workspace: Path) -> None:
        self.app = app
        self.workspace = workspace

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        arrived, started = time.time(), time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        async def tracked(message: "Message") -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            key: ApiKey | None = state.get("key")
            run: RunResponse | None = state.get("run")
            route = scope.get("route")
            record_request(
                self.workspace,
                time=arrived,
                key_id=key.id if key else None,
                owner=key.owner if key else None,
                agent=state.get("agent"),
                version=state.get("version"),
                route=getattr(route, "path", "(no route)"),
                status_code=status,
                run_id=run.run_id if run else None,
                input_tokens=run.usage.input_tokens if run else None,
                output_tokens=run.usage.output_tokens if run else None,
                cost=run.cost if run else None,
                latency_ms=(time.perf_counter() - started) * 1000,
                error_id=state.get("error_id") or (run.error_id if run else None),
            )
            observe_request(
                status=status,
                agent=state.get("agent"),
                version=state.get("version"),
                owner=key.owner if key else None,
                latency_s=time.perf_counter() - started,
                input_tokens=run.usage.input_tokens if run else 0,
                output_tokens=run.usage.output_tokens if run else 0,
                cost=run.cost if run else None,
                rejected=_REJECTIONS.get(status, "other" if status >= 400 else None),
            )


def create_gateway_app(config: GatewayConfig | str | os.PathLike[str] | None = None) -> "FastAPI":
    """The gateway app for `config` (a loaded config or its path; None: the path in
    ``$AGENTLAB_GATEWAY_CONFIG``, as ``agentlab serve`` sets it for its workers)."""
    try:
        from fastapi import APIRouter, Depends, FastAPI, Request
        from fastapi.responses import JSONResponse
    except ImportError as e:
        raise MissingExtraError("fastapi", "serve") from e

    if config is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(f"no gateway config: pass one, or set {CONFIG_ENV} to its path")
        config = path
    if not isinstance(config, GatewayConfig):
        config = load_config(config)
    cfg = config
    workspace = resolve_workspace(cfg.workspace)
    agents: dict[str, dict[str, Agent]] = {}
    for name, agent_cfg in cfg.agents.items():
        agents[name] = {}
        for v in agent_cfg.versions:
            built = agents[name][v.version] = _build(v.spec, name, v.version)
            if built.trace is True:  # the default workspace: record in the gateway's
                built.trace = workspace
    otel = configure_otel(cfg.otlp_endpoint, "agentlab-gateway")
    for versions in agents.values():
        for built in versions.values():
            otel.attach(built)
    keys = open_key_store(workspace, cfg.redis_url)
    quotas = Quotas(cfg.quota_storage)
    slots = RunSlots(
        cfg.hygiene.max_concurrent_runs,
        queue=cfg.hygiene.queue,
        queue_timeout_s=cfg.hygiene.queue_timeout_s,
    )
    authenticator = Authenticator(keys, cache_ttl_s=cfg.shared_state_ttl_s)
    authenticated = Depends(authenticator)
    routing = Routing(cfg, workspace, agents)
    background = BackgroundRuns(workspace)
    shared = (  # paused runs and resumed runs' states, on Redis for every machine
        PausedRuns(cfg.redis_url, workspace, ttl_s=cfg.paused_run_ttl_s) if cfg.redis_url else None
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # What the worker has built so far lives as long as the worker: moved out of
        # the collector's sight, a full collection no longer walks it, which took
        # p99 latency under load from 64 to 35 ms (benchmarks/gateway.py).
        gc.collect()
        gc.freeze()
        yield
        await background.aclose()
        await quotas.aclose()
        if shared is not None:
            await shared.aclose()
        otel.shutdown()

    app = FastAPI(
        title="agentlab gateway",
        description="Agents behind API keys, quotas and request hygiene.",
        lifespan=lifespan,
    )
    install_error_handlers(app, workspace)
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.hygiene.max_body_bytes)
    app.add_middleware(_Usage, workspace=workspace)
    router = APIRouter(
        route_class=strict_json_route(authenticator.guard), responses=ERROR_RESPONSES
    )

    async def admitted(key: ApiKey, agent: str, built: Agent) -> Admission:
        try:
            return await quotas.admit(
                key_id=key.id,
                agent=agent,
                key_limits=_key_limits(key, cfg.default_key_limits),
                agent_limits=cfg.agents[agent].limits,
                reserve_cost=built.budget.cost or cfg.reserve_cost_per_run,
                reserve_tokens=built.budget.tokens or cfg.reserve_tokens_per_run,
            )
        except QuotaExceeded as exc:
            raise ApiError(429, exc.message, headers=exc.headers) from None

    def answer(request: Any, response: RunResponse, agent: str, version: str, headers: Any) -> Any:
        request.state.run = response
        body = GatewayRunResponse(**response.model_dump(), agent=agent, version=version)
        return JSONResponse(body.model_dump(mode="json"), headers=headers)

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: every configured agent version is built and the app answers."""
        return {"status": "ok", "agents": {n: sorted(v) for n, v in agents.items()}}

    @router.post(
        "/v1/agents/{agent}/runs",
        response_model=GatewayRunResponse,
        responses={202: {"model": AcceptedRun, "description": "An async run, accepted."}},
    )
    async def create_run(
        agent: str, body: GatewayRunRequest, request: Request, key: ApiKey = authenticated
    ) -> Any:
        """Run `agent` on `input` until it answers, hits a limit or fails."""
        require(key, f"agents:{agent}")
        if agent not in cfg.agents:
            raise ApiError(404, f"This gateway serves no agent named {agent!r}.")
        check_input(body.input, cfg.hygiene.max_input_chars)
        if body.metadata and META_KEY in body.metadata:
            raise ApiError(422, f"metadata.{META_KEY} is reserved for the gateway; rename it.")
        await routing.state.fresh()  # weights, flags: read off the event loop
        choice, built = routing.choose(agent, key=key, user=body.user)
        version = choice.version
        request.state.agent, request.state.version = agent, version

        async def execute(started: Any = lambda run, headers: None) -> tuple[Any, Admission]:
            async with slots.slot():
                admission = await admitted(key, agent, built)
                run = response = None
                routed = {"version": version, "assigned": choice.assigned}
                gateway = {"key_id": key.id, "owner": key.owner, "agent": agent, **routed}
                try:
                    metadata = {**(body.metadata or {}), META_KEY: gateway}
                    run = built.start(body.input, user=body.user, metadata=metadata)
                    started(run, admission.headers)
                    with run_in_flight():
                        response = await guarded_run(
                            built,
                            run.finish(),
                            run_id=run.id,
                            run=run,
                            timeout_s=cfg.hygiene.run_timeout_s,
                            workspace=workspace,
                        )
                finally:
                    routing.settle(agent, choice, response.status if response else None)
                    used = run.usage.total_tokens if run is not None else 0
                    # shielded: a shutdown that cancels an async run mid-way still settles
                    settled = quotas.settle(admission, cost=(run and run.cost) or 0.0, tokens=used)
                    await asyncio.shield(settled)
            if shared is not None and response.status == "paused":  # no round trip otherwise
                await shared.publish(response, gateway, generation=0)
            return response, admission

        if body.async_:  # 202 now; the run goes on in the background
            return await background.launch(
                execute, request=request, key=key, agent=agent, version=version
            )
        response, admission = await execute()
        return answer(request, response, agent, version, admission.headers)

    def read_local(run_id: str) -> RunView | None:
        store = TraceStore(workspace)
        row = store.run(run_id)
        if row is None:
            return None
        failed = row.get("status") == "failed"
        return RunView.of_row(row, run_error_id(store, run_id) if failed else None)

    async def read_run(run_id: str) -> RunView | None:
        """The run from this machine's trace store; from Redis when the store has
        it paused (it may have been resumed elsewhere) or not at all."""
        view = await asyncio.to_thread(read_local, run_id)
        if shared is not None and (view is None or view.status == "paused"):
            return await shared.view(run_id) or view
        return view

    async def visible_run(run_id: str, key: ApiKey) -> RunView:
        view = await read_run(run_id)
        if view is None or not _owned(key, view.row):  # another client's run: as if unknown
            raise ApiError(404, f"No run has the id {run_id!r} for this API key.")
        return view

    @router.get("/metrics", include_in_schema=False)
    async def metrics(key: ApiKey = authenticated) -> Any:
        """Prometheus metrics of every worker (scope ``metrics``)."""
        require(key, "metrics")
        return metrics_response()

    @router.get("/v1/runs/{run_id}", response_model=RunState)
    async def get_run(run_id: str, key: ApiKey = authenticated) -> Any:
        """A run's status, answer or explanation, and what a paused run waits for
        (your own runs; any run with the ``runs:read`` scope)."""
        return (await visible_run(run_id, key)).state

    @router.post("/v1/runs/{run_id}/resume", response_model=GatewayRunResponse)
    async def resume_run(
        run_id: str, body: ResumeRequest, request: Request, key: ApiKey = authenticated
    ) -> Any:
        """Resume your paused run with a decision on its pending call, or an
        interrupted one with an empty body; then finish it."""
        view = await visible_run(run_id, key)
        row, meta = view.row, view.gateway
        agent, version = meta.get("agent"), meta.get("version")
        built = agents.get(agent or "", {}).get(version or "")
        if agent is None or version is None or built is None:
            raise ApiError(
                409,
                f"Run {run_id} was not started through this gateway's agents: resume it "
                "where it was started.",
            )
        require(key, f"agents:{agent}")
        await routing.state.fresh()
        built = routing.agent_for(agent, version, key=key, user=None)
        request.state.agent, request.state.version = agent, version
        # a run paused here or elsewhere: taken from Redis, so only one resumption goes on
        claim = None
        if shared is not None and (view.shared or view.status == "paused"):
            claim = await shared.claim(run_id, view)
        try:
            async with slots.slot():
                admission = await admitted(key, agent, built)
                response = None
                try:
                    work = built.resume(
                        run_id, approve=body.approve, note=body.note, answer=body.answer
                    )
                    response = await guarded_run(
                        built,
                        resumable(work),
                        run_id=run_id,
                        timeout_s=cfg.hygiene.run_timeout_s,
                        workspace=workspace,
                    )
                finally:  # charge what this resumption added to the run
                    cost = (response.cost or 0.0) - (row.get("cost") or 0.0) if response else 0.0
                    tokens = (
                        response.usage.total_tokens
                        - (row.get("input_tokens") or 0)
                        - (row.get("output_tokens") or 0)
                        if response
                        else 0
                    )
                    await quotas.settle(admission, cost=max(cost, 0.0), tokens=max(tokens, 0))
        except ApiError:  # refused before it ran (503, 429, 409): it waits again
            if shared is not None and claim is not None:
                await shared.put_back(claim)
            raise
        if shared is not None:  # its end, for every machine (paused: resumable anywhere)
            generation = claim.generation if claim is not None else None
            await shared.publish(response, meta, generation=generation)
        return answer(request, response, agent, version, admission.headers)

    @router.get("/v1/admin/keys", response_model=list[ApiKey])
    async def list_keys(key: ApiKey = authenticated) -> Any:
        """Every API key (never a secret), revoked ones included."""
        require(key, "admin")
        return await asyncio.to_thread(keys.list)

    @router.post("/v1/admin/keys", response_model=NewKeyResponse, status_code=201)
    async def create_key(body: NewKeyRequest, key: ApiKey = authenticated) -> Any:
        """Create an API key; the answer shows it once."""
        require(key, "admin")
        try:
            record, plaintext = await asyncio.to_thread(
                keys.create, body.owner, body.scopes, groups=body.groups, limits=body.limits
            )
        except UserError as exc:
            raise ApiError(422, str(exc)) from None
        return NewKeyResponse(key=plaintext, record=record)

    @router.delete("/v1/admin/keys/{key_id}", response_model=ApiKey)
    async def revoke_key(key_id: str, key: ApiKey = authenticated) -> Any:
        """Revoke an API key: this worker refuses it from the next request on, the
        others within ``shared_state_ttl_s``."""
        require(key, "admin")
        try:
            revoked = await asyncio.to_thread(keys.revoke, key_id)
        except UnknownKeyError as exc:
            raise ApiError(404, str(exc)) from None
        authenticator.forget()
        return revoked

    add_admin_routes(router, routing, authenticated)
    add_event_routes(
        router, authenticated, visible_run, read_run, workspace, cfg.hygiene.run_timeout_s
    )
    app.include_router(router)
    return app
