"""Expected tool calls as precise as a reference checker: accepted values per argument,
optional arguments, extra arguments, value comparison, explanations, JSONL round trips
and the converter from the function-calling test format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentlab.agents import ReActAgent, RunResult
from agentlab.evals import (
    Case,
    DatasetError,
    ExpectedToolCall,
    MadeCall,
    build_scorer,
    evaluate_sync,
    load_dataset,
    match_tool_calls,
)
from agentlab.evals.argmatch import normalize_text
from agentlab.evals.dataset import Dataset, DatasetDefaults
from agentlab.evals.function_calling import CHECKER_DEFAULTS, load_function_calling
from agentlab.messages import AssistantMessage, Message, ToolCall, ToolDefinition, UserMessage
from agentlab.models import FunctionModel
from agentlab.tools import tool
from agentlab.tracing import TraceStore
from agentlab.usage import Usage

SUPPORT_DATASET = Path(__file__).parents[1] / "evals" / "support_agent.jsonl"


def expect(arguments: dict[str, Any], **options: Any) -> ExpectedToolCall:
    return ExpectedToolCall.model_validate({"name": "get_speed", "arguments": arguments, **options})


def problems(spec: ExpectedToolCall, arguments: dict[str, Any] | None) -> list[str]:
    return spec.rejections("get_speed", arguments)


def write(tmp_path: Path, *lines: dict[str, Any], name: str = "cases.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def case_line(case_id: str = "c1", **fields: Any) -> dict[str, Any]:
    return {
        "id": case_id,
        "input": "q",
        "expected_outcome": {"kind": "contains", "value": "x"},
        **fields,
    }


# -- accepted values and optional arguments ---------------------------------------------------


KILOMETERS = {"city": "Paris", "unit": "kilometers"}


def test_the_kilometers_case_fails_with_accepted_values():
    # Today's simple form lists only the required argument: by subset match a wrong
    # value of the optional `unit` passes. That form keeps its meaning...
    subset = expect({"city": "Paris"})
    assert subset.accepts("get_speed", KILOMETERS)
    # ...and accepted values say what `unit` may be when given.
    precise = expect({"city": "Paris", "unit": {"$any_of": ["km/h"], "$optional": True}})
    assert problems(precise, KILOMETERS) == [
        'argument \'unit\' is "kilometers"; accepted "km/h", or left out'
    ]
    assert precise.accepts("get_speed", {"city": "Paris", "unit": "km/h"})
    assert precise.accepts("get_speed", {"city": "Paris"})
    assert not precise.accepts("get_speed", {"unit": "km/h"})  # city is required


def test_optional_arguments():
    spec = expect(
        {
            "city": {"$any_of": ["Paris", "Lyon"]},  # required, one of two
            "unit": {"$optional": True},  # any value, or left out
            "debug": {"$any_of": [], "$optional": True},  # must be left out
        }
    )
    assert spec.accepts("get_speed", {"city": "Lyon"})
    assert spec.accepts("get_speed", {"city": "Paris", "unit": "anything"})
    assert problems(spec, {"city": "Nice", "debug": False}) == [
        'argument \'city\' is "Nice"; accepted "Paris" or "Lyon"',
        "argument 'debug' must be left out (given false)",
    ]
    assert problems(spec, {}) == ['argument \'city\' is missing; accepted "Paris" or "Lyon"']


def test_extra_arguments_lenient_by_default_strict_when_forbidden(tmp_path):
    made = {"city": "Paris", "verbose": True}
    assert expect({"city": "Paris"}).accepts("get_speed", made)
    strict = expect({"city": "Paris", "unit": {"$optional": True}}, extra_arguments="forbid")
    assert problems(strict, made) == ["argument 'verbose' is not expected (given true)"]
    assert strict.accepts("get_speed", {"city": "Paris", "unit": "mph"})  # listed: allowed

    # A dataset default applies to every call that does not set its own.
    calls = [
        {"name": "get_speed", "arguments": {"city": "Paris"}},
        {"name": "get_speed", "arguments": {"city": "Paris"}, "extra_arguments": "allow"},
    ]
    path = write(
        tmp_path,
        {"defaults": {"extra_arguments": "forbid"}},
        case_line(expected_tool_calls=calls),
    )
    first, second = load_dataset(path).cases[0].expected_tool_calls
    assert not first.accepts("get_speed", made) and second.accepts("get_speed", made)


# -- how values compare -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "given", "same"),
    [
        (3, 3.0, True),
        (3.0, 3, True),
        (0.5, 0.5, True),
        (3, 4, False),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (True, True, True),
        (3, "3", False),
        ("3", 3, False),
        (None, None, True),
        (None, "", False),
        ([1, 2.0], [1.0, 2], True),
        ([1, 2], [2, 1], False),
        ({"a": 1}, {"a": 1.0}, True),
    ],
)
def test_values_compare_by_value_and_type(expected, given, same):
    assert expect({"x": expected}).accepts("get_speed", {"x": given}) is same


@pytest.mark.parametrize(
    ("normalize", "expected", "given", "same"),
    [
        ([], "New York", "new york", False),  # the default: exact
        ([], "New York", "New York", True),
        (["case"], "New York", "NEW YORK", True),
        (["case"], "New York", "New  York", False),
        (["whitespace"], "New York", "  New   York ", True),
        (["whitespace"], "New York", "NewYork", False),
        (["all_whitespace"], "New York", "NewYork", True),
        (["punctuation"], "km/h", "kmh", True),
        (["punctuation"], "O-1003", "O1003.", True),
        (["punctuation"], "km/h", "KMH", False),
        (["case", "punctuation", "all_whitespace"], "New York, NY", "new-york ny", True),
    ],
)
def test_string_normalisation_per_call(normalize, expected, given, same):
    spec = expect({"city": expected}, normalize=normalize)
    assert spec.accepts("get_speed", {"city": given}) is same


def test_string_normalisation_per_argument_overrides_the_call():
    spec = expect(
        {
            "city": "paris",
            "code": {"$equals": "AB-1", "$normalize": []},  # exact despite the call
            "tags": {"$any_of": [["Red", "Blue"]], "$normalize": ["case"]},  # list items too
        },
        normalize=["case"],
    )
    assert spec.accepts("get_speed", {"city": "PARIS", "code": "AB-1", "tags": ["red", "BLUE"]})
    assert problems(spec, {"city": "Paris", "code": "ab-1", "tags": ["red", "blue"]}) == [
        'argument \'code\' is "ab-1"; accepted "AB-1"'
    ]
    assert normalize_text(" Déjà-Vu  Café! ", frozenset({"case", "punctuation", "whitespace"})) == (
        "déjàvu café"
    )


def test_nested_objects_and_lists():
    spec = expect(
        {
            "stops": [{"city": "Paris"}, {"city": {"$any_of": ["Lyon", "Nice"]}}],
            "options": {"fast": True, "via": {"$any_of": ["A6"], "$optional": True}},
        }
    )
    good = {"stops": [{"city": "Paris"}, {"city": "Nice"}], "options": {"fast": True}}
    assert spec.accepts("get_speed", good)
    assert spec.accepts("get_speed", {**good, "options": {"fast": True, "via": "A6"}})
    cases = {
        "item": ({"stops": [{"city": "Paris"}, {"city": "Brest"}]}, "argument 'stops[1].city' is"),
        "length": ({"stops": [{"city": "Paris"}]}, "argument 'stops' has 1 items"),
        "not a list": ({"stops": "Paris"}, 'argument \'stops\' is "Paris"; accepted [{"city": '),
        "missing key": ({"options": {}}, "argument 'options.fast' is missing; accepted true"),
        "extra key": (  # nested objects take no extra keys, whatever the call's option
            {"options": {"fast": True, "slow": 1}},
            "argument 'options.slow' is not expected (given 1)",
        ),
        "optional key": ({"options": {"fast": True, "via": "A7"}}, "argument 'options.via' is"),
    }
    for name, (change, message) in cases.items():
        found = problems(spec, {**good, **change})
        assert len(found) == 1 and found[0].startswith(message), (name, found)


def test_literal_objects_with_dollar_keys_use_equals():
    spec = expect({"query": {"$equals": {"$gt": 3}}})
    assert spec.accepts("get_speed", {"query": {"$gt": 3}})
    assert not spec.accepts("get_speed", {"query": {"$gt": 4}})


# -- explanations -----------------------------------------------------------------------------


def test_match_explains_every_unmatched_call():
    expected = [
        expect({"city": "Paris", "unit": {"$any_of": ["km/h"], "$optional": True}}),
        ExpectedToolCall(name="get_weather", arguments={"city": "Paris"}),
        ExpectedToolCall(name="get_time"),
    ]
    made = [
        MadeCall("get_speed", {"city": "Paris", "unit": "kilometers"}),
        MadeCall("get_weather", {"city": "Paris"}),
        MadeCall("get_weather", {"city": "Paris"}),  # a repeat
        MadeCall("book_hotel", {"city": "Paris"}),
        MadeCall("get_time", None),  # malformed JSON
    ]
    match = match_tool_calls(expected, made)
    assert (match.expected, match.made, match.matched) == (3, 5, 1)
    assert match.problems == (
        "expected call 1, get_speed: call 1 differs: argument 'unit' is \"kilometers\"; "
        'accepted "km/h", or left out',
        "expected call 3, get_time: call 5 differs: its arguments are not a JSON object",
        "call 3, get_weather, repeats a call already counted",
        "call 4, book_hotel, matches no expected call",
    )
    assert match.explanation.startswith("1 of 3 expected tool calls matched. expected call 1")
    missing = match_tool_calls(expected[1:2], [])
    assert missing.problems == ("expected call 1, get_weather: no such call was made",)


def test_alternatives_explain_the_call_to_the_same_tool():
    spec = ExpectedToolCall.model_validate(
        {
            "name": "find_customer",
            "arguments": {"email": "ana@example.com"},
            "alternatives": [{"name": "list_orders", "arguments": {"customer_id": "C-001"}}],
        }
    )
    assert spec.names == ["find_customer", "list_orders"]
    assert spec.rejections("list_orders", {"customer_id": "C-002"}) == [
        'argument \'customer_id\' is "C-002"; accepted "C-001"'
    ]
    assert spec.rejections("get_order", {}) == [
        "it calls 'get_order', not 'find_customer' or 'list_orders'"
    ]


@tool
def get_speed(city: str, unit: str = "km/h") -> str:
    """The average traffic speed in a city.

    Args:
        city: The city.
        unit: The unit of the answer.
    """
    return f"42 {unit}"


def test_the_explanation_reaches_the_case_result(tmp_path):
    def reply(
        messages: Sequence[Message], tools: Sequence[ToolDefinition]
    ) -> AssistantMessage | str:
        if any(m.role == "tool" for m in messages):
            return "42"
        arguments = json.dumps({"city": "Paris", "unit": "kilometers"})
        return AssistantMessage(
            tool_calls=(ToolCall(id="1", name="get_speed", arguments=arguments),)
        )

    calls = [
        {
            "name": "get_speed",
            "arguments": {"city": "paris", "unit": {"$any_of": ["km/h"], "$optional": True}},
        }
    ]
    path = write(
        tmp_path,
        {"defaults": {"normalize": ["case"]}},
        case_line(
            "speed",
            expected_tool_calls=calls,
            expected_outcome={"kind": "scorer", "value": "tool_calls"},
        ),
    )
    agent = ReActAgent(FunctionModel(reply), [get_speed], trace=TraceStore(tmp_path / "ws"))
    [row] = evaluate_sync(agent, path).results
    assert not row.passed and row.score == 0.0
    assert row.explanation == (
        "0 of 1 expected tool calls matched. expected call 1, get_speed: call 1 differs: "
        'argument \'unit\' is "kilometers"; accepted "km/h" (ignoring case), or left out'
    )
    assert (row.calls_expected, row.calls_made, row.calls_matched) == (1, 1, 0)


def run_with_calls(*calls: tuple[str, dict[str, Any]]) -> RunResult:
    message = AssistantMessage(
        tool_calls=tuple(
            ToolCall(id=str(i), name=name, arguments=json.dumps(arguments))
            for i, (name, arguments) in enumerate(calls)
        )
    )
    return RunResult(
        run_id="r1",
        status="completed",
        output="done",
        explanation=None,
        steps=2,
        tools_called=[name for name, _ in calls],
        usage=Usage(),
        cost=0.0,
        latency_ms=1.0,
        messages=[UserMessage(content="q"), message, AssistantMessage(content="done")],
    )


def test_the_tool_calls_scorer_with_and_without_extra_calls():
    case = Case.model_validate(
        case_line(
            expected_tool_calls=[{"name": "get_speed", "arguments": {"city": "Paris"}}],
            expected_outcome={"kind": "scorer", "value": "tool_calls"},
        )
    )
    result = run_with_calls(("get_speed", {"city": "Paris"}), ("get_time", {}))
    lenient = build_scorer("tool_calls")(case, result)
    assert (lenient.value, lenient.passed) == (1.0, True)
    strict = build_scorer("tool_calls", allow_extra_calls=False)(case, result)
    assert (strict.value, strict.passed) == (0.5, False)
    assert strict.explanation == (
        "1 of 1 expected tool calls matched. call 2, get_time, matches no expected call"
    )
    wrong = build_scorer("tool_calls")(case, run_with_calls(("get_speed", {"city": "Lyon"})))
    assert (wrong.value, wrong.passed) == (0.0, False)
    no_calls = case.model_copy(update={"expected_tool_calls": []})
    assert build_scorer("tool_calls", allow_extra_calls=False)(no_calls, run_with_calls()).passed


# -- JSONL round trips --------------------------------------------------------------------


def test_jsonl_round_trip_is_byte_stable(tmp_path):
    calls = [
        {
            "name": "get_speed",
            "normalize": ["whitespace", "case", "case"],  # written sorted, once
            "arguments": {
                "unit": {"$optional": True, "$any_of": ["km/h", "kph"]},
                "city": "Zürich",
            },
            "alternatives": [
                {"name": "get_pace", "arguments": {"n": 3.5}, "extra_arguments": "allow"}
            ],
        },
        {"name": "get_time", "extra_arguments": "forbid"},  # equals the default: not written
    ]
    source = write(
        tmp_path,
        {"defaults": {"extra_arguments": "forbid"}},
        case_line("b", expected_tool_calls=calls, tags=["t"], max_steps=3),
        case_line("a"),
    )
    dataset = load_dataset(source)
    text = dataset.to_jsonl(tmp_path / "out.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == text.encode("utf-8")
    lines = text.splitlines()
    assert lines[0] == '{"defaults": {"extra_arguments": "forbid"}}'
    assert json.loads(lines[1])["expected_tool_calls"][0] == {
        "alternatives": [{"arguments": {"n": 3.5}, "extra_arguments": "allow", "name": "get_pace"}],
        "arguments": {"city": "Zürich", "unit": {"$any_of": ["km/h", "kph"], "$optional": True}},
        "name": "get_speed",
        "normalize": ["case", "whitespace"],
    }
    assert json.loads(lines[1])["expected_tool_calls"][1] == {"name": "get_time"}
    assert lines[2] == (
        '{"expected_outcome": {"kind": "contains", "value": "x"}, "id": "a", "input": "q"}'
    )
    again = load_dataset(tmp_path / "out.jsonl")
    assert again.cases == dataset.cases and again.defaults == dataset.defaults
    assert again.to_jsonl() == text


def test_a_dataset_without_its_defaults_writes_the_options_per_call(tmp_path):
    source = write(
        tmp_path,
        {"defaults": {"extra_arguments": "forbid"}},
        case_line(expected_tool_calls=[{"name": "get_time"}]),
    )
    cut = Dataset(load_dataset(source).cases, name="cut")  # as notebooks cut to a limit
    assert '"extra_arguments": "forbid"' in cut.to_jsonl(tmp_path / "cut.jsonl")
    assert load_dataset(tmp_path / "cut.jsonl").cases == cut.cases


def test_the_support_dataset_round_trips(tmp_path):
    dataset = load_dataset(SUPPORT_DATASET)
    text = dataset.to_jsonl(tmp_path / "support.jsonl")
    again = load_dataset(tmp_path / "support.jsonl")
    assert again.cases == dataset.cases and again.to_jsonl() == text
    assert not text.startswith('{"defaults"')  # built-in defaults: no header line


# -- the function-calling test format -----------------------------------------------------------


SPEED = {
    "name": "get_speed",
    "description": "Average traffic speed.",
    "parameters": {
        "type": "dict",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string"},
            "hours": {"type": "float"},
            "route": {
                "type": "dict",
                "properties": {"from": {"type": "string"}, "via": {"type": "string"}},
                "required": ["from"],
            },
            "stops": {
                "type": "array",
                "items": {"type": "dict", "properties": {"name": {"type": "string"}}},
            },
            "mode": {"type": "string"},
        },
        "required": ["city", "mode"],
    },
}


def question(case_id: str, text: str = "How fast is traffic in Paris?", **extra: Any) -> dict:
    return {
        "id": case_id,
        "question": [[{"role": "user", "content": text}]],
        "function": [SPEED],
        **extra,
    }


def test_convert_the_function_calling_format(tmp_path):
    questions = write(
        tmp_path,
        question("simple_0"),
        question(
            "simple_1",
            ground_truth=[
                {"get_speed": {"city": ["Lyon"], "mode": ["car"], "hours": [2], "q": [{"$gt": 1}]}}
            ],
        ),
        question("simple_2"),
        name="questions.jsonl",
    )
    answers = write(
        tmp_path,
        {
            "id": "simple_0",
            "ground_truth": [
                {
                    "get_speed": {
                        "city": ["Paris", "Paris, France"],
                        "unit": ["km/h", ""],
                        "mode": ["car", ""],  # required by the function: "" is a value here
                        "route": [{"from": ["Lyon"], "via": ["A6", ""]}, ""],
                    }
                }
            ],
        },
        {
            "id": "simple_2",
            "ground_truth": [
                {
                    "get_speed": {
                        "city": ["Paris"],
                        "mode": ["bus"],
                        "stops": [[{"name": ["Opéra"]}]],
                    }
                }
            ],
        },
        {"id": "not_asked", "ground_truth": []},  # ground truth of questions left out: fine
        name="answers.jsonl",
    )
    dataset = load_function_calling(questions, answers)
    assert (dataset.name, [c.id for c in dataset]) == (
        "questions",
        ["simple_0", "simple_1", "simple_2"],
    )
    assert dataset.defaults == CHECKER_DEFAULTS
    first = dataset.cases[0]
    assert first.input == "How fast is traffic in Paris?"
    assert first.expected_outcome.model_dump() == {
        "kind": "scorer",
        "value": "tool_calls",
        "case_sensitive": False,
        "kwargs": {"allow_extra_calls": False},
    }
    [speed] = first.expected_tool_calls
    assert speed.arguments == {
        "city": {"$any_of": ["Paris", "Paris, France"]},
        "unit": {"$any_of": ["km/h"], "$optional": True},
        "mode": {"$any_of": ["car", ""]},
        "route": {
            "$any_of": [{"from": "Lyon", "via": {"$any_of": ["A6"], "$optional": True}}],
            "$optional": True,
        },
    }
    assert (speed.extra_arguments, speed.normalize) == (
        "forbid",
        ("all_whitespace", "case", "punctuation"),
    )

    base = {"city": "paris, france", "mode": "car"}
    assert speed.accepts("get_speed", base)
    assert speed.accepts("get_speed", {**base, "unit": "KM/H", "route": {"from": "lyon"}})
    assert problems(speed, {**base, "unit": "kilometers"}) == [
        'argument \'unit\' is "kilometers"; accepted "km/h" (ignoring case, punctuation, '
        "whitespace), or left out"
    ]
    assert not speed.accepts("get_speed", {"city": "Paris"})  # mode is required
    assert not speed.accepts("get_speed", {**base, "speed_limit": 50})  # extra argument
    assert not speed.accepts("get_speed", {**base, "route": {"from": "Lyon", "via": "A7"}})

    lyon = dataset.cases[1].expected_tool_calls[0]
    assert lyon.arguments["q"] == {"$equals": {"$gt": 1}}  # a literal object, kept as it is
    assert lyon.accepts("get_speed", {"city": "Lyon", "mode": "car", "hours": 2.0, "q": {"$gt": 1}})
    stops = dataset.cases[2].expected_tool_calls[0]
    assert stops.arguments["stops"] == [{"name": "Opéra"}]
    assert (
        stops.accepts("get_speed", {"city": "Paris", "mode": "bus", "stops": [{"name": "opera"}]})
        is False
    )
    assert stops.accepts(
        "get_speed", {"city": "Paris", "mode": "bus", "stops": [{"name": "OPÉRA"}]}
    )

    # The converted dataset is an ordinary dataset: it round-trips through JSONL.
    text = dataset.to_jsonl(tmp_path / "converted.jsonl")
    assert text.startswith(
        '{"defaults": {"extra_arguments": "forbid", '
        '"normalize": ["all_whitespace", "case", "punctuation"]}}\n'
    )
    assert load_dataset(tmp_path / "converted.jsonl").cases == dataset.cases


@pytest.mark.parametrize(
    ("line", "answers", "message"),
    [
        (
            question("q1"),
            None,
            r"line 1: no ground truth for the id 'q1'; give it a 'ground_truth'",
        ),
        (
            {
                **question("q1"),
                "question": [
                    [{"role": "user", "content": "a"}],
                    [{"role": "user", "content": "b"}],
                ],
            },
            [],
            r"line 1: field 'question': has 2 turn\(s\) with the roles \['user', 'user'\]; "
            r"only one turn",
        ),
        (
            question("q1", ground_truth=[{"get_weather": {"city": ["Paris"]}}]),
            None,
            r"line 1: ground truth of 'q1': it calls 'get_weather', which is not among the "
            r"line's functions \['get_speed'\]",
        ),
        (
            question("q1", ground_truth=[{"get_speed": {"route": [{"from": "Lyon"}]}}]),
            None,
            r"ground truth of 'q1': get_speed.route.from: the accepted values must be a list, "
            r"got 'Lyon'",
        ),
        (
            question("q1", ground_truth=[{"get_speed": {"city": "Paris"}}]),
            None,
            r"line 1: field 'ground_truth.0.get_speed.city': Input should be a valid list "
            r"\(got 'Paris'\)",
        ),
        (
            question("q1", ground_truth=[{"get_speed": {}, "get_time": {}}]),
            None,
            r"field 'ground_truth': call 1 names 2 functions; write each call as",
        ),
        ({"question": "hi"}, None, r"line 1: field 'id': Field required \(add it\)"),
    ],
)
def test_conversion_errors_name_the_line_and_field(tmp_path, line, answers, message):
    questions = write(tmp_path, line, name="questions.jsonl")
    truth = None if answers is None else write(tmp_path, *answers, name="answers.jsonl")
    with pytest.raises(DatasetError, match=message) as info:
        load_function_calling(questions, truth)
    assert str(questions) in str(info.value)


# -- bad dataset lines --------------------------------------------------------------------------


def with_calls(*calls: dict) -> dict:
    return case_line(expected_tool_calls=list(calls))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            with_calls({"name": "a", "arguments": {"unit": {"$anyof": ["km/h"]}}}),
            r"line 2: field 'expected_tool_calls.0.arguments': argument 'unit': '\$anyof' is "
            r"not a matcher key; use \$any_of, \$equals, \$normalize, \$optional",
        ),
        (
            with_calls({"name": "a", "arguments": {"unit": {"$any_of": "km/h"}}}),
            r"argument 'unit': \$any_of must be a list of accepted values",
        ),
        (
            with_calls({"name": "a", "arguments": {"unit": {"$any_of": []}}}),
            r"argument 'unit': \$any_of is empty, so nothing is accepted; list the accepted "
            r"values \(or add \"\$optional\": true to require leaving it out\)",
        ),
        (
            with_calls({"name": "a", "arguments": {"unit": {"$any_of": [{"$optional": True}]}}}),
            r"argument 'unit.\$any_of\[0\]': only an argument or an object key can be "
            r"optional; remove \$optional here",
        ),
        (
            with_calls({"name": "a", "arguments": {"unit": {"$optional": "yes"}}}),
            r"argument 'unit': \$optional must be true or false",
        ),
        (
            with_calls({"name": "a", "arguments": {"unit": {"$normalize": ["case"]}}}),
            r"argument 'unit': add \$any_of or \$equals to say what is accepted",
        ),
        (
            with_calls({"name": "a", "arguments": {"u": {"$equals": 1, "$any_of": [1]}}}),
            r"argument 'u': give \$any_of or \$equals, not both",
        ),
        (
            with_calls({"name": "a", "arguments": {"u": {"$equals": "x", "$normalize": ["CASE"]}}}),
            r"argument 'u': \$normalize must be a list of all_whitespace, case, punctuation, "
            r"whitespace \(got \[\"CASE\"\]\)",
        ),
        (
            with_calls({"name": "a", "normalize": ["lowercase"]}),
            r"field 'expected_tool_calls.0.normalize.0': Input should be 'all_whitespace', "
            r"'case', 'punctuation' or 'whitespace' \(got 'lowercase'\)",
        ),
        (
            with_calls({"name": "a", "extra_arguments": "strict"}),
            r"field 'expected_tool_calls.0.extra_arguments': Input should be 'allow' or "
            r"'forbid' \(got 'strict'\)",
        ),
        (
            with_calls({"name": "a", "alternatives": [{"name": "b", "argument": {}}]}),
            r"field 'expected_tool_calls.0.alternatives.0.argument': Extra inputs are not "
            r"permitted \(remove it or fix its spelling; the fields here are "
            r"name, arguments, extra_arguments, normalize\)",
        ),
        (
            {"defaults": {"extra_arguments": "forbid"}},
            r"line 2: a defaults line must be the first line of the dataset, and there can "
            r"be only one; move it to the top",
        ),
    ],
)
def test_bad_dataset_lines_name_the_line_field_and_fix(tmp_path, bad, message):
    path = write(tmp_path, case_line("ok"), bad)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{path}, line 2: ")
    assert str(info.value).endswith(("Fix the line and load again.", "move it to the top."))


def test_bad_defaults_line(tmp_path):
    path = write(tmp_path, {"defaults": {"normalize": "case"}, "tags": []}, case_line())
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert "line 1: field 'defaults.normalize': Input should be a valid tuple (got 'case')" in str(
        info.value
    )
    assert (
        "field 'tags': Extra inputs are not permitted (remove it or fix its spelling; "
        "the fields here are defaults)" in str(info.value)
    )


def test_equal_cases_from_python_and_jsonl():
    made_in_python = Case.model_validate(
        case_line(expected_tool_calls=[{"name": "a", "normalize": ["case"]}])
    )
    dataset = Dataset([made_in_python], defaults=DatasetDefaults(normalize=("case",)))
    assert json.loads(dataset.to_jsonl().splitlines()[1])["expected_tool_calls"] == [{"name": "a"}]
