"""The trace store: DuckDB tables over the events every process writes.

Queries always see every event written so far: each one takes the workspace's
lock file, attaches ``traces.duckdb`` (:mod:`agentlab.tracing.attach`), applies
pending migrations, ingests the new segment lines, runs, and detaches the file
again. DuckDB lets one process open a file at a time, so no process keeps it
open between calls. (``duckdb`` is imported on first query: processes that only
write traces never load it.)
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.errors import MissingExtraError, TraceStoreError, UserError
from agentlab.tracing.attach import attached
from agentlab.tracing.ingest import ingest
from agentlab.tracing.queries import (
    COST_BY_DAY,
    COST_BY_MODEL,
    COSTLIEST_TOOLS,
    COUNT_RUNS,
    RUN_FACETS,
    RUNS,
    RUNS_PAGE,
    STEPS,
    RunFilter,
)
from agentlab.tracing.retention import (
    CompactReport,
    PruneReport,
    compact_into,
    prune_rows,
    swap_in,
)
from agentlab.tracing.schema import migrate
from agentlab.tracing.writer import TraceWriter, get_writer, shared_writer
from agentlab.workspace import resolve_workspace

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["TraceStore"]

Params = Sequence[Any] | dict[str, Any] | None


class TraceStore:
    """The traces of one workspace (default: ``$AGENTLAB_WORKSPACE`` or ``./.agentlab``).

    Tables: ``runs``, ``model_calls``, ``tool_calls`` (times are UTC ``TIMESTAMP``;
    messages, responses and metadata are ``JSON``) and ``schema_migrations``.
    `lock_timeout` bounds the wait for another process's query or ingest.
    :meth:`prune` deletes old runs and :meth:`compact` gives their space back.
    """

    def __init__(
        self, workspace: str | os.PathLike[str] | None = None, *, lock_timeout: float = 30.0
    ) -> None:
        self.workspace: Path = resolve_workspace(workspace)
        self.path: Path = self.workspace / "traces.duckdb"
        self.lock_path: Path = self.workspace / "traces.lock"
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"TraceStore({str(self.workspace)!r})"

    def writer(self, durable: bool = True, fsync: bool = False) -> TraceWriter:
        """This process's shared :class:`TraceWriter` for the workspace."""
        return get_writer(self.workspace, durable=durable, fsync=fsync)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the store: lock, open, migrate and ingest; close and unlock on exit.

        Use it for several statements in a row; other processes wait meanwhile.
        """
        with self._session() as (con, _):
            yield con

    def ingest(self) -> int:
        """Ingest the events written since the last query; return how many."""
        with self._session() as (_, ingested):
            return ingested

    def sql(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the up-to-date store and return its rows."""
        with self.connect() as con:
            result = _execute(con, query, params)
            return result.fetchall() if result.description else []

    def df(self, query: str, params: Params = None) -> pd.DataFrame:
        """Run one SQL query on the up-to-date store and return a pandas DataFrame."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise MissingExtraError("pandas", "pandas") from None
        with self.connect() as con:
            return _execute(con, query, params).df()

    def runs(self, limit: int = 20) -> pd.DataFrame:
        """The latest `limit` runs, newest first."""
        return self.df(RUNS, {"limit": limit})

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run as a dict (``metadata`` decoded), or None if unknown."""
        with self.connect() as con:
            result = con.execute("SELECT * EXCLUDE (segment) FROM runs WHERE run_id = ?", [run_id])
            rows = result.fetchall()
            columns = [d[0] for d in result.description or ()]
        if not rows:
            return None
        run = dict(zip(columns, rows[0], strict=True))
        for column in ("metadata", "failure", "pending", "checkpoint", "limits"):
            if run.get(column) is not None:
                run[column] = json.loads(run[column])
        return run

    def steps(self, run_id: str) -> pd.DataFrame:
        """The model calls and tool calls of a run, in step order.

        ``input`` is the new messages (model) or the arguments (tool); ``output`` is
        the response (model) or the result (tool).
        """
        return self.df(STEPS, {"run_id": run_id})

    def cost_by_day(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        agent: str | None = None,
    ) -> pd.DataFrame:
        """Model calls, tokens and cost per agent per UTC day (``day``, ``agent``,
        ``model_calls``, ``input_tokens``, ``output_tokens``, ``cost``), oldest first.

        `since` (inclusive) and `until` (exclusive) bound the calls' start times
        (naive datetimes are UTC); `agent` keeps one agent.
        """
        return self.df(COST_BY_DAY, {"since": _utc(since), "until": _utc(until), "agent": agent})

    def runs_page(
        self,
        filters: RunFilter | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
        order: str = "newest",
    ) -> pd.DataFrame:
        """Up to `limit` runs that `filters` keeps, from the `offset`-th on, newest first
        (`order` "cost": costliest first): ``run_id``, ``started_at``, ``agent``,
        ``model``, ``status``, ``steps``, ``input_tokens``, ``output_tokens``, ``cost``,
        ``latency_ms``, ``alerts`` (how many loop alerts) and ``input`` (cut to 200
        characters). One SQL statement, the filters in its WHERE clause."""
        _check_count("limit", limit, 1)
        _check_count("offset", offset, 0)
        if order not in RUNS_PAGE:
            raise UserError(f"order must be one of {sorted(RUNS_PAGE)}, not {order!r}")
        params = {**_filter_params(filters), "limit": limit, "offset": offset}
        return self.df(RUNS_PAGE[order], params)

    def count_runs(self, filters: RunFilter | None = None) -> int:
        """How many runs `filters` keeps (all of them without one)."""
        [(count,)] = self.sql(COUNT_RUNS, _filter_params(filters))
        return int(count)

    def run_facets(self) -> dict[str, list[str]]:
        """The agents and the statuses the stored runs have, sorted:
        ``{"agent": [...], "status": [...]}``."""
        [(agents, statuses)] = self.sql(RUN_FACETS)
        return {"agent": list(agents), "status": list(statuses)}

    def cost_by_model(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> pd.DataFrame:
        """Per model that answered (``model``): ``model_calls``, ``runs``,
        ``input_tokens``, ``output_tokens`` and ``cost`` of the calls started in
        [`since`, `until`) (naive datetimes are UTC), costliest first."""
        return self.df(COST_BY_MODEL, {"since": _utc(since), "until": _utc(until)})

    def costliest_tools(
        self, since: datetime | None = None, until: datetime | None = None, limit: int = 10
    ) -> pd.DataFrame:
        """Per tool (``tool``), of the calls started in [`since`, `until`): ``calls``,
        ``errors``, ``latency_ms`` (total), ``mean_latency_ms`` and ``model_cost``: the
        cost of the model calls that asked for them, a step's cost shared evenly between
        its tool calls (tools have no price of their own). Costliest first, then the
        slowest in total; at most `limit` tools."""
        _check_count("limit", limit, 1)
        return self.df(
            COSTLIEST_TOOLS, {"since": _utc(since), "until": _utc(until), "limit": limit}
        )

    def prune(
        self, older_than: timedelta, *, dry_run: bool = False, compact: bool = True
    ) -> PruneReport:
        """Delete the runs whose last moment is more than `older_than` ago, with all
        their rows (see :mod:`agentlab.tracing.retention` for what is kept), in one
        transaction; then :meth:`compact` the file (unless `compact` is False or
        nothing went). `dry_run` counts what would go and changes nothing.
        """
        if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
            raise UserError(
                f"older_than must be a positive datetime.timedelta, not {older_than!r}; "
                "e.g. timedelta(days=30) (agentlab.tracing.retention.parse_age reads '30d')"
            )
        cutoff = datetime.now(UTC).replace(tzinfo=None) - older_than
        deadline = time.monotonic() + self.lock_timeout
        self._flush_own()
        with self._locked(deadline):
            with self._attached(deadline) as (con, _):
                rows = prune_rows(con, cutoff, dry_run)
            compacted = None
            if compact and not dry_run and any(rows.values()):
                compacted = self._compact_locked(deadline)
        return PruneReport(cutoff, dry_run, rows, compacted)

    def compact(self) -> CompactReport:
        """Rewrite ``traces.duckdb`` without the space deleted rows left (DuckDB reuses
        that space but never gives it back): copy it to a fresh file, swap atomically.
        Other processes' queries wait meanwhile; writers go on writing."""
        deadline = time.monotonic() + self.lock_timeout
        self._flush_own()
        with self._locked(deadline):
            return self._compact_locked(deadline)

    def _compact_locked(self, deadline: float) -> CompactReport:
        started = time.perf_counter()
        before = self.path.stat().st_size if self.path.exists() else 0
        target = self.workspace / ".traces.compact.duckdb"
        with self._attached(deadline) as (con, _):
            compact_into(con, target)
        try:
            swap_in(target, self.path)
        except OSError as exc:
            raise TraceStoreError(f"cannot compact {self.path}: {exc}") from exc
        return CompactReport(before, self.path.stat().st_size, time.perf_counter() - started)

    @contextmanager
    def _session(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
        deadline = time.monotonic() + self.lock_timeout
        self._flush_own()
        with self._locked(deadline), self._attached(deadline) as session:
            yield session

    def _flush_own(self) -> None:
        """Write out this process's buffered events, so the session ingests them."""
        writer = shared_writer(self.workspace)
        if writer is not None:
            writer.flush()

    @contextmanager
    def _attached(self, deadline: float) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
        """Under the lock: the store attached, migrated and up to date."""
        import duckdb

        with attached(self.path, deadline) as con:
            try:
                migrate(con)
                yield con, ingest(con, self.workspace)
            except duckdb.Error as exc:
                raise TraceStoreError(f"trace store {self.path}: {exc}") from exc

    @contextmanager
    def _locked(self, deadline: float) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TraceStoreError(
                            f"the trace store is busy: another process held {self.lock_path} "
                            f"for more than {self.lock_timeout:g} s (a long query or ingest?)"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield
        finally:
            os.close(fd)  # releases the lock


def _utc(when: datetime | None) -> datetime | None:
    """`when` as the naive UTC datetime the store's TIMESTAMP columns hold."""
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(UTC).replace(tzinfo=None)


def _filter_params(filters: RunFilter | None) -> dict[str, Any]:
    """The named parameters of the queries that take a :class:`RunFilter`."""
    if filters is None:
        filters = RunFilter()
    elif not isinstance(filters, RunFilter):
        raise UserError(
            f"filters must be an agentlab.tracing.queries.RunFilter, not {type(filters).__name__}"
        )
    return {
        "agent": filters.agent,
        "status": filters.status,
        "since": _utc(filters.since),
        "until": _utc(filters.until),
        "min_cost": filters.min_cost,
        "alerts_only": filters.alerts_only,
    }


def _check_count(name: str, value: int, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserError(f"{name} must be a whole number of at least {least}, not {value!r}")


def _execute(
    con: duckdb.DuckDBPyConnection, query: str, params: Params
) -> duckdb.DuckDBPyConnection:
    import duckdb

    try:
        return con.execute(query, params)
    except duckdb.Error as exc:
        raise TraceStoreError(f"{type(exc).__name__}: {exc}\nquery: {query}") from exc
