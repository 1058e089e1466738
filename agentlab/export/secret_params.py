"""Secrets in an export become environment variables.

A string assigned in the notebook's parameters cell (or passed as an export
parameter) is a secret when its name is sensitive (``api_key``, ``*_token``,
``password``, ...) or its value looks like one (``sk-...``, a bearer token, an AWS
key id, ...), as :mod:`agentlab.redact` judges them. The exported module reads
it from ``os.environ["<NAME>_<PARAM>"]`` instead; the literal is written nowhere
in the export. A secret-looking literal elsewhere in the exported cells is
refused, naming the cell.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentlab.export.cells import ExportCell, ExportError
from agentlab.redact import default_redactor

__all__ = ["Secret", "env_reference", "find_secrets", "refuse_secret_literals", "rewrite_cell"]


@dataclass(frozen=True)
class Secret:
    """A parameter whose literal value is replaced by an environment variable."""

    parameter: str
    env: str
    value: str


def is_secret(parameter: str, value: Any) -> bool:
    """Whether `value`, assigned to `parameter`, is a secret to keep out of the export."""
    if not isinstance(value, str) or not value.strip():
        return False
    redactor = default_redactor()
    return redactor.is_sensitive_key(parameter) or redactor.redact_text(value) != value


def env_reference(secret: Secret) -> str:
    """The Python expression that reads `secret` from the environment."""
    return f'os.environ["{secret.env}"]'


def _env_name(package: str, parameter: str) -> str:
    return f"{package}_{parameter}".upper()


def find_secrets(package: str, parameters: Mapping[str, Any]) -> dict[str, Secret]:
    """The secrets among `parameters` (the parameters cell's literals, or the overrides)."""
    return {
        key: Secret(key, _env_name(package, key), value)
        for key, value in sorted(parameters.items())
        if is_secret(key, value)
    }


def _offsets(source: str) -> list[int]:
    """The character offset at which each line of `source` starts (1-based lines)."""
    starts, total = [0, 0], 0
    for line in source.splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    return starts


def _char(source: str, starts: list[int], line: int, col_bytes: int) -> int:
    """The character offset of (`line`, UTF-8 byte column `col_bytes`)."""
    text = source[starts[line] :]
    return starts[line] + len(text.encode("utf-8")[:col_bytes].decode("utf-8"))


def rewrite_cell(cell: ExportCell, secrets: Mapping[str, Secret]) -> str:
    """The parameters cell's source with each secret's literal replaced by its
    environment reference (the module imports ``os`` before it)."""
    tree = ast.parse(cell.source)
    starts = _offsets(cell.source)
    spans: list[tuple[int, int, str]] = []
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        hit = [secrets[t.id] for t in targets if isinstance(t, ast.Name) and t.id in secrets]
        value = node.value
        if hit and value.end_lineno is not None and value.end_col_offset is not None:
            begin = _char(cell.source, starts, value.lineno, value.col_offset)
            end = _char(cell.source, starts, value.end_lineno, value.end_col_offset)
            spans.append((begin, end, env_reference(hit[0])))
    text = cell.source
    for begin, end, replacement in sorted(spans, reverse=True):
        text = text[:begin] + replacement + text[end:]
    return text


def refuse_secret_literals(cells: Sequence[ExportCell], notebook: str) -> None:
    """Refuse a string in an exported cell that looks like a secret value."""
    redactor = default_redactor()
    for cell in cells:
        for node in ast.walk(ast.parse(cell.source)):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and redactor.redact_text(node.value) != node.value
            ):
                raise ExportError(
                    f"{notebook}, {cell.label()} holds what looks like a secret (line "
                    f"{node.lineno}) and an export must not ship it. Assign it in the "
                    "parameters cell (the export then reads it from an environment "
                    "variable) or read it with os.environ in the cell."
                )
