"""Scorers: small callables that take a case and a run result and return a Score.

A scorer is built by a factory registered with :func:`scorer`; the built scorer
remembers the factory's name and arguments (:attr:`Scorer.spec`), so it can be
rebuilt from an eval record with :func:`build_scorer`::

    @scorer("polite")
    def polite(word: str = "please"):
        def score(case, result):
            ok = word in (result.output or "")
            return Score(float(ok), ok, f"{'says' if ok else 'does not say'} {word!r}")
        return score

Built-ins: ``exact``, ``contains``, ``regex`` (the outcome kinds), ``mentions`` and
``tool_calls`` (the case's expected tool calls were made).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentlab.agents import RunResult
from agentlab.errors import UserError
from agentlab.evals.dataset import Case, ExpectedOutcome
from agentlab.evals.toolcalls import made_calls, match_tool_calls

__all__ = [
    "Score",
    "ScoreFunction",
    "Scorer",
    "ScorerRegistry",
    "build_scorer",
    "outcome_scorer",
    "registry",
    "scorer",
]


@dataclass(frozen=True, slots=True)
class Score:
    """A score: `value` in 0..1, whether it passes, and why in plain words."""

    value: float
    passed: bool
    explanation: str


ScoreFunction = Callable[[Case, RunResult], Score]
ScorerFactory = Callable[..., ScoreFunction]


@dataclass(frozen=True)
class Scorer:
    """A built scorer: call it with (case, result). `spec` rebuilds it."""

    name: str
    kwargs: dict[str, Any]
    function: ScoreFunction = field(repr=False)

    @property
    def spec(self) -> dict[str, Any]:
        """``{"name": ..., "kwargs": ...}``, as stored in ``eval_results.scorer``."""
        return {"name": self.name, "kwargs": self.kwargs}

    def __call__(self, case: Case, result: RunResult) -> Score:
        if not result.ok or result.output is None:
            return Score(0.0, False, f"the run ended {result.status}: {result.explanation}")
        return self.function(case, result)


class ScorerRegistry:
    """Scorer factories by name. :meth:`reset` forgets all but the built-ins."""

    def __init__(self) -> None:
        self._factories: dict[str, ScorerFactory] = {}
        self._builtins: frozenset[str] = frozenset()

    def register(self, name: str, factory: ScorerFactory) -> None:
        """Register `factory` under `name`; redefining the same function replaces it."""
        old = self._factories.get(name)
        if old is not None and _qualname(old) != _qualname(factory):
            raise UserError(
                f"a scorer named {name!r} is already registered ({_qualname(old)}); "
                "pick another name for "
                f"{_qualname(factory)}"
            )
        self._factories[name] = factory

    def build(self, name: str, **kwargs: Any) -> Scorer:
        """Build the scorer `name` with `kwargs`."""
        factory = self._factories.get(name)
        if factory is None:
            raise UserError(
                f"no scorer is registered as {name!r}; known: {', '.join(self.names())}. "
                "Register it with @scorer(name) before evaluating."
            )
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as exc:
            raise UserError(f"scorer {name!r} cannot take kwargs {kwargs}: {exc}") from None
        return Scorer(name, dict(kwargs), factory(**kwargs))

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def reset(self) -> None:
        """Forget every scorer registered after the built-ins (for tests)."""
        self._factories = {k: v for k, v in self._factories.items() if k in self._builtins}

    def _freeze_builtins(self) -> None:
        self._builtins = frozenset(self._factories)


def _qualname(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"


registry = ScorerRegistry()


def scorer(name: str) -> Callable[[ScorerFactory], Callable[..., Scorer]]:
    """Register a scorer factory under `name`; calling it builds a :class:`Scorer`."""

    def decorate(factory: ScorerFactory) -> Callable[..., Scorer]:
        registry.register(name, factory)

        def build(**kwargs: Any) -> Scorer:
            return registry.build(name, **kwargs)

        build.__doc__ = factory.__doc__
        build.__name__ = factory.__name__
        return build

    return decorate


def build_scorer(name: str, **kwargs: Any) -> Scorer:
    """Build a registered scorer, e.g. from an eval record's ``scorer`` spec."""
    return registry.build(name, **kwargs)


def outcome_scorer(outcome: ExpectedOutcome) -> Scorer:
    """The scorer that checks a case's expected outcome."""
    if outcome.kind == "scorer":
        return registry.build(outcome.value, **outcome.kwargs)
    return registry.build(outcome.kind, value=outcome.value, case_sensitive=outcome.case_sensitive)


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _output(result: RunResult) -> str:
    return result.output or ""


@scorer("exact")
def exact(value: str, case_sensitive: bool = False) -> ScoreFunction:
    """The answer equals `value` (surrounding and repeated whitespace ignored)."""
    want = _fold(" ".join(value.split()), case_sensitive)

    def score(case: Case, result: RunResult) -> Score:
        got = _fold(" ".join(_output(result).split()), case_sensitive)
        if got == want:
            return Score(1.0, True, f"the answer is exactly {value!r}")
        return Score(0.0, False, f"expected exactly {value!r}, got {_quote(_output(result))}")

    return score


@scorer("contains")
def contains(value: str, case_sensitive: bool = False) -> ScoreFunction:
    """The answer contains `value`."""

    def score(case: Case, result: RunResult) -> Score:
        if _fold(value, case_sensitive) in _fold(_output(result), case_sensitive):
            return Score(1.0, True, f"the answer contains {value!r}")
        return Score(0.0, False, f"the answer lacks {value!r}: {_quote(_output(result))}")

    return score


@scorer("regex")
def regex(value: str, case_sensitive: bool = False) -> ScoreFunction:
    """The regular expression `value` matches somewhere in the answer."""
    pattern = re.compile(value, 0 if case_sensitive else re.IGNORECASE)

    def score(case: Case, result: RunResult) -> Score:
        match = pattern.search(_output(result))
        if match:
            return Score(1.0, True, f"the answer matches: {match.group(0)!r}")
        return Score(0.0, False, f"no match for /{value}/ in {_quote(_output(result))}")

    return score


@scorer("mentions")
def mentions(
    all_of: Sequence[str] = (),
    any_of: Sequence[str] = (),
    none_of: Sequence[str] = (),
    case_sensitive: bool = False,
) -> ScoreFunction:
    """The answer has every text of `all_of`, one of `any_of` and none of `none_of`.

    The value is the fraction of these checks that hold; it passes when all do.
    """
    checks = [bool(all_of), bool(any_of), bool(none_of)].count(True)
    if checks == 0:
        raise UserError("the 'mentions' scorer needs all_of, any_of or none_of")

    def score(case: Case, result: RunResult) -> Score:
        text = _fold(_output(result), case_sensitive)
        problems = []
        missing = [t for t in all_of if _fold(t, case_sensitive) not in text]
        if missing:
            problems.append(f"lacks {missing}")
        hits = [t for t in any_of if _fold(t, case_sensitive) in text]
        if any_of and not hits:
            problems.append(f"has none of {list(any_of)}")
        present = [t for t in none_of if _fold(t, case_sensitive) in text]
        if present:
            problems.append(f"should not say {present}")
        if not problems:
            said = [*all_of, *hits[:1]]
            if said:
                return Score(1.0, True, f"the answer says {said}")
            return Score(1.0, True, f"the answer avoids {list(none_of)}")
        value = (checks - len(problems)) / checks
        return Score(value, False, f"the answer {'; '.join(problems)}: {_quote(_output(result))}")

    return score


@scorer("tool_calls")
def tool_calls(allow_extra_calls: bool = True) -> ScoreFunction:
    """The run made every expected tool call of the case (matched as in
    :func:`agentlab.evals.match_tool_calls`) and, unless `allow_extra_calls`, no other.

    The value is matched / expected calls (matched / the larger of expected and made
    when extra calls are not allowed); it passes at 1. The explanation says which call
    or argument was wrong and what was accepted.
    """

    def score(case: Case, result: RunResult) -> Score:
        match = match_tool_calls(case.expected_tool_calls, made_calls(result))
        wanted = match.expected if allow_extra_calls else max(match.expected, match.made)
        value = match.matched / wanted if wanted else 1.0
        return Score(value, value == 1.0, match.explanation)

    return score


registry._freeze_builtins()
