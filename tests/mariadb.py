"""
A real, throw-away MariaDB server for tests (Debian, run as root).

``ensure_mariadb_server()`` starts a *private* server of Debian's ``mariadb-server`` (installed
by ``make services``): its own data directory under a temp dir (``mariadb-install-db``),
run as the ``mysql`` OS user, listening on 127.0.0.1 on a free port with its socket inside the
temp dir. Debian's own server (``/var/lib/mysql``, port 3306) is never touched. It returns a
dict of host, port, user ``sfox`` (password ``sfox``) and database ``warehouse``; the user may
create other databases (a "schema" on MariaDB) too.

``stop_mariadb_server()`` stops the server by its PID and removes the temp dir; an ``atexit``
hook does the same if the session dies first.
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

USER = "sfox"
PASSWORD = "sfox"
DATABASE = "warehouse"
OS_USER = "mysql"
TEMP_PREFIX = "sfox-mariadb-"
READY_TIMEOUT = 60.0

_server: MariaDBServer | None = None


def _log(message: str) -> None:
    print(f"[tests.mariadb] {message}", file=sys.stderr, flush=True)


def find_mariadbd() -> str | None:
    """The server binary, if installed."""
    for name in ("mariadbd", "mysqld"):
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found and shutil.which("mariadb-install-db"):
            return found
    return None


class MariaDBServer:
    """One private server: ``<base>/data``, ``<base>/mysqld.sock``, ``<base>/server.log``."""

    def __init__(self, mariadbd: str) -> None:
        self.mariadbd = mariadbd
        self.base_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        self.data_dir = self.base_dir / "data"
        self.socket = self.base_dir / "mysqld.sock"
        self.log_file = self.base_dir / "server.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def params(self) -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": USER,
            "password": PASSWORD,
            "database": DATABASE,
        }

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        """mariadb-install-db, start mariadbd as ``mysql``, wait, create the user and database."""
        started = time.monotonic()
        shutil.chown(self.base_dir, OS_USER, OS_USER)
        subprocess.run(
            [
                "mariadb-install-db",
                f"--user={OS_USER}",
                f"--datadir={self.data_dir}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.mariadbd,
                    "--no-defaults",
                    f"--user={OS_USER}",
                    f"--datadir={self.data_dir}",
                    f"--socket={self.socket}",
                    f"--pid-file={self.base_dir / 'mysqld.pid'}",
                    "--skip-networking=0",
                    "--bind-address=127.0.0.1",
                    f"--port={self.port}",
                    "--skip-name-resolve",
                    "--character-set-server=utf8mb4",
                    "--collation-server=utf8mb4_unicode_ci",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-buffer-pool-size=64M",
                    "--max-connections=60",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        sql = (
            f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4; "
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
            f"CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}'; "
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'; "
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'localhost'; FLUSH PRIVILEGES;"
        )
        self.root_sql(sql)
        _log(f"MariaDB ready on 127.0.0.1:{self.port} in {time.monotonic() - started:.1f}s ({self.base_dir})")

    def root_sql(self, sql: str) -> str:
        """Run SQL as root over the socket; return its output."""
        proc = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", "-N", "-e", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.stdout

    def _wait_ready(self) -> None:
        started = time.monotonic()
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited ({self.proc.returncode}):\n{self.log_tail()}")
            ping = subprocess.run(
                ["mariadb-admin", "--no-defaults", f"--socket={self.socket}", "-uroot", "ping"],
                capture_output=True,
                check=False,
                timeout=10,
            )
            if ping.returncode == 0:
                with socket.socket() as sock:
                    sock.settimeout(2)
                    if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                        return
            if time.monotonic() - started > READY_TIMEOUT:
                raise RuntimeError(f"MariaDB not ready after {READY_TIMEOUT:.0f}s:\n{self.log_tail()}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Stop the server by its PID (TERM, then KILL) and remove the temp dir. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(self.base_dir, ignore_errors=True)


def ensure_mariadb_server() -> dict[str, object]:
    """Start this process's server once; return its connection params."""
    global _server
    if _server is not None:
        return _server.params
    mariadbd = find_mariadbd()
    if mariadbd is None:
        raise RuntimeError("MariaDB (mariadb-server) is not installed: run 'make services'")
    server = MariaDBServer(mariadbd)
    atexit.register(server.stop)
    try:
        server.start()
    except BaseException:
        server.stop()
        atexit.unregister(server.stop)
        raise
    _server = server
    return server.params


def current_server() -> MariaDBServer:
    """The handle of the server started by ``ensure_mariadb_server()``."""
    if _server is None:
        raise RuntimeError("no MariaDB server: call ensure_mariadb_server() first")
    return _server


def stop_mariadb_server() -> None:
    """Stop this process's server (no-op if none)."""
    global _server
    if _server is None:
        return
    server, _server = _server, None
    try:
        server.stop()
    finally:
        atexit.unregister(server.stop)
