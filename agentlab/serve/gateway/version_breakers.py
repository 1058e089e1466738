"""A circuit breaker per agent version: a version whose runs keep failing is taken
out of rotation, and the router sends its traffic to the fallback version.

It is :mod:`agentlab.resilience`'s breaker, named ``gateway:<agent>:<version>``:
``failures`` failed runs within ``window_s`` seconds open it (successes in between
do not erase them); after ``cooldown_s`` it turns half-open and lets one probe run
through; the probe's outcome closes it or opens it for another cool-down. State is
in this process, or on Redis (:class:`~agentlab.resilience.RedisBreakerStore`)
when the gateway has a ``redis_url``, so every worker and machine agrees.

A run counts as failed when its status is ``failed`` (a model or tool error the
run could not recover from, a crash, a timeout) or its answer is a 5xx. Runs that
stop on their own limits (``max_steps``, ``budget_exceeded``) or pause do not
count: the version works. The run-loop breakers (per model endpoint and tool)
still apply inside each run; these are separate breakers with their own names.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentlab.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerStore,
    BreakerTicket,
    CircuitBreaker,
    InProcessBreakerStore,
    RedisBreakerStore,
)
from agentlab.resilience.breaker import PLAIN_TICKET

__all__ = ["VersionBreakerSettings", "VersionBreakers", "counts_as_failure"]


class VersionBreakerSettings(BaseModel):
    """When a version is taken out of rotation, and for how long."""

    model_config = ConfigDict(extra="forbid")

    failures: int = Field(default=5, ge=1, description="Failed runs that open the breaker...")
    window_s: float = Field(default=60.0, gt=0, allow_inf_nan=False, description="...within this.")
    cooldown_s: float = Field(
        default=30.0, gt=0, allow_inf_nan=False, description="Out of rotation this long."
    )

    def breaker_config(self) -> BreakerConfig:
        return BreakerConfig(
            failure_threshold=self.failures, window_s=self.window_s, cooldown_s=self.cooldown_s
        )


def counts_as_failure(status: str | None, http_status: int = 200) -> bool:
    """Whether a run with `status`, answered with `http_status`, counts against its
    version (see the module docstring)."""
    return status == "failed" or http_status >= 500


class VersionBreakers:
    """The breakers of every agent version served by this gateway.

    With `closed_ttl_s`, a version this worker found closed is taken as closed for
    that long without asking the store again (one store round trip per version and
    interval instead of one per request); a failure recorded here forgets it at
    once, and a breaker opened by another worker is seen within the interval."""

    def __init__(
        self,
        settings: VersionBreakerSettings | None = None,
        store: BreakerStore | None = None,
        *,
        closed_ttl_s: float = 0.0,
    ) -> None:
        self.config = (settings or VersionBreakerSettings()).breaker_config()
        self.store: BreakerStore = store or InProcessBreakerStore()
        self.closed_ttl_s = closed_ttl_s
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._closed_until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        settings: VersionBreakerSettings | None,
        redis_url: str | None,
        *,
        closed_ttl_s: float = 0.0,
    ) -> VersionBreakers:
        """Breakers on Redis when `redis_url` is set (taken as closed for
        `closed_ttl_s` once seen closed), else in this process."""
        if not redis_url:
            return cls(settings)
        store = RedisBreakerStore(redis_url, prefix="agentlab:gateway:breaker:")
        return cls(settings, store, closed_ttl_s=closed_ttl_s)

    def breaker(self, agent: str, version: str) -> CircuitBreaker:
        """The breaker of `agent`'s `version`."""
        with self._lock:
            found = self._breakers.get((agent, version))
            if found is None:
                found = CircuitBreaker(f"gateway:{agent}:{version}", self.config, self.store)
                self._breakers[(agent, version)] = found
            return found

    def acquire(self, agent: str, version: str) -> BreakerTicket | None:
        """A ticket for one run of the version, or None while it is out of rotation."""
        now = time.monotonic()
        if self._closed_until.get((agent, version), 0.0) > now:
            return PLAIN_TICKET
        try:
            ticket = self.breaker(agent, version).acquire()
        except BreakerOpen:
            return None
        if self.closed_ttl_s > 0 and not ticket.probe:
            self._closed_until[(agent, version)] = now + self.closed_ttl_s
        return ticket

    def record(
        self, agent: str, version: str, ticket: BreakerTicket, *, failed: bool, error: str = ""
    ) -> None:
        """Report how a run admitted with `ticket` ended."""
        breaker = self.breaker(agent, version)
        if failed:
            self._closed_until.pop((agent, version), None)
            breaker.record_failure(ticket, error=error or "run failed")
        else:
            breaker.record_success(ticket)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{agent: {version: state...}}`` of the breakers used so far."""
        with self._lock:
            known = list(self._breakers.items())
        out: dict[str, dict[str, Any]] = {}
        for (agent, version), breaker in known:
            out.setdefault(agent, {})[version] = breaker.snapshot()
        return out
