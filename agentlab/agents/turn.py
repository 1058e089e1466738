"""What one step of a run offers the model: the pattern's only say in the loop.

Every pattern (ReAct, Plan-and-Execute, State Machine) runs on the same loop
(:class:`~agentlab.agents.run.Run`): one step is one model request plus the tool
calls it asks for, with the same tracing, memory, budgets, retries, fallbacks and
alerts. Before each request the loop asks the agent for a :class:`Turn`: which of
its tools the model is offered (and their schemas, which a pattern may narrow, as a
state machine narrows its transitions to an enum), whether it must call one, and
an instruction added to the conversation first (recorded like any message). A
pattern keeps no state of its own beyond what the run's steps record, so a run
rebuilt from its trace carries on where it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agentlab.messages import ToolDefinition

__all__ = ["StopRun", "Turn"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One step's offer to the model.

    Args:
        tools: the tool definitions sent with the request, exactly as the model
            sees them. A call to a tool that is not among them is refused (the model
            is told which it may call), whatever the agent has.
        tool_choice: ``None``/``"auto"``, ``"required"``, ``"none"`` or a tool's name
            (see :attr:`~agentlab.models.ModelSettings.tool_choice`).
        instruction: a user message added to the conversation before the request
            (the plan step to carry out, the state the run is in), or None.
    """

    tools: Sequence[ToolDefinition] = ()
    tool_choice: str | None = None
    instruction: str | None = None
    names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(self.tools))
        object.__setattr__(self, "names", frozenset(t.name for t in self.tools))


class StopRun(Exception):
    """Raised by :meth:`Agent.turn` to end the run before asking the model: the run
    fails with a failure record of `kind` saying `what` went wrong and what to do
    `next_` (a plan that could not be repaired, a state that used its budget)."""

    def __init__(self, kind: str, what: str, next_: str) -> None:
        super().__init__(what)
        self.kind = kind
        self.what = what
        self.next = next_
