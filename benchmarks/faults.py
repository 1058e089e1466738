"""Agents against every fault mode of the fault server, and against faulty tools: no
run lost, no failure unexplained, no request to an endpoint (no call to a tool) whose
breaker is open, and how fast it recovers.

For each mode a fresh fault server on 127.0.0.1 and a traced ReActAgent over it
(fast retries; a breaker that opens after 3 failures and probes after 0.5 s); then
`--runs-per-mode` runs in the fault, `--pause` s apart so that half-open probes meet
the fault too; then the server turns healthy and, once the cooldown is over, runs go
on (20 at most) until one completes: `recovery_s` is the time from the switch to that
completion. Every figure is read back from the trace store; the server counts the
requests it received.

The tool modes (``tool_raises``, ``tool_timeout``, ``tool_huge_output``,
``tool_unserialisable``) do the same with a scripted model that calls one faulty tool
then answers, the tool's breaker configured as the model's: `calls_while_open` counts
the tool function's real invocations inside the open windows of ``tool:<name>``;
the tool then stops failing, and `recovery_s` runs to the first completed run whose
tool call succeeded. `violations` counts fault runs where the model was not shown
what it should have been: the tool's error (or the breaker's refusal) for the error
modes, a result cut to ``max_tool_result_chars`` (with the trace keeping it whole,
once) for the huge output. The last line is JSON.

    python benchmarks/faults.py [--runs-per-mode 13] [--pause 0.1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentlab import Budget, ReActAgent, RetryPolicy, tool
from agentlab.agents.records import RunResult
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
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

#: Tool modes, each with the time limit (s) of its tool (None: no limit).
TOOL_MODES: dict[str, float | None] = {
    "tool_raises": None,
    "tool_timeout": 0.05,
    "tool_huge_output": None,
    "tool_unserialisable": None,
}
#: Tool modes where the tool's breaker must open: every call fails (a result that
#: cannot be serialised is a failed call too). A huge result is a success, cut.
TOOL_OPENS = ("tool_raises", "tool_timeout", "tool_unserialisable")
HANG_S = 10  # how long the timing-out tool hangs (it is released once healthy)
HUGE_CHARS = 5_000_000
#: What the model must be shown of each fault run's tool call (besides the refusal
#: of an open breaker): text found in the tool's error, or the cut note.
SHOWN = {
    "tool_raises": "raised ConnectionError",
    "tool_timeout": "did not finish within",
    "tool_huge_output": "[result cut: the first",
    "tool_unserialisable": "cannot be sent to the model",
}
REFUSED = "circuit breaker is open"


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


def _recover(
    agent: ReActAgent, recovered: Callable[[RunResult], bool]
) -> tuple[list[Any], int, float | None]:
    """After the fault is gone, and once the cooldown is over: runs (20 at most) until
    one has `recovered`; the results, how many raised, and the time from the switch
    (when this is called) to that run's end."""
    healthy_at = time.time()
    time.sleep(BREAKER.cooldown_s)  # the last opening was before the switch
    results, escaped = [], 0
    for i in range(RECOVERY_TRIES):
        tried, lost = _runs(agent, f"R{i}", 1)
        ended = time.time()  # before `recovered` reads the trace store
        results += tried
        escaped += lost
        if tried and recovered(tried[0]):
            return results, escaped, round(ended - healthy_at, 3)
        time.sleep(0.05)
    return results, escaped, None


def _run_rows(store: TraceStore, results: list[Any]) -> dict[str, Any]:
    """The runs' rows in the trace store: which ended, which ended badly unexplained,
    which differ from what run_sync returned, and how many ended in each status."""
    ids = [r.run_id for r in results]
    rows = store.sql(
        "SELECT run_id, status, explanation, failure IS NOT NULL FROM runs "
        "WHERE list_contains(?, run_id)",
        [ids],
    )
    stored = {row[0]: row for row in rows}
    unexplained = [
        row[0]
        for row in rows
        if row[1] not in ("running", "completed")
        and not (row[3] and row[2] and all(p in row[2] for p in PARTS))
    ]
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row[1]] = statuses.get(row[1], 0) + 1
    return {
        "terminal": sum(1 for row in rows if row[1] != "running"),
        "unexplained": unexplained,
        "mismatched": [
            r.run_id for r in results if r.run_id in stored and stored[r.run_id][1] != r.status
        ],
        "statuses": statuses,
    }


def _transitions(store: TraceStore, breaker: str, ids: list[str]) -> list[Any]:
    """(from, to, epoch s) of `breaker`'s transitions seen by the runs `ids`, in order."""
    return store.sql(
        "SELECT from_state, to_state, epoch_us(started_at) / 1e6 FROM breaker_transitions "
        "WHERE breaker = ? AND list_contains(?, run_id) ORDER BY started_at",
        [breaker, ids],
    )


def _open_windows(moves: list[tuple[str, str, float]]) -> list[tuple[float, float]]:
    """(opened, left open) epoch intervals of a breaker, from its transitions;
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


def _figures(
    started: int,
    outcome: dict[str, Any],
    while_open: list[Any],
    moves: list[tuple[str, str, float]],
    recovery_s: float,
) -> dict[str, Any]:
    """A mode's figures: runs started, lost, unexplained, calls while open, recovery."""
    return {
        "runs": started,
        "runs_lost": started - outcome["terminal"],
        "unexplained": len(outcome["unexplained"]),
        "calls_while_open": len(while_open),
        "breaker_opened": any(f == "closed" and t == "open" for f, t, _ in moves),
        "recovery_s": recovery_s,
    }


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
        tried, lost, recovery_s = _recover(agent, lambda r: r.status == "completed")
        results += tried
        escaped += lost
        log = server.log
    ids = [r.run_id for r in results]
    outcome = _run_rows(store, results)
    moves = _transitions(store, f"model:{model.name}@{model.endpoint}", ids)
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
    figures = _figures(len(results) + escaped, outcome, while_open, moves, recovery_s)
    detail = {
        "statuses": outcome["statuses"],
        "requests": len(log),
        "attempts_sent": len(attempts) - refused,
        "attempts_refused": refused,
        "transitions": [f"{f}->{t}" for f, t, _ in moves],
        "status_mismatch": outcome["mismatched"],
        "unexplained_ids": outcome["unexplained"],
    }
    return {**figures, "_detail": detail}


# -- tool modes ---------------------------------------------------------------------


class FaultyTool:
    """An order-lookup tool that fails the way `mode` says until :meth:`heal`; it
    notes (epoch s) every time its function really runs."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.healed = threading.Event()
        self.invoked: list[float] = []
        self.tool = tool(name=f"order_{mode.removeprefix('tool_')}", timeout=TOOL_MODES[mode])(
            self._function()
        )

    def heal(self) -> None:
        """From now on it answers at once, with a small result (hung calls return)."""
        self.healed.set()

    def _function(self) -> Callable[..., Any]:
        def lookup_order(order_id: str) -> object:
            """Look up an order in the order service.

            Args:
                order_id: The order id.
            """
            self.invoked.append(time.time())
            if not self.healed.is_set():
                if self.mode == "tool_raises":
                    raise ConnectionError("order service down")
                if self.mode == "tool_timeout":
                    self.healed.wait(HANG_S)  # past its time limit: a hung call
                elif self.mode == "tool_huge_output":
                    return "x" * HUGE_CHARS
                elif self.mode == "tool_unserialisable":
                    return object()
            return {"order_id": order_id, "status": "shipped"}

        return lookup_order


def calls_then_answers(tool_name: str) -> FunctionModel:
    """A scripted model: it looks the user's order up with `tool_name`, then answers
    with (the start of) what it was shown."""

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        shown = [m.content or "" for m in messages if isinstance(m, ToolMessage)]
        if shown:
            return AssistantMessage(content=f"The order service says: {shown[-1][:80]}")
        question = next(m.content or "" for m in reversed(messages) if m.role == "user")
        order_id = question.rsplit(" ", 1)[-1].rstrip("?")
        call = ToolCall(id="c0", name=tool_name, arguments=json.dumps({"order_id": order_id}))
        return AssistantMessage(tool_calls=(call,))

    return FunctionModel(reply, name="orders")


def _tool_calls(store: TraceStore, ids: list[str], name: str) -> dict[str, list[dict[str, Any]]]:
    """Each run's calls of tool `name` from the trace store, with what the model was
    shown of each (the tool message of the run's next model call; None: not shown) and
    how many characters the run's model calls held in all."""
    calls: dict[str, list[dict[str, Any]]] = {}
    for run_id, step, call_id, status, length, text in store.sql(
        "SELECT run_id, step, call_id, status, length(result), left(result, 2000) "
        "FROM tool_calls WHERE tool = ? AND list_contains(?, run_id) ORDER BY step",
        [name, ids],
    ):
        calls.setdefault(run_id, []).append(
            {"step": step, "id": call_id, "status": status, "length": length, "text": text}
        )
    sent: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {}
    for run_id, step, messages in store.sql(
        "SELECT run_id, step, messages FROM model_calls WHERE list_contains(?, run_id) "
        "ORDER BY step",
        [ids],
    ):
        sent.setdefault(run_id, []).append((step, json.loads(messages or "[]")))
    for run_id, made in calls.items():
        model_calls = sent.get(run_id, [])
        total = sum(len(m.get("content") or "") for _, ms in model_calls for m in ms)
        for call in made:
            later = [ms for step, ms in model_calls if step > call["step"]]
            call["shown"] = next(
                (
                    m.get("content") or ""
                    for m in (later[0] if later else [])
                    if m.get("role") == "tool" and m.get("tool_call_id") == call["id"]
                ),
                None,
            )
            call["model_chars"] = total
    return calls


def _violation(mode: str, made: list[dict[str, Any]], cap: int) -> str | None:
    """What is wrong with one fault run's tool call(s), or None."""
    if len(made) != 1:
        return f"{len(made)} tool calls recorded"
    call = made[0]
    shown = call["shown"]
    if shown is None:
        return "the model was never shown the tool's result"
    if REFUSED in shown and call["status"] == "error":
        return None if shown == call["text"] else "shown != stored refusal"
    if SHOWN[mode] not in shown:
        return f"the model was shown {len(shown):,} characters: {shown[:80]!r}"
    if mode != "tool_huge_output":
        expected = "timeout" if mode == "tool_timeout" else "error"
        if call["status"] != expected:
            return f"status {call['status']}, not {expected}"
        return None if shown == call["text"] else "shown != stored error"
    if call["status"] != "ok" or call["length"] != HUGE_CHARS:
        return f"status {call['status']}, {call['length']} characters stored, not {HUGE_CHARS}"
    if len(shown) > cap + 200:
        return f"the model was shown {len(shown):,} characters (cap {cap:,})"
    if call["model_chars"] >= HUGE_CHARS:
        return f"the run's model calls hold {call['model_chars']:,} characters"
    return None


def run_tool_mode(mode: str, runs: int, pause: float, workspace: Path) -> dict[str, Any]:
    """Fault runs, then recovery runs, with one faulty tool; the mode's figures."""
    breaker_registry().reset()
    store = TraceStore(workspace / mode)
    faulty = FaultyTool(mode)
    name = faulty.tool.name
    agent = ReActAgent(
        calls_then_answers(name),
        [faulty.tool],
        name=f"faults-{mode}",
        trace=store,
        max_steps=4,
        max_retries=1,
        retry=RETRY,
        breaker=BREAKER,
        budget=BUDGET,
    )
    results, escaped = _runs(agent, "O", runs, pause)
    fault_ids = [r.run_id for r in results]
    faulty.heal()

    def recovered(result: RunResult) -> bool:
        made = _tool_calls(store, [result.run_id], name).get(result.run_id, [])
        return result.status == "completed" and [c["status"] for c in made] == ["ok"]

    tried, lost, recovery_s = _recover(agent, recovered)
    results += tried
    escaped += lost
    ids = [r.run_id for r in results]
    outcome = _run_rows(store, results)
    moves = _transitions(store, f"tool:{name}", ids)
    windows = _open_windows(moves)
    while_open = [t for t in faulty.invoked if any(a < t < b for a, b in windows)]
    calls = _tool_calls(store, fault_ids, name)
    violations = {}
    for run_id in fault_ids:
        problem = _violation(mode, calls.get(run_id, []), agent.max_tool_result_chars)
        if problem:
            violations[run_id] = problem
    made = [c for run_id in fault_ids for c in calls.get(run_id, [])]
    refused = sum(1 for c in made if c["status"] == "error" and REFUSED in (c["shown"] or ""))
    figures = _figures(len(results) + escaped, outcome, while_open, moves, recovery_s)
    figures["violations"] = len(violations)
    tool_statuses: dict[str, int] = {}
    for call in made:
        tool_statuses[call["status"]] = tool_statuses.get(call["status"], 0) + 1
    detail = {
        "statuses": outcome["statuses"],
        "tool_statuses": tool_statuses,
        "invocations": len(faulty.invoked),
        "calls_refused": refused,
        "transitions": [f"{f}->{t}" for f, t, _ in moves],
        "status_mismatch": outcome["mismatched"],
        "unexplained_ids": outcome["unexplained"],
        "violations": violations,
    }
    return {**figures, "_detail": detail}


def _describe(mode: str, figures: dict[str, Any], detail: dict[str, Any]) -> str:
    """One mode's line."""
    tools = mode in TOOL_MODES
    expected = mode in (TOOL_OPENS if tools else OPENS)
    note = "" if figures["breaker_opened"] == expected else " (UNEXPECTED)"
    head = (
        f"{mode}: {figures['runs']} runs, {figures['runs_lost']} lost, "
        f"{figures['unexplained']} unexplained, {figures['calls_while_open']} "
        f"{'tool calls' if tools else 'requests'} while open, breaker opened: "
        f"{figures['breaker_opened']}{note}, recovery {figures['recovery_s']} s; "
        f"statuses {detail['statuses']}; "
    )
    if tools:
        middle = (
            f"{figures['violations']} violations; tool call statuses "
            f"{detail['tool_statuses']}; {detail['invocations']} tool invocations, "
            f"{detail['calls_refused']} calls refused by the breaker; "
        )
    else:
        middle = (
            f"{detail['requests']} requests served, {detail['attempts_sent']} attempts "
            f"sent / {detail['attempts_refused']} refused by the breaker; "
        )
    tail = (
        f"transitions {' '.join(detail['transitions']) or 'none'}; "
        f"status mismatches {detail['status_mismatch'] or 'none'}; "
        f"unexplained {detail['unexplained_ids'] or 'none'}"
    )
    if tools and detail["violations"]:
        first = dict(list(detail["violations"].items())[:3])
        tail += f"; violations (first 3) {first}"
    return head + middle + tail


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
        for mode in [*MODES, *TOOL_MODES]:
            started = time.perf_counter()
            run = run_tool_mode if mode in TOOL_MODES else run_mode
            figures = run(mode, args.runs_per_mode, args.pause, Path(workspace))
            detail = figures.pop("_detail")
            modes[mode] = figures
            print(
                f"{_describe(mode, figures, detail)}; {time.perf_counter() - started:.1f} s",
                flush=True,
            )
    print(f"all modes: {time.perf_counter() - t0:.1f} s", flush=True)
    totals = {
        f"{key}_total": sum(m.get(key, 0) for m in modes.values())
        for key in ("runs", "runs_lost", "unexplained", "calls_while_open", "violations")
    }
    print(json.dumps({**totals, "modes": modes}))


if __name__ == "__main__":
    main()
