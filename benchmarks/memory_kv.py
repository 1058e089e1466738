"""Short-term memory speed: key-value operations per second, per backend.

    python benchmarks/memory_kv.py [--ops 20000]

A 50/50 mix of gets and sets (with a ttl) of small JSON values over 1,000 keys,
through ``SessionMemory`` in one thread, after a warm-up. Every set commits on its
own. The embedded store lives in a temporary directory; Redis is a real
``redis-server`` on loopback, started and stopped here. Prints one line per
backend to stderr; the last line (stdout) is all figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from agentlab.memory import EmbeddedStore, RedisStore, SessionMemory

KEYS = 1000
WARMUP = 2000


def ops_per_second(memory: SessionMemory, ops: int) -> float:
    """Run `ops` operations (half gets, half sets) on `memory`; operations per second."""
    rng = random.Random(0)
    keys = [f"tool-output-{i}" for i in range(KEYS)]
    for i, key in enumerate(keys):
        memory.set(key, {"step": i, "tool": "search", "ok": True}, ttl=600)
    plan = [(rng.random() < 0.5, rng.choice(keys)) for _ in range(WARMUP + ops)]

    def run(part: list[tuple[bool, str]]) -> None:
        for i, (get, key) in enumerate(part):
            if get:
                memory.get(key)
            else:
                memory.set(key, {"step": i, "tool": "search", "ok": True}, ttl=600)

    run(plan[:WARMUP])
    start = time.perf_counter()
    run(plan[WARMUP:])
    return ops / (time.perf_counter() - start)


def kv_benchmark(ops: int = 20000) -> dict[str, float]:
    """Operations per second of the embedded and the Redis short-term store."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from _redis import RedisServer

    with tempfile.TemporaryDirectory() as tmp, EmbeddedStore(Path(tmp) / "kv.sqlite3") as store:
        embedded = ops_per_second(store.session("bench", "s1"), ops)
    with RedisServer() as server, RedisStore(server.url) as store:
        on_redis = ops_per_second(store.session("bench", "s1"), ops)
    return {"kv_embedded_ops_s": round(embedded), "kv_redis_ops_s": round(on_redis)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20000)
    args = parser.parse_args()
    result = kv_benchmark(args.ops)
    for name, label in [("kv_embedded_ops_s", "embedded (SQLite)"), ("kv_redis_ops_s", "Redis")]:
        print(f"{label:>18}: {result[name]:>8,.0f} ops/s (50/50 get/set)", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
