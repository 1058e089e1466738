"""The plans of a Plan-and-Execute run in a notebook: the latest plan with each
step's status, the earlier versions, and any two versions diffed.

:func:`plan_view_html` is what the run inspector shows for a run (from a live run,
its steps, or a stored run's rows); :class:`PlanView` is a widget over the same,
with a choice of the two versions to compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from agentlab.agents.plan import PlanProgress, plan_diff, plan_progress
from agentlab.agents.plan_html import diff_html, progress_html
from agentlab.errors import UserError
from agentlab.tracing import TraceStore

if TYPE_CHECKING:
    from agentlab.agents.records import Step
    from agentlab.agents.run import Run

__all__ = ["PlanView", "plan_view_html"]


def plan_view_html(source: Run | Sequence[Step] | Sequence[Mapping[str, Any]]) -> str:
    """The plans of a run (a live :class:`Run`, its steps, or the rows of
    ``TraceStore.steps(run_id)`` as dicts) as HTML; '' when the run made no plan
    (not a Plan-and-Execute run)."""
    progress = plan_progress(source)
    if not progress.versions and not progress.rejected:
        return ""
    return progress_html(progress)


class PlanView(widgets.VBox):
    """A run's plans, and the diff of the two versions chosen.

    `source` is a live run, its steps, or a stored run's rows; or pass `run_id`
    (and a `store`, default: the default workspace's) to read a stored run.

    Attributes: ``progress`` (:class:`~agentlab.agents.plan.PlanProgress`),
    ``plans`` (the HTML of the plans), ``old`` and ``new`` (the versions to
    compare), ``diff`` (their diff's HTML).
    """

    def __init__(
        self,
        source: Run | Sequence[Step] | Sequence[Mapping[str, Any]] | None = None,
        *,
        run_id: str | None = None,
        store: TraceStore | None = None,
    ) -> None:
        if source is None:
            if run_id is None:
                raise UserError("Pass a run (or its steps), or run_id= of a stored run.")
            rows = (store or TraceStore()).steps(run_id).to_dict("records")
            source = [dict(r) for r in rows]
        self.progress: PlanProgress = plan_progress(source)
        self.plans = widgets.HTML(progress_html(self.progress, diff=False))
        options = [(f"v{v.number}", i) for i, v in enumerate(self.progress.versions)]
        several = len(options) > 1
        self.old = widgets.Dropdown(
            options=options, value=len(options) - 2 if several else None, description="Compare"
        )
        self.new = widgets.Dropdown(
            options=options, value=len(options) - 1 if several else None, description="with"
        )
        self.diff = widgets.HTML()
        for choice in (self.old, self.new):
            choice.observe(self._show_diff, names="value")
        compare = widgets.HBox([self.old, self.new])
        compare.layout.display = "" if several else "none"
        super().__init__([self.plans, compare, self.diff])
        self.add_class("agentlab-plan-view")
        self._show_diff()

    def _show_diff(self, _change: Any = None) -> None:
        versions = self.progress.versions
        if self.old.value is None or self.new.value is None:
            self.diff.value = ""
            return
        a, b = versions[self.old.value], versions[self.new.value]
        title = f"Plan v{a.number} → v{b.number}"
        self.diff.value = diff_html(plan_diff(a.plan, b.plan), title)
