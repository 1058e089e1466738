"""`CostDashboard`: tokens and cost of the last days per agent, per model and per day,
with the costliest runs (openable in the run inspector) and the costliest tools.

Tools have no price of their own (``tool_calls`` records latency, status and what a
cache hit saved, never a cost), so a tool is ranked by the cost of the model calls
that asked for it (the model call of the step that called it; a step calling two
tools shares its cost evenly between them), then by its total latency; its call
count, failures and mean latency are shown beside. The cost it drives is what an
agent pays for choosing it; its latency is what a user waits for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from IPython.display import Image

from agentlab import _html
from agentlab.errors import UserError
from agentlab.tracing import TraceStore
from agentlab.tracing.queries import RunFilter
from agentlab.ui.charts import INK, themed_png
from agentlab.ui.trace_explorer import RunOpener, runs_table_html

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["CostDashboard"]

# One colour per agent (seaborn's "deep" palette: readable on white and on near-black).
_PALETTE = (
    *("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"),
    *("#937860", "#da8bc3", "#ccb974", "#64b5cd", "#8c8c8c"),
)
_MODEL_COLOUR = "#64b5cd"
_TOP = 10


def _value(value: Any) -> Any:
    return None if value is None or value != value else value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(r) for r in frame.to_dict("records")]


def _tokens(n: float) -> str:
    """Tokens, short: 950, 12.3k, 4.56M."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _dollars(cost: float) -> str:
    return f"${cost:,.2f}" if cost >= 1 else f"${cost:.4f}"


class CostDashboard(widgets.VBox):
    """Tokens and cost of the model calls of the last `days` UTC days (today
    included) in `store` (default: the default workspace's).

    Charts (when anything was spent): cost per day stacked by agent, per agent and
    per model, and the same for tokens; tables per agent and per model; the
    costliest runs (top 10 by cost; "Open run" shows one in a
    :class:`~agentlab.ui.RunInspector`) and the costliest tools (see the module's
    docstring for how tools are ranked). A store with no model calls in the period,
    or whose calls cost nothing, says so instead of drawing empty axes.

    Attributes: ``since`` (UTC midnight the period starts), ``by_day``
    (:meth:`TraceStore.cost_by_day`), ``by_agent`` and ``by_model`` (DataFrames),
    ``top_runs`` and ``tools`` (lists of rows), ``total_cost``, ``total_tokens``,
    ``summary``, ``chart`` (an Output holding the PNG), ``agents_view``,
    ``models_view``, ``runs_view``, ``tools_view``, ``opener`` (``opener.picker``,
    ``opener.inspector``), ``refresh_button``.
    """

    def __init__(self, store: TraceStore | None = None, days: int = 30) -> None:
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise UserError(f"days must be a whole number of at least 1, not {days!r}")
        self.store = store if store is not None else TraceStore()
        self.days = days
        self.summary = widgets.HTML()
        self.chart = widgets.Output()
        self.agents_view = widgets.HTML()
        self.models_view = widgets.HTML()
        self.runs_view = widgets.HTML()
        self.tools_view = widgets.HTML()
        self.opener = RunOpener(self.store)
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__(
            [
                widgets.HBox([self.refresh_button]),
                self.summary,
                self.chart,
                widgets.HBox([self.agents_view, self.models_view]),
                self.runs_view,
                self.opener,
                self.tools_view,
            ]
        )
        self.add_class("agentlab-cost-dashboard")
        self.refresh()

    def refresh(self) -> None:
        """Read the period's figures from the store again and redraw everything."""
        today = datetime.now(UTC).date()
        self.since = datetime.combine(today - timedelta(days=self.days - 1), time(), UTC)
        self.by_day = self.store.cost_by_day(since=self.since)
        self.by_day["agent"] = self.by_day["agent"].fillna("(none)")
        columns = ["model_calls", "input_tokens", "output_tokens", "cost"]
        self.by_agent = (
            self.by_day.groupby("agent", dropna=False)[columns]
            .sum(min_count=1)
            .sort_values(["cost", "input_tokens"], ascending=False)
            .reset_index()
        )
        self.by_model = self.store.cost_by_model(since=self.since)
        self.total_cost = float(self.by_model["cost"].sum())
        self.total_tokens = int(self.by_model[["input_tokens", "output_tokens"]].sum().sum())
        runs = self.store.runs_page(RunFilter(since=self.since), limit=_TOP, order="cost")
        self.top_runs = [r for r in _records(runs) if (_value(r["cost"]) or 0) > 0]
        self.tools = _records(self.store.costliest_tools(since=self.since, limit=_TOP))
        self._draw()

    # -- drawing --------------------------------------------------------------------------

    def _draw(self) -> None:
        period = f"the last {self.days} day{'s' if self.days != 1 else ''}"
        calls = int(self.by_model["model_calls"].sum())
        self.chart.outputs = ()
        if not calls:
            self.summary.value = _html.scoped(
                _html.callout(
                    f"<b>No model calls in {period}</b> (since {self.since:%Y-%m-%d} UTC) in "
                    f"<code>{_html.esc(self.store.workspace)}</code>: run an agent with "
                    "tracing on, then Refresh.",
                    "warn",
                )
            )
            self.agents_view.value = self.models_view.value = ""
            self.runs_view.value = self.tools_view.value = ""
            self.opener.list_runs([])
            return
        priced = self.total_cost > 0
        spent = f"<b>{_html.esc(_dollars(self.total_cost))}</b> for " if priced else ""
        text = (
            f"{spent}<b>{_html.esc(_tokens(self.total_tokens))} tokens</b> in "
            f"{calls:,} model calls in {period} (since {self.since:%Y-%m-%d} UTC)"
        )
        if not priced:
            text += (
                '<div><b class="warn">No cost recorded</b>: every model call was on a free '
                "model (local or scripted) or one without a known price "
                "(<code>PriceTable</code>). The charts show tokens only.</div>"
            )
        self.summary.value = _html.scoped(_html.callout(text, "" if priced else "warn"))
        self.chart.append_display_data(Image(data=self._chart_png(priced)))
        self.agents_view.value = _html.scoped(
            "<h4>Per agent</h4>" + _usage_table("agent", _records(self.by_agent))
        )
        self.models_view.value = _html.scoped(
            "<h4>Per model</h4>" + _usage_table("model", _records(self.by_model))
        )
        self._draw_runs(period)
        self.tools_view.value = _html.scoped(_tools_html(self.tools, period))

    def _draw_runs(self, period: str) -> None:
        title = f"<h4>Costliest runs of {period}</h4>"
        if self.top_runs:
            body = f'<div class="scroll">{runs_table_html(self.top_runs)}</div>'
        else:
            body = '<div class="muted">No run had a cost.</div>'
        self.runs_view.value = _html.scoped(title + body)
        self.opener.list_runs(self.top_runs)

    def _chart_png(self, priced: bool) -> bytes:
        """Per day (stacked by agent), per agent and per model: cost (when any) and
        tokens, on a transparent background so both themes read."""
        from matplotlib.dates import DateFormatter
        from matplotlib.figure import Figure  # no pyplot: no global figure state
        from matplotlib.ticker import FuncFormatter, StrMethodFormatter

        days = [(self.since + timedelta(days=i)).date() for i in range(self.days)]
        agents = list(self.by_agent["agent"])
        colours = {a: _PALETTE[i % len(_PALETTE)] for i, a in enumerate(agents)}
        by_day = self.by_day.assign(tokens=self.by_day.input_tokens + self.by_day.output_tokens)
        by_agent = self.by_agent.assign(
            tokens=self.by_agent.input_tokens + self.by_agent.output_tokens
        )
        by_model = self.by_model.assign(
            tokens=self.by_model.input_tokens + self.by_model.output_tokens
        )
        measures = [("cost", "cost (USD)")] if priced else []
        measures.append(("tokens", "tokens"))
        fig = Figure(figsize=(11, 2.6 * len(measures)), dpi=80, layout="constrained")
        grid = fig.subplots(len(measures), 3, squeeze=False, width_ratios=[2.2, 1, 1])
        for row, (column, label) in zip(grid, measures, strict=True):
            per_day = by_day.pivot_table(
                index="day", columns="agent", values=column, aggfunc="sum", fill_value=0
            )
            per_day.index = [d.date() if hasattr(d, "date") else d for d in per_day.index]
            per_day = per_day.reindex(days, fill_value=0)
            bottom = [0.0] * len(days)
            for agent in agents:
                values = list(per_day[agent]) if agent in per_day else [0.0] * len(days)
                row[0].bar(days, values, bottom=bottom, color=colours[agent], label=str(agent))
                bottom = [b + v for b, v in zip(bottom, values, strict=True)]
            row[0].set_title(f"{label} per day", fontsize=10, color=INK)
            row[0].xaxis.set_major_formatter(DateFormatter("%b %d"))
            _barh(row[1], by_agent["agent"], by_agent[column], [colours[a] for a in agents])
            row[1].set_title(f"{label} per agent", fontsize=10, color=INK)
            _barh(row[2], by_model["model"], by_model[column], [_MODEL_COLOUR])
            row[2].set_title(f"{label} per model", fontsize=10, color=INK)
        legend = grid[0][0].legend(fontsize=8, frameon=False, labelcolor=INK, loc="upper left")
        legend.set_title("agent", prop={"size": 8})
        legend.get_title().set_color(INK)
        # Dollars and short token counts on the value axes, never an offset like "1e-3".
        ticks = {"cost": StrMethodFormatter("${x:,.3g}"), "tokens": FuncFormatter(_tick_tokens)}
        for row, (column, _) in zip(grid, measures, strict=True):
            row[0].yaxis.set_major_formatter(ticks[column])
            for ax in row[1:]:
                ax.xaxis.set_major_formatter(ticks[column])
        return themed_png(fig, grid.flat)


def _tick_tokens(value: float, _position: int) -> str:
    return _tokens(value)


def _barh(ax: Axes, labels: Any, values: Any, colours: list[str]) -> None:
    """Horizontal bars, the largest on top."""
    names = [str(n) for n in labels][::-1]
    ax.barh(names, [float(v or 0) for v in values][::-1], color=colours[::-1])


def _usage_table(key: str, rows: list[dict[str, Any]]) -> str:
    body = [
        [
            f"<code>{_html.esc(r[key])}</code>" if key == "model" else _html.esc(r[key]),
            _html.esc(f"{r['model_calls']:,.0f}"),
            _html.esc(_tokens(r["input_tokens"] or 0)),
            _html.esc(_tokens(r["output_tokens"] or 0)),
            _html.esc(_html.cost_text(_value(r["cost"]))),
        ]
        for r in rows
    ]
    return _html.table([key, "model calls", "tokens in", "tokens out", "cost"], body)


def _tools_html(tools: list[dict[str, Any]], period: str) -> str:
    title = (
        f"<h4>Costliest tools of {period}</h4>"
        '<div class="muted">By the cost of the model calls that asked for them (a step '
        "calling several tools shares its cost), then by total latency.</div>"
    )
    if not tools:
        return title + '<div class="muted">No tool calls.</div>'
    body = [
        [
            f"<code>{_html.esc(t['tool'])}</code>",
            _html.esc(f"{t['calls']:,.0f}"),
            f'<span class="bad">{t["errors"]:,.0f}</span>' if t["errors"] else "0",
            _html.esc(_html.ms_text(_value(t["latency_ms"]))),
            _html.esc(_html.ms_text(_value(t["mean_latency_ms"]))),
            _html.esc(_html.cost_text(_value(t["model_cost"]))),
        ]
        for t in tools
    ]
    headers = ["tool", "calls", "failed", "total latency", "mean latency", "model cost"]
    return title + _html.table(headers, body, cls="agentlab-tools")
