"""The result of one evaluated case: the per-case row of an eval report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TIMING_FIELDS", "CaseResult"]

TIMING_FIELDS: tuple[str, ...] = ("latency_ms",)
"""The fields of a :class:`CaseResult` that are measured (they differ between two runs
of the same eval); the others, ``run_id`` aside, are reproduced exactly."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """How one case went: its run, its score and its tool-call counts."""

    case_id: str
    run_id: str
    status: str
    passed: bool
    score: float
    explanation: str
    steps: int
    cost: float | None
    latency_ms: float
    calls_expected: int
    calls_made: int
    calls_matched: int
    output: str | None = None
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-able dict."""
        return asdict(self)
