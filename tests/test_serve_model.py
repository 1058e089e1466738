"""`python -m agentlab.serve.model_server` for real, used through the official client."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
from _http import free_port, running_process

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(120)]

GET_ORDER = {
    "type": "function",
    "function": {
        "name": "get_order",
        "description": "Get an order's status and total.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    args = [sys.executable, "-m", "agentlab.serve.model_server", "--port", str(port)]
    with running_process(args, f"{url}/models", timeout=30):
        yield url


@pytest.fixture
def client(base_url: str):  # type: ignore[no-untyped-def]
    import openai

    return openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=60)


def test_lists_the_model(client) -> None:  # type: ignore[no-untyped-def]
    assert [m.id for m in client.models.list()] == ["local:smollm2"]


def test_tool_call_from_the_local_model(client) -> None:  # type: ignore[no-untyped-def]
    completion = client.chat.completions.create(
        model="local:smollm2",
        tools=[GET_ORDER],
        messages=[{"role": "user", "content": "What's the status of order O-1001?"}],
    )
    choice = completion.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        call = choice.message.tool_calls[0]
        assert call.function.name == "get_order"
        assert isinstance(json.loads(call.function.arguments)["order_id"], str)
    else:  # the 135M model may answer instead; the reply must still be well formed
        assert choice.finish_reason == "stop" and choice.message.content
    assert completion.usage.prompt_tokens > 0


def test_text_without_tools(client) -> None:  # type: ignore[no-untyped-def]
    completion = client.chat.completions.create(
        model="local:smollm2", max_tokens=12, messages=[{"role": "user", "content": "Say hello."}]
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content
    assert completion.choices[0].message.tool_calls is None


def test_bad_request_is_400_with_a_clear_error(client) -> None:  # type: ignore[no-untyped-def]
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="local:smollm2", messages=[{"role": "robot", "content": "hi"}]
        )
    assert error.value.status_code == 400
    assert "role 'robot'" in error.value.message
