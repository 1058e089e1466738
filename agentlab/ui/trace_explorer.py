"""`TraceExplorer`: every run in the trace store, paged and filtered (agent, status,
dates, minimum cost, runs with alerts), each one openable in the run inspector.

A page is two SQL statements on the store (:meth:`TraceStore.count_runs` and
:meth:`TraceStore.runs_page`: the filters in WHERE, LIMIT/OFFSET), so it stays quick
with a million spans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import ipywidgets as widgets

from agentlab import _html
from agentlab.errors import UserError
from agentlab.tracing import TraceStore
from agentlab.tracing.queries import RunFilter
from agentlab.ui.inspector import RunInspector

__all__ = ["RunOpener", "TraceExplorer", "run_label", "runs_table_html"]

_ANY = ("(any)", "")  # a Dropdown shows no choice at all for the value None


def _value(value: Any) -> Any:
    """None for missing values (None, NaN, NaT) from a DataFrame row."""
    return None if value is None or value != value else value


def _day_start(day: date | None, *, after: bool = False) -> datetime | None:
    """The UTC midnight starting `day` (with `after`: the next day's)."""
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=after), time()).replace(tzinfo=UTC)


def _nowrap(text: str) -> str:
    return f'<span class="nowrap">{_html.esc(text)}</span>'


def run_label(index: int, run: Mapping[str, Any]) -> str:
    """How a run is named in a picker: its row number, start, agent, status and input."""
    started = _value(run.get("started_at"))
    when = f"{started:%Y-%m-%d %H:%M}" if started is not None else run["run_id"][:8]
    text = " ".join(str(_value(run.get("input")) or "").split())
    return f"#{index}  {when}  {run.get('agent') or '?'}  {run['status']}  {text}"[:110]


def runs_table_html(runs: list[dict[str, Any]], first: int = 1) -> str:
    """Rows of :meth:`TraceStore.runs_page` as a table, numbered from `first`."""
    rows = []
    for i, r in enumerate(runs, first):
        started, steps = _value(r.get("started_at")), _value(r.get("steps"))
        tokens_in, tokens_out = _value(r.get("input_tokens")), _value(r.get("output_tokens"))
        tokens = "" if tokens_in is None else f"{tokens_in:,.0f} / {tokens_out or 0:,.0f}"
        alerts = int(_value(r.get("alerts")) or 0)
        rows.append(
            [
                _html.esc(i),
                _nowrap("" if started is None else f"{started:%Y-%m-%d %H:%M:%S}"),
                _html.esc(r.get("agent")),
                f"<code>{_html.esc(r.get('model'))}</code>",
                _html.status_html(r.get("status")),
                _html.esc("" if steps is None else f"{steps:.0f}"),
                _nowrap(tokens),
                _nowrap(_html.cost_text(_value(r.get("cost")))),
                _nowrap(_html.ms_text(_value(r.get("latency_ms")))),
                f'<span class="tag warn">{alerts}</span>' if alerts else "",
                _html.clip(_value(r.get("input")), 80),
            ]
        )
    headers = ["#", "started (UTC)", "agent", "model", "status", "steps", "tokens in / out"]
    headers += ["cost", "latency", "alerts", "input"]
    return _html.table(headers, rows, cls="agentlab-runs")


class RunOpener(widgets.VBox):
    """An "Open run" list of runs and, under it, the picked one in a :class:`RunInspector`.

    Attributes: ``picker`` (the Dropdown; its value is the open run's id, or ''),
    ``inspector`` (None until a run is picked).
    """

    def __init__(self, store: TraceStore, description: str = "Open run") -> None:
        self.store = store
        self.inspector: RunInspector | None = None
        self.picker = widgets.Dropdown(description=description, layout={"width": "760px"})
        self.picker.observe(self._on_pick, names="value")
        self._box = widgets.VBox()
        super().__init__([self.picker, self._box])

    def list_runs(self, runs: list[dict[str, Any]], first: int = 1) -> None:
        """Offer `runs` (rows with ``run_id``), numbered from `first`; the open run
        stays open, and picked when it is among them."""
        opened = self.inspector.run_id if self.inspector is not None else None
        options = [("(pick a run to inspect)", "")]
        options += [(run_label(i, r), r["run_id"]) for i, r in enumerate(runs, first)]
        self.picker.unobserve(self._on_pick, names="value")
        try:
            self.picker.options = options
            self.picker.value = opened if opened in {v for _, v in options} else ""
        finally:
            self.picker.observe(self._on_pick, names="value")

    def show(self, run_id: str | None) -> None:
        """Show run `run_id` in a :class:`RunInspector` (None or '': close it)."""
        if not run_id:
            self.inspector = None
            self._box.children = ()
            return
        self.inspector = RunInspector(self.store, run_id=run_id)
        self._box.children = (self.inspector,)

    def _on_pick(self, change: Mapping[str, Any]) -> None:
        self.show(change["new"])


class TraceExplorer(widgets.VBox):
    """Every run in `store` (default: the default workspace's), newest first,
    `page_size` to a page.

    Filters: agent and status (those the store holds), ``since``/``until`` (UTC days,
    both inclusive), minimum cost in dollars, "with alerts only". Any change goes back
    to the first page. "Open run" shows one of the page's runs in a
    :class:`RunInspector` below.

    Attributes: ``filters`` (the :class:`~agentlab.tracing.queries.RunFilter` in
    force), ``page`` (0-based), ``pages``, ``total``, ``runs`` (the page's rows),
    ``agent_filter``, ``status_filter``, ``since_picker``, ``until_picker``,
    ``min_cost``, ``alerts_only``, ``prev_button``, ``next_button``,
    ``refresh_button``, ``page_label``, ``table_view``, ``opener`` (a
    :class:`RunOpener`: ``opener.picker``, ``opener.inspector``), ``message``.
    """

    def __init__(self, store: TraceStore | None = None, page_size: int = 50) -> None:
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise UserError(f"page_size must be a whole number of at least 1, not {page_size!r}")
        self.store = store if store is not None else TraceStore()
        self.page_size = page_size
        self.filters = RunFilter()
        self.page = 0
        self.total = 0
        self.runs: list[dict[str, Any]] = []
        self._quiet = False  # True while the filters' choices are reloaded

        self.agent_filter = widgets.Dropdown(description="Agent", layout={"width": "240px"})
        self.status_filter = widgets.Dropdown(description="Status", layout={"width": "240px"})
        self.min_cost = widgets.BoundedFloatText(
            value=0.0,
            min=0.0,
            max=1e9,
            step=0.01,
            description="Min cost $",
            continuous_update=False,
            layout={"width": "200px"},
        )
        self.since_picker = widgets.DatePicker(description="Since", layout={"width": "240px"})
        self.until_picker = widgets.DatePicker(description="Until", layout={"width": "240px"})
        self.alerts_only = widgets.Checkbox(description="With alerts only", indent=False)
        self.prev_button = widgets.Button(description="Previous", icon="chevron-left")
        self.next_button = widgets.Button(description="Next", icon="chevron-right")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.page_label = widgets.HTML()
        self.message = widgets.HTML()
        self.table_view = widgets.HTML()
        self.opener = RunOpener(self.store)

        self._load_facets()
        for control in (
            self.agent_filter,
            self.status_filter,
            self.min_cost,
            self.since_picker,
            self.until_picker,
            self.alerts_only,
        ):
            control.observe(self._on_filter, names="value")
        self.prev_button.on_click(lambda _: self.show_page(self.page - 1))
        self.next_button.on_click(lambda _: self.show_page(self.page + 1))
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__(
            [
                widgets.HBox([self.agent_filter, self.status_filter, self.min_cost]),
                widgets.HBox([self.since_picker, self.until_picker, self.alerts_only]),
                widgets.HBox(
                    [self.prev_button, self.next_button, self.page_label, self.refresh_button],
                    layout={"align_items": "center"},
                ),
                self.message,
                self.table_view,
                self.opener,
            ]
        )
        self.add_class("agentlab-trace-explorer")
        self.show_page(0)

    @property
    def pages(self) -> int:
        """How many pages the filtered runs fill (at least 1)."""
        return max(1, math.ceil(self.total / self.page_size))

    def refresh(self) -> None:
        """Read the agents, statuses, count and page from the store again."""
        self._load_facets()
        self.show_page(self.page)

    def show_page(self, page: int) -> None:
        """Count the runs the filters keep and show page `page` (0-based; clamped)."""
        self.total = self.store.count_runs(self.filters)
        self.page = min(max(page, 0), self.pages - 1)
        offset = self.page * self.page_size
        frame = self.store.runs_page(self.filters, limit=self.page_size, offset=offset)
        self.runs = [dict(r) for r in frame.to_dict("records")]
        self._draw(offset)

    def open_run(self, run_id: str | None) -> None:
        """Show run `run_id` in the run inspector below (None: close it)."""
        self.opener.show(run_id)

    # -- internals ----------------------------------------------------------------------

    def _load_facets(self) -> None:
        """The agents and statuses the store holds, as the filters' choices (a choice
        no longer there falls back to any)."""
        facets = self.store.run_facets()
        self._quiet = True
        try:
            for dropdown, key in ((self.agent_filter, "agent"), (self.status_filter, "status")):
                value = dropdown.value
                dropdown.options = [_ANY, *((v, v) for v in facets[key])]
                dropdown.value = value if value in facets[key] else ""
        finally:
            self._quiet = False
        self._read_filters()

    def _on_filter(self, _change: Mapping[str, Any]) -> None:
        if not self._quiet and self._read_filters():
            self.show_page(0)

    def _read_filters(self) -> bool:
        """Set ``filters`` from the controls; False (and a message) when they conflict."""
        try:
            self.filters = RunFilter(
                agent=self.agent_filter.value or None,
                status=self.status_filter.value or None,
                since=_day_start(self.since_picker.value),
                until=_day_start(self.until_picker.value, after=True),
                min_cost=self.min_cost.value or None,
                alerts_only=self.alerts_only.value,
            )
        except UserError as exc:  # e.g. since after until: say so, keep the shown page
            self.message.value = _html.scoped(
                _html.callout(f'<span class="bad">{_html.esc(exc)}</span>', "bad")
            )
            return False
        self.message.value = ""
        return True

    def _draw(self, offset: int) -> None:
        first, last = offset + 1, offset + len(self.runs)
        shown = f"runs {first:,} to {last:,} of " if self.runs else ""
        self.page_label.value = _html.scoped(
            f"<b>page {self.page + 1} of {self.pages}</b> "
            f'<span class="muted">({shown}{self.total:,} run{"s" if self.total != 1 else ""})'
            "</span>"
        )
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages - 1
        if self.runs:
            body = f'<div class="scroll">{runs_table_html(self.runs, first)}</div>'
        elif self.filters == RunFilter():
            body = (
                '<div class="muted">No runs in the trace store yet '
                f"(<code>{_html.esc(self.store.workspace)}</code>): run an agent with "
                "tracing on, then Refresh.</div>"
            )
        else:
            body = '<div class="muted">No runs match these filters.</div>'
        self.table_view.value = _html.scoped(body)
        self.opener.list_runs(self.runs, first)
