"""What a step of a run had in memory, read back from the trace store.

:func:`step_memory` rebuilds the run's conversation from its model calls (each
records the messages added since the previous call, and the reply) and joins the
step's context window, retrievals and short-term key accesses. The memory
inspector widget shows it; tests and notebooks can use it directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentlab.errors import UserError
from agentlab.messages import Message, load_messages
from agentlab.tracing.store import TraceStore

if TYPE_CHECKING:
    import duckdb

__all__ = ["StepMemory", "memory_steps", "retrieval_steps", "step_memory"]


@dataclass(frozen=True)
class StepMemory:
    """Memory at one step: the conversation so far and what working memory did with it.

    `window` is None when the agent has no working-memory policy (the whole
    conversation was sent). Indices in `window` refer to `conversation`.
    """

    run_id: str
    step: int
    conversation: list[Message]
    window: dict[str, Any] | None
    retrievals: list[dict[str, Any]] = field(default_factory=list)
    key_ops: list[dict[str, Any]] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)
    memory_texts: dict[str, str] = field(default_factory=dict)  # id -> text, hits so far

    def sent(self) -> list[tuple[int, Message]]:
        """The conversation messages the model was sent, with their indices."""
        kept = self.window["kept"] if self.window else range(len(self.conversation))
        return [(i, self.conversation[i]) for i in kept if i < len(self.conversation)]

    def left_out(self) -> list[tuple[int, Message, str]]:
        """Messages not sent at this step: ``(index, message, "dropped" | "summarized")``."""
        if not self.window:
            return []
        marks = {i: "dropped" for i in self.window["dropped"]}
        marks.update({i: "summarized" for i in self.window["summarized"]})
        return [(i, self.conversation[i], marks[i]) for i in sorted(marks)]


def memory_steps(store: TraceStore, run_id: str) -> list[int]:
    """The steps of a run (from its model calls)."""
    return _steps(store, "model_calls", run_id)


def retrieval_steps(store: TraceStore, run_id: str) -> list[int]:
    """The steps of run `run_id` at which long-term memory was searched, in order."""
    return _steps(store, "memory_retrievals", run_id)


def _steps(store: TraceStore, table: str, run_id: str) -> list[int]:
    rows = store.sql(
        f"SELECT DISTINCT step FROM {table} WHERE run_id = $run ORDER BY step", {"run": run_id}
    )
    return [int(r[0]) for r in rows]


def step_memory(store: TraceStore, run_id: str, step: int) -> StepMemory:
    """Memory at `step` of run `run_id`; raises UserError when there is no such step."""
    params = {"run": run_id, "step": step}
    with store.connect() as con:
        calls = _rows(
            con,
            "SELECT step, messages, response FROM model_calls WHERE run_id = $run "
            "AND step <= $step ORDER BY step",
            params,
        )
        windows = _rows(
            con,
            "SELECT budget, tokens, counter, kept, dropped, summarized, summary, pinned, "
            "memories, summary_input_tokens, summary_output_tokens, summary_cost "
            "FROM context_windows WHERE run_id = $run AND step = $step",
            params,
        )
        retrievals = _rows(
            con,
            "SELECT source, mode, query, filters, k, hits, entered, latency_ms FROM "
            "memory_retrievals WHERE run_id = $run AND step = $step ORDER BY started_at, id",
            params,
        )
        earlier_hits = _rows(
            con,
            "SELECT hits FROM memory_retrievals WHERE run_id = $run AND step <= $step "
            "ORDER BY started_at, id",
            params,
        )
        ops = _rows(
            con,
            "SELECT tier, op, namespace, key, hit, ttl, detail FROM memory_ops "
            "WHERE run_id = $run AND step = $step ORDER BY started_at, id",
            params,
        )
    if not calls or calls[-1]["step"] != step:
        known = memory_steps(store, run_id)
        raise UserError(
            f"run {run_id} has no step {step} in the trace store"
            + (f"; its steps are {known[0]}-{known[-1]}" if known else "; it has no steps")
        )
    conversation: list[Message] = []
    for call in calls:
        conversation += load_messages(call["messages"] or "[]")
        if call["response"] and call["step"] < step:  # the step's reply came after its window
            conversation += load_messages(f"[{call['response']}]")
    for r in retrievals:
        r["filters"] = json.loads(r["filters"] or "{}")
        r["hits"] = json.loads(r["hits"] or "[]")
    return StepMemory(
        run_id=run_id,
        step=step,
        conversation=conversation,
        window=windows[0] if windows else None,
        retrievals=retrievals,
        key_ops=[o for o in ops if o["tier"] == "short_term"],
        writes=[o for o in ops if o["tier"] == "long_term"],
        memory_texts={
            h["id"]: h.get("text", "") for r in earlier_hits for h in json.loads(r["hits"] or "[]")
        },
    )


def _rows(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    cursor = con.execute(query, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
