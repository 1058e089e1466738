"""The state path of a stored run of a :class:`~agentlab.agents.StateMachineAgent`,
read from the trace store's rows: what :class:`~agentlab.ui.RunInspector` shows.

A run of that agent records its machine's spec in its metadata and each transition
as a ``transition`` tool call, so the diagram and the path through it come from the
store alone, without the agent that made the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agentlab import _html
from agentlab.agents.state_machine import StateMachine
from agentlab.agents.state_machine_agent import METADATA_KEY, TRANSITION_TOOL, transition_target
from agentlab.agents.state_spec import StateMachineError

__all__ = ["state_path_from_rows", "state_view_html"]


def state_path_from_rows(rows: Iterable[Mapping[str, Any]], initial: str) -> list[str]:
    """The states a run went through, from its step rows (``TraceStore.steps``, as
    records: ``kind``, ``name``, ``status``, ``input``), starting in `initial`."""
    path = [initial]
    for row in rows:
        if row.get("kind") == "tool_call" and row.get("name") == TRANSITION_TOOL:
            target = transition_target(row.get("input")) if row.get("status") == "ok" else None
            if target is not None:
                path.append(target)
    return path


def state_view_html(rows: Iterable[Mapping[str, Any]], run: Mapping[str, Any] | None) -> str:
    """The machine of stored `run` (a ``TraceStore.run`` row) with its path through
    it highlighted, as HTML; ``""`` for a run of another kind of agent."""
    metadata = (run or {}).get("metadata") or {}
    spec = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    if not isinstance(spec, Mapping):
        return ""
    try:
        machine = StateMachine.from_spec(spec)  # guards are named only: nothing runs
    except StateMachineError as exc:
        return _html.scoped(
            f'<div class="bad">The run\'s state machine cannot be drawn: {_html.esc(exc)}</div>'
        )
    path = state_path_from_rows(rows, machine.initial)
    status = (run or {}).get("status")
    return machine.diagram(path, status if isinstance(status, str) else None)._repr_html_()
