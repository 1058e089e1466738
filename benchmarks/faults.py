"""Agents against every fault mode of the fault server: nothing lost, nothing
unexplained, no call to an endpoint whose breaker is open, and how fast it recovers.

For each mode: a fresh fault server on 127.0.0.1 and a traced agent (fast retries,
a breaker that opens after 3 failures and probes after 0.5 s); `--runs-per-mode` runs
in the fault, then the server turns healthy and runs go on until one completes
(`recovery_s`). Every figure is read back from the trace store. The last line is JSON.

    python benchmarks/faults.py [--runs-per-mode 13]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

from agentlab import ReActAgent, RetryPolicy, tool
from agentlab.models.openai_compat import OpenAIModel
from agentlab.resilience import BreakerConfig, breaker_registry
from agentlab.testing import FaultServer
from agentlab.tracing import TraceStore

MODES: dict[str, dict[str, Any]] = {
    "rate_limit": {"retry_after": 0.05},
    "server_error": {},
    "unavailable": {},
    "hang": {"seconds": 30},
    "malformed": {},
    "invalid_arguments": {},
    "unknown_tool": {},
    "flapping": {"fail": 2, "every": 3},
}
PARTS = ("What went wrong", "What was tried", "What to do next")


@tool
def lookup(order_id: str) -> dict:
    """Look up an order.

    Args:
        order_id: The order id.
    """
    return {"order_id": order_id, "status": "shipped"}


def run_mode(mode: str, params: dict[str, Any], runs: int, workspace: str) -> dict[str, Any]:
    breaker_registry().reset()
    store = TraceStore(workspace)
    with FaultServer() as server:
        model = OpenAIModel("fault", base_url=server.base_url, timeout=0.2)
        agent = ReActAgent(
            model,
            [lookup],
            name=f"faults-{mode}",
            trace=store,
            max_steps=4,
            max_retries=1,
            retry=RetryPolicy(attempts=2, initial=0.01, max_wait=0.05),
            breaker=BreakerConfig(failure_threshold=3, window_s=60, cooldown_s=0.5),
        )
        server.set_mode(mode, **params)
        ids, escaped = [], 0
        for i in range(runs):
            try:
                ids.append(agent.run_sync(f"Where is order O-{i}?").run_id)
            except Exception:
                escaped += 1
        server.set_mode("ok")
        healthy_at, recovery_s = time.time(), None
        for i in range(40):
            result = agent.run_sync(f"Where is order R-{i}?")
            ids.append(result.run_id)
            if result.ok:
                recovery_s = round(time.time() - healthy_at, 3)
                break
            time.sleep(0.05)
        log = list(server.log)
    rows = store.sql(
        "select run_id, status, explanation, failure is not null from runs "
        "where agent = ? and run_id in (select unnest(?::VARCHAR[]))",
        [f"faults-{mode}", ids],
    )
    terminal = [r for r in rows if r[1] not in ("running", "interrupted")]
    unexplained = [
        r for r in terminal if r[1] != "completed" and not (r[3] and all(p in r[2] for p in PARTS))
    ]
    moves = store.sql(
        "select to_state, epoch(started_at) from breaker_transitions "
        "where run_id in (select unnest(?::VARCHAR[])) order by started_at",
        [ids],
    )
    open_windows, opened = [], None
    for state, at in moves:
        if state == "open":
            opened = at
        elif opened is not None:
            open_windows.append((opened, at))
            opened = None
    if opened is not None:
        open_windows.append((opened, float("inf")))
    while_open = sum(1 for t, _, _ in log if any(a < t < b for a, b in open_windows))
    return {
        "runs": len(ids) + escaped,
        "runs_lost": len(ids) + escaped - len(terminal),
        "unexplained": len(unexplained),
        "calls_while_open": while_open,
        "breaker_opened": any(state == "open" for state, _ in moves),
        "recovery_s": recovery_s,
        "requests": len(log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-mode", type=int, default=13)
    args = parser.parse_args()
    modes = {}
    with tempfile.TemporaryDirectory() as workspace:
        for mode, params in MODES.items():
            figures = modes[mode] = run_mode(mode, params, args.runs_per_mode, workspace)
            print(mode, figures, flush=True)
    total = {
        f"{key}_total": sum(m[key] for m in modes.values())
        for key in ("runs_lost", "unexplained", "calls_while_open")
    }
    print(
        json.dumps({"runs_total": sum(m["runs"] for m in modes.values()), **total, "modes": modes})
    )


if __name__ == "__main__":
    main()
