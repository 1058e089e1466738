"""Where agentlab keeps its data: one workspace directory per project.

The workspace holds the trace store (``traces.duckdb`` and ``traces/``), the
short-term store and the long-term memory. Every notebook, eval and command of a
project shares it, whichever folder it runs from. It is, first that applies:

1. an explicit path (``TraceStore(path)``, ``--workspace``);
2. the ``AGENTLAB_WORKSPACE`` environment variable;
3. ``workspace = "..."`` under ``[tool.agentlab]`` in the project's
   ``pyproject.toml`` (relative to that file);
4. ``.agentlab`` in the project's folder: the nearest folder, from the current
   one upwards, that holds a ``pyproject.toml``;
5. ``./.agentlab`` when no folder above holds one.

A workspace agentlab creates is readable by its owner only (mode 0700).
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path

from agentlab.errors import UserError

__all__ = ["WORKSPACE_ENV", "project_root", "resolve_workspace"]

WORKSPACE_ENV = "AGENTLAB_WORKSPACE"
PROJECT_FILE = "pyproject.toml"


def project_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: the current one) that holds
    a ``pyproject.toml``; None when there is none."""
    here = Path(start if start is not None else Path.cwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None


def resolve_workspace(path: str | os.PathLike[str] | None = None) -> Path:
    """The absolute workspace directory, created if missing (see the module docstring
    for where it is when `path` is None)."""
    if path is None:
        path = os.environ.get(WORKSPACE_ENV) or _project_workspace()
    workspace = Path(path).expanduser().absolute()
    if not workspace.is_dir():
        # Traces, memories and caches hold users' inputs: only the owner may read them.
        workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    return workspace


def _project_workspace() -> Path:
    root = project_root()
    if root is None:
        return Path(".agentlab")
    project_file = root / PROJECT_FILE
    setting = _workspace_setting(project_file, project_file.stat().st_mtime_ns)
    return root / (setting if setting is not None else ".agentlab")


@functools.lru_cache(maxsize=16)
def _workspace_setting(project_file: Path, mtime_ns: int) -> str | None:
    """``[tool.agentlab] workspace`` of `project_file` (cached while it is unchanged)."""
    try:
        with project_file.open("rb") as f:
            config = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(
            f"cannot read {project_file} to find the agentlab workspace: {exc}. Fix the "
            f"file, or name the workspace with the {WORKSPACE_ENV} environment variable."
        ) from exc
    tool = config.get("tool")
    section = tool.get("agentlab") if isinstance(tool, dict) else None
    value = section.get("workspace") if isinstance(section, dict) else None
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise UserError(
        f"[tool.agentlab] workspace in {project_file} must be a folder path as a "
        f'non-empty string, like workspace = ".agentlab" (got {value!r}).'
    )
