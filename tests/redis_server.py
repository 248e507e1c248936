"""
A real, throw-away Redis server for tests (Debian's ``redis-server``).

``start_redis_server()`` starts a private server of the ``redis-server`` Debian package
(installed by ``make services``; without it, it raises :class:`RedisUnavailable`, for a skip):
loopback only, a free port, its own temp dir, no persistence. It is stopped by its PID
(``RedisServer.stop``); an ``atexit`` hook does the same if the session dies.
"""

from __future__ import annotations

import atexit
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

from tests.tiers import free_port

READY_TIMEOUT = 20.0
TEMP_PREFIX = "sfox-redis-"


class RedisUnavailable(Exception):
    """redis-server is not installed (``make services`` installs it)."""


def _log(message: str) -> None:
    print(f"[tests.redis] {message}", file=sys.stderr, flush=True)


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def require_redis_server() -> str:
    """The path of ``redis-server``; :class:`RedisUnavailable` when it is not installed."""
    found = find_redis_server()
    if not found:
        raise RedisUnavailable("Redis (redis-server) is not installed: run 'make services'")
    return found


class RedisServer:
    """One private redis-server process on 127.0.0.1:``port`` with its own temp dir."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.base_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.base_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.base_dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, cwd=self.base_dir)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    _log(f"redis-server ready on 127.0.0.1:{self.port} (pid {self.proc.pid})")
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {READY_TIMEOUT:.0f} s")

    def log_tail(self) -> str:
        try:
            return (self.base_dir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server by its PID (TERM, then KILL) and remove its temp dir. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(self.base_dir, ignore_errors=True)


def start_redis_server() -> RedisServer:
    """Start a private server; the caller stops it."""
    server = RedisServer(require_redis_server())
    atexit.register(server.stop)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
