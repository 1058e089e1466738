"""Tool fallbacks: when a call fails for good, an alternative takes it.

A tool declared with ``@tool(fallback=[...])`` (see :class:`~agentlab.tools.tool.Fallback`)
gets this layer in its chain, right after validation::

    validate -> FALLBACK -> cap output -> budget -> approval -> cache -> breaker -> invoke
                   |
                   +-> each alternative, in order, through its own whole chain:
                       validate -> cap output -> budget -> approval -> cache -> breaker -> invoke

Why there:

- **After validation**: the model's own mistakes (``invalid_arguments``) go back
  to the model and never reach an alternative; alternatives get the validated
  arguments (re-sent as JSON, or what ``adapt`` made of them) and validate them
  against their own parameters.
- **Outside the breaker**: an open breaker is a failure this layer sees, so while
  the primary's breaker is open the primary is not called and the first
  alternative serves at once. Each alternative has its own breaker.
- **Outside the cache**: a cached result of the primary is a success; failures
  are never cached, and an alternative's result (perhaps for a simpler request)
  is cached, if at all, under the alternative's name and arguments, never as the
  primary's answer.
- **Outside approval**: the primary's approval still pauses before the primary;
  a declined call (``denied``) goes back to the model, it is not handed to
  another tool. An alternative that needs approval pauses the run before it runs,
  under its own key (``<key>-fallback-<n>``, also its idempotency key). Resuming
  makes the call again from the start: the primary first (it may have recovered,
  or fails fast on its open breaker), and the decision applies to the alternative
  it was asked for.
- **Outside the budget**: every try is a tool call and counts as one.
- **Outside the output cap**: each chain caps its own result; what this layer adds
  (the combined error, the note about a simpler request) is always shown.

The layer records which tool served (``served_by``) and each try that failed
before it (``fallback``: tool, status, error), in the outcome and so in
``tool_calls``. The model sees the alternative's result as the result; when it
answers a simpler request, a note says so (the model asked for more). When every
try fails, the model gets one error naming each try. Alternatives' chains have
no fallback layer of their own: one level, no cycles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic_core

from agentlab.messages import ToolCall
from agentlab.tools.calls import ToolHandler, ToolInvocation, ToolLayer, ToolOutcome
from agentlab.tools.tool import Fallback, Tool

__all__ = ["FAILED_FOR_GOOD", "fallback_layer"]

FAILED_FOR_GOOD = frozenset({"error", "timeout"})
"""The statuses an alternative is tried after (an open breaker is an ``error``)."""


def fallback_layer(tool: Tool, handlers: Sequence[ToolHandler]) -> ToolLayer:
    """The layer trying `tool`'s alternatives (``tool.fallback``) in order, each
    through its handler in `handlers` (its own chain), when the call failed for good."""
    alternatives = list(zip(tool.fallback, handlers, strict=True))

    async def layer(invocation: ToolInvocation, rest: ToolHandler) -> ToolOutcome:
        outcome = await rest(invocation)
        if outcome.status not in FAILED_FOR_GOOD:
            if outcome.status == "ok":
                outcome.served_by = tool.name
            return outcome
        first = outcome
        tries = [_failed_try(tool.name, outcome)]
        for index, (alternative, handler) in enumerate(alternatives, 1):
            label = alternative.label(tool)
            try:
                call = _alternative_invocation(invocation, alternative, index)
            except Exception as exc:  # the adapt function failed: a bug, not the model's
                tries.append(
                    {
                        "tool": label,
                        "status": "error",
                        "error": f"adapt raised {type(exc).__name__}: {exc}",
                    }
                )
                continue
            outcome = await handler(call)
            if outcome.status == "ok":
                outcome.served_by = alternative.tool.name if alternative.tool else tool.name
                outcome.fallback = tries
                if alternative.adapt is not None:
                    outcome.content += _simpler_note(tries[0], label, call)
                return outcome
            if outcome.status == "denied":  # a person declined it: the model is told
                outcome.fallback = tries
                return outcome
            tries.append(_failed_try(label, outcome, call if alternative.adapt else None))
        return ToolOutcome(
            first.status, _all_failed(tool, tries), cache=first.cache, fallback=tries
        )

    return layer


def _alternative_invocation(
    invocation: ToolInvocation, alternative: Fallback, index: int
) -> ToolInvocation:
    """The call of `alternative` for `invocation`: its own key and (adapted) arguments."""
    assert alternative.tool is not None  # resolved when the tool was declared
    args: dict[str, Any] = invocation.args.model_dump() if invocation.args is not None else {}
    if alternative.adapt is not None:
        args = alternative.adapt(args)
        if not isinstance(args, dict):
            raise TypeError(f"it returned {type(args).__name__}, not a dict of arguments")
    call = ToolCall(
        id=invocation.call.id,
        name=alternative.tool.name,
        arguments=pydantic_core.to_json(args).decode(),
    )
    return ToolInvocation(
        alternative.tool,
        call,
        invocation.step,
        f"{invocation.key}-fallback-{index}",
        invocation.run,
    )


def _failed_try(
    label: str, outcome: ToolOutcome, call: ToolInvocation | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"tool": label, "status": outcome.status, "error": outcome.content}
    if call is not None:
        entry["arguments"] = call.call.arguments
    return entry


def _simpler_note(primary: dict[str, Any], label: str, call: ToolInvocation) -> str:
    return (
        f"\n[{primary['tool']!r} failed ({primary['status']}), so this is the result of "
        f"{label} with {call.call.arguments}: it may hold less than was asked for.]"
    )


def _all_failed(tool: Tool, tries: list[dict[str, Any]]) -> str:
    lines = [f"Tool {tool.name!r} failed, and so did each of its {len(tries) - 1} fallbacks:"]
    for number, entry in enumerate(tries, 1):
        request = f" with {entry['arguments']}" if "arguments" in entry else ""
        lines.append(f"{number}. {entry['tool']}{request} ({entry['status']}): {entry['error']}")
    lines.append(
        f"Do not call {tool.name!r} again for this request now: try another approach, "
        "or explain the problem in your answer."
    )
    return "\n".join(lines)
