"""Where an eval's cases run: in this process (:class:`LocalExecutor`, the default)
or on a Ray cluster (:class:`RayExecutor`), which builds the agent in each worker
from an :class:`AgentSpec`. Either way each case draws from its own seeded random
generator (:func:`case_random`) and the report is the same.
"""

from __future__ import annotations

from agentlab.errors import UserError
from agentlab.evals.executors.base import Executor
from agentlab.evals.executors.cases import CaseBatch, case_random, case_seed, evaluate_cases
from agentlab.evals.executors.local import LocalExecutor
from agentlab.evals.executors.ray_executor import RayExecutor
from agentlab.evals.executors.spec import AgentSpec

__all__ = [
    "AgentSpec",
    "CaseBatch",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "case_random",
    "case_seed",
    "evaluate_cases",
    "resolve_executor",
]


def resolve_executor(executor: Executor | str | None) -> Executor:
    """An executor from ``"local"`` (or None), ``"ray"`` (:class:`RayExecutor` with
    its defaults) or an executor object."""
    if executor is None or executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor()
    if isinstance(executor, str | type) or not callable(getattr(executor, "run", None)):
        raise UserError(
            f"executor {executor!r} is not known; use 'local', 'ray', or an executor such as "
            "RayExecutor(address='HOST:PORT', workers=4)"
        )
    return executor
