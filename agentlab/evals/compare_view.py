"""The views of an :class:`~agentlab.evals.compare.EvalComparison`: a text table for
the terminal and an HTML one for notebooks (colours from JupyterLab's theme)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agentlab._html import box, callout, esc, table
from agentlab.evals.compare import CHANGES, CaseChange, Change, PairedDifference
from agentlab.evals.report import HTML_MAX_ROWS, EvalReport
from agentlab.evals.results import CaseResult
from agentlab.evals.text_table import text_table

if TYPE_CHECKING:
    from agentlab.evals.compare import EvalComparison

__all__ = ["cases_html", "comparison_html", "comparison_text", "summary_html", "title_html"]

_LABELS: dict[Change, str] = {
    "regressed": "regressed",
    "improved": "improved",
    "only_a": "only in A",
    "only_b": "only in B",
    "failing": "still fails",
    "passing": "still passes",
}
_TONES: dict[Change, str] = {
    "regressed": "bad",
    "improved": "ok",
    "only_a": "warn",
    "only_b": "warn",
}
_VERDICT_TONES = {"regressed": "bad", "improved": "ok"}
_HIGHER_IS_BETTER = {
    "task_completion_rate": True,
    "tool_precision": True,
    "tool_recall": True,
    "cost_per_task": False,
    "latency_p50_ms": False,
    "latency_p95_ms": False,
}
_CASE_HEADER = ("case", "change", "pass A->B", "steps A->B", "calls A->B", "cost B-A", "ms A->B")


def _shown(c: EvalComparison, max_rows: int | None) -> list[CaseChange]:
    """The cases to list, most worth a look first (:data:`CHANGES`), at most `max_rows`."""
    ordered = sorted(c.cases, key=lambda case: CHANGES.index(case.change))
    return ordered if max_rows is None else ordered[:max_rows]


def _more(c: EvalComparison, shown: list[CaseChange]) -> list[str]:
    hidden = len(c.cases) - len(shown)
    return [f"... {hidden} more cases (all of them: .to_dict() or --json)"] if hidden else []


def _both(case: CaseChange, show: Callable[[CaseResult], str]) -> str:
    a = "-" if case.a is None else show(case.a)
    b = "-" if case.b is None else show(case.b)
    return f"{a} -> {b}"


def _value(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    if "cost" in metric:
        return f"${value:.6f}"
    if metric.endswith("_ms"):
        return f"{value:.0f}"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _signed(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    magnitude = _value(abs(value), metric)
    if magnitude == _value(type(value)(0), metric):  # no "-0" or "+0.0000"
        return magnitude
    return ("-" if value < 0 else "+") + magnitude


def _case_cells(case: CaseChange) -> list[str]:
    return [
        case.case_id,
        _LABELS[case.change],
        _both(case, lambda r: "yes" if r.passed else "NO"),
        _both(case, lambda r: str(r.steps)),
        _both(case, lambda r: str(r.calls_made)),
        _signed(case.delta("cost"), "cost"),
        _both(case, lambda r: f"{r.latency_ms:.0f}"),
    ]


def _run_line(label: str, r: EvalReport) -> str:
    return (
        f"{label}: eval {r.name} ({r.eval_id[:8]}), dataset {r.dataset}, agent {r.agent}, "
        f"model {r.model}, {r.metrics.cases} cases"
    )


def _counts(c: EvalComparison) -> str:
    paired: tuple[Change, ...] = ("regressed", "improved", "failing", "passing")
    counts = ", ".join(f"{len(c.ids(change))} {_LABELS[change]}" for change in paired)
    alone = f"; {len(c.ids('only_a'))} only in A, {len(c.ids('only_b'))} only in B"
    return f"{c.paired} cases in both: {counts}" + (alone if c.paired < len(c.cases) else "")


def _paired_cells(name: str, d: PairedDifference | None, needs: str) -> list[str]:
    """[name, A, B, B-A, interval] over the paired cases (n/a without such cases)."""
    if d is None:
        return [name, "n/a", "n/a", "n/a", f"no case has {needs} in both runs"]
    m = d.metric
    interval = f"[{_signed(d.low, m)}, {_signed(d.high, m)}]"
    return [name, _value(d.a, m), _value(d.b, m), _signed(d.difference, m), interval]


def _paired_rows(c: EvalComparison) -> list[tuple[PairedDifference | None, list[str]]]:
    return [
        (c.completion, _paired_cells("completion rate", c.completion, "a verdict")),
        (c.cost, _paired_cells("cost per task", c.cost, "a known cost")),
    ]


def _paired_header(c: EvalComparison) -> tuple[str, ...]:
    return ("paired", "A", "B", "B-A", f"{c.confidence:.0%} CI")


def _paired_title(c: EvalComparison) -> str:
    return (
        f"paired over the {c.paired} cases in both runs: means, difference and its bootstrap "
        f"interval ({c.n_resamples} resamples, seed {c.seed})"
    )


def _verdict(c: EvalComparison) -> str:
    f = c.flips
    test = f"McNemar exact p = {f.p_value:.4g} on {f.regressed + f.improved} flips"
    if c.verdict == "no significant change":
        return f"no significant change at alpha {c.alpha:g} ({test})"
    return f"B {c.verdict} significantly ({test} < alpha {c.alpha:g})"


def comparison_text(c: EvalComparison, max_rows: int | None = None) -> str:
    """The comparison for the terminal: runs, cases (flips first), metric deltas and
    the paired statistics; with `max_rows`, at most that many cases."""
    shown = _shown(c, max_rows)
    metric_rows = [
        [m.metric, _value(m.a, m.metric), _value(m.b, m.metric), _signed(m.delta, m.metric)]
        for m in c.metrics
    ]
    paired = [cells for _, cells in _paired_rows(c)]
    return "\n".join(
        [
            _run_line("A", c.a),
            _run_line("B", c.b),
            _counts(c),
            "",
            *text_table(_CASE_HEADER, [_case_cells(case) for case in shown]),
            *_more(c, shown),
            "",
            *text_table(("metric", "A", "B", "B-A"), metric_rows),
            "",
            _paired_title(c),
            *text_table(_paired_header(c), paired),
            f"verdict: {_verdict(c)}",
        ]
    )


def _tone(text: str, tone: str) -> str:
    return f'<span class="{tone}">{esc(text)}</span>' if tone else esc(text)


def _delta_tone(metric: str, shown: str) -> str:
    """'ok' for a change (`shown` signed) for the better, 'bad' for the worse, '' for
    none (no sign) or when better is not known."""
    higher = _HIGHER_IS_BETTER.get(metric, True if metric.startswith("tag:") else None)
    if higher is None or shown[:1] not in ("+", "-"):
        return ""
    return "ok" if (shown[0] == "+") == higher else "bad"


def _html_case(case: CaseChange) -> list[str]:
    tone = _TONES.get(case.change, "")
    cells = [cell.replace("->", "→") for cell in _case_cells(case)]
    return [_tone(cells[0], tone), _tone(cells[1], tone), *map(esc, cells[2:])]


def _runs_html(c: EvalComparison) -> str:
    rows = [
        [
            f"<b>{label}</b>",
            f"<code>{esc(r.eval_id[:8])}</code>",
            esc(r.name),
            esc(r.dataset),
            esc(r.agent),
            f"<code>{esc(r.model)}</code>",
            esc(r.metrics.cases),
        ]
        for label, r in (("A", c.a), ("B", c.b))
    ]
    return table(["run", "eval", "name", "dataset", "agent", "model", "cases"], rows)


def _metrics_html(c: EvalComparison) -> str:
    """The metric deltas, and beside them each tag's pass rate in a table of its own."""
    tables = []
    for tags, header, cls in ((False, "metric", "metrics"), (True, "tag pass rate", "tags")):
        rows = [
            [
                esc(m.metric.removeprefix("tag:")),
                esc(_value(m.a, m.metric)),
                esc(_value(m.b, m.metric)),
                _tone(delta, _delta_tone(m.metric, delta)),
            ]
            for m in c.metrics
            if m.metric.startswith("tag:") == tags
            for delta in [_signed(m.delta, m.metric)]
        ]
        if rows:
            tables.append(table([header, "A", "B", "B - A"], rows, cls=f"agentlab-compare-{cls}"))
    return '<div class="cols">' + "".join(f"<div>{t}</div>" for t in tables) + "</div>"


def _paired_html(c: EvalComparison) -> str:
    """The paired differences; B - A coloured when its interval excludes 0."""
    rows = []
    for d, cells in _paired_rows(c):
        clear = d is not None and (d.low > 0 or d.high < 0)
        tone = _delta_tone(d.metric, cells[3]) if d is not None and clear else ""
        rows.append([*map(esc, cells[:3]), _tone(cells[3], tone), esc(cells[4])])
    headers = [h.replace("B-A", "B - A") for h in _paired_header(c)]
    caption = f'<div class="muted">{esc(_paired_title(c))}</div>'
    return caption + table(headers, rows, cls="agentlab-compare-paired")


def title_html(c: EvalComparison) -> str:
    """'Eval comparison: A (id) → B (id)'."""
    return (
        f"Eval comparison: {esc(c.a.name)} <code>{esc(c.a.eval_id[:8])}</code> → "
        f"{esc(c.b.name)} <code>{esc(c.b.eval_id[:8])}</code>"
    )


def summary_html(c: EvalComparison) -> str:
    """The runs, the verdict, the paired statistics and the metric deltas (better
    green, worse red)."""
    return (
        _runs_html(c)
        + callout(f"{esc(_counts(c))}<br>{esc(_verdict(c))}", _VERDICT_TONES.get(c.verdict, ""))
        + _paired_html(c)
        + _metrics_html(c)
    )


def cases_html(cases: Sequence[CaseChange]) -> str:
    """The cases in the given order; regressed rows red, improved ones green."""
    headers = [h.replace("->", "→").replace("B-A", "B - A") for h in _CASE_HEADER]
    tints = {"regressed": "fail", "improved": "pass"}
    return table(
        headers,
        [_html_case(case) for case in cases],
        cls="agentlab-compare",
        row_classes=[tints.get(case.change, "") for case in cases],
    )


def comparison_html(c: EvalComparison, max_rows: int = HTML_MAX_ROWS) -> str:
    """The comparison for notebooks: runs, verdict, paired statistics and metric
    deltas, then the cases (flips first, at most `max_rows`, regressed ones red and
    improved ones green in Lab's theme colours)."""
    shown = _shown(c, max_rows)
    more = "".join(f'<div class="muted">{esc(line)}</div>' for line in _more(c, shown))
    return box(title_html(c), summary_html(c) + cases_html(shown) + more)
