"""Which version of an agent serves a request.

One function, :func:`choose_version`, so that weighted A/B routing, feature flags
and breakers can replace it without touching the app.
"""

from __future__ import annotations

from agentlab.serve.gateway.config import AgentConfig, VersionConfig
from agentlab.serve.gateway.keys import ApiKey

__all__ = ["choose_version"]


def choose_version(agent: AgentConfig, *, key: ApiKey, user: str | None) -> VersionConfig:
    """The version with the highest weight (the first listed on a tie). `key` and
    `user` are for the routing that replaces this (sticky per user, flags per
    key group)."""
    return max(agent.versions, key=lambda v: v.weight)
