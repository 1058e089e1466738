"""Long-term memory: summaries, preferences and knowledge in LanceDB.

Each memory is a text with metadata (kind, user, session, source, time and a free
JSON dict). The table's embedding function (see :mod:`agentlab.memory.embeddings`)
embeds the text on add and the query on search; importing this module registers
it, so a table reopened in a new process just works.

Search modes, and what ``MemoryHit.score`` means in each (higher is better):

* ``semantic`` - nearest vectors by cosine distance; score = cosine similarity.
* ``fulltext`` - LanceDB's native BM25 full-text index on ``text``; score = BM25.
* ``hybrid`` - both, fused by reciprocal rank (``RRFReranker``); score = RRF score.

Freshness and upkeep: full-text and vector search also scan the rows added since
the indexes were last updated (flat), so a memory is findable as soon as ``add``
returns. Every ``add`` commits a new table version and a small data fragment; after
every `optimize_every` writes, this object compacts the table and folds the new
rows into the indexes (:meth:`LongTermMemory.optimize`), which also builds the ANN
vector index (IVF-HNSW-SQ, cosine) once the table holds `index_threshold` rows.

Several processes may write one table at once (tested with 3 spawned processes):
LanceDB rebases concurrent appends itself; a write that loses a commit race to
another process's compaction or index update is retried with backoff, and an
automatic optimize that keeps losing is skipped with a warning (the next catches
up). Start such processes with ``spawn``, never ``fork``: LanceDB crashes after fork.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from agentlab.errors import AgentlabError, MemoryStoreError, MissingExtraError, UserError

# First: it sets LANCEDB_LOG=error (unless set) before LanceDB loads.
from agentlab.memory.embeddings import (
    Embedder,
    HashEmbedder,
    MiniLMEmbedder,
    function_embedder_name,
    lancedb_function,
)
from agentlab.workspace import resolve_workspace

try:
    import lancedb
    import pyarrow as pa
    from lancedb.embeddings import EmbeddingFunctionConfig
    from lancedb.index import FTS, HnswSq
    from lancedb.rerankers import RRFReranker
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(e.name or "lancedb", "memory") from None

__all__ = ["LongTermMemory", "MemoryHit", "MemoryKind", "SearchMode"]

log = logging.getLogger("agentlab.memory")
T = TypeVar("T")

MemoryKind = Literal["history", "preference", "knowledge", "note"]
SearchMode = Literal["semantic", "fulltext", "hybrid"]
KINDS: tuple[str, ...] = get_args(MemoryKind)
MODES: tuple[str, ...] = get_args(SearchMode)

_QUERY_TYPES: dict[str, Literal["vector", "fts", "hybrid"]] = {
    "semantic": "vector",
    "fulltext": "fts",
    "hybrid": "hybrid",
}
_EMBEDDERS = {"minilm": MiniLMEmbedder, "hash": HashEmbedder}
_RECORD_KEYS = frozenset(
    {"text", "kind", "user", "session", "source", "metadata", "id", "created_at"}
)
_COLUMNS = ["id", "text", "kind", "user", "session", "source", "created_at", "metadata"]
# Versions older than this are pruned by optimize(): long enough for any reader
# that is still on an old version to finish.
_KEEP_VERSIONS = timedelta(hours=1)
# Tries of a write that loses a commit race with another process's compaction.
_CONFLICT_TRIES = 5
# Rows per IVF partition of the vector index. Each partition is one HNSW graph and a
# search visits every partition (up to 20), so fewer, larger graphs search faster:
# at 100k rows, 1 partition with ef 400 answers in ~5 ms at recall@10 ~0.97, where
# 10 partitions with ef 64 take ~6.6 ms for 0.96 (but build in 38 s instead of 52 s).
_ROWS_PER_PARTITION = 100_000
# Candidates each HNSW search keeps (LanceDB's default gives recall@10 0.6-0.85 at
# 100k rows). Ignored without a vector index.
_HNSW_EF = 400


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """One search result. `score`: higher is better (see the module docstring)."""

    id: str
    text: str
    score: float
    kind: str
    user: str | None
    session: str | None
    source: str | None
    created_at: datetime
    metadata: dict[str, Any]
    parts: dict[str, float | None] = field(default_factory=dict)
    """A hybrid hit's score in each mode: ``semantic`` (1 - cosine distance) and
    ``fulltext`` (BM25; None when the text matched no query term). Empty otherwise."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``created_at`` as ISO 8601; ``parts`` only for hybrid hits)."""
        extra = {"parts": self.parts} if self.parts else {}
        return {
            "id": self.id,
            "text": self.text,
            "score": self.score,
            "kind": self.kind,
            "user": self.user,
            "session": self.session,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "metadata": self.metadata,
            **extra,
        }


class LongTermMemory:
    """Memories in a LanceDB table, searched semantically, by full text or both.

    `path` is the LanceDB directory (default: ``<workspace>/memory/lancedb``).
    `embedder` is ``"minilm"`` (default), ``"hash"`` (tests of plumbing only) or an
    :class:`~agentlab.memory.embeddings.Embedder`; a table keeps the embedder it was
    created with. `optimize_every` writes (``add``/``add_many`` calls) of this object
    trigger :meth:`optimize` (0: never); the ANN index is built by :meth:`optimize`
    once the table holds `index_threshold` rows.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        table: str = "memories",
        embedder: str | Embedder = "minilm",
        optimize_every: int = 100,
        index_threshold: int = 50_000,
    ) -> None:
        if optimize_every < 0 or index_threshold < 1:
            raise UserError("LongTermMemory needs optimize_every >= 0 and index_threshold >= 1")
        self._embedder = _resolve_embedder(embedder)
        self.path = Path(path) if path is not None else _default_path(None)
        self.table_name = table
        self.optimize_every = optimize_every
        self.index_threshold = index_threshold
        self._writes = 0
        self._lock = threading.Lock()
        function = lancedb_function(self._embedder)
        with self._store_errors("open"):
            self.path.mkdir(parents=True, exist_ok=True)
            db = lancedb.connect(self.path, read_consistency_interval=timedelta(0))
            try:
                self._table = db.open_table(table)
            except ValueError:  # not found: create it (another process may race us)
                self._table = db.create_table(
                    table,
                    schema=_schema(self._embedder.dims),
                    embedding_functions=[
                        EmbeddingFunctionConfig(
                            vector_column="vector", source_column="text", function=function
                        )
                    ],
                    exist_ok=True,
                )
        self._check_embedder()
        self._ensure_fulltext_index()

    @classmethod
    def in_workspace(
        cls, workspace: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> LongTermMemory:
        """The long-term memory of a workspace: ``<workspace>/memory/lancedb``."""
        return cls(_default_path(workspace), **kwargs)

    @property
    def embedder(self) -> Embedder:
        """The embedder this memory's table uses."""
        return self._embedder

    @property
    def table(self) -> lancedb.table.Table:
        """The LanceDB table, to inspect (``stats()``, ``list_indices()``, versions)."""
        return self._table

    # --- writing -----------------------------------------------------------------

    def add(
        self,
        text: str,
        *,
        kind: str = "note",
        user: str | None = None,
        session: str | None = None,
        source: str | None = None,
        metadata: dict[str, Any] | None = None,
        id: str | None = None,
        created_at: datetime | None = None,
    ) -> str:
        """Store one memory and return its id (a new uuid unless `id` is given).

        `created_at` (default: now) must be timezone-aware; an `id` must be unused.
        """
        (new_id,) = self.add_many(
            [
                {
                    "text": text,
                    "kind": kind,
                    "user": user,
                    "session": session,
                    "source": source,
                    "metadata": metadata,
                    "id": id,
                    "created_at": created_at,
                }
            ]
        )
        return new_id

    def add_many(self, records: Iterable[dict[str, Any]]) -> list[str]:
        """Store many memories in one write; each record has :meth:`add`'s fields.

        Every record is checked before anything is written: one bad record stores none.
        """
        records = list(records)
        rows = [_row(record) for record in records]
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        if len(set(ids)) < len(ids):
            raise UserError("add_many: two records have the same id")
        self._check_unused([record["id"] for record in records if record.get("id")])
        data = pa.Table.from_pylist(rows, schema=_schema(None))
        with self._store_errors("add"):
            _retry_conflicts(lambda: self._table.add(data))
        self._count_write()
        return ids

    def delete(self, id: str) -> bool:
        """Delete the memory `id`; False if there was none."""
        where = f"id = {_sql_str(id)}"
        with self._store_errors("delete"):
            if self._table.count_rows(where) == 0:
                return False
            _retry_conflicts(lambda: self._table.delete(where))
        return True

    # --- reading -----------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        mode: SearchMode = "hybrid",
        k: int = 5,
        kind: str | Sequence[str] | None = None,
        user: str | None = None,
        session: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        shared: bool = False,
    ) -> list[MemoryHit]:
        """The `k` best memories for `query`, best first, among those that match the
        filters (`since` inclusive, `until` exclusive; all filters are applied before
        ranking). With `shared`, a `user` filter also lets through memories that
        belong to no user (shared knowledge)."""
        if not isinstance(query, str) or not query.strip():
            raise UserError("search needs a non-empty query string")
        if mode not in MODES:
            raise UserError(f"unknown search mode {mode!r}: pass one of {', '.join(MODES)}")
        if not isinstance(k, int) or k < 1:
            raise UserError(f"search needs k >= 1 (the number of results), got {k!r}")
        where = _where(kind, user, session, source, since, until, shared=shared)
        with self._store_errors("search"):
            # LanceDB embeds the query with the table's function; a string full-text
            # query is matched term by term (no query syntax to escape).
            builder: Any = self._table.search(
                query, query_type=_QUERY_TYPES[mode], fts_columns="text"
            )
            if mode == "semantic":
                builder = builder.distance_type("cosine").ef(max(_HNSW_EF, 2 * k))
                limit, score_column, columns = k, "_distance", [*_COLUMNS, "_distance"]
            elif mode == "fulltext":
                limit, score_column, columns = k, "_score", [*_COLUMNS, "_score"]
            else:
                # Fuse deeper candidate lists than the k results asked for.
                limit, score_column, columns = max(2 * k, 10), "_relevance_score", _COLUMNS
                builder = builder.distance_type("cosine").ef(max(_HNSW_EF, 2 * limit))
                builder = builder.rerank(RRFReranker(return_score="all"))  # keeps the parts
            if where:
                builder = builder.where(where, prefilter=True)
            rows = builder.select(columns).limit(limit).to_arrow().to_pylist()
        return [_hit(row, score_column) for row in rows[:k]]

    def count(self) -> int:
        """The number of memories stored."""
        with self._store_errors("count"):
            return int(self._table.count_rows())

    # --- upkeep ------------------------------------------------------------------

    def optimize(self) -> None:
        """Compact small fragments, prune versions older than an hour, fold new rows
        into the full-text and vector indexes, and build the ANN index once the
        table holds `index_threshold` rows (at 50k rows that first build takes
        about half a minute on two cores)."""
        with self._lock:
            self._writes = 0
        with self._store_errors("optimize"):
            _retry_conflicts(lambda: self._table.optimize(cleanup_older_than=_KEEP_VERSIONS))
        if "vector" not in self._indexed_columns() and self.count() >= self.index_threshold:
            self.create_index()

    def create_index(self) -> None:
        """Build (or rebuild) the ANN index on the vectors now: IVF-HNSW-SQ, cosine."""
        rows = self.count()
        partitions = max(1, math.ceil(rows / _ROWS_PER_PARTITION))
        config = HnswSq(distance_type="cosine", num_partitions=partitions)
        with self._store_errors("create the vector index"):
            _retry_conflicts(
                lambda: self._table.create_index("vector", config=config, replace=True)
            )

    # --- internals ---------------------------------------------------------------

    def _count_write(self) -> None:
        with self._lock:
            self._writes += 1
            due = self.optimize_every and self._writes >= self.optimize_every
        if due:
            try:
                self.optimize()
            except MemoryStoreError as e:  # the write itself succeeded: do not fail it
                log.warning("automatic optimize skipped: %s", e)

    def _check_unused(self, ids: list[str]) -> None:
        if not ids:
            return
        where = "id IN (" + ", ".join(_sql_str(i) for i in ids) + ")"
        with self._store_errors("look up ids"):
            taken = self._table.search().where(where).select(["id"]).to_arrow()
        if taken.num_rows:
            raise UserError(
                f"memory id {taken.column('id')[0].as_py()!r} already exists: delete it "
                "first or pass no id to get a new one"
            )

    def _check_embedder(self) -> None:
        with self._store_errors("read the table's embedding function"):
            try:
                config = self._table.embedding_functions.get("vector")
            except KeyError as e:  # written by a LanceDB function not registered here
                raise MemoryStoreError(
                    f"{self.path} table {self.table_name!r} uses the embedding function {e} "
                    "that this process does not know"
                ) from None
        if config is None:
            raise UserError(
                f"the LanceDB table {self.table_name!r} at {self.path} has no embedding "
                "function: it is not a long-term memory table; pass another table name"
            )
        found = function_embedder_name(config.function)
        if found != self._embedder.name:
            raise UserError(
                f"the long-term memory table {self.table_name!r} at {self.path} was created "
                f"with the embedder {found!r}, not {self._embedder.name!r}: open it with "
                f"{_how_to_pass(found)}"
            )

    def _ensure_fulltext_index(self) -> None:
        if "text" in self._indexed_columns():
            return
        with self._store_errors("create the full-text index"):
            try:
                self._table.create_index("text", config=FTS(), replace=False)
            except Exception:
                if "text" not in self._indexed_columns():  # else another process made it
                    raise

    def _indexed_columns(self) -> set[str]:
        """The indexed columns: "text" (full text) and/or "vector"."""
        with self._store_errors("list indexes"):
            return {column for index in self._table.list_indices() for column in index.columns}

    @contextlib.contextmanager
    def _store_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except AgentlabError:
            raise
        except Exception as e:
            raise MemoryStoreError(
                f"long-term memory at {self.path} (table {self.table_name!r}): could not "
                f"{action}: {e}"
            ) from e


# --- helpers -----------------------------------------------------------------------


def _default_path(workspace: str | os.PathLike[str] | None) -> Path:
    return resolve_workspace(workspace) / "memory" / "lancedb"


def _resolve_embedder(embedder: str | Embedder) -> Embedder:
    if isinstance(embedder, Embedder):
        return embedder
    if isinstance(embedder, str) and embedder in _EMBEDDERS:
        return _EMBEDDERS[embedder]()
    raise UserError(
        f"unknown embedder {embedder!r}: pass 'minilm' (the default), 'hash' (tests of "
        "plumbing only) or an agentlab.memory.Embedder instance"
    )


def _how_to_pass(name: str) -> str:
    if name == MiniLMEmbedder.name:
        return "embedder='minilm'"
    if name == HashEmbedder().name:
        return "embedder='hash'"
    if name.startswith("hash-") and name[5:].isdigit():
        return f"embedder=HashEmbedder(dims={name[5:]})"
    return f"an Embedder instance named {name!r}"


def _schema(dims: int | None) -> pa.Schema:
    """The table's columns; without `dims`, those of a write (no vector column)."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("user", pa.string()),
        pa.field("session", pa.string()),
        pa.field("source", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("metadata", pa.string(), nullable=False),
    ]
    if dims is not None:
        fields.insert(2, pa.field("vector", pa.list_(pa.float32(), dims)))
    return pa.schema(fields)


def _optional_str(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise UserError(f"memory {key!r} must be a string or None, got {value!r}")
    return value


def _utc(value: Any, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise UserError(f"{what} must be a timezone-aware datetime, e.g. datetime.now(UTC)")
    return value.astimezone(UTC)


def _row(record: dict[str, Any]) -> dict[str, Any]:
    """Validate one record of add_many and turn it into a table row."""
    if not isinstance(record, dict):
        raise UserError(f"add_many takes dicts with add()'s fields, got {record!r}")
    unknown = set(record) - _RECORD_KEYS
    if unknown:
        raise UserError(
            f"unknown memory field(s) {sorted(unknown)}: use {', '.join(sorted(_RECORD_KEYS))}"
        )
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise UserError("a memory needs a non-empty text")
    kind = record.get("kind") or "note"
    if kind not in KINDS:
        raise UserError(f"unknown memory kind {kind!r}: use one of {', '.join(KINDS)}")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise UserError(f"memory metadata must be a dict, got {metadata!r}")
    try:
        metadata_json = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise UserError(f"memory metadata must be JSON-serialisable: {e}") from None
    created_at = record.get("created_at")
    return {
        "id": _optional_str(record, "id") or uuid.uuid4().hex,
        "text": text,
        "kind": kind,
        "user": _optional_str(record, "user"),
        "session": _optional_str(record, "session"),
        "source": _optional_str(record, "source"),
        "created_at": datetime.now(UTC) if created_at is None else _utc(created_at, "created_at"),
        "metadata": metadata_json,
    }


def _sql_str(value: str) -> str:
    """A SQL string literal: quotes doubled (the only escape in a LanceDB string)."""
    if not isinstance(value, str):
        raise UserError(f"filter values must be strings, got {value!r}")
    return "'" + value.replace("'", "''") + "'"


def _sql_time(value: datetime, what: str) -> str:
    return f"TIMESTAMP '{_utc(value, what).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"


def _where(
    kind: str | Sequence[str] | None,
    user: str | None,
    session: str | None,
    source: str | None,
    since: datetime | None,
    until: datetime | None,
    *,
    shared: bool = False,
) -> str:
    clauses = []
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise UserError(f"unknown memory kind {bad or kinds}: use one of {', '.join(KINDS)}")
        clauses.append("kind IN (" + ", ".join(_sql_str(k) for k in kinds) + ")")
    for column, value in (("user", user), ("session", session), ("source", source)):
        if value is not None:
            clauses.append(f"`{column}` = {_sql_str(value)}")
            if column == "user" and shared:
                clauses[-1] = f"({clauses[-1]} OR `user` IS NULL)"
    if since is not None:
        clauses.append(f"created_at >= {_sql_time(since, 'since')}")
    if until is not None:
        clauses.append(f"created_at < {_sql_time(until, 'until')}")
    return " AND ".join(clauses)


def _hit(row: dict[str, Any], score_column: str) -> MemoryHit:
    raw = float(row[score_column])
    parts: dict[str, float | None] = {}
    if score_column == "_relevance_score":  # hybrid: what each mode thought of it
        distance, bm25 = row.get("_distance"), row.get("_score")
        parts = {
            "semantic": None if distance is None else 1.0 - float(distance),
            "fulltext": None if bm25 is None else float(bm25),
        }
    return MemoryHit(
        id=row["id"],
        text=row["text"],
        score=1.0 - raw if score_column == "_distance" else raw,
        kind=row["kind"],
        user=row["user"],
        session=row["session"],
        source=row["source"],
        created_at=row["created_at"].astimezone(UTC),
        metadata=json.loads(row["metadata"]),
        parts=parts,
    )


def _retry_conflicts(write: Callable[[], T]) -> T:
    """Run a table write, retrying with backoff when another process's commit (a
    compaction or index update) preempted it; LanceDB rebases plain appends itself."""
    delay = 0.05
    for _ in range(_CONFLICT_TRIES - 1):
        try:
            return write()
        except RuntimeError as e:
            if "commit conflict" not in str(e).lower():
                raise
        time.sleep(delay * (1 + random.random()))
        delay *= 2
    return write()
