"""
A live Airflow in a throw-away home: api-server, scheduler (LocalExecutor) and dag-processor.

The three are what ``airflow standalone`` starts (minus the triggerer, which no task here
needs), run as separate processes on a free port so the benchmark never touches a real
deployment. The metadata DB is PostgreSQL (the test suite's private server, ``tests/pg.py``):
with LocalExecutor running dozens of tasks at once, SQLite answers "database is locked".
Runs are driven through the REST API (simple auth manager, every request admin) and timed
by the scheduler's own ``start_date`` / ``end_date`` of the DAG run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests

from sfox_bench.common import REPO, airflow_bin, airflow_env, log

if TYPE_CHECKING:
    from pathlib import Path


def postgres_metadata_db() -> str:
    """A new, empty database on the private PostgreSQL server, as a SQLAlchemy URL."""
    import sys

    import psycopg2

    sys.path.insert(0, str(REPO))
    from tests import pg  # installs and starts the server when needed, stops it at exit

    uri = pg.ensure_postgres_server()
    name = f"bench_airflow_{secrets.token_hex(4)}"
    conn = psycopg2.connect(uri)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    conn.close()
    return "postgresql+psycopg2://" + uri.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class LiveAirflow:
    """Start the services on enter, stop them (each process group, by pid) on exit."""

    executor = "LocalExecutor"

    def __init__(self, work: Path, home: Path, conns: dict[str, str]) -> None:
        self.work = work
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.parallelism = 32  # Airflow's default [core] parallelism, stated in the report
        self.env = airflow_env(
            home,
            **conns,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgres_metadata_db(),
            AIRFLOW__CORE__EXECUTOR=self.executor,
            AIRFLOW__CORE__PARALLELISM=str(self.parallelism),
            AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
            AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(32),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__API__MAXIMUM_PAGE_LIMIT="5000",
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.session = requests.Session()

    def __enter__(self) -> LiveAirflow:
        with (self.work / "live-db-migrate.log").open("w") as out:
            subprocess.run(
                [airflow_bin(), "db", "migrate"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=600,
            )
        for name, argv in (
            ("api-server", ["api-server", "--port", str(self.port), "--host", "127.0.0.1"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
        ):
            with (self.work / f"live-{name}.log").open("w") as out:
                self.procs.append(
                    subprocess.Popen(
                        [airflow_bin(), *argv],
                        env=self.env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its workers share its process group
                    )
                )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs = []

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"an Airflow service exited ({proc.args}); see {self.work}/live-*.log")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}/api/v2{path}", timeout=30, **kwargs)

    def wait_parsed(self, dag_ids: list[str], timeout_s: float) -> None:
        """Until the API serves and every DAG is parsed."""
        deadline = time.monotonic() + timeout_s
        pending = list(dag_ids)
        while pending:
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAGs not parsed within {timeout_s:.0f} s: {pending}")
            with contextlib.suppress(requests.RequestException):
                pending = [d for d in pending if self.api("GET", f"/dags/{d}").status_code != 200]
            if pending:
                time.sleep(1)
        log(f"live Airflow up on {self.url}, DAGs parsed")

    def start_run(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Unpause ``dag_id`` and trigger a run (the factory's DAGs are hourly: none at unpause)."""
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        r = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        r.raise_for_status()
        return str(r.json()["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float) -> dict[str, Any]:
        """Until the run ends (or ``timeout_s``); paused again afterwards. Its figures and timeline."""
        submitted = time.monotonic()
        deadline = submitted + timeout_s
        run: dict[str, Any] = {}
        try:
            while True:
                self._check_alive()
                if time.monotonic() > deadline:
                    run.setdefault("state", "timeout")
                    break
                with contextlib.suppress(requests.RequestException, ValueError, KeyError):
                    run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
                    if run["state"] in ("success", "failed"):
                        break
                time.sleep(0.5)
        finally:
            self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
        done = time.monotonic()
        start, end = _ts(run.get("start_date")), _ts(run.get("end_date"))
        tis: list[dict[str, Any]] = []
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            tis = self.api(
                "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 2000}
            ).json()["task_instances"]
        states: dict[str, int] = {}
        for ti in tis:
            states[str(ti["state"])] = states.get(str(ti["state"]), 0) + 1
        timeline = []
        for ti in tis:
            ti_start, ti_end = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
            timeline.append(
                {
                    "task_id": ti["task_id"],
                    "map_index": ti.get("map_index", -1),
                    "state": str(ti["state"]),
                    "start": ti_start.timestamp() if ti_start else None,
                    "end": ti_end.timestamp() if ti_end else None,
                }
            )
        return {
            "run_id": run_id,
            "state": run.get("state", "unknown"),
            "wall_s": (end - start).total_seconds() if start and end else None,
            "started_at": start.timestamp() if start else None,
            "ended_at": end.timestamp() if end else None,
            "submit_to_done_s": done - submitted,
            "task_instances": len(tis),
            "ti_states": states,
            "tis": timeline,
        }

    def run_dag(self, dag_id: str, conf: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Trigger one run of ``dag_id`` and wait for its end."""
        return self.wait_run(dag_id, self.start_run(dag_id, conf), timeout_s)
