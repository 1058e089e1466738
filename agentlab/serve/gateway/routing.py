"""Which version of an agent serves a request, and the admin routes that steer it.

:class:`Routing` puts together A/B weights (:mod:`.ab`), feature flags
(:mod:`.flags`), breakers per version (:mod:`.version_breakers`) and the shared
state they live in (:mod:`.shared_state`) for the app: :meth:`Routing.choose`
before a run, :meth:`Routing.settle` after it. :func:`add_admin_routes` adds
``GET``/``PUT /v1/admin/agents/{agent}/weights``, ``GET /v1/admin/flags``,
``GET``/``PUT``/``DELETE /v1/admin/flags/{name}`` and ``GET /v1/admin/audit`` (all
with the ``admin`` scope). Every change is audited with the key's owner.
"""

# No `from __future__ import annotations`: FastAPI must see the real classes of the
# handlers defined in add_admin_routes (fastapi is imported lazily).
import asyncio
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlab.agents import Agent
from agentlab.errors import UserError
from agentlab.serve.gateway.ab import Choice, NoVersionAvailable, Router
from agentlab.serve.gateway.auth import require
from agentlab.serve.gateway.config import GatewayConfig
from agentlab.serve.gateway.errors import ApiError
from agentlab.serve.gateway.flags import Flag, Flags, ToolVariants, UnknownFlagError
from agentlab.serve.gateway.keys import ApiKey
from agentlab.serve.gateway.shared_state import AuditEntry, open_shared_state
from agentlab.serve.gateway.version_breakers import VersionBreakers, counts_as_failure

__all__ = ["Routing", "WeightsBody", "add_admin_routes"]


class WeightsBody(BaseModel):
    """An agent's version weights (every version, each >= 0, one above 0)."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(min_length=1, description='e.g. {"1": 90, "2": 10}')


class WeightsView(WeightsBody):
    agent: str
    overridden: bool = Field(description="Whether runtime weights replace the config's.")


class Routing:
    """Version choice for the gateway app (see the module docstring)."""

    def __init__(
        self, cfg: GatewayConfig, workspace: Path, agents: Mapping[str, Mapping[str, Agent]]
    ) -> None:
        self.state = open_shared_state(workspace, cfg.redis_url, ttl_s=cfg.shared_state_ttl_s)
        self.flags = Flags(self.state)
        self.breakers = VersionBreakers.open(
            cfg.version_breaker, cfg.redis_url, closed_ttl_s=cfg.shared_state_ttl_s
        )
        self.router = Router(cfg.agents, self.state, flags=self.flags, breakers=self.breakers)
        self.agents = agents
        self._variants = ToolVariants()

    def choose(self, agent: str, *, key: ApiKey, user: str | None) -> tuple[Choice, Agent]:
        """The version for this request and its agent (without the tools flags switch
        off for it); 503 when every version is out of rotation."""
        try:
            choice = self.router.choose(agent, key=key, user=user)
        except NoVersionAvailable as exc:
            retry = str(max(1, math.ceil(self.breakers.config.cooldown_s)))
            raise ApiError(503, str(exc), headers={"Retry-After": retry}) from None
        return choice, self.agent_for(agent, choice.version, key=key, user=user)

    def agent_for(self, agent: str, version: str, *, key: ApiKey, user: str | None) -> Agent:
        """`agent`'s `version` without the tools flags switch off for this request."""
        off = self.flags.tools_off(agent, version, key, user)
        return self._variants.without(self.agents[agent][version], off)

    def settle(
        self, agent: str, choice: Choice, status: str | None, http_status: int = 200
    ) -> None:
        """Report the run's outcome to its version's breaker (`status` None: no run)."""
        if choice.ticket is not None:
            failed = status is None or counts_as_failure(status, http_status)
            self.breakers.record(
                agent, choice.version, choice.ticket, failed=failed, error=f"run {status}"
            )


def add_admin_routes(router: Any, routing: Routing, authenticated: Any) -> None:
    """Add the weights, flags and audit admin routes to `router` (an APIRouter)."""

    def known(agent: str) -> None:
        if agent not in routing.router.agents:
            raise ApiError(404, f"This gateway serves no agent named {agent!r}.")

    def weights_view(agent: str) -> WeightsView:
        overridden = routing.state.get(f"weights/{agent}") is not None
        return WeightsView(
            agent=agent, weights=routing.router.weights(agent), overridden=overridden
        )

    @router.get("/v1/admin/agents/{agent}/weights", response_model=WeightsView)
    async def get_weights(agent: str, key: ApiKey = authenticated) -> Any:
        """The weights `agent`'s versions are routed by now."""
        require(key, "admin")
        known(agent)
        return await asyncio.to_thread(weights_view, agent)

    @router.put("/v1/admin/agents/{agent}/weights", response_model=WeightsView)
    async def put_weights(agent: str, body: WeightsBody, key: ApiKey = authenticated) -> Any:
        """Route `agent` by new weights, on every worker within a second, until changed
        again (audited)."""
        require(key, "admin")
        known(agent)
        try:
            await asyncio.to_thread(routing.router.set_weights, agent, body.weights, who=key.owner)
        except UserError as exc:
            raise ApiError(422, str(exc)) from None
        return await asyncio.to_thread(weights_view, agent)

    @router.get("/v1/admin/flags", response_model=dict[str, Flag])
    async def list_flags(key: ApiKey = authenticated) -> Any:
        """Every feature flag by name."""
        require(key, "admin")
        return await asyncio.to_thread(routing.flags.all)

    @router.get("/v1/admin/flags/{name}", response_model=Flag)
    async def get_flag(name: str, key: ApiKey = authenticated) -> Any:
        """One feature flag."""
        require(key, "admin")
        try:
            return await asyncio.to_thread(routing.flags.get, name)
        except UnknownFlagError as exc:
            raise ApiError(404, str(exc)) from None

    @router.put("/v1/admin/flags/{name}", response_model=Flag)
    async def put_flag(name: str, body: Flag, key: ApiKey = authenticated) -> Any:
        """Create or change a feature flag (takes effect within a second; audited)."""
        require(key, "admin")
        target = body.target
        versions = routing.agents.get(target.agent, {})
        tools = {t for built in versions.values() for t in built.tool_names}
        if (
            not versions
            or target.version not in (None, *versions)
            or target.tool
            not in (
                None,
                *tools,
            )
        ):
            raise ApiError(
                422,
                f"target: {target.model_dump(exclude_none=True)} names no served agent, "
                f"version or tool; this gateway serves {_served(routing)}",
            )
        try:
            await asyncio.to_thread(routing.flags.put, name, body, who=key.owner)
        except UserError as exc:
            raise ApiError(422, str(exc)) from None
        return body

    @router.delete("/v1/admin/flags/{name}", response_model=AuditEntry)
    async def delete_flag(name: str, key: ApiKey = authenticated) -> Any:
        """Remove a feature flag (audited)."""
        require(key, "admin")
        try:
            return await asyncio.to_thread(routing.flags.delete, name, who=key.owner)
        except UnknownFlagError as exc:
            raise ApiError(404, str(exc)) from None

    @router.get("/v1/admin/audit", response_model=list[AuditEntry])
    async def audit(key: ApiKey = authenticated, limit: int = 100) -> Any:
        """The newest changes of weights and flags (who, when, before, after)."""
        require(key, "admin")
        if not 1 <= limit <= 10_000:
            raise ApiError(422, f"limit must be between 1 and 10000, got {limit}")
        return await asyncio.to_thread(routing.state.audit, limit)


def _served(routing: Routing) -> str:
    return "; ".join(
        f"{name}: versions {sorted(versions)}, tools "
        f"{sorted({t for b in versions.values() for t in b.tool_names})}"
        for name, versions in routing.agents.items()
    )
