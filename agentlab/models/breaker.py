"""A circuit breaker around one model endpoint.

After `failure_threshold` unavailability errors (timeouts, connection errors,
429, 5xx, malformed replies) within its window the breaker opens: requests fail
at once, without reaching the endpoint, with an explanation and as a
:class:`~agentlab.errors.CircuitOpenError` that is not retried, so a fallback model takes
over. After the cooldown one probe request goes through; its outcome closes or
re-opens the breaker. State is shared by every run of the process (and across
processes with a Redis store); every transition is recorded in the trace.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

from agentlab.errors import CircuitOpenError, MalformedResponseError, ModelUnavailableError
from agentlab.events import breaker_event
from agentlab.messages import Message, ToolDefinition
from agentlab.models.base import Model, ModelResponse, ModelSettings
from agentlab.models.context import current_call
from agentlab.models.wrapper import WrapperModel
from agentlab.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerStore,
    BreakerTransition,
    CircuitBreaker,
    breaker_registry,
)

__all__ = ["CircuitBreakerModel", "breaker_name"]


_TRACED: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def breaker_name(model: Model) -> str:
    """``model:<name>@<endpoint>``: one breaker per provider endpoint."""
    endpoint = getattr(model, "endpoint", None)
    return f"model:{model.name}" + (f"@{endpoint}" if endpoint else "")


class CircuitBreakerModel(WrapperModel):
    """Fails fast while the endpoint's breaker is open (see the module docstring)."""

    def __init__(
        self,
        wrapped: Model,
        config: BreakerConfig | None = None,
        store: BreakerStore | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.breaker = breaker_registry().get(breaker_name(wrapped), config, store)
        if self.breaker not in _TRACED:  # one listener per breaker, however many agents
            _TRACED.add(self.breaker)
            self.breaker.subscribe(_record_transition)

    def map_leaves(self, wrap: Callable[[Model], Model]) -> Model:
        return self

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        try:
            ticket = self.breaker.acquire()
        except BreakerOpen as exc:
            what, _, _ = str(exc).partition(" What to do:")  # the advice goes in the hint
            raise CircuitOpenError(what, model=self.wrapped.name) from exc
        try:
            response = await self.wrapped.request(messages, tools, settings)
        except (ModelUnavailableError, MalformedResponseError) as exc:
            self.breaker.record_failure(ticket, error=exc)
            raise
        except BaseException:  # not the endpoint's fault (a bad request, a cancellation)
            self.breaker.record_success(ticket)
            raise
        self.breaker.record_success(ticket)
        return response


def _record_transition(transition: BreakerTransition) -> None:
    """Send a transition to the trace of the run whose request saw it."""
    call = current_call()
    if call is None or call.emit is None:
        return
    call.emit(breaker_event(transition, call.run_id, call.step))
