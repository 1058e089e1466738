"""Run an agent over a dataset, score every case and record the results as trace
events next to the runs they came from (tables ``eval_results`` and ``eval_runs``).

The cases run in this process or on a Ray cluster (:mod:`agentlab.evals.executors`).
The same dataset, seed and deterministic model give the same report, byte for byte,
apart from its ids and timings: :func:`reproducible_report` blanks those.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentlab._context import EventSink
from agentlab._sync import run_sync
from agentlab.agents import Agent
from agentlab.errors import UserError
from agentlab.evals.dataset import Dataset, load_dataset
from agentlab.evals.executors import AgentSpec, CaseBatch, Executor, resolve_executor
from agentlab.evals.metrics import TIMING_METRICS, compute_metrics
from agentlab.evals.report import EvalReport
from agentlab.evals.results import TIMING_FIELDS
from agentlab.events import EvalCaseResult, EvalRunSummary
from agentlab.tracing import get_writer

__all__ = ["evaluate", "evaluate_sync", "reproducible_report"]

AgentLike = Agent | AgentSpec | str
"""An Agent, an :class:`AgentSpec`, or a ``"package.module:factory"`` string."""
CaseCallback = Callable[[EvalCaseResult, int, int], object]
"""Told of each recorded case: ``(result, cases done, cases in all)``."""


async def evaluate(
    agent: AgentLike,
    dataset: Dataset | str | os.PathLike[str],
    *,
    name: str | None = None,
    concurrency: int = 1,
    metadata: dict[str, Any] | None = None,
    executor: Executor | str = "local",
    seed: int = 0,
    on_case: CaseCallback | None = None,
) -> EvalReport:
    """Run `agent` on every case of `dataset` (a Dataset or a JSONL path) and score it.

    Each run's metadata carries ``eval_id`` and ``case_id`` (plus `metadata` and
    ``seed``); the results go to the agent's trace writer (the default workspace's
    when the agent does not trace), so SQL can join ``eval_results`` to ``runs``. At
    most `concurrency` cases run at once (per worker, on Ray); the report keeps the
    dataset's order.

    `executor` is ``"local"`` (this process), ``"ray"`` or a
    :class:`~agentlab.evals.RayExecutor` (a cluster; `agent` must then be an
    :class:`~agentlab.evals.AgentSpec` or a ``"module:factory"`` string, built again
    in each worker). `seed` seeds each case's random generator
    (:func:`~agentlab.evals.case_random`, for scripted models that sample) from
    the seed and the case id, so neither the concurrency nor the executor changes
    what a case draws; it is recorded in the report's metadata.

    `on_case(result, done, total)` is called as each case is recorded (its
    :class:`~agentlab.events.EvalCaseResult`; on Ray, as each batch comes back): a
    progress bar's hook (:class:`agentlab.ui.EvalProgress` ``.update``).
    """
    if concurrency < 1:
        raise UserError(f"concurrency must be at least 1 (got {concurrency}).")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"seed must be an integer (got {seed!r}).")
    run_on = resolve_executor(executor)
    built, spec = _agent_and_spec(agent)
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(Path(dataset))
    batch = CaseBatch.of(dataset.cases, "", seed, _with_seed(metadata, seed), concurrency)
    return await run_eval(built, spec, dataset, batch, run_on, name=name, on_case=on_case)


async def run_eval(
    built: Agent,
    spec: AgentSpec | None,
    dataset: Dataset,
    batch: CaseBatch,
    run_on: Executor,
    *,
    name: str | None = None,
    on_case: CaseCallback | None = None,
) -> EvalReport:
    """The eval of `batch` (the cases of `dataset`, checked by :func:`evaluate`) on
    `run_on`: a new eval id, every case recorded, the summary recorded, the report."""
    metadata = batch.metadata
    tracer = built.tracer or get_writer()
    eval_id = os.urandom(16).hex()
    batch = replace(batch, eval_id=eval_id)
    name = name or dataset.name
    started_at = time.time()
    sink = tracer if on_case is None else _Progress(tracer, on_case, len(batch.cases))
    results = await run_on.run(built, spec, batch, sink)
    metrics = compute_metrics(results)
    tracer.emit(
        EvalRunSummary(
            eval_id=eval_id,
            name=name,
            dataset=dataset.name,
            agent=built.name,
            model=built.model.name,
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
        agent=built.name,
        model=built.model.name,
        metrics=metrics,
        results=results,
        metadata=metadata,
    )


def evaluate_sync(
    agent: AgentLike,
    dataset: Dataset | str | os.PathLike[str],
    *,
    name: str | None = None,
    concurrency: int = 1,
    metadata: dict[str, Any] | None = None,
    executor: Executor | str = "local",
    seed: int = 0,
    on_case: CaseCallback | None = None,
) -> EvalReport:
    """:func:`evaluate` for synchronous code; also works inside a notebook cell."""
    return run_sync(
        evaluate(
            agent,
            dataset,
            name=name,
            concurrency=concurrency,
            metadata=metadata,
            executor=executor,
            seed=seed,
            on_case=on_case,
        )
    )


def reproducible_report(report: EvalReport) -> EvalReport:
    """`report` without what differs between two runs of the same eval: its ids
    (``eval_id``, each case's ``run_id``) blanked and its timings (each case's
    ``latency_ms``, the ``latency_p50_ms``/``latency_p95_ms`` metrics) set to 0.

    The same dataset, seed and deterministic (e.g. scripted) model give byte-identical
    ``to_dict()``, JSON and ``table()`` of it, whatever the concurrency or executor.
    """
    untimed: dict[str, Any] = dict.fromkeys(TIMING_FIELDS, 0.0)
    untimed_metrics: dict[str, Any] = dict.fromkeys(TIMING_METRICS, 0.0)
    return replace(
        report,
        eval_id="",
        results=[replace(r, run_id="", **untimed) for r in report.results],
        metrics=replace(report.metrics, **untimed_metrics),
    )


class _Progress:
    """The eval's event sink, which also tells `on_case` of each case it records."""

    def __init__(self, sink: EventSink, on_case: CaseCallback, total: int) -> None:
        self.sink, self.on_case, self.total, self.done = sink, on_case, total, 0
        self.workspace = getattr(sink, "workspace", None)  # where Ray's events go

    def emit(self, event: Any) -> None:
        self.sink.emit(event)
        if isinstance(event, EvalCaseResult):
            self.done += 1
            self.on_case(event, self.done, self.total)


def _agent_and_spec(agent: AgentLike) -> tuple[Agent, AgentSpec | None]:
    """The agent to run here, and the spec that builds it elsewhere (None for an Agent)."""
    if isinstance(agent, Agent):
        return agent, None
    if isinstance(agent, str):
        agent = AgentSpec(agent)
    if not isinstance(agent, AgentSpec):
        raise UserError(
            f"evaluate() takes an Agent, an AgentSpec or a 'module:factory' string, not "
            f"{type(agent).__name__}"
        )
    return agent.build(), agent  # built here too: the report names it, its trace records


def _with_seed(metadata: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    metadata = dict(metadata or {})
    if metadata.get("seed", seed) != seed:
        raise UserError(
            f"metadata has seed={metadata['seed']!r} but evaluate() got seed={seed}; pass the "
            "seed once, as seed="
        )
    return {**metadata, "seed": seed}
