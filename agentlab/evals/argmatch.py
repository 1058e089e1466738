"""Accepted values for the arguments of an expected tool call: a small JSON pattern language.

Each value in an expected call's ``arguments`` is a *pattern*:

* A plain JSON value: the argument must be given and equal it. Numbers compare by
  value (``3`` equals ``3.0``; ``true`` is not ``1``), strings after the string
  normalisation in force (none by default), lists item by item, objects key by key
  (no key missing, none extra), all with these same rules.
* An object whose keys start with ``$``: a matcher.

  - ``{"$any_of": [p, ...]}``: the value matches one of the patterns ``p``.
  - ``{"$equals": v}``: the value matches ``v``; an object ``v`` is a plain value even
    if its keys start with ``$``.
  - ``"$optional": true`` (beside ``$any_of`` or ``$equals``): the argument, or the
    object key, may be left out; when given it must match. ``{"$optional": true}`` alone
    accepts any value or none, and ``{"$any_of": [], "$optional": true}`` only none.
  - ``"$normalize": [...]`` (beside ``$any_of`` or ``$equals``): how strings in this
    value compare, overriding the call's setting. Any of ``case`` (ignore case),
    ``whitespace`` (trim, and count runs of whitespace as one space),
    ``all_whitespace`` (ignore whitespace: "New York" equals "NewYork") and
    ``punctuation`` (ignore punctuation and symbols: "km/h" equals "kmh"); ``[]`` compares
    exactly.

For example ``{"city": "Paris", "unit": {"$any_of": ["km/h", "kph"], "$optional": true}}``
needs ``city`` to be "Paris" and accepts ``unit`` left out, "km/h" or "kph".
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

__all__ = [
    "NORMALIZATIONS",
    "ArgumentsPattern",
    "Normalization",
    "compile_arguments",
    "normalize_text",
]

Normalization = Literal["all_whitespace", "case", "punctuation", "whitespace"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
_MATCHER_KEYS = ("$any_of", "$equals", "$normalize", "$optional")
_IGNORING = {
    "all_whitespace": "whitespace",
    "case": "case",
    "punctuation": "punctuation",
    "whitespace": "extra whitespace",
}


def normalize_text(text: str, normalize: frozenset[str]) -> str:
    """`text` as compared under the normalisations `normalize` (see the module doc)."""
    if "case" in normalize:
        text = text.casefold()
    if "punctuation" in normalize:
        text = "".join(c for c in text if unicodedata.category(c)[0] not in "PS")
    if "all_whitespace" in normalize:
        return "".join(text.split())
    if "whitespace" in normalize:
        return " ".join(text.split())
    return text


class Pattern(Protocol):
    def problem(self, value: Any, path: str, normalize: frozenset[str]) -> str | None:
        """Why `value` (found at `path`) does not match; None when it does."""

    def describe(self) -> str:
        """The accepted values, for explanations."""


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _rejected(pattern: Pattern, value: Any, path: str, normalize: frozenset[str]) -> str:
    note = ""
    if normalize and isinstance(value, str):
        note = f" (ignoring {', '.join(sorted(_IGNORING[n] for n in normalize))})"
    return f"argument {path!r} is {_show(value)}; accepted {pattern.describe()}{note}"


@dataclass(frozen=True, slots=True)
class _Scalar:
    value: str | int | float | bool | None

    def problem(self, value: Any, path: str, normalize: frozenset[str]) -> str | None:
        return None if self._same(value, normalize) else _rejected(self, value, path, normalize)

    def _same(self, value: Any, normalize: frozenset[str]) -> bool:
        want = self.value
        if isinstance(want, bool) or isinstance(value, bool):
            return isinstance(want, bool) and isinstance(value, bool) and want == value
        if isinstance(want, int | float):
            return isinstance(value, int | float) and want == value
        if isinstance(want, str):
            return isinstance(value, str) and (
                normalize_text(want, normalize) == normalize_text(value, normalize)
            )
        return value is None

    def describe(self) -> str:
        return _show(self.value)


@dataclass(frozen=True, slots=True)
class _Items:
    items: tuple[Pattern, ...]

    def problem(self, value: Any, path: str, normalize: frozenset[str]) -> str | None:
        if not isinstance(value, list):
            return _rejected(self, value, path, normalize)
        if len(value) != len(self.items):
            return (
                f"argument {path!r} has {len(value)} items, {_show(value)}; "
                f"accepted {len(self.items)}: {self.describe()}"
            )
        for index, (item, given) in enumerate(zip(self.items, value, strict=True)):
            found = item.problem(given, f"{path}[{index}]", normalize)
            if found:
                return found
        return None

    def describe(self) -> str:
        return f"[{', '.join(item.describe() for item in self.items)}]"


@dataclass(frozen=True, slots=True)
class _Slot:
    """What one key of an object accepts; `pattern` None: any value."""

    pattern: Pattern | None
    optional: bool

    def problem(self, value: Any, path: str, normalize: frozenset[str]) -> str | None:
        if self.pattern is None:
            return None
        if self.pattern == _NOTHING:
            return f"argument {path!r} must be left out (given {_show(value)})"
        found = self.pattern.problem(value, path, normalize)
        return f"{found}, or left out" if found and self.optional else found

    def describe(self) -> str:
        if self.pattern == _NOTHING:
            return "left out"
        accepted = "any value" if self.pattern is None else self.pattern.describe()
        return f"{accepted} or left out" if self.optional else accepted


@dataclass(frozen=True, slots=True)
class _Fields:
    fields: Mapping[str, _Slot]

    def problems(
        self, value: dict[str, Any], prefix: str, normalize: frozenset[str], allow_extra: bool
    ) -> list[str]:
        found: list[str] = []
        for key, slot in self.fields.items():
            path = f"{prefix}{key}"
            if key in value:
                problem = slot.problem(value[key], path, normalize)
                if problem:
                    found.append(problem)
            elif not slot.optional:
                found.append(f"argument {path!r} is missing; accepted {slot.describe()}")
        if not allow_extra:
            found.extend(
                f"argument {prefix + key!r} is not expected (given {_show(value[key])})"
                for key in value
                if key not in self.fields
            )
        return found

    def problem(self, value: Any, path: str, normalize: frozenset[str]) -> str | None:
        if not isinstance(value, dict):
            return _rejected(self, value, path, normalize)
        return next(iter(self.problems(value, f"{path}.", normalize, allow_extra=False)), None)

    def describe(self) -> str:
        inner = ", ".join(f"{_show(key)}: {slot.describe()}" for key, slot in self.fields.items())
        return f"{{{inner}}}"


@dataclass(frozen=True, slots=True)
class _AnyOf:
    options: tuple[Pattern, ...]

    def problem(self, value: Any, path: str, normalize: frozenset[str]) -> str | None:
        if len(self.options) == 1:  # the option's own, more precise, explanation
            return self.options[0].problem(value, path, normalize)
        if any(option.problem(value, path, normalize) is None for option in self.options):
            return None
        return _rejected(self, value, path, normalize)

    def describe(self) -> str:
        return " or ".join(option.describe() for option in self.options)


_NOTHING = _AnyOf(())  # `{"$any_of": [], "$optional": true}`: the key must be left out


@dataclass(frozen=True, slots=True)
class _Normalized:
    pattern: Pattern
    normalize: frozenset[str]

    def problem(self, value: Any, path: str, normalize: frozenset[str]) -> str | None:
        return self.pattern.problem(value, path, self.normalize)

    def describe(self) -> str:
        return self.pattern.describe()


@dataclass(frozen=True, slots=True)
class ArgumentsPattern:
    """The compiled ``arguments`` of an expected call (see the module doc)."""

    fields: _Fields

    def problems(
        self, arguments: dict[str, Any], *, allow_extra: bool, normalize: frozenset[str]
    ) -> list[str]:
        """Why `arguments` do not match, one line per argument at fault; [] when they do."""
        return self.fields.problems(arguments, "", normalize, allow_extra)


def compile_arguments(arguments: Mapping[str, Any]) -> ArgumentsPattern:
    """Compile an expected call's ``arguments``; ValueError says what is wrong and where."""
    return ArgumentsPattern(_Fields({k: _slot(v, k) for k, v in arguments.items()}))


def _slot(spec: Any, path: str) -> _Slot:
    if _is_matcher(spec, path) and "$optional" in spec:
        optional = spec["$optional"]
        if not isinstance(optional, bool):
            raise ValueError(f"argument {path!r}: $optional must be true or false")
        rest = {k: v for k, v in spec.items() if k != "$optional"}
        if not rest:
            return _Slot(None, optional)
        return _Slot(_matcher(rest, path, optional), optional)
    return _Slot(_pattern(spec, path), optional=False)


def _pattern(spec: Any, path: str) -> Pattern:
    if _is_matcher(spec, path):
        if "$optional" in spec:
            raise ValueError(
                f"argument {path!r}: only an argument or an object key can be optional; "
                "remove $optional here"
            )
        return _matcher(spec, path, optional=False)
    return _literal(spec, path)


def _literal(spec: Any, path: str) -> Pattern:
    if isinstance(spec, dict):
        return _Fields({k: _slot(v, f"{path}.{k}") for k, v in spec.items()})
    if isinstance(spec, list):
        return _Items(tuple(_pattern(v, f"{path}[{i}]") for i, v in enumerate(spec)))
    if spec is None or isinstance(spec, str | int | float | bool):
        return _Scalar(spec)
    raise ValueError(f"argument {path!r}: {spec!r} is not a JSON value")


def _is_matcher(spec: Any, path: str) -> bool:
    if not isinstance(spec, dict) or not any(str(k).startswith("$") for k in spec):
        return False
    unknown = sorted(k for k in spec if k not in _MATCHER_KEYS)
    if unknown:
        raise ValueError(
            f"argument {path!r}: {', '.join(map(repr, unknown))} is not a matcher key; use "
            f"{', '.join(_MATCHER_KEYS)} (to expect an object with such keys as it is, "
            'write {"$equals": {...}})'
        )
    return True


def _matcher(spec: dict[str, Any], path: str, optional: bool) -> Pattern:
    if "$any_of" in spec and "$equals" in spec:
        raise ValueError(f"argument {path!r}: give $any_of or $equals, not both")
    if "$any_of" not in spec and "$equals" not in spec:
        raise ValueError(f"argument {path!r}: add $any_of or $equals to say what is accepted")
    if "$equals" in spec:
        pattern = _literal(spec["$equals"], path)
    else:
        options = spec["$any_of"]
        if not isinstance(options, list):
            raise ValueError(f"argument {path!r}: $any_of must be a list of accepted values")
        if not options and not optional:
            raise ValueError(
                f"argument {path!r}: $any_of is empty, so nothing is accepted; list the "
                'accepted values (or add "$optional": true to require leaving it out)'
            )
        pattern = _AnyOf(tuple(_pattern(v, f"{path}.$any_of[{i}]") for i, v in enumerate(options)))
    if "$normalize" in spec:
        pattern = _Normalized(pattern, _normalize_set(spec["$normalize"], path))
    return pattern


def _normalize_set(spec: Any, path: str) -> frozenset[str]:
    if not isinstance(spec, list) or not all(item in NORMALIZATIONS for item in spec):
        raise ValueError(
            f"argument {path!r}: $normalize must be a list of {', '.join(NORMALIZATIONS)} "
            f"(got {_show(spec)})"
        )
    return frozenset(spec)
