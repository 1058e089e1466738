"""A model that wraps another: the base of every cross-cutting layer.

Layers (retry, circuit breaker, metering, fallback, routing) are models around
models, composed when an agent is built, not branches in the run loop.
:meth:`Model.map_leaves` lets an agent put its per-endpoint stack around every
endpoint of a composed model (each fallback, each routed model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentlab.messages import Message, ToolDefinition
from agentlab.models.base import Model, ModelResponse, ModelSettings
from agentlab.tokens import TokenCounter

__all__ = ["WrapperModel"]


class WrapperModel(Model):
    """Delegates everything to `wrapped`; subclasses override :meth:`request`."""

    def __init__(self, wrapped: Model) -> None:
        self.wrapped = wrapped

    @property
    def name(self) -> str:
        return self.wrapped.name

    @property
    def leaves(self) -> tuple[Model, ...]:
        return self.wrapped.leaves

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        return await self.wrapped.request(messages, tools, settings)

    def token_counter(self) -> TokenCounter:
        return self.wrapped.token_counter()

    def request_preview(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> dict[str, Any]:
        return self.wrapped.request_preview(messages, tools)

    async def aclose(self) -> None:
        await self.wrapped.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.wrapped!r})"
