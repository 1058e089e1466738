"""State-machine spec files: reading and writing YAML or JSON, and finding them.

A spec names its file by a path, as a notebook cell writes it
(``StateMachine.from_spec("refund_flow.yaml")``). A relative path is read from the
working directory (a notebook's kernel runs in the notebook's directory), unless a
:func:`spec_files` context says otherwise: the exporter reads it from the notebook's
directory and records every file the exported cells load, and an exported package
reads its own copies (``specs/`` inside the package), so the agent finds its spec
wherever the package is installed.

Duplicate keys are refused (YAML and JSON parsers would silently keep the last one,
which hides a state defined twice).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentlab.errors import UserError

__all__ = [
    "SpecFiles",
    "StateMachineError",
    "read_spec",
    "resolve_spec_path",
    "spec_files",
    "write_spec",
]

YAML_SUFFIXES = (".yaml", ".yml")


class StateMachineError(UserError):
    """A state machine or its spec is wrong; the message names the key and the fix."""


@dataclass
class SpecFiles:
    """Where spec files are read from while a :func:`spec_files` context is active.

    `base`: the directory relative paths are read from (None: the working directory);
    `packaged`: files by the path a cell names them with (an exported package's
    copies); `loaded`: every file read in the context, by the path it was named with.
    """

    base: Path | None = None
    packaged: Mapping[str, Path] = field(default_factory=dict)
    loaded: dict[str, Path] = field(default_factory=dict)


_current: ContextVar[SpecFiles | None] = ContextVar("agentlab_spec_files", default=None)


@contextmanager
def spec_files(
    base: str | os.PathLike[str] | None = None,
    packaged: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Iterator[SpecFiles]:
    """Read spec files named by relative paths from `base`, and those named in
    `packaged` from the file given there, within the block; the :class:`SpecFiles`
    yielded records each file read (its ``loaded``)."""
    files = SpecFiles(
        None if base is None else Path(base),
        {name: Path(path) for name, path in (packaged or {}).items()},
    )
    token = _current.set(files)
    try:
        yield files
    finally:
        _current.reset(token)


def resolve_spec_path(path: str | os.PathLike[str]) -> Path:
    """The file `path` names (see the module docstring)."""
    named = os.fspath(path)
    files = _current.get()
    candidate = Path(named).expanduser()
    if files is None:
        return candidate
    resolved = files.packaged.get(named)
    if resolved is None:
        resolved = candidate if files.base is None else files.base / candidate
    return resolved


def read_spec(source: Mapping[str, Any] | str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """The spec data of `source` (a mapping, or a ``.yaml``/``.yml``/``.json`` file)
    and how to name it in messages."""
    if isinstance(source, Mapping):
        return dict(source), "the spec"
    path = resolve_spec_path(source)
    where = os.fspath(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StateMachineError(
            f"No state-machine spec at {where} (looked for {path.absolute()}); check the "
            "path (a relative one is read from the working directory: the notebook's)."
        ) from None
    except OSError as exc:
        raise StateMachineError(f"Cannot read the state-machine spec {where}: {exc}") from None
    try:
        if path.suffix.lower() in YAML_SUFFIXES:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        elif path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_unique_pairs)
        else:
            raise StateMachineError(
                f"{where}: a state-machine spec is a .yaml, .yml or .json file; rename it."
            )
    except (yaml.YAMLError, ValueError) as exc:
        raise StateMachineError(f"{where} is not a valid spec file: {exc}") from None
    if not isinstance(data, dict):
        raise StateMachineError(
            f"{where}: a spec is a mapping with 'states' (and optionally 'name', "
            f"'description', 'initial'), not {type(data).__name__}."
        )
    files = _current.get()
    if files is not None:
        files.loaded[where] = path
    return data, where


def write_spec(data: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write `data` to `path` as YAML or JSON (by its suffix); return the path."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix in YAML_SUFFIXES:
        text = yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=88)
    elif suffix == ".json":
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    else:
        raise StateMachineError(f"{target}: save a spec as .yaml, .yml or .json.")
    target.write_text(text, encoding="utf-8")
    return target


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that appears twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (a state or key defined "
                    "twice: keep one)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(
            f"key {dupes[0]!r} appears twice in one object (a state or key defined twice: keep one)"
        )
    return dict(pairs)
