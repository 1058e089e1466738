"""Circuit breakers for model endpoints and tools.

::

    from agentlab.resilience import BreakerConfig, breaker_registry

    breaker = breaker_registry().get("model:openai:gpt-4.1-mini", BreakerConfig())
    ticket = breaker.acquire()            # BreakerOpen when it is open
    ...
    breaker.record_success(ticket)        # or breaker.record_failure(ticket, error=exc)

State lives in this process (:class:`InProcessBreakerStore`, the default) or in
Redis (:class:`RedisBreakerStore`, shared by every process; needs the ``redis``
extra, imported only when the store is created). See :mod:`.breaker` for the rules.
"""

from agentlab.resilience.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    BreakerOpen,
    BreakerRegistry,
    BreakerState,
    BreakerStore,
    BreakerTicket,
    BreakerTransition,
    CircuitBreaker,
    InProcessBreakerStore,
    breaker_registry,
)
from agentlab.resilience.redis_breaker import RedisBreakerStore

__all__ = [  # noqa: RUF022 - grouped, not sorted
    # the breaker
    "CircuitBreaker",
    "BreakerConfig",
    "BreakerTicket",
    "BreakerTransition",
    "BreakerOpen",
    "BreakerState",
    "CLOSED",
    "OPEN",
    "HALF_OPEN",
    # where its state lives
    "BreakerStore",
    "InProcessBreakerStore",
    "RedisBreakerStore",
    # one breaker per name in this process
    "BreakerRegistry",
    "breaker_registry",
]
