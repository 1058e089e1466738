"""``export_notebook``: turn a validated notebook into an installable, served package.

Output is deterministic (no timestamps, sorted keys, notebook order), so exporting
an unchanged notebook again gives byte-identical files; it is written to a
temporary directory and renamed into place.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from agentlab.agents.state_spec import spec_files
from agentlab.export import templates
from agentlab.export import wheelhouse as wh
from agentlab.export.cells import ExportCell, ExportError, NotebookCells, read_export_cells
from agentlab.export.checks import Block, check_module, check_package_name
from agentlab.export.secret_params import (
    Secret,
    env_reference,
    find_secrets,
    refuse_secret_literals,
    rewrite_cell,
)
from agentlab.export.target import MARKER, check_target, marker_text, write_atomically
from agentlab.export.validation import GateResult, Validator, lint_gate, run_eval_notebook
from agentlab.redact import default_redactor
from agentlab.tools.lint import LintReport, lint_tools

__all__ = ["DEFAULT_EVAL_NOTEBOOK", "export_notebook", "find_factory", "lint_notebook"]

DEFAULT_EVAL_NOTEBOOK = Path("evals/eval_agent.ipynb")
FACTORY_FUNCTION = "build_agent"
FACTORY_OBJECT = "agent"


def _display_path(path: Path) -> str:
    """`path` relative to the working directory when inside it, POSIX-style."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _literal(value: Any, what: str) -> str:
    """`value` as Python source; refuses values that do not round-trip."""
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise ExportError(f"{what}={value!r} is not a plain literal (str, number, list, dict).")
    return text


def _parameters(cell: ExportCell | None) -> dict[str, Any]:
    """The literal top-level assignments of the parameters cell."""
    if cell is None:
        return {}
    values: dict[str, Any] = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    values[target.id] = value
    return values


def find_factory(tree: ast.Module) -> str | None:
    """``"build_agent"`` or ``"agent"``: what the module defines at top level."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    for name in (FACTORY_FUNCTION, FACTORY_OBJECT):
        if name in names:
            return name
    return None


def _agent_module(
    name: str,
    source: NotebookCells,
    notebook: str,
    overrides: Mapping[str, Any],
    secrets: Mapping[str, Secret],
) -> tuple[str, str]:
    """The text of ``agent.py`` and the factory it defines; `secrets` (by parameter)
    are read from the environment instead of written."""
    blocks = [templates.AGENT_HEADER.format(name=name, notebook=notebook)]
    if secrets:
        blocks.append("# Secrets are read from the environment (see .env.example)\nimport os\n")

    def block(cell: ExportCell, what: str, text: str | None = None) -> str:
        ident = f" (id {cell.id})" if cell.id else ""
        body = cell.source if text is None else text
        return f"# {what} {notebook}, cell {cell.index}{ident}\n{body.strip()}\n"

    starts: list[Block] = []

    def add(text: str, label: str) -> None:
        starts.append(Block(line="\n\n".join(blocks).count("\n") + 3, label=label))
        blocks.append(text)

    if source.parameters is not None:
        cell = source.parameters
        add(block(cell, "Parameters from", rewrite_cell(cell, secrets)), cell.label())
    if overrides:
        lines = [
            f"{k} = {env_reference(secrets[k]) if k in secrets else _literal(v, k)}"
            for k, v in sorted(overrides.items())
        ]
        text = "# Export parameters (override the notebook's)\n" + "\n".join(lines) + "\n"
        add(text, "the export parameters")
    for cell in source.cells:
        add(block(cell, "From"), cell.label())
    text = "\n\n".join(blocks)
    try:
        tree = ast.parse(text)
        compile(tree, f"{name}/agent.py", "exec", dont_inherit=True)
    except SyntaxError as e:
        raise ExportError(
            f"The exported cells of {notebook} do not form a valid module (line {e.lineno}: "
            f"{e.msg}); e.g. 'from __future__' imports cannot be exported."
        ) from None
    check_module(text, starts, notebook)
    factory = find_factory(tree)
    if factory is None:
        raise ExportError(
            f"None of the exported cells of {notebook} defines the agent: define "
            f"`def {FACTORY_FUNCTION}() -> Agent:` (or a module-level `{FACTORY_OBJECT} = ...`) "
            "at the top level of a cell tagged 'export'."
        )
    return text, factory


@contextlib.contextmanager
def _secret_environment(secrets: Mapping[str, Secret]) -> Iterator[None]:
    """The secrets' environment variables set to the notebook's values (unless already
    set), while the exporter builds the agent as the package will."""
    added = [s for s in secrets.values() if s.env not in os.environ]
    os.environ.update({s.env: s.value for s in added})
    try:
        yield
    finally:
        for secret in added:
            os.environ.pop(secret.env, None)


def _built_agent(agent_py: str, factory: str, notebook: str) -> Any:
    """Run the exported module's text and return its agent, as the package's
    ``create_agent()`` would (``build_agent()`` called, or ``agent`` taken)."""
    module = types.ModuleType(f"_agentlab_exported_{abs(hash(agent_py))}")
    module.__file__ = f"<exported cells of {notebook}>"
    sys.modules[module.__name__] = module  # for classes the cells define (dataclasses, pydantic)
    try:
        exec(compile(agent_py, module.__file__, "exec", dont_inherit=True), module.__dict__)
        made = module.__dict__[factory]
        return made() if factory == FACTORY_FUNCTION else made
    except Exception as e:
        call = f"{factory}()" if factory == FACTORY_FUNCTION else factory
        raise ExportError(
            f"Building the agent ({call}) from the exported cells of {notebook} failed "
            f"({type(e).__name__}: {e}), so its tools cannot be linted. The exported "
            "cells must run on their own, as the exported package runs them: fix them."
        ) from e
    finally:
        sys.modules.pop(module.__name__, None)


def lint_notebook(notebook: str | os.PathLike[str], **options: Any) -> LintReport:
    """Lint the tools of the agent that the cells tagged ``export`` of `notebook`
    build, run as the exported package runs them; `options` go to
    :func:`~agentlab.tools.lint_tools` (``ignore``, thresholds)."""
    source = read_export_cells(notebook)
    nb_path = _display_path(source.path)
    secrets = find_secrets("agent", _parameters(source.parameters))
    agent_py, factory = _agent_module("agent", source, nb_path, {}, secrets)
    with spec_files(base=source.path.parent), _secret_environment(secrets):
        agent = _built_agent(agent_py, factory, nb_path)
    if not hasattr(agent, "tools"):
        raise ExportError(
            f"The exported cells of {nb_path} define {factory} as a {type(agent).__name__}, "
            "not an agent with tools: nothing to lint."
        )
    return lint_tools(agent, **options)


def _lint_record(
    agent_py: str, factory: str, notebook: str, allow: bool
) -> tuple[Any, dict[str, Any]]:
    """The agent built from the cells (None if that failed and `allow`) and the lint
    gate's record for export.json (see :func:`lint_gate`)."""
    try:
        agent = _built_agent(agent_py, factory, notebook)
    except ExportError as e:
        if not allow:
            raise ExportError(
                f"Not exported: {e} Or pass allow_lint_errors=True (CLI: --allow-lint-errors) "
                "to export without the lint (recorded in export.json)."
            ) from e.__cause__
        return None, {"passed": False, "override": True, "error": str(e)}
    return agent, lint_gate(agent, notebook, allow_lint_errors=allow)


def _local_models(agent: Any, agent_py: str) -> tuple[bool, bool]:
    """Whether the agent uses a local model, and the bundled one: found among the
    agentlab objects it holds (its model, wrapped or in fallbacks), or when it could
    not be built, among the model names the module spells out."""
    from agentlab.models.local import LocalModel

    if agent is None:
        names = [
            n.value
            for n in ast.walk(ast.parse(agent_py))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        local = [n for n in names if n == "local" or n.startswith("local:")]
        return bool(local), any(n in ("local", "local:smollm2") for n in local)
    seen: set[int] = set()
    todo: list[Any] = [agent]
    found: list[LocalModel] = []
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, LocalModel):
            found.append(obj)
        elif isinstance(obj, list | tuple | set | frozenset):
            todo.extend(obj)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif type(obj).__module__.startswith("agentlab.") and hasattr(obj, "__dict__"):
            todo.extend(vars(obj).values())
    return bool(found), any(m.model_path is None for m in found)


def _packaged_specs(name: str, loaded: Mapping[str, Path]) -> tuple[dict[str, str], dict[str, str]]:
    """The package's copies of the spec files the exported cells loaded (by their path
    in the package) and, by the path each cell named, the copy that the package's
    ``create_agent()`` reads instead (see :mod:`agentlab.agents.state_spec`)."""
    copies: dict[str, str] = {}
    names: dict[str, str] = {}
    by_file: dict[Path, str] = {}
    for named in sorted(loaded):
        file = loaded[named].resolve()
        if file not in by_file:
            stem, suffix, n = file.stem, file.suffix, 1
            packaged = f"specs/{file.name}"
            while f"{name}/{packaged}" in copies:
                n += 1
                packaged = f"specs/{stem}-{n}{suffix}"
            copies[f"{name}/{packaged}"] = file.read_text(encoding="utf-8")
            by_file[file] = packaged
        names[named] = by_file[file]
    return copies, names


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def _resolve(path: str | os.PathLike[str], base: Path) -> Path:
    """`path` as the eval notebook saw it: absolute, from the working directory, or `base`."""
    p = Path(path)
    return p if p.is_absolute() or p.is_file() else base / p


def _dataset_text(path: Path) -> str:
    from agentlab.evals import load_dataset

    load_dataset(path)  # refuse a malformed dataset with its own clear error
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def _validation_record(
    eval_notebook: Path, parameters: Mapping[str, Any], verdict: GateResult, override: bool
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eval_notebook": _display_path(eval_notebook),
        "parameters": default_redactor().redact_obj(dict(parameters)),
        "passed": verdict.passed,
        "gate_failures": list(verdict.gate_failures),
        "override": override,
    }
    if override:  # timings vary run to run; leaving them out keeps re-exports identical
        record["metrics"] = {k: v for k, v in verdict.metrics.items() if "latency" not in k}
    return record


def _find_eval_notebook(eval_notebook: str | os.PathLike[str] | None) -> Path:
    if eval_notebook is not None:
        return Path(eval_notebook)
    if DEFAULT_EVAL_NOTEBOOK.is_file():
        return DEFAULT_EVAL_NOTEBOOK
    raise ExportError(
        f"No eval notebook to validate the export with ({DEFAULT_EVAL_NOTEBOOK} does not "
        "exist here): pass eval_notebook=PATH (CLI: --eval-notebook), or validate=False "
        "to export without an evaluation."
    )


def _stderr_line(message: str) -> None:
    print(f"agentlab export: {message}", file=sys.stderr, flush=True)


def _readme_extras(
    dist: str, requirements: list[str], secrets: Mapping[str, Secret], wheels: bool
) -> dict[str, str]:
    """The README's install section, extra files and secrets section."""
    install = (
        wh.install_section(dist)
        if wheels
        else templates.INSTALL_INDEX.format(requirement=requirements[0])
    )
    if any(r.startswith(wh.SMOLLM2_DIST) for r in requirements):
        install += templates.LOCAL_MODEL.format(version=wh.SMOLLM2_VERSION)
    listed = "\n".join(
        f"- `{s.env}`: `{s.parameter}` of the notebook's parameters" for s in secrets.values()
    )
    extra_files = templates.WHEELHOUSE_FILES if wheels else ""
    if secrets:
        extra_files += (
            "- `.env.example`: the environment variables the agent reads its secrets from.\n"
        )
    return {
        "install": install,
        "extra_files": extra_files,
        "secrets": templates.SECRETS.format(listed=listed) if secrets else "",
    }


def _scrubbed(files: dict[str, str], secrets: Mapping[str, Secret]) -> dict[str, str]:
    """`files` with any secret value that reached them (say, in an error recorded in
    export.json) replaced by its environment variable's name."""
    for secret in secrets.values():
        files = {k: v.replace(secret.value, f"${{{secret.env}}}") for k, v in files.items()}
    return files


def export_notebook(
    notebook: str | os.PathLike[str],
    *,
    name: str,
    out: str | os.PathLike[str] = "exports",
    eval_notebook: str | os.PathLike[str] | None = None,
    eval_parameters: Mapping[str, Any] | None = None,
    allow_failing_gates: bool = False,
    allow_lint_errors: bool = False,
    validate: bool = True,
    parameters: Mapping[str, Any] | None = None,
    dataset: str | os.PathLike[str] | None = None,
    validator: Validator | None = None,
    wheelhouse: bool = False,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Export the cells tagged ``export`` of `notebook` as the package ``out/NAME/``.

    The cells must define ``build_agent()`` or a module-level ``agent``. Unless
    `validate` is False, the eval notebook (default ``evals/eval_agent.ipynb``) is
    run first with `eval_parameters`; when a gate fails nothing is written, unless
    `allow_failing_gates`, which is then recorded in ``NAME/export.json``. Before
    that, the agent is built from the cells and its tools are linted
    (:func:`~agentlab.tools.lint_tools`): lint errors refuse the export too, unless
    `allow_lint_errors` (recorded the same way).
    `parameters` override the notebook's parameters cell in the exported module;
    secret-looking ones (there or in the cell) are read from environment variables.
    Tests are generated from `dataset` (default: the eval's ``dataset`` parameter).
    `validator` replaces the eval runner (see :mod:`agentlab.export.validation`).
    `wheelhouse` adds ``wheelhouse/``, ``requirements.lock`` and a ``Dockerfile``
    (see :mod:`agentlab.export.wheelhouse`), reporting each stage to `progress`
    (default: a line on stderr). ``out/NAME`` is replaced only when it holds an
    earlier export of NAME, unless `force`. Returns the package directory.
    """
    check_package_name(name)
    target = Path(out) / name
    check_target(target, name, force=force)
    source = read_export_cells(notebook)
    nb_path = _display_path(source.path)
    refuse_secret_literals(source.cells, nb_path)
    overrides = dict(parameters or {})
    notebook_params = _parameters(source.parameters)
    secrets = {**find_secrets(name, notebook_params), **find_secrets(name, overrides)}
    agent_py, factory = _agent_module(name, source, nb_path, overrides, secrets)
    params = {
        k: f"${{{secrets[k].env}}}" if k in secrets else v
        for k, v in {**notebook_params, **overrides}.items()
    }
    eval_params = dict(eval_parameters or {})
    with spec_files(base=source.path.parent) as specs, _secret_environment(secrets):
        agent, lint = _lint_record(agent_py, factory, nb_path, allow_lint_errors)
    spec_copies, spec_names = _packaged_specs(name, specs.loaded)
    local, bundled = _local_models(agent, agent_py)
    requirements = wh.dependencies(local=local, bundled_model=bundled)

    validation: dict[str, Any] = {"skipped": True}
    verdict: GateResult | None = None
    eval_path: Path | None = None
    if validate:
        eval_path = _find_eval_notebook(eval_notebook)
        executed = Path(out) / f"{name}.eval.ipynb"
        verdict = (validator or run_eval_notebook)(eval_path, eval_params, executed)
        if not verdict.passed and not allow_failing_gates:
            failures = "; ".join(verdict.gate_failures) or "the eval notebook did not pass"
            raise ExportError(
                f"Not exported: the evaluation of {nb_path} failed its gates ({failures}). "
                f"Executed notebook: {verdict.executed_path or executed}. Improve the agent "
                "and export again, or pass --allow-failing-gates to export anyway "
                "(recorded in export.json)."
            )
        validation = _validation_record(eval_path, eval_params, verdict, not verdict.passed)

    dataset_path: Path | None = None
    if dataset is not None:
        dataset_path = Path(dataset)
    else:
        found = eval_params.get("dataset") or (verdict and verdict.parameters.get("dataset"))
        if found and eval_path is not None:
            dataset_path = _resolve(found, eval_path.parent)
    gates = eval_params.get("gates") or (verdict.parameters.get("gates") if verdict else None)
    if isinstance(gates, str):
        try:
            gates = json.loads(gates)
        except json.JSONDecodeError:
            message = f"gates={gates!r} is not a JSON object of metric: condition."
            raise ExportError(message) from None
    gates = {str(k): str(v) for k, v in sorted(dict(gates or {}).items())}

    dist = name.replace("_", "-")
    cells = ", ".join(str(c.index) for c in source.cells)
    factory_call = (
        f"return module.{FACTORY_FUNCTION}()"
        if factory == FACTORY_FUNCTION
        else f"return module.{FACTORY_OBJECT}"
    )
    files: dict[str, str] = {
        MARKER: marker_text(name),
        "pyproject.toml": templates.PYPROJECT.format(
            name=name,
            dist=dist,
            version="0.1.0",
            notebook=nb_path,
            dependencies=json.dumps(requirements),
            build_requirement=wh.BUILD_REQUIREMENT,
        ),
        "README.md": templates.README.format(
            name=name,
            dist=dist,
            notebook=nb_path,
            cells=cells,
            **_readme_extras(dist, requirements, secrets, wheelhouse),
        ),
        f"{name}/__init__.py": templates.INIT.format(
            name=name,
            notebook=nb_path,
            factory_doc=f"{factory}()" if factory == FACTORY_FUNCTION else factory,
            factory_call=factory_call,
        ),
        f"{name}/agent.py": agent_py,
        f"{name}/app.py": templates.APP.format(name=name, dist=dist),
        f"{name}/config.json": _json(
            {"factory": factory, "name": name, "parameters": params}
            | ({"spec_files": spec_names} if spec_names else {})
            | ({"secrets": {k: s.env for k, s in secrets.items()}} if secrets else {})
        ),
        **spec_copies,
        "tests/test_agent.py": templates.TESTS.format(
            name=name,
            dataset=dataset_path.name if dataset_path else "none",
            gates=json.dumps(gates),
            gates_doc=", ".join(f"{k} {v}" for k, v in gates.items()) or "every case passes",
        ),
    }
    if dataset_path is not None:
        files["tests/cases.jsonl"] = _dataset_text(dataset_path)
    files[f"{name}/export.json"] = _json(
        {
            "name": name,
            "source": {
                "notebook": nb_path,
                "cells": [{"id": c.id, "index": c.index} for c in source.cells],
                "agent_sha256": hashlib.sha256(agent_py.encode("utf-8")).hexdigest(),
            },
            "lint": lint,
            "validation": validation,
        }
    )
    if secrets:
        lines = [
            f"# {s.parameter} of the notebook's parameters\n{s.env}=" for s in secrets.values()
        ]
        files[".env.example"] = templates.ENV_EXAMPLE.format(name=name, lines="\n".join(lines))
    build = None
    if wheelhouse:
        files["Dockerfile"] = wh.dockerfile(name)
        build = partial(
            wh.build_wheelhouse,
            requirements=requirements,
            progress=progress or _stderr_line,
        )
    write_atomically(_scrubbed(files, secrets), target, extra=build)
    return target
