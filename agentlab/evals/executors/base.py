"""What an executor is: where the cases of an eval run."""

from __future__ import annotations

from typing import Protocol

from agentlab._context import EventSink
from agentlab.agents import Agent
from agentlab.evals.executors.cases import CaseBatch
from agentlab.evals.executors.spec import AgentSpec
from agentlab.evals.results import CaseResult

__all__ = ["Executor"]


class Executor(Protocol):
    """Runs the cases of an eval (:func:`~agentlab.evals.evaluate` calls it).

    `agent` is the agent built in the calling process; `spec` (None when the caller
    passed an Agent) builds the same agent in another process. Every case's events
    go to `sink` (the run's own and its ``EvalCaseResult``), and the results come
    back in the batch's order.
    """

    async def run(
        self, agent: Agent, spec: AgentSpec | None, batch: CaseBatch, sink: EventSink
    ) -> list[CaseResult]: ...
