"""The gateway's mutable shared state: A/B weights and feature flags, with an audit
log of every change.

State is a set of named JSON documents (``weights/<agent>``, ``flag/<name>``).
Every change goes through :meth:`SharedState.put`, which writes the document and
an :class:`AuditEntry` (who, when, before, after) in one atomic step.

Stores: :class:`SQLiteState` (``<workspace>/gateway.sqlite`` in WAL mode, shared
by the workers of one machine) and :class:`RedisState` (several machines);
:func:`open_shared_state` picks one like the key store does.

**Freshness.** The request path reads through a cache of the whole state that
lives `ttl_s` seconds (1 s by default): a change made through one worker is seen
by every other worker (and machine) within `ttl_s`, without a restart; the worker
that made it sees it at once. One read of the state per worker per `ttl_s`,
whatever the traffic, made in a thread (:meth:`SharedState.fresh`) so a slow
store never stalls a worker's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from agentlab.serve.gateway.redis_clients import sync_redis

__all__ = [
    "AuditEntry",
    "RedisState",
    "SQLiteState",
    "SharedState",
    "open_shared_state",
    "wal_connection",
]

DEFAULT_TTL_S = 1.0
AUDIT_KEEP = 10_000
"""Redis keeps the newest this many audit entries (SQLite keeps them all)."""


class AuditEntry(BaseModel):
    """One change of the shared state."""

    model_config = ConfigDict(frozen=True)

    at: float
    who: str
    action: str
    name: str
    before: Any = None
    after: Any = None


class SharedState(ABC):
    """Named JSON documents shared by every worker, read through a `ttl_s` cache."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._cache: dict[str, Any] | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        """Every document, at most `ttl_s` old."""
        cache = self._cache
        if cache is not None and not self._expired():  # no lock: a read may be under way
            return cache
        with self._lock:
            if self._cache is None or self._expired():
                self._cache = {name: json.loads(v) for name, v in self._read_all().items()}
                self._read_at = time.monotonic()
            return self._cache

    async def fresh(self) -> None:
        """Read the state again, in a thread, if the cache has expired: the request
        path's reads that follow hit the cache, and a slow store (Redis stalled)
        holds up the request that found it expired, not the worker's event loop."""
        if self._cache is None or self._expired():
            await asyncio.to_thread(self.snapshot)

    def _expired(self) -> bool:
        return time.monotonic() - self._read_at >= self.ttl_s

    def get(self, name: str) -> Any:
        """The document `name` (None when there is none)."""
        return self.snapshot().get(name)

    def items(self, prefix: str) -> dict[str, Any]:
        """The documents whose name starts with `prefix`, by the rest of their name."""
        return {n[len(prefix) :]: v for n, v in self.snapshot().items() if n.startswith(prefix)}

    def put(self, name: str, value: Any, *, who: str, action: str) -> AuditEntry:
        """Set document `name` to `value` (None deletes it) and audit the change."""
        after = None if value is None else json.dumps(value, sort_keys=True)
        at = time.time()
        before = self._write(name, after, at=at, who=who, action=action)
        with self._lock:
            self._cache = None  # this worker sees its own change at once
        return AuditEntry(
            at=at,
            who=who,
            action=action,
            name=name,
            before=None if before is None else json.loads(before),
            after=value,
        )

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` changes, newest first."""
        return [_entry(row) for row in self._audit_rows(limit)]

    @abstractmethod
    def _read_all(self) -> dict[str, str]: ...

    @abstractmethod
    def _write(
        self, name: str, after: str | None, *, at: float, who: str, action: str
    ) -> str | None:
        """Write (or delete) and append the audit row atomically; the previous JSON."""

    @abstractmethod
    def _audit_rows(self, limit: int) -> list[dict[str, Any]]: ...


def _entry(row: dict[str, Any]) -> AuditEntry:
    before, after = row.get("before"), row.get("after")
    return AuditEntry(
        at=float(row["at"]),
        who=row["who"],
        action=row["action"],
        name=row["name"],
        before=None if before in (None, "") else json.loads(before),
        after=None if after in (None, "") else json.loads(after),
    )


def wal_connection(path: Path, local: threading.local) -> sqlite3.Connection:
    """This thread's connection (kept in `local`) to the SQLite file `path` in WAL
    mode, autocommitting, rows as :class:`sqlite3.Row`; made on first use."""
    con: sqlite3.Connection | None = getattr(local, "con", None)
    if con is None:  # one per thread: sqlite3 connections are not shared
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=10, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")
        local.con = con
    return con


class SQLiteState(SharedState):
    """Shared state in a SQLite file (WAL: the workers of one machine share it)."""

    def __init__(self, path: str | Path, ttl_s: float = DEFAULT_TTL_S) -> None:
        super().__init__(ttl_s)
        self.path = Path(path)
        self._local = threading.local()
        con = self._connection()
        con.execute(
            "CREATE TABLE IF NOT EXISTS gateway_state (name TEXT PRIMARY KEY,"
            " value TEXT NOT NULL, updated_at REAL NOT NULL)"
        )
        con.execute(
            "CREATE TABLE IF NOT EXISTS gateway_audit (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " at REAL NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, name TEXT NOT NULL,"
            " before TEXT, after TEXT)"
        )

    def _connection(self) -> sqlite3.Connection:
        return wal_connection(self.path, self._local)

    def _read_all(self) -> dict[str, str]:
        return {
            r["name"]: r["value"]
            for r in self._connection().execute("SELECT name, value FROM gateway_state")
        }

    def _write(
        self, name: str, after: str | None, *, at: float, who: str, action: str
    ) -> str | None:
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")  # the read of `before` and both writes: one step
        try:
            row = con.execute("SELECT value FROM gateway_state WHERE name = ?", [name]).fetchone()
            before = row["value"] if row is not None else None
            if after is None:
                con.execute("DELETE FROM gateway_state WHERE name = ?", [name])
            else:
                con.execute(
                    "INSERT INTO gateway_state (name, value, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value, "
                    "updated_at = excluded.updated_at",
                    [name, after, at],
                )
            con.execute(
                "INSERT INTO gateway_audit (at, who, action, name, before, after) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [at, who, action, name, before, after],
            )
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return before

    def _audit_rows(self, limit: int) -> list[dict[str, Any]]:
        rows = self._connection().execute(
            "SELECT * FROM gateway_audit ORDER BY id DESC LIMIT ?", [limit]
        )
        return [dict(r) for r in rows]


# KEYS: state hash, audit list. ARGV: name, after ('' deletes), at, who, action, keep.
_PUT = """
local before = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local entry = cjson.encode({at = ARGV[3], who = ARGV[4], action = ARGV[5], name = ARGV[1],
  before = before or '', after = ARGV[2]})
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[6]) - 1)
return before
"""


class RedisState(SharedState):
    """Shared state on Redis (several machines): a hash of documents and a capped
    audit list, changed together by one Lua script."""

    def __init__(
        self, url: str, *, prefix: str = "agentlab:gateway", ttl_s: float = DEFAULT_TTL_S
    ) -> None:
        super().__init__(ttl_s)
        self._redis = sync_redis(url, decode_responses=True)
        self._keys = [f"{prefix}:state", f"{prefix}:audit"]
        self._put = self._redis.register_script(_PUT)

    def _read_all(self) -> dict[str, str]:
        found: dict[str, str] = self._redis.hgetall(self._keys[0])  # type: ignore[assignment]
        return found

    def _write(
        self, name: str, after: str | None, *, at: float, who: str, action: str
    ) -> str | None:
        before = self._put(keys=self._keys, args=[name, after or "", at, who, action, AUDIT_KEEP])
        return str(before) if before else None

    def _audit_rows(self, limit: int) -> list[dict[str, Any]]:
        raw: list[str] = self._redis.lrange(self._keys[1], 0, limit - 1)  # type: ignore[assignment]
        return [json.loads(item) for item in raw]


def open_shared_state(
    workspace: Path, redis_url: str | None = None, *, ttl_s: float = DEFAULT_TTL_S
) -> SharedState:
    """Redis when `redis_url` is set, else ``<workspace>/gateway.sqlite``."""
    if redis_url:
        return RedisState(redis_url, ttl_s=ttl_s)
    return SQLiteState(workspace / "gateway.sqlite", ttl_s=ttl_s)
