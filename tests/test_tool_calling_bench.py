"""The general tool-calling benchmark: its dataset, its checker and a real smoke run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from _http import load_benchmark

from agentlab.evals.dataset import read_json_lines
from agentlab.messages import AssistantMessage, ToolCall

ROOT = Path(__file__).resolve().parent.parent


bench = load_benchmark("tool_calling")

AREA = {
    "name": "area",
    "description": "Area of a shape.",
    "parameters": {
        "type": "object",
        "required": ["shape", "size", "tags"],
        "properties": {
            "shape": {"type": "string"},
            "size": {
                "type": "object",
                "required": ["width"],
                "properties": {"width": {"type": "number"}, "height": {"type": "number"}},
            },
            "tags": {"type": "array", "items": {"type": "string"}},
            "unit": {"type": "string", "enum": ["cm", "m"]},
        },
    },
}
TRUTH = {
    "shape": ["Square"],
    "size": [{"width": [3], "height": [""]}],
    "tags": [["a b", "c"]],
    "unit": ["cm", ""],
}


@pytest.fixture
def cases(tmp_path: Path) -> Any:
    lines = [
        {"id": "call", "question": [{"role": "user", "content": "Area of a 3 cm square?"}],
         "function": [AREA],
         "ground_truth": [{"area": TRUTH}]},
        {"id": "none", "question": [{"role": "user", "content": "Hello!"}], "function": [AREA],
         "ground_truth": []},
    ]  # fmt: skip
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {case.id: case for case in bench.load_cases(path)}


def reply(name: str | None = None, **arguments: Any) -> AssistantMessage:
    if name is None:
        return AssistantMessage(content="Hi!")
    call = ToolCall(id="call_1", name=name, arguments=json.dumps(arguments))
    return AssistantMessage(tool_calls=(call,))


def test_checker_accepts_equivalent_values(cases: dict[str, Any]) -> None:
    call = cases["call"]
    for arguments in (
        {"shape": "Square", "size": {"width": 3}, "tags": ["a b", "c"]},
        {"shape": "  square ", "size": {"width": 3.0}, "tags": ["A  B", "C"], "unit": "CM"},
    ):
        outcome = bench.score(call, reply("area", **arguments))
        assert outcome.correct and outcome.right_name, outcome.why
    assert bench.score(cases["none"], reply()).correct


@pytest.mark.parametrize(
    ("name", "arguments", "why"),
    [
        ("perimeter", {"shape": "square", "size": {"width": 3}, "tags": ["a b", "c"]},
         "calls 'perimeter'"),
        ("area", {"shape": "square", "size": {"width": 3}}, "'tags' is missing"),
        ("area", {"shape": "square", "size": {"width": 3}, "tags": ["a b", "c"], "x": 1},
         "'x' is not expected"),
        ("area", {"shape": "square", "size": {"width": 4}, "tags": ["a b", "c"]},
         "'size.width' is 4"),
        ("area", {"shape": "square", "size": {"width": 3, "height": 3}, "tags": ["a b", "c"]},
         "'size.height' must be left out"),
        ("area", {"shape": "square", "size": {"width": 3}, "tags": ["c", "a b"]}, "'tags[0]'"),
        ("area", {"shape": "square", "size": {"width": 3}, "tags": ["a b", "c"], "unit": "m"},
         "'unit' is \"m\""),
        ("area", {"shape": "3", "size": {"width": "3"}, "tags": ["a b", "c"]}, "'shape'"),
    ],
)  # fmt: skip
def test_checker_rejects(cases: dict[str, Any], name: str, arguments: dict, why: str) -> None:
    outcome = bench.score(cases["call"], reply(name, **arguments))
    assert not outcome.correct
    assert outcome.right_name == (name == "area")
    assert why in outcome.why


def test_checker_on_calls_and_no_calls(cases: dict[str, Any]) -> None:
    missed = bench.score(cases["call"], reply())
    assert (missed.correct, missed.why) == (False, "expected area, got no call")
    extra = bench.score(cases["none"], reply("area", shape="x"))
    assert not extra.correct and "expected no call" in extra.why


def _value(accepted: Any, schema: dict[str, Any]) -> Any:
    """One concrete value a ground-truth list of accepted values allows."""
    value = next(v for v in accepted if v != "")
    if isinstance(value, dict) and schema.get("type") == "object":
        return _arguments(value, schema)
    items = schema.get("items", {})
    if isinstance(value, list) and items.get("type") == "object":
        return [_arguments(v, items) for v in value]
    return value


def _arguments(truth: dict[str, list[Any]], schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema["properties"]
    return {
        key: _value(accepted, properties[key])
        for key, accepted in truth.items()
        if any(v != "" for v in accepted)
    }


def test_dataset_shape_and_expected_calls_follow_their_schemas() -> None:
    lines = [data for _, _, data in read_json_lines(bench.DATASET)]
    cases = bench.load_cases()
    assert len(cases) == len(lines) >= 150
    functions = {f["name"] for line in lines for f in line["function"]}
    assert len(functions) >= 60
    no_call = sum(case.expected is None for case in cases) / len(cases)
    assert 0.2 <= no_call <= 0.3
    assert all(2 <= len(case.tools) <= 5 for case in cases)
    assert len({case.question for case in cases}) == len(cases)
    for line in lines:
        offered = {f["name"]: f["parameters"] for f in line["function"]}
        for call in line["ground_truth"]:
            [(name, truth)] = call.items()
            schema = offered[name]
            jsonschema.validate(_arguments(truth, schema), schema)
            assert set(schema.get("required", [])) <= truth.keys(), line["id"]


def test_splits_partition_the_cases() -> None:
    cases = bench.load_cases()
    dev, check = bench.select(cases, "dev", None), bench.select(cases, "check", None)
    assert len(dev) + len(check) == len(cases)
    assert not {c.id for c in dev} & {c.id for c in check}
    assert len(bench.select(cases, "dev", 5)) == 5


@pytest.mark.local_model
@pytest.mark.timeout(300)
def test_benchmark_runs_the_local_model(allow_real_models: None) -> None:
    from agentlab.models.local import LocalModel

    cases = bench.load_cases()
    chosen = [next(c for c in cases if c.expected is None), *bench.select(cases, "dev", 2)]
    result = asyncio.run(bench.run(LocalModel(threads=1, max_tokens=64), chosen))
    assert result["cases"] == 3 and result["no_call_cases"] >= 1
    for key in ("full_call_accuracy", "no_call_accuracy", "name_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    assert result["s_per_case"] > 0
