"""One in-memory DuckDB per process; a store's file is attached for one session.

Starting a DuckDB database costs about 15 ms whatever its size, more than a
query on a million spans. So each process keeps one in-memory database and
``ATTACH``es ``traces.duckdb`` for the length of a session (about 2 ms), then
``DETACH``es it: the file is checkpointed and its lock released exactly as when
a connection closes, and other processes can open it again.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from agentlab.errors import TraceStoreError

if TYPE_CHECKING:
    import duckdb

__all__ = ["attached", "sql_string"]

# pid -> that process's database. A forked child starts its own and leaves its
# parent's alone (closing it would wait for threads the child does not have).
_DATABASES: dict[int, duckdb.DuckDBPyConnection] = {}
_LOCK = threading.Lock()
_ALIASES = itertools.count()


def sql_string(text: str | os.PathLike[str]) -> str:
    """`text` as a SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def _database() -> duckdb.DuckDBPyConnection:
    import duckdb

    with _LOCK:
        database = _DATABASES.get(os.getpid())
        if database is None:
            database = _DATABASES[os.getpid()] = duckdb.connect(":memory:")
        return database


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def attached(path: Path, deadline: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection whose default database is the DuckDB file `path`, until exit.

    Retries until `deadline` (``time.monotonic()``) while another program has the
    file open. Temporary tables made in the session end with it.
    """
    import duckdb

    database = _database()
    con = database.cursor()
    alias = f"traces_{next(_ALIASES)}"
    try:
        while True:
            try:
                con.execute(f"ATTACH {sql_string(path)} AS {alias}")
                break
            except duckdb.IOException as exc:
                # Someone opened the file directly (DuckDB allows one process).
                if time.monotonic() >= deadline:
                    raise TraceStoreError(
                        f"cannot open {path}: {exc}. Another program has it open; "
                        "close it and query through agentlab.tracing.TraceStore instead"
                    ) from exc
                time.sleep(0.05)
        try:
            con.execute(f"USE {alias}")
            yield con
        finally:
            con.close()  # ends its transaction and temporary tables
            database.cursor().execute(f"DETACH {alias}").close()
    finally:
        con.close()
