"""An agent's own history from the trace store, read cheaply for alerts.

:func:`run_history` gives the step counts and costs of an agent's latest completed
runs as robust statistics (median and median absolute deviation), read at most
once per workspace, agent and `ttl` seconds by this process. The read never waits
and never changes anything: it takes the store's lock *shared* without blocking,
opens ``traces.duckdb`` read-only and runs one query. It does not ingest new
segment lines (that is the store's slow part and needs its exclusive lock): the
history is the store as last ingested, which any query (``agentlab runs``, the
widgets, :meth:`TraceStore.sql <agentlab.tracing.TraceStore.sql>`) brings up to
date. When the store is busy or cannot be opened the answer is ``None``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentlab.tracing.store import TraceStore

__all__ = ["RunHistory", "Spread", "clear_history_cache", "run_history"]

log = logging.getLogger("agentlab.tracing")

# The latest completed runs of one agent (the current run is not there: it has
# not ended, and the store only holds what was ingested).
_QUERY = """
SELECT steps, cost FROM runs
WHERE agent = ? AND status = 'completed' AND ended_at IS NOT NULL AND steps > 0
ORDER BY ended_at DESC LIMIT ?
"""


@dataclass(frozen=True, slots=True)
class Spread:
    """`n` values summed up by their `median` and median absolute deviation `mad`."""

    n: int
    median: float
    mad: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        median = statistics.median(values)
        return cls(len(values), median, statistics.median(abs(v - median) for v in values))


@dataclass(frozen=True, slots=True)
class RunHistory:
    """An agent's latest completed runs: their steps and, of those whose cost is
    known, their cost in US dollars (None: no such run)."""

    agent: str
    steps: Spread | None
    cost: Spread | None


_CACHE: dict[tuple[Path, str, int], tuple[float, RunHistory | None]] = {}
_CACHE_LOCK = threading.Lock()


def run_history(workspace: Path, agent: str, runs: int, ttl: float) -> RunHistory | None:
    """The latest `runs` completed runs of `agent` in `workspace`'s trace store.

    Served from this process's cache when read less than `ttl` seconds ago (an
    unavailable store too, so a busy store is not retried on every step). ``None``
    when the store could not be read (busy, locked by another program, damaged);
    the reason is logged at debug level.
    """
    key = (workspace, agent, runs)
    now = time.monotonic()
    cached = _CACHE.get(key)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    history = _read(workspace, agent, runs)
    with _CACHE_LOCK:
        _CACHE[key] = (now, history)
    return history


def clear_history_cache() -> None:
    """Forget every history read by this process (the next need reads the store)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _read(workspace: Path, agent: str, runs: int) -> RunHistory | None:
    store = TraceStore(workspace)
    if not store.path.exists():  # never queried: no history (and no duckdb import)
        return RunHistory(agent, None, None)
    try:
        rows = _query(store, agent, runs)
    except BlockingIOError:
        log.debug("no run history for %r: the trace store %s is busy", agent, store.path)
        return None
    # Whatever goes wrong (a locked or damaged file, an old schema, a missing
    # extension), the history is only advice: a run never fails for it.
    except Exception as exc:
        log.debug("no run history for %r from %s: %s", agent, store.path, exc, exc_info=True)
        return None
    steps = [float(s) for s, _ in rows]
    costs = [float(c) for _, c in rows if c is not None]
    return RunHistory(agent, Spread.of(steps), Spread.of(costs))


def _query(store: TraceStore, agent: str, runs: int) -> list[tuple[int, float | None]]:
    """One read-only query under the store's lock, taken shared and without waiting:
    a query or ingest of another process holds it exclusively (BlockingIOError)."""
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        import duckdb

        con = duckdb.connect(str(store.path), read_only=True)
        try:
            return con.execute(_QUERY, [agent, runs]).fetchall()
        finally:
            con.close()
    finally:
        os.close(fd)  # releases the lock
