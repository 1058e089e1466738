"""Trace events: what the run loop records, one JSON line each.

Events are the unit of durability: the trace writer appends each one to disk as
soon as it happens, and the trace store ingests them into DuckDB tables
(``runs``, ``model_calls``, ``tool_calls``; memory adds ``context_windows``,
``memory_retrievals`` and ``memory_ops``; evaluations add ``eval_runs`` and
``eval_results``; circuit breakers ``breaker_transitions``; loop alerts ``alerts``;
the start of a side-effecting tool call ``tool_call_starts``; a person's decisions
on paused runs ``run_decisions``).

Events are plain dataclasses, validated and serialized by pydantic: the run loop
builds them from values that are already typed, so construction skips validation
(it is on the hot path of every step); :func:`parse_event` validates fully.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter
from pydantic_core import SchemaSerializer

from agentlab.messages import AssistantMessage, Message

__all__ = [
    "EVENT_KINDS",
    "AlertEvent",
    "BreakerTransitionEvent",
    "ContextWindowEvent",
    "EvalCaseResult",
    "EvalRunSummary",
    "Event",
    "MemoryOpEvent",
    "MemoryRetrievalEvent",
    "ModelCallEvent",
    "RunFinished",
    "RunPaused",
    "RunResumed",
    "RunStarted",
    "RunStatus",
    "ToolCallEvent",
    "ToolCallStarted",
    "ToolCallStatus",
    "breaker_event",
    "dump_event",
    "parse_event",
]

RunStatus = Literal[
    "running",
    "paused",
    "completed",
    "failed",
    "max_steps",
    "budget_exceeded",
    "cancelled",
    "interrupted",
]
ToolCallStatus = Literal["ok", "invalid_arguments", "unknown_tool", "error", "timeout", "denied"]
CacheOutcome = Literal["hit", "miss"]
_CONFIG = ConfigDict(extra="forbid")


@dataclass(slots=True, kw_only=True)
class RunStarted:
    """A run began. Times are seconds since the epoch."""

    __pydantic_config__ = _CONFIG

    kind: Literal["run_started"] = "run_started"
    run_id: str
    agent: str
    model: str
    input: str
    started_at: float
    metadata: dict[str, Any] = field(default_factory=dict)
    session: str | None = None
    user: str | None = None
    limits: dict[str, float] | None = None  # the run's budget (Budget.limits)


@dataclass(slots=True, kw_only=True)
class ModelCallEvent:
    """One model request of step `step` (1-based).

    `messages` holds only the messages added to the conversation since the
    previous model call of the run (all of them for the first call), so a long
    run is stored in linear space; `context_messages` is how many the model saw.
    """

    __pydantic_config__ = _CONFIG

    kind: Literal["model_call"] = "model_call"
    id: str
    run_id: str
    step: int
    model: str
    messages: list[Message]
    context_messages: int
    tools: list[str]
    response: AssistantMessage | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    latency_ms: float
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    started_at: float
    attempts: list[dict[str, Any]] = field(default_factory=list)  # every request sent
    served_by: str | None = None  # the model that answered (a fallback, a routed model)
    route: str | None = None  # why that model answered


@dataclass(slots=True, kw_only=True)
class ToolCallEvent:
    """One tool call of step `step`; `arguments` is the model's raw JSON text.

    For a cacheable tool, `cache` says whether the result came from the cache.
    """

    __pydantic_config__ = _CONFIG

    kind: Literal["tool_call"] = "tool_call"
    id: str
    run_id: str
    step: int
    tool: str
    arguments: str
    result: str | None = None
    status: ToolCallStatus = "ok"
    error: str | None = None
    latency_ms: float
    started_at: float
    cache: CacheOutcome | None = None  # None: the tool is not cacheable
    saved_cost: float | None = None  # a hit: the tool's cost per call, not spent
    saved_latency_ms: float | None = None  # a hit: the original call's latency
    call_id: str | None = None  # the model's id of the call (its reply names it)
    served_by: str | None = None  # a tool with fallbacks: the tool that answered
    fallback: list[dict[str, Any]] | None = None  # the tries that failed: tool, status, error


@dataclass(slots=True, kw_only=True)
class ToolCallStarted:
    """A call of a tool with side effects is about to run (written before it runs).

    `key` is the call's idempotency key (``<run_id>-<step>-<call_id>``, stable
    across restarts). A start with no :class:`ToolCallEvent` after it means the
    process stopped inside the call: its outcome is unknown.
    """

    __pydantic_config__ = _CONFIG

    kind: Literal["tool_call_started"] = "tool_call_started"
    key: str
    run_id: str
    step: int
    tool: str
    call_id: str
    arguments: str
    started_at: float


@dataclass(slots=True, kw_only=True)
class RunFinished:
    """A run ended; `explanation` says in plain language why when it did not complete."""

    __pydantic_config__ = _CONFIG

    kind: Literal["run_finished"] = "run_finished"
    run_id: str
    status: RunStatus
    output: str | None = None
    explanation: str | None = None
    steps: int
    input_tokens: int
    output_tokens: int
    cost: float | None = None
    latency_ms: float
    ended_at: float
    failure: dict[str, Any] | None = None  # why it ended badly: what, tried, next (structured)


@dataclass(slots=True, kw_only=True)
class BreakerTransitionEvent:
    """A circuit breaker changed state (``closed``, ``open``, ``half_open``), seen by
    run `run_id` at step `step` (empty when no run was active)."""

    __pydantic_config__ = _CONFIG

    kind: Literal["breaker_transition"] = "breaker_transition"
    id: str
    run_id: str
    step: int
    breaker: str  # e.g. "model:openai:gpt-4.1-mini@http://127.0.0.1:8000/v1", "tool:charge"
    from_state: str
    to_state: str
    failures: int
    reason: str
    started_at: float


def breaker_event(transition: Any, run_id: str, step: int) -> BreakerTransitionEvent:
    """The trace event of a circuit breaker's transition
    (:class:`agentlab.resilience.BreakerTransition`) seen by run `run_id` at `step`."""
    return BreakerTransitionEvent(
        id=f"{run_id}-{step}-b{os.urandom(4).hex()}",
        run_id=run_id,
        step=step,
        breaker=transition.name,
        from_state=transition.from_state,
        to_state=transition.to_state,
        failures=transition.failures,
        reason=transition.reason,
        started_at=transition.at,
    )


@dataclass(slots=True, kw_only=True)
class RunPaused:
    """A run paused for a person: `pending` says what it waits for (a tool call to
    approve); `checkpoint` holds what another process needs to resume it."""

    __pydantic_config__ = _CONFIG

    kind: Literal["run_paused"] = "run_paused"
    run_id: str
    step: int
    pending: dict[str, Any]
    checkpoint: dict[str, Any]
    paused_at: float


@dataclass(slots=True, kw_only=True)
class RunResumed:
    """A paused run was resumed with a person's decision."""

    __pydantic_config__ = _CONFIG

    kind: Literal["run_resumed"] = "run_resumed"
    run_id: str
    decision: dict[str, Any]
    resumed_at: float
    agent: str | None = None
    """The agent's name (None in traces written before it was recorded)."""


@dataclass(slots=True, kw_only=True)
class AlertEvent:
    """Something about run `run_id` looks wrong at step `step`: the same tool call
    repeated (``repeated_call``), no progress over several steps (``no_progress``), steps
    or cost far above the agent's own history (``steps_above_history``,
    ``cost_above_history``)."""

    __pydantic_config__ = _CONFIG

    kind: Literal["alert"] = "alert"
    id: str
    run_id: str
    step: int
    alert: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False  # the agent was set to stop the run on it
    started_at: float


@dataclass(slots=True, kw_only=True)
class ContextWindowEvent:
    """What working memory sent the model at step `step` (indices into the run's
    conversation), what it left out, and the summary call it made, if any."""

    __pydantic_config__ = _CONFIG

    kind: Literal["context_window"] = "context_window"
    id: str
    run_id: str
    step: int
    budget: int
    tokens: int
    counter: str
    kept: list[int]
    dropped: list[int]
    summarized: list[int]
    summary: str | None = None
    pinned: list[str] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)
    summary_input_tokens: int = 0
    summary_output_tokens: int = 0
    summary_cost: float | None = 0.0
    started_at: float


@dataclass(slots=True, kw_only=True)
class MemoryRetrievalEvent:
    """A search of long-term memory: the query, filters, every hit with its score,
    and the ids that entered the context (`source`: ``auto`` or the ``recall`` tool)."""

    __pydantic_config__ = _CONFIG

    kind: Literal["memory_retrieval"] = "memory_retrieval"
    id: str
    run_id: str
    step: int
    source: Literal["auto", "tool"]
    mode: str
    query: str
    filters: dict[str, Any] = field(default_factory=dict)
    k: int
    hits: list[dict[str, Any]]
    entered: list[str]
    latency_ms: float
    started_at: float


@dataclass(slots=True, kw_only=True)
class MemoryOpEvent:
    """A short-term key read, written or deleted, or a long-term memory written."""

    __pydantic_config__ = _CONFIG

    kind: Literal["memory_op"] = "memory_op"
    id: str
    run_id: str
    step: int
    tier: Literal["short_term", "long_term"]
    op: str  # get | set | delete | add
    namespace: str
    key: str  # the short-term key, or the long-term memory's id
    hit: bool | None = None
    ttl: float | None = None
    detail: str | None = None  # a long-term write: its text
    started_at: float


@dataclass(slots=True, kw_only=True)
class EvalCaseResult:
    """One evaluated case: the run it made (`run_id`) and how it scored.

    `scorer` is the registered scorer's name and arguments, enough to rebuild it;
    `calls_*` count expected tool calls, calls made and the pairs that matched.
    """

    __pydantic_config__ = _CONFIG

    kind: Literal["eval_case_result"] = "eval_case_result"
    eval_id: str
    case_id: str
    run_id: str
    passed: bool
    score: float
    explanation: str
    scorer: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    calls_expected: int
    calls_made: int
    calls_matched: int
    steps: int
    cost: float | None = None
    latency_ms: float
    ended_at: float


@dataclass(slots=True, kw_only=True)
class EvalRunSummary:
    """An evaluation finished: its metrics over all cases (see ``agentlab.evals``)."""

    __pydantic_config__ = _CONFIG

    kind: Literal["eval_run"] = "eval_run"
    eval_id: str
    name: str
    dataset: str
    agent: str
    model: str
    cases: int
    metrics: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    started_at: float
    ended_at: float


Event = Annotated[
    RunStarted
    | ModelCallEvent
    | ToolCallEvent
    | ToolCallStarted
    | RunFinished
    | ContextWindowEvent
    | MemoryRetrievalEvent
    | MemoryOpEvent
    | EvalCaseResult
    | EvalRunSummary
    | BreakerTransitionEvent
    | AlertEvent
    | RunPaused
    | RunResumed,
    Field(discriminator="kind"),
]
EVENT_KINDS: tuple[str, ...] = (
    "run_started",
    "model_call",
    "tool_call",
    "tool_call_started",
    "run_finished",
    "context_window",
    "memory_retrieval",
    "memory_op",
    "eval_case_result",
    "eval_run",
    "breaker_transition",
    "alert",
    "run_paused",
    "run_resumed",
)
"""The `kind` of every event type (the trace store ignores lines of other kinds)."""
_SERIALIZERS: dict[type, SchemaSerializer] = {}


@functools.cache
def _event_adapter() -> TypeAdapter[Event]:
    return TypeAdapter(Event)


def dump_event(event: Event) -> bytes:
    """One event as compact JSON (no newline). Serializers are built on first use
    (keeps ``import agentlab`` light)."""
    serializer = _SERIALIZERS.get(type(event))
    if serializer is None:
        serializer = _SERIALIZERS[type(event)] = _event_serializer(type(event))
    return serializer.to_json(event)


def _event_serializer(cls: type) -> SchemaSerializer:
    """The JSON serializer of event type `cls`, with every union of message models
    (``list[Message]``) serialized as ``Any``: each message then goes straight to
    its own model's serializer, found from its type, instead of through pydantic's
    union serializer (about a microsecond more per message, on every step). The
    output is the same; a test checks it for every event kind."""
    adapter: TypeAdapter[Any] = TypeAdapter(cls)
    schema = adapter.core_schema
    models = {
        d["ref"]
        for d in (schema.get("definitions", ()) if schema.get("type") == "definitions" else ())
        if d.get("type") == "model" and "ref" in d
    }
    try:
        return SchemaSerializer(_model_unions_as_any(schema, models))
    except Exception:  # a schema shape this does not know: the plain serializer
        return adapter.serializer


def _model_unions_as_any(schema: Any, models: set[str]) -> Any:
    """A copy of core schema `schema` with each union whose choices are all models
    (inline or a reference to one of `models`) replaced by the ``any`` schema."""
    if isinstance(schema, list):
        return [_model_unions_as_any(s, models) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") in ("union", "tagged-union"):
        choices = schema["choices"]
        members = [
            c[0] if isinstance(c, tuple) else c
            for c in (choices.values() if isinstance(choices, dict) else choices)
        ]
        if members and all(
            isinstance(m, dict)
            and (
                m.get("type") == "model"
                or (m.get("type") == "definition-ref" and m.get("schema_ref") in models)
            )
            for m in members
        ):
            return {"type": "any"}
    return {k: _model_unions_as_any(v, models) for k, v in schema.items()}


def parse_event(line: str | bytes) -> Event:
    """Parse and validate one JSON line written by the trace writer."""
    return _event_adapter().validate_json(line)
