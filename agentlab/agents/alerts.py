"""Loop alerts: an observer of a run's events that notices an agent going round in
circles: the same tool called with the same arguments `repeat` times, or
`no_progress` steps in a row whose tool calls brought nothing new (an error or a
result seen before). Each alert is an event (the ``alerts`` table, ``agentlab
alerts``, the run inspector), can call a user callback, and can stop the run with
an explanation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentlab.errors import UserError
from agentlab.events import AlertEvent, ModelCallEvent, RunStarted, ToolCallEvent

if TYPE_CHECKING:
    from agentlab.agents.run import Run

__all__ = ["LoopAlerts"]


@dataclass(frozen=True)
class LoopAlerts:
    """When to raise a loop alert, and what to do about it.

    Args:
        repeat: the same tool with the same arguments this many times in a run.
        no_progress: this many steps in a row without a new, successful tool result
            (None: not checked).
        stop: end the run (status ``failed``, failure kind ``loop``) on an alert.
        on_alert: called with each :class:`~agentlab.events.AlertEvent`.
    """

    repeat: int = 3
    no_progress: int | None = 4
    stop: bool = False
    on_alert: Callable[[AlertEvent], None] | None = None

    def __post_init__(self) -> None:
        if self.repeat < 2:
            raise UserError(f"LoopAlerts(repeat={self.repeat}): at least 2.")
        if self.no_progress is not None and self.no_progress < 1:
            raise UserError(f"LoopAlerts(no_progress={self.no_progress}): at least 1, or None.")

    def watch(self, run: Run) -> _LoopWatch:
        """The observer of one run."""
        return _LoopWatch(self, run)


class _LoopWatch:
    """Follows one run's events and raises its alerts (each kind once per run)."""

    def __init__(self, policy: LoopAlerts, run: Run) -> None:
        self.policy = policy
        self.run = run
        self.calls: Counter[tuple[str, str]] = Counter()
        self.results: set[tuple[str, str | None]] = set()
        self.stale_steps = 0
        self.step_progress = False
        self.raised: set[str] = set()

    def emit(self, event: Any) -> None:
        if isinstance(event, ToolCallEvent):
            self._tool_call(event)
        elif isinstance(event, ModelCallEvent) and event.step > 1:
            self._step_ended(event.step - 1)
        elif isinstance(event, RunStarted | AlertEvent):
            return

    def _tool_call(self, event: ToolCallEvent) -> None:
        key = (event.tool, event.arguments)  # the model's own text: cheap, and a loop repeats it
        self.calls[key] += 1
        if self.calls[key] == self.policy.repeat:
            self._alert(
                "repeated_call",
                event.step,
                f"tool {event.tool!r} was called {self.policy.repeat} times with the same "
                f"arguments ({event.arguments})",
                {"tool": event.tool, "arguments": event.arguments, "times": self.calls[key]},
            )
        result = (event.tool, event.result)
        if event.status == "ok" and result not in self.results:
            self.step_progress = True
        self.results.add(result)

    def _step_ended(self, step: int) -> None:
        limit = self.policy.no_progress
        self.stale_steps = 0 if self.step_progress else self.stale_steps + 1
        self.step_progress = False
        if limit is not None and self.stale_steps >= limit:
            self._alert(
                "no_progress",
                step,
                f"{self.stale_steps} steps in a row brought no new tool result",
                {"steps": self.stale_steps},
            )

    def _alert(self, kind: str, step: int, message: str, detail: dict[str, Any]) -> None:
        if kind in self.raised:
            return
        self.raised.add(kind)
        run, policy = self.run, self.policy
        event = AlertEvent(
            id=f"{run.id}-{step}-{kind}",
            run_id=run.id,
            step=step,
            alert=kind,
            message=message,
            detail=detail,
            stopped=policy.stop and not run.done,
            started_at=time.time(),
        )
        run.emit(event)
        if policy.on_alert is not None:
            policy.on_alert(event)
        if event.stopped:
            run.stop_for_loop(message)
