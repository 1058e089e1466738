"""The innermost layer around an endpoint: checks the run's budget before each
request is sent and records each request as an attempt of the step."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from agentlab.errors import BudgetExceededError
from agentlab.messages import Message, ToolDefinition
from agentlab.models.base import Model, ModelResponse, ModelSettings
from agentlab.models.context import Attempt, CallContext, current_call
from agentlab.models.wrapper import WrapperModel

__all__ = ["MeteredModel"]


class MeteredModel(WrapperModel):
    """Budget check and attempt record for every request to `wrapped`."""

    def map_leaves(self, wrap: Callable[[Model], Model]) -> Model:
        return self

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        context = current_call()
        if context is None:
            return await self.wrapped.request(messages, tools, settings)
        name = self.wrapped.name
        number = len(context.attempts) + 1
        started_at = time.time()
        t0 = time.perf_counter()
        budget = context.budget
        if budget is not None:
            try:
                settings = self._checked(context, name, messages, settings)
            except BudgetExceededError as exc:
                context.attempts.append(
                    Attempt(number, name, started_at, 0.0, "skipped", str(exc), type(exc).__name__)
                )
                raise
        try:
            response = await self.wrapped.request(messages, tools, settings)
        except BaseException as exc:
            latency_ms = (time.perf_counter() - t0) * 1000
            context.attempts.append(
                Attempt(number, name, started_at, latency_ms, "error", str(exc), type(exc).__name__)
            )
            raise
        latency_ms = (time.perf_counter() - t0) * 1000
        context.attempts.append(Attempt(number, name, started_at, latency_ms, "ok"))
        return response

    def _checked(
        self,
        context: CallContext,
        name: str,
        messages: Sequence[Message],
        settings: ModelSettings | None,
    ) -> ModelSettings | None:
        """Raise when this request would cross a limit; cap its max_tokens to fit."""
        budget = context.budget
        assert budget is not None
        limits = budget.budget
        max_output = settings.max_tokens if settings is not None else None
        input_tokens = 0
        if (limits.tokens is not None or limits.cost is not None) and context.count_tokens:
            input_tokens = context.count_tokens(messages)
        price = None
        if limits.cost is not None and context.prices is not None:  # only a cost limit needs it
            price = context.prices.price(name)
        capped = budget.before_model_call(name, price, input_tokens, max_output)
        if capped is not None and capped != max_output:
            values = settings.__dict__ if settings is not None else {}
            return ModelSettings.model_construct(**{**values, "max_tokens": max(1, capped)})
        return settings
