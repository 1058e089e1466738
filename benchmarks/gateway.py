"""The gateway's throughput and latency against the bare agent app, on 127.0.0.1.

    python benchmarks/gateway.py [--workers 2] [--concurrency 32] [--duration 10] [--profile]

A scripted agent (an instant :class:`~agentlab.models.FunctionModel` answer,
``tests/gateway_fixtures/agents.py:echo``) is served

* (a) by the bare agent app (:func:`agentlab.serve.agent_app.create_agent_app`: no
  auth, no limits; its runs traced), and
* (b) through the full gateway (``agentlab serve``: API key, request-rate limit,
  token and cost budgets reserved and settled, usage records, tracing, metrics) with
  the rate limits, budgets and keys on a real ``redis-server`` (tests/_redis.py), as
  several workers need,

both with uvicorn and `--workers` worker processes. The load generator is another
process (httpx, asyncio, one connection per concurrent client) that keeps
`--concurrency` requests in flight for `--duration` seconds after a warm-up and
records each request's latency. Its own cost is measured apart: its CPU time per
request, and the rate it reaches against a trivial endpoint (a server that answers
every request with fixed bytes), which bounds what it can measure.

With ``--profile``, py-spy samples one gateway worker during a second run and the
top functions (share of the worker's samples, inclusive) are printed.

The last line is JSON: ``req_per_s``, ``p50_ms``, ``p99_ms`` (gateway),
``bare_req_per_s``, ``bare_p50_ms``, ``bare_p99_ms``, ``overhead_ms_p50`` (gateway p50
minus bare p50, both at `--concurrency`), ``low_load_overhead_ms_p50`` (the same at
concurrency 1), ``loadgen_cpu_ms_per_req``, ``loadgen_max_req_per_s``, ``workers``,
``concurrency``, ``duration_s``, ``errors``.

The module also serves the tests (tests/test_gateway_fuzz.py,
tests/test_gateway_overload.py): :func:`serve_gateway` starts ``agentlab serve`` on a
config and API keys and stops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:  # the test harness: _http, _redis
    sys.path.insert(0, str(TESTS))

from _http import free_port, running_process  # noqa: E402

AGENT = "gateway_fixtures.agents:echo"
RUN_BODY = b'{"input": "hi"}'
START_TIMEOUT_S = 60.0


def _env(workspace: Path) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(TESTS), str(Path(__file__).parent)])
    return {**os.environ, "PYTHONPATH": path, "AGENTLAB_WORKSPACE": str(workspace)}


@dataclass
class Server:
    """A server process on 127.0.0.1 and what a client needs to call it."""

    url: str
    process: subprocess.Popen[bytes]
    workspace: Path
    keys: dict[str, str] = field(default_factory=dict)

    def headers(self, key: str | None) -> dict[str, str]:
        """The auth header of the key named `key` (none for None)."""
        return {"Authorization": f"Bearer {self.keys[key]}"} if key else {}

    def workers(self) -> list[int]:
        """The pids of uvicorn's worker processes (the process itself with one)."""
        import psutil

        children = psutil.Process(self.process.pid).children(recursive=True)
        spawned = [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]
        return spawned or [self.process.pid]


@contextmanager
def _running(args: list[str], url: str, workspace: Path, cwd: Path) -> Iterator[Server]:
    """Start `args`, wait until ``url/healthz`` answers 200, stop it after."""
    log = cwd / f"server-{url.rsplit(':', 1)[1]}.log"
    env = _env(workspace)
    with running_process(
        args, url + "/healthz", env=env, cwd=cwd, log=log, timeout=START_TIMEOUT_S
    ) as process:
        yield Server(url, process, workspace)


@contextmanager
def serve_gateway(
    folder: Path,
    config: dict[str, Any],
    keys: dict[str, dict[str, Any]],
    *,
    workers: int = 2,
) -> Iterator[Server]:
    """``agentlab serve`` on 127.0.0.1 with `config` (the YAML's mapping; its workspace
    defaults to ``folder/ws``) and the API keys `keys` (name -> ``{"owner", "scopes",
    "limits"?}``) created in its key store; `server.keys` maps each name to its key."""
    from agentlab.serve.gateway.config import load_config
    from agentlab.serve.gateway.keys import open_key_store
    from agentlab.serve.gateway.quotas import Limits

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump({"workspace": "ws", **config}))
    loaded = load_config(path)
    workspace = Path(loaded.workspace or folder / "ws")
    workspace.mkdir(parents=True, exist_ok=True)
    store = open_key_store(workspace, loaded.redis_url)
    made = {
        name: store.create(spec["owner"], spec["scopes"], limits=Limits(**spec.get("limits", {})))[
            1
        ]
        for name, spec in keys.items()
    }
    port = free_port()
    args = [sys.executable, "-m", "agentlab.cli", "serve", str(path)]
    args += ["--port", str(port), "--workers", str(workers)]
    with _running(args, f"http://127.0.0.1:{port}", workspace, folder) as server:
        server.keys = made
        yield server


def bare_app() -> Any:
    """The bare agent app serving the scripted agent (a uvicorn factory)."""
    import importlib

    from agentlab.serve.agent_app import create_agent_app

    module, _, name = AGENT.partition(":")
    return create_agent_app(getattr(importlib.import_module(module), name))


@contextmanager
def serve_bare(folder: Path, *, workers: int = 2) -> Iterator[Server]:
    """The bare agent app (:func:`bare_app`) on uvicorn with `workers` workers."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "gateway:bare_app", "--factory"]
    args += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    with _running(args, f"http://127.0.0.1:{port}", folder / "bare-ws", folder) as server:
        yield server


# -- the load generator (a process of its own) -------------------------------------


async def _load(
    url: str, headers: dict[str, str], body: bytes | None, concurrency: int, duration: float
) -> dict[str, Any]:
    """Keep `concurrency` requests in flight on `url` for `duration` s after a
    warm-up; POST `body` (GET when None)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    failures = 0
    method = "GET" if body is None else "POST"
    headers = {**headers, "Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one() -> tuple[int, float]:
            started = time.perf_counter()
            response = await client.request(method, url, content=body, headers=headers)
            return response.status_code, time.perf_counter() - started

        async def worker(until: float, record: bool) -> None:
            nonlocal failures
            while time.perf_counter() < until:
                try:
                    status, seconds = await one()
                except httpx.HTTPError:
                    failures += record
                    continue
                if record:
                    statuses[status] += 1
                    latencies.append(seconds)

        warm = time.perf_counter() + min(2.0, duration / 4)
        await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(started + duration, True) for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    latencies.sort()
    done = len(latencies)

    def pct(p: float) -> float:
        return round(latencies[min(done - 1, int(p * done))] * 1000, 2) if done else 0.0

    return {
        "requests": done,
        "req_per_s": round(done / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "non_200": sum(n for s, n in statuses.items() if s != 200),
        "failures": failures,
        "cpu_ms_per_req": round(cpu * 1000 / max(done, 1), 3),
    }


WRK_SCRIPT = """
wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK %d %d %d %d %d %d\\n", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def _wrk(
    url: str, headers: dict[str, str], body: bytes | None, concurrency: int, duration: float
) -> dict[str, Any]:
    """``wrk`` keeping `concurrency` connections busy on `url` (two threads: each
    opens its connections at once, so they spread over uvicorn's workers; one
    thread's burst lands mostly on one worker)."""
    lua = WRK_SCRIPT.format(
        method="GET" if body is None else "POST",
        body=json.dumps(body.decode()) if body is not None else "nil",
        headers="\n".join(
            f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()
        ),
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua)
        script.flush()

        def wrk(seconds: float) -> list[int]:
            threads = min(2, concurrency)
            args = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
            args += ["--timeout", "30s", "-s", script.name, url]
            out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
            lines = [x for x in out.stdout.splitlines() if x.startswith("WRK ")]
            if not lines:
                raise RuntimeError(f"wrk failed: {out.stdout[-500:]}{out.stderr[-500:]}")
            line = lines[0]
            return [int(v) for v in line.split()[1:]]

        wrk(min(2.0, duration / 4))  # warm-up
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done, micros, p50, p99, bad_status, failures = wrk(duration)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {
        "requests": done,
        "req_per_s": round(done / (micros / 1e6), 1),
        "p50_ms": round(p50 / 1000, 2),
        "p99_ms": round(p99 / 1000, 2),
        "non_200": bad_status,
        "failures": failures,
        "cpu_ms_per_req": round(cpu * 1000 / max(done, 1), 3),
    }


def run_load(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = RUN_BODY,
    concurrency: int,
    duration: float,
) -> dict[str, Any]:
    """Load `url` from another process (so its CPU is its own): ``wrk`` where it is
    installed (Debian's ``wrk`` package), else :func:`_load` (httpx; far costlier per
    request, so it bounds the rates it can show lower); its figures."""
    if shutil.which("wrk"):
        return _wrk(url, headers or {}, body, concurrency, duration)
    args = [sys.executable, __file__, "--loadgen", url, "--concurrency", str(concurrency)]
    args += ["--duration", str(duration), "--headers", json.dumps(headers or {})]
    if body is not None:
        args += ["--body", body.decode()]
    done = subprocess.run(args, capture_output=True, timeout=duration + 120, check=True)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


class _Fixed(asyncio.Protocol):
    """The trivial endpoint: answers each request head with fixed bytes."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    def connection_made(self, transport: Any) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:  # GET requests: no body
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(self.ANSWER)


def _serve_fixed(port: int, seconds: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Fixed, "127.0.0.1", port)
        async with server:
            await asyncio.sleep(seconds)

    asyncio.run(main())


def loadgen_ceiling(concurrency: int, duration: float) -> dict[str, Any]:
    """The load generator against the trivial endpoint (its own ceiling)."""
    port = free_port()
    args = [sys.executable, __file__, "--fixed", str(port), "--duration", str(duration + 30)]
    server = subprocess.Popen(args)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return run_load(
            f"http://127.0.0.1:{port}/", body=None, concurrency=concurrency, duration=duration
        )
    finally:
        server.kill()
        server.wait(timeout=5)


# -- profile --------------------------------------------------------------------------


def profile_worker(pid: int, seconds: float, folder: Path, top: int = 30) -> list[str]:
    """Sample process `pid` with py-spy for `seconds`; the `top` functions of the
    gateway, Redis and metrics clients and socket writes by their inclusive share of
    the samples."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return ["(py-spy is not installed: pip install py-spy)"]
    out = folder / f"profile-{pid}.txt"
    args = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    args += ["--format", "raw", "--output", str(out), "--nonblocking", "--rate", "200"]
    subprocess.run(args, capture_output=True, timeout=seconds + 60, check=False)
    if not out.exists():
        return ["(py-spy recorded nothing: may this user ptrace the worker?)"]
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        frames = {_short(f) for f in stack.split(";") if any(w in f for w in _WHERE_TIME_GOES)}
        for frame in frames:
            inclusive[frame] += int(count)
    return [f"{n * 100 / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]


_WHERE_TIME_GOES = (
    "(agentlab/",
    "(redis/",
    "(limits/",
    "(prometheus_client/",
    "selector_events.py",
)
"""The frames worth showing: the gateway's own code, its Redis and metrics clients,
socket writes (the middleware and event-loop frames around them are in every sample)."""


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rsplit(':', 1)[0]).name})"


# -- the benchmark --------------------------------------------------------------------


def gateway_config(redis_url: str, workers: int) -> dict[str, Any]:
    """The full gateway: limits on the key and the agent, budgets reserved and
    settled per run, rate limits and keys on Redis."""
    return {
        "workers": workers,
        "redis_url": redis_url,
        "default_key_limits": {
            "requests": "1000000/minute",
            "tokens_per_day": 10**12,
            "cost_per_day": 10**6,
        },
        "reserve_cost_per_run": 0.01,
        "reserve_tokens_per_run": 1000,
        "hygiene": {"max_concurrent_runs": 256},
        "agents": {
            "echo": {
                "limits": {"requests": "1000000/minute"},
                "versions": [{"version": "1", "factory": AGENT}],
            }
        },
    }


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--profile", action="store_true", help="py-spy one gateway worker")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    parser.add_argument("--headers", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--fixed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        body = args.body.encode() if args.body is not None else None
        result = asyncio.run(
            _load(args.loadgen, json.loads(args.headers), body, args.concurrency, args.duration)
        )
        print(json.dumps(result))
        return
    if args.fixed:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        _serve_fixed(args.fixed, args.duration)
        return
    print(json.dumps(benchmark(args.workers, args.concurrency, args.duration, args.profile)))


def _server_cpu(
    server: Server, url: str, headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, Any]:
    """:func:`run_load`'s figures plus the CPU time the server's workers spent per
    request (the warm-up's share included, so a slight overestimate)."""
    import psutil

    workers = [psutil.Process(pid) for pid in server.workers()]

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in workers)

    before = cpu()
    figures = run_load(url, headers=headers, concurrency=concurrency, duration=duration)
    spent = cpu() - before
    return {
        **figures,
        "server_cpu_ms_per_req": round(spent * 1000 / max(figures["requests"], 1), 3),
    }


def _log_profile(
    server: Server,
    url: str,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    folder: Path,
) -> None:
    """Profile one worker of `server` while the load generator runs; log the top."""
    pid = server.workers()[0]
    _log(f"profile of gateway worker {pid} under load (py-spy; inclusive share of samples):")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        load = pool.submit(
            run_load, url, headers=headers, concurrency=concurrency, duration=duration
        )
        time.sleep(min(2.0, duration / 4) + 1)  # past the warm-up
        for line in profile_worker(pid, max(1.0, duration - 3), folder):
            _log("  " + line)
        load.result(timeout=duration + 120)


def benchmark(workers: int, concurrency: int, duration: float, profile: bool) -> dict[str, Any]:
    """Every measurement; the figures of the final JSON line."""
    from _redis import RedisServer

    c, d = concurrency, duration
    ceiling = loadgen_ceiling(c, d)
    _log(f"load generator vs a trivial endpoint: {ceiling}")
    with tempfile.TemporaryDirectory(prefix="agentlab-gw-bench-") as tmp:
        folder = Path(tmp)
        with serve_bare(folder, workers=workers) as bare:
            run_url = bare.url + "/v1/runs"
            bare_low = run_load(run_url, concurrency=1, duration=min(d, 5))
            bare_full = _server_cpu(bare, run_url, {}, c, d)
        _log(f"bare agent app: c=1 {bare_low}; c={c} {bare_full}")
        with (
            RedisServer() as redis,
            serve_gateway(
                folder / "gw",
                gateway_config(redis.url, workers),
                {"bench": {"owner": "bench", "scopes": ["agents:echo"]}},
                workers=workers,
            ) as gateway,
        ):
            run_url = gateway.url + "/v1/agents/echo/runs"
            auth = gateway.headers("bench")
            low = run_load(run_url, headers=auth, concurrency=1, duration=min(d, 5))
            full = _server_cpu(gateway, run_url, auth, c, d)
            _log(f"gateway: c=1 {low}; c={c} {full}")
            if profile:
                _log_profile(gateway, run_url, auth, c, d, folder)
    errors = full["non_200"] + full["failures"]
    return {
        "req_per_s": full["req_per_s"],
        "p50_ms": full["p50_ms"],
        "p99_ms": full["p99_ms"],
        "bare_req_per_s": bare_full["req_per_s"],
        "bare_p50_ms": bare_full["p50_ms"],
        "bare_p99_ms": bare_full["p99_ms"],
        "overhead_ms_p50": round(full["p50_ms"] - bare_full["p50_ms"], 2),
        "low_load_overhead_ms_p50": round(low["p50_ms"] - bare_low["p50_ms"], 2),
        "server_cpu_ms_per_req": full["server_cpu_ms_per_req"],
        "bare_server_cpu_ms_per_req": bare_full["server_cpu_ms_per_req"],
        "loadgen_cpu_ms_per_req": full["cpu_ms_per_req"],
        "loadgen_max_req_per_s": ceiling["req_per_s"],
        "loadgen": "wrk" if shutil.which("wrk") else "httpx",
        "workers": workers,
        "concurrency": c,
        "duration_s": d,
        "errors": errors,
    }


if __name__ == "__main__":
    main()
