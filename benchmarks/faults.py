"""Agents against every fault mode of the fault server: no run lost, no failure
unexplained, no request to an endpoint whose breaker is open, and how fast it recovers.

For each mode a fresh fault server on 127.0.0.1 and a traced ReActAgent over it
(fast retries; a breaker that opens after 3 failures and probes after 0.5 s); then
`--runs-per-mode` runs in the fault, `--pause` s apart so that half-open probes meet
the fault too; then the server turns healthy and, once the cooldown is over, runs go
on (20 at most) until one completes: `recovery_s` is the time from the switch to that
completion. Every figure is read back from the trace store; the server counts the
requests it received. The last line is JSON.

    python benchmarks/faults.py [--runs-per-mode 13] [--pause 0.1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from agentlab import Budget, ReActAgent, RetryPolicy, tool
from agentlab.models.openai_compat import OpenAIModel
from agentlab.resilience import BreakerConfig, breaker_registry
from agentlab.testing import FaultServer
from agentlab.tracing import TraceStore

#: Each mode's parameters and the client timeout (s) of its endpoint.
MODES: dict[str, tuple[dict[str, Any], float]] = {
    "rate_limit": ({"retry_after": 0.05}, 2.0),
    "server_error": ({}, 2.0),
    "unavailable": ({}, 2.0),
    "hang": ({"seconds": 30}, 0.2),
    "malformed": ({}, 2.0),
    "invalid_arguments": ({}, 2.0),
    "unknown_tool": ({}, 2.0),
    "flapping": ({"fail": 2, "every": 3}, 2.0),
}
#: Modes where the breaker must open: the server fails every request, or (flapping)
#: 2 of 3 (successes in between do not erase failures). The others answer 200.
OPENS = ("rate_limit", "server_error", "unavailable", "hang", "malformed", "flapping")
PARTS = ("What went wrong", "What was tried", "What to do next")
RETRY = RetryPolicy(attempts=2, initial=0.01, max_wait=0.05, deadline=5)
BREAKER = BreakerConfig(failure_threshold=3, window_s=60, cooldown_s=0.5)
BUDGET = Budget(wall_time=10)  # a run never takes longer, whatever the fault
RECOVERY_TRIES = 20


@tool
def lookup(order_id: str) -> dict:
    """Look up an order.

    Args:
        order_id: The order id.
    """
    return {"order_id": order_id, "status": "shipped"}


def _runs(agent: ReActAgent, prefix: str, count: int, pause: float = 0.0) -> tuple[list[Any], int]:
    """`count` runs, `pause` s apart; the results, and how many raised out of run_sync."""
    results, escaped = [], 0
    for i in range(count):
        if i:
            time.sleep(pause)
        try:
            results.append(agent.run_sync(f"Where is order {prefix}-{i}?"))
        except Exception as exc:  # a lost run: count it and say why
            escaped += 1
            print(f"  run_sync raised {type(exc).__name__}: {exc}", flush=True)
    return results, escaped


def _open_windows(moves: list[tuple[str, str, float]]) -> list[tuple[float, float]]:
    """(opened, left open) epoch intervals of the model breaker, from its transitions;
    an opening with no recorded exit lasts its cooldown (then it is half-open)."""
    windows, opened = [], None
    for _from, to, at in moves:
        if to == "open":
            if opened is not None:
                windows.append((opened, at))
            opened = at
        elif opened is not None:
            windows.append((opened, at))
            opened = None
    if opened is not None:
        windows.append((opened, opened + BREAKER.cooldown_s))
    return windows


def run_mode(mode: str, runs: int, pause: float, workspace: Path) -> dict[str, Any]:
    """Fault runs, then recovery runs, against one fresh server; the mode's figures."""
    params, timeout = MODES[mode]
    breaker_registry().reset()
    store = TraceStore(workspace / mode)
    with FaultServer() as server:
        model = OpenAIModel("fault", base_url=server.base_url, timeout=timeout)
        agent = ReActAgent(
            model,
            [lookup],
            name=f"faults-{mode}",
            trace=store,
            max_steps=4,
            max_retries=1,
            retry=RETRY,
            breaker=BREAKER,
            budget=BUDGET,
        )
        server.set_mode(mode, **params)
        results, escaped = _runs(agent, "O", runs, pause)
        server.set_mode("ok")
        healthy_at = time.time()
        time.sleep(BREAKER.cooldown_s)  # the last opening was before the switch
        recovery_s = None
        for i in range(RECOVERY_TRIES):
            tried, lost = _runs(agent, f"R{i}", 1)
            results += tried
            escaped += lost
            if tried and tried[0].status == "completed":
                recovery_s = round(time.time() - healthy_at, 3)
                break
            time.sleep(0.05)
        log = server.log
    ids = [r.run_id for r in results]
    rows = store.sql(
        "SELECT run_id, status, explanation, failure IS NOT NULL FROM runs "
        "WHERE list_contains(?, run_id)",
        [ids],
    )
    stored = {row[0]: row for row in rows}
    terminal = [row for row in rows if row[1] != "running"]
    unexplained = [
        row
        for row in terminal
        if row[1] != "completed" and not (row[3] and row[2] and all(p in row[2] for p in PARTS))
    ]
    mismatched = [
        r.run_id for r in results if r.run_id in stored and stored[r.run_id][1] != r.status
    ]
    breaker = f"model:{model.name}@{model.endpoint}"
    moves = store.sql(
        "SELECT from_state, to_state, epoch_us(started_at) / 1e6 FROM breaker_transitions "
        "WHERE breaker = ? AND list_contains(?, run_id) ORDER BY started_at",
        [breaker, ids],
    )
    windows = _open_windows(moves)
    while_open = [t for t, _, _ in log if any(a < t < b for a, b in windows)]
    attempts = [
        a
        for (text,) in store.sql(
            "SELECT attempts FROM model_calls WHERE list_contains(?, run_id)", [ids]
        )
        for a in json.loads(text or "[]")
    ]
    refused = sum(1 for a in attempts if "Circuit breaker" in (a.get("error") or ""))
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row[1]] = statuses.get(row[1], 0) + 1
    started = len(results) + escaped
    figures = {
        "runs": started,
        "runs_lost": started - len(terminal),
        "unexplained": len(unexplained),
        "calls_while_open": len(while_open),
        "breaker_opened": any(f == "closed" and t == "open" for f, t, _ in moves),
        "recovery_s": recovery_s,
    }
    detail = {
        "statuses": statuses,
        "requests": len(log),
        "attempts_sent": len(attempts) - refused,
        "attempts_refused": refused,
        "transitions": [f"{f}->{t}" for f, t, _ in moves],
        "status_mismatch": mismatched,
        "unexplained_ids": [row[0] for row in unexplained],
    }
    return {**figures, "_detail": detail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-mode", type=int, default=13)
    parser.add_argument(
        "--pause",
        type=float,
        default=0.1,
        help="seconds between fault runs (0.1: the fault spans a few cooldowns, so "
        "half-open probes meet it too)",
    )
    args = parser.parse_args()
    modes: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as workspace:
        for mode in MODES:
            started = time.perf_counter()
            figures = run_mode(mode, args.runs_per_mode, args.pause, Path(workspace))
            detail = figures.pop("_detail")
            modes[mode] = figures
            expected = mode in OPENS
            note = "" if figures["breaker_opened"] == expected else " (UNEXPECTED)"
            print(
                f"{mode}: {figures['runs']} runs, {figures['runs_lost']} lost, "
                f"{figures['unexplained']} unexplained, {figures['calls_while_open']} requests "
                f"while open, breaker opened: {figures['breaker_opened']}{note}, "
                f"recovery {figures['recovery_s']} s; statuses {detail['statuses']}; "
                f"{detail['requests']} requests served, {detail['attempts_sent']} attempts "
                f"sent / {detail['attempts_refused']} refused by the breaker; "
                f"transitions {' '.join(detail['transitions']) or 'none'}; "
                f"status mismatches {detail['status_mismatch'] or 'none'}; "
                f"unexplained {detail['unexplained_ids'] or 'none'}; "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
    print(f"all modes: {time.perf_counter() - t0:.1f} s", flush=True)
    totals = {
        f"{key}_total": sum(m[key] for m in modes.values())
        for key in ("runs", "runs_lost", "unexplained", "calls_while_open")
    }
    print(json.dumps({**totals, "modes": modes}))


if __name__ == "__main__":
    main()
