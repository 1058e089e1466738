"""OpenTelemetry export: runs become GenAI-convention spans and metrics (the real
SDK, read back through its in-memory exporter and metric reader)."""

import asyncio
import json

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentlab.agents import ReActAgent, Run
from agentlab.agents.recovery import read_run
from agentlab.errors import UserError
from agentlab.messages import AssistantMessage, ToolCall
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing import TraceStore
from agentlab.tracing.otel import OtelObserver, configure_otel


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order's status.

    Args:
        order_id: The order number.
    """
    if order_id == "bad":
        raise RuntimeError("the order service is down")
    return f"order {order_id}: shipped"


def scripted(*replies):
    replies = list(replies)

    def reply(messages, tools):
        return replies.pop(0) if len(replies) > 1 else replies[0]

    return FunctionModel(reply, name="support")


def call(order_id, id="call_1"):
    arguments = json.dumps({"order_id": order_id})
    return AssistantMessage(tool_calls=(ToolCall(id=id, name="lookup_order", arguments=arguments),))


@pytest.fixture
def otel():
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[metrics])

    def observer(**kwargs):
        return OtelObserver(tracer_provider, meter_provider, **kwargs)

    yield observer, spans, metrics
    tracer_provider.shutdown()
    meter_provider.shutdown()


def by_name(spans):
    return {s.name: s for s in spans}


def support_agent(observer, final="Shipped.", **kwargs):
    """An agent that looks up order A17, then answers `final`."""
    return ReActAgent(
        scripted(call("A17"), final),
        [lookup_order],
        name="support_agent",
        trace=False,
        observers=[observer],
        **kwargs,
    )


def test_a_run_becomes_nested_genai_spans_with_real_times(otel):
    observer, exporter, _ = otel
    agent = support_agent(observer(), "Your order A17 has shipped.")
    result = agent.run_sync("Where is my order A17?")
    assert result.ok
    spans = exporter.get_finished_spans()
    names = sorted(s.name for s in spans)
    assert names == [
        "chat support",
        "chat support",
        "execute_tool lookup_order",
        "invoke_agent support_agent",
        "step 1",
        "step 2",
    ]
    run = by_name(spans)["invoke_agent support_agent"]
    assert run.parent is None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.name"] == "support_agent"
    assert run.attributes["gen_ai.conversation.id"] == result.run_id
    assert run.attributes["agentlab.run.status"] == "completed"
    assert run.attributes["gen_ai.usage.input_tokens"] == result.usage.input_tokens
    assert run.status.status_code is StatusCode.UNSET
    steps = {s.name: s for s in spans if s.name.startswith("step")}
    assert all(s.parent.span_id == run.context.span_id for s in steps.values())
    chats = sorted((s for s in spans if s.name == "chat support"), key=lambda s: s.start_time)
    tool_span = by_name(spans)["execute_tool lookup_order"]
    assert chats[0].parent.span_id == tool_span.parent.span_id == steps["step 1"].context.span_id
    assert chats[1].parent.span_id == steps["step 2"].context.span_id
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}
    first = chats[0].attributes
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.provider.name"] == first["gen_ai.system"] == "scripted"
    assert first["gen_ai.request.model"] == first["gen_ai.response.model"] == "support"
    assert first["gen_ai.response.finish_reasons"] == ("tool_call",)
    assert chats[1].attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert (
        first["gen_ai.usage.input_tokens"] + chats[1].attributes["gen_ai.usage.input_tokens"]
        == result.usage.input_tokens
    )
    assert first["gen_ai.usage.output_tokens"] > 0
    tool_attributes = tool_span.attributes
    assert tool_attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool_attributes["gen_ai.tool.name"] == "lookup_order"
    assert tool_attributes["gen_ai.tool.call.id"] == "call_1"
    # real times: children inside their step, steps inside the run, in order
    for step in steps.values():
        assert run.start_time <= step.start_time <= step.end_time <= run.end_time
    assert chats[0].end_time <= tool_span.start_time <= tool_span.end_time
    assert tool_span.end_time <= steps["step 1"].end_time <= chats[1].start_time
    # no content without the opt-in
    for span in spans:
        assert not any(
            key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call.a"))
            for key in span.attributes
        )
        assert "A17" not in json.dumps(dict(span.attributes))


def test_failures_set_error_status_and_type(otel):
    observer, exporter, _ = otel

    def broken(messages, tools):
        raise ConnectionError("model host unreachable")

    agent = ReActAgent(
        scripted(call("bad"), call("bad", id="call_2")),
        [lookup_order],
        name="flaky",
        trace=False,
        max_retries=1,
        observers=[observer()],
    )
    result = agent.run_sync("Where is order bad?")
    assert result.status == "failed"
    spans = exporter.get_finished_spans()
    tools = [s for s in spans if s.name == "execute_tool lookup_order"]
    assert len(tools) == 2
    assert all(s.status.status_code is StatusCode.ERROR for s in tools)
    assert all(s.attributes["error.type"] == "error" for s in tools)
    run = by_name(spans)["invoke_agent flaky"]
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["agentlab.run.status"] == "failed"
    assert run.attributes["error.type"] == "error"  # the last tool call's status

    agent = ReActAgent(
        FunctionModel(broken, name="down"), name="down_agent", trace=False, retry=None
    )
    agent.observers = (observer(),)
    result = agent.run_sync("hello")
    assert result.status == "failed"
    chat = by_name(exporter.get_finished_spans())["chat down"]
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.attributes["error.type"]
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("error",)


def test_contents_are_exported_only_when_asked_and_redacted(otel):
    observer, exporter, _ = otel
    agent = support_agent(
        observer(capture_content=True), "Shipped. Key sk-proj-abcdefghijklmnopqrstuvwx"
    )
    agent.run_sync("Where is my order A17?")
    spans = exporter.get_finished_spans()
    chat = min((s for s in spans if s.name == "chat support"), key=lambda s: s.start_time)
    sent = json.loads(chat.attributes["gen_ai.input.messages"])
    assert any("A17" in json.dumps(m) for m in sent)
    tool_span = by_name(spans)["execute_tool lookup_order"]
    assert json.loads(tool_span.attributes["gen_ai.tool.call.arguments"]) == {"order_id": "A17"}
    assert tool_span.attributes["gen_ai.tool.call.result"] == "order A17: shipped"
    output = by_name(spans)["invoke_agent support_agent"].attributes["gen_ai.output.messages"]
    assert "Shipped." in output and "sk-proj-abcdefghijkl" not in output


def test_metrics_follow_the_conventions(otel):
    observer, _, reader = otel
    agent = support_agent(observer(), "Shipped.")
    result = agent.run_sync("Where is my order A17?")
    metrics = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    tokens = {
        p.attributes["gen_ai.token.type"]: p
        for p in metrics["gen_ai.client.token.usage"].data.data_points
    }
    assert tokens["input"].sum == result.usage.input_tokens and tokens["input"].count == 2
    assert tokens["output"].sum == result.usage.output_tokens
    assert tokens["input"].attributes["gen_ai.request.model"] == "support"
    assert metrics["gen_ai.client.token.usage"].unit == "{token}"
    durations = {
        p.attributes["gen_ai.operation.name"]: p
        for p in metrics["gen_ai.client.operation.duration"].data.data_points
    }
    assert set(durations) == {"chat", "execute_tool", "invoke_agent"}
    assert durations["chat"].count == 2
    assert durations["invoke_agent"].sum == pytest.approx(result.latency_ms / 1000)
    assert metrics["gen_ai.client.operation.duration"].unit == "s"


@tool(requires_approval=True)
def refund(order_id: str) -> str:
    """Refund an order.

    Args:
        order_id: The order number.
    """
    return "refunded"


REFUND_CALL = AssistantMessage(
    tool_calls=(ToolCall(id="r1", name="refund", arguments='{"order_id": "A17"}'),)
)


def refunds_agent(observer, workspace, *replies):
    """An agent that answers `replies` in turn, its refunds waiting for approval."""
    return ReActAgent(
        scripted(*replies), [refund], name="refunds", trace=workspace, observers=[observer]
    )


def test_a_paused_run_ends_its_span_and_the_resumed_part_gets_its_own(otel, tmp_path):
    observer, exporter, _ = otel
    agent = refunds_agent(observer(), tmp_path, REFUND_CALL, "Refunded.")
    paused = agent.run_sync("Refund A17")
    assert paused.status == "paused"
    first = exporter.get_finished_spans()
    assert by_name(first)["invoke_agent refunds"].attributes["agentlab.run.status"] == "paused"
    exporter.clear()
    done = agent.resume_sync(paused.run_id, approve=True)
    assert done.ok
    resumed = by_name(exporter.get_finished_spans())
    run = resumed["invoke_agent refunds"]
    assert run.attributes["agentlab.run.resumed"] is True
    assert run.attributes["gen_ai.conversation.id"] == paused.run_id
    assert resumed["execute_tool refund"].parent is not None


def test_a_run_resumed_elsewhere_names_its_agent(otel, tmp_path):
    """Paused, then resumed by another agent instance and observer (as in another
    process, with nothing remembered): the resumed span still names the agent."""
    observer, exporter, _ = otel
    paused = refunds_agent(observer(), tmp_path, REFUND_CALL, "unused").run_sync("Refund A17")
    assert paused.status == "paused"
    exporter.clear()
    again = refunds_agent(observer(), tmp_path, "Refunded.")
    assert again.resume_sync(paused.run_id, approve=True).ok
    run = by_name(exporter.get_finished_spans())["invoke_agent refunds"]
    assert run.attributes["gen_ai.agent.name"] == "refunds"
    assert run.attributes["agentlab.run.resumed"] is True


def test_a_recovered_run_names_its_agent(otel, tmp_path):
    """A run rebuilt from its trace and carried on (what Agent.resume does for an
    interrupted run) by a fresh agent and observer: its span names the agent."""
    make_observer, exporter, _ = otel

    def support(*replies):
        return ReActAgent(
            scripted(*replies),
            [lookup_order],
            name="support_agent",
            trace=tmp_path,
            observers=[make_observer()],
        )

    started = support(call("A17"), "unused").start("Where is A17?")
    asyncio.run(started.step())  # the lookup, then the process "dies"
    exporter.clear()
    again = support("Shipped.")
    record = read_run(again, started.id, TraceStore(tmp_path))
    result = asyncio.run(Run.restore(again, record).recover(record.pending_calls))
    assert result.ok and result.output == "Shipped."
    spans = by_name(exporter.get_finished_spans())
    run = spans["invoke_agent support_agent"]
    assert run.attributes["gen_ai.agent.name"] == "support_agent"
    assert run.attributes["agentlab.run.resumed"] is True
    assert spans["chat support"].attributes["gen_ai.agent.name"] == "support_agent"


def test_not_configured_means_disabled_and_bad_endpoints_are_refused(monkeypatch):
    monkeypatch.delenv("AGENTLAB_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    handle = configure_otel(None, "svc")
    assert not handle.enabled and handle.flush()
    agent = ReActAgent(scripted("hi"), trace=False)
    handle.attach(agent)
    assert agent.observers == ()
    with pytest.raises(UserError, match="not an http"):
        configure_otel("127.0.0.1:4318", "svc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/")
    handle = configure_otel(None, "svc")
    try:
        assert handle.enabled and handle.endpoint == "http://127.0.0.1:9"
        handle.attach(agent)
        handle.attach(agent)
        assert agent.observers == (handle.observer,)
    finally:
        handle.shutdown()
