"""`EvalReportView`: an eval run as a table of its cases under its metrics. Sort the
cases, show only the failures or one tag's cases, and open a case's run in a run
inspector below the table."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets

from agentlab import _html
from agentlab.errors import UserError
from agentlab.evals import EvalReport, load_eval
from agentlab.evals.report import cases_html, summary_html, title_html
from agentlab.evals.results import CaseResult
from agentlab.evals.stored import StoreLike, trace_store
from agentlab.tracing import TraceStore
from agentlab.ui.inspector import RunInspector

__all__ = [
    "MAX_SHOWN",
    "SORTS",
    "EvalReportView",
    "RunPicker",
    "case_inspector",
    "count_html",
    "tag_filter",
]

MAX_SHOWN = 200
"""Rows the table lists at most (the filters narrow the rest down)."""


def _natural(text: str) -> list[Any]:
    """A sort key that puts "c2" before "c10"."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def _cost_key(r: CaseResult) -> float:
    return -1.0 if r.cost is None else r.cost  # an unknown cost sorts last


SORTS: dict[str, tuple[str, Callable[[CaseResult], Any]]] = {
    "status": ("status (failed first)", lambda r: (r.passed, r.status == "completed", r.status)),
    "case": ("case id", lambda r: _natural(r.case_id)),
    "steps": ("steps (most first)", lambda r: -r.steps),
    "cost": ("cost (highest first)", lambda r: -_cost_key(r)),
    "latency": ("latency (slowest first)", lambda r: -r.latency_ms),
}
"""The orders of the case table: key -> (label, sort key); ties keep the report's order."""

_PICK = "(pick a case)"
_ALL_TAGS = ""


def tag_filter(tag_lists: Iterable[Iterable[str]]) -> widgets.Dropdown:
    """A tag filter over cases with these tags: 'all tags' (value ''), then each tag
    with its number of cases."""
    counts: dict[str, int] = {}
    for tags in tag_lists:
        for tag in set(tags):
            counts[tag] = counts.get(tag, 0) + 1
    return widgets.Dropdown(
        description="Tag",
        options=[("all tags", _ALL_TAGS)] + [(f"{t} ({n})", t) for t, n in sorted(counts.items())],
        style={"description_width": "initial"},
        layout=widgets.Layout(width="240px"),
    )


def count_html(total: int, shown: int) -> str:
    """'4 of 22 cases', and whether the table lists only the first :data:`MAX_SHOWN`."""
    text = f"{shown} of {total} cases" if shown != total else f"{total} cases"
    if shown > MAX_SHOWN:
        text += f"; the first {MAX_SHOWN} are listed (filter to see the others)"
    return _html.scoped(f'<div class="muted">{_html.esc(text)}</div>')


def case_inspector(
    store: TraceStore, result: CaseResult, run: str = ""
) -> tuple[widgets.VBox, RunInspector | None]:
    """A heading (`run`, an HTML label of the eval run, then the case, its verdict and
    explanation) over a run inspector of the case's run; and the inspector (None, and a
    note instead, when the case has no run id)."""
    verdict = (
        '<span class="ok">passed</span>' if result.passed else '<span class="bad">failed</span>'
    )
    heading = (
        f"<h4>{run + ' · ' if run else ''}case {_html.esc(result.case_id)} {verdict} · run "
        f"<code>{_html.esc(result.run_id[:8])}</code></h4>"
        f'<div class="muted">{_html.esc(result.explanation)}</div>'
    )
    top = widgets.HTML(_html.scoped(heading))
    if not result.run_id:
        note = "no run id was recorded for it (reproducible_report() blanks them)"
        muted = widgets.HTML(_html.scoped(f'<div class="muted">{note}</div>'))
        return widgets.VBox([top, muted]), None
    inspector = RunInspector(store, run_id=result.run_id)
    return widgets.VBox([top, inspector]), inspector


class RunPicker:
    """The dropdown that opens a case's run(s): it lists the cases the table shows, in
    its order, and calls `open(case_id)` when one is picked."""

    def __init__(self, description: str, open: Callable[[str], None]) -> None:
        self.dropdown = widgets.Dropdown(
            description=description,
            options=[(_PICK, None)],
            style={"description_width": "initial"},
            layout=widgets.Layout(width="380px"),
        )
        self._open = open
        self._listing = False
        self.dropdown.observe(self._on_pick, names="value")

    def list(self, options: Sequence[tuple[str, str]], opened: str | None) -> None:
        """List `options` (label, case id), keeping `opened` selected if it is listed."""
        self._listing = True
        try:
            self.dropdown.options = [(_PICK, None), *options]
        finally:
            self._listing = False
        self.select(opened)

    def select(self, case_id: str | None) -> None:
        """Show `case_id` as the picked case (if it is listed) without opening it again."""
        self._listing = True
        try:
            listed = {value for _, value in self.dropdown.options}
            self.dropdown.value = case_id if case_id in listed else None
        finally:
            self._listing = False

    def _on_pick(self, change: Mapping[str, Any]) -> None:
        if not self._listing and change["new"] is not None:
            self._open(change["new"])


class EvalReportView(widgets.VBox):
    """An eval run: its metrics, then its cases as a table (failed rows red, passed
    ones marked green, in Lab's theme colours) and a run inspector below it.

    `report` is an :class:`~agentlab.evals.EvalReport` or an eval run in the trace
    store `store` (its id, a unique prefix of it or its name); the runs are read
    from `store` too (default: the default workspace's).

    Python API (what the controls call): ``sort.value`` (a key of :data:`SORTS`),
    ``failures_only.value``, ``tag.value`` (a tag, or '' for all), :meth:`open_case`;
    read ``shown`` (the listed cases, in order), ``opened`` (the case whose run is
    shown) and ``inspector`` (its :class:`RunInspector`).
    """

    def __init__(self, report: EvalReport | str, store: StoreLike = None) -> None:
        self.store = trace_store(store)
        if isinstance(report, str):
            report = load_eval(report, self.store)
        if not isinstance(report, EvalReport):
            raise UserError(
                f"EvalReportView takes an EvalReport (what evaluate() returns) or an eval id, "
                f"prefix or name, not {type(report).__name__}"
            )
        self.report = report
        self.shown: list[CaseResult] = []
        self.opened: str | None = None
        self.inspector: RunInspector | None = None
        self.header = widgets.HTML(_html.box(title_html(report), summary_html(report)))
        self.sort = widgets.Dropdown(
            description="Sort by",
            options=[(label, key) for key, (label, _) in SORTS.items()],
            value="status",
            style={"description_width": "initial"},
            layout=widgets.Layout(width="260px"),
        )
        self.failures_only = widgets.ToggleButton(
            description="Failures only", icon="filter", tooltip="List only the failed cases"
        )
        self.tag = tag_filter(r.tags for r in report.results)
        self.picker = RunPicker("Open run", self.open_case)
        self.count = widgets.HTML()
        self.table = widgets.HTML()
        self.run_box = widgets.VBox([])
        for control in (self.sort, self.failures_only, self.tag):
            control.observe(lambda _: self.refresh(), names="value")
        controls = widgets.HBox(
            [self.sort, self.failures_only, self.tag, self.picker.dropdown],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        super().__init__([self.header, controls, self.count, self.table, self.run_box])
        self.add_class("agentlab-eval-report")
        self.refresh()

    def refresh(self) -> None:
        """List the cases the filters keep, in the chosen order."""
        cases = [
            r
            for r in self.report.results
            if (not self.failures_only.value or not r.passed)
            and (self.tag.value == _ALL_TAGS or self.tag.value in r.tags)
        ]
        self.shown = sorted(cases, key=SORTS[self.sort.value][1])
        self.count.value = count_html(len(self.report.results), len(self.shown))
        self.table.value = _html.scoped(cases_html(self.shown[:MAX_SHOWN]))
        self.picker.list(
            [(f"{r.case_id} · {'pass' if r.passed else 'FAIL'}", r.case_id) for r in self.shown],
            self.opened,
        )

    def open_case(self, case_id: str) -> None:
        """Show the run of case `case_id` in a run inspector below the table."""
        result = next((r for r in self.report.results if r.case_id == case_id), None)
        if result is None:
            raise UserError(f"eval {self.report.eval_id[:8]} has no case {case_id!r}")
        box, self.inspector = case_inspector(self.store, result)
        self.opened = case_id
        self.run_box.children = (box,)
        self.picker.select(case_id)
