"""Eval runs read back from the trace store (tables ``eval_runs``, ``eval_results``,
``runs``), named by id, by a unique prefix of the id or by an unambiguous name."""

from __future__ import annotations

import json
import os
from typing import Any

from agentlab.errors import UserError
from agentlab.evals.metrics import compute_metrics
from agentlab.evals.report import EvalReport
from agentlab.evals.results import CaseResult
from agentlab.tracing import TraceStore

__all__ = ["StoreLike", "load_eval", "resolve_eval_id", "trace_store"]

StoreLike = TraceStore | str | os.PathLike[str] | None
"""A trace store, or its workspace directory (None: the default workspace)."""

MAX_CANDIDATES = 10
"""Eval runs an unknown or ambiguous reference lists, newest first."""

_MATCHES = """
SELECT eval_id, name, dataset, model, cases, started_at FROM eval_runs
WHERE eval_id = $ref OR starts_with(eval_id, $ref) OR name = $ref
ORDER BY started_at DESC NULLS LAST, eval_id
"""
_LATEST = """
SELECT eval_id, name, dataset, model, cases, started_at FROM eval_runs
ORDER BY started_at DESC NULLS LAST, eval_id LIMIT $limit
"""
_RUN = "SELECT name, dataset, agent, model, metadata FROM eval_runs WHERE eval_id = $id"
_RESULTS = """
SELECT e.case_id, e.run_id, coalesce(r.status, 'unknown') AS status, e.passed, e.score,
       e.explanation, e.steps, e.cost, e.latency_ms, e.calls_expected, e.calls_made,
       e.calls_matched, r.output, e.tags
FROM eval_results e LEFT JOIN runs r USING (run_id)
WHERE e.eval_id = $id ORDER BY e.ended_at, e.case_id
"""


def trace_store(store: StoreLike) -> TraceStore:
    """`store` itself, or the trace store of that workspace."""
    return store if isinstance(store, TraceStore) else TraceStore(store)


def resolve_eval_id(ref: str | int, store: StoreLike = None) -> str:
    """The id of the finished eval run that `ref` names: its id, a unique prefix of
    it, or its name when only one run has that name.

    Raises a UserError listing the candidates when `ref` is ambiguous, or the
    latest eval runs when it names none. (An int is taken as its digits: ``-p
    baseline=12345678`` reaches a notebook as a JSON number.)
    """
    if isinstance(ref, int) and not isinstance(ref, bool):
        ref = str(ref)
    if not isinstance(ref, str):
        raise UserError(
            f"an eval run is named by a string (its eval id, a prefix of it or its name), not "
            f"{ref!r}; on the command line quote a prefix that reads as a number: "
            """-p baseline='"1e5a..."'"""
        )
    ref = ref.strip()
    if not ref:
        raise UserError("an eval run reference is empty; pass an eval id, a prefix or a name")
    ts = trace_store(store)
    rows = ts.sql(_MATCHES, {"ref": ref})
    exact = [row for row in rows if row[0] == ref]
    if len(exact) == 1 or len(rows) == 1:
        return str((exact or rows)[0][0])
    if rows:
        raise UserError(
            f"{ref!r} names {len(rows)} eval runs in {ts.workspace}; pass more of an eval id:\n"
            + _listing(rows)
        )
    latest = ts.sql(_LATEST, {"limit": MAX_CANDIDATES})
    known = f"the latest are:\n{_listing(latest)}" if latest else "it has none yet"
    raise UserError(f"no eval run {ref!r} in {ts.workspace}; {known}")


def load_eval(ref: str | int, store: StoreLike = None) -> EvalReport:
    """The eval run that `ref` names (see :func:`resolve_eval_id`) as an EvalReport.

    Its metrics are computed again from the stored per-case rows; the cases come
    in the order they finished (dataset order when they ran one at a time).
    """
    ts = trace_store(store)
    eval_id = resolve_eval_id(ref, ts)
    with ts.connect() as con:
        name, dataset, agent, model, metadata = con.execute(_RUN, {"id": eval_id}).fetchall()[0]
        cursor = con.execute(_RESULTS, {"id": eval_id})
        columns = [d[0] for d in cursor.description or ()]
        results = [CaseResult(**dict(zip(columns, row, strict=True))) for row in cursor.fetchall()]
    return EvalReport(
        eval_id=eval_id,
        name=name,
        dataset=dataset,
        agent=agent,
        model=model,
        metrics=compute_metrics(results),
        results=results,
        metadata=_decoded(metadata),
    )


def _decoded(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def _listing(rows: list[tuple[Any, ...]]) -> str:
    shown = [
        f"  {eval_id}  {name}  dataset {dataset}  model {model}  {cases} cases"
        + (f"  {started:%Y-%m-%d %H:%M:%S}" if started is not None else "")
        for eval_id, name, dataset, model, cases, started in rows[:MAX_CANDIDATES]
    ]
    if len(rows) > MAX_CANDIDATES:
        shown.append(f"  ... and {len(rows) - MAX_CANDIDATES} more")
    return "\n".join(shown)
