"""Parameters of eval notebook runs from the command line: ``-p key=value`` and
``--grid key=v1,v2`` (the cartesian product of every grid with the -p values)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from typing import Any

from agentlab.errors import UserError

__all__ = ["ParameterError", "parameter_sets", "parse_grid", "parse_param", "parse_value"]

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ParameterError(UserError):
    """A ``-p`` or ``--grid`` argument is malformed; the message shows the right form."""


def parse_value(text: str) -> Any:
    """`text` decoded as JSON when valid (``6``, ``null``, ``{...}``), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split(arg: str, option: str, example: str) -> tuple[str, str]:
    key, sep, value = arg.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ParameterError(
            f"{option} {arg!r} is not understood; write {option} {example} "
            "(a parameter name, '=', then a value; JSON values such as 6, null or "
            '{"a": 1} are decoded, anything else is a string)'
        )
    return key, value


def parse_param(arg: str) -> tuple[str, Any]:
    """``"max_steps=4"`` -> ``("max_steps", 4)``."""
    key, value = _split(arg, "-p", "max_steps=4")
    return key, parse_value(value)


def parse_grid(arg: str) -> tuple[str, list[Any]]:
    """``"max_steps=2,4"`` -> ``("max_steps", [2, 4])``; a JSON list also works."""
    key, text = _split(arg, "--grid", "max_steps=2,4")
    decoded = parse_value(text)
    values = decoded if isinstance(decoded, list) else [parse_value(v) for v in text.split(",")]
    if not values or any(v == "" for v in values):
        raise ParameterError(f"--grid {arg!r} has an empty value; write --grid {key}=v1,v2")
    return key, values


def parameter_sets(params: Sequence[str] = (), grid: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One dict per run: the -p values combined with every point of the grids.

    A key given twice, or both as -p and --grid, is an error.
    """
    fixed: dict[str, Any] = {}
    for arg in params:
        key, value = parse_param(arg)
        if key in fixed:
            raise ParameterError(f"-p {key}=... is given twice; give each parameter once")
        fixed[key] = value
    axes: dict[str, list[Any]] = {}
    for arg in grid:
        key, values = parse_grid(arg)
        if key in fixed or key in axes:
            raise ParameterError(
                f"{key} is given more than once (-p or --grid); give each parameter once"
            )
        axes[key] = values
    combos = itertools.product(*axes.values())
    return [{**fixed, **dict(zip(axes, combo, strict=True))} for combo in combos]
