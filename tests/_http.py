"""Helpers for tests (and benchmarks) that run real HTTP servers on loopback: a free
port, an ASGI app in a thread, a server process; and the loader of the benchmark
modules whose servers and figures the tests reuse."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import httpx

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, *, timeout: float = 20.0) -> Iterator[str]:
    """Run `app` with uvicorn in a thread; yield its ``/v1`` base URL; stop it after."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on port {port} within {timeout} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_process(
    args: Sequence[str],
    ready_url: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `args` and yield the process once GET `ready_url` answers 200; stop it
    after (terminate; kill after 15 s).

    Its stdout and stderr go to the file `log` (a temporary file when None). When the
    process exits, or `timeout` seconds pass, before it is ready, it is stopped and a
    RuntimeError carries the tail of its output.
    """
    with open(log, "w+b") if log is not None else tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            list(args),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(process, ready_url, timeout, out)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float, out: IO[bytes]) -> None:
    """Poll `url` until it answers 200; raise with the tail of `out` when `process`
    exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        code = process.poll()
        if code is not None or time.monotonic() > deadline:
            size = os.fstat(out.fileno()).st_size  # pread: the offset is the child's too
            tail = os.pread(out.fileno(), 3000, max(0, size - 3000)).decode(errors="replace")
            why = f"exited with code {code}" if code is not None else f"not ready in {timeout:g} s"
            raise RuntimeError(f"{process.args!r} {why} (polling {url}); its output:\n{tail}")
        time.sleep(0.1)


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``<name>_bench`` (loaded once), for the
    tests that reuse a benchmark's servers or code."""
    module_name = f"{name}_bench"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
