"""Retries of failed model requests: exponential backoff with full jitter,
``Retry-After`` honoured, bounded by attempts and a deadline (tenacity).

Only errors that say they are retryable are retried: timeouts, connection errors,
429, 5xx and malformed replies. Client errors (400, 401, 403, 404) fail at once
with what to fix. Every attempt is recorded in the step's call context, with the
wait before the next one; the whole exchange is one step of the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, wait_random_exponential

from agentlab.errors import ModelError, UnexpectedModelOutputError, UserError
from agentlab.messages import Message, ToolDefinition
from agentlab.models.base import Model, ModelResponse, ModelSettings
from agentlab.models.context import current_call
from agentlab.models.wrapper import WrapperModel

__all__ = ["RetryModel", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed request is retried.

    Args:
        attempts: requests at most, the first included (1: no retry).
        initial: the first backoff ceiling in seconds; it doubles each retry and
            the wait is drawn uniformly below it (full jitter).
        max_wait: the largest backoff ceiling in seconds.
        deadline: seconds all attempts of one request may take, waits included
            (the run's wall-time budget bounds them too).
        max_retry_after: a ``Retry-After`` longer than this many seconds is not
            waited for: the request fails (and a fallback model can take over).
    """

    attempts: int = 3
    initial: float = 0.5
    max_wait: float = 20.0
    deadline: float | None = 120.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UserError(f"RetryPolicy(attempts={self.attempts}): at least 1.")
        if self.initial < 0 or self.max_wait < 0:
            raise UserError("RetryPolicy: waits must be 0 or more seconds.")
        if self.deadline is not None and self.deadline <= 0:
            raise UserError(f"RetryPolicy(deadline={self.deadline}): a positive number or None.")


_MADE = Exception("the first attempt, made before tenacity took over")


class _GiveUp(Exception):
    """A retry would not finish in time: re-raise the last error with the reason."""


class RetryModel(WrapperModel):
    """Retries `wrapped` by `policy` (see the module docstring)."""

    def __init__(self, wrapped: Model, policy: RetryPolicy | None = None) -> None:
        super().__init__(wrapped)
        self.policy = policy or RetryPolicy()
        self._backoff = wait_random_exponential(
            multiplier=self.policy.initial, max=self.policy.max_wait
        )

    def map_leaves(self, wrap: Callable[[Model], Model]) -> Model:
        return self  # already an endpoint with its own stack

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        policy = self.policy
        started = time.monotonic()
        try:  # the first attempt outside tenacity: a request that succeeds costs nothing
            return await self.wrapped.request(messages, tools, settings)
        except BaseException as exc:
            if policy.attempts == 1 or not _is_retryable(exc):
                raise
            first = exc
        context = current_call()
        deadline = None if policy.deadline is None else started + policy.deadline
        budget_deadline = context.budget.deadline if context and context.budget else None
        if budget_deadline is not None:
            deadline = budget_deadline if deadline is None else min(deadline, budget_deadline)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            backoff = self._backoff(state)
            after = getattr(error, "retry_after", None)
            if after is None:
                return backoff
            if after > policy.max_retry_after:
                raise _GiveUp(
                    f"the server asked to wait {after:g} s (Retry-After), more than the "
                    f"retry policy's max_retry_after of {policy.max_retry_after:g} s"
                )
            return max(after, backoff)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= policy.attempts:
                return True
            if deadline is not None and time.monotonic() + state.upcoming_sleep > deadline:
                raise _GiveUp(
                    f"waiting {state.upcoming_sleep:.1f} s for another attempt would pass "
                    "the deadline (the retry policy's, or the run's wall-time budget)"
                )
            return False

        def before_sleep(state: RetryCallState) -> None:
            if context is not None and context.attempts:
                context.attempts[-1].wait_s = state.upcoming_sleep

        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=_retryable,
            before_sleep=before_sleep,
            sleep=asyncio.sleep,
            reraise=True,
        )
        last: list[BaseException] = [first]
        try:
            async for attempt in retrying:
                with attempt:
                    if last[0] is first:  # tenacity's attempt 1 is the one made above
                        last[0] = _MADE
                        raise first
                    try:
                        return await self.wrapped.request(messages, tools, settings)
                    except BaseException as exc:
                        last[:] = [exc]
                        raise
        except _GiveUp as reason:
            error = last[0] if last[0] is not _MADE else first
            if isinstance(error, ModelError):
                error.hint = f"Not retried further: {reason}. {error.hint}"
                raise error from None
            raise
        raise AssertionError("unreachable: tenacity re-raises the last error")


def _retryable(state: RetryCallState) -> bool:
    return _is_retryable(state.outcome.exception() if state.outcome else None)


def _is_retryable(error: BaseException | None) -> bool:
    """Transport failures are retried; an unusable reply is the run loop's to ask again
    (the same request would get the same reply)."""
    return (
        isinstance(error, ModelError)
        and error.retryable
        and not isinstance(error, UnexpectedModelOutputError)
    )
