"""Which argument values a small local model may give: those the conversation offers.

A 135M model invents values (``1`` for "7 days", ``"celsius"`` when the user said
fahrenheit) and fills in every optional parameter. :func:`narrow_parameters` rewrites
a tool's parameter schema, at every depth (nested objects, array items), so that

* a ``pattern`` string takes a matching value found in the conversation and not used
  by an answered call; a required one without such a value makes the tool uncallable;
* any other free string takes a span of the conversation (``spans``);
* a number takes a number written in the conversation (``1,200.50``, ``$86.40``,
  ``120k``, ``6.5%``, which also offers ``0.065``), an integer an integral one;
* an enum keeps only the values the question mentions (all of them when it
  mentions none and the parameter is required), and those values are no span for
  the other strings of the same object;
* a number mentioned next to a word of the parameter's name ("45 minutes" for
  ``duration_minutes``) is the only one that parameter may take, and one the other
  numeric parameters of the same object may not take;
* an optional parameter is left out unless the question mentions it (a word of its
  name, or one of its enum values) and then it is required; an optional boolean the
  question names is ``true`` unless the question holds a negation.

Numbers and strings keep their schema when the conversation offers no value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentlab.models.local_relevance import mentions, stems

__all__ = ["Evidence", "narrow_parameters", "numbers_in", "pattern_values"]

MAX_ITEMS = 8  # arrays: small models otherwise repeat items until max_tokens
CONTEXT_WORDS = 2  # a number is "about" the word after it or the words this close before it
_NEGATIONS = frozenset({"not", "no", "without", "don", "never", "nor"})
_NUMBER = re.compile(
    r"(?<![\w.])(?<!\w-)(?P<sign>-\s?)?[$€£]?(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?P<fraction>\.\d+)?"
    r"(?:\s?(?P<suffix>k\b|%|percent\b))?",
    re.IGNORECASE,
)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 10)


def numbers_in(texts: Sequence[str]) -> list[int | float]:
    """The distinct numbers written in `texts`, in order: each as written, negated when
    a minus sign precedes it, times 1000 for a ``k`` suffix, divided by 100 for a percent."""
    return list(dict.fromkeys(n for n, _, _ in _numbers_with_context(texts)))


Context = tuple[list[str], list[str]]  # stemmed words after and before a number


def _numbers_with_context(texts: Sequence[str]) -> list[tuple[int | float, Context, bool]]:
    """Each number of `texts` (see :func:`numbers_in`) with the stemmed words after and
    before it (``CONTEXT_WORDS`` each, not beyond another number), and whether it is
    derived (a percent divided by 100)."""
    found: list[tuple[int | float, Context, bool]] = []
    for text in texts:
        for m in _NUMBER.finditer(text):
            value = float(m["whole"].replace(",", "") + (m["fraction"] or ""))
            suffix = (m["suffix"] or "").lower()
            if suffix == "k":
                value *= 1000
            before = re.split(r"\d", text[: m.start()])[-1]  # up to the previous number
            unit = "percent " if suffix in ("%", "percent") else ""
            after = unit + re.split(r"\d", text[m.end() :])[0]
            context = (  # the unit right after it ("45 minutes"), or the words before
                stems(after, keep_stopwords=True)[:1],
                stems(before, keep_stopwords=True)[-CONTEXT_WORDS:],
            )
            values = [value, -value] if m["sign"] else [value]
            found.extend((_number(v), context, False) for v in values)
            if suffix in ("%", "percent"):
                found.append((_number(value / 100), context, True))
    return found


def pattern_values(pattern: str, texts: Sequence[str]) -> list[str]:
    """The distinct whole-word substrings of `texts` that match `pattern`."""
    try:
        whole = re.compile(pattern)
        inner = pattern.removeprefix("^").removesuffix("$")
        part = re.compile(rf"(?<![A-Za-z0-9])(?:{inner})(?![A-Za-z0-9])")
    except re.error:
        return []
    found = dict.fromkeys(m.group(0) for text in texts for m in part.finditer(text))
    return [v for v in found if whole.search(v)]


@dataclass(frozen=True)
class Evidence:
    """What the conversation offers: `question` the latest user message, `texts` where
    values are copied from, `used` the pattern values answered calls took, `spans`
    the values free strings may take."""

    question: str
    texts: Sequence[str] = ()
    used: frozenset[str] = frozenset()
    spans: Sequence[str] = ()
    claimed: frozenset[int | float] = frozenset()
    words: list[str] = field(init=False)
    numbers: list[tuple[int | float, Context, bool]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", stems(self.question, keep_stopwords=True))
        object.__setattr__(self, "numbers", _numbers_with_context(self.texts))

    def near(self, key: str) -> list[int | float]:
        """The numbers written just before a word of the parameter name `key` ("45
        minutes" for ``duration_minutes``), else shortly after one ("volume 80"); as
        written (not divided by 100) when the name says percent."""
        names = stems(key)
        as_written = "percent" in names
        for side in (0, 1):
            found = [
                n
                for n, context, derived in self.numbers
                if any(mentions(context[side], w) for w in names) and not (as_written and derived)
            ]
            if found:
                return list(dict.fromkeys(found))
        return []

    def numbers_for(self, key: str) -> list[int | float]:
        """:meth:`near` numbers, else those no other parameter claims (`claimed`), else all."""
        every = list(dict.fromkeys(n for n, _, _ in self.numbers))
        return self.near(key) or [n for n in every if n not in self.claimed] or every

    def names(self, key: str) -> bool:
        """Whether the question mentions a content word of the parameter name `key`."""
        return any(mentions(self.words, word) for word in stems(key))


_MISSING = object()  # a required value the conversation does not offer
_LEFT_OUT = object()  # an optional parameter the question does not mention


def narrow_parameters(parameters: dict[str, Any], evidence: Evidence) -> dict[str, Any] | None:
    """`parameters` (an object schema) narrowed to the values of `evidence` (see the
    module docstring); ``None`` when a required pattern parameter has no value."""
    narrowed = _narrow_object(parameters, evidence)
    return narrowed if isinstance(narrowed, dict) else None


def _narrow_object(schema: dict[str, Any], evidence: Evidence) -> dict[str, Any] | object:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    required = list(schema.get("required", ()))
    taken = {  # a value the question gives an enum parameter is no other string's value
        str(v).casefold()
        for spec in properties.values()
        if isinstance(spec, dict) and isinstance(spec.get("enum"), list)
        for v in spec["enum"]
        if mentions(evidence.words, str(v).replace("_", " "))
    }
    if taken:
        spans = [v for v in evidence.spans if v.casefold() not in taken]
        evidence = dataclasses.replace(evidence, spans=spans)
    claimed = {  # numbers written next to a parameter's name are not the others'
        claim
        for key, spec in properties.items()
        if isinstance(spec, dict) and spec.get("type") in ("integer", "number")
        for n in evidence.near(key)
        for claim in (n, _number(n / 100))
    }
    if claimed:
        evidence = dataclasses.replace(evidence, claimed=frozenset(claimed))
    kept: dict[str, Any] = {}
    for key, spec in properties.items():
        value, mentioned = _narrow(key, spec, evidence, key in required)
        if value is _MISSING:
            if key in required:
                return _MISSING
            continue
        if value is _LEFT_OUT:
            continue
        kept[key] = value
        if mentioned and key not in required:
            required.append(key)
    if not kept and not required:  # an object of optional parameters only: offer them all
        narrowed = {key: _narrow(key, spec, evidence, True)[0] for key, spec in properties.items()}
        kept = {key: spec for key, spec in narrowed.items() if spec is not _MISSING}
    out = {**schema, "properties": kept}
    if required:
        out["required"] = required
    return out


def _narrow(key: str, spec: Any, evidence: Evidence, required: bool) -> tuple[Any, bool]:
    """`spec` narrowed, and whether an optional parameter is to be given."""
    if not isinstance(spec, dict) or "$ref" in spec:
        return spec, False
    kind = spec.get("type")
    named = evidence.names(key)
    if isinstance(spec.get("enum"), list):
        said = [v for v in spec["enum"] if mentions(evidence.words, str(v).replace("_", " "))]
        if required:
            return {**spec, "enum": said or spec["enum"]}, False
        return ({**spec, "enum": said}, True) if said else (_LEFT_OUT, False)
    if kind == "string" and isinstance(spec.get("pattern"), str):
        values = [
            v for v in pattern_values(spec["pattern"], evidence.texts) if v not in evidence.used
        ]
        if values:
            return {"enum": values}, named
        return _MISSING, False
    if kind == "string" and not ({"const", "format"} & spec.keys()):
        spans = {"enum": list(evidence.spans)} if evidence.spans else spec
        return (spans, named) if required or named else (_LEFT_OUT, False)
    if kind == "boolean" and not required:  # named: presumably asked for, unless negated
        negated = bool(_NEGATIONS & set(evidence.words))
        return (
            ({**spec, "enum": [True]} if not negated else spec, True)
            if named
            else (_LEFT_OUT, False)
        )
    if kind in ("integer", "number"):
        numbers = _in_range(spec, evidence.numbers_for(key), integral=kind == "integer")
        if required:
            return ({"enum": numbers} if numbers else spec), False
        return ({"enum": numbers}, True) if named and numbers else (_LEFT_OUT, False)
    if kind == "array" and isinstance(spec.get("items"), dict):
        items, said_items = _narrow(key, spec["items"], evidence, True)
        array = {**spec, "items": spec["items"] if items is _MISSING else items}
        array.setdefault("maxItems", MAX_ITEMS)
        said_items = said_items or len(array["items"].get("enum", ())) < len(
            spec["items"].get("enum", ())
        )
        if required:
            return array, False
        if named or said_items:
            return {**array, "minItems": max(1, spec.get("minItems", 1))}, True
        return _LEFT_OUT, False
    if kind == "object":
        inner = _narrow_object(spec, evidence)
        if required:
            return inner, False
        return (inner, True) if named and inner is not _MISSING else (_LEFT_OUT, False)
    if required:
        return spec, False
    return (spec, True) if named else (_LEFT_OUT, False)


def _in_range(spec: dict[str, Any], numbers: list[int | float], *, integral: bool) -> list[Any]:
    low, high = spec.get("minimum"), spec.get("maximum")
    return [
        n
        for n in numbers
        if (not integral or float(n).is_integer())
        and (low is None or n >= low)
        and (high is None or n <= high)
    ]
