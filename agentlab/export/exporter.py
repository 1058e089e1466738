"""``export_notebook``: turn a validated notebook into an installable, served package.

Output is deterministic (no timestamps, sorted keys, notebook order), so exporting
an unchanged notebook again gives byte-identical files; it is written to a
temporary directory and renamed into place.
"""

from __future__ import annotations

import ast
import hashlib
import json
import keyword
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentlab.agents.state_spec import spec_files
from agentlab.export import templates
from agentlab.export.cells import ExportCell, ExportError, NotebookCells, read_export_cells
from agentlab.export.validation import GateResult, Validator, lint_gate, run_eval_notebook
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


def _check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        hint = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "my_agent"
        raise ExportError(
            f"--name {name!r} must be a Python package name (letters, digits and "
            f"underscores, not starting with a digit), e.g. {hint!r}."
        )


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
    name: str, source: NotebookCells, notebook: str, overrides: Mapping[str, Any]
) -> tuple[str, str]:
    """The text of ``agent.py`` and the factory it defines."""
    blocks = [templates.AGENT_HEADER.format(name=name, notebook=notebook)]

    def block(cell: ExportCell, what: str) -> str:
        ident = f" (id {cell.id})" if cell.id else ""
        return f"# {what} {notebook}, cell {cell.index}{ident}\n{cell.source.strip()}\n"

    if source.parameters is not None:
        blocks.append(block(source.parameters, "Parameters from"))
    if overrides:
        lines = [f"{k} = {_literal(v, k)}" for k, v in sorted(overrides.items())]
        blocks.append("# Export parameters (override the notebook's)\n" + "\n".join(lines) + "\n")
    blocks.extend(block(cell, "From") for cell in source.cells)
    text = "\n\n".join(blocks)
    try:
        tree = ast.parse(text)
        compile(tree, f"{name}/agent.py", "exec", dont_inherit=True)
    except SyntaxError as e:
        raise ExportError(
            f"The exported cells of {notebook} do not form a valid module (line {e.lineno}: "
            f"{e.msg}); e.g. 'from __future__' imports cannot be exported."
        ) from None
    factory = find_factory(tree)
    if factory is None:
        raise ExportError(
            f"None of the exported cells of {notebook} defines the agent: define "
            f"`def {FACTORY_FUNCTION}() -> Agent:` (or a module-level `{FACTORY_OBJECT} = ...`) "
            "at the top level of a cell tagged 'export'."
        )
    return text, factory


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
    agent_py, factory = _agent_module("agent", source, nb_path, {})
    with spec_files(base=source.path.parent):  # relative paths as in the notebook
        agent = _built_agent(agent_py, factory, nb_path)
    if not hasattr(agent, "tools"):
        raise ExportError(
            f"The exported cells of {nb_path} define {factory} as a {type(agent).__name__}, "
            "not an agent with tools: nothing to lint."
        )
    return lint_tools(agent, **options)


def _lint_record(agent_py: str, factory: str, notebook: str, allow: bool) -> dict[str, Any]:
    """The lint gate's record for export.json (see :func:`lint_gate`)."""
    try:
        agent = _built_agent(agent_py, factory, notebook)
    except ExportError as e:
        if not allow:
            raise ExportError(
                f"Not exported: {e} Or pass allow_lint_errors=True (CLI: --allow-lint-errors) "
                "to export without the lint (recorded in export.json)."
            ) from e.__cause__
        return {"passed": False, "override": True, "error": str(e)}
    return lint_gate(agent, notebook, allow_lint_errors=allow)


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
        "parameters": dict(parameters),
        "passed": verdict.passed,
        "gate_failures": list(verdict.gate_failures),
        "override": override,
    }
    if override:  # timings vary run to run; leaving them out keeps re-exports identical
        record["metrics"] = {k: v for k, v in verdict.metrics.items() if "latency" not in k}
    return record


def _write_atomically(files: Mapping[str, str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for rel, text in sorted(files.items()):
            file = tmp / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(text.encode("utf-8"))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
) -> Path:
    """Export the cells tagged ``export`` of `notebook` as the package ``out/NAME/``.

    The cells must define ``build_agent()`` or a module-level ``agent``. Unless
    `validate` is False, the eval notebook (default ``evals/eval_agent.ipynb``) is
    run first with `eval_parameters`; when a gate fails nothing is written, unless
    `allow_failing_gates`, which is then recorded in ``NAME/export.json``. Before
    that, the agent is built from the cells and its tools are linted
    (:func:`~agentlab.tools.lint_tools`): lint errors refuse the export too, unless
    `allow_lint_errors` (recorded the same way).
    `parameters` override the notebook's parameters cell in the exported module.
    Tests are generated from `dataset` (default: the eval's ``dataset`` parameter).
    `validator` replaces the eval runner (see :mod:`agentlab.export.validation`).
    Returns the package directory.
    """
    _check_name(name)
    source = read_export_cells(notebook)
    nb_path = _display_path(source.path)
    overrides = dict(parameters or {})
    agent_py, factory = _agent_module(name, source, nb_path, overrides)
    params = {**_parameters(source.parameters), **overrides}
    target = Path(out) / name
    eval_params = dict(eval_parameters or {})
    with spec_files(base=source.path.parent) as specs:  # records the spec files loaded
        lint = _lint_record(agent_py, factory, nb_path, allow_lint_errors)
    spec_copies, spec_names = _packaged_specs(name, specs.loaded)

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
        "pyproject.toml": templates.PYPROJECT.format(
            name=name, dist=dist, version="0.1.0", notebook=nb_path
        ),
        "README.md": templates.README.format(name=name, dist=dist, notebook=nb_path, cells=cells),
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
    _write_atomically(files, target)
    return target
