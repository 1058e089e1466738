"""Short-term memory: a key-value store with per-key expiry.

Session state, intermediate results and recent tool outputs live here,
namespaced per agent and session (``"<agent>/<session>"``). Values are JSON
text: pydantic models or anything pydantic can serialize to JSON, never pickles.
A key set with a ``ttl`` disappears once it expires: reads ignore it at once and
a background cleanup (or Redis itself) deletes it later.

:class:`ShortTermStore` is the backend interface; :class:`EmbeddedStore`
(SQLite, no server, safe with several processes) is the default and
:class:`~agentlab.memory.redis_store.RedisStore` the Redis backend. Agents use a
:class:`SessionMemory`, the typed view of one namespace::

    store = EmbeddedStore.in_workspace()
    memory = store.session("support", "session-1")
    memory.set("order", order, ttl=600)
    order = memory.get("order", type=Order)
"""

from __future__ import annotations

import builtins
import functools
import logging
import math
import os
import re
import sqlite3
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import pydantic
import pydantic_core

from agentlab.errors import MemoryStoreError, UserError
from agentlab.workspace import resolve_workspace

__all__ = ["MAX_NAME_LENGTH", "EmbeddedStore", "KeyAccess", "SessionMemory", "ShortTermStore"]

log = logging.getLogger("agentlab.memory")

T = TypeVar("T")

MAX_NAME_LENGTH = 512
"""The longest agent name, session name or key, in characters."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class KeyAccess:
    """One access to short-term memory, as the run loop records it in the trace.

    `hit` is whether a ``get`` found a live value and whether a ``delete`` removed
    one; it is None for ``set``. `ttl` is the expiry a ``set`` gave, in seconds.
    """

    op: Literal["get", "set", "delete"]
    namespace: str
    key: str
    hit: bool | None
    ttl: float | None


class ShortTermStore(ABC):
    """A key-value store of JSON text with per-key expiry, in namespaces.

    The primitives below take a namespace and key as they are; validation,
    serialization and typing happen in :class:`SessionMemory`, which agents use.
    A store is a context manager that closes itself.
    """

    @abstractmethod
    def get_raw(self, namespace: str, key: str) -> str | None:
        """The value of `key`, or None if it is missing or expired."""

    @abstractmethod
    def set_raw(self, namespace: str, key: str, value: str, ttl: float | None) -> None:
        """Store `value`, expiring after `ttl` seconds (never if None); replaces
        the value and the expiry of an existing key."""

    @abstractmethod
    def delete(self, namespace: str, key: str) -> bool:
        """Delete `key`; whether it existed (and had not expired)."""

    @abstractmethod
    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        """The live keys of `namespace` that start with `prefix`, sorted."""

    @abstractmethod
    def ttl(self, namespace: str, key: str) -> float | None:
        """Seconds until `key` expires; None both if it never expires and if it
        is missing (use :meth:`get_raw` or :meth:`keys` to tell them apart)."""

    @abstractmethod
    def clear(self, namespace: str) -> int:
        """Delete every key of `namespace`; how many live keys there were."""

    def purge_expired(self) -> int:
        """Delete expired keys now; how many. Backends that expire keys on their
        own (Redis) return 0."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections and background work."""

    def session(
        self,
        agent: str,
        session: str,
        observer: Callable[[KeyAccess], None] | None = None,
    ) -> SessionMemory:
        """The typed view of namespace ``"<agent>/<session>"``; `observer` is
        called with a :class:`KeyAccess` for every get, set and delete."""
        return SessionMemory(self, agent, session, observer)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SessionMemory:
    """One agent session's short-term memory: typed values under string keys.

    ``set`` stores a pydantic model or any value pydantic can serialize to JSON
    (dicts, lists, str, numbers, bool, None, dataclasses, datetimes, ...).
    ``get`` returns the parsed JSON, or with ``type=`` a value pydantic has
    validated as that type (a model class, ``list[int]``, ...).
    """

    __slots__ = ("agent", "namespace", "observer", "session", "store")

    def __init__(
        self,
        store: ShortTermStore,
        agent: str,
        session: str,
        observer: Callable[[KeyAccess], None] | None = None,
    ) -> None:
        _check_name("agent name", agent)
        _check_name("session name", session)
        if "/" in agent:
            raise UserError(
                f"agent name {agent!r} contains '/', which separates agent and session "
                "in the memory namespace; use another character such as '-' or '.'"
            )
        self.store = store
        self.agent = agent
        self.session = session
        self.namespace = f"{agent}/{session}"
        self.observer = observer

    def __repr__(self) -> str:
        return f"SessionMemory(namespace={self.namespace!r}, store={self.store!r})"

    def get(self, key: str, type: type[T] | Any = None, default: Any = None) -> Any:
        """The value of `key` (validated as `type` if given), or `default` if it is
        missing or expired. Raises MemoryStoreError if the stored value is not a
        valid `type`."""
        _check_name("key", key)
        raw = self.store.get_raw(self.namespace, key)
        if self.observer is not None:
            self.observer(KeyAccess("get", self.namespace, key, raw is not None, None))
        if raw is None:
            return default
        try:
            if type is None:
                return pydantic_core.from_json(raw)
            if isinstance(type, builtins.type) and issubclass(type, pydantic.BaseModel):
                return type.model_validate_json(raw)
            return _adapter(type).validate_json(raw)
        except ValueError as e:  # pydantic's ValidationError is one too
            expected = "JSON" if type is None else _type_name(type)
            raise MemoryStoreError(
                f"short-term value {key!r} in {self.namespace!r} is not valid {expected}: {e}"
            ) from e

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store `value` under `key`, expiring after `ttl` seconds (never if None)."""
        _check_name("key", key)
        if ttl is not None and (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise UserError(
                f"ttl for short-term key {key!r} must be a positive number of seconds, "
                f"or None for no expiry; got {ttl!r}"
            )
        self.store.set_raw(self.namespace, key, _dump(key, value), ttl)
        if self.observer is not None:
            self.observer(KeyAccess("set", self.namespace, key, None, ttl))

    def delete(self, key: str) -> bool:
        """Delete `key`; whether it existed (and had not expired)."""
        _check_name("key", key)
        deleted = self.store.delete(self.namespace, key)
        if self.observer is not None:
            self.observer(KeyAccess("delete", self.namespace, key, deleted, None))
        return deleted

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys that start with `prefix`, sorted."""
        if not isinstance(prefix, str):
            raise UserError(f"a key prefix must be a str, got {type(prefix).__name__}")
        return self.store.keys(self.namespace, prefix)

    def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires; None if it never expires or is missing."""
        _check_name("key", key)
        return self.store.ttl(self.namespace, key)

    def clear(self) -> int:
        """Delete every key of this session; how many live keys there were."""
        return self.store.clear(self.namespace)


def _check_name(kind: str, name: object) -> None:
    if not isinstance(name, str):
        raise UserError(f"a short-term memory {kind} must be a str, got {type(name).__name__}")
    if not name:
        raise UserError(f"a short-term memory {kind} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise UserError(
            f"short-term memory {kind} {name[:40]!r}... is {len(name)} characters long; "
            f"the limit is {MAX_NAME_LENGTH}: use a shorter name, or a hash of a long one"
        )
    if _CONTROL.search(name):
        raise UserError(
            f"short-term memory {kind} {name!r} contains control characters "
            "(NUL, newline, tab, ...); use printable characters only"
        )


def _dump(key: str, value: Any) -> str:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError as e:
        raise UserError(
            f"cannot store a {type(value).__name__} under short-term key {key!r}: values "
            "are stored as JSON, so use a pydantic model or JSON types (dict, list, str, "
            f"int, float, bool, None). pydantic said: {e}"
        ) from e


@functools.lru_cache(maxsize=256)
def _cached_adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


def _adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    try:
        try:
            return _cached_adapter(tp)
        except TypeError:  # an unhashable type expression
            return pydantic.TypeAdapter(tp)
    except pydantic.PydanticUserError as e:
        raise UserError(f"type={_type_name(tp)} is not a type pydantic can validate: {e}") from e


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp)


class EmbeddedStore(ShortTermStore):
    """Short-term memory in a SQLite file: no server, safe with several processes.

    Every operation commits on its own (a set is visible to other processes when
    it returns). The file uses write-ahead logging, so readers never wait for a
    writer and writers wait up to ``busy_timeout`` seconds for each other. Each
    thread has its own connection (closed when the thread ends), and a forked
    child opens its own. Expired keys are invisible at once; a daemon thread,
    started on the first set with a ttl, deletes them every `cleanup_interval`
    seconds (None: only when :meth:`purge_expired` is called).

    :meth:`close` stops the cleanup and closes the connections; using the store
    afterwards opens new ones.
    """

    FILENAME = "short_term.sqlite3"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        cleanup_interval: float | None = 60.0,
        busy_timeout: float = 5.0,
    ) -> None:
        if cleanup_interval is not None and not cleanup_interval > 0:
            raise UserError(
                f"cleanup_interval must be a positive number of seconds or None, "
                f"got {cleanup_interval!r}"
            )
        self.path = (
            Path(path).expanduser().absolute()
            if path is not None
            else resolve_workspace(None) / "memory" / self.FILENAME
        )
        self.cleanup_interval = cleanup_interval
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._reset()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._error(e) from e
        self._create_schema()
        _STORES.add(self)

    @classmethod
    def in_workspace(
        cls,
        workspace: str | os.PathLike[str] | None = None,
        *,
        cleanup_interval: float | None = 60.0,
    ) -> EmbeddedStore:
        """The store at ``WORKSPACE/memory/short_term.sqlite3``."""
        path = resolve_workspace(workspace) / "memory" / cls.FILENAME
        return cls(path, cleanup_interval=cleanup_interval)

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.path)!r})"

    def get_raw(self, namespace: str, key: str) -> str | None:
        row = self._run(
            "SELECT value FROM kv WHERE namespace = ? AND key = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (namespace, key, time.time()),
        ).fetchone()
        return None if row is None else str(row[0])

    def set_raw(self, namespace: str, key: str, value: str, ttl: float | None) -> None:
        expires_at = None if ttl is None else time.time() + ttl
        self._run(
            "INSERT OR REPLACE INTO kv (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)",
            (namespace, key, value, expires_at),
        )
        if ttl is not None and self._cleaner is None and self.cleanup_interval is not None:
            self._start_cleaner(self.cleanup_interval)

    def delete(self, namespace: str, key: str) -> bool:
        cursor = self._run(
            "DELETE FROM kv WHERE namespace = ? AND key = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (namespace, key, time.time()),
        )
        return cursor.rowcount > 0

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        rows = self._run(
            "SELECT key FROM kv WHERE namespace = ? AND substr(key, 1, length(?)) = ?"
            " AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
            (namespace, prefix, prefix, time.time()),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def ttl(self, namespace: str, key: str) -> float | None:
        now = time.time()
        row = self._run(
            "SELECT expires_at FROM kv WHERE namespace = ? AND key = ? AND expires_at > ?",
            (namespace, key, now),
        ).fetchone()
        return None if row is None else float(row[0]) - now

    def clear(self, namespace: str) -> int:
        now = time.time()
        live = self._run(
            "DELETE FROM kv WHERE namespace = ? AND (expires_at IS NULL OR expires_at > ?)",
            (namespace, now),
        ).rowcount
        self._run("DELETE FROM kv WHERE namespace = ? AND expires_at <= ?", (namespace, now))
        return live

    def purge_expired(self) -> int:
        return self._run("DELETE FROM kv WHERE expires_at <= ?", (time.time(),)).rowcount

    def close(self) -> None:
        with self._lock:
            cleaner, stop, closers = self._cleaner, self._stop, self._closers
            self._reset()
        stop.set()
        if cleaner is not None:
            cleaner.join(timeout=10)
        for close_connection in closers:
            close_connection()

    def _reset(self) -> None:
        """Forget connections and the cleanup thread (they are closed elsewhere, or
        belong to the parent process after a fork)."""
        self._local = threading.local()
        self._closers: list[weakref.finalize[[], _Owner]] = []
        self._cleaner: threading.Thread | None = None
        self._stop = threading.Event()

    def _run(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            conn = self._local.conn
        except AttributeError:
            conn = self._connect()
        try:
            return conn.execute(sql, params)
        except sqlite3.Error as e:
            raise self._error(e) from e

    def _connect(self) -> sqlite3.Connection:
        try:
            # Autocommit; each thread uses only its own connection, but close()
            # closes them all from whichever thread calls it.
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise self._error(e) from e
        # Only the thread-local refers to `owner`, so it goes when the thread ends
        # and the finalizer closes the connection (a reference cycle inside
        # sqlite3 would otherwise keep it open until the garbage collector runs).
        owner = _Owner()
        self._local.conn, self._local.owner = conn, owner
        with self._lock:
            self._closers = [closer for closer in self._closers if closer.alive]
            self._closers.append(weakref.finalize(owner, conn.close))
        self._run("PRAGMA synchronous = NORMAL", ())
        return conn

    def _create_schema(self) -> None:
        # No index on expires_at: it would write two more pages per set and halve
        # the set rate, while purge_expired scans the table only once a minute.
        self._run("PRAGMA journal_mode = WAL", ())
        self._run(
            "CREATE TABLE IF NOT EXISTS kv (namespace TEXT NOT NULL, key TEXT NOT NULL,"
            " value TEXT NOT NULL, expires_at REAL, PRIMARY KEY (namespace, key)) WITHOUT ROWID",
            (),
        )

    def _start_cleaner(self, interval: float) -> None:
        with self._lock:
            if self._cleaner is not None:
                return
            self._cleaner = threading.Thread(
                target=_clean_periodically,
                args=(weakref.ref(self), self._stop, interval),
                name=f"agentlab-short-term-cleanup:{self.path}",
                daemon=True,
            )
            self._cleaner.start()

    def _error(self, e: Exception) -> MemoryStoreError:
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            advice = (
                f"another connection held it for more than busy_timeout={self.busy_timeout} s; "
                "retry, or pass a larger busy_timeout"
            )
        else:
            advice = (
                "it must be a writable SQLite file in a writable directory; if it is "
                "damaged or not a SQLite file, move it away (it only holds short-term "
                "memory) or pass another path"
            )
        return MemoryStoreError(f"short-term store {str(self.path)!r} failed: {e}. {advice}.")


class _Owner:
    """Stands for a thread's connection in a weakref.finalize (a sqlite3
    connection cannot be weakly referenced)."""

    __slots__ = ("__weakref__",)


def _clean_periodically(
    ref: weakref.ReferenceType[EmbeddedStore], stop: threading.Event, interval: float
) -> None:
    """Purge expired keys every `interval` seconds until `stop` is set or the store
    is garbage-collected."""
    while not stop.wait(interval):
        store = ref()
        if store is None:
            return
        try:
            store.purge_expired()
        except MemoryStoreError as e:  # e.g. locked for too long: try again next time
            log.warning("short-term cleanup failed: %s", e)
        del store


_STORES: weakref.WeakSet[EmbeddedStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # SQLite connections must not be used across fork: the child opens its own.
    for store in list(_STORES):
        for closer in store._closers:
            closer.detach()
        store._lock = threading.Lock()
        store._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
