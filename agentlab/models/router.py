"""Routing: routine steps go to a small, fast model; a step moves to a larger one
when the small one failed, its last tool call was invalid, or a rule says so."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentlab.errors import ModelError, ModelRequestsBlockedError
from agentlab.messages import Message, ToolDefinition, ToolMessage
from agentlab.models.base import Model, ModelResponse, ModelSettings
from agentlab.models.context import current_call
from agentlab.tokens import TokenCounter

__all__ = ["RouteRule", "RouterModel"]

RouteRule = Callable[[Sequence[Message], Sequence[ToolDefinition]], str | None]
"""``rule(messages, tools)`` returns why the large model should take the step, or None."""


class RouterModel(Model):
    """`small` for routine steps; `large` when:

    * the previous tool call failed validation or named an unknown tool (the
      small model could not use the tools; ``escalate_on_invalid_call``),
    * any of `rules` returns a reason (e.g. a long conversation, a keyword),
    * or the small model's request failed (after its retries).

    Each step records which model served it and why.
    """

    def __init__(
        self,
        small: Model | str,
        large: Model | str,
        *,
        rules: Sequence[RouteRule] = (),
        escalate_on_invalid_call: bool = True,
    ) -> None:
        from agentlab.models import infer_model

        self.small = infer_model(small)
        self.large = infer_model(large)
        self.rules = tuple(rules)
        self.escalate_on_invalid_call = escalate_on_invalid_call

    @property
    def name(self) -> str:
        return self.small.name

    @property
    def leaves(self) -> tuple[Model, ...]:
        return (*self.small.leaves, *self.large.leaves)

    def map_leaves(self, wrap: Callable[[Model], Model]) -> Model:
        return RouterModel(
            self.small.map_leaves(wrap),
            self.large.map_leaves(wrap),
            rules=self.rules,
            escalate_on_invalid_call=self.escalate_on_invalid_call,
        )

    def token_counter(self) -> TokenCounter:
        return self.small.token_counter()

    def request_preview(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> dict[str, Any]:
        return self.small.request_preview(messages, tools)  # where requests go first

    def route(self, messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str | None:
        """Why this step should go to the large model, or None for the small one."""
        if self.escalate_on_invalid_call and messages:
            last = messages[-1]
            if (
                isinstance(last, ToolMessage)
                and last.is_error
                and "Invalid arguments" in (last.content or "")
            ):
                return f"the previous call to {last.name!r} had invalid arguments"
            if (
                isinstance(last, ToolMessage)
                and last.is_error
                and "Unknown tool" in (last.content or "")
            ):
                return f"the previous step called an unknown tool {last.name!r}"
        for rule in self.rules:
            reason = rule(messages, tools)
            if reason:
                return f"rule: {reason}"
        return None

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        context = current_call()
        reason = self.route(messages, tools)
        if reason is None:
            try:
                response = await self.small.request(messages, tools, settings)
            except ModelRequestsBlockedError:
                raise
            except ModelError as exc:
                reason = f"{self.small.name} failed ({type(exc).__name__}: {exc})"
                if context is not None:
                    context.fallbacks.append(f"{self.small.name}: {type(exc).__name__}: {exc}")
            else:
                if context is not None:
                    context.note_route(response.model_name, "router: routine step")
                return response
        response = await self.large.request(messages, tools, settings)
        if context is not None:
            context.note_route(response.model_name, f"router: large model, {reason}")
        return response

    async def aclose(self) -> None:
        await self.small.aclose()
        await self.large.aclose()

    def __repr__(self) -> str:
        return f"RouterModel(small={self.small.name!r}, large={self.large.name!r})"
