"""
Test tiers that need a system service (PostgreSQL, MariaDB, Redis, Chromium).

Each such test carries the tier's marker (``-m "not postgres"`` leaves them out). A tier runs
when its service is installed (``make services`` installs them all, as Debian packages: tests
never install anything); otherwise its tests are skipped with ``tier <name>: <reason>``, and the
end of the run lists every tier that could not run, by name. With ``SFOX_REQUIRE_ALL_TIERS=1``
(CI) a tier that cannot run fails its tests instead: CI runs every tier.
"""

from __future__ import annotations

import os
import socket

import pytest

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


def unavailable(tier: str, reason: str) -> None:
    """Skip (or, under ``SFOX_REQUIRE_ALL_TIERS``, fail) a test whose tier cannot run."""
    SKIPPED.setdefault(tier, reason)
    message = f"tier {tier}: {reason}"
    if os.environ.get("SFOX_REQUIRE_ALL_TIERS") == "1":
        pytest.fail(f"{message} (SFOX_REQUIRE_ALL_TIERS=1: every tier must run)")
    pytest.skip(message)


def require_service(tier: str, present: bool, what: str) -> None:
    """Skip (or fail) the tier's test unless its service is installed; ``make services`` installs it."""
    if not present:
        unavailable(tier, f"{what} is not installed: run 'make services'")


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
