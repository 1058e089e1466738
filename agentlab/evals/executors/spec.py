"""How to build an agent in another process: a factory and its arguments.

An :class:`~agentlab.agents.Agent` holds state that belongs to the process that made
it (its circuit breakers' locks, its open trace segment), so it is not sent to Ray
workers; each worker builds its own from an :class:`AgentSpec` instead.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from typing import Any

from agentlab.agents import Agent
from agentlab.errors import UserError

__all__ = ["AgentSpec"]


class AgentSpec:
    """``factory(*args, **kwargs)``, built again in each process that runs the agent.

    `factory` is a callable returning an :class:`~agentlab.agents.Agent`, or a
    ``"package.module:attribute"`` string naming such a callable or an Agent made at
    import time. It and the arguments must pickle (functions defined at module level
    do; Ray pickles with cloudpickle) and the module must import on every worker::

        AgentSpec("agentlab.demo:build_support_agent", model, db_path=db, trace=workspace)
    """

    __slots__ = ("args", "factory", "kwargs")

    def __init__(self, factory: Callable[..., Agent] | str, /, *args: Any, **kwargs: Any) -> None:
        if isinstance(factory, str):
            module, sep, attribute = factory.partition(":")
            if not (module and sep and attribute):
                raise UserError(
                    f"agent spec {factory!r}: write 'package.module:attribute', naming a "
                    "function that returns an Agent (or an Agent)"
                )
        elif not callable(factory):
            raise UserError(
                f"AgentSpec takes a function returning an Agent or a 'module:attribute' "
                f"string, not {type(factory).__name__}"
            )
        self.factory = factory
        self.args = args
        self.kwargs = kwargs

    def build(self) -> Agent:
        """A new agent from the factory (the module is imported on first use)."""
        target: Any = self.factory
        if isinstance(target, str):
            try:
                target = pkgutil.resolve_name(target)
            except (ImportError, AttributeError, ValueError) as exc:
                raise UserError(
                    f"agent spec {self.factory!r}: cannot import it ({type(exc).__name__}: "
                    f"{exc}); the module must be importable here (installed, or on sys.path)"
                ) from exc
        if isinstance(target, Agent):
            if self.args or self.kwargs:
                raise UserError(
                    f"agent spec {self.factory!r} names an Agent, not a factory: it takes no "
                    "arguments"
                )
            return target
        agent = target(*self.args, **self.kwargs)
        if not isinstance(agent, Agent):
            raise UserError(f"agent spec {self!r} returned {type(agent).__name__}, not an Agent")
        return agent

    def __repr__(self) -> str:
        name = self.factory if isinstance(self.factory, str) else _qualified(self.factory)
        arguments = [*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"AgentSpec({', '.join([repr(name), *arguments])})"

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.factory, self.args, self.kwargs)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.factory, self.args, self.kwargs = state


def _qualified(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or type(function).__name__
    return f"{module}:{name}" if module else name
