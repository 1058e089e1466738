"""The run an agent is executing, as the layers below the run loop see it.

Tools, memory and model wrappers need a few facts about the run that calls them
(its id, session, the step being taken, where its events go). They get them
through :func:`current_run` and the :class:`RunContext` protocol, so none of
them imports the run loop (``agentlab.agents``), which sits above them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from agentlab.errors import UserError

if TYPE_CHECKING:
    from agentlab.messages import Message, ToolDefinition
    from agentlab.tokens import TokenCounter
    from agentlab.usage import Usage

__all__ = ["AgentContext", "EventSink", "RunContext", "current_run"]


class EventSink(Protocol):
    """Anything that records events (the trace store's writer, a test list)."""

    def emit(self, event: Any) -> None: ...


class AgentContext(Protocol):
    """What the layers below the run loop read of the agent."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> Any: ...  # a Model (models sit above this module)

    @property
    def tool_definitions(self) -> Sequence[ToolDefinition]: ...

    @property
    def token_counter(self) -> TokenCounter: ...


class RunContext(Protocol):
    """What the layers below the run loop read of the run calling them."""

    @property
    def id(self) -> str: ...

    @property
    def agent(self) -> AgentContext: ...

    @property
    def session(self) -> str: ...

    @property
    def user(self) -> str | None: ...

    @property
    def current_step(self) -> int: ...

    @property
    def messages(self) -> list[Message]: ...

    def emit(self, event: Any) -> None:
        """Record one event of this run (to every observer of the run)."""

    def account(self, usage: Usage, model_name: str) -> float | None:
        """Add a model request made for the run to its usage; return its cost."""


_current: ContextVar[Any] = ContextVar("agentlab_current_run", default=None)


def current_run() -> Any:
    """The run calling the tool that calls this (its session, short-term memory, ...).

    Returns the :class:`~agentlab.agents.Run`; raises
    :class:`~agentlab.errors.UserError` outside a tool call of a run.
    """
    run = _current.get()
    if run is None:
        raise UserError(
            "current_run() is only available inside a tool while an agent's run calls it"
        )
    return run


def active_run() -> RunContext | None:
    """The run being executed in this context, or None (no error)."""
    run: RunContext | None = _current.get()
    return run
