"""The tool linter's rules: each reads the tool definitions the model is sent.

A rule is a function of the definitions and the :class:`Thresholds`, yielding
:class:`~agentlab.tools.lint_report.LintFinding` objects. :data:`RULES` names
them (the ids ``ignore=`` takes) and says what each looks for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from itertools import combinations
from typing import Any

from agentlab.errors import UserError
from agentlab.messages import ToolDefinition
from agentlab.tools.lint_report import LintFinding, Severity
from agentlab.tools.lint_schema import Parameter, branches, parameters, types
from agentlab.tools.lint_words import (
    GENERIC,
    GENERIC_VERBS,
    PLACEHOLDERS,
    canonical,
    content_words,
    jaccard,
    vocabulary,
    words,
)

__all__ = ["RULES", "Thresholds", "run_rules"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The numbers the rules go by; :func:`~agentlab.tools.lint_tools` takes each by keyword.

    Attributes:
        max_tools_warning: more tools than this on one agent is a warning.
        max_tools_error: more tools than this is an error.
        min_description_words: a tool description shorter than this is an error.
        brief_description_words: shorter than this is worth a note (info).
        name_similarity: two names whose words (plurals and synonyms such as
            search/find/get folded) are at least this alike overlap (Jaccard, 0-1).
        description_similarity: two descriptions whose meaningful words are at
            least this alike overlap (Jaccard, 0-1).
    """

    max_tools_warning: int = 15
    max_tools_error: int = 20
    min_description_words: int = 4
    brief_description_words: int = 7
    name_similarity: float = 0.75
    description_similarity: float = 0.6

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            whole = isinstance(value, int) and not isinstance(value, bool)
            if f.type == "int" and (not whole or value < 0):
                raise UserError(
                    f"lint threshold {f.name} must be a whole number >= 0, not {value!r}."
                )
            if f.type == "float" and (not isinstance(value, int | float) or not 0 < value <= 1):
                raise UserError(
                    f"lint threshold {f.name} must be a number in (0, 1], not {value!r}."
                )
        if self.max_tools_warning > self.max_tools_error:
            raise UserError(
                f"lint threshold max_tools_warning ({self.max_tools_warning}) is above "
                f"max_tools_error ({self.max_tools_error}); the warning must come first."
            )


Rule = Callable[[Sequence[ToolDefinition], Thresholds], Iterator[LintFinding]]

_ID = frozenset({"id", "ids", "uuid", "guid", "sku", "isbn", "iban"})
_DATE = vocabulary("date datetime time timestamp day deadline birthday birthdate dob since until")
_CHOICE = vocabulary(
    "status state type kind category mode level priority severity tier direction unit "
    "currency format role channel plan locale language lang"
)
_CHOICE_NAMES = frozenset({"sort", "sort_by", "order_by", "group_by", "sort_order"})
_EMAIL = frozenset({"email", "mail"})
_URL = frozenset({"url", "uri", "link", "website", "href", "endpoint", "homepage"})
_COUNT_LAST = vocabulary(
    "limit count size k n quantity retry depth result day hour minute second week month year"
)
_COUNT_FIRST = frozenset({"max", "maximum", "num", "number", "top"})
_OFFSET = frozenset({"offset", "page", "skip", "start", "index"})

_STRING_FIX = {
    "id": "Give it the ids' shape, e.g. Annotated[str, Field(pattern=r'^O-[0-9]{4}$')] for "
    "ids like O-1001 (a JSON schema 'pattern'), or a Literal of the known ids, so that a "
    "name or an email is refused before the call.",
    "date": "Annotate it as datetime.date (or datetime.datetime): the schema then says "
    "format 'date' and the value is validated; or give it a pattern like "
    "r'^\\d{4}-\\d{2}-\\d{2}$'.",
    "choice": "List the values it takes: Literal['open', 'closed'] (or an Enum), so the "
    "schema has an 'enum' and the model picks one instead of inventing one.",
    "email": "Use pydantic's EmailStr (format 'email') or a pattern, so a malformed "
    "address is refused before the call.",
    "url": "Use pydantic's AnyUrl or HttpUrl (format 'uri') or a pattern, so the model "
    "sends a full URL.",
}
_NUMBER_RULES = {
    "count": (
        ("maximum", "exclusiveMaximum"),
        "is a count or limit without a maximum: the model may ask for 10000 of them "
        "(slow, costly, and a result that floods its context).",
        "Bound it: Annotated[int, Field(ge=1, le=100)] (the schema's minimum/maximum).",
    ),
    "offset": (
        ("minimum", "exclusiveMinimum"),
        "is a position (offset, page) without a minimum: a negative value reaches the tool.",
        "Bound it: Annotated[int, Field(ge=0)] (or ge=1 for a page number).",
    ),
}
"""Kind of number -> (the schema keys that bound it, the problem without them, the fix)."""
_STRING_WHAT = {
    "id": "an id",
    "date": "a date or time",
    "choice": "one of a fixed set of values",
    "email": "an email address",
    "url": "a URL",
}


def _is_generic(name: str) -> bool:
    """Whether `name` is made only of generic words, digits and one- or two-letter words."""
    return all(w in GENERIC or w.isdigit() or len(w) <= 2 for w in words(name))


def _suggested_name(d: ToolDefinition) -> str | None:
    """A name from the tool's own verb and the first meaningful words of its description."""
    domain = content_words(d.description, words(d.name))[:2]
    if not domain:
        return None
    verbs = [w for w in words(d.name) if w in GENERIC_VERBS]
    return "_".join([verbs[0] if verbs else "get", *domain])


def generic_name(defs: Sequence[ToolDefinition], t: Thresholds) -> Iterator[LintFinding]:
    """A name made only of generic words: search, get_data, run, tool2."""
    for d in defs:
        if not _is_generic(d.name):
            continue
        suggestion = _suggested_name(d)
        example = (
            f"e.g. {suggestion!r} (from its description)"
            if suggestion
            else "e.g. 'search_orders' or 'get_weather_forecast'"
        )
        yield LintFinding(
            "generic_name",
            "error",
            d.name,
            None,
            f"The name {d.name!r} is made of generic words only "
            f"({', '.join(dict.fromkeys(words(d.name))) or d.name}): it does not say what the "
            "tool works on, so the model must guess from the description and mixes it up "
            "with other tools.",
            f"Rename it after the action and what it acts on, {example}: the function's "
            "name, or @tool(name=...).",
        )


def vague_description(defs: Sequence[ToolDefinition], t: Thresholds) -> Iterator[LintFinding]:
    """A missing, placeholder, name-repeating or too short tool description."""
    for d in defs:
        text = d.description.strip()
        said = words(text)
        placeholders = sorted({w for w in said if w in PLACEHOLDERS})
        severity: Severity = "error"
        if not text:
            problem = "The tool has no description: the model sees only its name."
        elif placeholders:
            problem = (
                f"The description reads like a placeholder ({', '.join(placeholders)}): {text!r}."
            )
        elif not content_words(text, words(d.name)):
            problem = (
                f"The description {text!r} says nothing the name does not: it has only the "
                "name's words and generic ones."
            )
        elif len(said) < t.min_description_words:
            problem = (
                f"The description {text!r} is {len(said)} words long: too short to say what "
                "the tool does, on what, and what it returns."
            )
        elif len(said) < t.brief_description_words:
            severity = "info"
            problem = f"The description {text!r} is brief ({len(said)} words)."
        else:
            continue
        fix = (
            f"Say what {d.name} does and on what, what it returns, and when the model should "
            "use it (and when another tool instead): the docstring's first paragraph, or "
            "@tool(description=...)."
        )
        if severity == "info":
            fix = (
                "Consider adding what it returns and when to use it; models pick tools by "
                "their descriptions."
            )
        yield LintFinding("vague_description", severity, d.name, None, problem, fix)


def _type_text(p: Parameter, root: dict[str, Any]) -> str:
    """The JSON type(s) of a parameter as the model sees them: ``string``, ``integer/null``."""
    kinds: set[str] = set().union(*(types(b) for b in branches(p.schema, root)))
    return "/".join(sorted(kinds)) or "any"


def parameter_description(defs: Sequence[ToolDefinition], t: Thresholds) -> Iterator[LintFinding]:
    """A parameter without a description, or with one that only repeats its name."""
    for d in defs:
        for p in parameters(d.parameters):
            text = str(p.schema.get("description") or "").strip()
            shown = _type_text(p, d.parameters)
            if not text:
                generic = _is_generic(p.name)
                yield LintFinding(
                    "parameter_description",
                    "error" if generic else "warning",
                    d.name,
                    p.path,
                    f"Parameter {p.path!r} has no description: the model sees only its "
                    f"name and type ({shown})" + (", and the name is generic." if generic else "."),
                    f"Document it in the docstring's Args section ('{p.name}: what it is, "
                    f"with an example'), or use Annotated[..., Field(description=...)]"
                    + (f"; and give it a telling name instead of {p.name!r}." if generic else "."),
                )
            elif not content_words(text, words(p.name)):
                yield LintFinding(
                    "parameter_description",
                    "warning",
                    d.name,
                    p.path,
                    f"The description of {p.path!r} ({text!r}) only repeats its name.",
                    "Say what form the value takes, with an example, e.g. "
                    "'The order id, like O-1001' or 'Up to 50 results'.",
                )


def _expected_string(name: str) -> str | None:
    """What a string parameter named `name` probably holds, if a constrained kind."""
    ws = words(name)
    if not ws:
        return None
    last = ws[-1]
    if last in _ID or name.lower() == "id":
        return "id"
    if last in _EMAIL:
        return "email"
    if last in _URL:
        return "url"
    if any(w in _DATE for w in ws) or (len(ws) > 1 and last in ("at", "on")):
        return "date"
    if last in _CHOICE or name.lower() in _CHOICE_NAMES:
        return "choice"
    return None


def _expected_number(name: str) -> str | None:
    """``count`` (needs a maximum) or ``offset`` (needs a minimum) for a number named `name`."""
    ws = words(name)
    if not ws:
        return None
    if ws[-1] in _COUNT_LAST or ws[0] in _COUNT_FIRST:
        return "count"
    if ws[-1] in _OFFSET:
        return "offset"
    return None


def _constraint_finding(d: ToolDefinition, p: Parameter) -> LintFinding | None:
    options = branches(p.schema, d.parameters)
    if any(k in b for b in options for k in ("enum", "const")):
        return None
    strings = [b for b in options if "string" in types(b)]
    numbers = [b for b in options if types(b) & {"integer", "number"}]
    items = [b.get("items") for b in options if "array" in types(b)]
    if not strings and items and isinstance(items[0], dict):  # a list of ids, dates...
        strings = [b for b in branches(items[0], d.parameters) if "string" in types(b)]
        if any(k in b for b in strings for k in ("enum", "const")):
            return None
    kind = _expected_string(p.name) if strings else None
    if kind and not any(k in b for b in strings for k in ("pattern", "format")):
        problem = (
            f"looks like {_STRING_WHAT[kind]} but is a free string: the model may send "
            "anything, and a wrong value reaches the tool."
        )
        return LintFinding("parameter_constraint", "warning", d.name, p.path,
                           f"Parameter {p.path!r} {problem}", _STRING_FIX[kind])  # fmt: skip
    bound = _expected_number(p.name) if numbers and not strings else None
    if bound is None:
        return None
    needed, problem, fix = _NUMBER_RULES[bound]
    if any(k in b for b in numbers for k in needed):
        return None
    return LintFinding(
        "parameter_constraint", "warning", d.name, p.path, f"Parameter {p.path!r} {problem}", fix
    )


def parameter_constraint(defs: Sequence[ToolDefinition], t: Thresholds) -> Iterator[LintFinding]:
    """A free string for an id, date, email, URL or fixed set of values; an unbounded
    count or limit; an offset without a minimum."""
    for d in defs:
        for p in parameters(d.parameters):
            finding = _constraint_finding(d, p)
            if finding is not None:
                yield finding


def _shared(a: Sequence[str], b: Sequence[str], limit: int = 6) -> str:
    common = [w for w in a if w in set(b)]
    return ", ".join(common[:limit]) + (", ..." if len(common) > limit else "")


def overlap(defs: Sequence[ToolDefinition], t: Thresholds) -> Iterator[LintFinding]:
    """Two tools with the same name, or near-identical names or descriptions."""
    counts = Counter(d.name for d in defs)
    for name in sorted(n for n, c in counts.items() if c > 1):
        yield LintFinding(
            "overlap",
            "error",
            name,
            None,
            f"{counts[name]} tools are named {name!r}: the model cannot call one of them "
            "(a provider may refuse the request).",
            "Rename all but one (@tool(name=...)), or drop the duplicates.",
        )
    unique = list({d.name: d for d in defs}.values())
    for a, b in combinations(unique, 2):
        names = jaccard(canonical(a.name), canonical(b.name))
        wa, wb = content_words(a.description), content_words(b.description)
        texts = jaccard(wa, wb) if wa and wb else 0.0
        pa, pb = (tuple(p.path for p in parameters(x.parameters)) for x in (a, b))
        params = jaccard(pa, pb)
        alike_names, alike_texts = names >= t.name_similarity, texts >= t.description_similarity
        if not (alike_names or alike_texts):
            continue
        duplicate = alike_names and alike_texts and set(pa) == set(pb)
        reasons = [f"names {names:.0%} alike", f"descriptions {texts:.0%} alike"]
        if texts:
            reasons[1] += f" (shared words: {_shared(wa, wb)})"
        if pa == pb:
            reasons.append(f"the same parameters ({', '.join(pa)})" if pa else "no parameters")
        else:
            reasons.append(f"parameters {params:.0%} alike")
        yield LintFinding(
            "overlap",
            "error" if duplicate else "warning",
            a.name,
            None,
            f"{a.name!r} and {b.name!r} look "
            + ("like duplicates" if duplicate else "interchangeable")
            + f": {'; '.join(reasons)}. The model may call either one for the same request, "
            "or switch between them.",
            (
                "Keep one of them, or "
                if duplicate
                else "Merge them into one tool (a parameter can choose the variant), or "
            )
            + "make the difference plain: name each after what sets it apart, and say in "
            f"each description when to use it rather than the other (e.g. 'Use {b.name} "
            "instead when ...').",
            other=b.name,
        )


def _groups(defs: Sequence[ToolDefinition], limit: int = 4) -> str:
    """The tools grouped by the domain word their names share most, as text."""
    domain = {d.name: [w for w in words(d.name) if not _is_generic(w)] for d in defs}
    frequency = Counter(w for ws in domain.values() for w in set(ws))
    groups: dict[str, list[str]] = {}
    for name, ws in domain.items():
        if ws:
            best = max(ws, key=lambda w: frequency[w])
            groups.setdefault(best, []).append(name)
    shown = sorted(
        ((w, names) for w, names in groups.items() if len(names) > 1), key=lambda g: -len(g[1])
    )[:limit]
    return "; ".join(f"{w}: {', '.join(names)}" for w, names in shown)


def too_many_tools(defs: Sequence[ToolDefinition], t: Thresholds) -> Iterator[LintFinding]:
    """More tools than a model chooses among reliably."""
    n = len(defs)
    if n <= t.max_tools_warning:
        return
    groups = _groups(defs)
    yield LintFinding(
        "too_many_tools",
        "error" if n > t.max_tools_error else "warning",
        None,
        None,
        f"{n} tools on one agent (a warning above {t.max_tools_warning}, an error above "
        f"{t.max_tools_error}): the more tools, the more often a model picks the wrong one, "
        "and every request pays for all of their schemas.",
        f"Split it into specialised agents of at most {t.max_tools_warning} tools each"
        + (f" (by their names: {groups})" if groups else "")
        + ", with a router agent handing each request to one of them; or drop the tools "
        "this agent's task does not need.",
    )


RULES: dict[str, tuple[Rule, str]] = {
    rule.__name__: (rule, (rule.__doc__ or "").split("\n\n")[0].replace("\n", " "))
    for rule in (
        generic_name,
        vague_description,
        parameter_description,
        parameter_constraint,
        overlap,
        too_many_tools,
    )
}
"""Rule id -> (the rule, what it looks for)."""


def run_rules(
    defs: Sequence[ToolDefinition], thresholds: Thresholds, skip: Any = ()
) -> Iterator[LintFinding]:
    """Every finding of every rule not in `skip`, rule by rule."""
    for rule_id, (rule, _) in RULES.items():
        if rule_id not in skip:
            yield from rule(defs, thresholds)
