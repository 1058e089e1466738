"""The trace explorer and the cost dashboard (Python level: widget state after
setting their controls), over a real store filled by scripted agents."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agentlab.agents import ReActAgent
from agentlab.agents.alerts import LoopAlerts
from agentlab.errors import UserError
from agentlab.events import ModelCallEvent, RunFinished, RunStarted, ToolCallEvent
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing import TraceStore
from agentlab.usage import Price, PriceTable

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from agentlab.ui import CostDashboard, TraceExplorer

pytestmark = pytest.mark.timeout(120)

PRICES = PriceTable({"scripted:shop": Price(1.0, 2.0), "scripted:loop": Price(5.0, 10.0)})


@tool
def get_order(order_id: str) -> str:
    """The status of an order.

    Args:
        order_id: The order id.
    """
    return json.dumps({"order_id": order_id, "status": "shipped"})


def shop(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    """Look the order up once, then answer."""
    if not any(isinstance(m, ToolMessage) for m in messages):
        call = ToolCall(id="c1", name="get_order", arguments='{"order_id": "O-1"}')
        return AssistantMessage(tool_calls=(call,))
    return AssistantMessage(content="O-1 has shipped.")


def loop(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    """Look the same order up twice (a loop alert), then answer."""
    done = sum(isinstance(m, ToolMessage) for m in messages)
    if done < 2:
        call = ToolCall(id=f"c{done}", name="get_order", arguments='{"order_id": "O-2"}')
        return AssistantMessage(tool_calls=(call,))
    return AssistantMessage(content="O-2 has shipped.")


def old_run(store: TraceStore, days_ago: float, agent: str = "shop", cost: float = 0.0002) -> str:
    """A run of `agent` `days_ago` days back, as a process then would have written it."""
    run_id, t = f"old-{agent}-{days_ago}", time.time() - days_ago * 86400
    model, reply = f"scripted:{agent}", AssistantMessage(content="done")
    writer = store.writer()
    writer.emit(RunStarted(run_id=run_id, agent=agent, model=model, input="old", started_at=t))
    writer.emit(
        ModelCallEvent(
            id=f"{run_id}-1", run_id=run_id, step=1, model=model, messages=[],
            context_messages=1, tools=["get_order"], response=reply, input_tokens=100,
            output_tokens=50, cost=cost, latency_ms=40.0, started_at=t,
        )
    )  # fmt: skip
    writer.emit(
        ToolCallEvent(
            id=f"{run_id}-t", run_id=run_id, step=1, tool="get_order", arguments="{}",
            result="{}", status="ok", latency_ms=700.0, started_at=t + 0.05,
        )
    )  # fmt: skip
    writer.emit(
        RunFinished(
            run_id=run_id, status="completed", output="done", steps=1, input_tokens=100,
            output_tokens=50, cost=cost, latency_ms=800.0, ended_at=t + 1,
        )
    )  # fmt: skip
    return run_id


def fill(workspace: Path) -> TraceStore:
    """3 shop runs, 2 loop runs (each with an alert), 1 failed free run, 1 shop run
    10 days ago: 7 runs."""
    shop_agent = ReActAgent(
        FunctionModel(shop, name="shop"), [get_order], name="shop", trace=workspace, prices=PRICES
    )
    loop_agent = ReActAgent(
        FunctionModel(loop, name="loop"),
        [get_order],
        name="loop",
        trace=workspace,
        prices=PRICES,
        alerts=LoopAlerts(repeat=2),
    )
    broken = ReActAgent(
        FunctionModel(lambda m, t: AssistantMessage(content=""), name="free"),
        name="broken",
        trace=workspace,
        max_retries=0,
    )
    for i in range(3):
        assert shop_agent.run_sync(f"Where is O-1? (ask {i})").ok
    for i in range(2):
        assert loop_agent.run_sync(f"Where is O-2? (ask {i})").ok
    assert broken.run_sync("hello").status == "failed"
    store = TraceStore(workspace)
    old_run(store, 10)
    return store


@pytest.fixture
def store(tmp_path):
    """A store filled by :func:`fill`."""
    return fill(tmp_path / "ws")


def ids(rows: Sequence[dict]) -> list[str]:
    return [r["run_id"] for r in rows]


def newest_first(store: TraceStore, where: str = "TRUE", params: Sequence = ()) -> list[str]:
    rows = store.sql(
        f"SELECT run_id FROM runs WHERE {where} ORDER BY started_at DESC, run_id", params
    )
    return [r[0] for r in rows]


# -- TraceExplorer ---------------------------------------------------------------------


def test_explorer_pages_through_every_run_newest_first(store):
    explorer = TraceExplorer(store, page_size=3)
    everything = newest_first(store)
    assert explorer.total == 7 and explorer.pages == 3
    assert ids(explorer.runs) == everything[:3]
    assert "page 1 of 3" in explorer.page_label.value and "7 runs" in explorer.page_label.value
    assert explorer.prev_button.disabled and not explorer.next_button.disabled
    explorer.next_button.click()
    assert explorer.page == 1 and ids(explorer.runs) == everything[3:6]
    assert "runs 4 to 6 of 7 runs" in explorer.page_label.value
    explorer.next_button.click()
    assert ids(explorer.runs) == everything[6:] and explorer.next_button.disabled
    assert "<tr><td>7</td>" in explorer.table_view.value, "rows are numbered across pages"
    explorer.prev_button.click()
    assert explorer.page == 1
    explorer.show_page(99)
    assert explorer.page == 2, "clamped to the last page"


def test_explorer_table_shows_each_runs_figures(store):
    explorer = TraceExplorer(store)
    html = explorer.table_view.value
    for header in ("started (UTC)", "agent", "model", "status", "steps", "tokens in / out"):
        assert f"<th>{header}</th>" in html
    for header in ("cost", "latency", "alerts", "input"):
        assert f"<th>{header}</th>" in html
    [(cost, tokens_in)] = store.sql(
        "SELECT cost, input_tokens FROM runs WHERE agent = 'loop' ORDER BY started_at LIMIT 1"
    )
    assert f"${cost:.6f}" in html and f"{tokens_in:,}" in html
    assert "Where is O-2? (ask 0)" in html and "scripted:loop" in html
    assert '<span class="tag warn">' in html, "the loop runs' alerts are counted"


def test_explorer_filters_by_agent_status_cost_and_alerts(store):
    explorer = TraceExplorer(store, page_size=50)
    assert [v for _, v in explorer.agent_filter.options] == ["", "broken", "loop", "shop"]
    assert [v for _, v in explorer.status_filter.options] == ["", "completed", "failed"]

    explorer.agent_filter.value = "shop"
    assert ids(explorer.runs) == newest_first(store, "agent = 'shop'") and explorer.total == 4
    explorer.status_filter.value = "failed"
    assert explorer.runs == [] and "No runs match these filters." in explorer.table_view.value
    explorer.agent_filter.value = ""
    assert ids(explorer.runs) == newest_first(store, "status = 'failed'") and explorer.total == 1
    explorer.status_filter.value = ""

    [(cheapest_loop,)] = store.sql("SELECT min(cost) FROM runs WHERE agent = 'loop'")
    explorer.min_cost.value = cheapest_loop
    assert ids(explorer.runs) == newest_first(store, "cost >= ?", [cheapest_loop])
    assert {r["agent"] for r in explorer.runs} == {"loop"}
    explorer.min_cost.value = 0.0

    explorer.alerts_only.value = True
    with_alerts = newest_first(store, "run_id IN (SELECT run_id FROM alerts)")
    assert len(with_alerts) == 2 and ids(explorer.runs) == with_alerts
    assert all(r["alerts"] >= 1 for r in explorer.runs)


def test_explorer_filters_by_date_and_rejects_a_reversed_range(store):
    explorer = TraceExplorer(store, page_size=3)
    explorer.next_button.click()
    today = datetime.now(UTC).date()
    explorer.since_picker.value = today - timedelta(days=1)
    assert explorer.page == 0, "a filter change goes back to the first page"
    assert explorer.total == 6 and "old-shop-10" not in ids(explorer.runs)
    explorer.since_picker.value = None
    ten_days_ago = today - timedelta(days=10)
    explorer.until_picker.value = ten_days_ago  # inclusive: the whole day
    assert ids(explorer.runs) == ["old-shop-10"]
    explorer.since_picker.value = ten_days_ago
    assert ids(explorer.runs) == ["old-shop-10"], "since and until on the same day"
    explorer.since_picker.value = date(2999, 1, 1)
    assert "must be before until" in explorer.message.value
    assert ids(explorer.runs) == ["old-shop-10"], "the last good filter stays"
    explorer.since_picker.value = explorer.until_picker.value = None
    assert explorer.message.value == "" and explorer.total == 7


def test_explorer_opens_a_run_in_the_inspector(store):
    explorer = TraceExplorer(store, page_size=3)
    picker = explorer.opener.picker
    assert picker.value == "" and len(picker.options) == 4  # a placeholder and 3 runs
    label, run_id = picker.options[2]
    assert label.startswith("#2 ")
    picker.value = run_id
    inspector = explorer.opener.inspector
    assert inspector is not None and inspector.run_id == run_id and inspector.rows
    assert run_id[:8] in inspector.summary.value
    explorer.next_button.click()
    assert picker.value == "" and explorer.opener.inspector is inspector, (
        "another page keeps the open run open"
    )
    explorer.open_run(None)
    assert explorer.opener.inspector is None and explorer.opener.children[1].children == ()


def test_explorer_refresh_sees_new_runs_and_agents(tmp_path, store):
    explorer = TraceExplorer(store)
    explorer.agent_filter.value = "loop"
    late = ReActAgent(
        FunctionModel(shop, name="shop"), [get_order], name="late", trace=store.workspace
    )
    late.run_sync("Where is O-1?")
    explorer.refresh()
    assert "late" in [v for _, v in explorer.agent_filter.options]
    assert explorer.agent_filter.value == "loop" and explorer.total == 2
    explorer.agent_filter.value = ""
    assert explorer.total == 8


def test_explorer_of_an_empty_store_says_so(tmp_path):
    explorer = TraceExplorer(TraceStore(tmp_path / "empty"))
    assert explorer.total == 0 and explorer.pages == 1 and explorer.runs == []
    assert "No runs in the trace store yet" in explorer.table_view.value
    assert "page 1 of 1" in explorer.page_label.value
    assert explorer.prev_button.disabled and explorer.next_button.disabled


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "50"])
def test_explorer_rejects_a_bad_page_size(tmp_path, size):
    with pytest.raises(UserError, match="page_size must be a whole number of at least 1"):
        TraceExplorer(TraceStore(tmp_path), page_size=size)


# -- CostDashboard ---------------------------------------------------------------------


def png_size(output: dict) -> tuple[int, int]:
    data = output["data"]["image/png"]
    png = base64.b64decode(data) if isinstance(data, str) else data
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_dashboard_figures_match_the_store(store):
    dashboard = CostDashboard(store, days=30)
    since = dashboard.since.replace(tzinfo=None)
    assert since.time() == datetime.min.time() and (datetime.now() - since).days < 30
    [(cost, tokens, calls)] = store.sql(
        "SELECT sum(cost), sum(input_tokens + output_tokens), count(*) FROM model_calls "
        "WHERE started_at >= ?",
        [since],
    )
    assert dashboard.total_cost == pytest.approx(cost) and dashboard.total_tokens == tokens
    assert cost > 0 and f"{calls} model calls in the last 30 days" in dashboard.summary.value

    per_agent = store.sql(
        "SELECT r.agent, count(*), sum(m.input_tokens), sum(m.output_tokens), sum(m.cost) "
        "FROM model_calls m JOIN runs r USING (run_id) WHERE m.started_at >= ? "
        "GROUP BY r.agent ORDER BY sum(m.cost) DESC NULLS LAST, sum(m.input_tokens) DESC",
        [since],
    )
    got = dashboard.by_agent[["agent", "model_calls", "input_tokens", "output_tokens", "cost"]]
    assert [tuple(r[:4]) for r in got.itertuples(index=False)] == [r[:4] for r in per_agent]
    assert got["cost"].tolist() == pytest.approx([r[4] for r in per_agent])
    per_model = store.sql(
        "SELECT coalesce(served_by, model), sum(cost) FROM model_calls GROUP BY ALL "
        "ORDER BY 2 DESC NULLS LAST"
    )
    assert dashboard.by_model["model"].tolist() == [r[0] for r in per_model]
    assert dashboard.by_model["cost"].tolist() == pytest.approx([r[1] for r in per_model])
    assert "<h4>Per agent</h4>" in dashboard.agents_view.value
    assert "scripted:loop" in dashboard.models_view.value
    assert png_size(dashboard.chart.outputs[0])[1] > 300, "cost and tokens: two rows"


def test_dashboard_costliest_runs_open_in_the_inspector(store):
    dashboard = CostDashboard(store)
    costliest = store.sql(
        "SELECT run_id FROM runs WHERE cost > 0 ORDER BY cost DESC, run_id LIMIT 10"
    )
    assert ids(dashboard.top_runs) == [r[0] for r in costliest]
    assert len(dashboard.top_runs) == 6, "the failed free run cost nothing"
    assert dashboard.top_runs[0]["agent"] == "loop"
    picker = dashboard.opener.picker
    picker.value = dashboard.top_runs[0]["run_id"]
    assert dashboard.opener.inspector.run_id == dashboard.top_runs[0]["run_id"]


def test_dashboard_ranks_tools_by_the_cost_of_the_steps_that_called_them(store):
    dashboard = CostDashboard(store)
    # Computed here from the raw rows: each tool call takes its step's model cost,
    # shared between the step's tool calls.
    calls = store.sql("SELECT run_id, step, tool, latency_ms FROM tool_calls")
    step_cost = {(r, s): c for r, s, c in store.sql("SELECT run_id, step, cost FROM model_calls")}
    in_step: dict[tuple[str, int], int] = {}
    for run_id, step, _, _ in calls:
        in_step[run_id, step] = in_step.get((run_id, step), 0) + 1
    expected = sum(step_cost[r, s] / in_step[r, s] for r, s, _, _ in calls)
    [get_order_row] = dashboard.tools
    assert get_order_row["tool"] == "get_order" and get_order_row["calls"] == len(calls)
    assert get_order_row["model_cost"] == pytest.approx(expected)
    assert get_order_row["latency_ms"] == pytest.approx(sum(c[3] for c in calls))
    assert (
        "get_order" in dashboard.tools_view.value and "total latency" in dashboard.tools_view.value
    )


def test_dashboard_period_leaves_older_runs_out(store):
    dashboard = CostDashboard(store, days=5)
    assert "old-shop-10" not in ids(dashboard.top_runs)
    assert "the last 5 days" in dashboard.summary.value
    with_old = CostDashboard(store, days=11)
    assert "old-shop-10" in ids(with_old.top_runs)
    assert with_old.total_cost == pytest.approx(dashboard.total_cost + 0.0002)


def test_dashboard_of_a_free_store_says_no_cost_and_charts_tokens(tmp_path):
    agent = ReActAgent(FunctionModel(shop, name="local"), [get_order], trace=tmp_path / "ws")
    agent.run_sync("Where is O-1?")
    dashboard = CostDashboard(TraceStore(tmp_path / "ws"))
    assert dashboard.total_cost == 0 and dashboard.total_tokens > 0
    assert "No cost recorded" in dashboard.summary.value and "$" not in dashboard.summary.value
    assert png_size(dashboard.chart.outputs[0])[1] < 300, "tokens only: one row"
    assert dashboard.top_runs == [] and "No run had a cost." in dashboard.runs_view.value


def test_dashboard_of_an_empty_store_says_so(tmp_path):
    dashboard = CostDashboard(TraceStore(tmp_path / "empty"))
    assert "No model calls in the last 30 days" in dashboard.summary.value
    assert dashboard.chart.outputs == () and dashboard.tools_view.value == ""


@pytest.mark.parametrize("days", [0, -1, 1.5, False])
def test_dashboard_rejects_a_bad_period(tmp_path, days):
    with pytest.raises(UserError, match="days must be a whole number of at least 1"):
        CostDashboard(TraceStore(tmp_path), days=days)
