"""
A real, throw-away PostgreSQL server for tests (Debian, run as root).

``ensure_postgres_server()`` starts a *private* server of the ``postgresql`` Debian package
(installed by ``make services``): its own data directory under a temp dir, owned by
and run as the ``postgres`` OS user, listening on 127.0.0.1 on a free port, with the unix
socket inside the temp dir and durability turned off for speed. The Debian cluster
(``/etc/postgresql``, port 5432) is never touched. It returns a libpq URI for role ``sfox``
(password ``sfox``) and database ``warehouse``.

The server is stopped, and its temp dir removed, by ``stop_postgres_server()``; an ``atexit``
hook does the same if the session dies first, and servers left behind by a killed session are
reaped by the next one. ``current_server()`` gives the handle, whose ``pg_ctl_stop()`` /
``pg_ctl_start()`` (or ``unavailable()``) take the server down and bring it back on the same
port and data dir, to test "the warehouse is unavailable".
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.tiers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

PG_ROLE = "sfox"
PG_PASSWORD = "sfox"
PG_DATABASE = "warehouse"
OS_USER = "postgres"
TEMP_PREFIX = "sfox-pg-"
READY_TIMEOUT = 30.0
CMD_TIMEOUT = 120
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres", "psql", "pg_isready")
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
}

_server: PostgresServer | None = None


def _log(message: str) -> None:
    print(f"[tests.pg] {message}", file=sys.stderr, flush=True)


def find_pg_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding all needed binaries, if any."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.name))

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        bin_dir = Path(candidate)
        if all(os.access(bin_dir / name, os.X_OK) for name in REQUIRED_BINARIES):
            return bin_dir
    return None


def _as_postgres(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    """``argv`` wrapped to run as the ``postgres`` OS user (root cannot run the server)."""
    args = [os.fspath(arg) for arg in argv]
    if os.geteuid() != 0:
        raise RuntimeError("tests/pg.py must run as root (it runs the server as 'postgres')")
    if shutil.which("runuser"):
        return ["runuser", "-u", OS_USER, "--", *args]
    return ["su", OS_USER, "-s", "/bin/sh", "-c", " ".join(map(_sh_quote, args))]


def _sh_quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresServer:
    """One private server: ``<base>/data`` (cluster), ``<base>/sock`` (socket), ``<base>/server.log``."""

    def __init__(self, bin_dir: Path, base_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "server.log"
        self.port = free_port()
        self.start_seconds = 0.0
        self._removed = False

    @property
    def uri(self) -> str:
        """libpq URI of the ``warehouse`` database as ``sfox`` over TCP."""
        return f"postgresql://{PG_ROLE}:{PG_PASSWORD}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _run(self, argv: Sequence[str | os.PathLike[str]], timeout: float = CMD_TIMEOUT) -> str:
        """Run ``argv`` as ``postgres`` (cwd: the base dir, a clean env); return its stdout."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.base_dir)}
        try:
            proc = subprocess.run(
                _as_postgres(argv),
                check=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=self.base_dir,
                timeout=timeout,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"{Path(os.fspath(argv[0])).name} failed (exit {exc.returncode}):\n"
                f"{exc.stdout}{exc.stderr}\n--- server log tail ---\n{self.log_tail()}"
            ) from exc
        return proc.stdout

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log (empty if none yet)."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def create(self) -> None:
        """initdb, start, wait, then create role ``sfox`` and database ``warehouse``."""
        started = time.monotonic()
        self.socket_dir.mkdir()
        (self.base_dir / "owner.pid").write_text(str(os.getpid()))
        shutil.chown(self.base_dir, OS_USER, OS_USER)
        shutil.chown(self.socket_dir, OS_USER, OS_USER)
        bin_dir = self.bin_dir
        initdb_options = ["--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C"]
        self._run([bin_dir / "initdb", "-D", self.data_dir, "-U", "postgres", *initdb_options, "--no-sync"])
        settings = {**SERVER_SETTINGS, "unix_socket_directories": f"'{self.socket_dir}'"}
        with open(self.data_dir / "postgresql.conf", "a") as conf:  # stays owned by postgres
            conf.write("\n# tests/pg.py\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        for attempt in range(3):
            try:
                self.pg_ctl_start()
                break
            except RuntimeError:
                # Another process took the free port before the server bound it: pick another.
                if attempt == 2 or "Address already in use" not in self.log_tail():
                    raise
                self.port = free_port()
        connection = ["-h", self.socket_dir, "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        create_role = f"CREATE ROLE {PG_ROLE} LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'"
        create_db = f"CREATE DATABASE {PG_DATABASE} OWNER {PG_ROLE}"
        psql = [bin_dir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *connection]
        self._run([*psql, "-c", create_role, "-c", create_db])
        self.start_seconds = time.monotonic() - started
        _log(f"PostgreSQL ready on 127.0.0.1:{self.port} in {self.start_seconds:.1f}s ({self.base_dir})")

    def pg_ctl_start(self) -> None:
        """Start the server (again) on the same port and data dir; wait until TCP accepts."""
        pg_ctl = [self.bin_dir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file]
        self._run([*pg_ctl, "-W", "-o", f"-p {self.port}", "start"])
        self.wait_ready()

    def pg_ctl_stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``), keeping data dir and port for a restart."""
        self._run([self.bin_dir / "pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "-t", "30", "stop"])

    def is_running(self) -> bool:
        """Whether a postmaster is running on the data dir (``pg_ctl status``)."""
        if not self.data_dir.is_dir():
            return False
        status = subprocess.run(
            _as_postgres([self.bin_dir / "pg_ctl", "-D", self.data_dir, "status"]),
            capture_output=True,
            check=False,
            cwd=self.base_dir,
            timeout=CMD_TIMEOUT,
        )
        return status.returncode == 0

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``pg_isready`` over TCP until the server accepts connections, or raise."""
        started = time.monotonic()
        while True:
            ready = subprocess.run(
                [self.bin_dir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
                check=False,
                timeout=10,
            )
            if ready.returncode == 0:
                return
            waited = time.monotonic() - started
            died = waited > 1 and not self.is_running()  # e.g. port taken: no point waiting 30 s
            if died or waited > timeout:
                problem = "exited" if died else f"not accepting TCP connections after {timeout:.0f}s"
                raise RuntimeError(
                    f"PostgreSQL on 127.0.0.1:{self.port} {problem} (pg_isready exit {ready.returncode}).\n"
                    f"--- server log tail ({self.log_file}) ---\n{self.log_tail()}"
                )
            time.sleep(0.2)

    @contextlib.contextmanager
    def unavailable(self) -> Iterator[None]:
        """Stop the server for the ``with`` block; always start it again afterwards."""
        self.pg_ctl_stop()
        try:
            yield
        finally:
            self.pg_ctl_start()

    def stop(self) -> None:
        """Stop the server (fast, then immediate) and remove its temp dir. Idempotent."""
        if self._removed:
            return
        for mode in ("fast", "immediate"):
            if not self.is_running():
                break
            try:
                self.pg_ctl_stop(mode)
            except Exception as exc:
                _log(f"pg_ctl stop -m {mode} failed: {exc}")
        if self.is_running():
            self._kill_postmaster()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self._removed = True

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)


def _reap_stale_servers() -> None:
    """Stop and remove servers left in the temp dir by sessions that no longer exist."""
    bin_dir = find_pg_bin_dir()
    for owner_file in glob.glob(os.path.join(tempfile.gettempdir(), f"{TEMP_PREFIX}*", "owner.pid")):
        base_dir = Path(owner_file).parent
        try:
            owner = int(Path(owner_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or _pid_alive(owner):
            continue
        _log(f"reaping PostgreSQL left behind by dead process {owner}: {base_dir}")
        if bin_dir is not None:
            stale = PostgresServer(bin_dir, base_dir)
            stale.stop()
        else:
            shutil.rmtree(base_dir, ignore_errors=True)


def ensure_postgres_server() -> str:
    """Start this process's server once; return its libpq URI."""
    global _server
    if _server is not None:
        return _server.uri
    bin_dir = find_pg_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin): run 'make services'")
    _reap_stale_servers()
    server = PostgresServer(bin_dir)
    atexit.register(server.stop)  # safety net if the session ends without stopping it
    try:
        server.create()
    except BaseException:
        server.stop()
        atexit.unregister(server.stop)
        raise
    _server = server
    return server.uri


def current_server() -> PostgresServer:
    """The handle of the server started by ``ensure_postgres_server()``."""
    if _server is None:
        raise RuntimeError("no PostgreSQL server: call ensure_postgres_server() first")
    return _server


def stop_postgres_server() -> None:
    """Stop this process's server and remove its temp dir (no-op if none)."""
    global _server
    if _server is None:
        return
    server, _server = _server, None
    try:
        server.stop()
    finally:
        atexit.unregister(server.stop)
