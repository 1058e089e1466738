"""Loop alerts: the same call repeated, no progress, steps or cost far above the
agent's own history; recorded, called back, and optionally stopping the run with an
explanation."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest
from typer.testing import CliRunner

from agentlab import ReActAgent, tool
from agentlab.agents.alerts import HistoryAlerts, LoopAlerts
from agentlab.cli import app
from agentlab.errors import UserError
from agentlab.events import AlertEvent
from agentlab.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore
from agentlab.tracing import history as history_module
from agentlab.tracing.history import Spread, clear_history_cache
from agentlab.usage import Price, PriceTable


@tool
def status(order_id: str) -> str:
    """The status of an order.

    Args:
        order_id: The order id.
    """
    return "pending"


def asks_forever(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    n = len(messages)
    call = ToolCall(id=f"c{n}", name="status", arguments='{"order_id": "O-1"}')
    return AssistantMessage(tool_calls=(call,))


def test_a_looping_run_raises_alerts_and_can_be_stopped(workspace) -> None:
    seen: list[AlertEvent] = []
    store = TraceStore(workspace)
    agent = ReActAgent(
        FunctionModel(asks_forever),
        [status],
        trace=store,
        max_steps=10,
        alerts=LoopAlerts(repeat=3, no_progress=None, stop=True, on_alert=seen.append),
    )
    result = agent.run_sync("Is O-1 shipped yet?")
    assert result.status == "failed" and result.steps == 3
    assert result.failure["kind"] == "loop"
    assert "stopped because it is looping" in result.explanation
    assert [a.alert for a in seen] == ["repeated_call"]
    rows = store.sql("select run_id, step, alert, stopped, detail->>'times' from alerts")
    assert rows == [(result.run_id, 3, "repeated_call", True, "3")]

    out = CliRunner().invoke(app, ["alerts", "--workspace", str(workspace)])
    assert out.exit_code == 0, out.output
    assert "repeated_call (run stopped)" in out.output and result.run_id[:8] in out.output


def test_no_progress_is_noticed_without_stopping_by_default(workspace) -> None:
    store = TraceStore(workspace)
    agent = ReActAgent(
        FunctionModel(asks_forever),
        [status],
        trace=store,
        max_steps=6,
        alerts=LoopAlerts(repeat=100, no_progress=2),
    )
    result = agent.run_sync("Is O-1 shipped yet?")
    assert result.status == "max_steps", "alerts alone do not stop a run"
    assert store.sql("select alert, step, stopped from alerts") == [("no_progress", 3, False)]


# -- history alerts: steps or cost far above the agent's own history ------------------

HISTORY_ONLY = {"repeat": 100, "no_progress": None}  # loop alerts out of the way
PRICED = PriceTable({"scripted:*": Price(1_000_000.0, 0.0)})  # $1 per input token


def plan(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    """The request's first word says the plan: ``calls=N`` asks `status` N times (a
    new order each time) and then answers; ``loop`` never stops asking."""
    request = next(m.content for m in messages if isinstance(m, UserMessage))
    first = request.split()[0]
    made = sum(isinstance(m, ToolMessage) for m in messages)
    if first == "loop" or made < int(first.removeprefix("calls=")):
        call = ToolCall(id=f"c{made}", name="status", arguments=f'{{"order_id": "O-{made}"}}')
        return AssistantMessage(tool_calls=(call,))
    return AssistantMessage(content="It is pending.")


def support(store: TraceStore, prices: PriceTable | None = None, **alerts) -> ReActAgent:
    return ReActAgent(
        FunctionModel(plan),
        [status],
        name="support",
        trace=store,
        max_steps=20,
        prices=prices,
        alerts=LoopAlerts(**{**HISTORY_ONLY, **alerts}),
    )


def seed(store: TraceStore, steps: Sequence[int], prices: PriceTable | None = None) -> None:
    """Completed runs of `support` taking `steps` steps each, ingested into the store."""
    agent = support(store, prices, history=None)
    for n in steps:
        result = agent.run_sync(f"calls={n - 1} Is my order shipped?")
        assert result.status == "completed" and result.steps == n
    store.ingest()


def history_alerts(store: TraceStore) -> list[tuple]:
    return store.sql(
        "SELECT alert, step, stopped, CAST(detail->>'value' AS DOUBLE), "
        "CAST(detail->>'median' AS DOUBLE), CAST(detail->>'threshold' AS DOUBLE), "
        "CAST(detail->>'history' AS INTEGER), message FROM alerts "
        "WHERE alert LIKE '%_above_history' ORDER BY started_at"
    )


@pytest.fixture(autouse=True)
def _fresh_history() -> Iterator[None]:
    clear_history_cache()
    yield
    clear_history_cache()


def test_the_threshold_is_robust_to_runaway_runs_in_the_history() -> None:
    policy = HistoryAlerts()  # k=4, factor=3
    spread = Spread.of([1, 2, 3] * 8)
    assert spread == Spread(24, 2, 1)
    assert policy.threshold(spread) == pytest.approx(2 + 4 * 1.4826)  # the MAD part wins
    # A few runaway runs barely move the median and MAD; the factor floor keeps an
    # agent whose runs all take the same steps (MAD 0) from alerting on one step more.
    runaway = Spread.of([3] * 20 + [500] * 3)
    assert runaway == Spread(23, 3, 0) and policy.threshold(runaway) == 9
    with pytest.raises(UserError, match="min_runs"):
        HistoryAlerts(runs=10, min_runs=20)
    with pytest.raises(UserError, match="factor"):
        HistoryAlerts(factor=0.5)


def test_a_run_looping_far_beyond_its_history_raises_steps_above_history(workspace) -> None:
    store = TraceStore(workspace)
    seed(store, [1, 2, 3] * 8)  # median 2 steps, MAD 1: alert above 2 + 4 * 1.48 = 7.9
    looped = support(store, history=None).run_sync("loop")  # failed: not in the history
    assert looped.status == "max_steps"
    seen: list[AlertEvent] = []

    result = support(store, on_alert=seen.append).run_sync("loop Where is my order?")

    assert result.status == "max_steps", "an alert alone does not stop the run"
    message = "8 steps; this agent's last 24 completed runs took a median of 2 (alert above 7)"
    assert [(a.alert, a.step, a.message) for a in seen] == [("steps_above_history", 8, message)]
    assert seen[0].detail == {"value": 8, "median": 2, "mad": 1, "threshold": 7, "history": 24}
    assert history_alerts(store) == [("steps_above_history", 8, False, 8, 2, 7, 24, message)]
    assert store.sql("SELECT DISTINCT run_id FROM alerts") == [(result.run_id,)]

    out = CliRunner().invoke(app, ["alerts", "--workspace", str(workspace)])
    assert out.exit_code == 0, out.output
    assert f"{result.run_id[:8]} support step 8: steps_above_history" in out.output
    assert message in out.output


def test_a_run_within_the_norm_raises_nothing(workspace) -> None:
    store = TraceStore(workspace)
    seed(store, [1, 2, 3] * 8, PRICED)
    agent = support(store, PRICED)

    normal = agent.run_sync("calls=2 Is my order shipped?")  # 3 steps, the usual cost
    assert normal.status == "completed" and normal.cost
    assert store.sql("SELECT count(*) FROM alerts") == [(0,)]

    # The same agent and history do flag a run that is not normal.
    looping = agent.run_sync("loop Is my order shipped?")
    kinds = store.sql("SELECT alert FROM alerts WHERE run_id = ?", [looping.run_id])
    assert ("steps_above_history",) in kinds


def test_too_little_history_raises_nothing(workspace) -> None:
    store = TraceStore(workspace)
    seed(store, [1] * 19)  # min_runs is 20
    seen: list[AlertEvent] = []
    agent = support(store, on_alert=seen.append)

    assert agent.run_sync("loop").status == "max_steps"
    assert seen == []

    seed(store, [1])  # the 20th run
    clear_history_cache()  # (otherwise read again after ttl seconds)
    agent.run_sync("loop")
    assert [(a.alert, a.step, a.detail["history"]) for a in seen] == [
        ("steps_above_history", 4, 20)  # median 1, MAD 0: alert above 3 * 1
    ]


def test_a_run_costing_far_more_than_its_history_raises_cost_above_history(workspace) -> None:
    store = TraceStore(workspace)
    seed(store, [1] * 20, PRICED)
    (median,) = store.sql("SELECT median(cost) FROM runs WHERE agent = 'support'")[0]
    seen: list[AlertEvent] = []

    # One step, as usual, but with a very long request.
    result = support(store, PRICED, on_alert=seen.append).run_sync("calls=0 " + "x" * 8000)

    assert result.status == "completed" and result.steps == 1
    assert [(a.alert, a.step, a.stopped) for a in seen] == [("cost_above_history", 1, False)]
    detail = seen[0].detail
    assert detail["value"] == pytest.approx(result.cost) and detail["history"] == 20
    assert detail["median"] == pytest.approx(median) and detail["threshold"] == pytest.approx(
        3 * median
    )
    assert result.cost > detail["threshold"]
    assert seen[0].message.startswith(f"${result.cost:.4g} so far; this agent's last 20 ")
    assert history_alerts(store)[0][:3] == ("cost_above_history", 1, False)

    # An alert on the step that gives the answer does not stop (or fail) the run.
    stopping = support(store, PRICED, stop=True).run_sync("calls=0 " + "x" * 8000)
    assert stopping.status == "completed" and stopping.failure is None
    assert history_alerts(store)[1][:3] == ("cost_above_history", 1, False)


def test_stop_ends_a_run_above_its_history_with_an_explanation(workspace) -> None:
    store = TraceStore(workspace)
    seed(store, [1, 2, 3] * 8)

    result = support(store, stop=True).run_sync("loop")

    assert result.status == "failed" and result.steps == 8
    assert result.tools_called == ["status"] * 7, "the stopping step calls no tool"
    assert result.failure["kind"] == "anomaly"
    assert "far above its own history: 8 steps; this agent's last 24" in result.explanation
    assert "HistoryAlerts(factor=...)" in result.explanation
    assert history_alerts(store)[0][:3] == ("steps_above_history", 8, True)
    recorded = store.run(result.run_id)
    assert recorded["status"] == "failed" and recorded["failure"]["kind"] == "anomaly"


def test_history_is_read_once_per_agent_and_only_when_needed(workspace, monkeypatch) -> None:
    store = TraceStore(workspace)
    seed(store, [1, 2, 3] * 8)
    reads: list[str] = []
    real_read = history_module._read

    def counted(workspace, agent, runs):
        reads.append(agent)
        return real_read(workspace, agent, runs)

    monkeypatch.setattr(history_module, "_read", counted)
    agent = support(store)
    for _ in range(3):  # 3 steps or fewer at no cost: never above factor * median
        agent.run_sync("calls=2")
    assert reads == []

    first, second = agent.run_sync("loop"), agent.run_sync("loop")
    assert reads == ["support"], "read once, then reused for ttl seconds"
    assert store.sql("SELECT run_id FROM alerts ORDER BY started_at") == [
        (first.run_id,),
        (second.run_id,),
    ]


def test_a_busy_or_locked_store_does_not_fail_the_run(workspace) -> None:
    store = TraceStore(workspace)
    seed(store, [1, 2, 3] * 8)
    seen: list[AlertEvent] = []
    agent = support(store, on_alert=seen.append)

    # Another process's query or ingest holds the store's lock: no waiting, no check.
    fd = os.open(store.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = agent.run_sync("loop")
    finally:
        os.close(fd)
    assert result.status == "max_steps" and seen == []

    # Another program has traces.duckdb open (DuckDB allows one process per file).
    clear_history_cache()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            str(store.path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        result = agent.run_sync("loop")
    finally:
        holder.communicate("", timeout=30)  # closes its stdin: it exits
    assert result.status == "max_steps" and seen == []

    # Once the store can be read, the same run is flagged.
    clear_history_cache()
    agent.run_sync("loop")
    assert [a.alert for a in seen] == ["steps_above_history"]
