"""Metrics: a real run under ``airflow dags test`` sends its figures to a StatsD server (UDP)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter

from tests.helpers import copy_metadata_db, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users, seed_sqlite


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
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines.extend(data.decode().splitlines())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def counters(self, prefix: str) -> Counter:
        """Counter totals by name, for names starting with ``prefix``."""
        totals: Counter = Counter()
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if name.startswith(prefix) and kind.startswith("c"):
                totals[name] += int(float(value))
        return totals


def test_a_run_reports_requests_and_outcomes_as_airflow_metrics(airflow_db, sfox_sandbox, tmp_path):
    users = make_users(25, seed=51)
    warehouse = tmp_path / "warehouse.db"
    seed_sqlite(str(warehouse), users)
    sfox_sandbox.seed_users(sandbox_users(users[:20]))  # 5 users unknown to sFOX: 404
    statsd = StatsdServer()
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": copy_metadata_db(airflow_db, tmp_path / "airflow.db"),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW_CONN_SFOX_DEFAULT": sfox_conn_json(
            sfox_sandbox.url, rate_limit_dir=str(tmp_path / "budget")
        ),
        "AIRFLOW_CONN_SFOX_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
    }
    try:
        result = subprocess.run(
            # 5 of 25 unknown to sFOX (20 %): under a threshold of 50 %, the run passes.
            [
                sys.executable,
                "-m",
                "airflow",
                "dags",
                "test",
                "sfox_batch_onboarding",
                "-c",
                '{"failure_threshold": 0.5}',
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        statsd.close()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    sends = [e for e in sfox_sandbox.journal() if "/send-verification/" in e.path]
    counters = statsd.counters("airflow.sfox.")
    assert counters["airflow.sfox.requests"] == len(sends) == len(users)
    assert counters["airflow.sfox.outcome.sent"] == 20
    assert counters["airflow.sfox.outcome.not_registered"] == 5
    assert counters["airflow.sfox.rate_limited"] == 0
    timers = {line.partition(":")[0] for line in statsd.lines if line.endswith("|ms")}
    assert {"airflow.sfox.budget_wait", "airflow.sfox.rate_limit_pause"} <= timers
