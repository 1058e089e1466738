"""The trace store at scale: ingest, the two notebook queries, retention.

    python benchmarks/trace_store.py [--spans 1000000] [--seed 7]

Generates `--spans` spans (runs, model calls and tool calls) of several agents
over the last 60 days and emits them as trace events through the real writers
(one buffered :class:`~agentlab.tracing.TraceWriter` per agent, as if each ran
in its own process; secrets are redacted as always), then measures:

* ``ingest_spans_per_s``: :meth:`TraceStore.ingest` of every segment into
  DuckDB (target >= 100,000);
* ``run_query_ms``: the median of :meth:`TraceStore.steps` over random runs
  (one run's steps with cost and latency; target <= 50 ms at 1M spans);
* ``dashboard_query_ms``: the median of :meth:`TraceStore.cost_by_day` (cost per
  agent per day over everything; target <= 500 ms);
* ``explorer_page_ms``, ``explorer_page_filtered_ms``: the median of what the
  trace explorer reads to show its first page (:meth:`TraceStore.count_runs`, then
  :meth:`TraceStore.runs_page` of 50 runs) with no filter, and with an agent and a
  status filter (target <= 200 ms);
* ``store_mb_per_million_spans``: ``traces.duckdb`` on disk after ingest;
* ``prune_s``, ``compact_s``, ``store_mb_before_prune``, ``store_mb_after_prune``,
  ``store_mb_after_compact``: :meth:`TraceStore.prune` of the runs older than
  30 days (about half of the spans), then :meth:`TraceStore.compact` on its own.

Each run has 5 to 10 steps; each step but the last is a model call asking for one
or two tool calls. Runs start in time order over the 60 days, as they would in
production. Every query goes through :class:`TraceStore` as a notebook's would
(lock, attach the file, check for new lines, query, detach). Human-readable lines
go to stderr; the last line (stdout) is all figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from agentlab.events import Event, ModelCallEvent, RunFinished, RunStarted, ToolCallEvent
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage
from agentlab.tracing import TraceStore, TraceWriter
from agentlab.tracing.queries import RunFilter

DAYS = 60
RETAIN = timedelta(days=30)
AGENTS = {  # agent: (model, tools)
    "support": ("openai:gpt-4.1-mini", ("lookup_order", "refund", "search_faq")),
    "research": ("openai:gpt-4.1", ("web_search", "fetch_page", "summarize")),
    "coder": ("openai:gpt-4.1", ("read_file", "run_tests", "grep")),
    "billing": ("local:smollm2", ("get_invoice", "charge")),
    "triage": ("openai:gpt-4.1-mini", ("classify", "assign")),
    "sql": ("openai:gpt-4.1-mini", ("list_tables", "run_query")),
}
PRICES = {  # US dollars per million input and output tokens
    "openai:gpt-4.1-mini": (0.4, 1.6),
    "openai:gpt-4.1": (2.0, 8.0),
    "local:smollm2": (0.0, 0.0),
}
WORDS = (
    *("order", "shipped", "invoice", "refund", "customer", "account", "parcel", "delayed"),
    *("address", "warehouse", "payment", "card", "declined", "subscription", "renewal"),
    *("discount", "weekly", "report", "query", "table", "rows", "latency", "error", "retry"),
    *("timeout", "search", "results", "page", "summary", "ticket", "priority"),
)
STATUSES = (("completed", 90), ("failed", 5), ("max_steps", 3), ("budget_exceeded", 2))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Generator:
    """Makes the events of realistic runs, deterministically from `seed`."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.statuses = [s for s, weight in STATUSES for _ in range(weight)]

    def text(self, low: int, high: int) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(low, high)))

    def run(self, agent: str, t: float) -> Iterator[Event]:
        """The events of one run of `agent` started at `t`: start, steps, finish."""
        rng = self.rng
        model, tools = AGENTS[agent]
        run_id = os.urandom(16).hex()
        yield RunStarted(
            run_id=run_id,
            agent=agent,
            model=model,
            input=self.text(8, 30),
            started_at=t,
            metadata={"user": f"u{rng.randrange(500)}", "channel": rng.choice(("web", "api"))},
        )
        steps = rng.randint(5, 10)
        totals = [0, 0, 0.0]
        new: list[Message] = [UserMessage(content=self.text(8, 30))]
        for step in range(1, steps + 1):
            last = step == steps
            calls = () if last else self.tool_calls(run_id, step, tools)
            call, t = self.model_call(run_id, step, model, tools, new, calls, t, totals)
            yield call
            new = []
            for tool_call in calls:
                event = self.tool_call(run_id, step, tool_call, t)
                t += event.latency_ms / 1000
                content = event.result or event.error or ""
                new.append(
                    ToolMessage(tool_call_id=tool_call.id, name=tool_call.name, content=content)
                )
                yield event
        yield RunFinished(
            run_id=run_id,
            status=rng.choice(self.statuses),  # type: ignore[arg-type]
            output=self.text(10, 40),
            steps=steps,
            input_tokens=int(totals[0]),
            output_tokens=int(totals[1]),
            cost=totals[2],
            latency_ms=1000 * (t - call.started_at) + call.latency_ms,
            ended_at=t,
        )

    def tool_calls(self, run_id: str, step: int, tools: tuple[str, ...]) -> tuple[ToolCall, ...]:
        n = 1 if self.rng.random() < 0.8 else 2
        return tuple(
            ToolCall(
                id=f"call_{run_id[:8]}_{step}_{i}",
                name=self.rng.choice(tools),
                arguments=json.dumps({"query": self.text(2, 6), "limit": self.rng.randint(1, 20)}),
            )
            for i in range(n)
        )

    def model_call(
        self,
        run_id: str,
        step: int,
        model: str,
        tools: tuple[str, ...],
        new: list[Message],
        calls: tuple[ToolCall, ...],
        t: float,
        totals: list[Any],
    ) -> tuple[ModelCallEvent, float]:
        rng = self.rng
        input_tokens = rng.randint(300, 1500) + 200 * step
        output_tokens = rng.randint(20, 300)
        per_in, per_out = PRICES[model]
        cost = (input_tokens * per_in + output_tokens * per_out) / 1e6
        latency = rng.lognormvariate(6.5, 0.5)  # ~700 ms
        totals[0] += input_tokens
        totals[1] += output_tokens
        totals[2] += cost
        response = AssistantMessage(content=None if calls else self.text(10, 40), tool_calls=calls)
        event = ModelCallEvent(
            id=f"{run_id}-{step}",
            run_id=run_id,
            step=step,
            model=model,
            messages=new,
            context_messages=2 * step,
            tools=list(tools),
            response=response,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            latency_ms=latency,
            started_at=t,
        )
        return event, t + latency / 1000

    def tool_call(self, run_id: str, step: int, call: ToolCall, t: float) -> ToolCallEvent:
        ok = self.rng.random() < 0.95
        return ToolCallEvent(
            id=f"{run_id}-{step}-{call.id[-1]}",
            run_id=run_id,
            step=step,
            tool=call.name,
            arguments=call.arguments,
            result=self.text(10, 60) if ok else None,
            status="ok" if ok else "error",
            error=None if ok else "upstream answered 503",
            latency_ms=self.rng.lognormvariate(4.0, 1.0),  # ~55 ms, long tail
            started_at=t,
            call_id=call.id,
        )


def generate(workspace: str, spans: int, seed: int) -> tuple[int, int]:
    """Emit runs until `spans` spans are written; return (runs, spans)."""
    now = time.time()
    generator = Generator(seed)
    writers = {agent: TraceWriter(workspace, durable=False) for agent in AGENTS}
    names = list(AGENTS)
    runs = written = 0
    while written < spans:
        agent = generator.rng.choice(names)
        writer = writers[agent]
        # Runs arrive in time order over the last DAYS days, as in production.
        started = now - DAYS * 86400 * (1 - written / spans) + generator.rng.uniform(-300, 0)
        for event in generator.run(agent, started):
            writer.emit(event)
            if not isinstance(event, RunFinished):
                written += 1
        runs += 1
    for writer in writers.values():
        writer.close()
    return runs, written


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def mb(path: str | os.PathLike[str]) -> float:
    return os.path.getsize(path) / 1e6


def retention(store: TraceStore, spans: int) -> dict[str, float]:
    """Prune the runs older than RETAIN (about half), then compact; time both."""
    before = mb(store.path)
    seconds, report = timed(lambda: store.prune(RETAIN, compact=False))
    pruned = sum(report.rows.get(t, 0) for t in ("runs", "model_calls", "tool_calls"))
    after_prune = mb(store.path)
    log(f"prune: {report} in {seconds:.2f} s ({pruned / spans:.0%} of the spans)")
    compact_s, compacted = timed(store.compact)
    log(f"compact: {compacted}")
    return {
        "pruned_spans": pruned,
        "prune_s": round(seconds, 2),
        "compact_s": round(compact_s, 2),
        "store_mb_before_prune": round(before, 1),
        "store_mb_after_prune": round(after_prune, 1),
        "store_mb_after_compact": round(mb(store.path), 1),
    }


def explorer(store: TraceStore) -> dict[str, float]:
    """The trace explorer's first page (count, then 50 runs), unfiltered and filtered."""
    results = {}
    cases = {
        "explorer_page_ms": RunFilter(),
        "explorer_page_filtered_ms": RunFilter(agent="support", status="failed"),
    }
    for name, where in cases.items():

        def first_page(where: RunFilter = where) -> int:
            total = store.count_runs(where)
            if len(store.runs_page(where, limit=50)) != min(50, total):
                raise SystemExit(f"the first page of {where} is not {min(50, total)} runs")
            return total

        times = [timed(first_page)[0] for _ in range(5)]
        results[name] = round(1000 * statistics.median(times), 1)
        log(f"{name}: {results[name]} ms ({first_page():,} runs match {where})")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans to generate")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.spans < 100:
        parser.error("--spans must be at least 100")
    results: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory() as workspace:
        store = TraceStore(workspace, lock_timeout=600)
        store.sql("SELECT 1")  # an existing (migrated) store, as in production
        seconds, (runs, spans) = timed(lambda: generate(workspace, args.spans, args.seed))
        log(f"generated {spans:,} spans in {runs:,} runs in {seconds:.1f} s")
        results.update(spans=spans, runs=runs, generate_s=round(seconds, 1))

        seconds, events = timed(store.ingest)
        rate = spans / seconds
        log(f"ingested {events:,} events in {seconds:.2f} s = {rate:,.0f} spans/s")
        results.update(ingest_s=round(seconds, 2), ingest_spans_per_s=round(rate))
        [(stored,)] = store.sql(
            "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM model_calls)"
            " + (SELECT count(*) FROM tool_calls)"
        )
        if stored != spans:
            raise SystemExit(f"the store holds {stored} spans, not the {spans} written")
        size = mb(store.path)
        results["store_mb_per_million_spans"] = round(size * 1e6 / spans, 1)
        log(f"store: {size:.1f} MB = {results['store_mb_per_million_spans']} MB per 1M spans")

        run_ids = [r[0] for r in store.sql("SELECT run_id FROM runs USING SAMPLE 50 ROWS")]
        times = []
        for run_id in run_ids:
            seconds, steps = timed(lambda run_id=run_id: store.steps(run_id))
            if len(steps) < 5:
                raise SystemExit(f"run {run_id} has {len(steps)} steps, not 5 or more")
            times.append(seconds)
        results["run_query_ms"] = round(1000 * statistics.median(times), 1)
        times = [timed(store.cost_by_day)[0] for _ in range(5)]
        results["dashboard_query_ms"] = round(1000 * statistics.median(times), 1)
        run_ms, dashboard_ms = results["run_query_ms"], results["dashboard_query_ms"]
        log(f"queries: run {run_ms} ms, dashboard {dashboard_ms} ms")
        results.update(explorer(store))
        results.update(retention(store, spans))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
