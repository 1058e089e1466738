"""Ingest: move complete event lines from the segment files into DuckDB.

Runs under the store's exclusive lock. For each segment it reads from the byte
offset stored in ``_segments`` up to the last complete line, loads all chunks in
one ``read_json`` pass and inserts them (runs, model and tool calls, eval results
and eval runs) with the new offsets in one transaction:
an ingest killed half-way loses and duplicates nothing. A segment whose writer
is gone (its ``flock`` can be taken) is deleted once fully ingested, and its runs
that never finished are marked ``interrupted``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentlab.events import EVENT_KINDS
from agentlab.tracing.writer import CREATING_SUFFIX, SEGMENT_SUFFIX, segments_dir

if TYPE_CHECKING:
    import duckdb

__all__ = ["ingest"]

log = logging.getLogger("agentlab.tracing")

_PASS_BYTES = 64 << 20  # read about this much per transaction
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


def _ts(column: str) -> str:
    """SQL turning float epoch seconds into a UTC TIMESTAMP."""
    return f"make_timestamp(CAST(round({column} * 1e6) AS BIGINT))"


_LOAD = """
CREATE OR REPLACE TEMP TABLE _batch AS
SELECT * EXCLUDE (filename), parse_filename(filename) AS segment
FROM read_json($files, format = 'newline_delimited', columns = $columns, filename = true,
               ignore_errors = true, maximum_object_size = 1073741824)
"""

_INSERT_STARTED = f"""
INSERT INTO runs (run_id, agent, model, input, status, started_at, metadata, segment, session,
                  user_id, limits)
SELECT run_id, agent, model, input, 'running', {_ts("started_at")}, metadata, segment, session,
       "user", limits
FROM _batch WHERE kind = 'run_started' AND run_id IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY run_id) = 1
ON CONFLICT (run_id) DO UPDATE SET
    agent = excluded.agent, model = excluded.model, input = excluded.input,
    started_at = excluded.started_at, metadata = excluded.metadata, session = excluded.session,
    user_id = excluded.user_id, limits = excluded.limits
"""

_INSERT_MODEL_CALLS = f"""
INSERT INTO model_calls
SELECT id, run_id, step, model, messages, context_messages, tools, response,
       input_tokens, output_tokens, cost, latency_ms, status, error, {_ts("started_at")},
       attempts, served_by, route
FROM _batch
WHERE kind = 'model_call' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_TOOL_CALLS = f"""
INSERT INTO tool_calls (id, run_id, step, tool, arguments, result, status, error, latency_ms,
                        started_at, cache, saved_cost, saved_latency_ms, call_id,
                        served_by, fallback)
SELECT id, run_id, step, tool, arguments, result, status, error, latency_ms,
       {_ts("started_at")}, cache, saved_cost, saved_latency_ms, call_id,
       served_by, fallback
FROM _batch
WHERE kind = 'tool_call' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_TOOL_STARTS = f"""
INSERT INTO tool_call_starts
SELECT "key", run_id, step, tool, call_id, arguments, {_ts("started_at")}
FROM _batch
WHERE kind = 'tool_call_started' AND "key" IS NOT NULL AND run_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_DECISIONS = f"""
INSERT INTO run_decisions
SELECT run_id, decision->>'key', decision, {_ts("resumed_at")}
FROM _batch
WHERE kind = 'run_resumed' AND run_id IS NOT NULL AND decision->>'key' IS NOT NULL
ON CONFLICT DO NOTHING
"""

# Remember which segment last wrote to each run; a run the store marked
# interrupted (no ended_at) that gets new steps is running again.
_TOUCH_RUNS = """
UPDATE runs SET
    segment = t.segment,
    status = CASE WHEN runs.status = 'interrupted' AND runs.ended_at IS NULL
                  THEN 'running' ELSE runs.status END,
    explanation = CASE WHEN runs.status = 'interrupted' AND runs.ended_at IS NULL
                       THEN NULL ELSE runs.explanation END
FROM (SELECT run_id, max(segment) AS segment FROM _batch
      WHERE kind IN ('model_call', 'tool_call', 'tool_call_started') GROUP BY run_id) AS t
WHERE runs.run_id = t.run_id
"""

_INSERT_FINISHED = f"""
INSERT INTO runs (run_id, status, output, explanation, steps, input_tokens, output_tokens,
                  cost, latency_ms, ended_at, segment, failure)
SELECT run_id, status, output, explanation, steps, input_tokens, output_tokens, cost,
       latency_ms, {_ts("ended_at")}, segment, failure
FROM _batch WHERE kind = 'run_finished' AND run_id IS NOT NULL AND status IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY ended_at DESC) = 1
ON CONFLICT (run_id) DO UPDATE SET
    status = excluded.status, output = excluded.output, explanation = excluded.explanation,
    steps = excluded.steps, input_tokens = excluded.input_tokens,
    output_tokens = excluded.output_tokens, cost = excluded.cost,
    latency_ms = excluded.latency_ms, ended_at = excluded.ended_at, segment = excluded.segment,
    failure = excluded.failure, pending = NULL
"""

_MARK_INTERRUPTED = """
WITH orphans AS (
    SELECT run_id FROM runs
    WHERE status = 'running' AND segment IN (SELECT unnest($dead::VARCHAR[]))
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
FROM _batch
WHERE kind = 'context_window' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_RETRIEVALS = f"""
INSERT INTO memory_retrievals
SELECT id, run_id, step, source, mode, query, filters, k, hits, entered, latency_ms,
       {_ts("started_at")}
FROM _batch
WHERE kind = 'memory_retrieval' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_MEMORY_OPS = f"""
INSERT INTO memory_ops
SELECT id, run_id, step, tier, op, namespace, key, hit, ttl, detail, {_ts("started_at")}
FROM _batch
WHERE kind = 'memory_op' AND id IS NOT NULL AND run_id IS NOT NULL AND step IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_EVAL_RESULTS = f"""
INSERT INTO eval_results
SELECT eval_id, case_id, run_id, passed, score, explanation, scorer, tags, calls_expected,
       calls_made, calls_matched, steps, cost, latency_ms, {_ts("ended_at")}
FROM _batch WHERE kind = 'eval_case_result' AND eval_id IS NOT NULL AND case_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_EVAL_RUNS = f"""
INSERT INTO eval_runs
SELECT eval_id, name, dataset, agent, model, cases, metrics, metadata, {_ts("started_at")},
       {_ts("ended_at")}
FROM _batch WHERE kind = 'eval_run' AND eval_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_BREAKER_TRANSITIONS = f"""
INSERT INTO breaker_transitions
SELECT id, run_id, step, breaker, from_state, to_state, failures, reason, {_ts("started_at")}
FROM _batch WHERE kind = 'breaker_transition' AND id IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_ALERTS = f"""
INSERT INTO alerts
SELECT id, run_id, step, alert, message, CAST(detail AS JSON), stopped, {_ts("started_at")}
FROM _batch WHERE kind = 'alert' AND id IS NOT NULL AND run_id IS NOT NULL
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
FROM (SELECT run_id, kind, pending, checkpoint, segment FROM _batch
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


@dataclass
class _Segment:
    name: str
    path: Path
    fd: int
    dead: bool  # no writer holds it: it will not grow any more
    offset: int  # bytes already ingested
    size: int
    done: bool = False  # nothing left to read in this ingest


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
    listed = [s.name for s in segments]
    total = 0
    tmp = Path(tempfile.mkdtemp(prefix=".ingest-", dir=scratch))
    try:
        while True:
            ingested, more = _ingest_pass(con, segments, listed, tmp)
            total += ingested
            if not more:
                break
    finally:
        for segment in segments:
            os.close(segment.fd)
        shutil.rmtree(tmp, ignore_errors=True)
    return total


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


def _ingest_pass(
    con: duckdb.DuckDBPyConnection, segments: list[_Segment], listed: list[str], tmp: Path
) -> tuple[int, bool]:
    """One transaction; returns (events ingested, whether data is left for another)."""
    budget = _PASS_BYTES
    files: list[str] = []
    lines = 0
    advanced: list[_Segment] = []
    for segment in segments:
        if segment.done:
            continue
        if segment.offset >= segment.size:
            segment.done = True
            continue
        if budget <= 0:
            break
        chunk = _read_chunk(segment, budget)
        budget -= len(chunk)
        if chunk:
            path = tmp / segment.name
            path.write_bytes(chunk)
            files.append(str(path))
            lines += chunk.count(b"\n")
        segment.offset += len(chunk)
        advanced.append(segment)
    finished = [s for s in segments if s.dead and s.done and s.path.exists()]
    if not advanced and not finished:
        return 0, False

    ingested = 0
    con.execute("BEGIN TRANSACTION")
    try:
        if files:
            con.execute(_LOAD, {"files": files, "columns": _COLUMNS})
            ingested = _count_valid(con, lines)
            con.execute(_INSERT_STARTED)
            con.execute(_INSERT_MODEL_CALLS)
            con.execute(_INSERT_TOOL_CALLS)
            con.execute(_INSERT_TOOL_STARTS)
            con.execute(_INSERT_DECISIONS)
            con.execute(_TOUCH_RUNS)
            con.execute(_INSERT_FINISHED)
            con.execute(_INSERT_CONTEXT_WINDOWS)
            con.execute(_INSERT_RETRIEVALS)
            con.execute(_INSERT_MEMORY_OPS)
            con.execute(_INSERT_EVAL_RESULTS)
            con.execute(_INSERT_EVAL_RUNS)
            con.execute(_INSERT_BREAKER_TRANSITIONS)
            con.execute(_INSERT_ALERTS)
            con.execute(_PAUSES)
        if finished:
            con.execute(_MARK_INTERRUPTED, {"dead": [s.name for s in finished]})
        if advanced:
            con.execute(
                _SAVE_OFFSETS,
                {"names": [s.name for s in advanced], "offsets": [s.offset for s in advanced]},
            )
        con.execute(_PRUNE_OFFSETS, {"names": listed})
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in files:
            os.unlink(name)
    # Only after the commit: a crash before this line leaves the file to be
    # finished again (idempotently) by the next ingest.
    for segment in finished:
        segment.path.unlink(missing_ok=True)
    more = any(not s.done for s in segments)
    return ingested, more


def _count_valid(con: duckdb.DuckDBPyConnection, lines: int) -> int:
    """Events of a known kind in the batch; warn about lines that are not."""
    rows = con.execute(
        "SELECT count(*) FILTER (WHERE kind IN "
        f"({', '.join(repr(k) for k in EVENT_KINDS)})) FROM _batch"
    ).fetchall()
    valid: int = rows[0][0]
    if valid < lines:
        log.warning("ignored %d trace lines that are not events agentlab knows", lines - valid)
    return valid
