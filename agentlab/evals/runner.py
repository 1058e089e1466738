"""Run an agent over a dataset, score every case and record the results as trace
events next to the runs they came from (tables ``eval_results`` and ``eval_runs``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from agentlab._sync import run_sync
from agentlab.agents import Agent, Tracer
from agentlab.budgets import Budget
from agentlab.errors import UserError
from agentlab.evals.dataset import Case, Dataset, load_dataset
from agentlab.evals.metrics import compute_metrics
from agentlab.evals.report import EvalReport
from agentlab.evals.results import CaseResult
from agentlab.evals.scorers import Score, Scorer, outcome_scorer
from agentlab.evals.toolcalls import made_calls, match_tool_calls
from agentlab.events import EvalCaseResult, EvalRunSummary
from agentlab.tracing import get_writer

__all__ = ["evaluate", "evaluate_sync"]


async def evaluate(
    agent: Agent,
    dataset: Dataset | str | os.PathLike[str],
    *,
    name: str | None = None,
    concurrency: int = 1,
    metadata: dict[str, Any] | None = None,
) -> EvalReport:
    """Run `agent` on every case of `dataset` (a Dataset or a JSONL path) and score it.

    Each run's metadata carries ``eval_id`` and ``case_id`` (plus `metadata`);
    the results go to the agent's trace writer (the default workspace's when the
    agent does not trace), so SQL can join ``eval_results`` to ``runs``. At most
    `concurrency` cases run at once; the report keeps the dataset's order.
    """
    if concurrency < 1:
        raise UserError(f"concurrency must be at least 1 (got {concurrency}).")
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(Path(dataset))
    scorers = {case.id: outcome_scorer(case.expected_outcome) for case in dataset}
    tracer = agent.tracer or get_writer()
    eval_id = os.urandom(16).hex()
    name = name or dataset.name
    metadata = dict(metadata or {})
    started_at = time.time()
    limit = asyncio.Semaphore(concurrency)

    async def run_case(case: Case) -> CaseResult:
        async with limit:
            return await _evaluate_case(agent, case, scorers[case.id], eval_id, metadata, tracer)

    results = list(await asyncio.gather(*(run_case(case) for case in dataset)))
    metrics = compute_metrics(results)
    tracer.emit(
        EvalRunSummary(
            eval_id=eval_id,
            name=name,
            dataset=dataset.name,
            agent=agent.name,
            model=agent.model.name,
            cases=len(results),
            metrics=metrics.to_dict(),
            metadata=metadata,
            started_at=started_at,
            ended_at=time.time(),
        )
    )
    return EvalReport(
        eval_id=eval_id,
        name=name,
        dataset=dataset.name,
        agent=agent.name,
        model=agent.model.name,
        metrics=metrics,
        results=results,
        metadata=metadata,
    )


def evaluate_sync(
    agent: Agent,
    dataset: Dataset | str | os.PathLike[str],
    *,
    name: str | None = None,
    concurrency: int = 1,
    metadata: dict[str, Any] | None = None,
) -> EvalReport:
    """:func:`evaluate` for synchronous code; also works inside a notebook cell."""
    return run_sync(evaluate(agent, dataset, name=name, concurrency=concurrency, metadata=metadata))


async def _evaluate_case(
    agent: Agent,
    case: Case,
    scorer: Scorer,
    eval_id: str,
    metadata: dict[str, Any],
    tracer: Tracer,
) -> CaseResult:
    steps = None if case.max_steps is None else Budget(steps=case.max_steps)
    result = await agent.run(
        case.input, metadata={**metadata, "eval_id": eval_id, "case_id": case.id}, budget=steps
    )
    score = scorer(case, result)
    if not isinstance(score, Score) or not 0.0 <= score.value <= 1.0:
        raise UserError(
            f"scorer {scorer.name!r} returned {score!r} for case {case.id!r}; "
            "a scorer must return a Score whose value is between 0 and 1"
        )
    calls = match_tool_calls(case.expected_tool_calls, made_calls(result))
    row = CaseResult(
        case_id=case.id,
        run_id=result.run_id,
        status=result.status,
        passed=score.passed,
        score=score.value,
        explanation=score.explanation,
        steps=result.steps,
        cost=result.cost,
        latency_ms=result.latency_ms,
        calls_expected=calls.expected,
        calls_made=calls.made,
        calls_matched=calls.matched,
        output=result.output,
        tags=list(case.tags),
    )
    tracer.emit(
        EvalCaseResult(
            eval_id=eval_id,
            case_id=case.id,
            run_id=result.run_id,
            passed=row.passed,
            score=row.score,
            explanation=row.explanation,
            scorer=scorer.spec,
            tags=row.tags,
            calls_expected=row.calls_expected,
            calls_made=row.calls_made,
            calls_matched=row.calls_matched,
            steps=row.steps,
            cost=row.cost,
            latency_ms=row.latency_ms,
            ended_at=time.time(),
        )
    )
    return row
