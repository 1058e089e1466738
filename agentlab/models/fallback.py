"""Fallback: when one model fails, the next one in the list takes the request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentlab.errors import AllModelsFailedError, ModelError, ModelRequestsBlockedError, UserError
from agentlab.messages import Message, ToolDefinition
from agentlab.models.base import Model, ModelResponse, ModelSettings
from agentlab.models.context import current_call
from agentlab.tokens import TokenCounter

__all__ = ["FallbackModel"]


class FallbackModel(Model):
    """Sends each request to the first model; on a :class:`ModelError` (after that
    model's own retries, or at once when its circuit breaker is open) to the next.

    The step records which model served it and why (``model_calls.served_by`` and
    ``route``). When every model fails, :class:`AllModelsFailedError` lists each
    model's error. A budget limit is not a model failure: it ends the run.
    """

    def __init__(self, models: Sequence[Model | str]) -> None:
        from agentlab.models import infer_model

        if len(models) < 2:
            raise UserError("FallbackModel needs at least two models: [primary, fallback, ...].")
        self.models = [infer_model(m) for m in models]

    @property
    def name(self) -> str:
        return self.models[0].name

    @property
    def leaves(self) -> tuple[Model, ...]:
        return tuple(leaf for m in self.models for leaf in m.leaves)

    def map_leaves(self, wrap: Callable[[Model], Model]) -> Model:
        return FallbackModel([m.map_leaves(wrap) for m in self.models])

    def token_counter(self) -> TokenCounter:
        return self.models[0].token_counter()

    def request_preview(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> dict[str, Any]:
        return self.models[0].request_preview(messages, tools)  # where requests go first

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        context = current_call()
        errors: list[ModelError] = []
        for index, model in enumerate(self.models):
            try:
                response = await model.request(messages, tools, settings)
            except ModelRequestsBlockedError:
                raise
            except ModelError as exc:
                errors.append(exc)
                if context is not None:
                    context.fallbacks.append(f"{model.name}: {type(exc).__name__}: {exc}")
                continue
            if context is not None and (index or context.served_by is None):
                why = (
                    "primary"
                    if not index
                    else f"fallback {index} after "
                    + "; ".join(
                        f"{m.name} failed ({type(e).__name__})"
                        for m, e in zip(self.models, errors, strict=False)
                    )
                )
                context.note_route(response.model_name, why)
            return response
        summary = "; ".join(f"{m.name}: {e}" for m, e in zip(self.models, errors, strict=True))
        raise AllModelsFailedError(
            f"all {len(self.models)} models failed: {summary}", errors, model=self.name
        )

    async def aclose(self) -> None:
        for model in self.models:
            await model.aclose()

    def __repr__(self) -> str:
        return f"FallbackModel({[m.name for m in self.models]})"
