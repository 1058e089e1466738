"""A process killed mid-run loses none of its completed steps; a killed ingest loses nothing."""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentlab.tracing import TraceStore

WORKER = str(Path(__file__).with_name("_trace_worker.py"))


def start_worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, *args], stdout=subprocess.PIPE, text=True, bufsize=1
    )


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout: float) -> None:
    """Read the worker's stdout until `expected` (fails after `timeout` seconds)."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"the worker did not print {expected!r} within {timeout} s")
        try:
            if lines.get(timeout=remaining) == expected:
                return
        except queue.Empty:
            continue


@pytest.mark.timeout(60)
def test_sigkill_mid_run_keeps_every_completed_step(tmp_path):
    proc = start_worker("steps", str(tmp_path), "doomed")
    try:
        wait_for_line(proc, "step 3 done", timeout=30)
        store = TraceStore(tmp_path)
        assert store.sql("SELECT status FROM runs") == [("running",)]  # a live writer
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    model_steps = [r[0] for r in store.sql("SELECT step FROM model_calls ORDER BY step")]
    tool_steps = [r[0] for r in store.sql("SELECT step FROM tool_calls ORDER BY step")]
    assert model_steps[:3] == [1, 2, 3] and tool_steps[:3] == [1, 2, 3]
    recorded = max(model_steps + tool_steps)
    run = store.run("doomed")
    assert run is not None
    assert run["status"] == "interrupted"
    assert run["steps"] == recorded
    assert run["input_tokens"] == sum(10 * s for s in model_steps)
    assert run["explanation"] == (
        "the process writing this run stopped before it finished (killed or crashed); "
        f"steps up to {recorded} were recorded"
    )
    assert list((tmp_path / "traces" / "segments").iterdir()) == []


@pytest.mark.timeout(110)
def test_ingest_killed_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    runs, steps = 1500, 3
    writer = start_worker("bulk", str(tmp_path), "bulk", str(runs), str(steps))
    assert writer.wait(timeout=60) == 0
    rng = random.Random(7)
    for _ in range(6):
        proc = start_worker("ingest", str(tmp_path))
        time.sleep(rng.uniform(0.3, 1.2))
        proc.kill()
        proc.wait(timeout=10)

    store = TraceStore(tmp_path)
    store.ingest()
    assert store.sql(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM runs"
        " WHERE status = 'completed'), (SELECT count(*) FROM model_calls),"
        " (SELECT count(*) FROM tool_calls)"
    ) == [(runs, runs, runs * steps, runs * steps)]
    assert os.listdir(tmp_path / "traces" / "segments") == []
    assert [p.name for p in (tmp_path / "traces").iterdir()] == ["segments"]
