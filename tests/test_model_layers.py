"""The model layers: retries (tenacity), fallbacks and routing, against the fault
server on loopback and scripted models. Every request a server sees is counted:
the SDK's own retries are off, so the counts are the agent's."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence

import pytest

from agentlab import Budget, ReActAgent, tool
from agentlab.errors import (
    ModelAuthError,
    ModelRequestError,
    ModelUnavailableError,
    UnexpectedModelOutputError,
)
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition
from agentlab.models import FallbackModel, FunctionModel, RetryPolicy, RouterModel
from agentlab.models.openai_compat import OpenAIModel
from agentlab.testing import FaultServer
from agentlab.tracing import TraceStore

FAST = RetryPolicy(attempts=3, initial=0.01, max_wait=0.05)


@tool
def lookup(order_id: str) -> dict:
    """Look up an order.

    Args:
        order_id: The order id.
    """
    return {"order_id": order_id, "status": "shipped"}


@pytest.fixture
def server(allow_real_models) -> Iterator[FaultServer]:
    with FaultServer() as fault:
        yield fault


def endpoint(server: FaultServer, **kwargs) -> OpenAIModel:
    kwargs.setdefault("timeout", 5)
    return OpenAIModel("fault", base_url=server.base_url, **kwargs)


def attempts_of(store: TraceStore, run_id: str) -> list[list[dict]]:
    rows = store.sql("select attempts from model_calls where run_id = ? order by step", [run_id])
    return [json.loads(r[0]) for r in rows]


def test_a_rate_limited_request_is_one_step_with_every_attempt(server, workspace) -> None:
    server.set_mode("rate_limit", retry_after=0.05)
    store = TraceStore(workspace)
    agent = ReActAgent(endpoint(server), [lookup], trace=store, retry=FAST)
    result = agent.run_sync("Where is O-1?")
    assert result.status == "failed"
    assert server.requests == 3, "3 attempts, none by the SDK"
    assert result.steps == 1
    (attempts,) = attempts_of(store, result.run_id)
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert all(a["wait_s"] >= 0.05 for a in attempts[:2]), "Retry-After is honoured"
    assert attempts[2]["wait_s"] is None
    assert "HTTP 429" in attempts[0]["error"]
    assert "What to do next: Check that the model server is running" in result.explanation
    assert "3 requests" in result.explanation


def test_a_flapping_server_is_retried_until_it_answers(server, workspace) -> None:
    server.set_mode("flapping", fail=1, every=2, failure="server_error")
    store = TraceStore(workspace)
    agent = ReActAgent(endpoint(server), [lookup], trace=store, retry=FAST)
    result = agent.run_sync("Where is O-1?")
    assert result.ok, result.explanation
    assert result.steps == 2 and server.requests == 4
    first, second = attempts_of(store, result.run_id)
    assert [a["status"] for a in first] == ["error", "ok"]
    assert [a["status"] for a in second] == ["error", "ok"]


@pytest.mark.parametrize(
    ("mode", "error_type"),
    [("malformed", "MalformedResponseError"), ("unavailable", "ModelUnavailableError")],
)
def test_malformed_and_unavailable_replies_are_retried(server, mode, error_type) -> None:
    server.set_mode(mode)
    agent = ReActAgent(endpoint(server), [lookup], trace=False, retry=FAST)
    result = agent.run_sync("Where is O-1?")
    assert result.status == "failed" and server.requests == 3
    assert result.failure["error"] == error_type
    assert server.base_url in result.explanation, "the explanation names the endpoint"


def test_a_hanging_server_times_out_per_attempt(server) -> None:
    server.set_mode("hang", seconds=30)
    agent = ReActAgent(
        endpoint(server, timeout=0.2), [lookup], trace=False, retry=RetryPolicy(2, initial=0.01)
    )
    started = time.monotonic()
    result = agent.run_sync("Where is O-1?")
    assert time.monotonic() - started < 5
    assert result.status == "failed" and server.requests == 2
    assert "did not answer within 0.2 s" in result.explanation


def test_client_errors_are_not_retried_and_say_what_to_fix(allow_real_models) -> None:
    with FaultServer(api_key="right") as server:
        model = OpenAIModel("fault", base_url=server.base_url, api_key="wrong", timeout=5)
        result = ReActAgent(model, [lookup], trace=False, retry=FAST).run_sync("hi")
        assert server.requests == 1
    assert result.failure["error"] == "ModelAuthError"
    assert "Check the API key" in result.explanation

    calls = []

    def refuses(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        calls.append(1)
        raise ModelRequestError("HTTP 400: max_tokens is too large", status_code=400)

    result = ReActAgent(FunctionModel(refuses), trace=False, retry=FAST).run_sync("hi")
    assert len(calls) == 1 and result.failure["error"] == "ModelRequestError"
    assert "check the model name, the settings" in result.explanation


def test_a_long_retry_after_is_not_waited_past_the_wall_time_budget(server) -> None:
    server.set_mode("rate_limit", retry_after=120)
    policy = RetryPolicy(attempts=5, max_retry_after=600)
    agent = ReActAgent(endpoint(server), trace=False, retry=policy, budget=Budget(wall_time=2))
    started = time.monotonic()
    result = agent.run_sync("hi")
    assert time.monotonic() - started < 2
    assert server.requests == 1
    assert "would pass the deadline" in result.explanation


def test_a_retry_after_above_the_policy_limit_goes_to_the_fallback(server, workspace) -> None:
    server.set_mode("rate_limit", retry_after=120)
    store = TraceStore(workspace)
    backup = FunctionModel(lambda messages, tools: "answered by the backup", name="backup")
    agent = ReActAgent(endpoint(server), trace=store, retry=FAST, fallback=[backup])
    result = agent.run_sync("hi")
    assert result.ok and result.output == "answered by the backup"
    assert server.requests == 1, "a 120 s Retry-After is above max_retry_after: no wait"
    (row,) = store.sql("select served_by, route from model_calls where run_id = ?", [result.run_id])
    assert row[0] == "scripted:backup"
    assert row[1].startswith("fallback 1 after openai:fault failed (ModelUnavailableError)")


def test_every_model_failing_lists_each_error() -> None:
    def down(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        raise ModelUnavailableError("connection refused", model="scripted:down")

    def locked(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        raise ModelAuthError("bad key", model="scripted:locked")

    model = FallbackModel([FunctionModel(down, name="down"), FunctionModel(locked, name="locked")])
    result = ReActAgent(model, trace=False, retry=FAST).run_sync("hi")
    assert result.failure["error"] == "AllModelsFailedError"
    assert "scripted:down: connection refused" in result.explanation
    assert "scripted:locked: bad key" in result.explanation
    step = result.failure["tried"]["steps"][0]
    assert [a["model"] for a in step["attempts"]] == [
        "scripted:down",
        "scripted:down",
        "scripted:down",
        "scripted:locked",
    ], "the primary is retried, the auth error is not"


def test_the_router_moves_a_step_to_the_large_model_after_an_invalid_call(workspace) -> None:
    def small(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
        return AssistantMessage(
            tool_calls=(ToolCall(id="c1", name="lookup", arguments='{"order": 1}'),)
        )

    def large(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        return "the large model answers"

    store = TraceStore(workspace)
    router = RouterModel(FunctionModel(small, name="small"), FunctionModel(large, name="large"))
    result = ReActAgent(router, [lookup], trace=store).run_sync("Where is O-1?")
    assert result.ok and result.output == "the large model answers"
    rows = store.sql(
        "select step, served_by, route from model_calls where run_id = ? order by step",
        [result.run_id],
    )
    assert rows == [
        (1, "scripted:small", "router: routine step"),
        (
            2,
            "scripted:large",
            "router: large model, the previous call to 'lookup' had invalid arguments",
        ),
    ]


def test_the_router_takes_rules_and_falls_over_when_the_small_model_fails() -> None:
    def small(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        raise ModelUnavailableError("small is down")

    large = FunctionModel(lambda messages, tools: "large", name="large")
    router = RouterModel(FunctionModel(small, name="small"), large)
    result = ReActAgent(router, trace=False, retry=None).run_sync("hi")
    assert result.ok and result.output == "large"

    long_input = RouterModel(
        FunctionModel(lambda m, t: "small", name="small"),
        large,
        rules=[lambda messages, tools: "long input" if len(messages[-1].content) > 10 else None],
    )
    agent = ReActAgent(long_input, trace=False)
    assert agent.run_sync("short").output == "small"
    assert agent.run_sync("a much longer question").output == "large"


def test_max_steps_counts_failed_model_calls() -> None:
    calls = []

    def broken(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        calls.append(1)
        raise UnexpectedModelOutputError("no usable reply")

    agent = ReActAgent(FunctionModel(broken), trace=False, max_steps=3, max_retries=10)
    result = agent.run_sync("hi")
    assert result.status == "max_steps"
    assert len(calls) == 3 and result.steps == 3


def test_a_cancelled_run_records_its_status(workspace) -> None:
    async def slow(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> str:
        await asyncio.sleep(30)
        return "never"

    store = TraceStore(workspace)
    agent = ReActAgent(FunctionModel(slow), trace=store)

    async def main() -> str:
        run = agent.start("hi")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run.finish(), 0.2)
        return run.id

    run_id = asyncio.run(main())
    run = store.run(run_id)
    assert run["status"] == "cancelled"
    assert "cancelled while it was running" in run["explanation"]
    assert run["failure"]["kind"] == "cancelled"


def test_the_breaker_opens_stops_calls_and_recovers_through_half_open(server, workspace) -> None:
    from agentlab.resilience import BreakerConfig

    server.set_mode("unavailable")
    store = TraceStore(workspace)
    backup = FunctionModel(lambda messages, tools: "backup answer", name="backup")
    agent = ReActAgent(
        endpoint(server),
        trace=store,
        retry=RetryPolicy(2, initial=0.01),
        breaker=BreakerConfig(failure_threshold=3, window_s=60, cooldown_s=0.5),
        fallback=[backup],
    )
    first, second = agent.run_sync("one"), agent.run_sync("two")
    assert server.requests == 3, "the third failure opens the breaker: no 4th request"
    assert first.output == second.output == "backup answer"
    while_open = [agent.run_sync(f"q{i}") for i in range(5)]
    assert server.requests == 3, "no request reaches the endpoint while it is open"
    assert all(r.ok and r.output == "backup answer" for r in while_open)
    (attempts,) = attempts_of(store, while_open[0].run_id)
    assert "Circuit breaker" in attempts[0]["error"] and attempts[0]["latency_ms"] < 50
    assert attempts[0]["error_type"] == "CircuitOpenError"
    assert "What to do" not in attempts[0]["error"], "the advice is the hint, said once"
    server.set_mode("ok")
    time.sleep(0.6)
    recovered = agent.run_sync("after the cooldown")
    assert recovered.ok and server.requests == 4, "one probe, and it closes the breaker"
    rows = store.sql("select from_state, to_state from breaker_transitions order by started_at")
    assert rows == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    (route,) = store.sql("select route from model_calls where run_id = ?", [while_open[0].run_id])[
        0
    ]
    assert route.startswith("fallback 1 after openai:fault failed (CircuitOpenError)")
