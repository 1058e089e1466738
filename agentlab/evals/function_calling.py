"""Import datasets from the common function-calling test format.

In that format each line of the questions file holds the chat (``question``, a list of
turns, each a list of ``{"role", "content"}`` messages, or one such list), the
functions offered (``function``, JSON-schema docs) and an ``id``::

    {"id": "simple_7", "question": [[{"role": "user", "content": "How fast is 100 km in 2 h?"}]],
     "function": [{"name": "speed", "parameters": {"type": "dict", "properties": {
         "distance": {"type": "integer"}, "unit": {"type": "string"}},
         "required": ["distance"]}}]}

and the reference answer is a ``ground_truth`` list of calls, each
``{function: {argument: [accepted values]}}``, on the line itself or on the line of a
separate file with the same ``id``::

    {"id": "simple_7", "ground_truth": [{"speed": {"distance": [100], "unit": ["km/h", ""]}}]}

Each call becomes an expected call; each list of accepted values becomes
``{"$any_of": [...]}`` (a single value stays plain), where ``""`` means "may be left
out" (``"$optional": true``) unless the function requires the argument. For an
argument whose schema type is ``dict``/``object`` (or an array of them) each accepted
value holds accepted values per key, converted the same way.

The cases check only the calls, like the reference checker: their outcome is the
``tool_calls`` scorer without extra calls, extra arguments fail, and strings compare
ignoring case, whitespace and punctuation (the checker ignores case, spaces and
``,./-_*^``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from agentlab.evals.dataset import (
    Case,
    Dataset,
    DatasetDefaults,
    DatasetError,
    read_json_lines,
    validate,
)

__all__ = ["CHECKER_DEFAULTS", "load_function_calling"]

CHECKER_DEFAULTS = DatasetDefaults(
    extra_arguments="forbid", normalize=("all_whitespace", "case", "punctuation")
)
"""The call options that agree with the reference checker."""

_OUTCOME = {"kind": "scorer", "value": "tool_calls", "kwargs": {"allow_extra_calls": False}}

Call = dict[str, dict[str, list[Any]]]  # {function: {argument: [accepted values]}}


def _one_function_per_call(calls: list[Call]) -> list[Call]:
    for number, call in enumerate(calls, start=1):
        if len(call) != 1:
            raise ValueError(
                f"call {number} names {len(call)} functions; write each call as "
                "{function_name: {argument: [accepted values]}}"
            )
    return calls


GroundTruth = Annotated[list[Call], AfterValidator(_one_function_per_call)]


class _Line(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Message(_Line):
    role: str
    content: str


class _Function(_Line):
    name: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)


class _Answer(_Line):
    id: str = Field(min_length=1)
    ground_truth: GroundTruth


class _Question(_Line):
    id: str = Field(min_length=1)
    question: list[list[_Message]]
    function: list[_Function] = Field(default_factory=list)
    ground_truth: GroundTruth | None = None

    @field_validator("question", mode="before")
    @classmethod
    def _turns(cls, value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
            return [value]  # one turn given as a flat list of messages
        return value

    @field_validator("question")
    @classmethod
    def _single_user_turn(cls, turns: list[list[_Message]]) -> list[list[_Message]]:
        roles = [m.role for turn in turns for m in turn]
        if len(turns) != 1 or roles != ["user"]:
            raise ValueError(
                f"has {len(turns)} turn(s) with the roles {roles}; only one turn holding "
                "one user message can be converted (a case has one input): leave such "
                "lines out"
            )
        return turns


def load_function_calling(
    questions: str | os.PathLike[str],
    ground_truth: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
) -> Dataset:
    """Convert a function-calling test file (and its separate ground-truth file, lines
    matched by ``id``) into a :class:`Dataset` named `name` (default: the file's stem).

    Raises :class:`DatasetError` naming the file, line and field at fault.
    """
    answers: dict[str, list[Call]] = {}
    if ground_truth is not None:
        for _, where, data in read_json_lines(ground_truth):
            answer = validate(_Answer, data, where)
            if answer.id in answers:
                raise DatasetError(
                    f"{where}: a second ground truth for the id {answer.id!r}; keep one per id."
                )
            answers[answer.id] = answer.ground_truth
    cases = [
        _case(validate(_Question, data, where), answers, where)
        for _, where, data in read_json_lines(questions)
    ]
    if not cases:
        raise DatasetError(f"{questions}: no questions to convert; add one JSON object per line.")
    return Dataset(cases, name=name or Path(questions).stem, defaults=CHECKER_DEFAULTS)


def _case(question: _Question, answers: dict[str, list[Call]], where: str) -> Case:
    truth = question.ground_truth if question.ground_truth is not None else answers.get(question.id)
    if truth is None:
        raise DatasetError(
            f"{where}: no ground truth for the id {question.id!r}; give it a "
            "'ground_truth' field or pass the file holding it."
        )
    functions = {f.name: f.parameters for f in question.function}
    try:
        calls = [_expected_call(call, functions) for call in truth]
    except ValueError as exc:
        raise DatasetError(f"{where}: ground truth of {question.id!r}: {exc}") from None
    data = {
        "id": question.id,
        "input": question.question[0][0].content,
        "expected_tool_calls": calls,
        "expected_outcome": _OUTCOME,
    }
    return validate(Case, data, where, CHECKER_DEFAULTS)


def _expected_call(call: Call, functions: dict[str, Any]) -> dict[str, Any]:
    [(function, arguments)] = call.items()
    if functions and function not in functions:
        raise ValueError(
            f"it calls {function!r}, which is not among the line's functions {sorted(functions)}"
        )
    return {
        "name": function,
        "arguments": _fields(arguments, functions.get(function, {}), function),
    }


def _fields(accepted: Any, schema: dict[str, Any], path: str) -> dict[str, Any]:
    """Per key, the pattern for its list of accepted values."""
    if not isinstance(accepted, dict):
        raise ValueError(f"{path}: expected {{key: [accepted values]}}, got {accepted!r}")
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    return {
        key: _accepted(values, properties.get(key, {}), key in required, f"{path}.{key}")
        for key, values in accepted.items()
    }


def _accepted(values: Any, schema: dict[str, Any], required: bool, path: str) -> Any:
    if not isinstance(values, list):
        raise ValueError(f"{path}: the accepted values must be a list, got {values!r}")
    optional = "" in values and not required
    options = [_value(v, schema, path) for v in values if not (optional and v == "")]
    if len(options) == 1 and not optional:
        return options[0]
    return {"$any_of": options, "$optional": True} if optional else {"$any_of": options}


def _value(value: Any, schema: dict[str, Any], path: str) -> Any:
    kind = schema.get("type")
    if kind in ("dict", "object"):
        return _fields(value, schema, path)
    items = schema.get("items", {})
    if kind == "array" and items.get("type") in ("dict", "object") and isinstance(value, list):
        return [_fields(item, items, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict) and any(str(key).startswith("$") for key in value):
        return {"$equals": value}
    return value
