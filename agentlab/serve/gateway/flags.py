"""Feature flags: switch an agent version or a tool on or off, rolled out to
internal users, then beta users, then everyone, and to a percentage of them.

A flag's audience is its ``stage``: ``off`` (nobody), ``internal`` (keys in the
``internal_group``), ``beta`` (keys in the internal or the ``beta_group``) or
``everyone``. Within the audience, ``percent`` of the users get it, sticky per
user (the same stable hash as A/B routing, salted by the flag's name); a request
without a user counts as its key's owner.

A flag targets either an agent version (``{"agent": "support", "version": "2"}``:
while the flag is off for a request, that version is never chosen and its traffic
goes to the fallback) or a tool (``{"agent": "support", "tool": "refund"}``,
optionally one version: while off, the run's agent does not offer the tool).

Flags live in the shared state (``flag/<name>``): changes take effect within the
state's cache time (1 s) on every worker, without a restart, and each one is
audited with the changing key's owner and the flag before and after.
"""

from __future__ import annotations

import copy
import re
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentlab.agents import Agent
from agentlab.agents.turn import Turn
from agentlab.errors import UserError
from agentlab.serve.gateway.ab import bucket
from agentlab.serve.gateway.keys import ApiKey
from agentlab.serve.gateway.shared_state import AuditEntry, SharedState

__all__ = ["Flag", "FlagTarget", "Flags", "ToolVariants", "UnknownFlagError"]

PREFIX = "flag/"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
Stage = Literal["off", "internal", "beta", "everyone"]


class UnknownFlagError(UserError):
    """No flag has that name."""


class FlagTarget(BaseModel):
    """What a flag switches: an agent's `version`, or a `tool` (of every version of
    the agent, or of `version` only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str = Field(min_length=1)
    version: str | None = None
    tool: str | None = None

    @model_validator(mode="after")
    def _something(self) -> FlagTarget:
        if self.version is None and self.tool is None:
            raise ValueError(
                "a flag switches a version or a tool: give 'version' (e.g. \"2\") or 'tool' "
                '(e.g. "refund"), or both for one version\'s tool'
            )
        return self


class Flag(BaseModel):
    """A feature flag (its name is given apart: the URL or the key it is stored under)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: FlagTarget
    stage: Stage = "off"
    percent: float = Field(default=100.0, ge=0, le=100, allow_inf_nan=False)
    internal_group: str = "internal"
    beta_group: str = "beta"
    description: str = ""

    def audience(self, key: ApiKey) -> bool:
        """Whether `key` is in the flag's current stage."""
        if self.stage == "everyone":
            return True
        groups = {self.internal_group} | ({self.beta_group} if self.stage == "beta" else set())
        return self.stage != "off" and bool(groups & set(key.groups))

    def on_for(self, name: str, key: ApiKey, user: str | None) -> bool:
        """Whether the flag `name` is on for `user` (None: the key's owner) of `key`."""
        if not self.audience(key):
            return False
        return self.percent >= 100 or bucket(f"flag:{name}", user or key.owner) < self.percent / 100

    def switches_version(self, agent: str, version: str) -> bool:
        t = self.target
        return t.agent == agent and t.tool is None and t.version == version

    def switches_tool_of(self, agent: str, version: str) -> str | None:
        t = self.target
        if t.agent == agent and t.tool is not None and t.version in (None, version):
            return t.tool
        return None


class Flags:
    """The flags in the shared state: read, change (audited), evaluate per request."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self._parsed: tuple[object, dict[str, Flag]] = (None, {})

    def all(self) -> dict[str, Flag]:
        """Every flag by name (parsed once per refresh of the shared state)."""
        snapshot = self.state.snapshot()
        seen, parsed = self._parsed
        if seen is not snapshot:
            found = self.state.items(PREFIX)
            parsed = {name: Flag.model_validate(v) for name, v in sorted(found.items())}
            self._parsed = (snapshot, parsed)
        return parsed

    def get(self, name: str) -> Flag:
        """The flag `name`; raises :class:`UnknownFlagError`."""
        found = self.state.get(PREFIX + name)
        if found is None:
            raise UnknownFlagError(f"no feature flag is named {name!r}; see GET /v1/admin/flags")
        return Flag.model_validate(found)

    def put(self, name: str, flag: Flag, *, who: str) -> AuditEntry:
        """Create or change the flag `name` (audited as done by `who`); raises
        :class:`UserError` for a name that is not letters, digits, '_', '.' or '-'."""
        if not _NAME.fullmatch(name):
            raise UserError(
                f"flag name {name!r}: use 1 to 100 letters, digits, '_', '.' or '-' "
                "(e.g. new-refund-flow)"
            )
        return self.state.put(
            PREFIX + name, flag.model_dump(mode="json"), who=who, action="flag.put"
        )

    def delete(self, name: str, *, who: str) -> AuditEntry:
        """Remove the flag `name` (audited); raises :class:`UnknownFlagError`."""
        self.get(name)
        return self.state.put(PREFIX + name, None, who=who, action="flag.delete")

    def version_enabled(self, agent: str, version: str, key: ApiKey, user: str | None) -> bool:
        """False when a flag switching this version is off for this request."""
        return all(
            flag.on_for(name, key, user)
            for name, flag in self.all().items()
            if flag.switches_version(agent, version)
        )

    def tools_off(self, agent: str, version: str, key: ApiKey, user: str | None) -> frozenset[str]:
        """The tools of this version that flags switch off for this request."""
        off = set()
        for name, flag in self.all().items():
            tool = flag.switches_tool_of(agent, version)
            if tool is not None and not flag.on_for(name, key, user):
                off.add(tool)
        return frozenset(off)


class ToolVariants:
    """An agent without some of its tools, built once per set of tools switched off.

    A variant is a shallow copy of the agent (same model stack, tool handlers,
    tracer and breakers: nothing is rebuilt) whose :meth:`~Agent.turn` leaves the
    switched-off tools out of what each step offers; the run loop refuses calls to
    tools a step did not offer, so the model can neither see nor call them.
    """

    def __init__(self) -> None:
        self._variants: dict[tuple[int, frozenset[str]], Agent] = {}
        self._lock = threading.Lock()

    def without(self, agent: Agent, tools: frozenset[str]) -> Agent:
        """`agent` without `tools` (`agent` itself when none of them is its)."""
        tools = tools & set(agent.tool_names)
        if not tools:
            return agent
        with self._lock:
            found = self._variants.get((id(agent), tools))
            if found is None:
                found = self._variants[(id(agent), tools)] = _variant(agent, tools)
            return found


def _variant(agent: Agent, off: frozenset[str]) -> Agent:
    variant = copy.copy(agent)
    turn = agent.turn

    def filtered(run: Any) -> Turn:
        offer = turn(run)
        choice = offer.tool_choice
        return Turn(
            tools=[t for t in offer.tools if t.name not in off],
            tool_choice=None if choice in off else choice,
            instruction=offer.instruction,
        )

    setattr(variant, "turn", filtered)  # noqa: B010 - an instance override of the method
    variant.tool_names = [n for n in agent.tool_names if n not in off]
    return variant
