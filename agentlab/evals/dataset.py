"""Eval datasets: one JSON object per line, each a case validated by pydantic.

A case gives the input, the tool calls a correct run makes, the outcome its
answer must have and tags::

    {"id": "order-status", "input": "What is the status of order O-1003?",
     "expected_tool_calls": [{"name": "get_order", "arguments": {"order_id": "O-1003"}}],
     "expected_outcome": {"kind": "contains", "value": "delivered"},
     "tags": ["orders"]}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentlab.errors import UserError

__all__ = [
    "Case",
    "Dataset",
    "DatasetError",
    "ExpectedOutcome",
    "ExpectedToolCall",
    "ToolCallSpec",
    "load_dataset",
]


class DatasetError(UserError):
    """A dataset file is malformed; the message names the file, line and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolCallSpec(_Model):
    """A tool call: the tool's name and the arguments that must match.

    Matching is by subset: every listed argument must equal the one made; the
    call may have more.
    """

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)

    def matches(self, name: str, arguments: dict[str, Any] | None) -> bool:
        """Whether a call of `name` with `arguments` (None: unparseable) is this one."""
        if name != self.name:
            return False
        made = arguments or {}
        return all(k in made and made[k] == v for k, v in self.arguments.items())


class ExpectedToolCall(ToolCallSpec):
    """A tool call a correct run makes, or one of its `alternatives` instead."""

    alternatives: list[ToolCallSpec] = Field(default_factory=list)

    def accepts(self, name: str, arguments: dict[str, Any] | None) -> bool:
        """Whether the call satisfies this expectation or one of its alternatives."""
        return self.matches(name, arguments) or any(
            alt.matches(name, arguments) for alt in self.alternatives
        )


class ExpectedOutcome(_Model):
    """What the final answer must be.

    ``exact``, ``contains`` and ``regex`` compare the answer with `value`
    (case-insensitive unless `case_sensitive`); ``scorer`` names a registered
    scorer (see :func:`agentlab.evals.scorer`) built with `kwargs`.
    """

    kind: Literal["exact", "contains", "regex", "scorer"]
    value: str
    case_sensitive: bool = False
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ExpectedOutcome:
        if self.kind == "regex":
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"value is not a valid regular expression: {exc}") from None
        if self.kwargs and self.kind != "scorer":
            raise ValueError(f"kwargs is only allowed with kind 'scorer', not {self.kind!r}")
        return self


class Case(_Model):
    """One eval case. `max_steps` overrides the agent's step limit for this case."""

    id: str = Field(min_length=1)
    input: str = Field(min_length=1)
    expected_tool_calls: list[ExpectedToolCall] = Field(default_factory=list)
    expected_outcome: ExpectedOutcome
    tags: list[str] = Field(default_factory=list)
    max_steps: int | None = Field(default=None, ge=1)


class Dataset:
    """An ordered collection of cases with unique ids."""

    def __init__(self, cases: list[Case], *, name: str = "dataset") -> None:
        seen: set[str] = set()
        for case in cases:
            if case.id in seen:
                raise DatasetError(f"dataset {name!r}: two cases have the id {case.id!r}")
            seen.add(case.id)
        self.cases = cases
        self.name = name

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self.cases)} cases)"


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Load a JSONL dataset (blank lines are skipped); its name is the file's stem.

    Raises :class:`DatasetError` naming the file, the line and the field at fault.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read the dataset {file}: {exc}") from exc
    cases: list[Case] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}, line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno}). "
                "Each line must be one JSON object; fix the line and load again."
            ) from None
        try:
            case = Case.model_validate(data)
        except ValidationError as exc:
            raise DatasetError(f"{where}: {_describe(exc)}. Fix the line and load again.") from None
        if case.id in first_line:
            raise DatasetError(
                f"{where}: the case id {case.id!r} is already used on line "
                f"{first_line[case.id]}; give each case a unique id."
            )
        first_line[case.id] = number
        cases.append(case)
    if not cases:
        raise DatasetError(f"{file}: the dataset has no cases; add one JSON object per line.")
    return Dataset(cases, name=file.stem)


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "the case"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"field {field!r}: {message}")
    return "; ".join(problems)
