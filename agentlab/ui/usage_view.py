"""`UsageReport`: the gateway's requests, errors, tokens, cost and latency per client,
agent and day, with cost per client per day drawn (requests per client per day when
nothing cost anything)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

import ipywidgets as widgets
from IPython.display import Image

from agentlab import _html
from agentlab.errors import UserError
from agentlab.tracing import TraceStore
from agentlab.tracing.gateway_requests import usage_by
from agentlab.ui.charts import INK, themed_png
from agentlab.ui.cost_dashboard import _PALETTE, _dollars, _tokens

__all__ = ["UsageReport"]


class UsageReport(widgets.VBox):
    """Gateway usage of the last `days` UTC days (today included) in `store` (default:
    the default workspace's), one table row per group of `by` (see
    :func:`~agentlab.tracing.gateway_requests.usage_by`), and a chart of cost per client
    per day, stacked (requests instead when every request cost $0; no chart when
    there were no requests).

    Attributes: ``since`` (UTC midnight the period starts), ``rows`` (the table's
    rows), ``per_day`` (rows per client and day), ``total_cost``, ``summary``,
    ``chart`` (an Output holding the PNG), ``table_view``, ``refresh_button``.
    """

    def __init__(
        self,
        store: TraceStore | None = None,
        days: int = 30,
        by: str | tuple[str, ...] | list[str] = ("client", "agent"),
    ) -> None:
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise UserError(f"days must be a whole number of at least 1, not {days!r}")
        self.store = store if store is not None else TraceStore()
        self.days = days
        self.by = [by] if isinstance(by, str) else list(by)  # usage_by checks the names
        self.summary = widgets.HTML()
        self.chart = widgets.Output()
        self.table_view = widgets.HTML()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__(
            [widgets.HBox([self.refresh_button]), self.summary, self.chart, self.table_view]
        )
        self.add_class("agentlab-usage-report")
        self.refresh()

    def refresh(self) -> None:
        """Read the period's requests from the store again and redraw."""
        today = datetime.now(UTC).date()
        self.since = datetime.combine(today - timedelta(days=self.days - 1), time(), UTC)
        self.rows = usage_by(self.store, self.by, since=self.since)
        self.per_day = usage_by(self.store, ["client", "day"], since=self.since)
        self.total_cost = float(sum(r["cost"] for r in self.rows))
        self._draw()

    def _draw(self) -> None:
        period = f"the last {self.days} day{'s' if self.days != 1 else ''}"
        since = f"since {self.since:%Y-%m-%d} UTC"
        self.chart.outputs = ()
        requests = sum(r["requests"] for r in self.rows)
        if not requests:
            self.summary.value = _html.scoped(
                _html.callout(
                    f"<b>No gateway requests in {period}</b> ({since}) in "
                    f"<code>{_html.esc(self.store.workspace)}</code>: serve agents with "
                    "<code>agentlab serve</code>, then Refresh.",
                    "warn",
                )
            )
            self.table_view.value = ""
            return
        priced = self.total_cost > 0
        clients = len({r["client"] for r in self.per_day})
        text = (
            f"<b>{requests:,} requests</b> from {clients} client{'s' if clients != 1 else ''}"
            f" in {period} ({since})"
            + (f" for <b>{_html.esc(_dollars(self.total_cost))}</b>" if priced else "")
        )
        if not priced:
            text += (
                '<div><b class="warn">No cost recorded</b>: every request was free (a local '
                "or scripted model, a model without a known price, or rejected before it "
                "ran). The chart shows requests.</div>"
            )
        self.summary.value = _html.scoped(_html.callout(text, "" if priced else "warn"))
        self.chart.append_display_data(Image(data=self._chart_png(priced)))
        self.table_view.value = _html.scoped(_table_html(self.by, self.rows))

    def _chart_png(self, priced: bool) -> bytes:
        """Cost (or requests) per client per day, stacked by client."""
        from matplotlib.dates import DateFormatter, DayLocator
        from matplotlib.figure import Figure  # no pyplot: no global figure state
        from matplotlib.ticker import MaxNLocator, StrMethodFormatter

        column, label = ("cost", "cost (USD)") if priced else ("requests", "requests")
        days = [(self.since + timedelta(days=i)).date() for i in range(self.days)]
        clients = sorted({str(r["client"]) for r in self.per_day})
        values: dict[tuple[str, date], float] = {
            (str(r["client"]), r["day"]): float(r[column]) for r in self.per_day
        }
        fig = Figure(figsize=(9, 3), dpi=80, layout="constrained")
        ax = fig.subplots()
        bottom = [0.0] * len(days)
        for i, client in enumerate(clients):
            heights = [values.get((client, d), 0.0) for d in days]
            colour = _PALETTE[i % len(_PALETTE)]
            ax.bar(cast(Any, days), heights, bottom=bottom, color=colour, label=client)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_title(f"{label} per client per day", fontsize=10, color=INK)
        ax.xaxis.set_major_locator(DayLocator(interval=max(1, len(days) // 10)))
        ax.xaxis.set_major_formatter(DateFormatter("%b %d"))
        if priced:
            ax.yaxis.set_major_formatter(StrMethodFormatter("${x:,.3g}"))
        else:  # whole requests: no ticks between them
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        legend = ax.legend(
            title="client",
            title_fontsize=8,
            fontsize=8,
            frameon=False,
            labelcolor=INK,
            loc="upper left",
            bbox_to_anchor=(1, 1),
        )
        legend.get_title().set_color(INK)
        return themed_png(fig, [ax])


def _table_html(by: list[str], rows: list[dict[str, Any]]) -> str:
    body = [
        [
            *(_html.esc(r[d]) for d in by),
            _html.esc(f"{r['requests']:,}"),
            f'<span class="bad">{r["errors"]:,}</span>' if r["errors"] else "0",
            f'<span class="warn">{r["rejected"]:,}</span>' if r["rejected"] else "0",
            _html.esc(_tokens(r["tokens"])),
            _html.esc(_html.cost_text(r["cost"])),
            _html.esc(_html.ms_text(r["latency_p50_ms"])),
            _html.esc(_html.ms_text(r["latency_p95_ms"])),
        ]
        for r in rows
    ]
    headers = [*by, "requests", "errors", "rejected", "tokens", "cost", "p50", "p95"]
    return "<h4>Gateway usage</h4>" + _html.table(headers, body, cls="agentlab-usage")
