"""The agent workbench (Python level: widget state after the buttons' handlers) and
what a model is sent for a request (`Model.request_preview`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape

import pytest

from agentlab.agents import ReActAgent
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, ToolMessage
from agentlab.models import FallbackModel, FunctionModel, infer_model
from agentlab.tools import tool
from agentlab.tracing import TraceStore

pytest.importorskip("ipywidgets")

from agentlab.ui import AgentWorkbench


@tool
def order_status(order_id: str) -> str:
    """Look up the delivery status of a customer's order.

    Args:
        order_id: The order id, like "O-1".
    """
    return "shipped"


def support(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not results:
        call = ToolCall(id="c1", name="order_status", arguments='{"order_id": "O-1"}')
        return AssistantMessage(tool_calls=(call,))
    return AssistantMessage(content=f"Your order is {results[-1].content}.")


@pytest.fixture
def agent(tmp_path):
    return ReActAgent(FunctionModel(support, name="support"), [order_status], trace=tmp_path / "ws")


def test_the_tools_tab_shows_what_the_model_is_sent(agent):
    bench = AgentWorkbench(agent, "Where is O-1?")
    html = bench.tools_view.value
    entry = json.dumps(order_status.definition.to_openai(), indent=2, ensure_ascii=False)
    assert "&quot;type&quot;: &quot;function&quot;" in html
    assert escape(entry) in html, "the tool's entry exactly as the model is sent it"
    assert "the model scripted:support is sent OpenAI chat completions" in html
    assert "Where is O-1?" in html, "the whole first request, with the question"
    assert "You are a helpful assistant" in bench.prompt_view.value
    assert [bench.tabs.get_title(i) for i in range(3)] == ["Run", "Tools", "Prompt"]
    assert bench.tabs.get_title(3).startswith("Lint (")


def test_lint_findings_show_in_the_header_and_their_tab(tmp_path):
    @tool
    def search(q: str) -> str:
        """Search.

        Args:
            q: q
        """
        return q

    bench = AgentWorkbench(ReActAgent(FunctionModel(support), [search], trace=tmp_path / "ws"))
    assert bench.lint.errors
    assert f"{len(bench.lint.errors)} error(s)" in bench.header.value
    assert bench.tabs.get_title(3) == (
        f"Lint ({len(bench.lint.errors)} errors, {len(bench.lint.warnings)} warnings)"
    )
    assert "generic_name" in bench.lint_view.value


def test_step_through_edit_a_tool_result_and_rerun_from_there(agent):
    bench = AgentWorkbench(agent)
    bench.start_button.click()
    assert "Type a question first." in bench.message.value and bench.run is None
    bench.question.value = "Where is O-1?"
    bench.start_button.click()
    assert bench.message.value == "" and bench.run is not None and bench.inspector is not None
    first = bench.run
    bench.inspector.next_button.click()  # step 1: the lookup
    assert [label.split(":")[0] for label, _ in bench.picker.options] == [
        "0 · system",
        "1 · user",
        "2 · assistant",
        "3 · tool order_status",
    ]
    bench.picker.value = 3
    assert bench.editor.value == "shipped" and not bench.editor.disabled
    bench.editor.value = "lost in transit"
    bench.rerun_button.click()
    branch = bench.run
    assert branch is not first and branch.steps == []
    assert bench.inspector.live_run is branch
    bench.inspector.finish_button.click()
    assert branch.output == "Your order is lost in transit."
    assert first.status == "running", "the first run is left where it was"
    row = TraceStore(agent.tracer.workspace).run(branch.id)
    assert row is not None and row["metadata"]["branched_from"] == first.id


def test_at_a_model_reply_the_model_is_asked_again(agent):
    bench = AgentWorkbench(agent, "Where is O-1?")
    run = bench.start()
    run.finish_sync()
    bench.inspector.refresh()
    bench.picker.value = 4
    assert bench.editor.disabled
    assert bench.rerun_button.description == "Ask the model again from here"
    bench.rerun_button.click()
    assert len(bench.run.messages) == 4 and bench.run is not run


def test_request_previews_of_the_local_model_and_of_composed_models():
    messages = [*ReActAgent(FunctionModel(support)).opening_messages("Where is O-1?")]
    definitions = [order_status.definition]
    local = infer_model("local:smollm2").request_preview(messages, definitions)
    assert local["format"] == "local chat turns, constrained decoding"
    assert '"name": "order_status"' in local["turns"][0]["content"]
    assert local["turns"][-1] == {"role": "user", "content": "Where is O-1?"}
    names = [o["properties"]["name"]["const"] for o in local["reply_schema"]["items"]["anyOf"]]
    assert names == ["order_status"]
    composed = FallbackModel([FunctionModel(support), "local:smollm2"])
    assert composed.request_preview(messages, definitions)["format"] == "OpenAI chat completions"
