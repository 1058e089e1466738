"""One workspace per project: notebooks, evals and commands run from any folder of
a project share the project's workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.errors import UserError
from agentlab.workspace import WORKSPACE_ENV, project_root, resolve_workspace


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (it holds pyproject.toml) with notebooks/ and evals/ in it."""
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    root = tmp_path / "shop"
    for folder in ("notebooks", "evals/cases"):
        (root / folder).mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "shop"\n')
    return root


def test_every_folder_of_a_project_resolves_to_the_projects_workspace(project, monkeypatch):
    seen = set()
    for folder in (project, project / "notebooks", project / "evals" / "cases"):
        monkeypatch.chdir(folder)
        seen.add(resolve_workspace())
    assert seen == {project / ".agentlab"}
    assert (project / ".agentlab").stat().st_mode & 0o777 == 0o700
    assert not (project / "notebooks" / ".agentlab").exists()


def test_the_project_can_name_its_workspace_in_pyproject(project, monkeypatch):
    (project / "pyproject.toml").write_text(
        '[project]\nname = "shop"\n\n[tool.agentlab]\nworkspace = "var/agentlab"\n'
    )
    monkeypatch.chdir(project / "notebooks")
    assert resolve_workspace() == project / "var" / "agentlab"


def test_the_environment_and_an_explicit_path_win(project, monkeypatch, tmp_path):
    monkeypatch.chdir(project / "notebooks")
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path / "from-env"))
    assert resolve_workspace() == tmp_path / "from-env"
    assert resolve_workspace(tmp_path / "explicit") == tmp_path / "explicit"


def test_outside_any_project_the_current_folder_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_root() is None
    assert resolve_workspace() == tmp_path / ".agentlab"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tool.agentlab]\nworkspace = 3\n", r"must be a folder path .* \(got 3\)"),
        ('[tool.agentlab]\nworkspace = ""\n', r"must be a folder path"),
        ("[tool.agentlab\nworkspace = 'x'\n", r"cannot read .*pyproject.toml.*AGENTLAB_WORKSPACE"),
    ],
)
def test_a_bad_setting_says_what_to_fix(project, monkeypatch, text, message):
    (project / "pyproject.toml").write_text(text)
    monkeypatch.chdir(project)
    with pytest.raises(UserError, match=message):
        resolve_workspace()
    assert not (project / ".agentlab").exists()
