import pytest

from agentlab.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    dump_messages,
    from_openai,
    load_messages,
    to_openai,
)

CONVERSATION = [
    SystemMessage(content="You are a support agent."),
    UserMessage(content="Where is order O-1001?"),
    AssistantMessage(
        content="I will look it up.",
        tool_calls=(
            ToolCall(id="call_1", name="track_shipment", arguments='{"order_id": "O-1001"}'),
        ),
    ),
    ToolMessage(tool_call_id="call_1", name="track_shipment", content='{"carrier": "UPS"}'),
    ToolMessage(tool_call_id="call_2", name="get_order", content="No such order", is_error=True),
    AssistantMessage(content="It ships with UPS. \u00e9\u00e8 \U0001f600"),
]


def test_json_round_trip_is_lossless():
    text = dump_messages(CONVERSATION)
    assert load_messages(text) == CONVERSATION
    assert dump_messages(load_messages(text)) == text


def test_openai_round_trip_is_lossless():
    assert from_openai(to_openai(CONVERSATION)) == CONVERSATION


def test_openai_format_shape():
    wire = to_openai(CONVERSATION)
    assert wire[2]["tool_calls"][0] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "track_shipment", "arguments": '{"order_id": "O-1001"}'},
    }
    assert wire[3] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "name": "track_shipment",
        "content": '{"carrier": "UPS"}',
    }


def test_from_openai_accepts_content_parts_and_developer_role():
    messages = from_openai(
        [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
                ],
            },
        ]
    )
    assert messages[0] == SystemMessage(content="Be brief.")
    assert messages[1] == UserMessage(content="Hi there")
    assert messages[2].tool_calls[0].arguments == "{}"


def test_from_openai_rejects_unknown_role_naming_it():
    with pytest.raises(ValueError, match=r"message 1 has role 'robot'"):
        from_openai([{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}])


def test_tool_call_parsed_arguments():
    assert ToolCall(id="a", name="f", arguments='{"x": 1}').parsed_arguments() == {"x": 1}
    with pytest.raises(ValueError):
        ToolCall(id="a", name="f", arguments="{not json").parsed_arguments()
