"""API keys: created once (the plaintext is shown then and never stored), listed,
revoked and verified; only ``sha256(secret)`` is kept.

A key reads ``agl_<id>_<secret>``: `id` (16 hex characters) finds the record,
`secret` (32 random bytes, URL-safe base64) proves it. The secret is high-entropy,
so a fast hash is the standard choice (as GitHub and Stripe tokens do); hashes
are compared with :func:`hmac.compare_digest`, and an unknown id is checked
against a dummy hash, so a wrong key costs the same whether or not its id exists.

Stores: :class:`SQLiteKeyStore` (``<workspace>/gateway.sqlite`` in WAL mode, shared
by the workers of one machine) and :class:`RedisKeyStore` (several machines);
:func:`open_key_store` picks one from the gateway config.

Scopes: ``admin`` (every route), ``agents:*`` or ``agents:<name>`` (run that agent
and read or resume one's own runs of it), ``runs:read`` (read any run),
``metrics`` (``GET /metrics``).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentlab.errors import UserError
from agentlab.serve.gateway.quotas import Limits
from agentlab.serve.gateway.redis_clients import sync_redis
from agentlab.serve.gateway.shared_state import wal_connection

__all__ = [
    "ApiKey",
    "KeyStore",
    "RedisKeyStore",
    "SQLiteKeyStore",
    "UnknownKeyError",
    "open_key_store",
]

PREFIX = "agl"
_KEY_RE = re.compile(r"agl_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_SCOPE_RE = re.compile(r"admin|metrics|runs:read|agents:(\*|[A-Za-z0-9_.-]+)")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class UnknownKeyError(UserError):
    """No key has that id."""


class ApiKey(BaseModel):
    """A key's record (never its secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    owner: str = Field(min_length=1, description="The client the key belongs to.")
    scopes: tuple[str, ...] = Field(min_length=1)
    groups: tuple[str, ...] = ()
    limits: Limits = Field(default_factory=Limits)
    created_at: datetime
    revoked_at: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        for scope in scopes:
            if not _SCOPE_RE.fullmatch(scope):
                raise ValueError(
                    f"unknown scope {scope!r}: use admin, metrics, runs:read, agents:* or "
                    "agents:<agent name>"
                )
        return scopes

    def allows(self, scope: str) -> bool:
        """Whether the key has `scope` (``admin`` has every scope; ``agents:*``
        every ``agents:<name>``)."""
        return (
            scope in self.scopes
            or "admin" in self.scopes
            or (scope.startswith("agents:") and "agents:*" in self.scopes)
        )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_key(
    owner: str,
    scopes: list[str] | tuple[str, ...],
    groups: list[str] | tuple[str, ...],
    limits: Limits | None,
) -> tuple[ApiKey, str, str]:
    """A new record, its plaintext key and the hash to store."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    try:
        record = ApiKey(
            id=key_id,
            owner=owner,
            scopes=tuple(scopes),
            groups=tuple(groups),
            limits=limits or Limits(),
            created_at=datetime.now(UTC),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise UserError(f"cannot create the key: {problems}") from None
    return record, f"{PREFIX}_{key_id}_{secret}", _hash(secret)


def _parse(key: str) -> tuple[str, str] | None:
    found = _KEY_RE.fullmatch(key)
    return (found.group(1), found.group(2)) if found else None


def _check(secret: str, stored: str | None) -> bool:
    """Constant-time: the same work whether `stored` is None (unknown id) or not."""
    return hmac.compare_digest(_hash(secret), stored or _DUMMY_HASH) and stored is not None


def _record(row: dict[str, Any]) -> ApiKey:
    revoked = row.get("revoked_at")
    return ApiKey(
        id=row["id"],
        owner=row["owner"],
        scopes=tuple(json.loads(row["scopes"])),
        groups=tuple(json.loads(row["groups"])),
        limits=Limits.model_validate_json(row["limits"]),
        created_at=datetime.fromtimestamp(float(row["created_at"]), UTC),
        revoked_at=None if revoked in (None, "") else datetime.fromtimestamp(float(revoked), UTC),
    )


def _row(record: ApiKey, key_hash: str) -> dict[str, Any]:
    return {
        "id": record.id,
        "hash": key_hash,
        "owner": record.owner,
        "scopes": json.dumps(list(record.scopes)),
        "groups": json.dumps(list(record.groups)),
        "limits": record.limits.model_dump_json(),
        "created_at": record.created_at.timestamp(),
    }


class KeyStore(ABC):
    """Where keys live (see the module docstring): a store keeps rows of one shape
    and implements four row operations; creating, listing, revoking and verifying
    are the same for every store."""

    def create(
        self,
        owner: str,
        scopes: list[str] | tuple[str, ...],
        *,
        groups: list[str] | tuple[str, ...] = (),
        limits: Limits | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key: its record and the plaintext key (shown this once)."""
        record, key, key_hash = _new_key(owner, scopes, groups, limits)
        self._insert(_row(record, key_hash))
        return record, key

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        return sorted((_record(r) for r in self._rows()), key=lambda r: (r.created_at, r.id))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent: the first revocation's time stays); raises
        :class:`UnknownKeyError`."""
        self._mark_revoked(key_id, time.time())
        row = self._get(key_id)
        if row is None:
            raise UnknownKeyError(f"no API key has the id {key_id!r}; see `agentlab keys list`")
        return _record(row)

    def verify(self, key: str) -> ApiKey | None:
        """The key's record if `key` is a valid, unrevoked key; else None."""
        key_id, secret = _parse(key) or ("", "")
        row = self._get(key_id)
        if not _check(secret, row["hash"] if row else None) or row is None:
            return None
        record = _record(row)
        return None if record.revoked_at is not None else record

    @abstractmethod
    def _insert(self, row: dict[str, Any]) -> None: ...

    @abstractmethod
    def _get(self, key_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def _rows(self) -> builtins.list[dict[str, Any]]: ...

    @abstractmethod
    def _mark_revoked(self, key_id: str, at: float) -> None:
        """Set ``revoked_at`` unless it is set (nothing for an unknown id)."""


class SQLiteKeyStore(KeyStore):
    """Keys in a SQLite file (WAL: the workers of one machine read it at once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connection().execute(
            "CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL,"
            " owner TEXT NOT NULL, scopes TEXT NOT NULL, groups TEXT NOT NULL,"
            " limits TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL)"
        )

    def _connection(self) -> sqlite3.Connection:
        return wal_connection(self.path, self._local)

    def _insert(self, row: dict[str, Any]) -> None:
        self._connection().execute(
            f"INSERT INTO api_keys ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )

    def _get(self, key_id: str) -> dict[str, Any] | None:
        found = (
            self._connection().execute("SELECT * FROM api_keys WHERE id = ?", [key_id]).fetchone()
        )
        return dict(found) if found is not None else None

    def _rows(self) -> builtins.list[dict[str, Any]]:
        return [dict(r) for r in self._connection().execute("SELECT * FROM api_keys")]

    def _mark_revoked(self, key_id: str, at: float) -> None:
        self._connection().execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?", [at, key_id]
        )


class RedisKeyStore(KeyStore):
    """Keys on Redis (several machines): a hash per key, a set of ids."""

    def __init__(self, url: str, *, prefix: str = "agentlab:gateway:keys") -> None:
        self._redis = sync_redis(url, decode_responses=True)
        self._prefix = prefix

    def _name(self, key_id: str) -> str:
        return f"{self._prefix}:{key_id}"

    def _insert(self, row: dict[str, Any]) -> None:
        pipe = self._redis.pipeline()
        pipe.hset(self._name(row["id"]), mapping=row)  # type: ignore[arg-type]
        pipe.sadd(self._prefix, row["id"])
        pipe.execute()

    def _get(self, key_id: str) -> dict[str, Any] | None:
        row: dict[str, Any] = self._redis.hgetall(self._name(key_id)) if key_id else {}  # type: ignore[assignment]
        return row or None

    def _rows(self) -> builtins.list[dict[str, Any]]:
        pipe = self._redis.pipeline()
        for key_id in self._redis.smembers(self._prefix):  # type: ignore[union-attr,unused-ignore]
            pipe.hgetall(self._name(str(key_id)))
        return [row for row in pipe.execute() if row]

    def _mark_revoked(self, key_id: str, at: float) -> None:
        if self._redis.exists(self._name(key_id)):
            self._redis.hsetnx(self._name(key_id), "revoked_at", at)


def open_key_store(workspace: Path, redis_url: str | None = None) -> KeyStore:
    """Redis when `redis_url` is set, else ``<workspace>/gateway.sqlite``."""
    if redis_url:
        return RedisKeyStore(redis_url)
    return SQLiteKeyStore(workspace / "gateway.sqlite")
