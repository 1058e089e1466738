"""Move one run's trace from a trace store to another: a run paused on one machine
resumed on another (the gateway shares paused runs through Redis this way).

>>> payload = export_run(TraceStore(a), run_id)     # bytes
>>> import_run(TraceStore(b), payload)              # the run id; B now has the run

The payload is a zip: ``handoff.json`` (format, version, run id, the origin's schema
version, rows per table) and one Parquet file per table holding the run's rows
(written and read by DuckDB: every type survives exactly). Every table with a
``run_id`` column is carried, found in DuckDB's ``information_schema``, so a table a
later migration adds is carried too; except ``gateway_requests``, the requests a
gateway served: each machine keeps its own, and copying them would count a request
twice in the cost per client summed over machines.

``runs.segment`` names the origin writer's segment file (ingest uses it to mark the
runs of a dead writer ``interrupted``); an imported run gets none, so no local writer
is ever taken for its author.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.errors import UserError
from agentlab.tracing.attach import sql_string
from agentlab.tracing.schema import MIGRATIONS

if TYPE_CHECKING:
    import duckdb

    from agentlab.tracing.store import TraceStore

__all__ = ["FORMAT", "VERSION", "export_run", "import_run"]

FORMAT = "agentlab-run-handoff"
VERSION = 1
"""The payload's format version: a reader refuses any other."""
_MANIFEST = "handoff.json"
_SERVED_HERE = frozenset({"gateway_requests"})
"""Tables with a ``run_id`` that record what one machine served, not the run."""
_LOCAL_ONLY = {"runs": ("segment",)}
"""Columns that mean something only in the store that wrote them: NULL on import."""

_RUN_TABLES = """
SELECT c.table_name FROM information_schema.columns AS c
JOIN information_schema.tables AS t USING (table_catalog, table_schema, table_name)
WHERE c.table_catalog = current_database() AND c.table_schema = current_schema()
  AND t.table_type = 'BASE TABLE' AND c.column_name = 'run_id'
ORDER BY c.table_name
"""


def export_run(store: TraceStore, run_id: str) -> bytes:
    """Every row of run `run_id` in `store`, as one payload for :func:`import_run`
    (raises :class:`UserError` when `store` has no such run)."""
    if not isinstance(run_id, str) or not run_id:
        raise UserError(f"export_run(run_id={run_id!r}): give a run id (a non-empty string)")
    with tempfile.TemporaryDirectory(prefix="agentlab-handoff-") as tmp:
        counts: dict[str, int] = {}
        with store.connect() as con:
            if not con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall():
                raise UserError(
                    f"No run {run_id!r} in {store.workspace}; check the id and workspace."
                )
            for table in _run_tables(con):
                [(count,)] = con.execute(
                    f"SELECT count(*) FROM {_ident(table)} WHERE run_id = ?", [run_id]
                ).fetchall()
                if count:
                    path = Path(tmp) / f"{table}.parquet"
                    con.execute(
                        f"COPY (SELECT * FROM {_ident(table)} WHERE run_id = {sql_string(run_id)})"
                        f" TO {sql_string(path)} (FORMAT parquet, COMPRESSION zstd)"
                    )
                    counts[table] = count
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "run_id": run_id,
            "schema_version": MIGRATIONS[-1][0],
            "tables": counts,
        }
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:  # parquet: compressed
            archive.writestr(_MANIFEST, json.dumps(manifest))
            for table in counts:
                archive.write(Path(tmp) / f"{table}.parquet", f"{table}.parquet")
        return out.getvalue()


def import_run(store: TraceStore, payload: bytes, *, replace: bool = False) -> str:
    """Insert the run `payload` carries (from :func:`export_run`) into `store`, in one
    transaction, and return its id. A run `store` already has is left as it is (so
    importing twice changes nothing), unless `replace`: then its rows are replaced by
    the payload's (a newer copy: the run went on elsewhere since). A payload that is
    not one (garbage, truncated, another format version, a newer schema) raises
    :class:`UserError` and leaves `store` untouched."""
    import duckdb

    with tempfile.TemporaryDirectory(prefix="agentlab-handoff-") as tmp:
        manifest, files = _unpack(payload, Path(tmp))
        run_id: str = manifest["run_id"]
        with store.connect() as con:
            known = bool(con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall())
            if known and not replace:
                return run_id
            local = _run_tables(con)
            _check_tables(con, manifest, files, local)
            con.execute("BEGIN TRANSACTION")
            try:
                for table in local if known else ():
                    con.execute(f"DELETE FROM {_ident(table)} WHERE run_id = ?", [run_id])
                for table, path in files.items():
                    nulled = _LOCAL_ONLY.get(table, ())
                    replaced = (
                        f" REPLACE ({', '.join(f'NULL AS {_ident(c)}' for c in nulled)})"
                        if nulled
                        else ""
                    )
                    con.execute(
                        f"INSERT INTO {_ident(table)} BY NAME "
                        f"SELECT *{replaced} FROM read_parquet({sql_string(path)})"
                    )
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise _bad(f"its rows do not fit this trace store ({exc})") from None
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return run_id


def _run_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The store's tables with a ``run_id`` column, but those of one machine's own."""
    return [t for (t,) in con.execute(_RUN_TABLES).fetchall() if t not in _SERVED_HERE]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _bad(why: str) -> UserError:
    return UserError(
        f"not a run handoff payload: {why}. Pass the bytes agentlab.tracing.handoff."
        "export_run returned, whole and unchanged (from an agentlab of the same or an "
        "older version)."
    )


def _unpack(payload: bytes, into: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The payload's checked manifest and its Parquet files, written into `into`
    under names of our own (never the archive's)."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise UserError(
            "import_run(payload=...): give the bytes export_run returned, not "
            f"{type(payload).__name__}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            broken = archive.testzip()
            if broken is not None:
                raise _bad(f"its member {broken!r} is corrupt")
            manifest = json.loads(archive.read(_MANIFEST))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise _bad(f"{_MANIFEST} does not name the format {FORMAT!r}")
            if manifest.get("version") != VERSION:
                raise _bad(
                    f"it is format version {manifest.get('version')!r}, and this agentlab "
                    f"reads version {VERSION} only"
                )
            run_id, tables = manifest.get("run_id"), manifest.get("tables")
            if not isinstance(run_id, str) or not run_id or not isinstance(tables, dict):
                raise _bad(f"{_MANIFEST} lacks the run id or its tables")
            if not isinstance(manifest.get("schema_version"), int):
                raise _bad(f"{_MANIFEST} lacks the schema version")
            files: dict[str, str] = {}
            for index, table in enumerate(tables):
                path = into / f"{index}.parquet"
                path.write_bytes(archive.read(f"{table}.parquet"))
                files[str(table)] = str(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, EOFError, zlib.error) as exc:
        raise _bad(f"it is not a whole handoff archive ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad(f"its {_MANIFEST} is not JSON") from None
    return manifest, files


def _check_tables(
    con: duckdb.DuckDBPyConnection,
    manifest: dict[str, Any],
    files: dict[str, str],
    local: list[str],
) -> None:
    """Check, before writing anything, that the payload's rows fit this store: a
    schema no newer than ours, known tables, the row counts the manifest names, and
    only rows of its run (one of them in ``runs``)."""
    import duckdb

    [(ours,)] = con.execute("SELECT max(version) FROM schema_migrations").fetchall()
    if manifest["schema_version"] > ours:
        raise UserError(
            f"the run handoff payload comes from a trace store of schema version "
            f"{manifest['schema_version']}, and this one is at {ours}: upgrade agentlab here"
        )
    if manifest["tables"].get("runs") != 1:
        raise _bad("it holds no row of the run itself (table runs)")
    for table, path in files.items():
        if table not in local:
            raise _bad(f"it holds rows of a table this store has no run rows in: {table!r}")
        try:
            [(rows, others)] = con.execute(
                "SELECT count(*), count(*) FILTER (run_id IS DISTINCT FROM ?) "
                f"FROM read_parquet({sql_string(path)})",
                [manifest["run_id"]],
            ).fetchall()
        except duckdb.Error as exc:
            raise _bad(f"its rows of {table!r} cannot be read ({exc})") from None
        if rows != manifest["tables"][table] or others:
            raise _bad(
                f"its file of {table!r} holds {rows} rows ({others} of other runs), and "
                f"the manifest says {manifest['tables'][table]} of run {manifest['run_id']!r}"
            )
