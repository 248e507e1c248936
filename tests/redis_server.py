"""
A real, throw-away Redis server for tests (Debian's ``redis-server``).

``start_redis_server()`` installs the ``redis-server`` Debian package when the binary is
missing and the tests run as root (else it raises :class:`RedisUnavailable`, for a skip), then
starts a private server: loopback only, a free port, its own temp dir, no persistence. It is
stopped by its PID (``RedisServer.stop``); an ``atexit`` hook does the same if the session dies.
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

APT_TIMEOUT = 900
READY_TIMEOUT = 20.0
TEMP_PREFIX = "sfox-redis-"


class RedisUnavailable(Exception):
    """redis-server is missing and cannot be installed here (not root, apt-get failed)."""


def _log(message: str) -> None:
    print(f"[tests.redis] {message}", file=sys.stderr, flush=True)


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


def install_redis_server() -> str:
    """Apt-install ``redis-server`` if missing; return its path."""
    from tests.tiers import apt_install, can_install

    found = find_redis_server()
    if found:
        return found
    if not can_install():
        raise RedisUnavailable("redis-server is not installed and cannot be apt-installed (not root)")
    try:
        apt_install("redis-server", present=find_redis_server, timeout=APT_TIMEOUT)
    except (subprocess.SubprocessError, OSError) as err:
        raise RedisUnavailable(f"apt-get install redis-server failed: {err}") from err
    found = find_redis_server()
    if not found:
        raise RedisUnavailable("apt-get installed redis-server but no redis-server binary was found")
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
    """Install (if needed) and start a private server; the caller stops it."""
    server = RedisServer(install_redis_server())
    atexit.register(server.stop)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
