"""Several agents on the same dataset, side by side: one row of metrics per agent.

>>> table = side_by_side({"ReAct": react_report, "Plan-and-Execute": plan_report})
>>> table            # an HTML table in a notebook; print(table) in a terminal
>>> table.rows["ReAct"].task_completion_rate

Where :func:`~agentlab.evals.compare_evals` pairs two runs case by case (is B better
than A?), this lines up any number of runs of the same cases, for a choice between
agents or patterns: completion, steps, tool-call accuracy, cost and latency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentlab import _html
from agentlab.errors import MissingExtraError, UserError
from agentlab.evals.metrics import EvalMetrics
from agentlab.evals.report import EvalReport
from agentlab.evals.text_table import text_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SideBySide", "side_by_side"]

_COLUMNS = (  # (header, metric, how it is shown, higher is better)
    ("completion", "task_completion_rate", "{:.0%}", True),
    ("passed", "passed", "{}", True),
    ("avg steps", "avg_steps", "{:.1f}", False),
    ("tool precision", "tool_precision", "{:.0%}", True),
    ("tool recall", "tool_recall", "{:.0%}", True),
    ("cost / task", "cost_per_task", "${:.6f}", False),
    ("latency p50", "latency_p50_ms", "{:,.0f} ms", False),
    ("latency p95", "latency_p95_ms", "{:,.0f} ms", False),
)


@dataclass(frozen=True)
class SideBySide:
    """The metrics of several eval runs of one dataset, by label, in the order given."""

    rows: Mapping[str, EvalMetrics]
    dataset: str

    def best(self, metric: str) -> list[str]:
        """The labels with the best value of `metric` (ties included; none if unknown)."""
        higher = next(h for _, m, _, h in _COLUMNS if m == metric)
        values = {k: getattr(v, metric) for k, v in self.rows.items()}
        known = [v for v in values.values() if v is not None]
        if not known:
            return []
        top = max(known) if higher else min(known)
        return [k for k, v in values.items() if v == top]

    def frame(self) -> pd.DataFrame:
        """One row per label, one column per metric (needs ``agentlab-toolkit[pandas]``)."""
        try:
            import pandas as pd
        except ImportError:
            raise MissingExtraError("pandas", "pandas") from None
        return pd.DataFrame(
            [{m: getattr(v, m) for _, m, _, _ in _COLUMNS} for v in self.rows.values()],
            index=pd.Index(list(self.rows), name="agent"),
        )

    def _cells(self) -> list[list[str]]:
        return [
            [
                label,
                *(
                    "n/a" if (x := getattr(m, f)) is None else s.format(x)
                    for _, f, s, _ in _COLUMNS
                ),
            ]
            for label, m in self.rows.items()
        ]

    def __str__(self) -> str:
        header = ["agent", *(h for h, *_ in _COLUMNS)]
        cases = next(iter(self.rows.values())).cases
        return "\n".join(
            [f"{self.dataset}: {cases} cases each", *text_table(header, self._cells())]
        )

    def _repr_html_(self) -> str:
        best = {f: set(self.best(f)) for _, f, _, _ in _COLUMNS}
        rows = [
            [
                _html.esc(cells[0]),
                *(
                    f"<b>{_html.esc(c)}</b>"
                    if label in best[f] and len(self.rows) > 1
                    else _html.esc(c)
                    for c, (_, f, _, _) in zip(cells[1:], _COLUMNS, strict=True)
                ),
            ]
            for label, cells in zip(self.rows, self._cells(), strict=True)
        ]
        cases = next(iter(self.rows.values())).cases
        title = f"{_html.esc(self.dataset)}: {cases} cases each (best in bold)"
        return _html.box(title, _html.table(["agent", *(h for h, *_ in _COLUMNS)], rows))


def _cases(n: int) -> str:
    return f"{n} case" if n == 1 else f"{n} cases"


def side_by_side(reports: Mapping[str, EvalReport]) -> SideBySide:
    """Line up eval runs of the same dataset and cases, labelled by the keys of `reports`."""
    if not reports:
        raise UserError("side_by_side needs at least one eval report, as {label: report}.")
    datasets = {r.dataset for r in reports.values()}
    cases = {frozenset(c.case_id for c in r.results) for r in reports.values()}
    if len(datasets) > 1 or len(cases) > 1:
        shapes = ", ".join(
            f"{k}: {r.dataset} ({_cases(len(r.results))})" for k, r in reports.items()
        )
        raise UserError(
            f"side_by_side compares runs of the same cases; these differ ({shapes}). "
            "Evaluate every agent on the same dataset (and the same cases)."
        )
    return SideBySide({k: r.metrics for k, r in reports.items()}, datasets.pop())
