import pytest
from pydantic import ValidationError

from agentlab.events import (
    ModelCallEvent,
    RunFinished,
    RunStarted,
    ToolCallEvent,
    dump_event,
    parse_event,
)
from agentlab.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage

EVENTS = [
    RunStarted(
        run_id="r",
        agent="a",
        model="local:smollm2",
        input="hi",
        started_at=1.5,
        metadata={"case": 3},
    ),
    ModelCallEvent(
        id="r-1",
        run_id="r",
        step=1,
        model="local:smollm2",
        messages=[
            UserMessage(content="hi"),
            ToolMessage(tool_call_id="c", name="t", content="x", is_error=True),
        ],
        context_messages=2,
        tools=["t"],
        response=AssistantMessage(tool_calls=(ToolCall(id="c", name="t", arguments="{}"),)),
        input_tokens=10,
        output_tokens=2,
        cost=None,
        latency_ms=3.0,
        started_at=2.0,
    ),
    ToolCallEvent(
        id="r-1-1",
        run_id="r",
        step=1,
        tool="t",
        arguments="{bad",
        result="err",
        status="invalid_arguments",
        error="err",
        latency_ms=0.1,
        started_at=2.1,
    ),
    RunFinished(
        run_id="r",
        status="max_steps",
        explanation="why",
        steps=1,
        input_tokens=10,
        output_tokens=2,
        cost=0.0,
        latency_ms=5.0,
        ended_at=3.0,
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_events_round_trip_through_json(event):
    line = dump_event(event)
    assert b"\n" not in line
    assert parse_event(line) == event


def test_parse_rejects_unknown_fields_and_kinds():
    with pytest.raises(ValidationError, match="surprise"):
        parse_event(
            b'{"kind":"run_started","run_id":"r","agent":"a","model":"m",'
            b'"input":"i","started_at":1,"surprise":1}'
        )
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        parse_event(b'{"kind":"nope"}')
