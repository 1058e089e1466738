"""An agent version's live traffic as an eval report, for the eval comparison.

>>> a = version_report(store, "support", "1")
>>> b = version_report(store, "support", "2")
>>> compare_evals(a, b)      # metric deltas; paired statistics over shared inputs

Each input the version answered is a case (its id: a hash of the input, folded to
lower case with its whitespace collapsed; an input asked several times counts once,
as its latest run). A case passes when its run completed. Live traffic has no
expected tool calls, so every call made counts as matched: the tool metrics stay 1.0
and the calls made per case are compared.

:func:`~agentlab.evals.compare_evals` compares the two reports' metrics (completion
rate, steps, cost and latency per task), and pairs the inputs both versions
answered (questions users ask often) for the paired bootstrap and the flip test; an
input only one version saw is listed as such, as for any eval.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agentlab.evals.metrics import compute_metrics
from agentlab.evals.report import EvalReport
from agentlab.evals.results import CaseResult

if TYPE_CHECKING:
    from agentlab.tracing import TraceStore

__all__ = ["version_report"]

FINISHED = ("completed", "failed", "max_steps", "budget_exceeded", "cancelled")
"""The statuses of runs that ended (paused, running and interrupted ones have not)."""

_RUNS = """
SELECT r.run_id, r.input, r.status, r.output, r.explanation, r.steps, r.cost,
       r.latency_ms, r.model,
       (SELECT count(*) FROM tool_calls t WHERE t.run_id = r.run_id) AS calls
FROM runs r
WHERE json_extract_string(r.metadata, '$.gateway.agent') = ?
  AND json_extract_string(r.metadata, '$.gateway.version') = ?
  AND r.status IN (SELECT unnest(?))
  AND (? IS NULL OR r.started_at >= ?)
ORDER BY r.started_at
"""


def version_report(
    store: TraceStore, agent: str, version: str, *, since: datetime | None = None
) -> EvalReport:
    """The finished runs the gateway served with `agent`'s `version` (since `since`,
    UTC, if given) as an :class:`~agentlab.evals.EvalReport` (see the module)."""
    if since is not None and since.tzinfo is not None:
        since = since.astimezone(UTC).replace(tzinfo=None)
    rows = store.sql(_RUNS, [agent, version, list(FINISHED), since, since])
    latest: dict[str, CaseResult] = {}
    models: set[str] = set()
    for run_id, text, status, output, explanation, steps, cost, latency, model, calls in rows:
        case_id = _case_id(text or "")
        latest.pop(case_id, None)  # the latest run of an input, in the order of the last
        latest[case_id] = CaseResult(
            case_id=case_id,
            run_id=run_id,
            status=status,
            passed=status == "completed",
            score=1.0 if status == "completed" else 0.0,
            explanation=explanation or "",
            steps=steps or 0,
            cost=cost,
            latency_ms=latency or 0.0,
            calls_expected=0,
            calls_made=calls,
            calls_matched=calls,
            output=output,
        )
        if model:
            models.add(model)
    results = list(latest.values())
    return EvalReport(
        eval_id=f"live:{agent}:{version}",
        name=f"{agent} version {version} (live traffic)",
        dataset="live traffic",
        agent=agent,
        model=", ".join(sorted(models)),
        metrics=compute_metrics(results),
        results=results,
        metadata={"version": version, "runs": len(rows), "since": since and since.isoformat()},
    )


def _case_id(text: str) -> str:
    folded = " ".join(text.casefold().split())
    return "input-" + hashlib.sha256(folded.encode()).hexdigest()[:16]
