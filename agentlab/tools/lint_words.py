"""The words the tool linter reads names and descriptions with.

Names and descriptions are split into lower-case words (``getOrderStatus`` and
``get-order_status`` give ``get order status``), plurals folded (``orders`` ->
``order``) and retrieval verbs folded into one (``search``, ``find``, ``fetch``
-> ``get``), so that what is compared is what a model would take them to mean.
The vocabularies are curated by hand: a word is generic when it could name a tool
of any domain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "GENERIC",
    "PLACEHOLDERS",
    "STOP",
    "canonical",
    "content_words",
    "jaccard",
    "stem",
    "vocabulary",
    "words",
]


def vocabulary(text: str) -> frozenset[str]:
    """The words of `text`, separated by spaces, as a set."""
    return frozenset(text.split())


READ_VERBS = vocabulary(
    "get fetch retrieve read load lookup look find search query show obtain pull view return give"
)
"""Verbs that all mean "give me something": folded into ``get`` when names are compared
(not ``list``: ``list_orders`` and ``get_order`` differ in giving many or one)."""

GENERIC_VERBS = READ_VERBS | vocabulary(
    "list do run execute exec perform process handle call invoke make use apply manage "
    "compute calculate create update delete remove set add put post send save write "
    "start stop submit check parse convert transform generate build go try"
)
GENERIC_NOUNS = vocabulary(
    "data info information stuff thing item object obj value result input output "
    "request response payload content record entry resource tool helper util utility "
    "function func fn method action task job operation op command cmd api service "
    "handler manager processor wrapper misc general generic default main test tmp temp "
    "foo bar baz my new it something anything everything detail param arg argument "
    "option whatever various"
)
GENERIC = GENERIC_VERBS | GENERIC_NOUNS
"""Words that say nothing about a tool's domain (``get_data``, ``run_tool``)."""

PLACEHOLDERS = vocabulary("todo tbd fixme xxx lorem ipsum placeholder")
"""Words that mark a description as not written yet."""

STOP = vocabulary(
    "a an the of for to in on by with from and or is are be been it its this that "
    "these those as at if when use used using you your will can which what any all some "
    "one given each into about than then also only e g i eg ie etc not no does has was "
    "should may must there their them they we our so such like via per up out"
)
"""Words that carry no meaning of their own in a description."""

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def stem(word: str) -> str:
    """`word` without a plural ending: ``orders`` -> ``order``, ``entries`` -> ``entry``."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """The words of `text` (a name or prose), lower case, plurals folded, in order."""
    lower = (w.lower() for w in _WORD.findall(text))
    return [w if w in STOP else stem(w) for w in lower]


def canonical(name: str) -> frozenset[str]:
    """What a name says, for comparing two names: its words, retrieval verbs as ``get``."""
    return frozenset("get" if w in READ_VERBS else w for w in words(name))


def content_words(text: str, known: Iterable[str] = ()) -> list[str]:
    """The words of `text` that carry meaning: not stop words, generic words or
    `known` ones (the words of the name it describes), in order, each once. Digits
    stay: ``like O-1001`` is an example, which says much."""
    skip = STOP | GENERIC | set(known)
    return list(dict.fromkeys(w for w in words(text) if w not in skip))


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Shared words over all words of `a` and `b` (1.0 when both are empty)."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0
