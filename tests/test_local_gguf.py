"""Bring your own GGUF: any chat model file runs through the same local adapter."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentlab.errors import UserError
from agentlab.messages import SystemMessage, ToolDefinition, UserMessage
from agentlab.models import infer_model
from agentlab.models.local import LocalModel, smollm2_path

pytestmark = pytest.mark.timeout(120)

GET_ORDER = ToolDefinition(
    name="get_order",
    description="Get an order's status and total.",
    parameters={
        "type": "object",
        "additionalProperties": False,
        "required": ["order_id"],
        "properties": {
            "order_id": {"type": "string", "pattern": "^O-[0-9]+$", "description": "Like O-1001."}
        },
    },
)


def test_a_gguf_path_names_the_model_and_round_trips_through_infer_model(tmp_path: Path) -> None:
    gguf = tmp_path / "my-model.Q4_K_M.gguf"
    by_string = infer_model(f"local:{gguf}")
    assert isinstance(by_string, LocalModel)
    assert by_string.name == f"local:{gguf.resolve()}"
    assert by_string.model_path == gguf.resolve()
    assert infer_model(by_string.name).name == by_string.name  # exports re-infer it
    assert LocalModel(model_path=gguf).name == by_string.name
    assert LocalModel().name == "local:smollm2" and LocalModel().model_path is None


def test_a_local_name_that_is_neither_smollm2_nor_a_gguf_says_what_to_pass() -> None:
    with pytest.raises(UserError, match=r"'qwen'.*'local:smollm2'.*GGUF file"):
        infer_model("local:qwen")


def test_a_missing_or_broken_gguf_file_is_a_clear_error(
    tmp_path: Path, allow_real_models: None
) -> None:
    missing = LocalModel(model_path=tmp_path / "absent.gguf")
    with pytest.raises(UserError, match=r"absent\.gguf does not exist"):
        asyncio.run(missing.request([UserMessage(content="hi")]))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really")
    with pytest.raises(UserError, match=r"could not load .*broken\.gguf.*chat model"):
        asyncio.run(LocalModel(model_path=broken).request([UserMessage(content="hi")]))


@pytest.mark.local_model
def test_the_bundled_file_passed_by_path_calls_tools_and_answers(allow_real_models: None) -> None:
    by_path = infer_model(f"local:{smollm2_path()}")
    assert by_path.name != "local:smollm2"
    messages = [
        SystemMessage(content="You are a customer-support agent for an online shop."),
        UserMessage(content="What's the status of my order O-1001?"),
    ]
    reply = asyncio.run(by_path.request(messages, [GET_ORDER])).message
    (call,) = reply.tool_calls
    assert call.name == "get_order" and json.loads(call.arguments) == {"order_id": "O-1001"}
    # the same file by name and by path: the same replies (one adapter, temperature 0)
    bundled = asyncio.run(LocalModel().request(messages, [GET_ORDER])).message
    assert bundled.tool_calls == reply.tool_calls
    answer = asyncio.run(by_path.request([UserMessage(content="Say hi.")])).message
    assert answer.content and not answer.tool_calls
    assert by_path.token_counter().count("hello world") > 0
