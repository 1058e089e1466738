"""The trace store: DuckDB tables over the events every process writes.

Queries always see every event written so far: each one takes the workspace's
lock file, opens ``traces.duckdb``, applies pending migrations, ingests the new
segment lines, runs, and closes the database again. DuckDB lets one process
open a file at a time, so no connection is kept between calls. (``duckdb`` is
imported on first query: processes that only write traces never load it.)
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.errors import MissingExtraError, TraceStoreError
from agentlab.tracing.ingest import ingest
from agentlab.tracing.schema import migrate
from agentlab.tracing.writer import TraceWriter, get_writer, shared_writer
from agentlab.workspace import resolve_workspace

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["TraceStore"]

Params = Sequence[Any] | dict[str, Any] | None

_STEPS = """
SELECT step, 'model_call' AS kind, model AS name, status, input_tokens, output_tokens, cost,
       latency_ms, started_at, CAST(messages AS VARCHAR) AS input,
       CAST(response AS VARCHAR) AS output, error, id
FROM model_calls WHERE run_id = $run_id
UNION ALL
SELECT step, 'tool_call', tool, status, NULL, NULL, NULL, latency_ms, started_at, arguments,
       result, error, id
FROM tool_calls WHERE run_id = $run_id
ORDER BY step, started_at, kind
"""

_RUNS = """
SELECT run_id, agent, model, status, steps, input_tokens, output_tokens, cost, latency_ms,
       started_at, ended_at, input, output, explanation
FROM runs ORDER BY started_at DESC NULLS LAST, run_id LIMIT ?
"""


class TraceStore:
    """The traces of one workspace (default: ``$AGENTLAB_WORKSPACE`` or ``./.agentlab``).

    Tables: ``runs``, ``model_calls``, ``tool_calls`` (times are UTC ``TIMESTAMP``;
    messages, responses and metadata are ``JSON``) and ``schema_migrations``.
    `lock_timeout` bounds the wait for another process's query or ingest.
    """

    def __init__(
        self, workspace: str | os.PathLike[str] | None = None, *, lock_timeout: float = 30.0
    ) -> None:
        self.workspace: Path = resolve_workspace(workspace)
        self.path: Path = self.workspace / "traces.duckdb"
        self.lock_path: Path = self.workspace / "traces.lock"
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"TraceStore({str(self.workspace)!r})"

    def writer(self, durable: bool = True, fsync: bool = False) -> TraceWriter:
        """This process's shared :class:`TraceWriter` for the workspace."""
        return get_writer(self.workspace, durable=durable, fsync=fsync)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the store: lock, open, migrate and ingest; close and unlock on exit.

        Use it for several statements in a row; other processes wait meanwhile.
        """
        with self._session() as (con, _):
            yield con

    def ingest(self) -> int:
        """Ingest the events written since the last query; return how many."""
        with self._session() as (_, ingested):
            return ingested

    def sql(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run one SQL statement on the up-to-date store and return its rows."""
        with self.connect() as con:
            result = _execute(con, query, params)
            return result.fetchall() if result.description else []

    def df(self, query: str, params: Params = None) -> pd.DataFrame:
        """Run one SQL query on the up-to-date store and return a pandas DataFrame."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise MissingExtraError("pandas", "pandas") from None
        with self.connect() as con:
            return _execute(con, query, params).df()

    def runs(self, limit: int = 20) -> pd.DataFrame:
        """The latest `limit` runs, newest first."""
        return self.df(_RUNS, [limit])

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run as a dict (``metadata`` decoded), or None if unknown."""
        with self.connect() as con:
            result = con.execute("SELECT * EXCLUDE (segment) FROM runs WHERE run_id = ?", [run_id])
            rows = result.fetchall()
            columns = [d[0] for d in result.description or ()]
        if not rows:
            return None
        run = dict(zip(columns, rows[0], strict=True))
        for column in ("metadata", "failure", "pending", "checkpoint", "limits"):
            if run.get(column) is not None:
                run[column] = json.loads(run[column])
        return run

    def steps(self, run_id: str) -> pd.DataFrame:
        """The model calls and tool calls of a run, in step order.

        ``input`` is the new messages (model) or the arguments (tool); ``output`` is
        the response (model) or the result (tool).
        """
        return self.df(_STEPS, {"run_id": run_id})

    @contextmanager
    def _session(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        writer = shared_writer(self.workspace)
        if writer is not None:  # this process's buffered events first
            writer.flush()
        with self._locked(deadline):
            con = self._open(deadline)
            try:
                migrate(con)
                yield con, ingest(con, self.workspace)
            except duckdb.Error as exc:
                raise TraceStoreError(f"trace store {self.path}: {exc}") from exc
            finally:
                con.close()

    @contextmanager
    def _locked(self, deadline: float) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TraceStoreError(
                            f"the trace store is busy: another process held {self.lock_path} "
                            f"for more than {self.lock_timeout:g} s (a long query or ingest?)"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _open(self, deadline: float) -> duckdb.DuckDBPyConnection:
        import duckdb

        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException as exc:
                # Someone opened the file directly (DuckDB allows one process).
                if time.monotonic() >= deadline:
                    raise TraceStoreError(
                        f"cannot open {self.path}: {exc}. Another program has it open; "
                        "close it and query through agentlab.tracing.TraceStore instead"
                    ) from exc
                time.sleep(0.05)


def _execute(
    con: duckdb.DuckDBPyConnection, query: str, params: Params
) -> duckdb.DuckDBPyConnection:
    import duckdb

    try:
        return con.execute(query, params)
    except duckdb.Error as exc:
        raise TraceStoreError(f"{type(exc).__name__}: {exc}\nquery: {query}") from exc
