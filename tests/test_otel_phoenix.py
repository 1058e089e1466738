"""OpenTelemetry export to a real OTLP/HTTP receiver: an Arize Phoenix server
(``pip install -e '.[otel-test]'``, or a Phoenix installed in a venv of its own
named by ``AGENTLAB_PHOENIX=/path/to/bin/phoenix``) started on 127.0.0.1; the
spans are read back through its REST API."""

import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _http import free_port, running_process

from agentlab.agents import ReActAgent
from agentlab.messages import AssistantMessage, ToolCall
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing.otel import configure_otel

pytestmark = pytest.mark.slow


def phoenix_command() -> list[str] | None:
    named = os.environ.get("AGENTLAB_PHOENIX")
    if named:
        if not Path(named).exists():
            pytest.fail(f"AGENTLAB_PHOENIX={named} does not exist: run `make phoenix`")
        return [named, "serve"]
    own = Path(__file__).resolve().parents[1] / ".venv-phoenix" / "bin" / "phoenix"
    if own.exists():
        return [str(own), "serve"]
    beside = Path(sys.executable).with_name("phoenix")
    if beside.exists():
        return [str(beside), "serve"]
    found = shutil.which("phoenix")
    return [found, "serve"] if found else None


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def phoenix(tmp_path):
    command = phoenix_command()
    if command is None:
        pytest.skip(
            "no Phoenix OTLP receiver: `make phoenix` installs one in .venv-phoenix/ (~860 MB)"
        )
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(tmp_path / "phoenix"),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "phoenix.log"
    with running_process(command, f"{base}/v1/projects", env=env, log=log, timeout=90):
        yield base


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order's status.

    Args:
        order_id: The order number.
    """
    return f"order {order_id}: shipped"


def test_spans_arrive_at_a_real_otlp_receiver(phoenix):
    replies = [
        AssistantMessage(
            tool_calls=(
                ToolCall(id="call_1", name="lookup_order", arguments='{"order_id": "A17"}'),
            )
        ),
        "Your order A17 has shipped.",
    ]
    model = FunctionModel(lambda messages, tools: replies.pop(0), name="support")
    otel = configure_otel(phoenix, service_name="agentlab-test")
    agent = ReActAgent(model, [lookup_order], name="support_agent", trace=False)
    otel.attach(agent)
    try:
        result = agent.run_sync("Where is my order A17?")
        assert result.ok
        assert otel.tracer_provider.force_flush(10_000)
    finally:
        otel.shutdown()
    deadline = time.monotonic() + 20
    while True:
        spans = get_json(f"{phoenix}/v1/projects/default/spans?limit=100")["data"]
        if len(spans) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    named = {}
    for span in spans:
        named.setdefault(span["name"], []).append(span)
    assert sorted(named) == [
        "chat support",
        "execute_tool lookup_order",
        "invoke_agent support_agent",
        "step 1",
        "step 2",
    ]
    assert len(spans) == 6
    (run,) = named["invoke_agent support_agent"]
    (tool_span,) = named["execute_tool lookup_order"]
    chats = sorted(named["chat support"], key=lambda s: s["start_time"])
    ids = {s["name"]: s["context"]["span_id"] for s in spans if s["name"].startswith("step")}
    assert run["parent_id"] is None
    assert {named[f"step {i}"][0]["parent_id"] for i in (1, 2)} == {run["context"]["span_id"]}
    assert chats[0]["parent_id"] == tool_span["parent_id"] == ids["step 1"]
    assert chats[1]["parent_id"] == ids["step 2"]
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    assert run["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert run["attributes"]["gen_ai.agent.name"] == "support_agent"
    assert run["attributes"]["gen_ai.conversation.id"] == result.run_id
    chat = chats[0]["attributes"]
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == chat["gen_ai.response.model"] == "support"
    assert chat["gen_ai.provider.name"] == "scripted"
    assert chat["gen_ai.response.finish_reasons"] == ["tool_call"]
    assert (
        chat["gen_ai.usage.input_tokens"] + chats[1]["attributes"]["gen_ai.usage.input_tokens"]
        == result.usage.input_tokens
    )
    assert (
        chat["gen_ai.usage.output_tokens"] + chats[1]["attributes"]["gen_ai.usage.output_tokens"]
        == result.usage.output_tokens
    )
    assert tool_span["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert tool_span["attributes"]["gen_ai.tool.name"] == "lookup_order"
    assert tool_span["attributes"]["gen_ai.tool.call.id"] == "call_1"
    assert run["start_time"] <= chats[0]["start_time"] <= tool_span["start_time"]
    assert tool_span["end_time"] <= chats[1]["start_time"] <= run["end_time"]
    assert "A17" not in json.dumps([s["attributes"] for s in spans])  # no content by default
