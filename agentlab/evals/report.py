"""The report of one eval run: metrics, per-case rows, a text table and gates."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from agentlab import _html
from agentlab.errors import UserError
from agentlab.evals.metrics import EvalMetrics
from agentlab.evals.results import CaseResult
from agentlab.evals.text_table import clip, text_table

if TYPE_CHECKING:
    from agentlab.evals.stored import StoreLike

__all__ = [
    "GATE_METRICS",
    "REGRESSION_GATE",
    "EvalReport",
    "GateFailure",
    "cases_html",
    "failures_first",
    "summary_html",
    "title_html",
]

GATE_METRICS: tuple[str, ...] = tuple(f.name for f in fields(EvalMetrics) if f.name != "tags")

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
HTML_MAX_ROWS = 50
"""Cases listed in a report's notebook view (failed ones first); the rest are in the store."""
REGRESSION_GATE = "regression"
"""The gate against a baseline run: ``{"regression": "not significant"}``."""
_NO_REGRESSION = "not significant"
_GATE = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True, slots=True)
class GateFailure:
    """A gate that did not hold; `message` says which metric, what and how much."""

    metric: str
    condition: str
    actual: float | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class EvalReport:
    """What :func:`~agentlab.evals.evaluate` returns; its rows are also in the
    trace store (``eval_runs``, ``eval_results``)."""

    eval_id: str
    name: str
    dataset: str
    agent: str
    model: str
    metrics: EvalMetrics
    results: list[CaseResult]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, results: bool = True) -> dict[str, Any]:
        """The report as a JSON-able dict (without the per-case rows if not `results`)."""
        data: dict[str, Any] = {
            "eval_id": self.eval_id,
            "name": self.name,
            "dataset": self.dataset,
            "agent": self.agent,
            "model": self.model,
            "metadata": self.metadata,
            "metrics": self.metrics.to_dict(),
        }
        if results:
            data["results"] = [r.to_dict() for r in self.results]
        return data

    def check_gates(
        self,
        gates: Mapping[str, str],
        *,
        baseline: EvalReport | str | None = None,
        alpha: float = 0.05,
        store: StoreLike = None,
    ) -> list[GateFailure]:
        """The gates that fail, e.g. ``{"task_completion_rate": ">=0.6"}``; [] if all hold.

        A gate is an operator (``>=``, ``<=``, ``>``, ``<``, ``==``) and a number;
        the metric names are :data:`GATE_METRICS`. A metric that was not measured
        (``cost_per_task`` with unknown prices) fails its gate.

        With a `baseline` run (an EvalReport, or an eval id, prefix or name in the
        trace store `store`), the gate :data:`REGRESSION_GATE` ``"not significant"``
        applies too (writing it in `gates` is optional; without a baseline it is an
        error): it fails when this run has significantly more pass->fail flips than
        fail->pass ones against the baseline (McNemar exact p < `alpha`), see
        :func:`agentlab.evals.compare_evals`.
        """
        gates = dict(gates)
        regression = gates.pop(REGRESSION_GATE, None)
        if regression is not None and " ".join(str(regression).lower().split()) != _NO_REGRESSION:
            raise UserError(
                f"gate {REGRESSION_GATE}={regression!r} is not understood; write "
                f'{{"{REGRESSION_GATE}": "{_NO_REGRESSION}"}} and pass baseline=<eval id>'
            )
        if regression is not None and baseline is None:
            raise UserError(
                f"the gate {REGRESSION_GATE}={_NO_REGRESSION!r} compares with a baseline run: "
                "pass baseline=<an EvalReport or eval id> (the eval notebook's `baseline` "
                "parameter)"
            )
        failures = [
            failure
            for metric, condition in gates.items()
            if (failure := self._metric_failure(metric, condition)) is not None
        ]
        if baseline is not None:
            from agentlab.evals.compare import compare_evals

            comparison = compare_evals(baseline, self, store=store, alpha=alpha)
            if (failure := comparison.regression_failure()) is not None:
                failures.append(failure)
        return failures

    def _metric_failure(self, metric: str, condition: str) -> GateFailure | None:
        if metric not in GATE_METRICS:
            raise UserError(
                f"unknown metric {metric!r} in the gates; use one of {', '.join(GATE_METRICS)} "
                f"(or {REGRESSION_GATE!r} with a baseline run)"
            )
        match = _GATE.match(str(condition))
        if match is None:
            raise UserError(
                f"gate {metric}={condition!r} is not understood; write an operator and a "
                "number, like '>=0.8' or '<=20000'"
            )
        op, threshold = match.group(1), float(match.group(2))
        actual = getattr(self.metrics, metric)
        if actual is None:
            message = f"{metric} was not measured, so the gate {op}{threshold:g} fails"
        elif not _OPERATORS[op](actual, threshold):
            message = f"{metric} is {actual:.4g}; the gate requires {op}{threshold:g}"
        else:
            return None
        return GateFailure(metric, f"{op}{threshold:g}", actual, message)

    def __str__(self) -> str:
        return self.table()

    def table(self, max_rows: int | None = None) -> str:
        """The per-case table and the metrics as text.

        With `max_rows`, at most that many cases are listed (failed cases first,
        in dataset order) and a last line says how to query the rest from the
        trace store.
        """
        m = self.metrics
        shown = self.results
        if max_rows is not None and len(shown) > max_rows:
            failed = [r for r in shown if not r.passed]
            keep = {id(r) for r in (failed + [r for r in shown if r.passed])[:max_rows]}
            shown = [r for r in shown if id(r) in keep]
        header = ("case", "status", "pass", "score", "steps", "calls m/e/ok", "ms", "explanation")
        rows = [
            (
                r.case_id,
                r.status,
                "yes" if r.passed else "NO",
                f"{r.score:.2f}",
                str(r.steps),
                f"{r.calls_made}/{r.calls_expected}/{r.calls_matched}",
                f"{r.latency_ms:.0f}",
                clip(r.explanation, 60),
            )
            for r in shown
        ]
        lines = [
            f"eval {self.name} ({self.eval_id[:8]}): dataset {self.dataset}, agent {self.agent}, "
            f"model {self.model}",
            *text_table(header, rows),
            *_more_line(len(self.results) - len(shown), self.eval_id),
            "",
            f"task_completion_rate {m.task_completion_rate:.2f} ({m.passed}/{m.cases})  "
            f"avg_steps {m.avg_steps:.2f}  tool_precision {m.tool_precision:.2f}  "
            f"tool_recall {m.tool_recall:.2f}",
            f"cost_per_task {'n/a' if m.cost_per_task is None else f'${m.cost_per_task:.6f}'}  "
            f"latency_p50_ms {m.latency_p50_ms:.0f}  latency_p95_ms {m.latency_p95_ms:.0f}",
        ]
        if m.tags:
            lines.append(
                "tags: " + ", ".join(f"{t} {c.passed}/{c.cases}" for t, c in m.tags.items())
            )
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain-text view (beside the HTML one): the text table, as long as
        the HTML one, not the dataclass repr with every case."""
        printer.text(self.table(max_rows=HTML_MAX_ROWS))

    def _repr_html_(self) -> str:
        shown = failures_first(self.results)[:HTML_MAX_ROWS]
        hidden = len(self.results) - len(shown)
        more = (
            f'<div class="muted">{hidden} more cases; all of them: <code>'
            f"{_html.esc(_results_query(self.eval_id))}</code></div>"
            if hidden
            else ""
        )
        return _html.box(title_html(self), summary_html(self) + cases_html(shown) + more)


def _more_line(hidden: int, eval_id: str) -> list[str]:
    if not hidden:
        return []
    return [f"... {hidden} more cases (all of them: {_results_query(eval_id)})"]


def _results_query(eval_id: str) -> str:
    return f"SELECT * FROM eval_results WHERE eval_id = '{eval_id}'"


# -- the HTML view (the report's notebook output; the ui widgets reuse its parts) ----------


def failures_first(results: Sequence[CaseResult]) -> list[CaseResult]:
    """The failed cases, then the passed ones, each in their original order."""
    return sorted(results, key=lambda r: r.passed)


def title_html(report: EvalReport) -> str:
    """'Eval NAME (id)'."""
    return f"Eval {_html.esc(report.name)} <code>{_html.esc(report.eval_id[:8])}</code>"


def _rate_tone(passed: int, cases: int) -> str:
    return "ok" if passed == cases else "bad" if passed == 0 else ""


def summary_html(report: EvalReport) -> str:
    """What was evaluated, the metrics in one row and each tag's passed/cases."""
    m = report.metrics
    about = (
        f"dataset <b>{_html.esc(report.dataset)}</b> · agent <b>{_html.esc(report.agent)}</b>"
        f" · model <code>{_html.esc(report.model)}</code>"
    )
    values = {
        "completion": f"<b>{m.task_completion_rate:.2f}</b>",
        "passed": f'<span class="ok">{m.passed}</span> of {m.cases}',
        "failed": f'<span class="{"bad" if m.cases - m.passed else "muted"}">'
        f"{m.cases - m.passed}</span>",
        "avg steps": f"{m.avg_steps:.2f}",
        "tool precision": f"{m.tool_precision:.2f}",
        "tool recall": f"{m.tool_recall:.2f}",
        "cost / task": _html.esc(_html.cost_text(m.cost_per_task)),
        "latency p50": _html.esc(_html.ms_text(m.latency_p50_ms)),
        "latency p95": _html.esc(_html.ms_text(m.latency_p95_ms)),
    }
    metrics = _html.table(
        list(values),
        [[f'<span class="nowrap">{v}</span>' for v in values.values()]],
        cls="agentlab-eval-metrics",
    )
    tags = " ".join(
        f'<span class="tag">{_html.esc(tag)} <span class="{_rate_tone(c.passed, c.cases)}">'
        f"{c.passed}/{c.cases}</span></span>"
        for tag, c in m.tags.items()
    )
    return (
        f'<div class="muted">{about}</div>'
        + f'<div class="scroll">{metrics}</div>'
        + (f'<div class="agentlab-eval-tags">tags (passed/cases): {tags}</div>' if tags else "")
    )


_CASE_HEADERS = ("case", "result", "steps", "calls matched", "cost", "latency", "explanation")


def _case_cells(r: CaseResult) -> list[str]:
    def nowrap(text: str) -> str:
        return f'<span class="nowrap">{_html.esc(text)}</span>'

    case = f'<span class="nowrap {"ok" if r.passed else "bad"}">{_html.esc(r.case_id)}</span>'
    if r.tags:  # under the id: the column is as wide as the longest id anyway
        case += "<div>" + " ".join(f'<span class="tag">{_html.esc(t)}</span>' for t in r.tags)
        case += "</div>"
    result = (
        '<span class="pill ok">pass</span>' if r.passed else '<span class="pill bad">FAIL</span>'
    )
    if r.score not in (0.0, 1.0):
        result += f' <span class="muted">{r.score:.2f}</span>'
    if r.status != "completed":  # why the run stopped, when it did not answer
        result += f"<div>{_html.status_html(r.status)}</div>"
    calls = f"{r.calls_matched}/{r.calls_expected}"
    if r.calls_made != r.calls_matched:
        calls += f", {r.calls_made} made"
    return [
        case,
        result,
        nowrap(str(r.steps)),
        nowrap(calls),
        nowrap(_html.cost_text(r.cost)),
        nowrap(_html.ms_text(r.latency_ms)),
        f'<div class="prose">{_html.clip(r.explanation, 240)}</div>',
    ]


def cases_html(results: Sequence[CaseResult]) -> str:
    """The cases as a table in the given order: failed rows tinted red, passed ones
    marked green (Lab's theme colours); each case's tags under its id; tool calls as
    matched/expected; only the explanation wraps, at spaces."""
    return (
        '<div class="scroll">'
        + _html.table(
            _CASE_HEADERS,
            [_case_cells(r) for r in results],
            cls="agentlab-eval-cases",
            row_classes=["pass" if r.passed else "fail" for r in results],
        )
        + "</div>"
    )
