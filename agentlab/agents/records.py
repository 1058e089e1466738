"""What a run produces: its steps and its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentlab.events import RunStatus, ToolCallStatus
from agentlab.messages import AssistantMessage, Message
from agentlab.usage import Usage

__all__ = ["RunResult", "Step", "ToolCallRecord"]


@dataclass(slots=True)
class ToolCallRecord:
    """One tool call made in a step."""

    name: str
    arguments: str
    result: str
    status: ToolCallStatus
    latency_ms: float
    error: str | None = None
    call_id: str | None = None  # the model's id of the call


@dataclass(slots=True)
class Step:
    """One step: a model call and the tool calls it asked for."""

    index: int
    response: AssistantMessage | None
    usage: Usage
    cost: float | None
    latency_ms: float
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    error: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)  # each request sent
    served_by: str | None = None  # the model that answered
    route: str | None = None  # why that model (primary, fallback, router)
    fallbacks: list[str] = field(default_factory=list)  # models left, and why

    @property
    def thought(self) -> str | None:
        """The model's reasoning text when it also called tools."""
        if self.response is not None and self.response.tool_calls:
            return self.response.content
        return None

    @property
    def kind(self) -> str:
        """``error``, ``tool_calls`` (asked for, made or still waiting) or ``answer``."""
        if self.error is not None:
            return "error"
        asked = self.response is not None and bool(self.response.tool_calls)
        return "tool_calls" if self.tool_calls or asked else "answer"

    def _repr_html_(self) -> str:
        from agentlab.agents.html import step_html

        return step_html(self)


@dataclass(frozen=True)
class RunResult:
    """The outcome of a run. `explanation` says in plain language why a run that
    did not complete stopped, what was tried and what to do next; `failure` is the
    same as a structured record (see :class:`~agentlab.agents.explain.Failure`)."""

    run_id: str
    status: RunStatus
    output: str | None
    explanation: str | None
    steps: int
    tools_called: list[str]
    usage: Usage
    cost: float | None
    latency_ms: float
    messages: list[Message]
    failure: dict[str, Any] | None = None
    pending: dict[str, Any] | None = None  # a paused run: what it waits for

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def __str__(self) -> str:
        return self.output if self.ok and self.output is not None else (self.explanation or "")

    def _repr_html_(self) -> str:
        from agentlab.agents.html import result_html

        return result_html(self)
