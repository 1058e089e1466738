"""Reproducible evaluations: the same dataset, seed and scripted model give the same
report, byte for byte, apart from its ids and timings (which
:func:`~agentlab.evals.reproducible_report` blanks), whatever the concurrency or
executor. The model here samples (from :func:`~agentlab.evals.case_random`) and waits
a random time, so concurrent cases finish in a different order than they started."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentlab.demo import build_support_agent, create_demo_database
from agentlab.errors import UserError
from agentlab.evals import (
    AgentSpec,
    EvalReport,
    RayExecutor,
    case_random,
    evaluate,
    evaluate_sync,
    reproducible_report,
)
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition
from agentlab.models import FunctionModel
from agentlab.tracing import TraceStore

SUPPORT_DATASET = Path(__file__).parents[1] / "evals" / "support_agent.jsonl"
ORDERS = ("O-1001", "O-1002", "O-1003", "O-1004", "O-1005")


async def sample(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> Any:
    """Looks up a random order, then answers with its details and a random number."""
    draw = case_random()
    await asyncio.sleep(draw.random() / 100)
    if not any(m.role == "tool" for m in messages):
        arguments = json.dumps({"order_id": draw.choice(ORDERS)})
        return AssistantMessage(
            tool_calls=(ToolCall(id="c1", name="get_order", arguments=arguments),)
        )
    return f"{messages[-1].content} (ticket {draw.randint(0, 10**6)})"


@pytest.fixture
def spec(tmp_path) -> AgentSpec:
    db = create_demo_database(tmp_path / "shop.duckdb")
    model = FunctionModel(sample, name="sampler")
    return AgentSpec(build_support_agent, model, db_path=db, trace=tmp_path / "ws")


def fingerprint(report: EvalReport) -> tuple[str, str]:
    """The report's JSON and text forms, ids and timings blanked."""
    masked = reproducible_report(report)
    return json.dumps(masked.to_dict(), sort_keys=True), masked.table()


def differing_fields(a: Any, b: Any, path: str = "") -> set[str]:
    """The paths (list indexes as [*]) where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return {p for k in a for p in differing_fields(a[k], b[k], f"{path}.{k}")}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return {p for x, y in zip(a, b, strict=True) for p in differing_fields(x, y, f"{path}[*]")}
    return set() if a == b else {path}


@pytest.mark.slow  # evaluates the support dataset several times (~3-4 s)
async def test_the_same_seed_gives_the_same_report_whatever_the_concurrency(spec):
    first = await evaluate(spec, SUPPORT_DATASET, concurrency=4, seed=3)
    again = await evaluate(spec, SUPPORT_DATASET, concurrency=4, seed=3)
    serial = await evaluate(spec, SUPPORT_DATASET, concurrency=1, seed=3)

    assert fingerprint(first) == fingerprint(again) == fingerprint(serial)
    # Only the ids and the measured timings differ between the runs themselves.
    assert differing_fields(first.to_dict(), again.to_dict()) <= {
        ".eval_id",
        ".results[*].run_id",
        ".results[*].latency_ms",
        ".metrics.latency_p50_ms",
        ".metrics.latency_p95_ms",
    }
    # The model's draws made a difference: some cases pass, some fail.
    assert 0 < first.metrics.passed < first.metrics.cases


@pytest.mark.slow  # evaluates the support dataset several times (~3-4 s)
async def test_another_seed_draws_otherwise_and_the_seed_is_recorded(spec, tmp_path):
    three = await evaluate(spec, SUPPORT_DATASET, concurrency=4, seed=3)
    four = await evaluate(spec, SUPPORT_DATASET, concurrency=4, seed=4)

    outputs = [(a.output, b.output) for a, b in zip(three.results, four.results, strict=True)]
    assert sum(a != b for a, b in outputs) > len(outputs) // 2
    assert (three.metadata["seed"], four.metadata["seed"]) == (3, 4)
    stored = TraceStore(tmp_path / "ws").sql(
        "SELECT metadata->>'seed' FROM eval_runs WHERE eval_id = ?", [four.eval_id]
    )
    assert stored == [("4",)]


async def test_seeds_must_be_integers_given_once(spec):
    with pytest.raises(UserError, match="seed must be an integer"):
        await evaluate(spec, SUPPORT_DATASET, seed="3")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="metadata has seed=1 but evaluate"):
        await evaluate(spec, SUPPORT_DATASET, seed=2, metadata={"seed": 1})


def test_case_random_outside_an_eval_says_where_it_works():
    with pytest.raises(UserError, match=r"only available while agentlab\.evals\.evaluate"):
        case_random()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_reproduces_the_local_report(spec, ray_cluster):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # `sample`, by value
    try:
        on_ray = evaluate_sync(
            spec,
            SUPPORT_DATASET,
            concurrency=2,
            seed=3,
            executor=RayExecutor(address=ray_cluster.address, workers=2),
        )
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    local = evaluate_sync(spec, SUPPORT_DATASET, concurrency=4, seed=3)
    assert fingerprint(on_ray) == fingerprint(local)
