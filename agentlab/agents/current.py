"""The run whose tool is being called, for tools that need its memory or session."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from agentlab.errors import UserError

if TYPE_CHECKING:
    from agentlab.agents.run import Run

__all__ = ["current_run"]

_current: ContextVar[Run | None] = ContextVar("agentlab_current_run", default=None)


def current_run() -> Run:
    """The run calling the tool that calls this (its session, short-term memory, ...).

    Raises :class:`~agentlab.errors.UserError` outside a tool call of a run.
    """
    run = _current.get()
    if run is None:
        raise UserError(
            "current_run() is only available inside a tool while an agent's run calls it"
        )
    return run
