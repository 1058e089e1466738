"""Where agentlab keeps its data: one workspace directory per project.

The workspace holds the trace store (``traces.duckdb`` and ``traces/``), the
short-term store and the long-term memory. It is ``./.agentlab`` unless the
``AGENTLAB_WORKSPACE`` environment variable or an explicit path says otherwise.
A workspace agentlab creates is readable by its owner only (mode 0700).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WORKSPACE_ENV", "resolve_workspace"]

WORKSPACE_ENV = "AGENTLAB_WORKSPACE"


def resolve_workspace(path: str | os.PathLike[str] | None = None) -> Path:
    """The absolute workspace directory, created if missing.

    `path` wins; otherwise ``$AGENTLAB_WORKSPACE``; otherwise ``./.agentlab``.
    """
    if path is None:
        path = os.environ.get(WORKSPACE_ENV) or ".agentlab"
    workspace = Path(path).expanduser().absolute()
    if not workspace.is_dir():
        # Traces, memories and caches hold users' inputs: only the owner may read them.
        workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    return workspace
