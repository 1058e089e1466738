"""Evaluate a batch of cases in this process: what every executor runs, the local
one in the calling process and the Ray one in each worker.

A case runs the agent on its input, scores the run, and records an
``EvalCaseResult`` event next to the run's own events. Each case gets its own random
generator, seeded from the eval's seed and the case's id (:func:`case_random`), so
what a case draws depends neither on the other cases nor on the order in which
concurrent cases happen to run, nor on the process that runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from agentlab._context import EventSink
from agentlab.agents import Agent, RunResult
from agentlab.budgets import Budget
from agentlab.errors import UserError
from agentlab.evals.dataset import Case
from agentlab.evals.results import CaseResult
from agentlab.evals.scorers import Score, Scorer, outcome_scorer
from agentlab.evals.toolcalls import made_calls, match_tool_calls
from agentlab.events import EvalCaseResult

__all__ = ["CaseBatch", "CaseRun", "case_random", "case_seed", "evaluate_cases"]

_CASE_RANDOM: ContextVar[random.Random] = ContextVar("agentlab_case_random")

CaseRun = Callable[[Agent, Case, dict[str, Any], Budget | None], Awaitable[RunResult]]
"""Make one case's run: ``(agent, case, run metadata, step budget) -> RunResult``."""


@dataclass(frozen=True, slots=True)
class CaseBatch:
    """Cases to evaluate, each with its scorer (built where the eval started, so a
    worker needs no scorer registry), and what every case of their eval shares: at
    most `concurrency` of them run at once in one process."""

    cases: tuple[Case, ...]
    scorers: tuple[Scorer, ...]
    eval_id: str
    seed: int
    metadata: dict[str, Any]
    concurrency: int
    run: CaseRun | None = None
    """How a case's run is made (None: the agent runs the case's input); a replay of
    an eval makes each case's run a replay of the original's (local executor only)."""

    @classmethod
    def of(
        cls,
        cases: Sequence[Case],
        eval_id: str,
        seed: int,
        metadata: dict[str, Any],
        concurrency: int,
    ) -> CaseBatch:
        """A batch of `cases`, each scored by the scorer of its expected outcome."""
        scorers = tuple(outcome_scorer(case.expected_outcome) for case in cases)
        return cls(tuple(cases), scorers, eval_id, seed, metadata, concurrency)

    def split(self, parts: int) -> list[CaseBatch]:
        """At most `parts` batches of consecutive cases, sizes differing by at most one."""
        parts = max(1, min(parts, len(self.cases)))
        size, extra = divmod(len(self.cases), parts)
        bounds = [i * size + min(i, extra) for i in range(parts + 1)]
        return [
            replace(self, cases=self.cases[start:end], scorers=self.scorers[start:end])
            for start, end in itertools.pairwise(bounds)
        ]


def case_seed(seed: int, case_id: str) -> int:
    """The seed of case `case_id` in an eval seeded with `seed` (the same in every
    process and Python version: a hash of both, not Python's ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def case_random() -> random.Random:
    """The random generator of the eval case being run, seeded with :func:`case_seed`.

    For scripted models that sample: draw from it, not from the ``random`` module,
    and the same dataset and seed give the same report whatever the concurrency or
    executor.
    """
    try:
        return _CASE_RANDOM.get()
    except LookupError:
        raise UserError(
            "case_random() is only available while agentlab.evals.evaluate() runs a case "
            "(it is that case's seeded random generator); outside an eval use random.Random"
        ) from None


async def evaluate_cases(agent: Agent, batch: CaseBatch, sink: EventSink) -> list[CaseResult]:
    """Run, score and record every case of `batch`; the results keep its order."""
    limit = asyncio.Semaphore(batch.concurrency)

    async def run_case(case: Case, scorer: Scorer) -> CaseResult:
        async with limit:  # each case is its own task: the generator is the case's alone
            _CASE_RANDOM.set(random.Random(case_seed(batch.seed, case.id)))
            return await _evaluate_case(agent, case, scorer, batch, sink)

    runs = (run_case(c, s) for c, s in zip(batch.cases, batch.scorers, strict=True))
    return list(await asyncio.gather(*runs))


async def _run_input(
    agent: Agent, case: Case, metadata: dict[str, Any], steps: Budget | None
) -> RunResult:
    return await agent.run(case.input, metadata=metadata, budget=steps)


async def _evaluate_case(
    agent: Agent, case: Case, scorer: Scorer, batch: CaseBatch, sink: EventSink
) -> CaseResult:
    steps = None if case.max_steps is None else Budget(steps=case.max_steps)
    metadata = {**batch.metadata, "eval_id": batch.eval_id, "case_id": case.id}
    run = batch.run or _run_input
    result = await run(agent, case, metadata, steps)
    score = scorer(case, result)
    if not isinstance(score, Score) or not 0.0 <= score.value <= 1.0:
        raise UserError(
            f"scorer {scorer.name!r} returned {score!r} for case {case.id!r}; "
            "a scorer must return a Score whose value is between 0 and 1"
        )
    calls = match_tool_calls(case.expected_tool_calls, made_calls(result))
    explanation = score.explanation
    if calls.problems and scorer.name != "tool_calls":  # that scorer explains them already
        explanation += f" | tool calls: {calls.explanation}"
    row = CaseResult(
        case_id=case.id,
        run_id=result.run_id,
        status=result.status,
        passed=score.passed,
        score=score.value,
        explanation=explanation,
        steps=result.steps,
        cost=result.cost,
        latency_ms=result.latency_ms,
        calls_expected=calls.expected,
        calls_made=calls.made,
        calls_matched=calls.matched,
        output=result.output,
        tags=list(case.tags),
    )
    sink.emit(
        EvalCaseResult(
            eval_id=batch.eval_id,
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
