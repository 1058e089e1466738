"""Memory speed: short-term key-value ops, long-term search latency, embedding rate.

    python benchmarks/memory.py [--quick] [--queries 200]

* ``kv_embedded_ops_s`` / ``kv_redis_ops_s``: get/set mix on the short-term stores
  (``benchmarks/memory_kv.py``).
* ``embed_sentences_s``: MiniLM (int8 ONNX, all cores) over 2,000 generated
  shop-support sentences of 8 to 30 words, after a warm-up.
* ``ltm_top10_p50_ms_10k_flat``: median ``LongTermMemory.search(mode="semantic",
  k=10)`` over 10,000 memories without a vector index.
* ``ltm_top10_p50_ms_100k_indexed``: the same over 100,000 memories with the
  IVF-HNSW-SQ index (``create_index``); also its build time and its recall@10
  against exact search. ``--quick`` skips the 100k table (the index build takes
  minutes) and reports null.

Embedding 100k sentences would take minutes, so the rows' vectors are the MiniLM
vectors of the 2,000 sentences plus Gaussian noise (renormalised): clustered like
real text embeddings. Queries are MiniLM vectors of 200 held-out question
sentences. A lookup embedder serves these precomputed vectors to LongTermMemory
(its texts are row keys), so search latency excludes query embedding, which is
reported on its own (``embed_query_p50_ms``). Human-readable lines go to stderr;
the last line (stdout) is all figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from memory_kv import kv_benchmark

from agentlab.memory import Embedder, LongTermMemory, MiniLMEmbedder

DIMS = 384
BATCH = 10_000
# Per dimension: rows made from one sentence have a cosine similarity of ~0.68.
NOISE = 0.035

NAMES = ["Ana", "Bob", "Carla", "Dan", "Eve", "Farid", "Grace", "Hugo"]
PRODUCTS = [
    "espresso machine",
    "running shoes",
    "laptop bag",
    "blue kettle",
    "standing desk",
    "noise-cancelling headphones",
    "phone charger",
    "winter jacket",
    "coffee grinder",
    "gift card",
]
CARRIERS = ["DHL", "UPS", "the national post", "a freight courier"]
FACTS = [
    "{n} asked where order O-{o} is; it is in transit with {c} and should arrive on {d}.",
    "{n} prefers to be contacted by email rather than by phone.",
    "{n} wants the {p} delivered after 5 pm because they work during the day.",
    "The {p} in order O-{o} arrived damaged, so we sent a replacement and a prepaid label.",
    "{n} returned the {p} within 30 days and the refund of ${a} went back to the card.",
    "Customers can return unused items within 30 days of delivery for a full refund.",
    "Gold members get free express shipping on every order with no minimum spend.",
    "{n} asked whether the {p} comes with a warranty; it has two years from the shop.",
    "Order O-{o} was cancelled at {n}'s request before it left the warehouse.",
    "{c} lost the parcel for order O-{o}; we opened a trace and reshipped the {p}.",
    "{n} is allergic to latex, so never include latex gloves as free samples.",
    "The discount code failed for {n} because it had already been used once.",
    "{n} asked to change the delivery address of order O-{o} to their office.",
]
# Follow-up sentences of support notes.
EXTRAS = [
    "They were polite but clearly frustrated about the delay.",
    "We apologised and offered a voucher of ${a} for the next order.",
    "The ticket was closed after the customer confirmed everything was fine.",
    "A follow-up email was scheduled for {d} in case the problem comes back.",
    "The agent noted that the same issue happened once before, in the spring, "
    "with a different carrier and a different product, and was solved by a reshipment.",
]
QUESTIONS = [
    "Has {n}'s {p} been shipped yet?",
    "How does {n} like to be contacted?",
    "What did we do about the broken {p}?",
    "Can {n} still send the {p} back for a refund?",
    "Which carrier has order O-{o}?",
    "Is there anything {n} should never receive?",
    "Why did {n}'s coupon not work?",
    "When is {n} at home to receive a delivery?",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


def sentences(templates: list[str], count: int, seed: int) -> list[str]:
    """`count` different sentences: templates filled in at random."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        text = rng.choice(templates).format(
            n=rng.choice(NAMES),
            p=rng.choice(PRODUCTS),
            c=rng.choice(CARRIERS),
            d=rng.choice(DAYS),
            o=rng.randint(1001, 1999),
            a=rng.randint(5, 300),
        )
        out[text] = None
    return list(out)


class LookupEmbedder(Embedder):
    """Serves precomputed vectors: the text ``"row:12"`` is row 12, ``"query:3"`` query 3."""

    dims = DIMS

    def __init__(self, rows: np.ndarray, queries: np.ndarray) -> None:
        self.name = f"benchmark-lookup-{len(rows)}"  # one per table: names pick the embedder
        self.vectors = {"row": rows, "query": queries}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), DIMS), dtype=np.float32)
        for i, text in enumerate(texts):
            table, index = text.split(":")
            out[i] = self.vectors[table][int(index)]
        return out


def noisy_rows(base: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = base[rng.integers(0, len(base), count)]
    rows = rows + rng.normal(scale=NOISE, size=rows.shape).astype(np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def fill(memory: LongTermMemory, count: int) -> float:
    """Insert rows 0..count-1 in batches; rows per second."""
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        memory.add_many(
            {"text": f"row:{i}", "kind": "knowledge"}
            for i in range(start, min(count, start + BATCH))
        )
    rate = count / (time.perf_counter() - started)
    memory.optimize()
    return rate


def search_ms(memory: LongTermMemory, queries: int) -> tuple[float, list[list[int]]]:
    """Median milliseconds of a top-10 semantic search, and the rows each query found."""
    for q in range(min(queries, 20)):  # warm up
        memory.search(f"query:{q}", mode="semantic", k=10)
    times, found = [], []
    for q in range(queries):
        started = time.perf_counter()
        hits = memory.search(f"query:{q}", mode="semantic", k=10)
        times.append((time.perf_counter() - started) * 1000)
        found.append([int(h.text.split(":")[1]) for h in hits])
    return statistics.median(times), found


def exact_top10(rows: np.ndarray, queries: np.ndarray) -> list[list[int]]:
    return np.argsort(-(queries @ rows.T), axis=1)[:, :10].tolist()


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return sum(len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=False)) / len(truth)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 100k index build")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    figures: dict[str, Any] = {}

    figures.update(kv_benchmark())
    log(f"kv: embedded {figures['kv_embedded_ops_s']:,} ops/s, redis {figures['kv_redis_ops_s']:,}")

    minilm = MiniLMEmbedder()
    texts = sentences(FACTS + EXTRAS, 2000, seed=1)
    questions = sentences(QUESTIONS, args.queries, seed=2)
    minilm.embed(texts[:64])  # load the model, warm up
    started = time.perf_counter()
    base = minilm.embed(texts)
    figures["embed_sentences_s"] = round(len(texts) / (time.perf_counter() - started))
    query_ms = []
    for question in questions[:50]:
        started = time.perf_counter()
        minilm.embed([question])
        query_ms.append((time.perf_counter() - started) * 1000)
    figures["embed_query_p50_ms"] = round(statistics.median(query_ms), 2)
    words = statistics.mean(len(t.split()) for t in texts)
    log(
        f"embedding: {figures['embed_sentences_s']} sentences/s ({words:.0f} words on "
        f"average, {minilm.threads} threads); one query {figures['embed_query_p50_ms']} ms"
    )
    query_vectors = minilm.embed(questions)

    with tempfile.TemporaryDirectory() as tmp:
        rows = noisy_rows(base, 10_000, seed=3)
        memory = LongTermMemory(
            tmp, table="flat10k", embedder=LookupEmbedder(rows, query_vectors), optimize_every=0
        )
        figures["ltm_insert_rows_s"] = round(fill(memory, len(rows)))
        p50, found = search_ms(memory, args.queries)
        figures["ltm_top10_p50_ms_10k_flat"] = round(p50, 2)
        figures["ltm_recall_at_10_10k_flat"] = round(
            recall(found, exact_top10(rows, query_vectors)), 3
        )
        log(
            f"10k flat: insert {figures['ltm_insert_rows_s']:,} rows/s, top-10 p50 {p50:.2f} ms, "
            f"recall@10 {figures['ltm_recall_at_10_10k_flat']}"
        )

        if args.quick:
            figures["ltm_top10_p50_ms_100k_indexed"] = None
            log("100k indexed: skipped (--quick): filling and indexing 100k rows takes minutes")
        else:
            rows = noisy_rows(base, 100_000, seed=4)
            memory = LongTermMemory(
                tmp,
                table="idx100k",
                embedder=LookupEmbedder(rows, query_vectors),
                optimize_every=0,
                index_threshold=len(rows) + 1,  # flat until create_index()
            )
            fill(memory, len(rows))
            p50_flat, _ = search_ms(memory, 20)
            started = time.perf_counter()
            memory.create_index()
            figures["ltm_index_build_s_100k"] = round(time.perf_counter() - started, 1)
            p50, found = search_ms(memory, args.queries)
            figures["ltm_top10_p50_ms_100k_indexed"] = round(p50, 2)
            figures["ltm_top10_p50_ms_100k_flat"] = round(p50_flat, 2)
            truth = exact_top10(rows, query_vectors[:50])
            figures["ltm_recall_at_10_100k_indexed"] = round(recall(found[:50], truth), 3)
            log(
                f"100k: index built in {figures['ltm_index_build_s_100k']} s; top-10 p50 "
                f"{p50:.2f} ms indexed (recall@10 {figures['ltm_recall_at_10_100k_indexed']} "
                f"vs exact), {p50_flat:.1f} ms flat"
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
