"""
Metrics: real runs under ``airflow dags test`` send their figures to a StatsD server (UDP),
with InfluxDB-style tags (``statsd_influxdb_enabled``) so the ``channel`` tags can be checked.

Three runs of one warehouse make every onboarding metric: retries wait, give up, are queued
and are re-driven; claims a dead try left are sent again or held; the last run fails. The plan's
figures of every channel, registration's included, are also checked from a plan's counts alone.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_sfox.onboarding import metrics
from tests.helpers import copy_metadata_db, sfox_conn_json
from tests.onboarding_data import BAD_ROWS, make_users, sandbox_users, seed_sqlite

REPO = Path(__file__).resolve().parents[2]
PREFIX = "airflow."  # Airflow's statsd_prefix, before every name
AIRFLOW = [sys.executable, "-m", "airflow"]


@dataclass(frozen=True)
class Metric:
    name: str
    tags: dict[str, str]
    value: float
    kind: str


class StatsdServer:
    """A StatsD listener on a free loopback UDP port that keeps every metric line it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                if self._stop.is_set():  # stopped, and nothing more arrived: all read
                    return
                continue
            self.lines.extend(data.decode().splitlines())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def metrics(self) -> list[Metric]:
        """The onboarding metrics received: ``name,tag=value,...:value|kind``, prefix removed."""
        found = []
        for line in self.lines:
            head, _, rest = line.partition(":")
            name, *tags = head.split(",")
            value, _, kind = rest.partition("|")
            if name.startswith(f"{PREFIX}sfox."):
                found.append(
                    Metric(name.removeprefix(PREFIX), dict(t.split("=", 1) for t in tags), float(value), kind)
                )
        return found


class Run:
    """The metrics of one run."""

    def __init__(self, metrics: list[Metric], result: subprocess.CompletedProcess) -> None:
        self.metrics = metrics
        self.result = result

    def count(self, name: str, **tags: str) -> int:
        """The total of counter ``name`` over the lines whose tags include ``tags``."""
        return int(
            sum(
                m.value
                for m in self.metrics
                if m.name == name and m.kind.startswith("c") and tags.items() <= m.tags.items()
            )
        )

    def timers(self) -> set[str]:
        return {m.name for m in self.metrics if m.kind.startswith("ms")}

    def names(self) -> set[str]:
        return {m.name for m in self.metrics}


@pytest.fixture
def onboarding(airflow_db, sfox_sandbox, tmp_path):
    """
    ``run(conf)``: one run of ``sfox_batch_onboarding`` under ``airflow dags test`` on a SQLite
    warehouse (this checkout's code), its metrics caught by a StatsD server of its own.
    """
    warehouse = tmp_path / "warehouse.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": copy_metadata_db(airflow_db, tmp_path / "airflow.db"),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PREFIX": PREFIX.rstrip("."),
        "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        "AIRFLOW_CONN_SFOX_DEFAULT": sfox_conn_json(
            sfox_sandbox.url, rate_limit_dir=str(tmp_path / "budget")
        ),
        "AIRFLOW_CONN_SFOX_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }

    def run(conf: dict) -> Run:
        statsd = StatsdServer()
        try:
            result = subprocess.run(
                [*AIRFLOW, "dags", "test", "sfox_batch_onboarding", "-c", json.dumps(conf)],
                env={**env, "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port)},
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        finally:
            statsd.close()
        return Run(statsd.metrics(), result)

    run.warehouse = warehouse
    return run


def _ledger(warehouse: Path, user_ids: list[str], set_sql: str) -> None:
    """Set ``set_sql`` on these users' email rows of the ledger."""
    with sqlite3.connect(warehouse) as conn:
        conn.executemany(
            f"UPDATE sfox_onboarding_ledger SET {set_sql} WHERE user_id = ? AND channel = 'email'",
            [(uid,) for uid in user_ids],
        )


def _as_if_a_try_died(warehouse: Path, user_ids: list[str]) -> None:
    """Leave these users as a chunk try that died while sending them does: queued, claimed."""
    _ledger(warehouse, user_ids, "state = 'queued', claimed_by = 'dead-try', claimed_at = CURRENT_TIMESTAMP")


def test_runs_report_plans_outcomes_and_statuses_as_airflow_metrics(onboarding, sfox_sandbox):
    users = make_users(25, seed=51)
    seed_sqlite(str(onboarding.warehouse), users + [row for row, _ in BAD_ROWS])
    registered, unknown = users[:20], users[20:]  # 5 users unknown to sFOX: 404, not registered
    waiting, hopeless = unknown[:3], unknown[3:]
    sfox_sandbox.seed_users(sandbox_users(registered))
    individuals = sum(1 for u in users if u[1] == "individual")
    lenient = {"failure_threshold": 0.9}  # 5 of 25 not registered, 8 bad rows: the runs pass

    # 1. Everyone is planned; bad rows are newly rejected.
    first = onboarding(lenient)
    assert first.result.returncode == 0, first.result.stdout[-3000:] + first.result.stderr[-3000:]
    sends = [e for e in sfox_sandbox.journal() if "/send-verification/" in e.path]
    assert first.count("sfox.requests", channel="email") == len(sends) == len(users)
    _expect(
        first,
        {
            ("sfox.plan.planned", "email", "individual"): individuals,
            ("sfox.plan.planned", "email", "corporation"): len(users) - individuals,
            ("sfox.plan.planned", "sms", None): 0,  # no email verified yet
            ("sfox.plan.rejected_new", None, None): len(BAD_ROWS) - 1,  # users: dup-1 is one
            ("sfox.outcome.sent", "email", None): len(registered),
            ("sfox.outcome.not_registered", "email", None): len(unknown),
            ("sfox.rate_limited", None, None): 0,
            ("sfox.lost", None, None): 0,
            ("sfox.uncertain", None, None): 0,
            ("sfox.run.success", None, None): 1,
        },
    )
    assert {"sfox.budget_wait", "sfox.rate_limit_pause", "sfox.run.duration"} <= first.timers()

    # 2. Not registered users wait for their next try, but those that failed 5 times in a row
    #    are given up; 3 claims a dead try left are sent again.
    _ledger(onboarding.warehouse, [u[0] for u in hopeless], "failures = 5")
    _as_if_a_try_died(onboarding.warehouse, [u[0] for u in registered[:3]])
    second = onboarding({**lenient, "retry_wait_hours": [1000]})
    _expect(
        second,
        {
            ("sfox.plan.retry_waiting", "email", None): len(waiting),
            ("sfox.plan.gave_up", "email", None): len(hopeless),
            ("sfox.plan.retry", "email", None): 0,
            ("sfox.plan.planned", "email", None): 3,
            ("sfox.plan.rejected_new", None, None): 0,  # the bad rows are known now
            ("sfox.lost", "email", None): 3,
            ("sfox.uncertain", "email", None): 3,  # sent again: perhaps twice
            ("sfox.outcome.sent", "email", None): 3,
            ("sfox.run.success", None, None): 1,
        },
    )

    # 3. The wait is over: tried again; the given up re-driven by hand; 2 more dead claims are
    #    held for review. Every request of the run is not registered: over the threshold, it fails.
    _as_if_a_try_died(onboarding.warehouse, [u[0] for u in registered[3:5]])
    third = onboarding({"retry_wait_hours": [0], "redrive": ["gave_up"], "hold_uncertain": True})
    _expect(
        third,
        {
            ("sfox.plan.retry", "email", None): len(waiting),
            ("sfox.plan.redrive", "email", None): len(hopeless),
            ("sfox.plan.retry_waiting", "email", None): 0,
            ("sfox.lost", "email", None): 2,
            ("sfox.outcome.held", "email", None): 2,
            ("sfox.uncertain", "email", None): 0,  # held: not sent
            ("sfox.outcome.not_registered", "email", None): len(unknown),
            ("sfox.run.failed", None, None): 1,
            ("sfox.run.success", None, None): 0,
        },
    )
    assert "sfox.run.duration" in third.timers()

    # Every name emitted is one metrics.py documents (the docs' table of metrics is built from it).
    from airflow_sfox.onboarding import metrics

    for name in first.names() | second.names() | third.names():
        documented = name.rsplit(".", 1)[0] if name.startswith(("sfox.outcome.", "sfox.run.")) else name
        assert f"`{documented}" in str(metrics.__doc__), name


def _expect(run: Run, expected: dict[tuple[str, str | None, str | None], int]) -> None:
    """Each counter ``(name, channel, account_type)`` (``None``: any) has its expected total."""
    for (name, channel, account_type), value in expected.items():
        tags = {"channel": channel, "account_type": account_type}
        got = run.count(name, dag_id="sfox_batch_onboarding", **{k: v for k, v in tags.items() if v})
        assert got == value, f"{name} {tags}: {got}, expected {value}\n{run.result.stdout[-3000:]}"


class _Recorder:
    """Stands in for Airflow's ``Stats``: what was counted, by name and tags."""

    def __init__(self) -> None:
        self.counted: list[tuple[str, int, dict[str, Any]]] = []

    def incr(self, name: str, count: int = 1, tags: dict[str, Any] | None = None) -> None:
        self.counted.append((name, count, dict(tags or {})))


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (
            {"retry_registration": 2, "gave_up_registration": 1, "redrive_email": 3, "retry_waiting_sms": 4},
            [
                ("sfox.plan.retry", 2, "registration"),
                ("sfox.plan.gave_up", 1, "registration"),
                ("sfox.plan.redrive", 3, "email"),
                ("sfox.plan.retry_waiting", 4, "sms"),
            ],
        ),
        ({"retry_email": 0, "resend_email": 5}, [("sfox.plan.resend", 5, "email")]),  # zeros: none
        ({"retry_registration": 2, "dry_run": True}, []),  # a dry run emits nothing
    ],
)
def test_the_plan_emits_each_channels_retry_figures(monkeypatch, counts, expected):
    recorder = _Recorder()
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)

    metrics.emit_plan(counts, dag_id="onboarding")

    emitted = [(name, n, tags["channel"]) for name, n, tags in recorder.counted if "channel" in tags]
    assert sorted(emitted) == sorted(expected)
    assert {tags["dag_id"] for _, _, tags in recorder.counted} <= {"onboarding"}
