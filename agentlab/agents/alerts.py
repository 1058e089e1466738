"""Loop alerts: an observer of a run's events that notices an agent going round in
circles: the same tool called with the same arguments `repeat` times, or
`no_progress` steps in a row whose tool calls brought nothing new (an error or a
result seen before); and, with :class:`HistoryAlerts`, a run taking far more steps
or costing far more than the agent's own history in the trace store. Each alert is
an event (the ``alerts`` table, ``agentlab alerts``, the run inspector), can call a
user callback, and can stop the run with an explanation.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from agentlab.errors import UserError
from agentlab.events import AlertEvent, ModelCallEvent, RunStarted, ToolCallEvent
from agentlab.tracing.history import Spread, run_history

if TYPE_CHECKING:
    from agentlab.agents.run import Run

__all__ = ["HistoryAlerts", "LoopAlerts"]

_SIGMA_PER_MAD = 1.4826  # a normal distribution's standard deviation over its MAD

_ANOMALY_NEXT = (
    "Look at the run's steps for why it needed so much more than usual (a loop, a tool "
    "that changed, a harder request); if such runs are normal now, raise "
    "HistoryAlerts(factor=...) or turn the check off (LoopAlerts(history=None))."
)


@dataclass(frozen=True)
class HistoryAlerts:
    """Alert when a run takes far more steps, or costs far more, than the agent's
    own history: ``steps_above_history`` and ``cost_above_history``.

    The history is the agent's (same name) latest `runs` *completed* runs in the
    trace store the agent writes to (failed or stopped runs do not set the norm).
    With ``m`` its median and ``MAD`` its median absolute deviation, a run alerts
    once its value exceeds::

        threshold = max(m + k * 1.4826 * MAD, factor * m)

    ``1.4826 * MAD`` is the standard deviation a normal distribution with that MAD
    has; median and MAD barely move for a few runaway runs in the history (unlike
    a mean and standard deviation), and ``factor * m`` keeps an agent whose runs
    all take the same number of steps (MAD 0) from alerting on one step more.
    Steps are checked as each step's model call ends (a looping run is flagged
    while it loops), cost against the run's cost so far.

    The history is read once per agent and `ttl` seconds by each process, on
    first need: when a run passes ``factor`` steps (no run with fewer can be
    above the threshold) or has a cost. The read never waits for the store and
    never ingests (see :mod:`agentlab.tracing.history`): runs not yet ingested
    are not in it. A busy or unopenable store means no check, never a failed
    run; so does an agent that is not traced to a workspace.

    Args:
        runs: how many of the agent's latest completed runs make the history.
        min_runs: no alert before the history holds this many runs (for cost:
            runs whose cost is known).
        k: how many MAD-based standard deviations above the median.
        factor: and at least this many times the median (at least 1).
        ttl: seconds this process reuses a history it has read.
    """

    runs: int = 200
    min_runs: int = 20
    k: float = 4.0
    factor: float = 3.0
    ttl: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_runs <= self.runs:
            raise UserError(
                f"HistoryAlerts(runs={self.runs}, min_runs={self.min_runs}): min_runs must "
                "be at least 1 and at most runs."
            )
        if self.k < 0 or self.factor < 1:
            raise UserError(
                f"HistoryAlerts(k={self.k}, factor={self.factor}): k must be 0 or more "
                "and factor at least 1."
            )
        if self.ttl < 0:
            raise UserError(f"HistoryAlerts(ttl={self.ttl}): 0 or more seconds.")

    def threshold(self, spread: Spread) -> float:
        """The value above which a run alerts, for a history summed up by `spread`."""
        return max(
            spread.median + self.k * _SIGMA_PER_MAD * spread.mad, self.factor * spread.median
        )


@dataclass(frozen=True)
class LoopAlerts:
    """When to raise a loop alert, and what to do about it.

    Args:
        repeat: the same tool with the same arguments this many times in a run.
        no_progress: this many steps in a row without a new, successful tool result
            (None: not checked).
        stop: end the run (status ``failed``) on an alert: failure kind ``loop``,
            or ``anomaly`` for a history alert. An alert on a step that ends the
            run anyway (its final answer) does not stop it.
        on_alert: called with each :class:`~agentlab.events.AlertEvent`.
        history: steps or cost far above the agent's own history
            (:class:`HistoryAlerts`; None: not checked).
    """

    repeat: int = 3
    no_progress: int | None = 4
    stop: bool = False
    on_alert: Callable[[AlertEvent], None] | None = None
    history: HistoryAlerts | None = field(default_factory=HistoryAlerts)

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
        self.history = None if policy.history is None else _HistoryWatch(policy.history, self)

    def emit(self, event: Any) -> None:
        if isinstance(event, ToolCallEvent):
            self._tool_call(event)
        elif isinstance(event, ModelCallEvent):
            if event.step > 1:
                self._step_ended(event.step - 1)
            if self.history is not None:
                self.history.model_call(event)
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

    def _alert(
        self,
        kind: str,
        step: int,
        message: str,
        detail: dict[str, Any],
        stop: Callable[[str], None] | None = None,
        stoppable: bool = True,
    ) -> None:
        """Raise alert `kind` (once per run); with ``stop=True`` end the run through
        `stop` (default: as looping) unless the run cannot or need not be stopped."""
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
            stopped=policy.stop and stoppable and not run.done,
            started_at=time.time(),
        )
        run.emit(event)
        if policy.on_alert is not None:
            policy.on_alert(event)
        if event.stopped:
            (stop or self._stop_looping)(message)

    def _stop_looping(self, message: str) -> None:
        self.run.stop(
            "loop",
            f"the agent was stopped because it is looping: {message}.",
            "Look at the repeated calls: make the tool's result say clearly what the "
            "model should do next, describe the tool better, or use a more capable model.",
        )


class _HistoryWatch:
    """Compares one run's steps and cost with the agent's history (read on first
    need, see :class:`HistoryAlerts`). Per step it costs a few comparisons."""

    def __init__(self, policy: HistoryAlerts, watch: _LoopWatch) -> None:
        self.policy = policy
        self.watch = watch
        self.unread = True  # the history is read on first need
        self.steps_floor = math.floor(policy.factor)  # no run at or below it can alert
        self.steps_limit: int | None = None  # alert above it (None: not checked)
        self.steps: Spread | None = None
        self.cost_limit: float | None = None
        self.cost: Spread | None = None

    def model_call(self, event: ModelCallEvent) -> None:
        run = self.watch.run
        cost = run.cost
        if self.unread:
            if event.step <= self.steps_floor and not (cost is not None and cost > 0):
                return
            self.unread = False
            self._read()
        final = event.response is not None and not event.response.tool_calls
        if self.steps_limit is not None and event.step > self.steps_limit:
            self._steps_above(event.step, self.steps_limit, final)
            self.steps_limit = None  # once per run
        if self.cost_limit is not None and cost is not None and cost > self.cost_limit:
            self._cost_above(event.step, cost, self.cost_limit, final)
            self.cost_limit = None
        if self.steps_limit is None and self.cost_limit is None:
            self.watch.history = None  # nothing left to check in this run

    def _read(self) -> None:
        workspace = getattr(self.watch.run.tracer, "workspace", None)
        policy = self.policy
        if not isinstance(workspace, Path):  # not traced to a workspace: no history
            return
        history = run_history(workspace, self.watch.run.agent.name, policy.runs, policy.ttl)
        if history is None:
            return
        if _usable(history.steps, policy.min_runs):
            self.steps = history.steps
            self.steps_limit = math.floor(policy.threshold(history.steps))
        if _usable(history.cost, policy.min_runs):
            self.cost = history.cost
            self.cost_limit = policy.threshold(history.cost)

    def _steps_above(self, steps: int, limit: int, final: bool) -> None:
        spread = self.steps
        assert spread is not None
        self.watch._alert(
            "steps_above_history",
            steps,
            f"{steps} steps; this agent's last {spread.n} completed runs took a median of "
            f"{spread.median:g} (alert above {limit})",
            {
                "value": steps,
                "median": spread.median,
                "mad": spread.mad,
                "threshold": limit,
                "history": spread.n,
            },
            self._stop,
            stoppable=not final,
        )

    def _cost_above(self, step: int, cost: float, threshold: float, final: bool) -> None:
        spread = self.cost
        assert spread is not None
        self.watch._alert(
            "cost_above_history",
            step,
            f"${cost:.4g} so far; this agent's last {spread.n} completed runs cost a median "
            f"of ${spread.median:.4g} (alert above ${threshold:.4g})",
            {
                "value": cost,
                "median": spread.median,
                "mad": spread.mad,
                "threshold": threshold,
                "history": spread.n,
            },
            self._stop,
            stoppable=not final,
        )

    def _stop(self, message: str) -> None:
        self.watch.run.stop(
            "anomaly",
            f"the agent was stopped because this run is far above its own history: {message}.",
            _ANOMALY_NEXT,
        )


def _usable(spread: Spread | None, min_runs: int) -> TypeGuard[Spread]:
    """A history large enough to judge by, with a median to multiply."""
    return spread is not None and spread.n >= min_runs and spread.median > 0
