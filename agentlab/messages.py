"""The message types every model, tool and trace in agentlab speaks.

One discriminated union (:data:`Message`) with one JSON serializer, and lossless
conversion to and from the OpenAI chat-completions format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "AssistantMessage",
    "Message",
    "SystemMessage",
    "ToolCall",
    "ToolDefinition",
    "ToolMessage",
    "UserMessage",
    "dump_messages",
    "from_openai",
    "load_messages",
    "to_openai",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SystemMessage(_Frozen):
    """Instructions for the model."""

    role: Literal["system"] = "system"
    content: str


class UserMessage(_Frozen):
    """A message from the user (or from agentlab on the user's behalf)."""

    role: Literal["user"] = "user"
    content: str


class ToolCall(_Frozen):
    """One tool call requested by the model.

    `arguments` is the JSON text exactly as the model produced it; it may be
    malformed, which the run loop reports back to the model.
    """

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON (raises ``ValueError`` when malformed)."""
        return json.loads(self.arguments)


class AssistantMessage(_Frozen):
    """A model reply: optional text (a thought or the final answer) and tool calls."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


class ToolMessage(_Frozen):
    """The result of one tool call, sent back to the model."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]
_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


def dump_messages(messages: Sequence[Message]) -> str:
    """Serialize messages to JSON text (lossless; see :func:`load_messages`)."""
    return _MESSAGES.dump_json(list(messages)).decode()


def load_messages(data: str | bytes) -> list[Message]:
    """Parse JSON text produced by :func:`dump_messages`."""
    return _MESSAGES.validate_json(data)


def to_openai(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Convert to the OpenAI chat-completions ``messages`` format."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, AssistantMessage):
            item: dict[str, Any] = {"role": "assistant", "content": m.content}
            if m.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in m.tool_calls
                ]
            out.append(item)
        elif isinstance(m, ToolMessage):
            # OpenAI has no error flag; it is kept in an extension key that
            # OpenAI-compatible servers ignore, so the round trip stays lossless.
            item = {
                "role": "tool",
                "tool_call_id": m.tool_call_id,
                "name": m.name,
                "content": m.content,
            }
            if m.is_error:
                item["x_is_error"] = True
            out.append(item)
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _text(content: Any) -> str:
    """OpenAI content may be a string or a list of typed parts; keep the text."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def from_openai(messages: Iterable[dict[str, Any]]) -> list[Message]:
    """Convert from the OpenAI chat-completions ``messages`` format.

    Raises ``ValueError`` naming the offending item for unknown roles.
    """
    out: list[Message] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role in ("system", "developer"):
            out.append(SystemMessage(content=_text(m.get("content"))))
        elif role == "user":
            out.append(UserMessage(content=_text(m.get("content"))))
        elif role == "assistant":
            calls = tuple(
                ToolCall(
                    id=c["id"],
                    name=c["function"]["name"],
                    arguments=c["function"].get("arguments") or "{}",
                )
                for c in m.get("tool_calls") or ()
            )
            content = m.get("content")
            out.append(
                AssistantMessage(
                    content=None if content is None else _text(content), tool_calls=calls
                )
            )
        elif role == "tool":
            out.append(
                ToolMessage(
                    tool_call_id=m["tool_call_id"],
                    name=m.get("name", ""),
                    content=_text(m.get("content")),
                    is_error=bool(m.get("x_is_error", False)),
                )
            )
        else:
            raise ValueError(
                f"message {i} has role {role!r}; expected system, developer, user, "
                "assistant or tool"
            )
    return out


class ToolDefinition(_Frozen):
    """What a model is told about a tool: its name, description and JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tools=`` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }
