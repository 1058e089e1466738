"""`EvalCompare`: what changed from one eval run to another. The verdict, the paired
statistics and the metric deltas on top; the cases below, filtered to the regressed,
improved or changed ones or to a tag; pick a case to open its run in both eval runs,
A's inspector above B's."""

from __future__ import annotations

import ipywidgets as widgets

from agentlab import _html
from agentlab.errors import UserError
from agentlab.evals import EvalComparison, EvalReport, compare_evals
from agentlab.evals.compare import CHANGES, CaseChange, Change
from agentlab.evals.compare_view import cases_html, summary_html, title_html
from agentlab.evals.stored import StoreLike, trace_store
from agentlab.ui.eval_report import MAX_SHOWN, RunPicker, case_inspector, count_html, tag_filter
from agentlab.ui.inspector import RunInspector

__all__ = ["FILTERS", "EvalCompare"]

_FLIPS: frozenset[Change] = frozenset({"regressed", "improved", "only_a", "only_b"})
FILTERS: dict[str, tuple[str, frozenset[Change]]] = {
    "all": ("all", frozenset(CHANGES)),
    "regressed": ("regressed", frozenset({"regressed"})),
    "improved": ("improved", frozenset({"improved"})),
    "changed": ("changed", _FLIPS),
}
"""The case filters: key -> (label, the changes it keeps); "changed" is a flipped
verdict or a case in one run only."""


def _tags(case: CaseChange) -> set[str]:
    return {t for r in (case.a, case.b) if r is not None for t in r.tags}


class EvalCompare(widgets.VBox):
    """Eval run `b` compared with the baseline `a` (see
    :func:`~agentlab.evals.compare_evals`): the runs, the verdict (McNemar's exact
    test on the flips), the paired bootstrap intervals and every metric's B - A;
    then the cases, flips first (regressed rows red, improved ones green).

    `a` and `b` are EvalReports or eval runs in the trace store `store` (an id, a
    unique prefix or a name); or pass an :class:`~agentlab.evals.EvalComparison`
    already made as `a` alone. The runs are read from `store` (default: the
    default workspace's).

    Python API (what the controls call): ``show.value`` (a key of :data:`FILTERS`),
    ``tag.value`` (a tag, or '' for all), :meth:`open_case`; read ``comparison``,
    ``shown`` (the listed case changes, in order), ``opened`` and ``inspectors``
    (A's and B's :class:`RunInspector`, None for a run without the case).
    """

    def __init__(
        self,
        a: EvalReport | str | EvalComparison,
        b: EvalReport | str | None = None,
        *,
        store: StoreLike = None,
        confidence: float = 0.95,
        alpha: float = 0.05,
    ) -> None:
        self.store = trace_store(store)
        self.comparison = _comparison(a, b, self.store, confidence, alpha)
        c = self.comparison
        self.shown: list[CaseChange] = []
        self.opened: str | None = None
        self.inspectors: tuple[RunInspector | None, RunInspector | None] = (None, None)
        self.header = widgets.HTML(_html.box(title_html(c), summary_html(c)))
        counts = {key: sum(x.change in kept for x in c.cases) for key, (_, kept) in FILTERS.items()}
        self.show = widgets.ToggleButtons(
            options=[(f"{label} ({counts[key]})", key) for key, (label, _) in FILTERS.items()],
            value="all",
            tooltips=[
                "every case",
                "passed in A, fail in B",
                "failed in A, pass in B",
                "the verdict flipped, or the case is in one run only",
            ],
            style={"button_width": "auto"},
        )
        self.tag = tag_filter(_tags(x) for x in c.cases)
        self.picker = RunPicker("Open runs", self.open_case)
        self.count = widgets.HTML()
        self.table = widgets.HTML()
        self.run_box = widgets.VBox([])
        for control in (self.show, self.tag):
            control.observe(lambda _: self.refresh(), names="value")
        controls = widgets.HBox(
            [self.show, self.tag, self.picker.dropdown],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        super().__init__([self.header, controls, self.count, self.table, self.run_box])
        self.add_class("agentlab-eval-compare")
        self.refresh()

    def refresh(self) -> None:
        """List the cases the filters keep, flips first."""
        kept = FILTERS[self.show.value][1]
        tag = self.tag.value
        self.shown = [
            x
            for x in sorted(self.comparison.cases, key=lambda x: CHANGES.index(x.change))
            if x.change in kept and (not tag or tag in _tags(x))
        ]
        self.count.value = count_html(len(self.comparison.cases), len(self.shown))
        self.table.value = _html.scoped(cases_html(self.shown[:MAX_SHOWN]))
        self.picker.list([(_label(x), x.case_id) for x in self.shown], self.opened)

    def open_case(self, case_id: str) -> None:
        """Show the runs of case `case_id` in A and in B, one inspector above the other."""
        case = next((x for x in self.comparison.cases if x.case_id == case_id), None)
        if case is None:
            raise UserError(f"neither eval run of this comparison has a case {case_id!r}")
        boxes: list[widgets.Widget] = []
        inspectors: list[RunInspector | None] = []
        for label, report, result in (
            ("A", self.comparison.a, case.a),
            ("B", self.comparison.b, case.b),
        ):
            run = f"{label}: {_html.esc(report.name)} <code>{_html.esc(report.eval_id[:8])}</code>"
            if result is None:
                missing = f"case {_html.esc(case_id)} is not in run {label}"
                note = f'<h4>{run}</h4><div class="warn">{missing}</div>'
                boxes.append(widgets.HTML(_html.scoped(note)))
                inspectors.append(None)
                continue
            box, inspector = case_inspector(self.store, result, run)
            boxes.append(box)
            inspectors.append(inspector)
        self.inspectors = (inspectors[0], inspectors[1])
        self.opened = case_id
        self.run_box.children = tuple(boxes)
        self.picker.select(case_id)


def _label(case: CaseChange) -> str:
    return f"{case.case_id} · {case.change.replace('_', ' ')}"


def _comparison(
    a: EvalReport | str | EvalComparison,
    b: EvalReport | str | None,
    store: StoreLike,
    confidence: float,
    alpha: float,
) -> EvalComparison:
    if isinstance(a, EvalComparison):
        if b is not None:
            raise UserError(
                "pass EvalCompare(comparison) alone, or two eval runs: EvalCompare(a, b)"
            )
        return a
    if b is None:
        raise UserError(
            "EvalCompare needs two eval runs, EvalCompare(baseline, new_run), or an "
            "EvalComparison alone"
        )
    for name, run in (("a", a), ("b", b)):
        if not isinstance(run, EvalReport | str):
            raise UserError(
                f"EvalCompare({name}=...) takes an EvalReport or an eval id, prefix or name "
                f"(or an EvalComparison as a alone), not {type(run).__name__}"
            )
    return compare_evals(a, b, store=store, confidence=confidence, alpha=alpha)
