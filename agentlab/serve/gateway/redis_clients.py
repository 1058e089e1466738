"""The gateway's Redis clients, made one way: with time limits, so a Redis that is
down or stalled fails a request within :data:`TIMEOUT_S` (a 503 the client may
retry: :mod:`~agentlab.serve.gateway.errors`) instead of hanging it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentlab.errors import MissingExtraError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["TIMEOUT_S", "async_redis", "sync_redis"]

TIMEOUT_S = 2.0
"""The longest the gateway waits to connect to Redis, and for any one reply; a
command that fails so is tried once more (so a request waits at most twice this)."""


def sync_redis(url: str, **options: Any) -> redis.Redis:
    """A blocking client (the key store, the shared state, the admin routes)."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise MissingExtraError("redis", "redis") from None
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **_limits(), **options)


def async_redis(url: str, *, max_connections: int | None = None) -> redis.asyncio.Redis:
    """An asyncio client (the request path); its connections belong to the event loop
    that first uses them. With `max_connections`, a burst past the pool's size waits
    (at most :data:`TIMEOUT_S`) for a free connection rather than failing."""
    try:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError:
        raise MissingExtraError("redis", "redis") from None
    limits = {"retry": Retry(NoBackoff(), 1), **_limits()}
    if max_connections is None:
        return redis.asyncio.Redis.from_url(url, **limits)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=TIMEOUT_S, **limits
    )
    return redis.asyncio.Redis.from_pool(pool)  # closing the client closes the pool


def _limits() -> dict[str, Any]:
    return {"socket_connect_timeout": TIMEOUT_S, "socket_timeout": TIMEOUT_S}
