"""Test doubles that ship with agentlab: deterministic, free and instant.

* :class:`FunctionModel` replies with whatever a user function of the message
  history returns.
* :class:`SchemaModel` calls every tool once with arguments generated from its JSON
  schema, then answers with what the tools returned.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentlab.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolDefinition,
    ToolMessage,
)
from agentlab.models.base import Model, ModelResponse, ModelSettings, forced_tools
from agentlab.usage import Usage

__all__ = ["FunctionModel", "SchemaModel"]

Reply = AssistantMessage | str
ReplyFunction = Callable[[Sequence[Message], Sequence[ToolDefinition]], Reply | Awaitable[Reply]]


def _text_length(message: Message) -> int:
    length = len(message.content or "")
    if message.role == "assistant":
        for call in message.tool_calls:
            length += len(call.name) + len(call.arguments)
    return length


class _TokenEstimator:
    """Estimates usage at ~4 characters per token (test doubles have no tokenizer).

    A run appends to one list, so the count is kept incrementally: a step costs
    O(new messages), not O(history).
    """

    def __init__(self) -> None:
        self._messages: Sequence[Message] | None = None
        self._counted = 0
        self._chars = 0

    def usage(self, messages: Sequence[Message], reply: AssistantMessage) -> Usage:
        if messages is not self._messages or len(messages) < self._counted:
            self._messages, self._counted, self._chars = messages, 0, 0
        for message in messages[self._counted :]:
            self._chars += _text_length(message)
        self._counted = len(messages)
        return Usage((self._chars + 3) // 4, (_text_length(reply) + 3) // 4, 1)


class FunctionModel(Model):
    """A model whose reply is ``function(messages, tools)``.

    The function returns an :class:`AssistantMessage` (text and/or tool calls) or
    a string (the final answer); it may be async. Usage is estimated at ~4
    characters per token, and the model costs nothing.
    """

    def __init__(self, function: ReplyFunction, *, name: str = "function") -> None:
        self.function = function
        self._name = f"scripted:{name}"
        self._is_async = inspect.iscoroutinefunction(function)
        self._tokens = _TokenEstimator()

    @property
    def name(self) -> str:
        return self._name

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        reply = self.function(messages, tools)
        if self._is_async:
            reply = await reply  # type: ignore[misc]
        if isinstance(reply, str):
            reply = AssistantMessage(content=reply)
        elif not isinstance(reply, AssistantMessage):
            raise TypeError(
                f"FunctionModel's function returned {type(reply).__name__}; return an "
                "AssistantMessage or a str (the final answer)."
            )
        return ModelResponse(
            message=reply, usage=self._tokens.usage(messages, reply), model_name=self._name
        )


def example_from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A valid value for a JSON schema (required properties only)."""
    if not isinstance(schema, dict):  # `true` / `false`: any value / none
        return {} if schema else None
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return example_from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return example_from_schema(schema[key][0], defs)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: example_from_schema(props[k], defs) for k in schema.get("required", [])}
    if kind == "array":
        if "prefixItems" in schema:  # a tuple: each position its own schema
            return [example_from_schema(item, defs) for item in schema["prefixItems"]]
        return [example_from_schema(schema["items"], defs)] if schema.get("minItems") else []
    if kind == "string":
        if "pattern" in schema:
            import exrex  # a small pure-Python regex expander, imported only when needed

            return next(exrex.generate(schema["pattern"], limit=schema.get("maxLength", 20)))
        return "a" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        value = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return None


class SchemaModel(Model):
    """Calls each tool once, in order, with arguments generated from its schema,
    then answers with a JSON object of what each tool returned. A ``tool_choice``
    that requires a call is a call to the first tool it allows, made again if need be.
    """

    def __init__(self, *, name: str = "schema") -> None:
        self._name = f"scripted:{name}"
        self._tokens = _TokenEstimator()

    @property
    def name(self) -> str:
        return self._name

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        results = {m.name: m.content for m in messages if isinstance(m, ToolMessage)}
        forced = forced_tools(tools, settings.tool_choice if settings else None)
        pending = list(forced) if forced else [t for t in tools if t.name not in results]
        if pending:
            tool = pending[0]
            call = ToolCall(
                id=f"call_{len(results)}",
                name=tool.name,
                arguments=json.dumps(example_from_schema(tool.parameters)),
            )
            reply = AssistantMessage(tool_calls=(call,))
        else:
            reply = AssistantMessage(content=json.dumps(results))
        return ModelResponse(
            message=reply, usage=self._tokens.usage(messages, reply), model_name=self._name
        )
