"""Eval datasets: one JSON object per line, each a case validated by pydantic.

A case gives the input, the tool calls a correct run makes, the outcome its
answer must have and tags::

    {"id": "order-status", "input": "What is the status of order O-1003?",
     "expected_tool_calls": [{"name": "get_order", "arguments": {"order_id": "O-1003"}}],
     "expected_outcome": {"kind": "contains", "value": "delivered"},
     "tags": ["orders"]}

An expected call matches a made call of the same name whose arguments match every
listed argument. A listed value must be given and equal (numbers by value, ``true``
is not ``1``; lists item by item, objects key by key); a value may instead be a
matcher such as ``{"$any_of": ["km/h", "kph"], "$optional": true}`` (one of these, or
left out) — see :mod:`agentlab.evals.argmatch` for ``$any_of``, ``$equals``,
``$optional`` and ``$normalize``. Two options tune a call:

* ``"extra_arguments"``: ``"allow"`` (default) lets the call give arguments not listed;
  ``"forbid"`` fails it for each one.
* ``"normalize"``: how strings compare, a list of ``case``, ``whitespace``,
  ``all_whitespace`` and ``punctuation``; ``[]`` (default) compares them exactly.

``"alternatives"`` lists other calls accepted instead. The first line may set these
options for every call that does not set its own::

    {"defaults": {"extra_arguments": "forbid", "normalize": ["case", "whitespace"]}}

:meth:`Dataset.to_jsonl` writes a dataset back in this format, canonically.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from agentlab.errors import UserError
from agentlab.evals.argmatch import Normalization, compile_arguments

__all__ = [
    "Case",
    "Dataset",
    "DatasetDefaults",
    "DatasetError",
    "ExpectedOutcome",
    "ExpectedToolCall",
    "ToolCallSpec",
    "load_dataset",
]

_DEFAULTS = "dataset_defaults"  # the validation/serialization context key
_M = TypeVar("_M", bound=BaseModel)


class DatasetError(UserError):
    """A dataset file is malformed; the message names the file, line and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ExtraArguments = Literal["allow", "forbid"]
Normalizations = Annotated[
    tuple[Normalization, ...], AfterValidator(lambda value: tuple(sorted(set(value))))
]


class DatasetDefaults(_Model):
    """The options of every expected call that does not set its own: whether extra
    arguments fail a call and how strings compare (see the module doc)."""

    extra_arguments: ExtraArguments = "allow"
    normalize: Normalizations = ()


class ToolCallSpec(_Model):
    """A tool call: the tool's name and what its arguments must be.

    Every listed argument must match (see :mod:`agentlab.evals.argmatch`); arguments not
    listed are fine unless `extra_arguments` is ``"forbid"``. Strings compare under
    `normalize`.
    """

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    extra_arguments: ExtraArguments = "allow"
    normalize: Normalizations = ()

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        defaults = (info.context or {}).get(_DEFAULTS)
        if isinstance(data, dict) and isinstance(defaults, DatasetDefaults):
            return {**defaults.model_dump(), **data}
        return data

    @field_validator("arguments")
    @classmethod
    def _check_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        compile_arguments(value)  # raises ValueError naming the argument at fault
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        defaults = (info.context or {}).get(_DEFAULTS)
        if isinstance(defaults, DatasetDefaults):  # write only the options that differ
            for key in DatasetDefaults.model_fields:
                value = getattr(self, key)
                if value == getattr(defaults, key):
                    data.pop(key, None)
                else:
                    data[key] = list(value) if isinstance(value, tuple) else value
        return data

    def mismatches(self, name: str, arguments: dict[str, Any] | None) -> list[str]:
        """Why a call of `name` with `arguments` (None: not a JSON object) is not this
        one, one line per argument at fault; [] when it is."""
        if name != self.name:
            return [f"it calls {name!r}, not {self.name!r}"]
        if arguments is None:
            return ["its arguments are not a JSON object"]
        return compile_arguments(self.arguments).problems(
            arguments,
            allow_extra=self.extra_arguments == "allow",
            normalize=frozenset(self.normalize),
        )

    def matches(self, name: str, arguments: dict[str, Any] | None) -> bool:
        """Whether a call of `name` with `arguments` (None: unparseable) is this one."""
        return not self.mismatches(name, arguments)


class ExpectedToolCall(ToolCallSpec):
    """A tool call a correct run makes, or one of its `alternatives` instead."""

    alternatives: list[ToolCallSpec] = Field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The tool names this expectation accepts, its own first."""
        return list(dict.fromkeys(spec.name for spec in (self, *self.alternatives)))

    def rejections(self, name: str, arguments: dict[str, Any] | None) -> list[str]:
        """[] when the call satisfies this expectation or an alternative; otherwise why
        not, from the first of them that calls the same tool."""
        specs = (self, *self.alternatives)
        found = [spec.mismatches(name, arguments) for spec in specs]
        if not all(found):
            return []
        same_tool = [
            problems for spec, problems in zip(specs, found, strict=True) if spec.name == name
        ]
        if same_tool:
            return same_tool[0]
        return [f"it calls {name!r}, not {' or '.join(map(repr, self.names))}"]

    def accepts(self, name: str, arguments: dict[str, Any] | None) -> bool:
        """Whether the call satisfies this expectation or one of its alternatives."""
        return not self.rejections(name, arguments)


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


class _DefaultsLine(_Model):
    defaults: DatasetDefaults


class Dataset:
    """An ordered collection of cases with unique ids, and the call `defaults` they
    were read with."""

    def __init__(
        self, cases: list[Case], *, name: str = "dataset", defaults: DatasetDefaults | None = None
    ) -> None:
        seen: set[str] = set()
        for case in cases:
            if case.id in seen:
                raise DatasetError(f"dataset {name!r}: two cases have the id {case.id!r}")
            seen.add(case.id)
        self.cases = cases
        self.name = name
        self.defaults = defaults or DatasetDefaults()

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self.cases)} cases)"

    def to_jsonl(self, path: str | os.PathLike[str] | None = None) -> str:
        """The dataset as JSONL, written to `path` when given.

        Canonical: a defaults line when they differ from the built-in ones, then one
        case per line with sorted keys and without fields left at their defaults (nor
        call options equal to the dataset's). :func:`load_dataset` reads it back to
        equal cases, and writing those again gives the same bytes.
        """
        lines = []
        if self.defaults != DatasetDefaults():
            header = _DefaultsLine(defaults=self.defaults)
            lines.append(header.model_dump(mode="json", exclude_defaults=True))
        context = {_DEFAULTS: self.defaults}
        lines.extend(
            case.model_dump(mode="json", exclude_defaults=True, context=context)
            for case in self.cases
        )
        text = "".join(
            json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n" for line in lines
        )
        if path is not None:
            Path(path).write_bytes(text.encode("utf-8"))
        return text


def read_json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str, Any]]:
    """``(number, where, value)`` for each non-blank line of a JSONL file, `where`
    naming the file and line for messages; :class:`DatasetError` if it cannot be read."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read the dataset {file}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}, line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno}). "
                "Each line must be one JSON object; fix the line and load again."
            ) from None
        yield number, where, value


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Load a JSONL dataset (blank lines are skipped); its name is the file's stem.

    Raises :class:`DatasetError` naming the file, the line and the field at fault.
    """
    file = Path(path)
    defaults: DatasetDefaults | None = None
    cases: list[Case] = []
    first_line: dict[str, int] = {}
    for number, where, data in read_json_lines(file):
        if isinstance(data, dict) and "defaults" in data and "id" not in data:
            if cases or defaults is not None:
                raise DatasetError(
                    f"{where}: a defaults line must be the first line of the dataset, and "
                    "there can be only one; move it to the top."
                )
            defaults = validate(_DefaultsLine, data, where).defaults
            continue
        case = validate(Case, data, where, defaults)
        if case.id in first_line:
            raise DatasetError(
                f"{where}: the case id {case.id!r} is already used on line "
                f"{first_line[case.id]}; give each case a unique id."
            )
        first_line[case.id] = number
        cases.append(case)
    if not cases:
        raise DatasetError(f"{file}: the dataset has no cases; add one JSON object per line.")
    return Dataset(cases, name=file.stem, defaults=defaults)


def validate(model: type[_M], data: Any, where: str, defaults: DatasetDefaults | None = None) -> _M:
    """`data` as a `model` (its expected calls taking `defaults`), or a
    :class:`DatasetError` saying, at `where`, which field is wrong and how to fix it."""
    try:
        return model.model_validate(data, context={_DEFAULTS: defaults})
    except ValidationError as exc:
        raise DatasetError(
            f"{where}: {_describe(exc, model)}. Fix the line and load again."
        ) from None


def _describe(exc: ValidationError, model: type[BaseModel]) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "the case"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message += " (add it)"
        elif error["type"] == "extra_forbidden":
            allowed = ", ".join(_fields_at(model, error["loc"][:-1]))
            message += f" (remove it or fix its spelling; the fields here are {allowed})"
        elif isinstance(error["input"], str | int | float | bool) and not error.get("ctx", {}).get(
            "error"
        ):
            message += f" (got {error['input']!r})"
        problems.append(f"field {field!r}: {message}")
    return "; ".join(problems)


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The fields of the model found by following `loc` from `model`."""
    annotation: Any = model
    for part in loc:
        annotation = (
            get_args(annotation)[0]
            if isinstance(part, int)
            else annotation.model_fields[part].annotation
        )
    return list(annotation.model_fields)
