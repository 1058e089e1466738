"""OpenAIModel against real OpenAI-compatible servers on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence

import pytest
from _http import free_port, serve_in_thread

from agentlab.errors import (
    ModelAuthError,
    ModelError,
    ModelRequestsBlockedError,
    ModelUnavailableError,
    UserError,
)
from agentlab.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from agentlab.models import FunctionModel, Model, ModelResponse, ModelSettings, infer_model
from agentlab.models.openai_compat import OpenAIModel
from agentlab.serve.model_server import create_app
from agentlab.usage import Usage

pytestmark = pytest.mark.timeout(60)

GET_ORDER = ToolDefinition(
    name="get_order",
    description="Get an order's status and total.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
)


def support_reply(messages: Sequence[Message], tools: Sequence[ToolDefinition]) -> AssistantMessage:
    """Call get_order first, then answer with the tool result."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if results:
        return AssistantMessage(content=f"Your order: {results[-1].content}")
    assert [t.name for t in tools] == ["get_order"]
    return AssistantMessage(
        tool_calls=(ToolCall(id="call_1", name="get_order", arguments='{"order_id": "O-1001"}'),)
    )


@pytest.fixture(scope="module")
def scripted_url() -> Iterator[str]:
    with serve_in_thread(create_app(FunctionModel(support_reply, name="support"))) as url:
        yield url


def request(model: OpenAIModel, messages: list[Message], tools=()):  # type: ignore[no-untyped-def]
    return asyncio.run(model.request(messages, tools))


def test_tool_call_round_trip(scripted_url: str, allow_real_models: None) -> None:
    model = OpenAIModel("support", base_url=scripted_url)
    question = UserMessage(content="Where is order O-1001?")
    first = request(model, [question], [GET_ORDER])
    assert first.message.tool_calls == (
        ToolCall(id="call_1", name="get_order", arguments='{"order_id": "O-1001"}'),
    )
    assert first.model_name == "openai:support"
    result = ToolMessage(tool_call_id="call_1", name="get_order", content='{"status": "shipped"}')
    # A second event loop: the client must not be bound to the first one.
    second = request(model, [question, first.message, result], [GET_ORDER])
    assert second.message.content == 'Your order: {"status": "shipped"}'
    assert second.message.tool_calls == ()


class SettingsSpy(Model):
    """Replies with a call to the first tool and keeps the settings it was sent."""

    def __init__(self) -> None:
        self.seen: list[ModelSettings | None] = []

    @property
    def name(self) -> str:
        return "scripted:spy"

    async def request(self, messages, tools=(), settings=None):  # type: ignore[no-untyped-def]
        self.seen.append(settings)
        call = ToolCall(id="call_1", name=tools[0].name, arguments="{}")
        return ModelResponse(AssistantMessage(tool_calls=(call,)), Usage(), self.name)


def test_tool_choice_reaches_the_server_in_openai_form(allow_real_models: None) -> None:
    spy = SettingsSpy()
    with serve_in_thread(create_app(spy)) as url:
        model = OpenAIModel("spy", base_url=url)
        for choice in ("required", "get_order", "auto"):
            asyncio.run(
                model.request(
                    [UserMessage(content="hi")], [GET_ORDER], ModelSettings(tool_choice=choice)
                )
            )
    assert [s.tool_choice for s in spy.seen if s is not None] == ["required", "get_order", "auto"]


def test_usage_is_reported(scripted_url: str, allow_real_models: None) -> None:
    response = request(
        OpenAIModel("support", base_url=scripted_url),
        [UserMessage(content="Where is order O-1001?")],
        [GET_ORDER],
    )
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.usage.requests == 1


def test_malformed_tool_arguments_pass_through_raw(allow_real_models: None) -> None:
    broken = AssistantMessage(
        tool_calls=(ToolCall(id="call_1", name="get_order", arguments='{"order_id": "O-10'),)
    )
    with serve_in_thread(create_app(FunctionModel(lambda m, t: broken))) as url:
        response = request(OpenAIModel("x", base_url=url), [UserMessage(content="hi")], [GET_ORDER])
    assert response.message.tool_calls[0].arguments == '{"order_id": "O-10'


def test_wrong_api_key_raises_auth_error(allow_real_models: None) -> None:
    app = create_app(FunctionModel(lambda m, t: "hi"), api_key="right-key")
    with serve_in_thread(app) as url:
        assert (
            request(
                OpenAIModel("x", base_url=url, api_key="right-key"), [UserMessage(content="hi")]
            ).message.content
            == "hi"
        )
        with pytest.raises(ModelAuthError) as error:
            request(
                OpenAIModel("x", base_url=url, api_key="wrong-key", max_retries=0),
                [UserMessage(content="hi")],
            )
    assert url in str(error.value)
    assert "OPENAI_API_KEY" in error.value.hint


def test_unreachable_endpoint_is_unavailable_and_fast(allow_real_models: None) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    model = OpenAIModel("x", base_url=url, max_retries=0, timeout=5)
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as error:
        request(model, [UserMessage(content="hi")])
    assert time.monotonic() - start < 5
    assert url in str(error.value)
    assert "server is running" in error.value.hint
    assert error.value.retryable


def test_bad_request_is_model_error_with_server_message(
    scripted_url: str, allow_real_models: None
) -> None:
    with pytest.raises(ModelError) as error:
        request(OpenAIModel("x", base_url=scripted_url, max_retries=0), [])
    assert not isinstance(error.value, ModelUnavailableError)
    assert "'messages' must be a non-empty list" in str(error.value)


def test_requests_are_blocked_without_opt_in(scripted_url: str) -> None:
    with pytest.raises(ModelRequestsBlockedError):
        request(OpenAIModel("x", base_url=scripted_url), [UserMessage(content="hi")])


def test_key_and_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-4.1-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert OpenAIModel("m").endpoint == "http://127.0.0.1:9/v1"
    model = infer_model("openai:m@http://127.0.0.1:8/v1")
    assert isinstance(model, OpenAIModel)
    assert (model.name, model.endpoint) == ("openai:m", "http://127.0.0.1:8/v1")


@pytest.mark.local_model
def test_local_model_through_the_server(allow_real_models: None) -> None:
    from agentlab.models.local import LocalModel

    with serve_in_thread(create_app(LocalModel())) as url:
        response = request(
            OpenAIModel("smollm2", base_url=url),
            [UserMessage(content="Look up order O-1001.")],
            [GET_ORDER],
        )
    message = response.message
    if message.tool_calls:
        assert message.tool_calls[0].name == "get_order"
        assert isinstance(json.loads(message.tool_calls[0].arguments)["order_id"], str)
    else:
        assert message.content
    assert response.usage.input_tokens > 0
