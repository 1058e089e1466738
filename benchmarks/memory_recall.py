"""Retrieval quality of long-term memory: recall@5 and MRR per search mode.

    python benchmarks/memory_recall.py [--k 5] [--embedder minilm]

Loads ``evals/memory_retrieval.jsonl`` - shop-support memories, then queries that
paraphrase the memory they should find, each with distractors that share the
query's words but not its meaning - into a temporary ``LongTermMemory``, and
searches every query in each mode. Prints one line per mode to stderr; the last
line (stdout) is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agentlab.memory import LongTermMemory

DATASET = Path(__file__).resolve().parent.parent / "evals" / "memory_retrieval.jsonl"
MODES = ("semantic", "fulltext", "hybrid")
# Words too common to count as shared between a query and a memory.
_STOP_WORDS = """a an and are as at be by can do does for from get had has have he her him
his how i in is it its me my no not of on once or our s she should so that the their them
there they this to too us was we what when which who why will with you your"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True)
class Query:
    id: str
    query: str
    relevant: list[str]
    distractors: list[str]


def load_dataset(path: Path = DATASET) -> tuple[list[dict[str, Any]], list[Query]]:
    """The memories (dicts with id, kind, user, text) and the queries."""
    memories: list[dict[str, Any]] = []
    queries: list[Query] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.pop("type") == "memory":
            memories.append(record)
        else:
            queries.append(Query(**record))
    return memories, queries


def content_words(text: str) -> set[str]:
    """Lower-case words of `text` without stop words (for checking the dataset)."""
    return set(re.findall(r"[a-z0-9]+", text.lower())) - STOP_WORDS


def load_memory(memory: LongTermMemory, memories: list[dict[str, Any]]) -> None:
    """Store the dataset's memories, with their dataset ids, in one batch."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    memory.add_many(
        {
            "id": m["id"],
            "text": m["text"],
            "kind": m["kind"],
            "user": m["user"],
            "created_at": start + timedelta(hours=i),
        }
        for i, m in enumerate(memories)
    )


def evaluate(memory: LongTermMemory, queries: list[Query], mode: str, k: int) -> dict[str, float]:
    """Recall@k (share of relevant memories in the top k) and MRR over `queries`."""
    recall = reciprocal_rank = 0.0
    for query in queries:
        ids = [hit.id for hit in memory.search(query.query, mode=mode, k=k)]  # type: ignore[arg-type]
        recall += len(set(ids) & set(query.relevant)) / len(query.relevant)
        ranks = [ids.index(r) + 1 for r in query.relevant if r in ids]
        reciprocal_rank += 1 / min(ranks) if ranks else 0.0
    return {"recall": recall / len(queries), "mrr": reciprocal_rank / len(queries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--embedder", default="minilm", choices=["minilm", "hash"])
    args = parser.parse_args()
    memories, queries = load_dataset()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        memory = LongTermMemory(tmp, embedder=args.embedder)
        load_memory(memory, memories)
        memory.optimize()
        for mode in MODES:
            started = time.perf_counter()
            result = evaluate(memory, queries, mode, args.k)
            ms = (time.perf_counter() - started) * 1000 / len(queries)
            print(
                f"{mode:>9}: recall@{args.k} {result['recall']:.3f}  MRR {result['mrr']:.3f}"
                f"  ({ms:.1f} ms/query)",
                file=sys.stderr,
            )
            figures[f"recall_at_{args.k}_{mode}"] = round(result["recall"], 3)
            figures[f"mrr_{mode}"] = round(result["mrr"], 3)
    figures["queries"] = len(queries)
    figures["memories"] = len(memories)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
