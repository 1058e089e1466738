"""`RunInspector`: the steps of a run, read from the trace store, with a chart and
"Next step" and "Run to end" buttons that advance a live run. Model calls show their requests
(retries, failures, the model that served them and why); the run's circuit-breaker
transitions and loop alerts follow the steps; a run that ended badly shows its
failure record, a paused one what it waits for."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from IPython.display import Image

from agentlab import _html
from agentlab.agents.html import paused_html
from agentlab.errors import UserError
from agentlab.tracing import TraceStore
from agentlab.ui.charts import INK, themed_png
from agentlab.ui.plan_view import plan_view_html
from agentlab.ui.state_view import state_view_html

if TYPE_CHECKING:
    from agentlab.agents.run import Run

__all__ = ["RunInspector"]


def _store_of(run: Run) -> TraceStore:
    """The trace store a live run writes to (its agent's trace writer's workspace)."""
    workspace = getattr(run.agent.tracer, "workspace", None)
    if workspace is not None:
        return TraceStore(workspace)
    raise UserError(
        f"Run {run.id[:8]} is not recorded in a trace store (its agent has "
        f"trace={run.agent.trace!r}); build the agent with trace=True or a workspace path, "
        "or pass store=..."
    )


def _records(frame: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in frame.to_dict("records")]


def _missing(value: Any) -> bool:
    return value is None or value != value  # None or NaN


class RunInspector(widgets.VBox):
    """The steps of one run, or of the last `last` runs (pick one in the list).

    Everything shown is read from `store` (default: the store of `live_run`, else
    the default workspace's). With `live_run`, "Next step" runs
    ``live_run.step_sync()`` and refreshes, and "Run to end" steps until the run is
    done, redrawing after each step; both say which step is running while it runs
    and are disabled once the run is done.

    Attributes: ``rows`` (the store's step rows of the shown run; a model call's
    row also holds its ``attempts``, ``served_by`` and ``route``), ``breakers`` and
    ``alerts`` (the run's rows of ``breaker_transitions`` and ``alerts``), ``run_id``,
    ``run_selector`` (``None`` unless `last` is given), ``next_button``, ``finish_button``,
    ``summary``, ``pattern_view`` (the plan or the state path of a run of those patterns),
    ``steps_view``, ``events_view`` (breakers and alerts), ``chart``
    (matplotlib figure in an Output), ``message``.
    """

    def __init__(
        self,
        store: TraceStore | None = None,
        *,
        run_id: str | None = None,
        last: int | None = None,
        live_run: Run | None = None,
    ) -> None:
        if live_run is not None and run_id is not None and run_id != live_run.id:
            raise UserError("Pass either run_id or live_run, not two different runs.")
        if store is None:
            store = _store_of(live_run) if live_run is not None else TraceStore()
        self.store = store
        self.live_run = live_run
        self.run_id: str | None = live_run.id if live_run is not None else run_id
        self.rows: list[dict[str, Any]] = []
        self.run_row: dict[str, Any] | None = None
        self.breakers: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []

        self.summary = widgets.HTML()
        self.pattern_view = widgets.HTML()
        self.steps_view = widgets.HTML()
        self.events_view = widgets.HTML()
        self.chart = widgets.Output(layout=widgets.Layout(min_height="40px"))
        self.message = widgets.HTML()
        self.next_button = widgets.Button(
            description="Next step",
            icon="step-forward",
            tooltip="Run the next step of the live run",
            button_style="primary",
            layout=widgets.Layout(display="" if live_run is not None else "none"),
        )
        self.next_button.on_click(self._on_next)
        self.finish_button = widgets.Button(
            description="Run to end",
            icon="fast-forward",
            tooltip="Run the live run's steps until it is done",
            layout=widgets.Layout(display="" if live_run is not None else "none"),
        )
        self.finish_button.on_click(self._on_finish)
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(self._on_refresh)
        self.run_selector: widgets.Dropdown | None = None
        controls: list[widgets.Widget] = []
        if last is not None or (run_id is None and live_run is None):
            self.run_selector = widgets.Dropdown(description="Run", layout={"width": "640px"})
            self._listed = last or 10
            self._load_runs(self._listed)
            self.run_selector.observe(self._on_select, names="value")
            controls.append(self.run_selector)
        controls += [self.next_button, self.finish_button, self.refresh_button]
        super().__init__(
            [
                widgets.HBox(controls),
                self.message,
                self.summary,
                self.pattern_view,
                self.steps_view,
                self.events_view,
                self.chart,
            ]
        )
        self.add_class("agentlab-inspector")
        self.refresh()

    # -- actions ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the shown run from the store again and redraw everything."""
        if self.run_id is None:
            self.rows, self.run_row, self.breakers, self.alerts = [], None, [], []
        else:
            self.run_row = self.store.run(self.run_id)
            self.rows = _records(self.store.steps(self.run_id))
            self._read_resilience(self.run_id)
        self.summary.value = self._summary_html()
        self.pattern_view.value = self._pattern_html()
        self.steps_view.value = _html.steps_table_html(self.rows)
        self.events_view.value = self._events_html()
        self._draw_chart()
        live = self.live_run
        idle = live is None or live.done or live.id != self.run_id
        self.next_button.disabled = self.finish_button.disabled = idle

    def next_step(self) -> None:
        """Advance the live run by one step, then refresh from the store."""
        self._advance(until_done=False)

    def run_to_end(self) -> None:
        """Run the live run's steps until it is done, redrawing after each one."""
        self._advance(until_done=True)

    # -- internals ----------------------------------------------------------------------

    def _advance(self, *, until_done: bool) -> None:
        run = self.live_run
        if run is None or run.done:
            return
        self.next_button.disabled = self.finish_button.disabled = True
        try:
            while not run.done:
                # Shown while the step runs: the kernel sends widget updates at once.
                self.message.value = _html.STYLE + (
                    '<div class="agentlab muted">Running step '
                    f"{len(run.steps) + 1} of at most {run.step_limit}…</div>"
                )
                run.step_sync()
                if not until_done:
                    break
                self.refresh()
            self.message.value = ""
        except Exception as exc:  # show it in the widget; a click has no caller
            self.message.value = (
                f'{_html.STYLE}<div class="agentlab"><div class="callout bad"><span class="bad">'
                f"{_html.esc(type(exc).__name__)}: {_html.esc(exc)}</span></div></div>"
            )
        finally:
            self.refresh()

    def _on_next(self, _button: widgets.Button) -> None:
        self.next_step()

    def _on_finish(self, _button: widgets.Button) -> None:
        self.run_to_end()

    def _on_refresh(self, _button: widgets.Button) -> None:
        if self.run_selector is not None:  # runs started since are listed too
            self._load_runs(self._listed)
        self.refresh()

    def _on_select(self, change: Mapping[str, Any]) -> None:
        self.run_id = change["new"]
        self.refresh()

    def _read_resilience(self, run_id: str) -> None:
        """Each model call's requests and routing, and the run's breaker transitions
        and alerts (one store session)."""
        with self.store.connect() as con:
            routing = con.execute(_ROUTING, [run_id]).fetchall()
            self.breakers = _rows(con.execute(_BREAKERS, [run_id]))
            self.alerts = _rows(con.execute(_ALERTS, [run_id]))
        by_id = {r[0]: r[1:] for r in routing}
        for row in self.rows:
            if row["kind"] == "model_call" and row["id"] in by_id:
                attempts, served_by, route, sent, tools = by_id[row["id"]]
                row.update(attempts=_html.json_value(attempts), served_by=served_by, route=route)
                row.update(context_messages=sent, tools=list(tools or ()))
        _add_contexts(self.rows)

    def _events_html(self) -> str:
        """The run's circuit-breaker transitions and loop alerts ('' when none)."""
        start = None if self.run_row is None else self.run_row.get("started_at")
        parts = []
        if self.breakers:
            parts.append("<h4>Circuit breakers</h4>" + _html.breakers_html(self.breakers, start))
        if self.alerts:
            parts.append("<h4>Alerts</h4>" + _html.alerts_html(self.alerts, start))
        if not parts:
            return ""
        return _html.STYLE + '<div class="agentlab">' + "".join(parts) + "</div>"

    def _pattern_html(self) -> str:
        """What the run's pattern adds: its plans, or a state machine's path ('' for
        ReAct)."""
        return plan_view_html(self.rows) or state_view_html(self.rows, self.run_row)

    def _load_runs(self, limit: int) -> None:
        assert self.run_selector is not None
        runs = _records(self.store.runs(limit))
        options = [
            (
                f"{r['started_at']:%Y-%m-%d %H:%M:%S}  {r['status']:<9}  {r['input'] or ''}"[:120],
                r["run_id"],
            )
            if not _missing(r["started_at"])
            else (f"{r['run_id'][:8]}  {r['status']}", r["run_id"])
            for r in runs
        ]
        shown = self.run_id  # new options select their first one: keep the shown run
        self.run_selector.options = options
        if options:
            if shown is None or shown not in {v for _, v in options}:
                shown = options[0][1]
            self.run_id = self.run_selector.value = shown

    def _summary_html(self) -> str:
        r = self.run_row
        if r is None:
            text = "No run selected." if self.run_id is None else f"Run {self.run_id} not found."
            return f'<div class="agentlab muted">{_html.esc(text)}</div>'
        cost = None if _missing(r.get("cost")) else r["cost"]
        items = {
            "run": f"<code>{_html.esc(r['run_id'][:8])}</code> "
            f"{_html.esc(r.get('agent'))} / {_html.esc(r.get('model'))}",
            "status": _html.status_html(r["status"]),
            "input": _html.pre(r.get("input")),
            "steps": _html.esc(len({row["step"] for row in self.rows})),
            "tokens": _html.esc(
                f"{sum(_num(x.get('input_tokens')) for x in self.rows):.0f} in / "
                f"{sum(_num(x.get('output_tokens')) for x in self.rows):.0f} out"
            ),
            "cost": _html.esc(_html.cost_text(cost) if r["status"] != "running" else "(running)"),
        }
        failed = _failed_calls(self.rows)
        if failed:
            items["status"] += f' <span class="warn">with {_html.esc(failed)}</span>'
        if not _missing(r.get("output")):
            items["answer"] = _html.pre(r["output"])
        ending = ""
        if r.get("failure"):
            ending = _html.callout(
                '<b class="bad">Why it stopped</b>'
                + _html.failure_html(r["failure"], requests=False),
                "bad",
            )
        elif not _missing(r.get("explanation")):
            items["why it stopped"] = f'<div class="bad">{_html.pre(r["explanation"])}</div>'
        if r["status"] == "paused" and r.get("pending"):
            live = self.live_run is not None and self.live_run.id == r["run_id"]
            ending += paused_html(r["pending"], None if live else r["run_id"])
        return _html.STYLE + '<div class="agentlab">' + _html.fields(items) + ending + "</div>"

    def _draw_chart(self) -> None:
        """Cost and latency per step (model calls plus their tool calls)."""
        self.chart.outputs = ()
        if not self.rows:
            return
        steps = sorted({int(r["step"]) for r in self.rows})
        latency = {s: 0.0 for s in steps}
        cost = {s: 0.0 for s in steps}
        for r in self.rows:
            latency[int(r["step"])] += _num(r.get("latency_ms"))
            cost[int(r["step"])] += _num(r.get("cost"))
        self.chart.append_display_data(Image(data=_chart_png(steps, cost, latency)))


_ROUTING = """
SELECT id, CAST(attempts AS VARCHAR), served_by, route, context_messages, tools
FROM model_calls WHERE run_id = ?
"""
_BREAKERS = """
SELECT step, breaker, from_state, to_state, failures, reason, started_at
FROM breaker_transitions WHERE run_id = ? ORDER BY started_at, id
"""
_ALERTS = """
SELECT step, alert, message, stopped, started_at FROM alerts WHERE run_id = ?
ORDER BY started_at, id
"""


def _rows(result: Any) -> list[dict[str, Any]]:
    """A DuckDB result as dicts."""
    columns = [d[0] for d in result.description or ()]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


def _add_contexts(rows: list[dict[str, Any]]) -> None:
    """Give each model call's row the whole conversation it was sent (``context``,
    JSON): the stored rows hold only what was new, so the conversation is rebuilt
    from the earlier calls' new messages and replies, where they add up to the
    number of messages the model saw."""
    conversation: list[Any] = []
    for row in rows:
        if row["kind"] != "model_call":
            continue
        conversation += _json_list(row.get("input"))
        if row.get("context_messages") == len(conversation):
            row["context"] = json.dumps(conversation)
        if not _missing(row.get("output")) and row.get("output"):
            conversation += _json_list(row["output"])


def _json_list(text: Any) -> list[Any]:
    if _missing(text) or not text:
        return []
    value = json.loads(text)
    return value if isinstance(value, list) else [value]


def _failed_calls(rows: list[dict[str, Any]]) -> str:
    """'2 failed tool calls, 1 failed model call' ('' when none failed)."""
    counts = {"tool": 0, "model": 0}
    for row in rows:
        if row["status"] != "ok":
            counts["tool" if row["kind"] == "tool_call" else "model"] += 1
    return ", ".join(
        f"{n} failed {kind} call{'s' if n > 1 else ''}" for kind, n in counts.items() if n
    )


def _num(value: Any) -> float:
    return 0.0 if _missing(value) else float(value)


def _chart_png(steps: list[int], cost: dict[int, float], latency: dict[int, float]) -> bytes:
    """Two bar charts on a transparent background (the page's colour shows through, so
    the light and the dark theme both read)."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    priced = any(cost.values())  # a run that cost nothing gets no empty cost axes
    fig = Figure(figsize=(7 if priced else 3.8, 2.2), dpi=80, layout="constrained")
    axes = list(fig.subplots(1, 2)) if priced else [fig.subplots(1, 1)]
    axes[0].bar(steps, [latency[s] for s in steps], color="#4c72b0")
    axes[0].set_title("latency per step (ms)", fontsize=10, color=INK)
    if priced:
        axes[1].bar(steps, [cost[s] for s in steps], color="#dd8452")
        axes[1].set_title("cost per step (USD)", fontsize=10, color=INK)
    for ax in axes:
        ax.set_xlabel("step", fontsize=9, color=INK)
        ax.set_xticks(steps)
    return themed_png(fig, axes)
