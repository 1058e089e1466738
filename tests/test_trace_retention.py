"""Retention: pruning old runs with all their rows, compacting the store's file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentlab.cli import app
from agentlab.errors import UserError
from agentlab.events import (
    AlertEvent,
    BreakerTransitionEvent,
    ContextWindowEvent,
    EvalCaseResult,
    EvalRunSummary,
    Event,
    MemoryOpEvent,
    MemoryRetrievalEvent,
    ModelCallEvent,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    ToolCallEvent,
    ToolCallStarted,
)
from agentlab.messages import AssistantMessage, UserMessage
from agentlab.tracing import TraceStore, TraceWriter, close_writers
from agentlab.tracing.retention import parse_age

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).with_name("_trace_worker.py"))
DAY = 86400.0
# Every table a run's rows land in (eval_runs has no run_id: summaries stay).
RUN_TABLES = (
    "runs",
    "model_calls",
    "tool_calls",
    "tool_call_starts",
    "run_decisions",
    "context_windows",
    "memory_retrievals",
    "memory_ops",
    "alerts",
    "breaker_transitions",
    "eval_results",
)


@pytest.fixture(autouse=True)
def _fresh_writers():
    close_writers()
    yield
    close_writers()


def run_events(run_id: str, t: float, *, finish: bool = True) -> list[Event]:
    """A run at time `t` with one row in each table that points at runs."""
    events: list[Event] = [
        RunStarted(run_id=run_id, agent="a", model="m", input="hi", started_at=t),
        ModelCallEvent(
            id=f"{run_id}-1",
            run_id=run_id,
            step=1,
            model="m",
            messages=[UserMessage(content="hi")],
            context_messages=1,
            tools=["t"],
            response=AssistantMessage(content="ok"),
            input_tokens=10,
            output_tokens=2,
            cost=0.5,
            latency_ms=3.0,
            started_at=t + 1,
        ),
        ToolCallStarted(
            key=f"{run_id}-1-c",
            run_id=run_id,
            step=1,
            tool="t",
            call_id="c",
            arguments="{}",
            started_at=t + 2,
        ),
        ToolCallEvent(
            id=f"{run_id}-1-0",
            run_id=run_id,
            step=1,
            tool="t",
            arguments="{}",
            result="r",
            latency_ms=1.0,
            started_at=t + 2,
        ),
        ContextWindowEvent(
            id=f"{run_id}-1",
            run_id=run_id,
            step=1,
            budget=100,
            tokens=10,
            counter="estimate",
            kept=[0],
            dropped=[],
            summarized=[],
            started_at=t + 1,
        ),
        MemoryRetrievalEvent(
            id=f"{run_id}-1-r",
            run_id=run_id,
            step=1,
            source="auto",
            mode="semantic",
            query="q",
            k=1,
            hits=[],
            entered=[],
            latency_ms=1.0,
            started_at=t + 1,
        ),
        MemoryOpEvent(
            id=f"{run_id}-1-o",
            run_id=run_id,
            step=1,
            tier="short_term",
            op="get",
            namespace="n",
            key="k",
            started_at=t + 1,
        ),
        AlertEvent(
            id=f"{run_id}-1-a",
            run_id=run_id,
            step=1,
            alert="no_progress",
            message="m",
            started_at=t + 1,
        ),
        BreakerTransitionEvent(
            id=f"{run_id}-b",
            run_id=run_id,
            step=1,
            breaker="model:m",
            from_state="closed",
            to_state="open",
            failures=3,
            reason="r",
            started_at=t + 1,
        ),
        RunResumed(run_id=run_id, decision={"key": f"{run_id}-1-c"}, resumed_at=t + 2),
        EvalCaseResult(
            eval_id=f"e-{run_id}",
            case_id="c1",
            run_id=run_id,
            passed=True,
            score=1.0,
            explanation="",
            scorer={"name": "s"},
            calls_expected=1,
            calls_made=1,
            calls_matched=1,
            steps=1,
            latency_ms=3.0,
            ended_at=t + 3,
        ),
        EvalRunSummary(
            eval_id=f"e-{run_id}",
            name="n",
            dataset="d",
            agent="a",
            model="m",
            cases=1,
            metrics={"task_completion_rate": 1.0},
            started_at=t,
            ended_at=t + 3,
        ),
    ]
    if finish:
        events.append(
            RunFinished(
                run_id=run_id,
                status="completed",
                output="done",
                steps=1,
                input_tokens=10,
                output_tokens=2,
                cost=0.5,
                latency_ms=3000.0,
                ended_at=t + 3,
            )
        )
    return events


def emit(writer: TraceWriter, events: list[Event]) -> None:
    for event in events:
        writer.emit(event)


def counts(store: TraceStore) -> dict[str, int]:
    tables = (*RUN_TABLES, "eval_runs")
    query = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)
    return dict(zip(tables, store.sql(query)[0], strict=True))


def run_ids(store: TraceStore, table: str) -> set[str]:
    return {r[0] for r in store.sql(f"SELECT DISTINCT run_id FROM {table}")}


def old_and_new_store(path: Path) -> TraceStore:
    """Old runs (40 days): finished, interrupted, paused, still running; new ones (1 hour)."""
    store = TraceStore(path)
    now = time.time()
    old = now - 40 * DAY
    dead = TraceWriter(path)
    emit(dead, run_events("old-done", old) + run_events("old-killed", old, finish=False))
    dead.close()  # its writer is gone: old-killed is interrupted
    live = store.writer()
    emit(live, run_events("new-done", now - 3600) + run_events("old-running", old, finish=False))
    emit(live, run_events("old-paused", old, finish=False))
    live.emit(RunPaused(run_id="old-paused", step=1, pending={}, checkpoint={}, paused_at=old + 4))
    # A transition seen by no run, and a call of a run the store never had.
    live.emit(
        BreakerTransitionEvent(
            id="b-none",
            run_id="",
            step=0,
            breaker="tool:t",
            from_state="closed",
            to_state="open",
            failures=1,
            reason="r",
            started_at=old,
        )
    )
    live.emit(run_events("orphan", old)[1])
    return store


def test_prune_deletes_exactly_the_old_runs_and_their_rows(tmp_path):
    store = old_and_new_store(tmp_path)
    statuses = dict(store.sql("SELECT run_id, status FROM runs"))
    assert statuses == {
        "old-done": "completed",
        "old-killed": "interrupted",
        "old-running": "running",
        "old-paused": "paused",
        "new-done": "completed",
    }
    before = counts(store)

    report = store.prune(timedelta(days=30))

    assert report.runs == 2 and not report.dry_run
    kept = {"new-done", "old-running", "old-paused"}
    assert run_ids(store, "runs") == kept
    after = counts(store)
    for table in RUN_TABLES:
        assert run_ids(store, table) == kept, table
        assert report.rows[table] == before[table] - after[table], table
    assert report.rows["model_calls"] == 3  # old-done, old-killed, the orphan call
    assert report.rows["breaker_transitions"] == 3  # the run-less transition too
    assert counts(store)["eval_runs"] == before["eval_runs"] == 5  # summaries stay
    assert "deleted 2 runs" in str(report) and "compacted" in str(report)


def test_dry_run_counts_the_same_and_changes_nothing(tmp_path):
    store = old_and_new_store(tmp_path)
    before = counts(store)
    dry = store.prune(timedelta(days=30), dry_run=True)
    assert dry.dry_run and dry.compacted is None
    assert counts(store) == before
    assert str(dry).startswith("would delete 2 runs")
    real = store.prune(timedelta(days=30))
    assert real.rows == dry.rows
    assert counts(store) != before


def test_nothing_old_means_nothing_deleted_and_no_compaction(tmp_path):
    store = old_and_new_store(tmp_path)
    report = store.prune(timedelta(days=60))
    assert set(report.rows.values()) == {0} and report.compacted is None


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30d", timedelta(days=30)),
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1.5D", timedelta(days=1.5)),
    ],
)
def test_ages(text, age):
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["30", "3x", "d", "", "-5d", "0d", "30 days", "1e3d"])
def test_bad_ages_are_clear_errors(text):
    with pytest.raises(UserError, match=r"is not an age: .*e\.g\. 30d, 7d or 12h"):
        parse_age(text)


def test_bad_older_than_on_the_command_line_and_in_python(tmp_path):
    result = CliRunner().invoke(
        app, ["traces", "prune", "--older-than", "3x", "--workspace", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--older-than" in result.output and "'3x' is not an age" in result.output
    with pytest.raises(UserError, match=r"positive datetime\.timedelta, not 30"):
        TraceStore(tmp_path).prune(30)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="positive"):
        TraceStore(tmp_path).prune(timedelta(0))


def test_cli_prune_dry_run_then_prune_and_compact(tmp_path):
    old_and_new_store(tmp_path)
    close_writers()  # old-running is now interrupted: three old runs go
    runner = CliRunner()
    args = ["--older-than", "30d", "--workspace", str(tmp_path)]
    dry = runner.invoke(app, ["traces", "prune", "--dry-run", *args])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("would delete 3 runs last active before")
    done = runner.invoke(app, ["traces", "prune", *args])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("deleted 3 runs") and "compacted the trace store" in done.output
    compact = runner.invoke(app, ["traces", "compact", "--workspace", str(tmp_path)])
    assert compact.exit_code == 0 and compact.output.startswith("compacted the trace store")
    assert run_ids(TraceStore(tmp_path), "runs") == {"new-done", "old-paused"}


def many_runs(path: Path, runs: int, days_ago: float) -> None:
    """`runs` finished runs of one model call and one tool call, `days_ago` days ago."""
    writer = TraceWriter(path, durable=False)
    t = time.time() - days_ago * DAY
    kinds = (RunStarted, ModelCallEvent, ToolCallEvent, RunFinished)
    for i in range(runs):
        emit(writer, [e for e in run_events(f"r{days_ago:g}-{i}", t + i) if isinstance(e, kinds)])
    writer.close()


def snapshot(store: TraceStore) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: store.sql(f"SELECT * FROM {table} ORDER BY ALL")
        for table in (*RUN_TABLES, "eval_runs", "schema_migrations", "_segments")
    }


def test_compaction_keeps_every_row_and_shrinks_the_file(tmp_path):
    many_runs(tmp_path, 1500, days_ago=40)
    many_runs(tmp_path, 1500, days_ago=1)
    store = TraceStore(tmp_path)
    assert store.ingest() > 0
    report = store.prune(timedelta(days=30), compact=False)
    assert report.runs == 1500 and report.compacted is None
    size = store.path.stat().st_size
    rows = snapshot(store)
    indexes = store.sql("SELECT index_name, sql FROM duckdb_indexes() ORDER BY 1")
    compacted = store.compact()
    assert compacted.size_before == size
    assert compacted.size_after == store.path.stat().st_size < size * 0.8
    assert snapshot(store) == rows
    assert store.sql("SELECT index_name, sql FROM duckdb_indexes() ORDER BY 1") == indexes
    assert [p.name for p in tmp_path.iterdir() if "compact" in p.name] == []
    with pytest.raises(Exception, match="Duplicate key"):  # constraints came along
        store.sql("INSERT INTO runs (run_id, status) VALUES ('r1-0', 'completed')")


def test_a_killed_compaction_leaves_the_store_whole(tmp_path):
    many_runs(tmp_path, 50, days_ago=1)
    store = TraceStore(tmp_path)
    rows = snapshot(store)
    (tmp_path / ".traces.compact.duckdb").write_bytes(b"half a copy")
    store.compact()
    assert snapshot(store) == rows


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_prune_while_another_process_writes_loses_none_of_its_runs(tmp_path):
    many_runs(tmp_path, 300, days_ago=40)
    store = TraceStore(tmp_path, lock_timeout=60)
    writer = subprocess.Popen(
        [sys.executable, WORKER, "bulk", str(tmp_path), "w", "300", "3", "0.005"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pruned = prunes = 0
        while writer.poll() is None:
            pruned += store.prune(timedelta(days=30)).runs
            prunes += 1
        out, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    assert writer.returncode == 0, err
    assert out.strip() == "bulk done"
    assert pruned == 300 and prunes >= 3  # the writer wrote through several prunes
    assert store.sql("SELECT count(*), count(*) FILTER (WHERE status = 'completed') FROM runs") == [
        (300, 300)
    ]
    assert store.sql("SELECT count(*) FROM model_calls") == [(900,)]
    assert store.sql("SELECT count(*) FROM tool_calls") == [(900,)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_benchmark_runs_small_and_prints_its_figures():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "trace_store.py"), "--spans", "20000"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for key in (
        "ingest_spans_per_s",
        "run_query_ms",
        "dashboard_query_ms",
        "store_mb_per_million_spans",
        "prune_s",
        "compact_s",
        "store_mb_before_prune",
        "store_mb_after_prune",
        "store_mb_after_compact",
    ):
        assert figures[key] > 0, key
    assert figures["spans"] >= 20000
    assert 0.4 < figures["pruned_spans"] / figures["spans"] < 0.6
    assert figures["store_mb_after_compact"] < figures["store_mb_before_prune"]
