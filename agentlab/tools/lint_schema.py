"""The parameters a tool's JSON schema describes, as the tool linter walks them.

``$ref``s into ``$defs`` are followed, ``anyOf``/``oneOf`` branches are split
(``null`` left out: an optional value is still the value) and nested objects are
walked to a few levels, so ``filter.status`` is checked like ``status``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Parameter", "branches", "parameters", "types"]

_MAX_DEPTH = 3


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter: its dotted `path`, own `name`, resolved `schema`, and whether required."""

    path: str
    name: str
    schema: dict[str, Any]
    required: bool


def _resolve(node: Any, root: Mapping[str, Any]) -> dict[str, Any]:
    """`node` with a local ``$ref`` (or a single ``allOf``) merged in; its own keys win."""
    if not isinstance(node, Mapping):
        return {}
    node = dict(node)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" not in node:
        node = {**_resolve(all_of[0], root), **{k: v for k, v in node.items() if k != "allOf"}}
    ref = node.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith("#/"):
        section, _, name = ref[2:].partition("/")
        target = (root.get(section) or {}).get(name)
        if isinstance(target, Mapping):
            return {**{k: v for k, v in target.items() if k != "$ref"}, **node}
    return node


def branches(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of `schema` (``anyOf``/``oneOf``), ``null`` left out; itself if none."""
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            found = [b for o in options for b in branches(_resolve(o, root), root)]
            return [b for b in found if types(b) != {"null"}]
    return [dict(schema)]


def types(schema: Mapping[str, Any]) -> set[str]:
    """The JSON types `schema` names (``"type": [...]`` or one)."""
    kind = schema.get("type")
    if isinstance(kind, list):
        return {str(k) for k in kind}
    return {str(kind)} if kind else set()


def parameters(schema: Mapping[str, Any]) -> Iterator[Parameter]:
    """Every parameter of a tool's arguments `schema`, nested ones after their parent."""
    yield from _walk(schema, schema, "", 0)


def _walk(
    node: Mapping[str, Any], root: Mapping[str, Any], prefix: str, depth: int
) -> Iterator[Parameter]:
    props = node.get("properties")
    if not isinstance(props, Mapping) or depth > _MAX_DEPTH:
        return
    required = node.get("required") or ()
    for name, raw in props.items():
        resolved = _resolve(raw, root)
        path = f"{prefix}{name}"
        yield Parameter(path=path, name=str(name), schema=resolved, required=name in required)
        for branch in branches(resolved, root):
            if "array" in types(branch):
                items = _resolve(branch.get("items"), root)
                yield from _walk(items, root, f"{path}[].", depth + 1)
            else:
                yield from _walk(branch, root, f"{path}.", depth + 1)
