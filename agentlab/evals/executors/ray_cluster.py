"""A Ray cluster of several nodes on this machine, for tests, benchmarks and trying
:class:`~agentlab.evals.RayExecutor` without a real cluster::

    with LocalRayCluster(nodes=2) as cluster:
        report = evaluate_sync(spec, dataset, executor=RayExecutor(cluster.address))

Each node is a ``ray start --block`` process in its own session: :meth:`stop` ends
it and every process it started, by process id (``ray stop`` would end every Ray
process of the machine, other people's too). The nodes listen on a loopback
address, by default ``127.0.0.2``: Ray replaces ``127.0.0.1`` and ``localhost`` with
the machine's network address, so they would not stay on loopback. Usage reporting
is off and the dashboard is not started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agentlab.errors import RunError, UserError
from agentlab.evals.executors.ray_executor import import_ray

__all__ = ["LocalRayCluster"]

_STARTED = "Ray runtime started"
_NODE_PORTS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


class LocalRayCluster:
    """`nodes` Ray nodes with `cpus_per_node` CPUs each, on loopback address `host`.

    `timeout` bounds the start of each node, in seconds. Ray keeps its session files
    (sockets, logs) in a new temporary directory, removed by :meth:`stop`.
    """

    def __init__(
        self,
        nodes: int = 2,
        *,
        cpus_per_node: int = 1,
        host: str = "127.0.0.2",
        timeout: float = 120.0,
    ) -> None:
        if nodes < 1 or cpus_per_node < 1:
            raise UserError(
                f"LocalRayCluster(nodes={nodes}, cpus_per_node={cpus_per_node}): each must be "
                "at least 1"
            )
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.host = host
        self.timeout = timeout
        self.address = ""
        self._processes: list[subprocess.Popen[bytes]] = []
        self._temp_dir: Path | None = None

    def start(self) -> Self:
        """Start the head node, then the others; return once each says it runs."""
        import_ray()  # the clear error when the extra is missing
        self._temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: sockets
        ports = _free_ports(self.host, 2 + self.nodes * len(_NODE_PORTS))
        gcs_port = ports.pop()
        self.address = f"{self.host}:{gcs_port}"
        try:
            head = ["--head", f"--port={gcs_port}", "--include-dashboard=false"]
            self._start_node("head", [*head, f"--dashboard-port={ports.pop()}"], ports)
            for index in range(1, self.nodes):
                self._start_node(f"node{index}", [f"--address={self.address}"], ports)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End every node and the processes they started; remove the session files."""
        import psutil  # ray brings its own copy

        for process in reversed(self._processes):
            tree = _tree(process)
            for signum in (signal.SIGTERM, signal.SIGKILL):  # the second for what is left
                for member in tree:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        member.send_signal(signum)
                _, tree = psutil.wait_procs(tree, timeout=5)
            process.wait(timeout=5)
        self._processes.clear()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def pids(self) -> list[int]:
        """The process ids of the nodes and of every process they started."""
        return [member.pid for process in self._processes for member in _tree(process)]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalRayCluster({self.address or 'not started'}, nodes={self.nodes})"

    def _start_node(self, name: str, arguments: list[str], ports: list[int]) -> None:
        """Start node `name`, taking its ports from `ports`."""
        assert self._temp_dir is not None
        log = self._temp_dir / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--block",
            *arguments,
            f"--node-ip-address={self.host}",
            f"--num-cpus={self.cpus_per_node}",
            "--disable-usage-stats",
            f"--temp-dir={self._temp_dir}",
            *(f"--{option}={ports.pop()}" for option in _NODE_PORTS),
        ]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._processes.append(process)
        deadline = time.monotonic() + self.timeout
        while _STARTED not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                state = f"exited with {process.returncode}" if process.poll() else "timed out"
                raise RunError(f"Ray node {name} did not start ({state}); its log ends:\n{tail}")
            time.sleep(0.2)


def _free_ports(host: str, count: int) -> list[int]:
    """`count` different ports free on `host` (all held open while they are chosen, so
    the system cannot hand out one twice; Ray refuses a port given to two components)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in probes]


def _tree(process: subprocess.Popen[bytes]) -> list[Any]:
    """`process` and its descendants that are alive, as ``psutil.Process`` objects."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
