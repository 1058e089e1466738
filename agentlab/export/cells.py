"""Select and check the cells of a notebook that go into an exported module.

A cell is exported when its metadata tags include ``export`` or its first line is
``#| export``. The notebook is read with nbformat and every exported cell is
checked structurally: IPython's own input transformer shows whether the cell
uses IPython-only syntax (magics, shell escapes, help), and the code must compile
as plain Python. Nothing is executed.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.errors import UserError

__all__ = [
    "EXPORT_TAG",
    "ExportCell",
    "ExportError",
    "NotebookCells",
    "check_cell",
    "read_export_cells",
]

EXPORT_TAG = "export"
PARAMETERS_TAG = "parameters"
_DIRECTIVE = "#|export"  # the first-line marker, compared with spaces removed

# get_ipython() methods the transformer emits, and how the user wrote them.
_IPYTHON_CALLS = {
    "run_line_magic": ("an IPython line magic", "%"),
    "run_cell_magic": ("an IPython cell magic", "%%"),
    "system": ("a shell escape", "!"),
    "getoutput": ("a shell escape", "!"),
}


class ExportError(UserError):
    """The notebook cannot be exported; the message names the cell and the fix."""


@dataclass(frozen=True)
class ExportCell:
    """One code cell to export: its index in the notebook, id and checked source."""

    index: int
    id: str | None
    source: str
    tags: tuple[str, ...]

    @property
    def first_line(self) -> str:
        lines = self.source.strip().splitlines()
        return lines[0] if lines else ""

    def label(self) -> str:
        """``cell 3 (id abc): first line`` for messages."""
        ident = f" (id {self.id})" if self.id else ""
        return f"cell {self.index}{ident}: {self.first_line!r}"


@dataclass(frozen=True)
class NotebookCells:
    """What an export takes from a notebook: the parameters cell and the export cells."""

    path: Path
    parameters: ExportCell | None
    cells: list[ExportCell]


def _is_directive(line: str) -> bool:
    return line.strip().replace(" ", "").replace("\t", "") == _DIRECTIVE


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _strip_directive(source: str) -> tuple[str, bool]:
    lines = source.splitlines(keepends=True)
    if lines and _is_directive(lines[0]):
        return "".join(lines[1:]), True
    return source, False


def _ipython_call(tree: ast.AST) -> ast.Call | None:
    """The first ``get_ipython()...`` call in `tree`, if any."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "get_ipython"
        ):
            return node
    return None


def _describe_ipython(tree: ast.AST, call: ast.Call) -> str:
    """How the user wrote the IPython call, rebuilt from the transformed AST."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.value is call
        ):
            kind, prefix = _IPYTHON_CALLS.get(node.func.attr, ("an IPython call", ""))
            args = [str(a.value) for a in node.args if isinstance(a, ast.Constant)]
            if node.func.attr == "run_line_magic" and args:
                if args[0] in ("pinfo", "pinfo2"):
                    return f"IPython help syntax ({' '.join(args[1:])}?)"
                return f"{kind} ({prefix}{' '.join(a for a in args if a)})"
            if node.func.attr == "run_cell_magic" and args:
                return f"{kind} ({prefix}{args[0]})"
            if args:
                return f"{kind} ({prefix}{args[0]})"
            return kind
    return "a get_ipython() call"


def check_cell(cell: ExportCell, filename: str = "<notebook>") -> None:
    """Raise :class:`ExportError` if `cell` is not plain, compilable Python.

    IPython's ``TransformerManager`` rewrites magics, shell escapes and help syntax
    into ``get_ipython()`` calls; any such call (written or produced) is refused.
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError as e:  # pragma: no cover - ipykernel brings IPython
        raise ExportError(
            "Exporting notebooks needs IPython: pip install 'agentlab-toolkit[notebook]'"
        ) from e
    fix = (
        "Exported cells must be plain Python: move it to a cell that is not tagged "
        "'export', or replace it with Python code (e.g. subprocess instead of '!')."
    )
    transformed = TransformerManager().transform_cell(cell.source)
    try:
        tree = ast.parse(transformed, filename=filename)
    except SyntaxError as e:
        raise ExportError(
            f"{filename}, {cell.label()} is not valid Python (line {e.lineno}: {e.msg}). "
            "Fix the cell or remove its 'export' tag."
        ) from None
    call = _ipython_call(tree)
    if call is not None:
        what = _describe_ipython(tree, call)
        raise ExportError(f"{filename}, {cell.label()} uses {what}. {fix}")
    try:
        compile(cell.source, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise ExportError(
            f"{filename}, {cell.label()} is not plain Python (line {e.lineno}: {e.msg}); "
            "notebook-only forms such as top-level 'await', an indented first line or "
            f">>> prompts cannot be exported. {fix}"
        ) from None


def read_export_cells(notebook: str | os.PathLike[str]) -> NotebookCells:
    """Read `notebook` and return its checked parameters cell and export cells.

    Raises :class:`ExportError` naming the cell when one is not plain Python, and
    when no cell is marked for export.
    """
    try:
        import nbformat
    except ImportError as e:  # pragma: no cover
        raise ExportError("Exporting notebooks needs nbformat: pip install nbformat") from e
    path = Path(notebook)
    try:
        nb = nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise ExportError(f"No notebook at {path}.") from None
    except Exception as e:  # nbformat raises several kinds for unreadable files
        raise ExportError(f"{path} is not a readable Jupyter notebook: {e}") from None
    parameters: ExportCell | None = None
    cells: list[ExportCell] = []
    for index, raw in enumerate(nb.cells):
        if raw.get("cell_type") != "code":
            continue
        tags = tuple(str(t) for t in raw.get("metadata", {}).get("tags", []) or [])
        source, directive = _strip_directive(_source(raw))
        cell = ExportCell(index=index, id=raw.get("id"), source=source, tags=tags)
        if EXPORT_TAG in tags or directive:
            check_cell(cell, str(path))
            cells.append(cell)
        elif PARAMETERS_TAG in tags and parameters is None:
            check_cell(cell, str(path))
            parameters = cell
    if not cells:
        raise ExportError(
            f"{path} has no cells to export: tag the cells that define the agent with "
            f"'{EXPORT_TAG}' (cell metadata tags) or start them with '#| export'."
        )
    return NotebookCells(path=path, parameters=parameters, cells=cells)
