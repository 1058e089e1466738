"""Trace writer and ingest speed.

    python benchmarks/trace_emit.py [--events 100000]

Prints microseconds per emit for a typical model call and tool call event
(durable, buffered, and durable+fsync), then ingest throughput into DuckDB; the
last line is all figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import timeit

from agentlab.events import ModelCallEvent, ToolCallEvent
from agentlab.messages import AssistantMessage, ToolCall, ToolMessage
from agentlab.tracing import TraceStore, TraceWriter


def model_call(i: int) -> ModelCallEvent:
    call = ToolCall(id=f"c{i}", name="search", arguments='{"query": "duckdb locking"}')
    return ModelCallEvent(
        id=f"m{i}",
        run_id=f"r{i // 10}",
        step=i % 10 + 1,
        model="openai:gpt-4.1-mini",
        messages=[ToolMessage(tool_call_id=f"c{i - 1}", name="search", content="3 results ...")],
        context_messages=2 * (i % 10) + 2,
        tools=["search", "fetch"],
        response=AssistantMessage(content="Let me search.", tool_calls=(call,)),
        input_tokens=812,
        output_tokens=41,
        cost=0.00041,
        latency_ms=734.2,
        started_at=time.time(),
    )


def tool_call(i: int) -> ToolCallEvent:
    return ToolCallEvent(
        id=f"t{i}",
        run_id=f"r{i // 10}",
        step=i % 10 + 1,
        tool="search",
        arguments='{"query": "duckdb locking"}',
        result="3 results ...",
        latency_ms=12.5,
        started_at=time.time(),
    )


def per_emit_us(writer: TraceWriter, event: ModelCallEvent | ToolCallEvent, n: int) -> float:
    """Best of 5 repeats of `n` emits, in microseconds per emit."""
    return min(timeit.repeat(lambda: writer.emit(event), number=n, repeat=5)) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events to ingest")
    args = parser.parse_args()
    results: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory() as workspace:
        mc, tc = model_call(1), tool_call(1)
        for mode, kwargs, n in (
            ("durable", {"durable": True}, 20_000),
            ("buffered", {"durable": False}, 20_000),
            ("fsync", {"fsync": True}, 300),
        ):
            writer = TraceWriter(workspace, **kwargs)
            results[f"{mode}_model_call_us"] = round(per_emit_us(writer, mc, n), 2)
            results[f"{mode}_tool_call_us"] = round(per_emit_us(writer, tc, n), 2)
            writer.close()
            print(
                f"{mode:>8}: {results[f'{mode}_model_call_us']:7.2f} us/emit (model call), "
                f"{results[f'{mode}_tool_call_us']:7.2f} us/emit (tool call)"
            )
        store = TraceStore(workspace)
        store.ingest()  # the timing loops above repeat ids; start clean
        store.sql("DELETE FROM model_calls; DELETE FROM tool_calls; DELETE FROM runs")

        writer = TraceWriter(workspace, durable=False)
        for i in range(args.events // 2):
            writer.emit(model_call(i))
            writer.emit(tool_call(i))
        writer.close()
        started = time.perf_counter()
        ingested = store.ingest()
        seconds = time.perf_counter() - started
        counts = store.sql("SELECT (SELECT count(*) FROM model_calls) + count(*) FROM tool_calls")
        assert counts == [(ingested,)], (counts, ingested)
        results["ingested_events"] = ingested
        results["ingest_seconds"] = round(seconds, 3)
        results["ingest_events_per_s"] = round(ingested / seconds)
        rate = ingested / seconds
        print(f"  ingest: {ingested} events in {seconds:.2f} s = {rate:,.0f} events/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
