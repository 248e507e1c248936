"""
Test tiers that need a system service (PostgreSQL, MariaDB, Redis, Chromium).

Each such test carries the tier's marker (``-m "not postgres"`` leaves them out). A tier runs
when its service is present or can be installed (root and Debian's apt-get); otherwise its
tests are skipped with ``tier <name>: <reason>``, and the end of the run lists every tier that
could not run, by name. With ``SFOX_REQUIRE_ALL_TIERS=1`` (CI) a tier that cannot run fails
its tests instead: CI runs every tier.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

#: Tier marker -> what it needs (the pytest marker's description).
TIERS = {
    "postgres": "a real PostgreSQL server (Debian's postgresql, started by the tests)",
    "mariadb": "a real MariaDB server (Debian's mariadb-server, started by the tests)",
    "redis": "a real Redis server (Debian's redis-server, started by the tests)",
    "chromium": "Debian's chromium and chromium-driver (a real browser)",
    "live": "a live Airflow (api-server, scheduler, ...) as subprocesses",
}
#: Tier -> reason, for the tiers that could not run in this session.
SKIPPED: dict[str, str] = {}


def can_install() -> bool:
    """Whether missing Debian packages can be installed here (root and apt-get)."""
    return shutil.which("apt-get") is not None and os.geteuid() == 0


def unavailable(tier: str, reason: str) -> None:
    """Skip (or, under ``SFOX_REQUIRE_ALL_TIERS``, fail) a test whose tier cannot run."""
    SKIPPED.setdefault(tier, reason)
    message = f"tier {tier}: {reason}"
    if os.environ.get("SFOX_REQUIRE_ALL_TIERS") == "1":
        pytest.fail(f"{message} (SFOX_REQUIRE_ALL_TIERS=1: every tier must run)")
    pytest.skip(message)


def require_installable(tier: str, present: bool, what: str) -> None:
    """Make sure a service can be had: present already, or installable with apt-get."""
    if not present and not can_install():
        unavailable(tier, f"{what} is not installed, and installing it needs root and apt-get")


def report(terminalreporter) -> None:
    """The end-of-run section naming the tiers that could not run."""
    if not SKIPPED:
        return
    terminalreporter.section("tiers not run")
    for tier, reason in sorted(SKIPPED.items()):
        terminalreporter.write_line(f"{tier}: {reason}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a test's own server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def apt_install(*packages: str, present: Callable[[], object], timeout: float = 1800) -> None:
    """
    Install Debian packages unless ``present()`` finds them, one test session at a time.

    :param packages: the Debian packages.
    :param present: checks again under the lock (another session may have just installed them).
    :param timeout: seconds allowed for ``apt-get install``.
    """
    with open(os.path.join(tempfile.gettempdir(), "sfox-tests-apt.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if present():
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        options = ["-o", "DPkg::Lock::Timeout=600"]
        started = time.monotonic()
        print(f"[tests.tiers] apt-get install {' '.join(packages)}", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", *options, "update", "-qq"], check=True, env=env, timeout=900)
        subprocess.run(
            ["apt-get", *options, "install", "-y", "-qq", *packages], check=True, env=env, timeout=timeout
        )
        print(f"[tests.tiers] ... took {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
