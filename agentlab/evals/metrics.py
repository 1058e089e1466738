"""Metrics over the cases of one eval run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from agentlab.evals.results import CaseResult

__all__ = ["TIMING_METRICS", "EvalMetrics", "TagCounts", "compute_metrics", "percentile"]

TIMING_METRICS: tuple[str, ...] = ("latency_p50_ms", "latency_p95_ms")
"""The metrics that are measured timings; the others are reproduced exactly by the same
dataset, seed and deterministic model."""


@dataclass(frozen=True, slots=True)
class TagCounts:
    """How many cases carry a tag and how many of them passed."""

    cases: int
    passed: int


@dataclass(frozen=True, slots=True)
class EvalMetrics:
    """Aggregates of an eval run.

    * ``task_completion_rate``: share of cases whose expected outcome passed.
    * ``tool_precision``: matched calls / calls made (1.0 when no call was made).
    * ``tool_recall``: matched calls / calls expected (1.0 when none was expected).
    * ``cost_per_task``: mean cost of the cases whose cost is known (None if none is).
    * ``latency_p50_ms`` / ``latency_p95_ms``: nearest-rank percentiles of run latency.
    """

    cases: int
    passed: int
    task_completion_rate: float
    avg_steps: float
    tool_precision: float
    tool_recall: float
    cost_per_task: float | None
    latency_p50_ms: float
    latency_p95_ms: float
    tags: dict[str, TagCounts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-able dict."""
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` percentile (0 < q <= 100) of `values`; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]


def compute_metrics(results: Sequence[CaseResult]) -> EvalMetrics:
    """The metrics of a set of case results."""
    n = len(results)
    passed = sum(r.passed for r in results)
    made = sum(r.calls_made for r in results)
    expected = sum(r.calls_expected for r in results)
    matched = sum(r.calls_matched for r in results)
    costs = [r.cost for r in results if r.cost is not None]
    latencies = [r.latency_ms for r in results]
    tags: dict[str, TagCounts] = {}
    for tag in sorted({t for r in results for t in r.tags}):
        tagged = [r for r in results if tag in r.tags]
        tags[tag] = TagCounts(cases=len(tagged), passed=sum(r.passed for r in tagged))
    return EvalMetrics(
        cases=n,
        passed=passed,
        task_completion_rate=passed / n if n else 0.0,
        avg_steps=sum(r.steps for r in results) / n if n else 0.0,
        tool_precision=matched / made if made else 1.0,
        tool_recall=matched / expected if expected else 1.0,
        cost_per_task=sum(costs) / len(costs) if costs else None,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        tags=tags,
    )
