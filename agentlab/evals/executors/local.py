"""The default executor: every case in this process, on its event loop."""

from __future__ import annotations

from dataclasses import dataclass

from agentlab._context import EventSink
from agentlab.agents import Agent
from agentlab.evals.executors.cases import CaseBatch, evaluate_cases
from agentlab.evals.executors.spec import AgentSpec
from agentlab.evals.results import CaseResult

__all__ = ["LocalExecutor"]


@dataclass(frozen=True)
class LocalExecutor:
    """Runs the cases in this process, up to the eval's `concurrency` at once."""

    async def run(
        self, agent: Agent, spec: AgentSpec | None, batch: CaseBatch, sink: EventSink
    ) -> list[CaseResult]:
        """Evaluate every case of `batch` with `agent` (`spec` is not needed here)."""
        return await evaluate_cases(agent, batch, sink)
