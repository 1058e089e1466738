"""Authentication: the API key of a request, as a FastAPI dependency.

The key comes in ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. A
missing, malformed, unknown or revoked key is a 401 with one and the same body
(and the same work: see :mod:`agentlab.serve.gateway.keys`), so an answer never
tells whether a key id exists; a valid key without the scope a route needs is a
403.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's signature.
import asyncio
import hashlib
import time
from typing import Any

from starlette.requests import Request

from agentlab.serve.gateway.errors import ApiError
from agentlab.serve.gateway.keys import ApiKey, KeyStore

__all__ = ["PUBLIC_PATHS", "Authenticator", "needed_scope", "require"]

PUBLIC_PATHS = frozenset({"/healthz"})
"""Routes that need no key."""

UNAUTHORIZED = (
    "Missing or invalid API key: send 'Authorization: Bearer <key>' (or 'X-API-Key: "
    "<key>') with a valid, unrevoked key from the operator of this service."
)


def _presented(headers: Any) -> str | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return headers.get("x-api-key")


class Authenticator:
    """The dependency: the request's verified :class:`ApiKey`, also put in
    ``request.state.key`` (for the usage record); raises 401.

    A worker remembers what it verified (valid or not) for `cache_ttl_s` seconds, so
    a busy key costs the key store one lookup per interval, not one per request; a
    key revoked through another worker is refused here within that time (0: no
    cache)."""

    MAX_CACHED = 10_000

    def __init__(self, store: KeyStore, *, cache_ttl_s: float = 0.0) -> None:
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[bytes, tuple[float, ApiKey | None]] = {}

    def forget(self) -> None:
        """Drop what this worker remembers (after a key is revoked through it)."""
        self._cache.clear()

    async def _verify(self, presented: str) -> ApiKey | None:
        """The key `presented` stands for; the store is asked in a thread, so a slow
        key store (Redis stalled, SQLite busy) holds up this request, not the worker."""
        if self.cache_ttl_s <= 0:
            return await asyncio.to_thread(self.store.verify, presented)
        digest = hashlib.sha256(presented.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        key = await asyncio.to_thread(self.store.verify, presented)
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self.cache_ttl_s, key)
        return key

    async def __call__(self, request: Request) -> ApiKey:
        verified: ApiKey | None = getattr(request.state, "key", None)  # by guard()
        if verified is not None:
            return verified
        presented = _presented(request.headers)
        key = await self._verify(presented) if presented else None
        if key is None:
            raise ApiError(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        request.state.key = key
        return key

    async def guard(self, request: Request) -> None:
        """401, then 403, before a route reads its body (so a request without a valid
        key never learns more than that, whatever it sends); ``/healthz`` is public."""
        path = getattr(request.scope.get("route"), "path", "")
        if path in PUBLIC_PATHS:
            return
        key = await self(request)
        needed = needed_scope(path, request.path_params, key)
        if needed is not None:
            require(key, needed)


def needed_scope(path: str, params: Any, key: ApiKey) -> str | None:
    """The scope the route `path` needs before anything else (None: any valid key;
    the handler then checks what it serves, e.g. a run's owner)."""
    if path.startswith("/v1/admin/"):
        return "admin"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/v1/agents/{agent}/"):
        return f"agents:{params['agent']}"
    if path.startswith("/v1/runs/") and not any(s.startswith("agents:") for s in key.scopes):
        return "runs:read"  # a key that may run no agent reads no run but with it
    return None


def require(key: ApiKey, scope: str) -> None:
    """403 unless `key` has `scope`."""
    if not key.allows(scope):
        raise ApiError(
            403,
            f"This API key (owner {key.owner!r}) lacks the scope {scope!r} this request "
            "needs; ask the operator for a key with it.",
        )
