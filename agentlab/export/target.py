"""Where an export is written: refuse to lose data, replace atomically.

``out/NAME`` is replaced only when it holds an earlier export of the same agent,
recognised by the marker file :data:`MARKER` the exporter writes (or, for
exports made before the marker, ``NAME/export.json`` naming the agent), or when
it is empty; anything else needs ``force``. The new export is written beside it
and renamed into place, with the usual modes (the umask's), never a temporary
directory's 0700.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.export.cells import ExportError

__all__ = ["MARKER", "check_target", "marker_text", "write_atomically"]

MARKER = ".agentlab-export.json"


def marker_text(name: str) -> str:
    """The marker file's content for an export of `name`."""
    return json.dumps({"agent": name, "written_by": "agentlab export"}, sort_keys=True) + "\n"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_export_of(folder: Path, name: str) -> bool:
    marker = _read_json(folder / MARKER)
    if isinstance(marker, dict):
        return marker.get("agent") == name
    legacy = _read_json(folder / name / "export.json")  # exports made before the marker
    return isinstance(legacy, dict) and legacy.get("name") == name


def check_target(target: Path, name: str, *, force: bool) -> None:
    """Refuse to write the export of `name` to `target` when that would lose data."""
    out = target.parent
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise ExportError(
                f"--out {out} cannot hold the export: {parent} is a file, not a folder. "
                "Pass a folder (it is created when missing)."
            )
    if force or (not target.exists() and not target.is_symlink()):
        return
    if target.is_dir() and not target.is_symlink():
        if _is_export_of(target, name) or not any(target.iterdir()):
            return
        what = f"holds files that are not an export of {name!r} (no {MARKER} naming it)"
    else:
        what = "is a file" if target.is_file() else "is not a folder"
    raise ExportError(
        f"{target} {what}; exporting would replace it and lose them. Choose another "
        f"--out or --name, or pass --force (force=True) to replace it."
    )


def write_atomically(
    files: dict[str, str], target: Path, extra: Callable[[Path], None] | None = None
) -> None:
    """Write `files` (relative path -> text) as the folder `target`, replacing it at
    once; `extra(folder)` adds more to the new folder before it takes `target`'s place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:8]
    tmp = target.with_name(f".{target.name}.tmp-{suffix}")
    tmp.mkdir()  # the umask's mode, as any folder the user makes
    try:
        for rel, text in sorted(files.items()):
            file = tmp / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(text.encode("utf-8"))
        if extra is not None:
            extra(tmp)
        old = None
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}.old-{suffix}")
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
