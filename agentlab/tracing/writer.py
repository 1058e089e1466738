"""Trace writers: every process appends events to its own segment files.

A DuckDB file can be opened by one process only, and agents run in many
processes at once, so writers never touch DuckDB. Each writer appends one JSON
line per event (secrets redacted, readable by its owner only) to
``WORKSPACE/traces/segments/<pid>-<random>-<n>.jsonl`` and holds an exclusive
``flock`` on that file while it writes to it: the trace store ingests the lines
into DuckDB and can tell a live segment (locked) from one whose writer let go of
it (unlocked), then deletes it. Past ``ROTATE_BYTES`` a writer starts segment
``n + 1`` (locked before the last one is released), so a long-lived process does
not grow one file forever; ``<pid>-<random>`` names the writer.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import re
import secrets
import threading
import weakref
from pathlib import Path

from agentlab.errors import TraceStoreError
from agentlab.events import Event, dump_event
from agentlab.redact import default_redactor
from agentlab.workspace import resolve_workspace

__all__ = ["TraceWriter", "close_writers", "get_writer", "segments_dir", "writer_of"]

log = logging.getLogger("agentlab.tracing")

SEGMENT_SUFFIX = ".jsonl"
CREATING_SUFFIX = ".creating"
_FLUSH_BYTES = 1 << 20  # a buffered writer writes out once it holds this much
ROTATE_BYTES = 64 << 20  # a writer starts a new segment once its segment holds this much
WRITER_PATTERN = r"^[0-9]+-[0-9a-f]+"  # the writer part of a segment's name (SQL and Python)


def writer_of(segment: str) -> str:
    """The writer that wrote segment file `segment` (its name's ``<pid>-<random>``)."""
    found = re.match(WRITER_PATTERN, segment)
    return found.group(0) if found else segment


def segments_dir(workspace: Path) -> Path:
    """The directory holding the segment files of `workspace`."""
    return workspace / "traces" / "segments"


class TraceWriter:
    """Appends trace events to this process's own segment file, one JSON line each.

    ``durable=True`` (the default) writes every event with a single ``os.write``:
    once :meth:`emit` returns, the event survives the process being killed.
    ``fsync=True`` also flushes it to the disk (survives power loss; much slower).
    ``durable=False`` keeps events in memory until :meth:`flush`, :meth:`close`,
    interpreter exit or 1 MiB is buffered: faster, but a crash loses the tail.

    Prefer :func:`get_writer` (one shared writer per process and workspace). The
    writer is thread-safe; a forked child transparently starts its own segment.
    After :meth:`close`, the next event opens a new segment.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str] | None = None,
        *,
        durable: bool = True,
        fsync: bool = False,
    ) -> None:
        self.workspace = resolve_workspace(workspace)
        self.durable = durable or fsync
        self.fsync = fsync
        self._dir = segments_dir(self.workspace)
        self._lock = threading.Lock()
        self._fd = -1
        self._path: Path | None = None
        self._name = ""  # <pid>-<random>: this writer, until it is closed
        self._seq = 0  # the current segment's number
        self._size = 0  # bytes in the current segment
        self._buffer: list[bytes] = []
        self._buffered = 0
        _LIVE.add(self)
        with self._lock:
            self._open()

    @property
    def path(self) -> Path | None:
        """The segment file currently written, or None while closed."""
        return self._path

    def emit(self, event: Event) -> None:
        """Append one event (see the class docstring for when it is on disk).

        Secrets are redacted first (:mod:`agentlab.redact`): API keys, tokens, and
        the values of fields named like password, secret or api_key never reach disk.
        """
        self.emit_record(dump_event(default_redactor().redact_event(event)) + b"\n")

    def emit_record(self, line: bytes) -> None:
        """Append one JSON line that is not an event but a record the store ingests
        too (a gateway request: :mod:`agentlab.tracing.gateway_requests`), newline
        included, as is (not redacted); on disk as :meth:`emit` says."""
        with self._lock:
            if not self.durable:
                self._buffer.append(line)
                self._buffered += len(line)
                if self._buffered >= _FLUSH_BYTES:
                    self._flush_locked()
                return
            self._write(line)

    def flush(self) -> None:
        """Write out buffered events (a no-op for a durable writer)."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Flush and release the segment; the trace store then finishes ingesting it."""
        with self._lock:
            self._flush_locked()
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1
            self._path = None

    def __repr__(self) -> str:
        mode = "fsync" if self.fsync else "durable" if self.durable else "buffered"
        return f"TraceWriter({str(self.workspace)!r}, {mode}, segment={self._path})"

    def _strengthen(self, durable: bool, fsync: bool) -> None:
        """Raise the durability to at least what is asked (never lower it)."""
        with self._lock:
            if (durable or fsync) and not self.durable:
                self._flush_locked()
                self.durable = True
            self.fsync = self.fsync or fsync

    def _open(self) -> None:
        """Start writing as a new writer (after construction, close or fork)."""
        self._name = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._seq = 0
        self._fd, self._path = self._create(0)
        self._size = 0

    def _rotate(self) -> None:
        """Move on to the writer's next segment; release the full one to ingest."""
        try:
            fd, path = self._create(self._seq + 1)
        except TraceStoreError as exc:  # the event is written: go on with this segment
            log.warning("%s; writing on to %s", exc, self._path)
            return
        os.close(self._fd)
        self._fd, self._path, self._size = fd, path, 0
        self._seq += 1

    def _create(self, seq: int) -> tuple[int, Path]:
        # Create under a name ingest ignores, lock, then rename: ingest never
        # sees an unlocked segment whose writer is still starting.
        self._dir.mkdir(parents=True, exist_ok=True)
        name = f"{self._name}-{seq:06d}{SEGMENT_SUFFIX}"
        creating = self._dir / f".{name}{CREATING_SUFFIX}"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(creating, flags, 0o600)  # traces hold inputs: owner only
        except OSError as exc:
            raise TraceStoreError(f"cannot create a trace segment in {self._dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(creating, self._dir / name)
            if self.fsync:
                dir_fd = os.open(self._dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            os.close(fd)
            creating.unlink(missing_ok=True)
            raise TraceStoreError(f"cannot create a trace segment in {self._dir}: {exc}") from exc
        return fd, self._dir / name

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self._write(data)

    def _write(self, data: bytes) -> None:
        """Append `data` with one ``write`` (the rest in a loop if it was short)."""
        if self._fd < 0:
            self._open()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                self._write_rest(data, written)
            if self.fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            raise self._error(exc) from exc
        self._size += len(data)
        if self._size >= ROTATE_BYTES:
            self._rotate()

    def _write_rest(self, data: bytes, written: int) -> None:
        view = memoryview(data)
        while written < len(data):
            written += os.write(self._fd, view[written:])

    def _error(self, exc: OSError) -> TraceStoreError:
        return TraceStoreError(f"cannot write a trace event to {self._path}: {exc}")

    def _after_fork_in_child(self) -> None:
        # The child shares the parent's open file (and its lock): drop it without
        # unlocking, forget the parent's buffered events, reopen on next write.
        self._lock = threading.Lock()
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._path = None
        self._buffer.clear()
        self._buffered = 0


_LIVE: weakref.WeakSet[TraceWriter] = weakref.WeakSet()
_WRITERS: dict[Path, TraceWriter] = {}
_WRITERS_LOCK = threading.Lock()


def get_writer(
    workspace: str | os.PathLike[str] | None = None, *, durable: bool = True, fsync: bool = False
) -> TraceWriter:
    """This process's shared writer for `workspace` (created on first use).

    Asking for more durability than the shared writer has raises it; asking for
    less leaves it as it is.
    """
    path = resolve_workspace(workspace)
    with _WRITERS_LOCK:
        writer = _WRITERS.get(path)
        if writer is None:
            writer = _WRITERS[path] = TraceWriter(path, durable=durable, fsync=fsync)
            return writer
    writer._strengthen(durable, fsync)
    return writer


def shared_writer(workspace: Path) -> TraceWriter | None:
    """The shared writer of an already resolved `workspace`, if this process has one."""
    return _WRITERS.get(workspace)


def close_writers() -> None:
    """Flush and close every writer of this process and forget the shared ones."""
    with _WRITERS_LOCK:
        writers = list(_LIVE)  # before the shared ones lose their last reference
        _WRITERS.clear()
    for writer in writers:
        writer.close()


def _after_fork_in_child() -> None:
    global _WRITERS_LOCK
    _WRITERS_LOCK = threading.Lock()
    for writer in list(_LIVE):
        writer._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_writers)
