"""Run-to-run comparison of two eval runs: what changed case by case, the deltas of
every metric, and paired statistics over the cases both runs share.

>>> comparison = compare_evals("1a2b3c4d", report)   # baseline A (an id), new run B
>>> print(comparison)                                # or display it in a notebook
>>> comparison.flips.p_value, comparison.completion.low, comparison.completion.high

Cases are paired by ``case_id``; a case in one run only is listed as such and left
out of the paired statistics. Differences are always B - A.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from agentlab.errors import UserError
from agentlab.evals.metrics import EvalMetrics
from agentlab.evals.report import REGRESSION_GATE, EvalReport, GateFailure
from agentlab.evals.results import CaseResult
from agentlab.evals.stats import mcnemar_exact, paired_bootstrap_ci
from agentlab.evals.stored import StoreLike, load_eval, trace_store

__all__ = [
    "CHANGES",
    "COMPARED",
    "CaseChange",
    "Change",
    "EvalComparison",
    "FlipTest",
    "MetricDelta",
    "PairedDifference",
    "compare_evals",
]

Change = Literal["regressed", "improved", "passing", "failing", "only_a", "only_b"]
"""regressed: passed in A, fails in B; improved: the other way; passing/failing:
the same verdict in both; only_a/only_b: the case ran in one of them only."""

CHANGES: tuple[Change, ...] = ("regressed", "improved", "only_a", "only_b", "failing", "passing")
"""The changes from the most to the least worth a look (the order views list cases in)."""

COMPARED = ("steps", "calls_made", "cost", "latency_ms")
"""The per-case quantities whose B - A each case change carries."""

_CHANGE: dict[tuple[bool, bool], Change] = {  # (passed in A, passed in B) -> change
    (True, False): "regressed",
    (False, True): "improved",
    (True, True): "passing",
    (False, False): "failing",
}


@dataclass(frozen=True, slots=True)
class CaseChange:
    """One case in both runs (or in one of them): its results and how it changed."""

    case_id: str
    change: Change
    a: CaseResult | None
    b: CaseResult | None

    def delta(self, quantity: str) -> float | None:
        """B - A of a CaseResult field (None unless both runs have it)."""
        if self.a is None or self.b is None:
            return None
        a, b = getattr(self.a, quantity), getattr(self.b, quantity)
        return None if a is None or b is None else b - a

    def to_dict(self) -> dict[str, Any]:
        """The change, both results and the B - A of :data:`COMPARED`, JSON-able."""
        return {
            "case_id": self.case_id,
            "change": self.change,
            "a": None if self.a is None else self.a.to_dict(),
            "b": None if self.b is None else self.b.to_dict(),
            "delta": {q: self.delta(q) for q in COMPARED},
        }


@dataclass(frozen=True, slots=True)
class MetricDelta:
    """One metric of both runs (each over its own cases) and B - A."""

    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        """B - A, None when either run did not measure the metric."""
        return None if self.a is None or self.b is None else self.b - self.a

    def to_dict(self) -> dict[str, Any]:
        """The metric, both values and the delta."""
        return {"metric": self.metric, "a": self.a, "b": self.b, "delta": self.delta}


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """The means in A and B over the paired cases, and a bootstrap confidence interval
    (`low`, `high`) for B - A."""

    metric: str
    cases: int
    a: float
    b: float
    low: float
    high: float

    @property
    def difference(self) -> float:
        """B - A over the paired cases."""
        return self.b - self.a

    def to_dict(self) -> dict[str, Any]:
        """The means, the difference and its interval."""
        return {
            "metric": self.metric,
            "cases": self.cases,
            "a": self.a,
            "b": self.b,
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
        }


@dataclass(frozen=True, slots=True)
class FlipTest:
    """McNemar's exact test on the paired cases whose verdict flipped."""

    regressed: int
    improved: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """The flip counts and the two-sided p-value."""
        return {"regressed": self.regressed, "improved": self.improved, "p_value": self.p_value}


@dataclass(frozen=True)
class EvalComparison:
    """What changed from eval run `a` (the baseline) to eval run `b`.

    `cases` lists A's cases in A's order, then those only B has; `metrics` every
    metric of both runs (``tag:NAME`` is the pass rate of a tag's cases);
    `completion` and `cost` are paired differences with their `confidence`
    bootstrap intervals (None without paired cases, or for `cost` when no paired
    case has a known cost in both runs); `flips` is McNemar's exact test.
    """

    a: EvalReport
    b: EvalReport
    cases: tuple[CaseChange, ...]
    metrics: tuple[MetricDelta, ...]
    completion: PairedDifference | None
    cost: PairedDifference | None
    flips: FlipTest
    confidence: float
    n_resamples: int
    seed: int
    alpha: float

    def ids(self, change: Change) -> list[str]:
        """The ids of the cases with that change, e.g. ``ids("regressed")``."""
        return [c.case_id for c in self.cases if c.change == change]

    @property
    def paired(self) -> int:
        """How many cases both runs have."""
        return sum(c.a is not None and c.b is not None for c in self.cases)

    @property
    def verdict(self) -> Literal["regressed", "improved", "no significant change"]:
        """Whether the flips one way outnumber the other at significance `alpha`."""
        if self.flips.p_value < self.alpha and self.flips.regressed != self.flips.improved:
            return "regressed" if self.flips.regressed > self.flips.improved else "improved"
        return "no significant change"

    def regression_failure(self) -> GateFailure | None:
        """The failed gate ``regression: not significant`` (None when it holds).

        It fails when B has significantly more pass->fail than fail->pass flips
        (two-sided McNemar exact p < `alpha`), or when no case is in both runs.
        """
        baseline = f"the baseline {self.a.name} ({self.a.eval_id[:8]})"
        condition = f"not significant (alpha {self.alpha:g})"
        if not self.paired:
            message = (
                f"regression: no case of this run is in {baseline}, so nothing can be "
                f"compared (datasets {self.a.dataset!r} and {self.b.dataset!r}); pick a "
                "baseline run over the same dataset"
            )
            return GateFailure(REGRESSION_GATE, condition, None, message)
        if self.verdict != "regressed":
            return None
        regressed = self.ids("regressed")
        shown = ", ".join(regressed[:10]) + (", ..." if len(regressed) > 10 else "")
        message = (
            f"regression against {baseline}: {len(regressed)} case(s) passed there and fail "
            f"now ({shown}), {self.flips.improved} the other way; McNemar exact "
            f"p = {self.flips.p_value:.3g} < alpha {self.alpha:g}. See what changed with "
            f"`agentlab eval compare {self.a.eval_id[:8]} {self.b.eval_id[:8]}` and in those "
            "cases' runs; fix the agent, or if the change is intended, make this run the "
            "new baseline"
        )
        return GateFailure(REGRESSION_GATE, condition, self.flips.p_value, message)

    def to_dict(self, *, cases: bool = True) -> dict[str, Any]:
        """The comparison as a JSON-able dict (without the per-case rows if not `cases`)."""
        data: dict[str, Any] = {
            "a": self.a.to_dict(results=False),
            "b": self.b.to_dict(results=False),
            "paired": self.paired,
            "counts": {change: len(self.ids(change)) for change in CHANGES},
            "regressed": self.ids("regressed"),
            "improved": self.ids("improved"),
            "only_a": self.ids("only_a"),
            "only_b": self.ids("only_b"),
            "metrics": [m.to_dict() for m in self.metrics],
            "completion": None if self.completion is None else self.completion.to_dict(),
            "cost": None if self.cost is None else self.cost.to_dict(),
            "flips": self.flips.to_dict(),
            "verdict": self.verdict,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "alpha": self.alpha,
        }
        if cases:
            data["cases"] = [c.to_dict() for c in self.cases]
        return data

    def table(self, max_rows: int | None = None) -> str:
        """The comparison as text; with `max_rows`, at most that many cases (flips first)."""
        from agentlab.evals.compare_view import comparison_text  # it imports this module

        return comparison_text(self, max_rows)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (
            f"EvalComparison(a={self.a.eval_id[:8]!r}, b={self.b.eval_id[:8]!r}, "
            f"paired={self.paired}, regressed={self.flips.regressed}, "
            f"improved={self.flips.improved}, p_value={self.flips.p_value:.4g}, "
            f"verdict={self.verdict!r})"
        )

    def _repr_html_(self) -> str:
        from agentlab.evals.compare_view import comparison_html

        return comparison_html(self)


def compare_evals(
    a: EvalReport | str,
    b: EvalReport | str,
    *,
    store: StoreLike = None,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    alpha: float = 0.05,
) -> EvalComparison:
    """Compare eval run `b` with the baseline `a`.

    Each may be an EvalReport or a reference to a finished eval run in the trace
    store `store` (default: the default workspace's): its id, a unique prefix of
    it, or its name if only one run has it. The intervals are seeded percentile
    bootstraps (`n_resamples`, `seed`): the same runs always give the same ones.
    `alpha` is the significance level of :attr:`EvalComparison.verdict`.
    """
    if not 0 < confidence < 1 or not 0 < alpha < 1:
        raise UserError(
            f"confidence and alpha must be between 0 and 1 (got {confidence}, {alpha}); "
            "e.g. confidence=0.95, alpha=0.05"
        )
    if n_resamples < 1:
        raise UserError(f"n_resamples must be at least 1 (got {n_resamples})")
    if isinstance(a, str) or isinstance(b, str):
        ts = trace_store(store)
        a = load_eval(a, ts) if isinstance(a, str) else a
        b = load_eval(b, ts) if isinstance(b, str) else b
    cases = _pair(a.results, b.results)
    pairs = [(c.a, c.b) for c in cases if c.a is not None and c.b is not None]
    paired = functools.partial(_paired, confidence=confidence, n_resamples=n_resamples, seed=seed)
    regressed = sum(c.change == "regressed" for c in cases)
    improved = sum(c.change == "improved" for c in cases)
    return EvalComparison(
        a=a,
        b=b,
        cases=tuple(cases),
        metrics=_metric_deltas(a.metrics, b.metrics),
        completion=paired(
            "task_completion_rate", [(float(x.passed), float(y.passed)) for x, y in pairs]
        ),
        cost=paired(
            "cost_per_task",
            [(x.cost, y.cost) for x, y in pairs if x.cost is not None and y.cost is not None],
        ),
        flips=FlipTest(regressed, improved, mcnemar_exact(regressed, improved)),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        alpha=alpha,
    )


def _pair(a: Sequence[CaseResult], b: Sequence[CaseResult]) -> list[CaseChange]:
    """A's cases in A's order, each with B's result of the same id, then B's own."""
    in_a = {r.case_id: r for r in a}
    in_b = {r.case_id: r for r in b}
    for run, results, by_id in (("A", a, in_a), ("B", b, in_b)):
        if len(by_id) != len(results):
            raise UserError(f"eval run {run} has the same case_id twice; case ids must be unique")
    changes = []
    for case_id, x in in_a.items():
        y = in_b.get(case_id)
        change: Change = "only_a" if y is None else _CHANGE[x.passed, y.passed]
        changes.append(CaseChange(case_id, change, x, y))
    changes += [CaseChange(i, "only_b", None, y) for i, y in in_b.items() if i not in in_a]
    return changes


def _paired(
    metric: str,
    pairs: Sequence[tuple[float, float]],
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> PairedDifference | None:
    if not pairs:
        return None
    low, high = paired_bootstrap_ci(
        [y - x for x, y in pairs], confidence=confidence, n_resamples=n_resamples, seed=seed
    )
    n = len(pairs)
    return PairedDifference(
        metric=metric,
        cases=n,
        a=sum(x for x, _ in pairs) / n,
        b=sum(y for _, y in pairs) / n,
        low=low,
        high=high,
    )


def _metric_deltas(a: EvalMetrics, b: EvalMetrics) -> tuple[MetricDelta, ...]:
    """Every numeric EvalMetrics field, then each tag's pass rate (None: no such cases)."""
    deltas = [
        MetricDelta(f.name, x, y)
        for f in fields(EvalMetrics)
        for x, y in [(getattr(a, f.name), getattr(b, f.name))]
        if isinstance(x, int | float | None) and isinstance(y, int | float | None)
    ]
    for tag in sorted({*a.tags, *b.tags}):
        x, y = a.tags.get(tag), b.tags.get(tag)
        deltas.append(
            MetricDelta(
                f"tag:{tag}",
                None if x is None else x.passed / x.cases,
                None if y is None else y.passed / y.cases,
            )
        )
    return tuple(deltas)
