"""Checks of what an export is named and of what its module can actually call.

:func:`check_package_name` refuses names that would shadow the standard library
or an installed package. :func:`check_module` reads the exported module's scopes
with :mod:`symtable`: every name it uses must be defined by the module itself,
its imports or Python's builtins (a notebook's ``get_ipython``, ``display`` or
``In`` are not, however they are reached: called, aliased, passed on), and code
run from strings (``exec``/``eval``) is refused because it cannot be checked.
Nothing is executed, except that a ``from m import *`` module is imported to
learn its names (as building the agent would import it anyway).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import json
import keyword
import symtable
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentlab.export.cells import ExportError

__all__ = ["Block", "check_module", "check_package_name"]

_MODULE_NAMES = frozenset(
    {"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__",
     "__builtins__", "__annotations__", "__cached__", "__dict__"}
)  # fmt: skip
_DYNAMIC = ("exec", "eval")


def _suggest(name: str) -> str:
    return f"{name}_agent" if not name.endswith("_agent") else f"my_{name}"


def _previous_export(location: Path, name: str) -> bool:
    """Whether the package at `location` is an earlier export named `name`."""
    record = location / "export.json"
    try:
        return bool(json.loads(record.read_text(encoding="utf-8")).get("name") == name)
    except (OSError, ValueError, AttributeError):
        return False


def check_package_name(name: str) -> None:
    """Refuse `name` unless it is a package name that shadows nothing importable."""
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        hint = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "my_agent"
        raise ExportError(
            f"--name {name!r} must be a Python package name (letters, digits and "
            f"underscores, not starting with a digit), e.g. {hint!r}."
        )
    fix = f"Choose another --name, e.g. {_suggest(name)!r}."
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        raise ExportError(
            f"--name {name!r} would shadow the standard library module {name!r}: "
            f"importing it would load the agent instead. {fix}"
        )
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:  # not importable, or a bare folder
        return
    location = Path(spec.origin).parent
    if name != "agentlab" and _previous_export(location, name):
        return  # an earlier export of this agent, installed here: replacing it is fine
    raise ExportError(
        f"--name {name!r} would shadow the installed package {name!r} ({location}): "
        f"an environment with both could import either. {fix}"
    )


@dataclass(frozen=True)
class Block:
    """Where a part of the exported module comes from: its first line and a label."""

    line: int
    label: str


def _where(blocks: Sequence[Block], line: int) -> str:
    found = [b for b in blocks if b.line <= line]
    if not found:
        return f"line {line}"
    block = found[-1]
    return f"{block.label}, line {line - block.line}"


def _star_names(tree: ast.Module) -> set[str]:
    """The names that ``from m import *`` statements bring in (their modules imported)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            if node.level or not node.module:
                continue
            try:
                module = importlib.import_module(node.module)
            except Exception:  # the agent's build reports a broken import itself
                continue
            public = getattr(module, "__all__", None)
            names.update(public or (n for n in vars(module) if not n.startswith("_")))
    return names


def _scopes(table: symtable.SymbolTable) -> list[symtable.SymbolTable]:
    found = [table]
    for child in table.get_children():
        found.extend(_scopes(child))
    return found


def _undefined(source: str, tree: ast.Module) -> set[str]:
    """Names the module reads from its global scope that nothing defines."""
    top = symtable.symtable(source, "<exported module>", "exec")
    scopes = _scopes(top)
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    defined |= {
        s.get_name()
        for scope in scopes
        for s in scope.get_symbols()
        if s.is_declared_global() and s.is_assigned()
    }
    defined |= {s.get_name() for s in top.get_symbols() if s.is_namespace()}
    used = {
        s.get_name()
        for scope in scopes
        for s in scope.get_symbols()
        if s.is_referenced() and (s.is_global() or scope is top)
    }
    known = defined | set(dir(builtins)) | _MODULE_NAMES
    missing = used - known
    return missing - _star_names(tree) if missing else missing


def _first_use(tree: ast.Module, name: str) -> int:
    lines = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name]
    return min(lines) if lines else 0


def check_module(source: str, blocks: Sequence[Block], notebook: str) -> None:
    """Raise :class:`ExportError` when the exported module uses a name nothing
    defines (such as ``get_ipython``), or runs code from strings."""
    tree = ast.parse(source)
    defined_here = {
        s.get_name()
        for s in symtable.symtable(source, "<m>", "exec").get_symbols()
        if s.is_assigned() or s.is_imported()
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _DYNAMIC
            and node.func.id not in defined_here
        ):
            raise ExportError(
                f"{notebook}, {_where(blocks, node.lineno)} calls {node.func.id}(): code run "
                "from a string cannot be checked for what it calls, and the exported package "
                "must import without the notebook. Write the code itself in the cell."
            )
    missing = _undefined(source, tree)
    if not missing:
        return
    uses = sorted((_first_use(tree, name), name) for name in missing)
    listed = "; ".join(f"{name!r} ({_where(blocks, line)})" for line, name in uses)
    ipython = [n for n in missing if n in ("get_ipython", "display", "In", "Out")]
    why = f" ({', '.join(sorted(ipython))} exist only inside IPython/Jupyter)" if ipython else ""
    raise ExportError(
        f"The exported cells of {notebook} use names that nothing in them defines, imports "
        f"or Python provides{why}: {listed}. The package would fail when they run: define "
        "or import them in a cell tagged 'export', or move those lines to a cell that is "
        "not exported."
    )
