"""The `agentlab` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

app = typer.Typer(
    help="agentlab: build, trace, evaluate and ship AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Workspace = Annotated[
    Path | None,
    typer.Option(help="Workspace directory (default: $AGENTLAB_WORKSPACE or ./.agentlab)."),
]


@app.command()
def demo(
    model: Annotated[str, typer.Option(help="Model to run the demo on.")] = "local:smollm2",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    workspace: Workspace = None,
) -> None:
    """Run the customer-support demo agent offline on the local model."""
    from agentlab.demo.runner import run_demo

    run_demo(model=model, workspace=workspace, json_output=json_output)


@app.command("serve-model")
def serve_model(
    model: Annotated[str, typer.Option(help="Model to serve.")] = "local:smollm2",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    threads: Annotated[int, typer.Option(help="CPU threads for the local model.")] = 1,
) -> None:
    """Serve a model as an OpenAI-compatible HTTP endpoint (/v1/chat/completions)."""
    from agentlab.serve.model_server import serve

    serve(model=model, host=host, port=port, threads=threads)


GatewayConfigArg = Annotated[
    Path | None,
    typer.Option("--config", help="The gateway config (YAML or TOML): its workspace and Redis."),
]


@app.command()
def serve(
    config: Annotated[Path, typer.Argument(help="The gateway config file (YAML or TOML).")],
    workers: Annotated[
        int | None, typer.Option(help="uvicorn worker processes (default: the config's).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address (default: the config's).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: the config's).")] = None,
) -> None:
    """Serve the agents of a gateway config behind API keys, quotas and request
    hygiene, on uvicorn with N workers."""
    import os

    import uvicorn

    from agentlab.serve.gateway.config import CONFIG_ENV, load_config
    from agentlab.serve.gateway.metrics import prepare_metrics_dir

    loaded = load_config(config)  # errors show here once, not in every worker
    if (workers or loaded.workers) > 1 and loaded.quota_storage.startswith("memory"):
        typer.echo(
            "agentlab: warning: rate limits and budgets are kept in memory, per worker; "
            "set redis_url in the config to share them across workers",
            err=True,
        )
    os.environ[CONFIG_ENV] = str(config.resolve())
    prepare_metrics_dir(loaded.workspace)  # before the workers start
    uvicorn.run(
        "agentlab.serve.gateway.app:create_gateway_app",
        factory=True,
        host=host or loaded.host,
        port=port if port is not None else loaded.port,
        workers=workers or loaded.workers,
        log_level="warning",
    )


keys_app = typer.Typer(help="The gateway's API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _key_store(config: Path | None, workspace: Path | None) -> Any:
    from agentlab.serve.gateway.config import load_config
    from agentlab.serve.gateway.keys import open_key_store
    from agentlab.workspace import resolve_workspace

    if config is None:
        return open_key_store(resolve_workspace(workspace))
    loaded = load_config(config)
    return open_key_store(resolve_workspace(workspace or loaded.workspace), loaded.redis_url)


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="The client the key is for.")],
    scope: Annotated[
        list[str], typer.Option(help="admin, metrics, runs:read, agents:* or agents:NAME.")
    ],
    group: Annotated[
        list[str] | None, typer.Option(help="A feature-flag group, e.g. internal.")
    ] = None,
    requests: Annotated[
        str | None, typer.Option(help="Request rate limits, e.g. '10/second;600/minute'.")
    ] = None,
    tokens_per_day: Annotated[int | None, typer.Option(help="Tokens per UTC day.")] = None,
    cost_per_day: Annotated[float | None, typer.Option(help="US dollars per UTC day.")] = None,
    config: GatewayConfigArg = None,
    workspace: Workspace = None,
) -> None:
    """Create an API key and print it (shown this once; only its hash is kept)."""
    from pydantic import ValidationError

    from agentlab.serve.gateway.quotas import Limits

    try:
        limits = Limits(requests=requests, tokens_per_day=tokens_per_day, cost_per_day=cost_per_day)
    except ValidationError as exc:
        raise typer.BadParameter(exc.errors()[0]["msg"]) from None
    record, key = _key_store(config, workspace).create(
        owner, scope, groups=group or [], limits=limits
    )
    typer.echo(f"created key {record.id} for {record.owner}: {', '.join(record.scopes)}")
    typer.echo(key)


@keys_app.command("list")
def keys_list(config: GatewayConfigArg = None, workspace: Workspace = None) -> None:
    """List the API keys (never their secrets), revoked ones included."""
    records = _key_store(config, workspace).list()
    if not records:
        typer.echo("no API keys")
    for r in records:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        limits = ", ".join(f"{k}={v}" for k, v in r.limits.model_dump().items() if v is not None)
        typer.echo(
            f"{r.id}  {r.owner}  {','.join(r.scopes)}  groups={','.join(r.groups) or '-'}  "
            f"{limits or 'default limits'}  created {r.created_at:%Y-%m-%d %H:%M}  {state}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `agentlab keys list`).")],
    config: GatewayConfigArg = None,
    workspace: Workspace = None,
) -> None:
    """Revoke an API key: the gateway refuses it from the next request on."""
    record = _key_store(config, workspace).revoke(key_id)
    typer.echo(f"revoked key {record.id} of {record.owner}")


class _EvalGroup(TyperGroup):
    """`agentlab eval NOTEBOOK ...` (any first argument that is not a subcommand) is
    short for `agentlab eval run NOTEBOOK ...`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: typer's own click
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_EvalGroup,
    help="Evaluate agents: run an eval notebook (`agentlab eval NOTEBOOK ...` is short "
    "for `agentlab eval run NOTEBOOK ...`) or compare two eval runs.",
    no_args_is_help=True,
)
app.add_typer(eval_app, name="eval")


@eval_app.command("run")
def eval_(
    notebook: Annotated[Path, typer.Argument(help="The parameterized eval notebook.")],
    param: Annotated[
        list[str] | None,
        typer.Option("-p", "--param", help="A notebook parameter, key=value (JSON or text)."),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(help="Run once per value: key=v1,v2 (combined with -p)."),
    ] = None,
    parallel: Annotated[int, typer.Option(help="Executions at once.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Where executed notebooks go (default: workspace).")
    ] = None,
    executor: Annotated[
        str,
        typer.Option(help="Where the cases run: local, or ray (the agentlab-toolkit[ray] extra)."),
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="The Ray cluster's HOST:PORT (with --executor ray).")
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Execute an eval notebook with papermill per parameter set, compare the runs,
    and exit 1 when a gate fails. With --executor ray, the notebook runs its cases on a
    Ray cluster (its parameters executor and ray_address)."""
    from agentlab.evals.notebook import eval_command, skip_iri_format_checker

    skip_iri_format_checker()
    params = [*(param or [])]
    if executor != "local":
        params.append(f"executor={executor}")
    if address:
        params.append(f"ray_address={address}")
    raise typer.Exit(
        eval_command(
            notebook, params, grid or [], parallel=parallel, out_dir=out, workspace=workspace
        )
    )


@eval_app.command("compare")
def eval_compare(
    run_a: Annotated[
        str,
        typer.Argument(
            metavar="RUN_A", help="The baseline eval run: its eval id, a unique prefix or its name."
        ),
    ],
    run_b: Annotated[
        str, typer.Argument(metavar="RUN_B", help="The eval run to compare with the baseline.")
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
    alpha: Annotated[float, typer.Option(help="Significance level of the verdict.")] = 0.05,
    workspace: Workspace = None,
) -> None:
    """Compare two eval runs: what changed case by case, and is it significant.

    Lists every case (passed->failed, failed->passed, steps, tool calls, cost,
    latency), every metric's delta, 95% paired bootstrap intervals for completion
    rate and cost per task, and McNemar's exact test on the flips. Differences are
    RUN_B - RUN_A; cases in one run only are listed and left out of the statistics.
    """
    import json

    from agentlab.evals.compare import compare_evals

    comparison = compare_evals(run_a, run_b, store=workspace, seed=seed, alpha=alpha)
    text = (
        json.dumps(comparison.to_dict(), indent=2, default=str) if json_output else str(comparison)
    )
    typer.echo(text)


@app.command()
def export(
    notebook: Annotated[Path, typer.Argument(help="The notebook whose export cells to package.")],
    name: Annotated[str, typer.Option(help="Package name (a Python identifier).")],
    out: Annotated[Path, typer.Option(help="Where the package directory goes.")] = Path("exports"),
    eval_notebook: Annotated[
        Path | None,
        typer.Option(help="Eval notebook whose gates must pass (default: evals/eval_agent.ipynb)."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("-p", "--param", help="An eval notebook parameter, key=value."),
    ] = None,
    allow_failing_gates: Annotated[
        bool, typer.Option(help="Export even if a gate fails (recorded in export.json).")
    ] = False,
    allow_lint_errors: Annotated[
        bool, typer.Option(help="Export even if the tools have lint errors (recorded).")
    ] = False,
    wheelhouse: Annotated[
        bool,
        typer.Option(
            help="Also write wheelhouse/ (every wheel, agentlab's own included), "
            "requirements.lock (hashes) and a Dockerfile, for installs with no network."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(help="Replace OUT/NAME even if it is not an earlier export of NAME."),
    ] = False,
) -> None:
    """Export a validated notebook as an installable agent package with an HTTP app."""
    from agentlab.evals.notebook import skip_iri_format_checker
    from agentlab.evals.notebook_params import parameter_sets
    from agentlab.export import export_notebook

    skip_iri_format_checker()

    (parameters,) = parameter_sets(param or [], [])
    path = export_notebook(
        notebook,
        name=name,
        out=out,
        eval_notebook=eval_notebook,
        eval_parameters=parameters,
        allow_failing_gates=allow_failing_gates,
        allow_lint_errors=allow_lint_errors,
        wheelhouse=wheelhouse,
        force=force,
        progress=lambda line: typer.echo(line, err=True),
    )
    typer.echo(f"exported package: {path}")


@app.command()
def lint(
    target: Annotated[
        str,
        typer.Argument(
            help="'package.module:name' naming an agent, a list of tools or a function "
            "returning one, or a notebook whose cells tagged 'export' build the agent."
        ),
    ],
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Skip a rule: RULE everywhere, or RULE=tool1,tool2 for some tools."),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(help="Set a threshold: NAME=NUMBER, e.g. max_tools_warning=10."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of text.")
    ] = False,
) -> None:
    """Lint a tool set as the model sees it (names, descriptions, parameter schemas,
    overlaps, how many); exit 1 when there are errors."""
    import inspect
    import json

    from agentlab.tools.lint import lint_options, lint_tools

    options = lint_options(ignore or [], threshold or [])
    if target.endswith(".ipynb") or Path(target).is_file():
        from agentlab.evals.notebook import skip_iri_format_checker
        from agentlab.export.exporter import lint_notebook

        skip_iri_format_checker()
        report = lint_notebook(target, **options)
    else:
        found = _imported(target)
        if callable(found) and not hasattr(found, "tools") and not hasattr(found, "definition"):
            try:  # a factory, like `runs resume --agent` takes
                inspect.signature(found).bind()
            except TypeError:
                raise typer.BadParameter(
                    f"{target} takes arguments: name an agent, a list of tools, or a "
                    "function that builds one without arguments"
                ) from None
            found = found()
        report = lint_tools(found, **options)
    typer.echo(json.dumps(report.to_dict(), indent=2) if json_output else str(report))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def sql(
    query: Annotated[
        str, typer.Argument(help="SQL over the runs, model_calls and tool_calls tables.")
    ],
    workspace: Workspace = None,
) -> None:
    """Query the trace store with SQL and print the rows."""
    from agentlab.tracing import TraceStore

    typer.echo(TraceStore(workspace).df(query).to_string(index=False))


runs_app = typer.Typer(
    help="Runs in the trace store: list paused and interrupted ones, resume them."
)
app.add_typer(runs_app, name="runs")


@runs_app.command("paused")
def runs_paused(workspace: Workspace = None) -> None:
    """List the runs that wait for a person, with what they wait for."""
    _list_runs(workspace, "paused", "pending->>'question'")


@runs_app.command("interrupted")
def runs_interrupted(workspace: Workspace = None) -> None:
    """List the runs whose process stopped before they finished (killed, crashed):
    `agentlab runs resume RUN_ID --agent ...` carries each on from its last step."""
    _list_runs(workspace, "interrupted", "explanation")


def _list_runs(workspace: Path | None, status: str, detail: str) -> None:
    """Print the runs with `status`, oldest first, each with the SQL column `detail`."""
    from agentlab.tracing import TraceStore

    rows = TraceStore(workspace).sql(
        f"SELECT run_id, agent, {detail} FROM runs WHERE status = ? ORDER BY started_at",
        [status],
    )
    if not rows:
        typer.echo(f"no {status} runs")
    for run_id, agent, text in rows:
        typer.echo(f"{run_id} {agent}: {text}")


@runs_app.command("resume")
def runs_resume(
    run_id: Annotated[str, typer.Argument(help="The paused or interrupted run's id.")],
    agent: Annotated[
        str, typer.Option(help="The agent's factory, 'package.module:function' (no arguments).")
    ],
    approve: Annotated[
        bool | None,
        typer.Option(
            "--approve/--deny",
            help="Approve or decline the pending call (an escalated run: retry or fail).",
        ),
    ] = None,
    note: Annotated[str | None, typer.Option(help="A note for the model.")] = None,
    answer: Annotated[
        str | None, typer.Option(help="An escalated run: the answer for the user.")
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Resume a paused run with a decision on the call it waits for, or an interrupted
    run (its process died) from its last recorded step; then finish it."""
    from agentlab.agents import Agent
    from agentlab.tracing import TraceStore

    built = _imported(agent)()
    if not isinstance(built, Agent):
        raise typer.BadParameter(f"{agent}() returned {type(built).__name__}, not an Agent")
    result = built.resume_sync(
        run_id, approve=approve, note=note, answer=answer, store=TraceStore(workspace)
    )
    typer.echo(f"run {result.run_id}: {result.status}")
    typer.echo(str(result))


@app.command()
def alerts(
    limit: Annotated[int, typer.Option(help="How many of the latest alerts.")] = 20,
    workspace: Workspace = None,
) -> None:
    """List the latest alerts: the same tool call repeated, no progress, steps or cost
    far above the agent's own history."""
    from agentlab.tracing import TraceStore

    rows = TraceStore(workspace).sql(
        "SELECT a.started_at, a.run_id, r.agent, a.step, a.alert, a.stopped, a.message "
        "FROM alerts a LEFT JOIN runs r USING (run_id) ORDER BY a.started_at DESC LIMIT ?",
        [limit],
    )
    if not rows:
        typer.echo("no alerts")
    for at, run_id, agent, step, alert, stopped, message in rows:
        action = " (run stopped)" if stopped else ""
        typer.echo(f"{at:%Y-%m-%d %H:%M:%S} {run_id[:8]} {agent} step {step}: {alert}{action}")
        typer.echo(f"    {message}")


traces_app = typer.Typer(help="The trace store's upkeep: prune old runs, compact the file.")
app.add_typer(traces_app, name="traces")


@traces_app.command("prune")
def traces_prune(
    older_than: Annotated[
        str, typer.Option(help="Delete runs older than this: 30d, 7d, 12h, 90m, 2w.")
    ],
    dry_run: Annotated[
        bool, typer.Option(help="Only count what would be deleted; change nothing.")
    ] = False,
    workspace: Workspace = None,
) -> None:
    """Delete old runs with all their rows (running and paused runs stay), then
    compact the store's file."""
    from agentlab.errors import UserError
    from agentlab.tracing import TraceStore
    from agentlab.tracing.retention import parse_age

    try:
        age = parse_age(older_than)
    except UserError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--older-than'") from None
    typer.echo(str(TraceStore(workspace, lock_timeout=600).prune(age, dry_run=dry_run)))


@traces_app.command("compact")
def traces_compact(workspace: Workspace = None) -> None:
    """Rewrite the store's file without the space deleted rows left behind."""
    from agentlab.tracing import TraceStore

    typer.echo(str(TraceStore(workspace, lock_timeout=600).compact()))


gateway_app = typer.Typer(help="The gateway's records: usage and cost per client.")
app.add_typer(gateway_app, name="gateway")


@gateway_app.command("report")
def gateway_report(
    by: Annotated[
        str,
        typer.Option(help="Group by, comma-separated: client, key, agent, version, route, day."),
    ] = "client,agent,day",
    since: Annotated[
        str, typer.Option(help="Requests of this last period: 7d, 24h, 2w, 90m.")
    ] = "7d",
    workspace: Workspace = None,
) -> None:
    """Print requests, errors, tokens, cost and latency per client, agent and day."""
    from datetime import UTC, datetime

    from agentlab.errors import UserError
    from agentlab.serve.gateway.usage import usage_by, usage_table
    from agentlab.tracing import TraceStore
    from agentlab.tracing.retention import parse_age

    dimensions = [d.strip() for d in by.split(",") if d.strip()]
    try:
        start = datetime.now(UTC) - parse_age(since)
    except UserError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--since'") from None
    try:
        rows = usage_by(TraceStore(workspace), dimensions, since=start)
    except UserError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--by'") from None
    typer.echo(f"gateway usage since {start:%Y-%m-%d %H:%M} UTC")
    typer.echo(usage_table(rows, dimensions))


def _imported(spec: str) -> Any:
    """The object ``package.module:name`` names (the working directory is importable)."""
    import importlib
    import os
    import sys

    module, _, name = spec.partition(":")
    if not module or not name:
        raise typer.BadParameter(f"{spec!r}: write it as 'package.module:function'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot import {spec!r}: {exc}") from exc


def main() -> None:
    """Entry point of the `agentlab` script: agentlab's errors print as one clear
    message (exit status 2), not a traceback."""
    from agentlab.errors import AgentlabError

    try:
        app(prog_name="agentlab")
    except AgentlabError as exc:
        typer.echo(f"agentlab: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
