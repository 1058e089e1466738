"""A/B routing between the versions of one agent: weighted, sticky per user, with
versions taken out of rotation (breaker open, flag off) replaced by their fallback.

**Assignment.** A user (a request without ``user`` counts as its key's owner) gets
a point in [0, 1): the first 8 bytes of ``sha256("<agent>:<user>")``. The versions
with a weight above 0, in the config's order, split [0, 1) into intervals as long
as their share of the weights; the user's point falls into one. So the same user
gets the same version for as long as the weights stay the same, and a weight change
moves only the users whose points change interval.

**Weights** come from the config and are overridden at runtime
(:meth:`Router.set_weights`, ``PUT /v1/admin/agents/{agent}/weights``) through the
shared state: every worker uses new weights within the state's cache time (1 s).

**Out of rotation.** When the assigned version's breaker is open or a flag
switches it off for this request, its configured ``fallback`` takes the request
(and the fallback's fallback, and so on); with no usable fallback, the user is
assigned again among the remaining versions, from the same point.

**Comparing versions.** :func:`compare_versions` is a per-version table of live
traffic from the trace store (runs, completion rate, p50/p95 latency, cost and
tokens per run), read from the ``gateway`` metadata the gateway records with each
run. For the eval comparison, :func:`~agentlab.serve.gateway.version_evals.version_report`
makes a version's live runs an eval report: ``compare_evals`` then gives the metric
deltas, and pairs the inputs both versions answered.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentlab.errors import UserError
from agentlab.evals.text_table import text_table
from agentlab.resilience import BreakerTicket
from agentlab.serve.gateway.config import AgentConfig
from agentlab.serve.gateway.keys import ApiKey
from agentlab.serve.gateway.shared_state import AuditEntry, SharedState
from agentlab.tracing import TraceStore

if TYPE_CHECKING:
    from agentlab.serve.gateway.flags import Flags
    from agentlab.serve.gateway.version_breakers import VersionBreakers

__all__ = [
    "Choice",
    "NoVersionAvailable",
    "Router",
    "VersionComparison",
    "bucket",
    "compare_versions",
    "pick",
]

PREFIX = "weights/"


class NoVersionAvailable(UserError):
    """Every version of the agent is out of rotation for this request."""


def bucket(salt: str, user: str) -> float:
    """A stable point in [0, 1) for `user` under `salt` (the agent, a flag)."""
    digest = hashlib.sha256(f"{salt}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(weights: Mapping[str, float], point: float) -> str | None:
    """The version whose interval of [0, 1) holds `point` (None: no weight above 0)."""
    positive = [(v, w) for v, w in weights.items() if w > 0]
    total = sum(w for _, w in positive)
    if not positive:
        return None
    reached = 0.0
    for version, weight in positive:
        reached += weight / total
        if point < reached:
            return version
    return positive[-1][0]  # rounding at the very top


@dataclass(frozen=True, slots=True)
class Choice:
    """The version serving a request, the one the weights assigned, why they differ
    (empty when they do not) and the version breaker's ticket for the run."""

    version: str
    assigned: str
    reason: str = ""
    ticket: BreakerTicket | None = None


class Router:
    """Chooses the version of an agent for each request (see the module docstring)."""

    def __init__(
        self,
        agents: Mapping[str, AgentConfig],
        state: SharedState,
        *,
        flags: Flags | None = None,
        breakers: VersionBreakers | None = None,
    ) -> None:
        self.agents = agents
        self.state = state
        self.flags = flags
        self.breakers = breakers

    def _config(self, agent: str) -> AgentConfig:
        found = self.agents.get(agent)
        if found is None:
            raise UserError(f"this gateway serves no agent named {agent!r}")
        return found

    def weights(self, agent: str) -> dict[str, float]:
        """Each version's weight, in the config's order: the runtime override if any,
        else the config's."""
        config = self._config(agent)
        override: dict[str, float] = self.state.get(PREFIX + agent) or {}
        return {v.version: float(override.get(v.version, v.weight)) for v in config.versions}

    def set_weights(self, agent: str, weights: Mapping[str, float], *, who: str) -> AuditEntry:
        """Override `agent`'s weights at runtime (every version listed; audited as done
        by `who`); raises :class:`UserError` for unknown versions or unusable weights."""
        names = [v.version for v in self._config(agent).versions]
        unknown = sorted(set(weights) - set(names))
        missing = [n for n in names if n not in weights]
        if unknown or missing:
            raise UserError(
                f"agent {agent!r} has the versions {names}: give a weight for each of them "
                f"and no other (unknown: {unknown}, missing: {missing})"
            )
        bad = {v: w for v, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad or not any(w > 0 for w in weights.values()):
            raise UserError(
                "weights must be finite numbers >= 0 with at least one above 0, got "
                f"{dict(weights)}"
            )
        value = {n: float(weights[n]) for n in names}
        return self.state.put(PREFIX + agent, value, who=who, action="weights.put")

    def choose(self, agent: str, *, key: ApiKey, user: str | None) -> Choice:
        """The version for this request; raises :class:`NoVersionAvailable`."""
        config = self._config(agent)
        weights = self.weights(agent)
        point = bucket(agent, user or key.owner)
        assigned = pick(weights, point)
        if assigned is None:
            raise NoVersionAvailable(f"agent {agent!r} has no version with a weight above 0")
        fallback = {v.version: v.fallback for v in config.versions}
        reasons: list[str] = []
        tried: list[str] = []
        candidate: str | None = assigned
        while True:
            while candidate is not None and candidate not in tried:
                tried.append(candidate)
                ticket = self._admit(agent, candidate, key, user, reasons)
                if ticket is not None:
                    reason = "; ".join(reasons)
                    return Choice(candidate, assigned, reason, ticket if self.breakers else None)
                candidate = fallback[candidate]
            candidate = pick({v: w for v, w in weights.items() if v not in tried}, point)
            if candidate is None:
                raise NoVersionAvailable(
                    f"every version of agent {agent!r} is out of rotation for this request ("
                    + "; ".join(reasons)
                    + "); retry later"
                )

    def _admit(
        self, agent: str, version: str, key: ApiKey, user: str | None, reasons: list[str]
    ) -> BreakerTicket | None:
        """The breaker ticket when `version` can serve (a placeholder ticket without
        breakers), else None with the reason appended."""
        if self.flags is not None and not self.flags.version_enabled(agent, version, key, user):
            reasons.append(f"version {version} is switched off by a feature flag")
            return None
        if self.breakers is None:
            return BreakerTicket()
        ticket = self.breakers.acquire(agent, version)
        if ticket is None:
            reasons.append(f"version {version}'s breaker is open")
        return ticket


@dataclass(frozen=True)
class VersionComparison:
    """Per-version figures of an agent's live runs (see :func:`compare_versions`)."""

    agent: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    COLUMNS = (
        "runs",
        "completion_rate",
        "failed",
        "p50_latency_ms",
        "p95_latency_ms",
        "cost_per_run",
        "tokens_per_run",
    )

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "versions": self.rows}

    def __str__(self) -> str:
        def shown(value: Any) -> str:
            return (
                "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
            )

        body = [[v, *(shown(r.get(c)) for c in self.COLUMNS)] for v, r in self.rows.items()]
        return "\n".join([f"agent {self.agent}", *text_table(["version", *self.COLUMNS], body)])


_COMPARE = """
SELECT json_extract_string(metadata, '$.gateway.version') AS version,
       count(*) AS runs,
       avg(CASE WHEN status = 'completed' THEN 1.0 ELSE 0.0 END) AS completion_rate,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       quantile_cont(latency_ms, 0.5) AS p50_latency_ms,
       quantile_cont(latency_ms, 0.95) AS p95_latency_ms,
       avg(cost) AS cost_per_run,
       avg(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) AS tokens_per_run
FROM runs
WHERE json_extract_string(metadata, '$.gateway.agent') = ?
  AND json_extract_string(metadata, '$.gateway.version') IN (SELECT unnest(?))
  AND (? IS NULL OR started_at >= ?)
GROUP BY 1
"""


def compare_versions(
    store: TraceStore, agent: str, *versions: str, since: datetime | None = None
) -> VersionComparison:
    """`agent`'s `versions` (e.g. ``"1", "2"``) side by side over the runs the gateway
    served (since `since`, UTC, if given): runs, completion rate, failed runs,
    p50/p95 latency, cost and tokens per run. A version without runs shows zeros."""
    if not versions:
        raise UserError(
            "name the versions to compare, e.g. compare_versions(store, 'support', '1', '2')"
        )
    since_naive = None
    if since is not None:
        since_naive = since.astimezone(UTC).replace(tzinfo=None) if since.tzinfo else since
    found = store.sql(_COMPARE, [agent, list(versions), since_naive, since_naive])
    columns = ("version", *VersionComparison.COLUMNS)
    by_version = {row[0]: dict(zip(columns[1:], row[1:], strict=True)) for row in found}
    empty = dict.fromkeys(VersionComparison.COLUMNS) | {"runs": 0, "failed": 0}
    return VersionComparison(agent, {v: by_version.get(v, empty) for v in versions})
