"""``lint_tools``: check a tool set the way the model sees it.

The linter reads what the model is sent, each tool's name, description and JSON
schema (:class:`~agentlab.messages.ToolDefinition`), so it works for tools built
by ``@tool`` and for tools defined by hand (OpenAI-style dicts) alike. The rules
(:data:`~agentlab.tools.lint_rules.RULES`) are simple and explainable: curated
word lists, and word overlap (Jaccard) for tools that look interchangeable.

>>> report = lint_tools(agent)               # or a list of tools
>>> report.ok, report.errors
>>> lint_tools(agent, ignore={"generic_name": ["search"]}, max_tools_warning=10)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from agentlab.errors import UserError
from agentlab.messages import ToolDefinition
from agentlab.tools.lint_report import SEVERITIES, LintFinding, LintReport
from agentlab.tools.lint_rules import RULES, Thresholds, run_rules
from agentlab.tools.tool import Tool

__all__ = ["RULES", "LintFinding", "LintReport", "Thresholds", "lint_options", "lint_tools"]

Ignore = Mapping[str, Iterable[str]] | Iterable[str]
"""Rule ids to skip everywhere (one, or several), or rule id -> the tools (or
``tool.parameter`` paths) to skip it for."""

_ACCEPTED = (
    "an agent (an object with .tools) or a sequence of tools: Tool objects, "
    "ToolDefinitions, OpenAI-style tool dicts or typed, documented functions"
)


def _definition(item: Any) -> ToolDefinition:
    """What the model is sent for `item` (a Tool, a definition, a dict or a function)."""
    if isinstance(item, ToolDefinition):
        return item
    if isinstance(getattr(item, "definition", None), ToolDefinition):
        return item.definition
    if isinstance(item, Mapping):
        spec = item.get("function", item) if item.get("type") == "function" else item
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise UserError(f"lint_tools: the tool dict {dict(item)!r} has no 'name'.")
        schema = spec.get("parameters", spec.get("input_schema", spec.get("inputSchema")))
        return ToolDefinition(
            name=spec["name"],
            description=str(spec.get("description") or ""),
            parameters=dict(schema or {}),
        )
    if callable(item):
        return Tool(item).definition
    raise UserError(f"lint_tools takes {_ACCEPTED}; {item!r} is none of these.")


def _definitions(target: Any) -> tuple[str, list[ToolDefinition]]:
    """The subject ("agent 'x'", or "" for tools) and the tool definitions of `target`."""
    if hasattr(target, "tools") and not isinstance(target, Mapping):
        name = getattr(target, "name", None)
        subject = f"agent {name!r}" if name else type(target).__name__
        return subject, [_definition(t) for t in target.tools]
    if isinstance(target, ToolDefinition | Tool):
        return "", [_definition(target)]
    if isinstance(target, str | bytes | Mapping) or not isinstance(target, Iterable):
        raise UserError(f"lint_tools takes {_ACCEPTED}; got {type(target).__name__}.")
    return "", [_definition(t) for t in target]


def _skipped(ignore: Ignore, names: Collection[str]) -> dict[str, set[str] | None]:
    """Rule id -> tool names it is skipped for (None: everywhere), checked."""
    if isinstance(ignore, str):
        ignore = [ignore]
    entries = ignore.items() if isinstance(ignore, Mapping) else ((rule, None) for rule in ignore)
    skipped: dict[str, set[str] | None] = {}
    for rule, where in entries:
        if rule not in RULES:
            raise UserError(
                f"ignore: there is no lint rule {rule!r}; the rules are {', '.join(RULES)}."
            )
        if where is None or (isinstance(where, str) and where == "*"):
            skipped[rule] = None
            continue
        if isinstance(where, str):
            raise UserError(
                f"ignore[{rule!r}] must be a list of tool names, like [{where!r}], not a string."
            )
        spots = set(where)
        unknown = sorted(s for s in spots if s.split(".", 1)[0] not in names)
        if unknown:
            raise UserError(
                f"ignore[{rule!r}] names {', '.join(map(repr, unknown))}, which is not a tool "
                f"here; the tools are {', '.join(names) or '(none)'}."
            )
        skipped[rule] = spots
    return skipped


def _ignored(finding: LintFinding, skipped: Mapping[str, set[str] | None]) -> bool:
    if finding.rule not in skipped:
        return False
    spots = skipped[finding.rule]
    if spots is None:
        return True
    here = {finding.tool, finding.other, f"{finding.tool}.{finding.parameter}"}
    return bool(spots & here)


def lint_tools(
    target: Any,
    *,
    ignore: Ignore = (),
    max_tools_warning: int = 15,
    max_tools_error: int = 20,
    min_description_words: int = 4,
    brief_description_words: int = 7,
    name_similarity: float = 0.75,
    description_similarity: float = 0.6,
) -> LintReport:
    """Lint the tools of an agent (anything with ``.tools``), a sequence of tools, or one.

    Every finding has a severity (``error``, ``warning``, ``info``), the tool and
    parameter it concerns, a message and a concrete fix; ``report.ok`` is False
    when there is an error. `ignore` skips rules: a list of rule ids (everywhere),
    or a dict of rule id -> tool names or ``"tool.parameter"`` paths (``"*"``: all),
    e.g. ``{"generic_name": ["search"]}``; the rule ids are the keys of
    :data:`~agentlab.tools.lint_rules.RULES`. The other arguments are the
    thresholds (see :class:`~agentlab.tools.lint_rules.Thresholds`).
    """
    thresholds = Thresholds(
        max_tools_warning=max_tools_warning,
        max_tools_error=max_tools_error,
        min_description_words=min_description_words,
        brief_description_words=brief_description_words,
        name_similarity=name_similarity,
        description_similarity=description_similarity,
    )
    subject, definitions = _definitions(target)
    names = [d.name for d in definitions]
    skipped = _skipped(ignore, names)
    everywhere = {rule for rule, spots in skipped.items() if spots is None}
    found = [f for f in run_rules(definitions, thresholds, everywhere) if not _ignored(f, skipped)]
    order = {name: i for i, name in reversed(list(enumerate(names)))}
    found.sort(key=lambda f: (SEVERITIES.index(f.severity), order.get(f.tool or "", -1)))
    return LintReport(subject=subject, tools=tuple(names), findings=tuple(found))


def lint_options(ignore: Iterable[str] = (), thresholds: Iterable[str] = ()) -> dict[str, Any]:
    """``lint_tools`` keyword arguments from the command line's text.

    `ignore` entries are ``RULE`` (everywhere) or ``RULE=tool1,tool2``; `thresholds`
    entries are ``NAME=NUMBER`` (``max_tools_warning=10``).
    """
    skipped: dict[str, list[str]] = {}
    for entry in ignore:
        rule, _, where = entry.partition("=")
        spots = [s.strip() for s in where.split(",") if s.strip()] if where else ["*"]
        skipped.setdefault(rule.strip(), []).extend(spots)
    options: dict[str, Any] = {
        "ignore": {r: "*" if "*" in s else s for r, s in skipped.items()},
    }
    known = set(Thresholds.__dataclass_fields__)
    for entry in thresholds:
        name, _, text = entry.partition("=")
        name = name.strip().replace("-", "_")
        if name not in known:
            raise UserError(
                f"--threshold {entry!r}: the thresholds are {', '.join(sorted(known))} "
                "(write NAME=NUMBER)."
            )
        try:
            options[name] = float(text) if "similarity" in name else int(text)
        except ValueError:
            raise UserError(f"--threshold {entry!r}: {text!r} is not a number.") from None
    return options
