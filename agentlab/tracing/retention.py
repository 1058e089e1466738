"""Retention: prune old runs from the trace store and compact its file.

:meth:`TraceStore.prune <agentlab.tracing.TraceStore.prune>` deletes the runs
whose last recorded moment (``ended_at``, else ``started_at``) is older than a
cutoff, with every row of every table that has a ``run_id`` column pointing at
them (model and tool calls, tool call starts, decisions, memory events, alerts,
breaker transitions, eval case results), plus the rows of those tables older
than the cutoff whose run is not in ``runs`` at all. Decisions:

* runs that are ``running`` or ``paused`` are kept whatever their age: a live
  process or a person can still carry them on (cancel or decide them first);
* ``eval_runs`` rows (an evaluation's summary: its metrics, dataset, model) are
  kept: their metrics were computed when the evaluation ran and stay true, and
  they are the history of a model's scores. Their per-case rows
  (``eval_results``) go with the runs they point at, so an old evaluation keeps
  its metrics but no longer lists its cases.

DuckDB does not shrink its file when rows are deleted (``CHECKPOINT`` only
reuses the freed blocks), so :meth:`TraceStore.compact
<agentlab.tracing.TraceStore.compact>` copies the database into a fresh file
(``COPY FROM DATABASE``) and swaps it in with one atomic rename; a prune compacts
afterwards.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from agentlab.errors import TraceStoreError, UserError
from agentlab.tracing.attach import sql_string

if TYPE_CHECKING:
    import duckdb

__all__ = ["CompactReport", "PruneReport", "compact_into", "parse_age", "prune_rows", "swap_in"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)

# The runs to prune: old, and not waiting for a live process or a person.
_PRUNED = """
CREATE OR REPLACE TEMP TABLE _pruned AS
SELECT run_id FROM runs
WHERE coalesce(ended_at, started_at) < $cutoff AND status NOT IN ('running', 'paused')
"""


def parse_age(text: str) -> timedelta:
    """An age such as ``30d``, ``7d``, ``12h``, ``90m``, ``45s`` or ``2w`` as a timedelta."""
    found = _AGE.fullmatch(text)
    if found is None or float(found.group(1)) <= 0:
        raise UserError(
            f"{text!r} is not an age: write a positive number and a unit, "
            "s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. 30d, 7d or 12h"
        )
    return timedelta(**{_UNITS[found.group(2).lower()]: float(found.group(1))})


@dataclass(frozen=True)
class CompactReport:
    """The store's file size in bytes before and after :meth:`TraceStore.compact`."""

    size_before: int
    size_after: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"compacted the trace store from {self.size_before / 1e6:.1f} MB to "
            f"{self.size_after / 1e6:.1f} MB in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class PruneReport:
    """What :meth:`TraceStore.prune` deleted (or, with `dry_run`, would delete):
    rows per table, for runs whose last moment is before `cutoff` (UTC)."""

    cutoff: datetime
    dry_run: bool
    rows: dict[str, int] = field(default_factory=dict)
    compacted: CompactReport | None = None

    @property
    def runs(self) -> int:
        """Runs pruned."""
        return self.rows.get("runs", 0)

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        detail = ", ".join(
            f"{n} {table}" for table, n in self.rows.items() if n and table != "runs"
        )
        text = f"{verb} {self.runs} runs last active before {self.cutoff:%Y-%m-%d %H:%M:%S} UTC"
        text += f" ({detail})" if detail else ""
        return text + (f"; {self.compacted}" if self.compacted else "")


def prune_rows(con: duckdb.DuckDBPyConnection, cutoff: datetime, dry_run: bool) -> dict[str, int]:
    """Delete (or with `dry_run` count) the rows of runs older than `cutoff`, in one
    transaction; return the rows per table, ``runs`` last."""
    tables = _run_tables(con)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(_PRUNED, {"cutoff": cutoff})
        rows: dict[str, int] = {}
        for table, timed in tables:
            where = "run_id IN (SELECT run_id FROM _pruned)"
            if timed:  # rows of runs the store never had
                where += (
                    " OR (started_at < $cutoff"
                    " AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.run_id = t.run_id))"
                )
            verb = "SELECT count(*)" if dry_run else "DELETE"
            params = {"cutoff": cutoff} if timed else None
            [(n,)] = con.execute(f"{verb} FROM {table} AS t WHERE {where}", params).fetchall()
            rows[table] = n
        [(n,)] = con.execute(
            f"{'SELECT count(*) FROM' if dry_run else 'DELETE FROM'} runs"
            " WHERE run_id IN (SELECT run_id FROM _pruned)"
        ).fetchall()
        rows["runs"] = n
        con.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return rows


def _run_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, bool]]:
    """Every table but ``runs`` with a ``run_id`` column, and whether it has ``started_at``."""
    rows = con.execute(
        "SELECT table_name, bool_or(column_name = 'started_at') FROM duckdb_columns()"
        " WHERE database_name = current_database() AND schema_name = 'main'"
        " AND NOT internal AND table_name <> 'runs'"
        " GROUP BY table_name HAVING bool_or(column_name = 'run_id') ORDER BY table_name"
    ).fetchall()
    return [(str(table), bool(timed)) for table, timed in rows]


def compact_into(con: duckdb.DuckDBPyConnection, target: Path) -> None:
    """Copy the database `con` uses into a new DuckDB file `target`."""
    for stale in (target, target.with_name(target.name + ".wal")):
        stale.unlink(missing_ok=True)  # left by a compaction that was killed
    [(source,)] = con.execute("SELECT current_database()").fetchall()
    alias = f"{source}_compact"
    con.execute(f"ATTACH {sql_string(target)} AS {alias}")
    try:
        con.execute(f'COPY FROM DATABASE "{source}" TO {alias}')
    finally:
        con.execute(f"DETACH {alias}")


def swap_in(target: Path, path: Path) -> None:
    """Replace the database file `path` with the compacted copy `target`, atomically."""
    if (
        target.with_name(target.name + ".wal").exists()
        or path.with_name(path.name + ".wal").exists()
    ):
        raise TraceStoreError(
            f"not compacting {path}: a DuckDB write-ahead log is left beside it; "
            "run any query on the store first"
        )
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(target, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
