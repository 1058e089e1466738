"""Lexical relevance between a question and the tools offered to a small local model.

A 135M model calls some tool for almost any question, and picks among tools poorly;
word overlap between the question and each tool's text (name, description, parameter
names and descriptions, enum values) is a better signal for both. Words are compared
lowercased and crudely stemmed (a common prefix of 5 letters counts as a match); a
word shared by several of the offered tools counts less (inverse document frequency
over the tools of the request); common English function words and request verbs
("get", "find", "show", ...) never count.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from agentlab.messages import ToolDefinition

__all__ = ["mentions", "relevance", "shortlist", "stems", "tool_text"]

_STOPWORDS = frozenset(
    [  # function words and request verbs: they say nothing about which tool
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "over",
        "under",
        "about",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "i",
        "me",
        "my",
        "mine",
        "you",
        "your",
        "yours",
        "we",
        "our",
        "us",
        "he",
        "she",
        "it",
        "its",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "not",
        "no",
        "yes",
        "so",
        "too",
        "very",
        "just",
        "also",
        "than",
        "some",
        "any",
        "all",
        "each",
        "every",
        "more",
        "most",
        "much",
        "many",
        "few",
        "please",
        "thanks",
        "thank",
        "hi",
        "hello",
        "hey",
        "ok",
        "okay",
        "let",
        "lets",
        "get",
        "gets",
        "give",
        "show",
        "tell",
        "make",
        "want",
        "need",
        "like",
        "know",
        "look",
        "use",
        "using",
        "used",
        "help",
        "find",
        "s",
        "t",
        "e",
        "g",
        "eg",
        "default",
        "optional",
        "one",
    ]
)
_SYMBOLS = {"%": " percent ", "$": " dollar ", "€": " euro ", "£": " pound "}
_SUFFIXES = ("ing", "ed", "es", "s", "er", "ly")
_PREFIX = 5  # letters two words must share to match
SHORTLIST_RATIO = 0.5  # a tool is offered when it scores this share of the best


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def stems(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """The stemmed lowercase words of `text` (camelCase and snake_case split), in order."""
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    words = (w.lower() for w in re.findall(r"[A-Za-z]+", text))
    return [_stem(w) for w in words if keep_stopwords or (len(w) > 1 and w not in _STOPWORDS)]


def _same(a: str, b: str) -> bool:
    return a == b or (min(len(a), len(b)) >= _PREFIX and a[:_PREFIX] == b[:_PREFIX])


def mentions(words: Iterable[str], phrase: str) -> bool:
    """Whether every word of `phrase` (stopwords included) matches one of `words`."""
    pool = list(words)
    wanted = stems(phrase, keep_stopwords=True)
    return bool(wanted) and all(any(_same(w, p) for p in pool) for w in wanted)


def tool_text(tool: ToolDefinition) -> str:
    """Everything a tool says about itself: name, description, parameters, enum values."""
    parts = [tool.name.replace("_", " "), tool.description]
    name_words = tool.name.replace("-", "_").split("_")
    parts += ["".join(w[:1] for w in name_words), "".join(w[:1] for w in name_words[1:])]

    def walk(schema: Any) -> None:
        if not isinstance(schema, dict):
            return
        for key, spec in (schema.get("properties") or {}).items():
            parts.append(str(key).replace("_", " "))
            walk(spec)
        if isinstance(schema.get("description"), str):
            parts.append(schema["description"])
        parts.extend(str(v).replace("_", " ") for v in schema.get("enum", ()))
        walk(schema.get("items"))

    walk(tool.parameters)
    return " ".join(parts)


def relevance(question: str, tools: Sequence[ToolDefinition]) -> list[float]:
    """Per tool, how much of `question` it covers: the summed inverse document frequency
    (over `tools`) of the question's distinct words (and adjacent pairs written as one,
    "sun rise" for "sunrise") that match a word of the tool's text; 0.0 when none does."""
    words = stems(question)
    compounds = [a + b for a, b in itertools.pairwise(words)]
    asked = list(dict.fromkeys([*words, *compounds]))
    vocabularies = [set(stems(tool_text(t))) for t in tools]
    hits = [[any(_same(w, v) for v in vocabulary) for w in asked] for vocabulary in vocabularies]
    weights = [
        math.log(1 + len(tools) / max(1, sum(row[i] for row in hits))) for i in range(len(asked))
    ]
    return [sum(w for w, hit in zip(weights, row, strict=True) if hit) for row in hits]


def shortlist(question: str, tools: Sequence[ToolDefinition]) -> list[ToolDefinition]:
    """The `tools` worth offering for `question`: those scoring at least
    ``SHORTLIST_RATIO`` of the best (:func:`relevance`); none when no tool shares a word
    with the question."""
    scores = relevance(question, tools)
    best = max(scores, default=0.0)
    return [t for t, s in zip(tools, scores, strict=True) if best and s >= SHORTLIST_RATIO * best]
