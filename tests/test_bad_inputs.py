"""Every bad input ends in a clear message, and nothing already recorded is lost.

Each run here first completes a good step (a successful tool call), then meets the
bad input; the trace store must hold the good step, the failure and the run's
final status with its explanation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from _http import free_port, serve_in_thread

from agentlab.agents import ReActAgent
from agentlab.errors import UnexpectedModelOutputError
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FunctionModel, RetryPolicy
from agentlab.models.openai_compat import OpenAIModel
from agentlab.serve.model_server import create_app
from agentlab.tools import tool
from agentlab.tracing import TraceStore

pytestmark = pytest.mark.timeout(60)


@tool
def get_order(order_id: str) -> dict:
    """Look up an order.

    Args:
        order_id: The order id, like O-1001.
    """
    if not order_id.startswith("O-"):
        raise ValueError(f"order ids start with 'O-', got {order_id!r}")
    return {"order_id": order_id, "status": "shipped"}


GOOD = AssistantMessage(
    tool_calls=(ToolCall(id="call_0", name="get_order", arguments='{"order_id": "O-1"}'),)
)


def after_good_step(bad):
    """A model that makes one good call, then produces `bad` (a reply or an exception)."""

    def reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]):
        if not any(isinstance(m, ToolMessage) for m in messages):
            return GOOD
        if isinstance(bad, Exception):
            raise bad
        return bad

    return FunctionModel(reply)


def call(name, arguments):
    return AssistantMessage(tool_calls=(ToolCall(id="call_9", name=name, arguments=arguments),))


def recorded(store: TraceStore, run_id: str):
    run = store.run(run_id)
    tools = store.sql(
        "select tool, status, result from tool_calls where run_id = ? order by step, id",
        [run_id],
    )
    models = store.sql(
        "select step, status, error from model_calls where run_id = ? order by step", [run_id]
    )
    return run, tools, models


def run_traced(model, workspace, **kwargs):
    store = TraceStore(workspace)
    agent = ReActAgent(model, [get_order], trace=store, **kwargs)
    return store, agent.run_sync("Where is order O-1?")


def assert_good_step_kept(tools, models):
    assert tools[0][:2] == ("get_order", "ok") and '"shipped"' in tools[0][2]
    assert models[0][:2] == (1, "ok")


def test_malformed_model_output(workspace):
    bad = UnexpectedModelOutputError("reply was not JSON: '{\"tool\": '", raw='{"tool": ')
    store, result = run_traced(after_good_step(bad), workspace, max_retries=1)
    run, tools, models = recorded(store, result.run_id)
    assert run["status"] == "failed"
    assert "reply was not JSON" in run["explanation"]
    assert "What to do next: Try a more capable model" in run["explanation"]
    assert_good_step_kept(tools, models)
    assert [m[1] for m in models] == ["ok", "error", "error"]


def test_unknown_tool(workspace):
    store, result = run_traced(after_good_step(call("refund", "{}")), workspace, max_retries=0)
    run, tools, models = recorded(store, result.run_id)
    assert run["status"] == "failed"
    assert "Unknown tool 'refund'. Available tools: get_order." in run["explanation"]
    assert "calling a tool the agent does not have" in run["explanation"]
    assert run["failure"]["error"] == "unknown_tool"
    assert_good_step_kept(tools, models)
    assert tools[1][:2] == ("refund", "unknown_tool")


def test_wrong_argument_types(workspace):
    bad = call("get_order", '{"order_id": 1001}')
    store, result = run_traced(after_good_step(bad), workspace, max_retries=1)
    run, tools, models = recorded(store, result.run_id)
    assert run["status"] == "failed"
    assert "- order_id: Input should be a valid string (got 1001)" in run["explanation"]
    assert [t[1] for t in tools] == ["ok", "invalid_arguments", "invalid_arguments"]
    assert_good_step_kept(tools, models)


def test_tool_exception(workspace):
    bad = call("get_order", '{"order_id": "1001"}')
    store, result = run_traced(after_good_step(bad), workspace, max_retries=0)
    run, tools, models = recorded(store, result.run_id)
    assert run["status"] == "failed"
    assert "raised ValueError: order ids start with 'O-', got '1001'" in run["explanation"]
    assert tools[1][1] == "error"
    assert_good_step_kept(tools, models)


def test_unreachable_endpoint_mid_run(workspace, allow_real_models):
    """The server answers the first step, then goes away: the retried request is one
    step with all its attempts, not a step per attempt."""
    with serve_in_thread(create_app(after_good_step("unused"))) as url:
        model = OpenAIModel("support", base_url=url, timeout=5)
        store = TraceStore(workspace)
        retry = RetryPolicy(attempts=3, initial=0.01)
        agent = ReActAgent(model, [get_order], trace=store, retry=retry)
        run = agent.start("Where is O-1?")
        run.step_sync()
    while not run.done:
        run.step_sync()
    db_run, tools, models = recorded(store, run.id)
    assert db_run["status"] == "failed"
    assert f"Could not reach openai:support at {url}" in db_run["explanation"]
    assert "Check that the model server is running" in db_run["explanation"]
    assert_good_step_kept(tools, models)
    assert [m[1] for m in models] == ["ok", "error"]
    (attempts,) = store.sql("select attempts from model_calls where step = 2")[0]
    attempts = json.loads(attempts)
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert all(a["error_type"] == "ModelUnavailableError" for a in attempts)
    assert [a["wait_s"] is not None for a in attempts] == [True, True, False]
    assert db_run["failure"]["kind"] == "model"
    assert db_run["failure"]["error"] == "ModelUnavailableError"


def test_closed_port_fails_fast_with_the_url(workspace, allow_real_models):
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAIModel("nothing", base_url=url, max_retries=0, timeout=5)
    store, result = run_traced(model, workspace, max_retries=0)
    run, _, models = recorded(store, result.run_id)
    assert run["status"] == "failed" and url in run["explanation"]
    assert models == [(1, "error", models[0][2])] and url in models[0][2]


def test_bad_api_key(workspace, allow_real_models):
    app = create_app(after_good_step("unused"), api_key="right-key")
    with serve_in_thread(app) as url:
        model = OpenAIModel("support", base_url=url, api_key="wrong-key", max_retries=0)
        store, result = run_traced(model, workspace)
    run, _, models = recorded(store, result.run_id)
    assert run["status"] == "failed"
    assert "rejected the credentials" in run["explanation"]
    assert "Check the API key" in run["explanation"]
    assert len(models) == 1, "an auth error is not retried"
