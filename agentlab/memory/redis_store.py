"""Short-term memory on a Redis server (``pip install 'agentlab-toolkit[redis]'``).

Each key is one Redis string ``"<prefix>:<namespace>:<key>"`` holding the JSON
text; a ttl becomes the key's Redis expiry (``SET ... PX``), so Redis itself
hides and deletes expired keys. In the namespace, ``%`` and ``:`` are written as
``%25`` and ``%3A`` so that the namespace ends at the first ``:`` after the prefix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from agentlab.errors import MemoryStoreError, MissingExtraError, UserError
from agentlab.memory.short_term import ShortTermStore

if TYPE_CHECKING:
    import redis

    from agentlab.resilience import RedisBreakerStore

__all__ = ["RedisStore"]

P = ParamSpec("P")
R = TypeVar("R")

_GLOB = re.compile(r"([*?\[\]\\])")
_UNLINK_BATCH = 500


class RedisStore(ShortTermStore):
    """Short-term memory in Redis at `url`, under keys that start with `prefix`.

    Pass `client` to use a ``redis.Redis`` you configured yourself (it must use
    ``decode_responses=True``; the store does not close it). Otherwise the store
    connects on first use, waiting at most 2 s for the connection and 10 s for
    a reply. Unreachable servers and other Redis failures raise MemoryStoreError
    (its message shows the URL without a password).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "agentlab",
        client: redis.Redis | None = None,
    ) -> None:
        try:
            import redis
        except ImportError as e:
            raise MissingExtraError("redis", "redis") from e
        if not prefix or ":" in prefix:
            raise UserError(
                f"RedisStore prefix {prefix!r} must be non-empty and without ':' (which "
                "ends the prefix in every key); use e.g. 'myapp-agentlab'"
            )
        self.prefix = prefix
        self._owns_client = client is None
        if client is None:
            self.url = url
            try:
                client = redis.Redis.from_url(
                    url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
                )
            except ValueError as e:
                raise UserError(f"invalid Redis URL {_without_password(url)!r}: {e}") from e
        else:
            kwargs = client.connection_pool.connection_kwargs
            if not kwargs.get("decode_responses"):
                raise UserError(
                    "the redis client given to RedisStore must be created with "
                    "decode_responses=True"
                )
            host, port, db = kwargs.get("host", "?"), kwargs.get("port", "?"), kwargs.get("db", 0)
            self.url = f"redis://{host}:{port}/{db}"
        self._client = client
        self._shown_url = _without_password(self.url)
        self._unreachable = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._failed = redis.exceptions.RedisError

    def __repr__(self) -> str:
        return f"RedisStore({self._shown_url!r}, prefix={self.prefix!r})"

    def breaker_store(self) -> RedisBreakerStore:
        """Circuit-breaker state on this Redis server, shared by every process using
        it (agents whose short-term memory is this store use it by default)."""
        from agentlab.resilience import RedisBreakerStore

        return RedisBreakerStore(self.url if self._owns_client else self._client)

    def get_raw(self, namespace: str, key: str) -> str | None:
        # decode_responses=True: a str, never bytes
        return cast("str | None", self._call(self._client.get, self._key(namespace, key)))

    def set_raw(self, namespace: str, key: str, value: str, ttl: float | None) -> None:
        px = None if ttl is None else max(1, math.ceil(ttl * 1000))
        self._call(self._client.set, self._key(namespace, key), value, px=px)

    def delete(self, namespace: str, key: str) -> bool:
        return bool(self._call(self._client.unlink, self._key(namespace, key)))

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        head = self._key(namespace, "")
        found = self._scan(_glob_escape(head + prefix) + "*")
        return sorted({name[len(head) :] for name in found})

    def ttl(self, namespace: str, key: str) -> float | None:
        ms: int = self._call(self._client.pttl, self._key(namespace, key))
        return None if ms < 0 else ms / 1000  # -1: no expiry, -2: missing

    def clear(self, namespace: str) -> int:
        names = self._scan(_glob_escape(self._key(namespace, "")) + "*")
        deleted = 0
        for start in range(0, len(names), _UNLINK_BATCH):
            deleted += self._call(self._client.unlink, *names[start : start + _UNLINK_BATCH])
        return deleted

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def _key(self, namespace: str, key: str) -> str:
        namespace = namespace.replace("%", "%25").replace(":", "%3A")
        return f"{self.prefix}:{namespace}:{key}"

    def _scan(self, pattern: str) -> list[str]:
        return self._call(lambda: list(self._client.scan_iter(match=pattern, count=1000)))

    def _call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one Redis command, turning its failures into MemoryStoreError."""
        try:
            return fn(*args, **kwargs)
        except self._unreachable as e:
            raise MemoryStoreError(
                f"cannot reach Redis at {self._shown_url}: {e}. Start "
                "redis-server there, or pass the URL of a running one to RedisStore."
            ) from e
        except self._failed as e:
            raise MemoryStoreError(
                f"Redis at {self._shown_url} failed: {type(e).__name__}: {e}"
            ) from e


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return _GLOB.sub(r"\\\1", text)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
