"""Replay a stored run with something changed, and see what changed step by step.

``replay(agent, run_id)`` runs the stored run's input again with `agent` (a changed
tool, model, prompt or setting) and returns a :class:`~agentlab.agents.replay_diff.RunDiff`
against the original. What did not change is not done again:

- **Tool calls** the original run made with the same arguments get the recorded
  result back; the tool is not called, so no side effect repeats. Tools named in
  `live_tools` (the ones you changed) are always called. A call the original never
  made runs for real, except for a tool with side effects, which is refused (the
  model is told) unless `allow_side_effects`.
- **Model replies** are replayed while the model is the original's and the
  conversation is exactly what the original sent at that step; from the first
  difference on (a changed prompt or tool result), the model is asked for real.
  ``live_model=True`` always asks it (a changed setting such as temperature).

The replay is itself a traced run (metadata ``replay_of``); replayed model calls
cost nothing and say so in their route, replayed tool calls are served by
``replay of run <id>``.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentlab._sync import run_sync
from agentlab.agents.recovery import RunRecord, read_run
from agentlab.agents.replay_diff import RunDiff, diff_runs
from agentlab.messages import AssistantMessage, Message, ToolDefinition
from agentlab.models.base import Model, ModelResponse, ModelSettings
from agentlab.models.context import current_call
from agentlab.models.wrapper import WrapperModel
from agentlab.tools.calls import (
    ToolHandler,
    ToolInvocation,
    ToolLayer,
    ToolOutcome,
    build_chain,
    capped,
)
from agentlab.usage import Usage

if TYPE_CHECKING:
    from agentlab.agents.agent import Agent
    from agentlab.tracing import TraceStore

__all__ = ["replay", "replay_sync"]


async def replay(
    agent: Agent,
    run_id: str,
    *,
    store: TraceStore | None = None,
    live_tools: Sequence[str] = (),
    live_model: bool = False,
    allow_side_effects: bool = False,
    metadata: dict[str, Any] | None = None,
) -> RunDiff:
    """Run stored run `run_id` again with `agent` and diff it against the original
    (see the module docstring for what is replayed and what runs for real).
    `metadata` is added to the replay run's (which names the original as
    ``replay_of``)."""
    from agentlab.tracing import TraceStore

    store = store or _store_of(agent) or TraceStore()
    original = read_run(agent, run_id, store, same_agent=False)
    unknown = sorted(set(live_tools) - set(agent.tools_by_name))
    if unknown:
        from agentlab.errors import UserError

        raise UserError(
            f"live_tools names {unknown}, which agent {agent.name!r} does not have; "
            f"its tools are {agent.tool_names}."
        )
    book = _ToolBook(original, run_id, agent.max_tool_result_chars)
    clone = copy.copy(agent)
    if not live_model:
        clone.stack = _ReplayedModel(agent.stack, original, run_id)
    live = set(live_tools)
    clone.tool_handlers = {
        name: build_chain(
            [_replaying(book, live, allow_side_effects, agent.tools_by_name[name].side_effects)],
            innermost=handler,
        )
        for name, handler in agent.tool_handlers.items()
    }
    row = original.row
    metadata = {**(row.get("metadata") or {}), **(metadata or {}), "replay_of": run_id}
    run = clone.start(
        row["input"], session=row.get("session"), user=row.get("user_id"), metadata=metadata
    )
    await run.finish()
    return diff_runs(
        original.steps,
        run.steps,
        original_row=row,
        replay=run.result,
        replayed_calls=book.replayed,
        refused_calls=book.refused,
    )


def replay_sync(agent: Agent, run_id: str, **options: object) -> RunDiff:
    """:func:`replay` for synchronous code (also inside a notebook cell)."""
    return run_sync(replay(agent, run_id, **options))  # type: ignore[arg-type]


def _store_of(agent: Agent) -> TraceStore | None:
    from agentlab.tracing import TraceStore

    workspace = getattr(agent.tracer, "workspace", None)
    return TraceStore(workspace) if workspace is not None else None


class _ToolBook:
    """The original run's tool results, by tool and arguments, in the order made."""

    def __init__(self, original: RunRecord, run_id: str, max_chars: int) -> None:
        self.served_by = f"replay of run {run_id}"
        self.max_chars = max_chars
        self.results: dict[tuple[str, str], deque[tuple[str, str]]] = defaultdict(deque)
        for step in original.steps:
            for call in step.tool_calls:
                key = (call.name, _canonical(call.arguments))
                self.results[key].append((call.status, call.result))
        self.replayed: set[tuple[int, str]] = set()  # (step, call id) served from the trace
        self.refused: set[tuple[int, str]] = set()  # side-effecting calls not made

    def take(self, invocation: ToolInvocation) -> ToolOutcome | None:
        queue = self.results.get((invocation.call.name, _canonical(invocation.call.arguments)))
        if not queue:
            return None
        status, result = queue.popleft()
        self.replayed.add((invocation.step, invocation.call.id))
        return ToolOutcome(
            status,  # type: ignore[arg-type]
            capped(result, self.max_chars),
            result=result if len(result) > self.max_chars else None,
            served_by=self.served_by,
        )


def _replaying(
    book: _ToolBook, live: set[str], allow_side_effects: bool, side_effects: bool
) -> ToolLayer:
    """The outermost tool layer of a replay: the recorded result when there is one."""

    async def layer(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
        name = invocation.call.name
        if name not in live:
            recorded = book.take(invocation)
            if recorded is not None:
                return recorded
            if side_effects and not allow_side_effects:
                book.refused.add((invocation.step, invocation.call.id))
                return ToolOutcome(
                    "error",
                    f"Not made: this is a replay, the original run never called {name} "
                    "with these arguments, and a tool with side effects is not run during "
                    "a replay (pass allow_side_effects=True to run it). Answer with what "
                    "you have.",
                )
        return await rest(invocation)

    return layer


def _canonical(arguments: str) -> str:
    """Arguments as comparable text: the same JSON object, however it was spaced."""
    try:
        return json.dumps(json.loads(arguments or "{}"), sort_keys=True)
    except ValueError:
        return arguments


class _ReplayedModel(WrapperModel):
    """Answers each step with the original's reply while the conversation is the one
    the original sent at that step and the model is the same; asks the model from
    the first difference on."""

    def __init__(self, wrapped: Model, original: RunRecord, run_id: str) -> None:
        super().__init__(wrapped)
        self.run_id = run_id
        same_model = original.row.get("model") == wrapped.name
        self._script = _conversation_per_step(original) if same_model else []
        self._diverged = not self._script

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        if not self._diverged and self._script:
            step, sent, reply = self._script[0]
            if _same(messages, sent):
                self._script.pop(0)
                call = current_call()
                if call is not None:
                    call.note_route(self.name, f"replayed: step {step} of run {self.run_id}")
                return ModelResponse(reply, Usage(), self.name)
        self._diverged = True
        return await self.wrapped.request(messages, tools, settings)


def _conversation_per_step(
    original: RunRecord,
) -> list[tuple[int, list[Message], AssistantMessage]]:
    """(step, the conversation sent, the reply) of each step that got a reply."""
    script = []
    sent = len(original.messages) - sum(
        1 + len(s.tool_calls) for s in original.steps if s.response is not None
    )  # the opening messages
    for step in original.steps:
        if step.response is None:
            continue
        script.append((step.index, original.messages[:sent], step.response))
        sent += 1 + len(step.tool_calls)
    return script


def _same(live: Sequence[Message], recorded: Sequence[Message]) -> bool:
    return len(live) == len(recorded) and all(
        a.model_dump(mode="json") == b.model_dump(mode="json")
        for a, b in zip(live, recorded, strict=True)
    )
