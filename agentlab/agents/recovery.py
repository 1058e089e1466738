"""Rebuild a run from its trace, in any process: to resume a run that paused for a
person, or to recover one whose process died (killed, crashed, restarted).

The trace is the run's write-ahead log: every model call and tool call is on disk
before the next one starts (the durable trace writer), and a call with side effects
records its start, with its idempotency key, before it runs. So the conversation,
the steps, the spend and the decisions made so far can be read back, and a call
that started but never recorded a result is known to have an unknown outcome (see
:func:`agentlab.tools.calls.record_start` for what is done about it).

What the model saw is rebuilt as it was written: with secrets redacted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentlab.agents.records import Step, ToolCallRecord
from agentlab.errors import UserError
from agentlab.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolMessage,
    load_messages,
)
from agentlab.tools.calls import capped
from agentlab.usage import Usage

if TYPE_CHECKING:
    import duckdb

    from agentlab.agents.agent import Agent
    from agentlab.tracing import TraceStore

__all__ = ["RunRecord", "read_run"]

_MODEL_CALLS = """
SELECT step, CAST(messages AS VARCHAR), CAST(response AS VARCHAR), input_tokens,
       output_tokens, cost, latency_ms, error, CAST(attempts AS VARCHAR), served_by, route
FROM model_calls WHERE run_id = $run_id ORDER BY step
"""
_TOOL_CALLS = """
SELECT step, tool, arguments, result, status, error, latency_ms, call_id
FROM tool_calls WHERE run_id = $run_id
ORDER BY step, CAST(regexp_extract(id, '-([0-9]+)$', 1) AS INTEGER)
"""
_STARTS = 'SELECT "key", step, call_id FROM tool_call_starts WHERE run_id = $run_id'
_DECISIONS = """
SELECT "key", CAST(decision AS VARCHAR) FROM run_decisions WHERE run_id = $run_id
ORDER BY resumed_at
"""
_NOT_COUNTED = ("invalid_arguments", "unknown_tool")  # refused before the budget counts them


@dataclass
class RunRecord:
    """What the trace holds of one run: enough to carry it on in a new process."""

    row: dict[str, Any]
    messages: list[Message]
    steps: list[Step]
    sent: int  # messages already recorded with a model call
    pending_calls: list[ToolCall]  # the last step's calls that recorded no result
    unknown_outcomes: set[str]  # keys of calls that started and recorded no result
    call_starts: dict[str, int]  # how many times each side-effecting call was started
    approvals: dict[str, dict[str, Any]]
    failures: dict[str, int]
    spent: dict[str, Any] = field(default_factory=dict)

    @property
    def final_answer(self) -> str | None:
        """The last step's answer, when the process died after it but before the
        run recorded its end."""
        last = self.steps[-1] if self.steps else None
        if last is None or last.response is None or last.response.tool_calls:
            return None
        return last.response.content or None


def read_run(agent: Agent, run_id: str, store: TraceStore, *, same_agent: bool = True) -> RunRecord:
    """Read run `run_id` of `agent` back from `store` (raises :class:`UserError` when
    it is unknown, or, with `same_agent`, when another agent made it)."""
    with store.connect() as con:
        result = con.execute("SELECT * EXCLUDE (segment) FROM runs WHERE run_id = ?", [run_id])
        rows = result.fetchall()
        if not rows:
            raise UserError(f"No run {run_id!r} in {store.workspace}; check the id and workspace.")
        columns = [d[0] for d in result.description or ()]
        row = dict(zip(columns, rows[0], strict=True))
        if same_agent and row.get("agent") != agent.name:
            raise UserError(
                f"Run {run_id} belongs to agent {row.get('agent')!r}, not {agent.name!r}: "
                "resume it with the agent that started it."
            )
        params = {"run_id": run_id}
        model_calls = _fetch(con, _MODEL_CALLS, params)
        tool_calls = _fetch(con, _TOOL_CALLS, params)
        starts = _fetch(con, _STARTS, params)
        decisions = _fetch(con, _DECISIONS, params)
    for column in ("pending", "checkpoint", "failure", "metadata", "limits"):
        if row.get(column) is not None:
            row[column] = json.loads(row[column])
    return _rebuild(agent, row, model_calls, tool_calls, starts, decisions)


def _fetch(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any]) -> list[Any]:
    return con.execute(query, params).fetchall()


def _rebuild(
    agent: Agent,
    row: dict[str, Any],
    model_calls: list[Any],
    tool_calls: list[Any],
    starts: list[Any],
    decisions: list[Any],
) -> RunRecord:
    by_step: dict[int, list[Any]] = {}
    for call in tool_calls:
        by_step.setdefault(call[0], []).append(call)
    messages: list[Message] = []
    steps: list[Step] = []
    sent = 0
    pending: list[ToolCall] = []
    failures: Counter[str] = Counter()
    for index, (
        step_no,
        delta,
        response,
        tin,
        tout,
        cost,
        latency,
        error,
        attempts,
        *rest,
    ) in enumerate(model_calls):
        if index == 0:
            messages.extend(load_messages(delta or "[]"))
        else:  # what the run added before this request (a pattern's instruction); the
            # tool results are rebuilt below from their rows, as the model was shown them
            messages.extend(
                m for m in load_messages(delta or "[]") if not isinstance(m, ToolMessage)
            )
        reply = AssistantMessage.model_validate_json(response) if response else None
        step = Step(
            step_no,
            reply,
            Usage(input_tokens=tin or 0, output_tokens=tout or 0),
            cost,
            latency or 0.0,
            error=error,
            attempts=json.loads(attempts) if attempts else [],
            served_by=rest[0],
            route=rest[1],
        )
        steps.append(step)
        if reply is None:
            sent = len(messages)
            continue
        messages.append(reply)
        sent = len(messages)
        pending = []
        for call, made in _match(reply.tool_calls, by_step.get(step_no, [])):
            if made is None:
                pending.append(call)
                continue
            step.tool_calls.append(_record(made, call.id))
            messages.append(_tool_message(made, call, agent.max_tool_result_chars))
            failures[made[1]] = 0 if made[4] == "ok" else failures[made[1]] + 1
    if not model_calls:
        messages = agent.opening_messages(row["input"])
    # A start (the call's own, or a fallback's) with no result of its call after it.
    finished = {(s.index, c.call_id) for s in steps for c in s.tool_calls}
    unknown = {key for key, step, call_id in starts if (step, call_id) not in finished}
    start_counts = Counter(key for key, _, _ in starts)
    # A pause saved the counters the trace does not hold exactly; a dead process
    # saved nothing, so they are counted from the trace.
    paused = row["status"] == "paused"
    checkpoint = (row.get("checkpoint") or {}) if paused else {}
    return RunRecord(
        row=row,
        messages=messages,
        steps=steps,
        sent=sent,
        pending_calls=pending,
        unknown_outcomes=unknown,
        call_starts=dict(start_counts),
        approvals=checkpoint.get("approvals", {})
        | {key: json.loads(decision) for key, decision in decisions},
        failures=checkpoint.get("failures") or {k: v for k, v in failures.items() if v},
        spent=checkpoint.get("spent") or _spent(steps),
    )


def _match(asked: Sequence[ToolCall], made: list[Any]) -> Iterator[tuple[ToolCall, Any]]:
    """Each call the model asked for, with its recorded result row (None: no result),
    matched by the call's id (by position in traces older than call ids)."""
    by_id: dict[str, list[Any]] = {}
    for row in made:
        by_id.setdefault(row[7], []).append(row)
    for position, call in enumerate(asked):
        if None in by_id:
            yield call, made[position] if position < len(made) else None
        else:
            rows = by_id.get(call.id)
            yield call, rows.pop(0) if rows else None


def _record(row: Any, call_id: str) -> ToolCallRecord:
    _, tool, arguments, result, status, error, latency, recorded_id = row
    return ToolCallRecord(
        name=tool,
        arguments=arguments,
        result=result or "",
        status=status,
        latency_ms=latency or 0.0,
        error=error,
        call_id=recorded_id or call_id,
    )


def _tool_message(row: Any, call: ToolCall, max_chars: int) -> ToolMessage:
    """The tool message the model was sent (results longer than the agent's cap
    were cut for the model; the trace keeps them whole)."""
    status, result = row[4], row[3] or ""
    return ToolMessage(
        tool_call_id=row[7] or call.id,
        name=row[1],
        content=capped(result, max_chars),
        is_error=status != "ok",
    )


def _spent(steps: list[Step]) -> dict[str, Any]:
    """What the recorded steps spent against the run's budget."""
    costs = [s.cost for s in steps]
    return {
        "tokens": sum(s.usage.input_tokens + s.usage.output_tokens for s in steps),
        "cost": None if any(c is None for c in costs) else sum(c or 0.0 for c in costs),
        "model_calls": sum(max(1, len(s.attempts)) for s in steps),
        "tool_calls": sum(1 for s in steps for c in s.tool_calls if c.status not in _NOT_COUNTED),
    }
