"""The layer contract covers every part of the package, and holds.

`.importlinter` lists agentlab's packages and base modules from the top layer down;
`lint-imports` (run by `make lint`) checks that no module imports from a layer above
its own. This test makes the contract exhaustive: a new top-level module or package
must be given a layer, or it would escape the check.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import agentlab

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / ".importlinter"


def _layered_names() -> set[str]:
    config = configparser.ConfigParser()
    config.read(CONTRACT)
    layers = config["importlinter:contract:layers"]["layers"]
    return set(re.findall(r"agentlab\.(\w+)", layers))


def _top_level_parts() -> set[str]:
    package = Path(agentlab.__file__).parent
    parts = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    parts |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    return parts


def test_every_module_has_a_layer() -> None:
    missing = _top_level_parts() - _layered_names()
    assert not missing, f"give these a layer in .importlinter: {sorted(missing)}"


def test_the_contract_names_only_real_modules() -> None:
    unknown = _layered_names() - _top_level_parts()
    assert not unknown, f".importlinter names modules that do not exist: {sorted(unknown)}"


def test_the_layers_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.fail("lint-imports is missing: pip install -e '.[dev]' (import-linter)")
    result = subprocess.run(
        [lint_imports, "--config", str(CONTRACT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
