"""The model interface: one async request method."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from agentlab.errors import ModelRequestsBlockedError, UserError
from agentlab.messages import AssistantMessage, Message, ToolDefinition, to_openai
from agentlab.tokens import EstimateCounter, TokenCounter
from agentlab.usage import Usage

__all__ = [
    "TOOL_CHOICES",
    "Model",
    "ModelResponse",
    "ModelSettings",
    "allow_model_requests",
    "check_allow_model_requests",
    "forced_tools",
]


TOOL_CHOICES = ("auto", "required", "none")
"""The values of :attr:`ModelSettings.tool_choice` that do not name a tool."""


def forced_tools(
    tools: Sequence[ToolDefinition], choice: str | None
) -> Sequence[ToolDefinition] | None:
    """The tools a reply must call one of under `choice` (None: it need not call any;
    empty: it must not). Raises :class:`~agentlab.errors.UserError` for a tool name
    that is not among `tools`."""
    if choice in (None, "auto"):
        return None
    if choice == "none" or not tools:
        return ()
    if choice == "required":
        return tools
    named = [t for t in tools if t.name == choice]
    if not named:
        raise UserError(
            f"tool_choice={choice!r} names no tool of this request (tools: "
            f"{', '.join(t.name for t in tools)}); use one of them, 'auto', 'required' "
            "or 'none'."
        )
    return named


class ModelSettings(BaseModel):
    """Per-request settings; providers ignore what they do not support."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    seed: int | None = None
    tool_choice: str | None = None
    """Whether the reply must call a tool: ``"auto"`` (the default: the model
    decides), ``"required"`` (one of the tools offered), ``"none"`` (an answer), or
    a tool's name (that tool). The local model enforces it by constrained decoding."""

    @field_validator("tool_choice")
    @classmethod
    def _known_choice(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "tool_choice is empty: use 'auto', 'required', 'none' or a tool's name"
            )
        return value


@dataclass(slots=True)
class ModelResponse:
    """A model reply with the tokens it used."""

    message: AssistantMessage
    usage: Usage
    model_name: str


class Model(ABC):
    """A language model. Subclasses implement :meth:`request` and :attr:`name`.

    `name` is ``provider:model`` (e.g. ``openai:gpt-4.1-mini``, ``local:smollm2``)
    and keys the price table.
    """

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """Send `messages` (and the tools the model may call); return its reply."""

    @property
    def leaves(self) -> tuple[Model, ...]:
        """The endpoint models this model sends requests to (itself for a provider)."""
        return (self,)

    def map_leaves(self, wrap: Callable[[Model], Model]) -> Model:
        """This model with each endpoint replaced by ``wrap(endpoint)``; composed
        models (fallbacks, routers) rebuild themselves around the wrapped endpoints."""
        return wrap(self)

    def token_counter(self) -> TokenCounter:
        """How working memory counts this model's tokens: its own tokenizer where
        one is available offline, else an estimate (see :mod:`agentlab.tokens`)."""
        return EstimateCounter()

    def request_preview(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> dict[str, Any]:
        """What a request with `messages` and `tools` sends this model, as data (nothing
        is sent): the tool schemas exactly as the model receives them. The default is
        the OpenAI chat format; a model that sends something else says so."""
        return {
            "format": "OpenAI chat completions",
            "messages": to_openai(messages),
            "tools": [t.to_openai() for t in tools],
        }

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, loaded weights)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_allow_requests = True


def check_allow_model_requests(model: str) -> None:
    """Raise when real model requests are blocked (called by real providers)."""
    if not _allow_requests:
        raise ModelRequestsBlockedError(
            f"Real requests to {model!r} are blocked (agentlab.models.allow_model_requests "
            "is off, as in the test suite). Use a scripted model, or opt in with "
            "`with allow_model_requests(True):`.",
            model=model,
        )


@contextlib.contextmanager
def allow_model_requests(allow: bool) -> Iterator[None]:
    """Allow or block requests to real models within the block."""
    global _allow_requests
    previous, _allow_requests = _allow_requests, allow
    try:
        yield
    finally:
        _allow_requests = previous


def set_allow_model_requests(allow: bool) -> None:
    """Allow or block requests to real models from now on (used by test set-up)."""
    global _allow_requests
    _allow_requests = allow
