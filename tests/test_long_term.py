"""Long-term memory: LanceDB storage, the three search modes, filters, embedders,
reopening in a new process, concurrent writers, upkeep and retrieval quality.

Plumbing tests use the fast HashEmbedder; MiniLM checks meaning and the eval set.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _http import load_benchmark

from agentlab.errors import MemoryStoreError, UserError
from agentlab.memory import Embedder, HashEmbedder, LongTermMemory, MemoryHit, MiniLMEmbedder

MODES = ["semantic", "fulltext", "hybrid"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


recall_bench = load_benchmark("memory_recall")


def fragments(memory: LongTermMemory) -> int:
    return int(memory.table.stats()["fragment_stats"]["num_fragments"])


# --- a shared table for search and filter tests ---------------------------------------

# Four memories about the same thing (every query below matches all of them by words
# and by vector) that differ only in metadata, plus unrelated ones.
DELAYS = [
    dict(id="d1", kind="history", user="u1", session="s1", source="chat", days=0),
    dict(id="d2", kind="preference", user="u2", session="s2", source="email", days=31),
    dict(id="d3", kind="knowledge", user=None, session=None, source="kb", days=59),
    dict(id="d4", kind="note", user="u1", session="s2", source="chat", days=90),
]
OTHERS = {
    "o1": "Gold members get free express shipping on every order",
    "o2": "The customer prefers to be called in the morning",
    "o3": "Warranty claims go to the manufacturer after one year",
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> LongTermMemory:
    memory = LongTermMemory(tmp_path_factory.mktemp("shared"), embedder="hash")
    memory.add_many(
        {
            "id": d["id"],
            "text": f"parcel delayed by the carrier, case {d['id']}",
            "kind": d["kind"],
            "user": d["user"],
            "session": d["session"],
            "source": d["source"],
            "created_at": T0 + timedelta(days=d["days"]),
            "metadata": {"case": d["id"]},
        }
        for d in DELAYS
    )
    for memory_id, text in OTHERS.items():  # single adds: rows not yet in the indexes
        memory.add(text, id=memory_id, kind="knowledge", created_at=T0)
    return memory


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_ranks_the_matching_memory_first(shared: LongTermMemory, mode: str) -> None:
    hits = shared.search("free express shipping for gold members", mode=mode, k=3)
    assert hits[0].id == "o1"
    assert hits[0].text == OTHERS["o1"]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len({h.id for h in hits}) == len(hits)


def test_scores_per_mode(shared: LongTermMemory) -> None:
    semantic = shared.search("free express shipping for gold members", mode="semantic", k=7)
    assert -1.0 <= semantic[-1].score < semantic[0].score <= 1.0  # cosine similarity
    fulltext = shared.search("manufacturer warranty", mode="fulltext", k=7)
    assert [h.id for h in fulltext] == ["o3"]  # BM25 only scores rows with the words
    assert fulltext[0].score > 0
    hybrid = shared.search("manufacturer warranty", mode="hybrid", k=7)
    assert hybrid[0].id == "o3"
    assert 0 < hybrid[0].score <= 2 / 61  # RRF: at most 1/(60+1) per list
    # A hybrid hit says what each mode made of it: the same figures as each mode alone.
    semantic_o3 = shared.search("manufacturer warranty", mode="semantic", k=7)
    cosine = {h.id: h.score for h in semantic_o3}
    for hit in hybrid:
        assert hit.parts["semantic"] == pytest.approx(cosine[hit.id], abs=1e-6)
        assert hit.parts["fulltext"] == (
            pytest.approx(fulltext[0].score, rel=1e-6) if hit.id == "o3" else None
        )
    assert hybrid[0].to_dict()["parts"] == hybrid[0].parts
    assert "parts" not in fulltext[0].to_dict() and not fulltext[0].parts


FILTERS: list[tuple[dict[str, Any], set[str]]] = [
    ({"kind": "history"}, {"d1"}),
    ({"kind": ["history", "note"]}, {"d1", "d4"}),
    ({"user": "u1"}, {"d1", "d4"}),
    ({"user": "u1", "shared": True}, {"d1", "d3", "d4"}),  # and memories of no user
    ({"session": "s2"}, {"d2", "d4"}),
    ({"source": "kb"}, {"d3"}),
    ({"since": T0 + timedelta(days=59)}, {"d3", "d4"}),  # inclusive
    ({"until": T0 + timedelta(days=59)}, {"d1", "d2"}),  # exclusive
    ({"user": "u1", "session": "s2", "since": T0 + timedelta(days=1)}, {"d4"}),
    ({"user": "nobody"}, set()),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("filters", "expected"), FILTERS)
def test_filters_apply_in_every_mode(
    shared: LongTermMemory, mode: str, filters: dict[str, Any], expected: set[str]
) -> None:
    hits = shared.search("parcel delayed by the carrier", mode=mode, k=10, **filters)
    assert {h.id for h in hits} - set(OTHERS) == expected
    if mode == "fulltext":  # only rows with the words; the vector legs return any row
        assert {h.id for h in hits} == expected


def test_filter_values_are_sql_escaped(tmp_path: Path) -> None:
    memory = LongTermMemory(tmp_path, embedder="hash")
    tricky = "o'brien' OR '1'='1"
    memory.add("likes green tea", user=tricky, id="t1")
    memory.add("likes green tea", user="o", id="t2")
    memory.add("likes green tea", user="back\\slash", id="t3")
    for mode in MODES:
        assert [h.id for h in memory.search("green tea", mode=mode, user=tricky)] == ["t1"]
        assert [h.id for h in memory.search("green tea", mode=mode, user="back\\slash")] == ["t3"]
        assert memory.search("green tea", mode=mode, user="o'brien") == []


def test_metadata_and_hit_round_trip(tmp_path: Path) -> None:
    memory = LongTermMemory(tmp_path, embedder="hash")
    when = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    metadata = {"order": "O-1003", "tags": ["late", "voucher"], "amount": 12.5, "ünï": None}
    memory_id = memory.add(
        "Order O-1003 arrived late; a voucher was sent",
        kind="history",
        user="C-001",
        session="sess-9",
        source="run:abc",
        metadata=metadata,
        created_at=when.astimezone(timezone(timedelta(hours=5))),
    )
    (hit,) = memory.search("voucher", mode="fulltext")
    assert hit.id == memory_id
    assert (hit.kind, hit.user, hit.session, hit.source) == (
        "history",
        "C-001",
        "sess-9",
        "run:abc",
    )
    assert hit.metadata == metadata
    assert hit.created_at == when and hit.created_at.tzinfo == UTC
    as_dict = json.loads(json.dumps(hit.to_dict()))
    assert as_dict["created_at"] == when.isoformat()
    assert as_dict["metadata"] == metadata and as_dict["id"] == memory_id
    default = memory.add("no time given")
    (fresh,) = memory.search("no time given", mode="fulltext", k=1)
    assert fresh.id == default
    assert abs(fresh.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert (fresh.kind, fresh.user, fresh.metadata) == ("note", None, {})


def test_delete(tmp_path: Path) -> None:
    memory = LongTermMemory(tmp_path, embedder="hash")
    keep, gone = memory.add_many([{"text": "keep this one"}, {"text": "delete this one"}])
    assert memory.delete(gone) is True
    assert memory.delete(gone) is False
    assert memory.count() == 1
    assert [h.id for h in memory.search("this one", mode="hybrid")] == [keep]


# --- full-text freshness, compaction, ANN index ---------------------------------------


def test_new_rows_are_found_by_full_text_before_and_after_optimize(tmp_path: Path) -> None:
    memory = LongTermMemory(tmp_path, embedder="hash", optimize_every=0)
    memory.add("the blender was returned", id="old")
    memory.optimize()
    memory.add("the kettle was returned", id="new")
    (text_index,) = [i for i in memory.table.list_indices() if i.columns == ["text"]]
    assert memory.table.index_stats(text_index.name).num_unindexed_rows == 1
    assert {h.id for h in memory.search("returned", mode="fulltext")} == {"old", "new"}
    assert [h.id for h in memory.search("kettle", mode="fulltext")] == ["new"]
    memory.optimize()
    assert memory.table.index_stats(text_index.name).num_unindexed_rows == 0
    assert [h.id for h in memory.search("kettle", mode="fulltext")] == ["new"]


def test_single_adds_are_compacted_every_optimize_every_writes(tmp_path: Path) -> None:
    manual = LongTermMemory(tmp_path, table="manual", embedder="hash", optimize_every=0)
    auto = LongTermMemory(tmp_path, table="auto", embedder="hash", optimize_every=10)
    for i in range(25):
        manual.add(f"memory number {i}")
        auto.add(f"memory number {i}")
    assert fragments(manual) == 25
    # Compacted after adds 10 and 20 (LanceDB keeps indexed and new rows in separate
    # fragments: 2 are left), then 5 single adds.
    assert fragments(auto) == 2 + 5
    assert auto.count() == manual.count() == 25


def test_ann_index_is_built_once_the_table_is_large_enough(tmp_path: Path) -> None:
    memory = LongTermMemory(tmp_path, embedder="hash", optimize_every=0, index_threshold=300)
    rows = [{"text": f"customer {i} asked about order O-{i} and its parcel"} for i in range(299)]
    ids = memory.add_many(rows)
    memory.optimize()
    assert {tuple(i.columns) for i in memory.table.list_indices()} == {("text",)}
    ids.append(memory.add("customer 299 asked about order O-299 and its parcel"))
    memory.optimize()
    (vector_index,) = [i for i in memory.table.list_indices() if i.columns == ["vector"]]
    assert vector_index.index_type == "IvfHnswSq"
    assert memory.table.index_stats(vector_index.name).distance_type == "cosine"
    hits = memory.search("customer 123 asked about order O-123 and its parcel", mode="semantic")
    assert hits[0].id == ids[123]


# --- processes -----------------------------------------------------------------------


def _write_memories(path: str, writer: int, count: int) -> None:
    memory = LongTermMemory(path, embedder="hash", optimize_every=20)
    for i in range(count):
        memory.add(f"memory {i} of writer {writer}", user=f"w{writer}")


def test_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # fork crashes LanceDB
    writers = [
        context.Process(target=_write_memories, args=(str(tmp_path), w, 50)) for w in range(3)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=90)
    assert [p.exitcode for p in writers] == [0, 0, 0]
    memory = LongTermMemory(tmp_path, embedder="hash")
    assert memory.count() == 150
    for w in range(3):
        assert memory.table.count_rows(f"user = 'w{w}'") == 50


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_new_process_reopens_the_table_with_its_embedder(tmp_path: Path) -> None:
    memory = LongTermMemory(tmp_path)  # MiniLM
    wanted = memory.add("Bob wants to be contacted by text message, never by phone call")
    memory.add("The warehouse closes at six on Fridays")
    done = _run(
        f"""
        import json, sys
        from agentlab.memory import LongTermMemory
        memory = LongTermMemory({str(tmp_path)!r})
        new = memory.add("Refunds go back to the original card")
        hits = memory.search("how should we get in touch with Bob", mode="semantic", k=1)
        print(json.dumps([hits[0].id, memory.count()]))
        """
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [wanted, 3]
    # Plain LanceDB works too once agentlab's module has registered the function.
    done = _run(
        f"""
        import lancedb
        import agentlab.memory.long_term
        table = lancedb.connect({str(tmp_path)!r}).open_table("memories")
        print(table.search("money returned to my card").limit(1).to_list()[0]["text"])
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Refunds go back to the original card"


def test_reopening_with_another_embedder_is_refused(tmp_path: Path) -> None:
    LongTermMemory(tmp_path, embedder="hash").add("a memory")
    with pytest.raises(UserError, match=r"created with the embedder 'hash-256'.*embedder='hash'"):
        LongTermMemory(tmp_path)
    with pytest.raises(UserError, match=r"'hash-256', not 'hash-64'"):
        LongTermMemory(tmp_path, embedder=HashEmbedder(dims=64))
    assert LongTermMemory(tmp_path, embedder=HashEmbedder()).count() == 1


class ReversedHash(Embedder):
    """A custom embedder: hashing of the reversed text."""

    name = "test-reversed-hash"
    dims = 32

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return HashEmbedder(self.dims).embed([t[::-1] for t in texts])


def test_a_custom_embedder_is_used_on_add_and_search(tmp_path: Path) -> None:
    embedder = ReversedHash()
    memory = LongTermMemory(tmp_path, embedder=embedder)
    assert memory.embedder is embedder
    memory.add_many([{"text": "tea with lemon", "id": "tea"}, {"text": "coffee, black"}])
    assert embedder.calls == 1
    assert memory.search("lemon tea", mode="semantic")[0].id == "tea"
    assert embedder.calls == 2
    assert memory.table.schema.field("vector").type.list_size == 32
    with pytest.raises(UserError, match=r"'test-reversed-hash'.*an Embedder instance named"):
        LongTermMemory(tmp_path, embedder="hash")


# --- errors ---------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors_and_store_nothing(tmp_path: Path) -> None:
    memory = LongTermMemory(tmp_path, embedder="hash")
    memory.add("already stored", id="m1")
    bad_calls: list[tuple[Any, str]] = [
        (lambda: memory.search(""), "non-empty query"),
        (lambda: memory.search("   "), "non-empty query"),
        (lambda: memory.search("x", k=0), "k >= 1"),
        (lambda: memory.search("x", mode="vector"), "semantic, fulltext, hybrid"),
        (lambda: memory.search("x", kind="secret"), "history, preference, knowledge, note"),
        (lambda: memory.search("x", kind=[]), "use one of"),
        (lambda: memory.search("x", since=datetime(2026, 1, 1)), "timezone-aware"),
        (lambda: memory.search("x", user=7), "strings"),
        (lambda: memory.add(""), "non-empty text"),
        (lambda: memory.add("x", kind="secret"), "unknown memory kind 'secret'"),
        (lambda: memory.add("x", created_at=datetime(2026, 1, 1)), "timezone-aware"),
        (lambda: memory.add("x", metadata={"when": datetime.now(UTC)}), "JSON-serialisable"),
        (lambda: memory.add("x", metadata=["not", "a", "dict"]), "must be a dict"),
        (lambda: memory.add("x", id="m1"), "'m1' already exists"),
        (lambda: memory.add_many([{"text": "ok"}, {"text": "ok", "colour": 1}]), "colour"),
        (lambda: memory.add_many([{"text": "ok"}, {"text": ""}]), "non-empty text"),
        (lambda: memory.add_many([{"text": "a", "id": "x"}, {"text": "b", "id": "x"}]), "same id"),
        (lambda: LongTermMemory(tmp_path, embedder="openai"), "'minilm'.*'hash'"),
        (lambda: LongTermMemory(tmp_path, optimize_every=-1), "optimize_every"),
    ]
    for call, message in bad_calls:
        with pytest.raises(UserError, match=message):
            call()
    assert memory.count() == 1
    assert [h.id for h in memory.search("already stored", mode="fulltext")] == ["m1"]


def test_storage_failures_name_the_path(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    with pytest.raises(MemoryStoreError, match=str(not_a_directory)):
        LongTermMemory(not_a_directory, embedder="hash")


def test_default_path_is_in_the_workspace(workspace: Path) -> None:
    memory = LongTermMemory(embedder="hash")
    assert memory.path == workspace.absolute() / "memory" / "lancedb"
    memory.add("stored in the workspace")
    assert LongTermMemory.in_workspace(workspace, embedder="hash").count() == 1


# --- embedders ------------------------------------------------------------------------


def test_minilm_vectors_are_normalised_and_independent_of_batching() -> None:
    texts = ["short", "a much longer sentence that needs padding in a shared batch " * 3, ""]
    embedder = MiniLMEmbedder(batch_size=2)
    together = embedder.embed(texts)
    alone = np.vstack([embedder.embed([t]) for t in texts])
    assert together.shape == (3, 384) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-4)  # padding is masked out
    assert embedder.embed([]).shape == (0, 384)


def test_minilm_matches_paraphrases_over_shared_words() -> None:
    query, paraphrase, distractor = MiniLMEmbedder().embed(
        [
            "Can I pay with Bitcoin?",
            "Payments accepted: Visa, Mastercard, PayPal and bank transfer; no cryptocurrency.",
            "Ana wants to pay with her credit card points on the next order.",
        ]
    )
    assert query @ paraphrase > query @ distractor


def test_hash_embedder_is_deterministic_and_normalised() -> None:
    embedder = HashEmbedder(dims=64)
    vectors = embedder.embed(["Refund my order", "refund my ORDER", "ship it", ""])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(vectors[0], vectors[1])  # case-insensitive
    assert vectors[0] @ vectors[2] < 0.5
    # crc32, not Python's per-process salted hash(): the same buckets in every process.
    assert np.flatnonzero(HashEmbedder(dims=16).embed(["tea"])[0]).tolist() == [2, 7]


# --- retrieval quality ----------------------------------------------------------------


def test_retrieval_dataset_is_paraphrased_with_lexical_distractors() -> None:
    memories, queries = recall_bench.load_dataset()
    by_id = {m["id"]: m for m in memories}
    assert len(by_id) == len(memories) >= 60
    assert len(queries) >= 20 and len({q.id for q in queries}) == len(queries)
    assert {m["kind"] for m in memories} == {"history", "preference", "knowledge", "note"}
    for q in queries:
        words = recall_bench.content_words(q.query)
        assert q.relevant and q.distractors and set(q.relevant) <= set(by_id) >= set(q.distractors)
        shared = {m: len(words & recall_bench.content_words(by_id[m]["text"])) for m in by_id}
        # The answer shares at most a name with the query; a distractor shares more.
        assert max(shared[m] for m in q.relevant) <= 1, q.id
        assert max(shared[m] for m in q.distractors) > max(shared[m] for m in q.relevant), q.id


def test_semantic_recall_on_the_retrieval_dataset(tmp_path: Path) -> None:
    memories, queries = recall_bench.load_dataset()
    memory = LongTermMemory(tmp_path)
    recall_bench.load_memory(memory, memories)
    assert recall_bench.evaluate(memory, queries, "semantic", 5)["recall"] >= 0.8
    hit = memory.search(queries[0].query, mode="semantic", k=1)[0]
    assert isinstance(hit, MemoryHit) and hit.id in queries[0].relevant
