"""The kill matrix of test_kill_recovery.py, run as its own process (a fresh
interpreter: forking the pytest process, whose earlier tests left threads and
DuckDB state behind, is not safe). Prints one JSON line: kill points tried, how
many times a person was asked; exits non-zero with the reason when a check fails.

    python tests/_kill_matrix.py WORKDIR

SIGKILL a 5-step run with two side-effecting tools at every kill point (after
every trace event, and before and after the effect inside every tool call), then
again at every point of the recovery, and recover: every side effect happens
exactly once. The refund tool takes an idempotency key, so a refund whose outcome
is unknown is made again with the same key (the payment service deduplicates); the
email tool takes none, so an email whose outcome is unknown goes to a person, who
checks the outbox: it is never sent twice.

Each process is a fork of this one (the agent module already imported), killed
by its own SIGKILL at the armed point; the recovery runs in a new fork, as a
restarted service would.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _kill_agent as kill_agent

INPUT = "Refund O-1 and O-2 and email both customers."
CHILD_TIMEOUT_S = 60.0


def _fork(fn: Callable[[], None]) -> str:
    """Run `fn` in a forked child; 'killed' (SIGKILL), 'ok', or 'error'."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"a child process ran over {CHILD_TIMEOUT_S} s")
        time.sleep(0.002)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    return "ok" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "error"


def _start(ws: Path, state: Path, kill_at: int) -> Callable[[], None]:
    def child() -> None:
        kill_agent.arm(state, kill_at)
        kill_agent.build_agent(ws).run_sync(INPUT)
        (state / "points").write_text(str(kill_agent.points()))

    return child


def _recover(ws: Path, state: Path, kill_at: int) -> Callable[[], None]:
    """Resume every run that did not finish; a person settles unknown outcomes by
    looking at the outbox. Writes the runs' final states to state/final.json."""

    def child() -> None:
        from agentlab.tracing import TraceStore

        kill_agent.arm(state, kill_at)
        agent = kill_agent.build_agent(ws)
        store = TraceStore(ws)
        unfinished = store.sql(
            "SELECT run_id, status, pending FROM runs WHERE status IN ('interrupted', 'paused')"
        )
        for run_id, status, pending in unfinished:
            if status == "interrupted":
                result = agent.resume_sync(run_id, store=store)
                status, pending = result.status, result.pending
            else:  # a recovery that paused for a person, then was killed
                pending = json.loads(pending)
            while status == "paused":
                assert pending["kind"] == "outcome_unknown", pending
                assert pending["tool"] == "send_email", "only the tool without a key is asked"
                with (state / "asked.jsonl").open("a") as f:
                    f.write(json.dumps(pending) + "\n")
                subject = json.loads(pending["arguments"])["subject"]
                sent = any(m["subject"] == subject for m in kill_agent.read("outbox.jsonl"))
                if sent:  # the person found it in the outbox
                    result = agent.resume_sync(run_id, answer="it was sent", store=store)
                else:
                    result = agent.resume_sync(run_id, approve=True, store=store)
                status, pending = result.status, result.pending
        rows = store.sql("SELECT run_id, status, output FROM runs")
        (state / "final.json").write_text(json.dumps(rows))
        (state / "points").write_text(str(kill_agent.points()))

    return child


def _check(state: Path, where: str) -> int:
    """Every side effect happened exactly once and the run completed; returns how
    many times a person was asked."""
    kill_agent.arm(state, 0)
    ledger = kill_agent.read("ledger.jsonl")
    outbox = kill_agent.read("outbox.jsonl")
    assert sorted(r["order_id"] for r in ledger) == ["O-1", "O-2"], f"{where}: ledger {ledger}"
    assert sorted(m["subject"] for m in outbox) == ["Refund O-1", "Refund O-2"], (
        f"{where}: outbox {outbox}"
    )
    final = json.loads((state / "final.json").read_text())
    assert len(final) == 1 and final[0][1] == "completed", f"{where}: {final}"
    assert final[0][2] == "Refunded O-1 and O-2 and told both customers.", where
    asked = state / "asked.jsonl"
    return len(asked.read_text().splitlines()) if asked.exists() else 0


def _points_of_a_whole_run(tmp_path: Path) -> int:
    ws, state = tmp_path / "clean-ws", tmp_path / "clean"
    state.mkdir()
    assert _fork(_start(ws, state, 0)) == "ok"
    return int((state / "points").read_text())


def _kill_then_kill_the_recovery(tmp_path: Path, first: int) -> tuple[int, int]:
    """Kill the run at point `first`; then, for each point of its recovery in turn,
    kill the recovery there and recover again. Returns (trials, times a person was
    asked)."""
    snapshot = tmp_path / f"k{first}"
    ws, state = snapshot / "ws", snapshot / "state"
    state.mkdir(parents=True)
    assert _fork(_start(ws, state, first)) == "killed", f"kill point {first} not reached"
    tried = asked = 0
    second = 0
    while True:
        second += 1
        trial = tmp_path / f"k{first}-{second}"
        shutil.copytree(snapshot, trial)
        t_ws, t_state = trial / "ws", trial / "state"
        outcome = _fork(_recover(t_ws, t_state, second))
        tried += 1
        if outcome == "killed":
            assert _fork(_recover(t_ws, t_state, 0)) == "ok", f"{first}/{second}"
        else:
            assert outcome == "ok", f"recovery after kill point {first} failed"
        asked += _check(t_state, f"killed at {first}, then at {second}")
        shutil.rmtree(trial)
        if outcome != "killed":
            return tried, asked


def main(workdir: Path) -> dict[str, int]:
    """Every first kill point, each then with every kill point of its recovery."""
    import duckdb  # noqa: F401 - imported once here, not in each forked child

    total = _points_of_a_whole_run(workdir)
    assert total == 25, f"16 events, a point in lookup, two in each side effect; got {total}"
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=2, mp_context=fork) as pool:  # one per core
        results = list(
            pool.map(_kill_then_kill_the_recovery, [workdir] * total, range(1, total + 1))
        )
    return {
        "first_kill_points": total,
        "kill_points_tried": sum(r[0] for r in results),
        "asked_a_person": sum(r[1] for r in results),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
