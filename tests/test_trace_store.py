"""The trace store: events into DuckDB tables, migrations, queries, ingest rules."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from agentlab.errors import TraceStoreError, UserError
from agentlab.events import (
    AlertEvent,
    ContextWindowEvent,
    MemoryOpEvent,
    MemoryRetrievalEvent,
    ModelCallEvent,
    RunFinished,
    RunStarted,
    ToolCallEvent,
    dump_event,
)
from agentlab.messages import AssistantMessage, ToolCall, UserMessage, dump_messages
from agentlab.tracing import TraceStore, TraceWriter, close_writers, get_writer
from agentlab.tracing import ingest as ingest_module
from agentlab.tracing import writer as writer_module
from agentlab.tracing.queries import RunFilter
from agentlab.tracing.schema import MIGRATIONS
from agentlab.workspace import resolve_workspace

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000.25


@pytest.fixture(autouse=True)
def _fresh_writers():
    close_writers()
    yield
    close_writers()


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def run_started(run_id: str = "r1") -> RunStarted:
    return RunStarted(
        run_id=run_id,
        agent="adder",
        model="m1",
        input="1+2?",
        started_at=T0,
        metadata={"user": "ann", "tags": ["x"]},
    )


def model_call(run_id: str = "r1", step: int = 1) -> ModelCallEvent:
    return ModelCallEvent(
        id=f"{run_id}-m{step}",
        run_id=run_id,
        step=step,
        model="m1",
        messages=[UserMessage(content="1+2?")],
        context_messages=2,
        tools=["add", "mul"],
        response=AssistantMessage(
            content="adding", tool_calls=(ToolCall(id="c1", name="add", arguments='{"a":1}'),)
        ),
        input_tokens=120,
        output_tokens=30,
        cost=0.0025,
        latency_ms=812.5,
        started_at=T0 + 1,
    )


def tool_call(run_id: str = "r1", step: int = 1) -> ToolCallEvent:
    return ToolCallEvent(
        id=f"{run_id}-t{step}",
        run_id=run_id,
        step=step,
        tool="add",
        arguments='{"a":1',
        result=None,
        status="invalid_arguments",
        error="bad JSON",
        latency_ms=0.5,
        started_at=T0 + 2,
    )


def run_finished(run_id: str = "r1") -> RunFinished:
    return RunFinished(
        run_id=run_id,
        status="max_steps",
        output=None,
        explanation="ran out of steps",
        steps=1,
        input_tokens=120,
        output_tokens=30,
        cost=0.0025,
        latency_ms=3000.0,
        ended_at=T0 + 3,
    )


def test_round_trip_of_every_event_kind(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer()
    for event in (run_started(), model_call(), tool_call()):
        writer.emit(event)

    run = store.run("r1")
    assert run is not None
    assert run["status"] == "running"
    assert (run["agent"], run["model"], run["input"]) == ("adder", "m1", "1+2?")
    assert run["started_at"] == utc(T0)
    assert run["metadata"] == {"user": "ann", "tags": ["x"]}
    assert run["ended_at"] is None

    [mc] = store.sql(
        "SELECT id, run_id, step, model, messages, context_messages, tools, response,"
        " input_tokens, output_tokens, cost, latency_ms, status, error, started_at"
        " FROM model_calls"
    )
    assert mc[:4] == ("r1-m1", "r1", 1, "m1")
    assert json.loads(mc[4]) == json.loads(dump_messages([UserMessage(content="1+2?")]))
    assert mc[5:7] == (2, ["add", "mul"])
    assert json.loads(mc[7]) == model_call().response.model_dump(mode="json")
    assert mc[8:] == (120, 30, 0.0025, 812.5, "ok", None, utc(T0 + 1))
    # JSON columns are queryable.
    assert store.sql("SELECT response->>'$.tool_calls[0].name' FROM model_calls") == [("add",)]

    [tc] = store.sql(
        "SELECT id, run_id, step, tool, arguments, result, status, error, latency_ms, "
        "started_at, cache, saved_cost, saved_latency_ms FROM tool_calls"
    )
    assert tc == (
        "r1-t1",
        "r1",
        1,
        "add",
        '{"a":1',
        None,
        "invalid_arguments",
        "bad JSON",
        0.5,
        utc(T0 + 2),
        None,  # not cacheable: no cache outcome, nothing saved
        None,
        None,
    )

    writer.emit(run_finished())
    run = store.run("r1")
    assert run is not None
    assert run["status"] == "max_steps"
    assert run["explanation"] == "ran out of steps"
    assert (run["steps"], run["input_tokens"], run["output_tokens"]) == (1, 120, 30)
    assert (run["cost"], run["latency_ms"], run["ended_at"]) == (0.0025, 3000.0, utc(T0 + 3))
    assert run["agent"] == "adder"  # the finish does not erase the start


def test_round_trip_of_memory_events_sessions_and_cache_outcomes(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer()
    started = run_started()
    started.session, started.user = "s-9", "ann"
    cached = tool_call()
    cached.status, cached.cache, cached.saved_cost, cached.saved_latency_ms = (
        "ok",
        "hit",
        0.01,
        40.0,
    )
    hits = [{"id": "m1", "text": "likes DHL", "score": 0.82, "kind": "preference"}]
    for event in (
        started,
        ContextWindowEvent(
            id="r1-1",
            run_id="r1",
            step=1,
            budget=500,
            tokens=420,
            counter="estimate",
            kept=[0, 1, 4, 5],
            dropped=[2],
            summarized=[3],
            summary="asked about O-1",
            pinned=["be brief"],
            memories=["m1"],
            summary_input_tokens=50,
            summary_output_tokens=9,
            summary_cost=0.0,
            started_at=T0 + 1,
        ),
        MemoryRetrievalEvent(
            id="r1-1-r1",
            run_id="r1",
            step=1,
            source="auto",
            mode="hybrid",
            query="carrier?",
            filters={"user": "ann"},
            k=3,
            hits=hits,
            entered=["m1"],
            latency_ms=4.5,
            started_at=T0 + 1,
        ),
        MemoryOpEvent(
            id="r1-1-o1",
            run_id="r1",
            step=1,
            tier="short_term",
            op="set",
            namespace="adder/s-9",
            key="cart",
            ttl=60.0,
            started_at=T0 + 2,
        ),
        cached,
    ):
        writer.emit(event)
    assert store.sql("SELECT session, user_id FROM runs") == [("s-9", "ann")]
    assert store.sql("SELECT cache, saved_cost, saved_latency_ms FROM tool_calls") == [
        ("hit", 0.01, 40.0)
    ]
    [window] = store.sql(
        "SELECT budget, tokens, kept, dropped, summarized, summary, pinned, memories, "
        "summary_input_tokens, started_at FROM context_windows"
    )
    assert window == (
        500,
        420,
        [0, 1, 4, 5],
        [2],
        [3],
        "asked about O-1",
        ["be brief"],
        ["m1"],
        50,
        utc(T0 + 1),
    )
    [retrieval] = store.sql(
        "SELECT source, mode, query, filters, hits, entered FROM memory_retrievals"
    )
    assert retrieval[:3] == ("auto", "hybrid", "carrier?")
    assert json.loads(retrieval[3]) == {"user": "ann"} and json.loads(retrieval[4]) == hits
    assert retrieval[5] == ["m1"]
    assert store.sql("SELECT tier, op, namespace, key, hit, ttl FROM memory_ops") == [
        ("short_term", "set", "adder/s-9", "cart", None, 60.0)
    ]


def test_finish_ingested_before_start_still_makes_one_run(tmp_path):
    store = TraceStore(tmp_path)
    late = TraceWriter(tmp_path, durable=False)  # holds RunStarted in memory
    late.emit(run_started())
    store.writer().emit(run_finished())
    assert store.sql("SELECT status, agent FROM runs") == [("max_steps", None)]
    late.close()
    assert store.sql("SELECT status, agent, started_at FROM runs") == [
        ("max_steps", "adder", utc(T0))
    ]


def test_ingest_counts_new_events_once(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer()
    writer.emit(run_started())
    writer.emit(model_call())
    assert store.ingest() == 2
    assert store.ingest() == 0
    writer.emit(tool_call())
    assert store.ingest() == 1
    assert store.sql(
        "SELECT count(*) FROM model_calls UNION ALL SELECT count(*) FROM tool_calls"
    ) == [(1,), (1,)]


def test_ingest_in_many_small_transactions_is_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_module, "_PASS_BYTES", 700)  # a few events per pass
    store = TraceStore(tmp_path)
    writers = [TraceWriter(tmp_path) for _ in range(3)]
    for i, writer in enumerate(writers):
        for step in range(1, 6):
            writer.emit(model_call(f"r{i}", step))
    writers[0].close()
    assert store.ingest() == 15
    assert store.sql("SELECT run_id, count(*) FROM model_calls GROUP BY ALL ORDER BY 1") == [
        ("r0", 5),
        ("r1", 5),
        ("r2", 5),
    ]
    assert len(list((tmp_path / "traces" / "segments").iterdir())) == 2


def test_migrations_are_versioned_and_idempotent(tmp_path):
    TraceStore(tmp_path).sql("SELECT 1")
    store = TraceStore(tmp_path)  # reopen: nothing is applied twice
    rows = store.sql("SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(number, name) for number, name, _ in MIGRATIONS]
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    tables = {r[0] for r in store.sql("SELECT table_name FROM information_schema.tables")}
    assert {"runs", "model_calls", "tool_calls", "schema_migrations"} <= tables


def test_a_store_from_a_newer_agentlab_is_refused(tmp_path):
    store = TraceStore(tmp_path)
    store.sql("INSERT INTO schema_migrations VALUES (999, 'future', now()::TIMESTAMP)")
    with pytest.raises(TraceStoreError, match="schema version 999"):
        store.sql("SELECT 1")


def test_bad_sql_is_a_clear_error_and_loses_nothing(tmp_path):
    store = TraceStore(tmp_path)
    store.writer().emit(run_started())
    with pytest.raises(TraceStoreError) as info:
        store.sql("SELECT nope FROM runs")
    message = str(info.value)
    assert "nope" in message
    assert "query: SELECT nope FROM runs" in message
    assert store.sql("SELECT run_id FROM runs") == [("r1",)]
    with pytest.raises(TraceStoreError, match="query: SELEC"):
        store.df("SELEC 1")
    assert store.sql("SELECT count(*) FROM runs WHERE run_id = ?", ["r1"]) == [(1,)]


def test_dataframes_and_helpers(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer()
    for event in (run_started(), model_call(), tool_call(), model_call(step=2), run_finished()):
        writer.emit(event)
    frame = store.df("SELECT run_id, status FROM runs")
    assert frame.to_dict("records") == [{"run_id": "r1", "status": "max_steps"}]
    runs = store.runs(limit=5)
    assert list(runs["run_id"]) == ["r1"]
    steps = store.steps("r1")
    assert list(zip(steps["step"], steps["kind"], steps["name"], strict=True)) == [
        (1, "model_call", "m1"),
        (1, "tool_call", "add"),
        (2, "model_call", "m1"),
    ]
    assert steps["input"][1] == '{"a":1' and steps["output"].isna()[1]
    assert store.run("missing") is None
    assert store.sql("CREATE TEMP TABLE x (a INT)") == []


def test_a_partial_last_line_waits_until_it_is_complete(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer()
    writer.emit(run_started())
    line = dump_event(model_call()) + b"\n"
    fd = os.open(writer.path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line[:25])  # a writer in the middle of an event
        assert store.sql("SELECT count(*) FROM model_calls") == [(0,)]
        os.write(fd, line[25:])
    finally:
        os.close(fd)
    assert store.sql("SELECT id FROM model_calls") == [("r1-m1",)]
    assert store.ingest() == 0


def test_dead_segment_with_a_torn_last_line(tmp_path, caplog):
    store = TraceStore(tmp_path)
    writer = TraceWriter(tmp_path)
    writer.emit(run_started())
    writer.emit(model_call())
    segment = writer.path
    with open(segment, "ab") as f:
        f.write(b'{"kind":"tool_call","id":"torn')
    writer.close()
    with caplog.at_level(logging.WARNING, logger="agentlab.tracing"):
        assert store.ingest() == 2
    assert "incomplete last 30 bytes" in caplog.text
    assert not segment.exists()
    run = store.run("r1")
    assert run is not None
    assert run["status"] == "interrupted"
    assert run["steps"] == 1 and run["input_tokens"] == 120
    assert run["explanation"] == (
        "the process writing this run stopped before it finished (killed or crashed); "
        "steps up to 1 were recorded"
    )


def test_lines_that_are_not_events_are_skipped(tmp_path, caplog):
    store = TraceStore(tmp_path)
    writer = store.writer()
    writer.emit(run_started())
    with open(writer.path, "ab") as f:
        f.write(b"this is not json\n" + b'{"kind": "from_the_future"}\n')
    writer.emit(model_call())
    with caplog.at_level(logging.WARNING, logger="agentlab.tracing"):
        assert store.ingest() == 2
    assert "ignored 2 trace lines" in caplog.text
    assert store.sql("SELECT count(*) FROM model_calls") == [(1,)]


def test_failed_ingest_rolls_back_and_the_next_one_is_exact(tmp_path, monkeypatch):
    store = TraceStore(tmp_path)
    writer = TraceWriter(tmp_path)
    writer.emit(run_started())
    writer.emit(model_call())
    writer.close()
    monkeypatch.setattr(ingest_module, "_MARK_INTERRUPTED", "SELECT * FROM no_such_table")
    with pytest.raises(TraceStoreError, match="no_such_table"):
        store.ingest()
    monkeypatch.undo()
    assert store.ingest() == 2
    assert store.sql("SELECT status FROM runs") == [("interrupted",)]
    assert store.sql("SELECT count(*) FROM model_calls") == [(1,)]
    assert list((tmp_path / "traces" / "segments").iterdir()) == []


def test_buffered_writer_is_flushed_by_queries_of_its_own_process(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer(durable=False)
    writer.emit(run_started())
    assert os.path.getsize(writer.path) == 0
    assert store.sql("SELECT count(*) FROM runs") == [(1,)]


def test_one_shared_writer_per_workspace_whose_durability_only_rises(tmp_path):
    buffered = get_writer(tmp_path, durable=False)
    assert TraceStore(tmp_path).writer() is buffered
    assert buffered.durable
    assert get_writer(tmp_path, durable=False).durable
    assert get_writer(tmp_path / "other") is not buffered


def test_closed_writer_reopens_a_new_segment(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer()
    writer.emit(run_started())
    first = writer.path
    writer.close()
    writer.emit(model_call())
    assert writer.path is not None and writer.path != first
    assert store.sql("SELECT count(*) FROM model_calls") == [(1,)]


def test_lock_timeout_is_a_clear_error(tmp_path):
    store = TraceStore(tmp_path, lock_timeout=0.2)
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(TraceStoreError, match="busy"):
            store.sql("SELECT 1")
    finally:
        os.close(fd)
    assert store.sql("SELECT 1") == [(1,)]


def test_workspace_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTLAB_WORKSPACE", str(tmp_path / "env"))
    assert resolve_workspace() == tmp_path / "env"
    assert (tmp_path / "env").is_dir()
    assert resolve_workspace(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("AGENTLAB_WORKSPACE")
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace() == tmp_path / ".agentlab"
    assert TraceStore().path == tmp_path / ".agentlab" / "traces.duckdb"


def test_steps_and_cost_by_day(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer()
    day = 86400.0
    for run_id, agent, t in (("r1", "adder", T0), ("r2", "adder", T0 + 60), ("r3", "muller", T0)):
        started = run_started(run_id)
        started.agent, started.started_at = agent, t
        writer.emit(started)
        for step in (1, 2):
            call = model_call(run_id, step)
            call.started_at = t + step
            writer.emit(call)
        writer.emit(tool_call(run_id))
    late = model_call("r1", 3)
    late.started_at = T0 + day  # the next UTC day
    writer.emit(late)

    steps = store.steps("r1")
    assert list(zip(steps["step"], steps["kind"], strict=True)) == [
        (1, "model_call"),
        (1, "tool_call"),
        (2, "model_call"),
        (3, "model_call"),
    ]
    assert steps["cost"].tolist()[::2] == [0.0025, 0.0025] and steps["latency_ms"][1] == 0.5

    days = store.cost_by_day()
    days["day"] = days["day"].dt.date
    first = utc(T0).date()
    assert days.to_dict("records") == [
        {
            "day": first,
            "agent": "adder",
            "model_calls": 4,
            "input_tokens": 480,
            "output_tokens": 120,
            "cost": pytest.approx(0.01),
        },
        {
            "day": first,
            "agent": "muller",
            "model_calls": 2,
            "input_tokens": 240,
            "output_tokens": 60,
            "cost": pytest.approx(0.005),
        },
        {
            "day": utc(T0 + day).date(),
            "agent": "adder",
            "model_calls": 1,
            "input_tokens": 120,
            "output_tokens": 30,
            "cost": pytest.approx(0.0025),
        },
    ]
    since = datetime.fromtimestamp(T0 + day - 1, UTC)  # aware datetimes are converted
    assert store.cost_by_day(since=since)["model_calls"].tolist() == [1]
    assert store.cost_by_day(until=utc(T0 + 2), agent="adder")["model_calls"].tolist() == [1]


def three_runs(store: TraceStore) -> None:
    """r1 (adder, max_steps, $0.0025, an alert, two tools in step 1), r2 (adder,
    completed, $0.005, a minute later), r3 (muller, unknown cost, a day later)."""
    writer = store.writer()
    for run_id, agent, t, status, cost in (
        ("r1", "adder", T0, "max_steps", 0.0025),
        ("r2", "adder", T0 + 60, "completed", 0.005),
        ("r3", "muller", T0 + 86400, "completed", None),
    ):
        started, finished = run_started(run_id), run_finished(run_id)
        started.agent, started.started_at = agent, t
        finished.status, finished.cost = status, cost  # type: ignore[assignment]
        writer.emit(started)
        writer.emit(finished)
    writer.emit(model_call("r1", 1))
    writer.emit(tool_call("r1", 1))
    second = tool_call("r1", 1)
    second.id, second.tool, second.status, second.latency_ms = "r1-t1b", "mul", "ok", 9.5
    writer.emit(second)
    writer.emit(
        AlertEvent(
            id="a1", run_id="r1", step=1, alert="repeated_call", message="again", started_at=T0 + 2
        )
    )
    writer.emit(
        AlertEvent(
            id="a2", run_id="r1", step=1, alert="no_progress", message="stuck", started_at=T0 + 3
        )
    )


def test_runs_page_filters_pages_and_counts(tmp_path):
    store = TraceStore(tmp_path)
    three_runs(store)

    def ids(filters: RunFilter | None = None, **kwargs: object) -> list[str]:
        return store.runs_page(filters, **kwargs)["run_id"].tolist()  # type: ignore[arg-type]

    assert ids() == ["r3", "r2", "r1"] and store.count_runs() == 3
    assert ids(limit=2, offset=1) == ["r2", "r1"] and ids(limit=2, offset=3) == []
    assert ids(order="cost") == ["r2", "r1", "r3"], "unknown cost last"
    for filters, expected in (
        (RunFilter(agent="adder"), ["r2", "r1"]),
        (RunFilter(status="completed"), ["r3", "r2"]),
        (RunFilter(agent="adder", status="completed"), ["r2"]),
        (RunFilter(since=utc(T0 + 60)), ["r3", "r2"]),
        (RunFilter(until=utc(T0 + 60)), ["r1"]),
        (RunFilter(since=datetime.fromtimestamp(T0 + 1, UTC), until=utc(T0 + 61)), ["r2"]),
        (RunFilter(min_cost=0.003), ["r2"]),
        (RunFilter(min_cost=0), ["r2", "r1"]),
        (RunFilter(alerts_only=True), ["r1"]),
        (RunFilter(agent="nobody"), []),
    ):
        assert ids(filters) == expected, filters
        assert store.count_runs(filters) == len(expected), filters
    page = store.runs_page(RunFilter(agent="adder")).to_dict("records")
    assert [r["alerts"] for r in page] == [0, 2]
    assert page[1]["input"] == "1+2?" and page[1]["status"] == "max_steps"
    assert store.run_facets() == {
        "agent": ["adder", "muller"],
        "status": ["completed", "max_steps"],
    }


def test_runs_page_cuts_the_input(tmp_path):
    store = TraceStore(tmp_path)
    started = run_started("long")
    started.input = "x" * 1000
    store.writer().emit(started)
    assert store.runs_page()["input"].tolist() == ["x" * 200]


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda s: s.runs_page(limit=0), "limit must be a whole number of at least 1"),
        (lambda s: s.runs_page(offset=-1), "offset must be a whole number of at least 0"),
        (lambda s: s.runs_page(order="oldest"), "order must be one of ['cost', 'newest']"),
        (lambda s: s.count_runs({"agent": "a"}), "filters must be an agentlab.tracing.queries"),
        (lambda s: s.costliest_tools(limit=True), "limit must be a whole number"),
        (lambda s: RunFilter(min_cost=-1), "give a dollar amount of 0 or more"),
        (lambda s: RunFilter(min_cost=float("nan")), "give a dollar amount"),
        (lambda s: RunFilter(since="2024-01-01"), "give a datetime.datetime"),
        (lambda s: RunFilter(since=utc(T0), until=utc(T0)), "must be before until"),
        (lambda s: RunFilter(alerts_only=1), "give True or False"),  # type: ignore[arg-type]
    ],
)
def test_paged_queries_reject_bad_arguments(tmp_path, call, says):
    with pytest.raises(UserError) as info:
        call(TraceStore(tmp_path))
    assert says in str(info.value)


def test_cost_by_model_and_costliest_tools(tmp_path):
    store = TraceStore(tmp_path)
    three_runs(store)
    writer = store.writer()
    writer.emit(model_call("r2", 1))
    served = model_call("r2", 2)
    served.served_by = "backup"
    writer.emit(served)
    writer.emit(tool_call("r2", 2))
    models = [tuple(r) for r in store.cost_by_model().itertuples(index=False)]
    assert models == [
        ("m1", 2, 2, 240, 60, pytest.approx(0.005)),
        ("backup", 1, 1, 120, 30, pytest.approx(0.0025)),
    ]  # (model, model_calls, runs, input_tokens, output_tokens, cost)
    assert store.cost_by_model(since=utc(T0 + 1.5))["model_calls"].sum() == 0, "all started at T0+1"
    tools = [tuple(r) for r in store.costliest_tools().itertuples(index=False)]
    # add: r1 step 1 (shared with mul: 0.00125) + r2 step 2 (alone: 0.0025)
    assert tools == [
        ("add", 2, 2, 1.0, 0.5, pytest.approx(0.00375)),
        ("mul", 1, 0, 9.5, 9.5, pytest.approx(0.00125)),
    ]  # (tool, calls, errors, latency_ms, mean_latency_ms, model_cost)
    assert store.costliest_tools(limit=1)["tool"].tolist() == ["add"]


def test_a_call_id_written_twice_is_stored_once(tmp_path):
    store = TraceStore(tmp_path)
    writer = store.writer()
    writer.emit(run_started())
    first = model_call()
    writer.emit(first)
    again = model_call()
    again.input_tokens = 999
    writer.emit(again)  # twice in one ingest: the first line wins
    writer.emit(tool_call())
    writer.emit(tool_call())
    assert store.sql("SELECT input_tokens FROM model_calls") == [(120,)]
    writer.emit(again)  # and again in a later ingest
    writer.emit(tool_call())
    assert store.ingest() == 2
    assert store.sql("SELECT count(*), max(input_tokens) FROM model_calls") == [(1, 120)]
    assert store.sql("SELECT count(*) FROM tool_calls") == [(1,)]


def test_in_a_large_batch_parsed_out_of_order_the_first_line_of_a_repeated_id_still_wins(
    tmp_path,
):
    # Ingest parses lines in parallel without keeping their order: lines of the next
    # segment often land before the end of the previous one. A repeated call id makes
    # it parse the batch again in order, so the first line of each id counts.
    store = TraceStore(tmp_path)
    writer = store.writer(durable=False)
    writer.emit(run_started())
    step = 0
    for _ in range(20):
        for _ in range(2000):
            step += 1
            writer.emit(model_call(step=step))
        writer.flush()
        writer._rotate()  # the last call again, first in the next segment
        again = model_call(step=step)
        again.input_tokens = 999
        writer.emit(again)
    writer.flush()
    assert store.ingest() == 1 + 20 * 2001  # lines read
    assert store.sql("SELECT count(*), max(input_tokens) FROM model_calls") == [(40_000, 120)]
    # the notebook's queries on the same connection keep DuckDB's default
    assert store.sql("SELECT current_setting('preserve_insertion_order')") == [(True,)]


def test_a_live_writer_moves_on_to_new_segments_and_ingest_deletes_the_full_ones(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(writer_module, "ROTATE_BYTES", 1000)
    store = TraceStore(tmp_path)
    writer = TraceWriter(tmp_path)
    writer.emit(run_started())
    for step in range(1, 11):
        writer.emit(model_call(step=step))
    segments = sorted(p.name for p in (tmp_path / "traces" / "segments").iterdir())
    assert len(segments) >= 4
    assert len({writer_module.writer_of(name) for name in segments}) == 1
    assert writer.path is not None and writer.path.name == segments[-1]
    assert store.sql("SELECT status, (SELECT count(*) FROM model_calls) FROM runs") == [
        ("running", 10)  # the writer lives on in its newest segment: not interrupted
    ]
    assert [p.name for p in (tmp_path / "traces" / "segments").iterdir()] == [segments[-1]]
    writer.close()
    assert store.sql("SELECT status, steps FROM runs") == [("interrupted", 10)]
    assert list((tmp_path / "traces" / "segments").iterdir()) == []


def test_migration_8_keeps_the_calls_of_an_older_store(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "traces.duckdb"))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL)"
    )
    for number, name, sql in MIGRATIONS[:7]:
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [number, name])
    con.execute("INSERT INTO model_calls (id, run_id, step, cost) VALUES ('m1', 'r1', 1, 0.5)")
    con.execute("INSERT INTO tool_calls (id, run_id, step, tool) VALUES ('t1', 'r1', 1, 'add')")
    con.close()
    store = TraceStore(tmp_path)
    assert store.sql("SELECT id, run_id, step, cost FROM model_calls") == [("m1", "r1", 1, 0.5)]
    assert store.sql("SELECT id, tool FROM tool_calls") == [("t1", "add")]
    assert sorted(r[0] for r in store.sql("SELECT index_name FROM duckdb_indexes()")) == [
        "model_calls_run_id",
        "tool_calls_run_id",
    ]
    with pytest.raises(TraceStoreError, match="NOT NULL"):
        store.sql("INSERT INTO model_calls (id, step) VALUES ('m2', 1)")


def test_the_file_is_free_for_other_programs_between_queries(tmp_path):
    store = TraceStore(tmp_path)
    store.writer().emit(run_started())
    assert store.sql("SELECT count(*) FROM runs") == [(1,)]
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]);"
            " print(con.execute('SELECT run_id FROM runs').fetchall())",
            str(store.path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "[('r1',)]"
