"""Ingest: move complete event lines from the segment files into DuckDB.

Runs under the store's exclusive lock. Each pass takes up to ``_PASS_BYTES`` of
new lines: a segment whose writer is gone (its ``flock`` can be taken) and that
was never read is parsed in place; from any other segment the complete lines
after the byte offset stored in ``_segments`` are copied to a scratch file. One
``read_json`` loads the pass into temporary tables (only the columns of the
kinds it holds: the reader's cost grows with the columns it fills), and
set-based statements insert it (runs, model and tool calls, memory, eval and
alert events; gateway request records, :mod:`agentlab.tracing.gateway_requests`)
with the new offsets in a transaction, which later passes join up
to ``_TRANSACTION_BYTES``: an ingest killed half-way loses and duplicates
nothing. A call whose ``id`` is already stored is skipped. Lines are parsed in
parallel without keeping their order; a pass in which a call id repeats is
parsed again in order, as the first line of an id is the one that counts.

A segment whose writer is gone is deleted once fully ingested. Writers start a
new segment every ``ROTATE_BYTES`` (see :mod:`agentlab.tracing.writer`), so
segments do not grow without bound; the runs of a writer none of whose segments
is left that never finished are marked ``interrupted``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import tempfile
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentlab.events import EVENT_KINDS, Event
from agentlab.tracing.gateway_requests import (
    INSERT_REQUESTS,
    LOAD_REQUESTS,
    REQUEST_COLUMNS,
    REQUEST_KIND,
)
from agentlab.tracing.writer import (
    CREATING_SUFFIX,
    SEGMENT_SUFFIX,
    WRITER_PATTERN,
    segments_dir,
    writer_of,
)

if TYPE_CHECKING:
    import duckdb

__all__ = ["ingest"]

log = logging.getLogger("agentlab.tracing")

_PASS_BYTES = 256 << 20  # parse about this much at a time
_TRANSACTION_BYTES = 512 << 20  # commit once a transaction holds this much
_STALE_CREATING_S = 3600.0  # a writer killed between create and rename leaves this

# Every field of every event kind, with the type it is read as.
_COLUMNS = {
    "kind": "VARCHAR",
    "run_id": "VARCHAR",
    "id": "VARCHAR",
    "step": "INTEGER",
    "agent": "VARCHAR",
    "model": "VARCHAR",
    "input": "VARCHAR",
    "metadata": "JSON",
    "messages": "JSON",
    "context_messages": "INTEGER",
    "tools": "VARCHAR[]",
    "response": "JSON",
    "tool": "VARCHAR",
    "arguments": "VARCHAR",
    "result": "VARCHAR",
    "status": "VARCHAR",
    "error": "VARCHAR",
    "output": "VARCHAR",
    "explanation": "VARCHAR",
    "steps": "INTEGER",
    "input_tokens": "BIGINT",
    "output_tokens": "BIGINT",
    "cost": "DOUBLE",
    "latency_ms": "DOUBLE",
    "started_at": "DOUBLE",
    "ended_at": "DOUBLE",
    # evaluation events
    "eval_id": "VARCHAR",
    "case_id": "VARCHAR",
    "passed": "BOOLEAN",
    "score": "DOUBLE",
    "scorer": "JSON",
    "tags": "VARCHAR[]",
    "calls_expected": "INTEGER",
    "calls_made": "INTEGER",
    "calls_matched": "INTEGER",
    "name": "VARCHAR",
    "dataset": "VARCHAR",
    "cases": "INTEGER",
    "metrics": "JSON",
    # sessions, the tool cache and memory events
    "session": "VARCHAR",
    "user": "VARCHAR",
    "cache": "VARCHAR",
    "saved_cost": "DOUBLE",
    "saved_latency_ms": "DOUBLE",
    "budget": "INTEGER",
    "tokens": "INTEGER",
    "counter": "VARCHAR",
    "kept": "INTEGER[]",
    "dropped": "INTEGER[]",
    "summarized": "INTEGER[]",
    "summary": "VARCHAR",
    "pinned": "VARCHAR[]",
    "memories": "VARCHAR[]",
    "summary_input_tokens": "BIGINT",
    "summary_output_tokens": "BIGINT",
    "summary_cost": "DOUBLE",
    "source": "VARCHAR",
    "mode": "VARCHAR",
    "query": "VARCHAR",
    "filters": "JSON",
    "k": "INTEGER",
    "hits": "JSON",
    "entered": "VARCHAR[]",
    "tier": "VARCHAR",
    "op": "VARCHAR",
    "namespace": "VARCHAR",
    "key": "VARCHAR",
    "hit": "BOOLEAN",
    "ttl": "DOUBLE",
    "detail": "VARCHAR",
    # production layers
    "attempts": "JSON",
    "served_by": "VARCHAR",
    "route": "VARCHAR",
    "failure": "JSON",
    "breaker": "VARCHAR",
    "from_state": "VARCHAR",
    "to_state": "VARCHAR",
    "failures": "INTEGER",
    "reason": "VARCHAR",
    "alert": "VARCHAR",
    "message": "VARCHAR",
    "stopped": "BOOLEAN",
    "pending": "JSON",
    "checkpoint": "JSON",
    "paused_at": "DOUBLE",
    "decision": "JSON",
    "resumed_at": "DOUBLE",
    "fallback": "JSON",  # tool_calls: the tries that failed before one served
    "call_id": "VARCHAR",
    "limits": "JSON",
}


def _fields_by_kind() -> dict[str, tuple[str, ...]]:
    """The fields of every event kind (``kind`` first)."""
    kinds: dict[str, tuple[str, ...]] = {}
    for cls in typing.get_args(typing.get_args(Event)[0]):
        fields = dataclasses.fields(cls)
        kind = next(f.default for f in fields if f.name == "kind")
        kinds[str(kind)] = tuple(f.name for f in fields)
    return kinds


_FIELDS = _fields_by_kind()
_CORE_KINDS = ("run_started", "model_call", "tool_call", "run_finished")
_CORE_COLUMNS = {n: _COLUMNS[n] for k in _CORE_KINDS for n in _FIELDS[k]}
_RARE_COLUMNS = {n: _COLUMNS[n] for k in _FIELDS if k not in _CORE_KINDS for n in _FIELDS[k]}


def _ts(column: str) -> str:
    """SQL turning float epoch seconds into a UTC TIMESTAMP."""
    return f"make_timestamp(CAST(round({column} * 1e6) AS BIGINT))"


_LOAD = """
CREATE OR REPLACE TEMP TABLE {table} AS
SELECT * EXCLUDE (filename), parse_filename(filename) AS segment
FROM read_json($files, format = 'newline_delimited', columns = $columns, filename = true,
               ignore_errors = true, maximum_object_size = 1073741824)
WHERE {where}
"""
# Every line with the fields of runs, model calls and tool calls (most lines):
# DuckDB's JSON reader costs about in proportion to the columns it fills.
_LOAD_BATCH = _LOAD.format(table="_batch", where="true")
# The other kinds' lines, with their fields, when a pass has any.
_LOAD_RARE = _LOAD.format(table="_rare", where="kind IN (SELECT unnest($kinds::VARCHAR[]))")

# One row per run the pass touches: its start, its latest finish, the segment of
# its latest step, and whether the store already has the run.
_PASS_RUNS = f"""
CREATE OR REPLACE TEMP TABLE _runs AS
WITH s AS (
    SELECT run_id, true AS started, agent, model, input, {_ts("started_at")} AS started_at,
           metadata, segment AS s_segment, session, "user" AS user_id, limits
    FROM _batch WHERE kind = 'run_started' AND run_id IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY run_id) = 1
), f AS (
    SELECT run_id, true AS finished, status, output, explanation, steps, input_tokens,
           output_tokens, cost, latency_ms, {_ts("ended_at")} AS ended_at,
           segment AS f_segment, failure
    FROM _batch WHERE kind = 'run_finished' AND run_id IS NOT NULL AND status IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY ended_at DESC) = 1
), t AS (
    SELECT run_id, true AS touched, max(segment) AS t_segment FROM _batch
    WHERE kind IN ('model_call', 'tool_call', 'tool_call_started') AND run_id IS NOT NULL
    GROUP BY run_id
)
SELECT *, run_id IN (  -- probes the runs' index when the pass has few runs
    SELECT run_id FROM runs WHERE run_id IN (SELECT run_id FROM _batch)) AS stored
FROM s FULL JOIN f USING (run_id) FULL JOIN t USING (run_id)
"""

# Runs the store has: a start overwrites what the run was started with; a step of a
# run the store marked interrupted (no ended_at) makes it running again; a finish
# sets the outcome and clears what a paused run waited for.
_STARTED_SETS = ", ".join(
    f"{c} = CASE WHEN u.started THEN u.{c} ELSE runs.{c} END"
    for c in ("agent", "model", "input", "started_at", "metadata", "session", "user_id", "limits")
)
_OUTCOME = ("output", "steps", "input_tokens", "output_tokens", "cost", "latency_ms")
_FINISHED_SETS = ", ".join(
    f"{c} = CASE WHEN u.finished THEN u.{c} ELSE runs.{c} END"
    for c in (*_OUTCOME, "ended_at", "failure")
)
_REVIVED = "u.touched AND runs.status = 'interrupted' AND runs.ended_at IS NULL"
_UPDATE_RUNS = f"""
UPDATE runs SET {_STARTED_SETS}, {_FINISHED_SETS},
    status = CASE WHEN u.finished THEN u.status WHEN {_REVIVED} THEN 'running'
                  ELSE runs.status END,
    explanation = CASE WHEN u.finished THEN u.explanation WHEN {_REVIVED} THEN NULL
                       ELSE runs.explanation END,
    pending = CASE WHEN u.finished THEN NULL ELSE runs.pending END,
    segment = coalesce(u.f_segment, u.t_segment, runs.segment)
FROM _runs AS u
WHERE runs.run_id = u.run_id AND runs.run_id IN (SELECT run_id FROM _runs WHERE stored)
"""

# Runs new to the store (a run only seen through its steps waits for its start or finish).
_INSERT_RUNS = """
INSERT INTO runs (run_id, agent, model, input, status, output, explanation, steps,
                  input_tokens, output_tokens, cost, latency_ms, started_at, ended_at, metadata,
                  segment, session, user_id, failure, limits)
SELECT run_id, agent, model, input, coalesce(status, 'running'), output, explanation, steps,
       input_tokens, output_tokens, cost, latency_ms, started_at, ended_at, metadata,
       coalesce(f_segment, t_segment, s_segment), session, user_id, failure, limits
FROM _runs WHERE NOT stored AND (started OR finished)
"""

# Calls whose id is not stored yet. The stored ids are looked up among the pass's
# runs only (through the run_id index when they are few).
_NEW_CALLS = """
FROM _batch
WHERE kind = '{kind}' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
  AND id NOT IN (SELECT id FROM {table} WHERE run_id IN (
      SELECT run_id FROM _batch WHERE kind = '{kind}'))
"""

# A call id written twice: only its first line counts (rare, so checked first).
_REPEATED_IDS = """
SELECT count(*) FROM (SELECT 1 FROM _batch WHERE kind IN ('model_call', 'tool_call')
                      GROUP BY kind, id HAVING count(*) > 1)
"""
_DROP_REPEATED_IDS = """
DELETE FROM _batch WHERE rowid IN (
    SELECT rowid FROM _batch WHERE kind IN ('model_call', 'tool_call') AND id IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY kind, id ORDER BY rowid) > 1)
"""

_INSERT_MODEL_CALLS = f"""
INSERT INTO model_calls (id, run_id, step, model, messages, context_messages, tools, response,
                         input_tokens, output_tokens, cost, latency_ms, status, error,
                         started_at, attempts, served_by, route)
SELECT id, run_id, step, model, messages, context_messages, tools, response,
       input_tokens, output_tokens, cost, latency_ms, status, error, {_ts("started_at")},
       attempts, served_by, route
{_NEW_CALLS.format(kind="model_call", table="model_calls")}
"""

_INSERT_TOOL_CALLS = f"""
INSERT INTO tool_calls (id, run_id, step, tool, arguments, result, status, error, latency_ms,
                        started_at, cache, saved_cost, saved_latency_ms, call_id,
                        served_by, fallback)
SELECT id, run_id, step, tool, arguments, result, status, error, latency_ms,
       {_ts("started_at")}, cache, saved_cost, saved_latency_ms, call_id,
       served_by, fallback
{_NEW_CALLS.format(kind="tool_call", table="tool_calls")}
"""

_INSERT_TOOL_STARTS = f"""
INSERT INTO tool_call_starts
SELECT "key", run_id, step, tool, call_id, arguments, {_ts("started_at")}
FROM _rare
WHERE kind = 'tool_call_started' AND "key" IS NOT NULL AND run_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_DECISIONS = f"""
INSERT INTO run_decisions
SELECT run_id, decision->>'key', decision, {_ts("resumed_at")}
FROM _rare
WHERE kind = 'run_resumed' AND run_id IS NOT NULL AND decision->>'key' IS NOT NULL
ON CONFLICT DO NOTHING
"""

# The unfinished runs of writers that are gone: what their steps recorded.
_MARK_INTERRUPTED = f"""
WITH orphans AS (
    SELECT run_id FROM runs
    WHERE status = 'running'
      AND coalesce(nullif(regexp_extract(segment, '{WRITER_PATTERN}'), ''), segment)
          IN (SELECT unnest($dead::VARCHAR[]))
), m AS (
    SELECT run_id, max(step) AS step, sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens, sum(cost) AS cost
    FROM model_calls WHERE run_id IN (SELECT run_id FROM orphans) GROUP BY run_id
), t AS (
    SELECT run_id, max(step) AS step
    FROM tool_calls WHERE run_id IN (SELECT run_id FROM orphans) GROUP BY run_id
), s AS (
    SELECT o.run_id, greatest(coalesce(m.step, 0), coalesce(t.step, 0)) AS steps,
           coalesce(m.input_tokens, 0) AS input_tokens,
           coalesce(m.output_tokens, 0) AS output_tokens, m.cost
    FROM orphans AS o LEFT JOIN m USING (run_id) LEFT JOIN t USING (run_id)
)
UPDATE runs SET
    status = 'interrupted', steps = s.steps, input_tokens = s.input_tokens,
    output_tokens = s.output_tokens, cost = s.cost,
    explanation = 'the process writing this run stopped before it finished (killed or '
        || 'crashed); ' || CASE WHEN s.steps = 0 THEN 'no steps were recorded'
                                ELSE 'steps up to ' || s.steps || ' were recorded' END
FROM s WHERE runs.run_id = s.run_id
"""

_INSERT_CONTEXT_WINDOWS = f"""
INSERT INTO context_windows
SELECT id, run_id, step, budget, tokens, counter, kept, dropped, summarized, summary, pinned,
       memories, summary_input_tokens, summary_output_tokens, summary_cost, {_ts("started_at")}
FROM _rare
WHERE kind = 'context_window' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_RETRIEVALS = f"""
INSERT INTO memory_retrievals
SELECT id, run_id, step, source, mode, query, filters, k, hits, entered, latency_ms,
       {_ts("started_at")}
FROM _rare
WHERE kind = 'memory_retrieval' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_MEMORY_OPS = f"""
INSERT INTO memory_ops
SELECT id, run_id, step, tier, op, namespace, key, hit, ttl, detail, {_ts("started_at")}
FROM _rare
WHERE kind = 'memory_op' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_EVAL_RESULTS = f"""
INSERT INTO eval_results
SELECT eval_id, case_id, run_id, passed, score, explanation, scorer, tags, calls_expected,
       calls_made, calls_matched, steps, cost, latency_ms, {_ts("ended_at")}
FROM _rare WHERE kind = 'eval_case_result' AND eval_id IS NOT NULL AND case_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_EVAL_RUNS = f"""
INSERT INTO eval_runs
SELECT eval_id, name, dataset, agent, model, cases, metrics, metadata, {_ts("started_at")},
       {_ts("ended_at")}
FROM _rare WHERE kind = 'eval_run' AND eval_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_BREAKER_TRANSITIONS = f"""
INSERT INTO breaker_transitions
SELECT id, run_id, step, breaker, from_state, to_state, failures, reason, {_ts("started_at")}
FROM _rare WHERE kind = 'breaker_transition' AND id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_ALERTS = f"""
INSERT INTO alerts
SELECT id, run_id, step, alert, message, CAST(detail AS JSON), stopped, {_ts("started_at")}
FROM _rare WHERE kind = 'alert' AND id IS NOT NULL AND run_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

# A pause, then maybe a resume, in event order: the latest says the run's state.
_PAUSES = """
UPDATE runs SET
    status = CASE WHEN p.kind = 'run_paused' THEN 'paused' ELSE 'running' END,
    pending = CASE WHEN p.kind = 'run_paused' THEN p.pending END,
    checkpoint = CASE WHEN p.kind = 'run_paused' THEN p.checkpoint ELSE runs.checkpoint END,
    explanation = CASE WHEN runs.status = 'interrupted' THEN NULL ELSE runs.explanation END,
    segment = p.segment
FROM (SELECT run_id, kind, pending, checkpoint, segment FROM _rare
      WHERE kind IN ('run_paused', 'run_resumed')
      QUALIFY row_number() OVER (
          PARTITION BY run_id ORDER BY coalesce(paused_at, resumed_at) DESC) = 1) AS p
WHERE runs.run_id = p.run_id AND runs.ended_at IS NULL
"""

_SAVE_OFFSETS = """
INSERT INTO _segments
SELECT unnest($names::VARCHAR[]), unnest($offsets::BIGINT[])
ON CONFLICT (name) DO UPDATE SET "offset" = excluded."offset"
"""

# Rows of segment files deleted by an earlier ingest.
_PRUNE_OFFSETS = "DELETE FROM _segments WHERE name NOT IN (SELECT unnest($names::VARCHAR[]))"


# The statements of a pass, in order, each with the event kinds it reads: a pass
# runs only those whose kinds it holds.
_RUN_KINDS = ("run_started", "run_finished", "model_call", "tool_call", "tool_call_started")
_STATEMENTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (_RUN_KINDS, _PASS_RUNS),
    (_RUN_KINDS, _UPDATE_RUNS),
    (_RUN_KINDS, _INSERT_RUNS),
    (("model_call",), _INSERT_MODEL_CALLS),
    (("tool_call",), _INSERT_TOOL_CALLS),
    (("tool_call_started",), _INSERT_TOOL_STARTS),
    (("run_resumed",), _INSERT_DECISIONS),
    (("context_window",), _INSERT_CONTEXT_WINDOWS),
    (("memory_retrieval",), _INSERT_RETRIEVALS),
    (("memory_op",), _INSERT_MEMORY_OPS),
    (("eval_case_result",), _INSERT_EVAL_RESULTS),
    (("eval_run",), _INSERT_EVAL_RUNS),
    (("breaker_transition",), _INSERT_BREAKER_TRANSITIONS),
    (("alert",), _INSERT_ALERTS),
    (("run_paused", "run_resumed"), _PAUSES),
    ((REQUEST_KIND,), INSERT_REQUESTS),
)


@dataclass
class _Segment:
    name: str
    path: Path
    fd: int
    dead: bool  # no writer holds it: it will not grow any more
    offset: int  # bytes already ingested
    size: int
    done: bool = False  # nothing left to read in this ingest


@dataclass
class _Pass:
    files: list[str]  # files to load
    copies: list[str]  # the scratch copies among them
    advanced: list[_Segment]  # the segments it reads
    size: int  # bytes


def ingest(con: duckdb.DuckDBPyConnection, workspace: Path) -> int:
    """Ingest every complete event line of `workspace`; return how many events."""
    directory = segments_dir(workspace)
    if not directory.is_dir():
        return 0
    scratch = workspace / "traces"
    for stale in scratch.glob(".ingest-*"):  # left by a killed ingest; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    offsets: dict[str, int] = dict(con.execute('SELECT name, "offset" FROM _segments').fetchall())
    segments = _open_segments(directory, offsets)
    tmp = Path(tempfile.mkdtemp(prefix=".ingest-", dir=scratch))
    try:
        with _insertion_order(con, preserved=False):
            return _Passes(con, directory, segments, tmp).run()
    finally:
        for segment in segments:
            os.close(segment.fd)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _insertion_order(con: duckdb.DuckDBPyConnection, *, preserved: bool) -> Iterator[None]:
    """Set DuckDB's ``preserve_insertion_order`` for the block, then restore it (the
    connection is the notebook's too, whose queries expect the default)."""
    (before,) = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0]
    con.execute(f"SET preserve_insertion_order = {str(preserved).lower()}")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {str(bool(before)).lower()}")


def _open_segments(directory: Path, offsets: dict[str, int]) -> list[_Segment]:
    segments: list[_Segment] = []
    now = time.time()
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name.endswith(CREATING_SUFFIX):
            try:
                if now - entry.stat().st_mtime > _STALE_CREATING_S:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass
            continue
        if not entry.name.endswith(SEGMENT_SUFFIX):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        # Check liveness before measuring: a dead segment cannot grow afterwards.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            dead = True
        except BlockingIOError:
            dead = False
        size = os.fstat(fd).st_size
        segments.append(
            _Segment(entry.name, Path(entry.path), fd, dead, offsets.get(entry.name, 0), size)
        )
    return segments


def _read_chunk(segment: _Segment, budget: int) -> bytes:
    """Complete lines from the segment's offset, about `budget` bytes at most."""
    available = segment.size - segment.offset
    data = os.pread(segment.fd, min(available, budget), segment.offset)
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) < available:  # one line longer than the budget
        data += os.pread(segment.fd, available - len(data), segment.offset + len(data))
        end = data.rfind(b"\n") + 1
    if segment.offset + len(data) == segment.size:
        segment.done = True
        if segment.dead and end < len(data):
            log.warning(
                "trace segment %s: its writer stopped in the middle of an event; "
                "ignoring the incomplete last %d bytes",
                segment.name,
                len(data) - end,
            )
    return data[:end]


def _whole(segment: _Segment) -> bool:
    """Whether the segment can be parsed in place: its writer is gone, nothing of it
    was read yet, it ends with a complete line and fits in one pass."""
    return (
        segment.dead
        and segment.offset == 0
        and 0 < segment.size <= _PASS_BYTES
        and os.pread(segment.fd, 1, segment.size - 1) == b"\n"
    )


def _plan_pass(segments: list[_Segment], tmp: Path) -> _Pass:
    """Choose the next pass's lines (copying them to `tmp` where they cannot be read in
    place)."""
    budget = _PASS_BYTES
    files: list[str] = []
    copies: list[str] = []
    advanced: list[_Segment] = []
    for segment in segments:
        if segment.done:
            continue
        if segment.offset >= segment.size:
            segment.done = True
            continue
        if budget <= 0:
            break
        if _whole(segment):
            if segment.size > budget:
                break
            files.append(str(segment.path))
            budget -= segment.size
            segment.offset = segment.size
            segment.done = True
        else:
            chunk = _read_chunk(segment, budget)
            budget -= len(chunk)
            if chunk:
                path = tmp / segment.name
                path.write_bytes(chunk)
                files.append(str(path))
                copies.append(str(path))
            segment.offset += len(chunk)
        advanced.append(segment)
    return _Pass(files, copies, advanced, _PASS_BYTES - budget)


class _Passes:
    """The passes of one ingest, in order. Passes share a transaction until it holds
    ``_TRANSACTION_BYTES``: each commit rewrites the tables' last, partly filled row
    group, so fewer commits cost less."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        directory: Path,
        segments: list[_Segment],
        tmp: Path,
    ) -> None:
        self.con = con
        self.directory = directory
        self.segments = segments
        self.listed = [s.name for s in segments]
        self.tmp = tmp
        self.claimed: set[str] = set()  # segments to delete once their transaction commits

    def run(self) -> int:
        con = self.con
        finished: list[_Segment] = []  # by the open transaction
        size = -1  # bytes in the open transaction; -1: none is open
        total = 0
        try:
            while True:
                step = _plan_pass(self.segments, self.tmp)
                done = [
                    s for s in self.segments if s.dead and s.done and s.name not in self.claimed
                ]
                if not step.advanced and not done:
                    break
                self.claimed.update(s.name for s in done)
                if size < 0:
                    con.execute("BEGIN TRANSACTION")
                    size = 0
                total += self._write(con, self._load(con, step), step.advanced, done)
                finished += done
                size += step.size
                if size >= _TRANSACTION_BYTES:
                    size = -1
                    con.execute("COMMIT")
                    _delete(finished)
                    finished = []
            if size >= 0:
                size = -1
                con.execute("COMMIT")
                _delete(finished)
        except BaseException:
            if size >= 0:
                con.execute("ROLLBACK")
            raise
        return total

    def _load(self, con: duckdb.DuckDBPyConnection, step: _Pass) -> dict[str | None, int]:
        """Parse the pass's lines into temporary tables; return the lines per kind.

        The lines are parsed without keeping their order (about a third faster on two
        cores), unless a call id repeats: then the batch is parsed again in order, as
        the first line of an id is the one that counts."""
        if not step.files:
            return {}
        try:
            con.execute(_LOAD_BATCH, {"files": step.files, "columns": _CORE_COLUMNS})
            kinds = _kinds(con)
            if con.execute(_REPEATED_IDS).fetchall()[0][0]:
                with _insertion_order(con, preserved=True):
                    con.execute(_LOAD_BATCH, {"files": step.files, "columns": _CORE_COLUMNS})
                con.execute(_DROP_REPEATED_IDS)
            rare = [k for k in _FIELDS if k in kinds and k not in _CORE_KINDS]
            if rare:
                con.execute(
                    _LOAD_RARE, {"files": step.files, "columns": _RARE_COLUMNS, "kinds": rare}
                )
            if REQUEST_KIND in kinds:
                con.execute(LOAD_REQUESTS, {"files": step.files, "columns": REQUEST_COLUMNS})
        finally:
            for name in step.copies:
                os.unlink(name)
        return kinds

    def _write(
        self,
        con: duckdb.DuckDBPyConnection,
        kinds: dict[str | None, int],
        advanced: list[_Segment],
        finished: list[_Segment],
    ) -> int:
        """Write one pass in the open transaction; return its events."""
        for reads, statement in _STATEMENTS:
            if not kinds.keys().isdisjoint(reads):
                con.execute(statement)
        gone = _gone_writers(self.directory, finished, self.claimed)
        if gone:
            con.execute(_MARK_INTERRUPTED, {"dead": gone})
        if advanced:
            con.execute(
                _SAVE_OFFSETS,
                {"names": [s.name for s in advanced], "offsets": [s.offset for s in advanced]},
            )
        con.execute(_PRUNE_OFFSETS, {"names": self.listed})
        return sum(n for kind, n in kinds.items() if kind in EVENT_KINDS)


def _delete(finished: list[_Segment]) -> None:
    """Delete the segments a committed transaction finished. Only after the commit: a
    crash before this leaves a file to be finished again (idempotently) by the next
    ingest."""
    for segment in finished:
        segment.path.unlink(missing_ok=True)


def _kinds(con: duckdb.DuckDBPyConnection) -> dict[str | None, int]:
    """Lines per event kind in the batch; warn about lines that are not events."""
    kinds: dict[str | None, int] = dict(
        con.execute("SELECT kind, count(*) FROM _batch GROUP BY kind").fetchall()
    )
    unknown = sum(n for kind, n in kinds.items() if kind not in (*EVENT_KINDS, REQUEST_KIND))
    if unknown:
        log.warning("ignored %d trace lines that are not events agentlab knows", unknown)
    return kinds


def _gone_writers(directory: Path, finished: list[_Segment], claimed: set[str]) -> list[str]:
    """The writers of the `finished` segments that left no other segment than those
    being finished (`claimed`): they are gone, as a live writer creates its next
    segment before it lets go of the last."""
    gone = {writer_of(s.name) for s in finished}
    for name in os.listdir(directory) if gone else ():
        if name.endswith(SEGMENT_SUFFIX) and name not in claimed:
            gone.discard(writer_of(name))
    return sorted(gone)
