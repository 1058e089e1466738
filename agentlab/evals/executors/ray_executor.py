"""Run an eval's cases on a Ray cluster (``pip install 'agentlab-toolkit[ray]'``)::

    from agentlab.evals import AgentSpec, RayExecutor, evaluate_sync

    agent = AgentSpec("mypackage.agents:build_agent", model="openai:gpt-4.1-mini")
    report = evaluate_sync(agent, "evals/support_agent.jsonl",
                           executor=RayExecutor(address="HEAD:6379", workers=8))

The report is the one the local executor gives (same results, same metrics; ids and
timings aside, see :func:`~agentlab.evals.reproducible_report`).

**A cluster of several machines.** Start Ray on one machine, then join the others
(same Python, agentlab with the ``ray`` extra, and the module of the agent factory
installed on each)::

    head$   ray start --head --port=6379 --disable-usage-stats
    other$  ray start --address=HEAD:6379 --disable-usage-stats
    head$   agentlab eval run evals/eval_agent.ipynb --executor ray --address HEAD:6379

(from Python: ``executor=RayExecutor(address="HEAD:6379")``). ``ray stop`` on each
machine ends it. Without an address, :class:`RayExecutor` uses ``RAY_ADDRESS`` or
starts a Ray instance on this machine for the eval's duration; when this process
is already connected (``ray.init(...)``, e.g. with a ``runtime_env`` that ships your
code), it uses that connection.

**Where the traces go.** An :class:`~agentlab.agents.Agent` holds state of the
process that made it (circuit breakers, an open trace segment), so each worker
builds its own from an :class:`~agentlab.evals.AgentSpec`. It runs a batch of
consecutive cases (up to the eval's `concurrency` at once) and sends back their
results and every trace event of their runs; the driver (the process that called
``evaluate``) writes those events into its own workspace through its own trace
writer. So the cluster needs no shared filesystem: the workspace lives on the
driver's machine, and SQL there sees every case's run next to its result. Workers
writing their own segment files into the workspace (which the trace store allows)
would need that directory on a filesystem every machine mounts, and a batch that Ray
runs again after its worker died would leave its cases recorded twice; returned
events are written once, for the attempt that succeeded. The price: a batch's events
reach the disk when the batch is done (events are redacted on the worker before they
travel), so a driver that dies loses the runs of the batches in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from agentlab._context import EventSink
from agentlab._sync import run_sync
from agentlab.agents import Agent
from agentlab.errors import AgentlabError, MissingExtraError, RunError, UserError
from agentlab.evals.executors.cases import CaseBatch, evaluate_cases
from agentlab.evals.executors.spec import AgentSpec
from agentlab.evals.results import CaseResult
from agentlab.events import Event
from agentlab.redact import redact_event

__all__ = ["BATCHES_PER_WORKER", "RayExecutor", "import_ray", "run_batch"]

BATCHES_PER_WORKER = 4
"""Each worker gets about this many batches: enough to even out slow cases, few
enough that building the agent once per batch costs little."""
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the cluster's address to answer (``ray.init`` would retry
for minutes)."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`MissingExtraError` naming the extra."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "ray") from None
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """Runs the cases on a Ray cluster: `workers` batches at once (default: one per
    CPU of the cluster), each in a Ray worker process with the eval's `concurrency`.

    `address` is the cluster's ``HOST:PORT`` (what ``ray start --head`` printed),
    ``"auto"`` or a ``ray://`` client address; None: ``RAY_ADDRESS``, else a Ray
    instance started on this machine for the eval. See the module doc.
    """

    address: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise UserError(f"RayExecutor(workers={self.workers!r}): give 1 or more (or None)")

    async def run(
        self, agent: Agent, spec: AgentSpec | None, batch: CaseBatch, sink: EventSink
    ) -> list[CaseResult]:
        """Evaluate every case of `batch` on the cluster; write their events to `sink`."""
        if spec is None:
            raise UserError(
                "the Ray executor needs the agent as an AgentSpec (or a "
                "'package.module:factory' string), not an Agent: an Agent holds state of "
                "this process (circuit breakers, an open trace segment), so each Ray worker "
                "builds its own. E.g. evaluate(AgentSpec(build_support_agent, model, "
                "db_path=...), dataset, executor='ray')"
            )
        ray = import_ray()
        with _connected(ray, self.address):
            workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            task = ray.remote(num_cpus=1)(run_batch)
            traced = agent.tracer is not None
            workspace = getattr(sink, "workspace", None)
            slots = asyncio.Semaphore(workers)

            async def run_part(part: CaseBatch) -> list[CaseResult]:
                async with slots:
                    ref = task.remote(spec, part, traced, workspace)
                    try:
                        results, events = await ref
                    except asyncio.CancelledError:
                        ray.cancel(ref)
                        raise
                    except ray.exceptions.RayTaskError as exc:
                        if isinstance(exc.cause, AgentlabError):
                            raise exc.cause from exc  # as the local executor raises it
                        raise _batch_error(part, exc) from exc
                    except ray.exceptions.RayError as exc:
                        raise _batch_error(part, exc) from exc
                for event in events:
                    sink.emit(event)
                return results

            tasks = [
                asyncio.ensure_future(run_part(p))
                for p in batch.split(workers * BATCHES_PER_WORKER)
            ]
            try:
                parts = await asyncio.gather(*tasks)
            finally:  # a failed batch cancels the others
                for pending in tasks:
                    pending.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return [result for part in parts for result in part]


def run_batch(
    spec: AgentSpec, batch: CaseBatch, traced: bool, workspace: Path | None
) -> tuple[list[CaseResult], list[Event]]:
    """On a Ray worker: build the agent, evaluate `batch`, return the results and
    every event recorded (the driver writes them to its workspace)."""
    agent = spec.build()
    events = _EventCollector(workspace)
    agent.trace = events if traced else False
    if agent.tracer is not (events if traced else None):
        raise UserError(
            f"agent spec {spec!r} returned an agent whose trace was already in use; the "
            "factory must return a new agent that has not run yet"
        )
    results = run_sync(evaluate_cases(agent, batch, events))
    return results, events.events


class _EventCollector:
    """The trace of a worker's agent: keeps the events (redacted, as the trace writer
    would write them) for the driver. `workspace` is the driver's, so that history
    checks (loop alerts) read the same store as a local run does."""

    def __init__(self, workspace: Path | None) -> None:
        self.workspace = workspace
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(redact_event(event))


@contextmanager
def _connected(ray: Any, address: str | None) -> Iterator[None]:
    """Connected to the cluster at `address` for the block (an existing connection of
    this process is used as it is and left open)."""
    if ray.is_initialized():
        yield
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target not in (None, "auto"):
        _check_reachable(target)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no report to Ray's servers
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if target is None:
        options["include_dashboard"] = False
    quiet = _NotMainThreadNotice()
    logging.getLogger("ray._private.worker").addFilter(quiet)
    try:
        ray.init(address=target, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(
            f"cannot connect to the Ray cluster at {target or 'a new local instance'}: {exc}"
        ) from exc
    finally:
        logging.getLogger("ray._private.worker").removeFilter(quiet)
    try:
        yield
    finally:
        ray.shutdown()


class _NotMainThreadNotice(logging.Filter):
    """``ray.init`` outside the main thread (``evaluate_sync`` runs on agentlab's loop
    thread) warns that it sets no SIGTERM handler: not a problem here, so not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


def _check_reachable(address: str) -> None:
    """A clear error now rather than ``ray.init`` retrying for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"Ray address {address!r} is not understood; write HOST:PORT, as printed by "
            "`ray start --head` (or 'auto', or ray://HOST:PORT)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at {address} ({exc}); start one with `ray start --head "
            f"--port={port}` on {host}, or fix the address"
        ) from None


def _batch_error(part: CaseBatch, exc: Exception) -> RunError:
    first, last = part.cases[0].id, part.cases[-1].id
    return RunError(f"Ray could not evaluate cases {first}..{last}: {type(exc).__name__}: {exc}")
