"""The demo shop database: a DuckDB file built from the packaged ``seed.sql``."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import duckdb

from agentlab.errors import UserError

__all__ = [
    "connect_readonly",
    "create_demo_database",
    "demo_database_path",
    "shared_demo_database",
]

DATABASE_NAME = "shop.duckdb"


def demo_database_path(workspace: Path) -> Path:
    """Where the demo database lives inside a workspace."""
    return workspace / "demo" / DATABASE_NAME


def create_demo_database(path: str | os.PathLike[str]) -> Path:
    """(Re)create the demo database at `path` from the seed and return its path.

    The database is built in a temporary file and moved into place, so running it
    again always yields the same fresh data and never leaves a half-built file.
    """
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    building.unlink(missing_ok=True)
    seed = files("agentlab.demo").joinpath("seed.sql").read_text(encoding="utf-8")
    con = duckdb.connect(str(building))
    try:
        con.execute(seed)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    Path(f"{target}.wal").unlink(missing_ok=True)
    os.replace(building, target)
    return target


@contextmanager
def connect_readonly(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the demo database, closed on exit.

    Tools open one per call: nothing holds the file between calls, so the database
    can be recreated at any time.
    """
    if not path.is_file():
        raise UserError(
            f"The demo database {path} does not exist; create it with "
            "agentlab.demo.create_demo_database(path)."
        )
    con = duckdb.connect(str(path), read_only=True)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_demo_database(workspace: Path) -> Path:
    """The workspace's demo database, created once even when kernels race for it."""
    path = demo_database_path(workspace)
    with _file_lock(path.with_name(path.name + ".lock")):
        if not path.is_file():
            create_demo_database(path)
    return path
