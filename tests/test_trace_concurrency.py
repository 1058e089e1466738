"""Many writer processes and a querying process share one workspace."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentlab.tracing import TraceStore, TraceWriter, close_writers

WORKER = str(Path(__file__).with_name("_trace_worker.py"))


@pytest.fixture(autouse=True)
def _fresh_writers():
    close_writers()
    yield
    close_writers()


@pytest.mark.timeout(110)
def test_writers_and_a_reader_in_parallel_processes(tmp_path):
    writers, runs, steps = 4, 200, 3
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, WORKER, "query", str(tmp_path), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                WORKER,
                "bulk",
                str(tmp_path),
                f"w{i}",
                str(runs),
                str(steps),
                "0.01",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert out.strip() == "bulk done"
        stop.touch()
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
    finally:
        for proc in [*procs, reader]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    seen = json.loads(out)
    assert len(seen) >= 5  # the reader saw the writers at work
    assert len({tuple(counts) for counts in seen}) >= 3
    for before, after in itertools.pairwise(seen):
        assert all(a >= b for a, b in zip(after, before, strict=True)), (before, after)

    total = writers * runs
    store = TraceStore(tmp_path)
    assert store.sql(
        "SELECT (SELECT count(*) FROM runs WHERE status = 'completed'),"
        " (SELECT count(*) FROM model_calls), (SELECT count(*) FROM tool_calls),"
        " (SELECT sum(input_tokens) FROM model_calls)"
    ) == [(total, total * steps, total * steps, total * sum(10 * s for s in range(1, steps + 1)))]
    assert seen[-1] <= [total, total * steps, total * steps]
    assert os.listdir(tmp_path / "traces" / "segments") == []


@pytest.mark.timeout(30)
def test_threads_share_one_writer(tmp_path):
    from _trace_worker import emit_step, start

    store = TraceStore(tmp_path)
    for durable in (True, False):
        writer = TraceWriter(tmp_path, durable=durable)

        def work(n: int, writer: TraceWriter = writer, durable: bool = durable) -> None:
            run_id = f"{durable}-{n}"
            start(writer, run_id)
            for step in range(1, 51):
                emit_step(writer, run_id, step)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        writer.close()
    assert store.sql("SELECT count(*) FROM runs") == [(16,)]
    assert store.sql("SELECT count(*) FROM model_calls") == [(16 * 50,)]


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_writes_its_own_segment(tmp_path):
    from _trace_worker import emit_step, start

    store = TraceStore(tmp_path)
    writer = store.writer(durable=False)
    start(writer, "parent")  # buffered: the child must not write it again
    parent_segment = writer.path
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            start(writer, "child")
            emit_step(writer, "child", 1)
            writer.flush()
            code = 0 if writer.path != parent_segment else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    emit_step(writer, "parent", 1)
    assert writer.path == parent_segment
    assert store.sql("SELECT run_id, status FROM runs ORDER BY run_id") == [
        ("child", "interrupted"),
        ("parent", "running"),
    ]
    assert store.sql("SELECT count(*) FROM model_calls") == [(2,)]
