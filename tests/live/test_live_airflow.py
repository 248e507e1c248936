"""
The docker-compose topology, live and native: a real Airflow runs the onboarding DAG.

No Docker engine runs on our machines, so this brings up the same parts as
``docker-compose.yml`` as local processes: a real PostgreSQL server (``tests/pg.py``) holding
both the Airflow metadata database and the warehouse, the sandbox on loopback, and Airflow's
api-server, scheduler (LocalExecutor), dag-processor and triggerer with the repository's
``dags/`` folder. The DAG is driven only through Airflow's REST API, as a user would: a token
from ``POST /auth/token``, unpause, trigger with a conf, wait. Then the ledger (PostgreSQL) and
the sandbox journal must agree, and ``GET /ui/connections/hook_meta`` must show the ``sfox``
form fields.

Every process is started in its own session and stopped by its process-group id in the
fixtures' teardown, also when the test fails. Runs in about 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_sfox.get_provider_info import CONN_FIELDS
from tests.helpers import TOKEN, sfox_conn_json, stop_process_group
from tests.onboarding_data import BAD_ROWS, make_users, sandbox_users

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "sfox_batch_onboarding"
ADMIN_USER = "admin"
START_TIMEOUT = 240.0  # api-server up and the DAG parsed (2 cores, cold bytecode cache)
RUN_TIMEOUT = 300.0  # the triggered run reaches a final state
USERS = make_users(30, seed=21)
CONF = {"chunk_size": 10, "failure_threshold": 0.5}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Process:
    """A subprocess in its own session (process group), output to a log file, stopped by pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log_dir, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group (the process and its children), then SIGKILL it."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)  # pgid == pid: start_new_session=True
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; children of the group may linger a moment.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            return

    def report(self) -> str:
        state = "running" if self.alive() else f"exited {self.proc.returncode}"
        return f"--- {self.name} (pid {self.pid}, {state}) {self.log} ---\n{_tail(self.log)}"


@pytest.fixture(scope="module")
def databases(postgres_uri) -> Iterator[dict[str, str]]:
    """Two fresh databases on the session's PostgreSQL server: Airflow's metadata, the warehouse."""
    import psycopg2

    suffix = uuid.uuid4().hex[:8]
    names = {"meta": f"live_airflow_{suffix}", "warehouse": f"live_warehouse_{suffix}"}
    admin = psycopg2.connect(postgres_uri)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute(f"CREATE DATABASE {name}")
        base = postgres_uri.rsplit("/", 1)[0]
        yield {kind: f"{base}/{name}" for kind, name in names.items()}
    finally:
        with admin.cursor() as cursor:
            for name in names.values():
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Iterator[str]:
    """``python -m sfox_sandbox`` on loopback (free port); yields its URL."""
    log_dir = tmp_path_factory.mktemp("live-sandbox")
    argv = [sys.executable, "-m", "sfox_sandbox", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--token", TOKEN, "--random-seed", "5", "--rate-limit", "0"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=open(log_dir / "sandbox.err", "wb"),  # noqa: SIM115 - closed with the process
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (
            f"sandbox printed {url!r}: {_tail(log_dir / 'sandbox.err')}"
        )
        yield url
    finally:
        stop_process_group(proc)


def _conn_json_postgres(uri: str) -> str:
    """The ``sfox_warehouse`` connection (JSON form) of a libpq URI of tests/pg.py's server."""
    credentials, location = uri.split("://", 1)[1].split("@", 1)
    login, password = credentials.split(":", 1)
    host_port, database = location.split("/", 1)
    host, port = host_port.split(":")
    conn = {"conn_type": "postgres", "host": host, "port": int(port), "login": login}
    return json.dumps({**conn, "password": password, "schema": database})


class LiveAirflow:
    """A running Airflow: its REST base URL, an admin token, and its processes' logs."""

    def __init__(self, home: Path, url: str, password: str) -> None:
        self.home = home
        self.url = url
        self.password = password
        self.processes: list[Process] = []
        self.session = requests.Session()

    def login(self) -> None:
        """``POST /auth/token`` (SimpleAuthManager) and use the token for every later call."""
        response = requests.post(
            f"{self.url}/auth/token", json={"username": ADMIN_USER, "password": self.password}, timeout=30
        )
        assert response.status_code == 201, response.text
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, f"{self.url}{path}", timeout=60, **kwargs)

    def report(self) -> str:
        """Tails of every component's log and of every task log, for a failure message."""
        parts = [process.report() for process in self.processes]
        for log in sorted((self.home / "logs").glob(f"dag_id={DAG_ID}/**/*.log")):
            parts.append(f"--- task log {log.relative_to(self.home / 'logs')} ---\n{_tail(log, 25)}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        dead = [p for p in self.processes if not p.alive()]
        assert not dead, f"{', '.join(p.name for p in dead)} exited early\n{self.report()}"


def _airflow_env(home: Path, api_port: int, meta_uri: str, sandbox_url: str, warehouse_uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    # Airflow imports thousands of modules: cache their bytecode (as the Makefile does).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(REPO / ".cache" / "pycache"))
    meta = meta_uri.replace("postgresql://", "postgresql+psycopg2://", 1)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            # Shared by every component, as docker-compose's .env does (else each generates its own).
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            # Without an issuer, Airflow 3.1.3 with a recent PyJWT (2.15) cannot sign tokens ("Issuer (iss)
            # must be a string"): /auth/token and the tasks' execution API tokens fail.
            "AIRFLOW__API_AUTH__JWT_ISSUER": "sfox-live-test",
            # Only the run the test triggers: no @hourly run competing for max_active_runs=1.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # Log servers of the scheduler (LocalExecutor) and triggerer: free ports, not 8793/8794.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW_CONN_SFOX_DEFAULT": sfox_conn_json(sandbox_url, requests_per_second=0),
            "AIRFLOW_CONN_SFOX_WAREHOUSE": _conn_json_postgres(warehouse_uri),
        }
    )
    return env


@pytest.fixture(scope="module")
def live_airflow(tmp_path_factory, databases, sandbox) -> Iterator[LiveAirflow]:
    """db migrate, then api-server, scheduler, dag-processor and triggerer; all stopped at the end."""
    home = tmp_path_factory.mktemp("live-airflow-home")
    api_port = _free_port()
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({ADMIN_USER: password}))
    env = _airflow_env(home, api_port, databases["meta"], sandbox, databases["warehouse"])
    airflow = LiveAirflow(home, f"http://127.0.0.1:{api_port}", password)
    cli = [sys.executable, "-m", "airflow"]

    migrate = Process("db-migrate", [*cli, "db", "migrate"], env, home)
    try:
        migrate.proc.wait(300)
    except subprocess.TimeoutExpired:
        migrate.stop()
    assert migrate.proc.returncode == 0, migrate.report()

    try:
        for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
            airflow.processes.append(Process(component, [*cli, component], env, home))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            airflow.check_alive()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{airflow.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"api-server not up in {START_TIMEOUT}s\n{airflow.report()}"
            time.sleep(1)
        airflow.login()
        yield airflow
    finally:
        for process in reversed(airflow.processes):
            process.stop()


@pytest.fixture(scope="module")
def warehouse(databases):
    """The source table ``sfox_users`` in the warehouse database: valid users and bad rows."""
    import psycopg2

    uri = databases["warehouse"]
    with psycopg2.connect(uri) as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE sfox_users (user_id VARCHAR(300), account_type VARCHAR(40), "
            "email VARCHAR(300), phone_number VARCHAR(40))"
        )
        cursor.executemany(
            "INSERT INTO sfox_users VALUES (%s, %s, %s, %s)", USERS + [row for row, _ in BAD_ROWS]
        )
    conn.close()

    def query(sql: str) -> list[tuple]:
        with psycopg2.connect(uri) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            rows = cursor.fetchall()
        conn.close()
        return rows

    return query


def _wait_for_dag(airflow: LiveAirflow) -> None:
    """Until the dag-processor has parsed the DAG file and the API knows the DAG."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        airflow.check_alive()
        response = airflow.api("GET", f"/api/v2/dags/{DAG_ID}")
        if response.status_code == 200:
            return
        assert response.status_code == 404, response.text
        assert time.monotonic() < deadline, f"DAG not parsed in {START_TIMEOUT}s\n{airflow.report()}"
        time.sleep(2)


def _wait_for_run(airflow: LiveAirflow, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        airflow.check_alive()
        response = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        assert response.status_code == 200, response.text
        run = response.json()
        if run["state"] in ("success", "failed"):
            return run
        if time.monotonic() > deadline:
            states = _task_states(airflow, run_id)
            pytest.fail(f"run still {run['state']} after {RUN_TIMEOUT}s\n{states}\n{airflow.report()}")
        time.sleep(3)


def _task_states(airflow: LiveAirflow, run_id: str) -> list[tuple[str, int, str | None]]:
    response = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    assert response.status_code == 200, response.text
    instances = response.json()["task_instances"]
    return sorted((ti["task_id"], ti["map_index"], ti["state"]) for ti in instances)


def test_dag_runs_on_a_live_airflow(live_airflow, warehouse, sandbox):
    airflow = live_airflow
    registered = requests.post(f"{sandbox}/_sandbox/users", json=sandbox_users(USERS), timeout=30)
    assert registered.status_code == 200, registered.text

    _wait_for_dag(airflow)
    unpaused = airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    assert unpaused.status_code == 200, unpaused.text
    assert unpaused.json()["is_paused"] is False
    run_id = f"live_{uuid.uuid4().hex[:8]}"
    triggered = airflow.api(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": run_id, "logical_date": None, "conf": CONF},
    )
    assert triggered.status_code == 200, triggered.text
    assert triggered.json()["conf"] == CONF

    run = _wait_for_run(airflow, run_id)
    states = _task_states(airflow, run_id)
    assert run["state"] == "success", f"{states}\n{airflow.report()}"

    # 30 users: individual and corporation chunks of 10, each type on its own path; no sms
    # is due yet (no email is verified), so the individuals' sms steps skip themselves.
    individuals = sum(1 for u in USERS if u[1] == "individual")
    corporations = len(USERS) - individuals
    sends = Counter((task, state) for task, index, state in states if index >= 0)
    assert sends == {
        ("corporation.send_email", "success"): -(-corporations // 10),
        ("individual.send_email", "success"): -(-individuals // 10),
        ("individual.send_sms", "skipped"): -(-individuals // 10),
    }, states
    assert ("plan", -1, "success") in states
    assert ("summarize", -1, "success") in states

    # The sandbox sent exactly one email code per valid user, and nothing to a bad row.
    journal = requests.get(f"{sandbox}/_sandbox/journal", timeout=30).json()["data"]
    codes = Counter((e["user_id"], e["type"]) for e in journal if e["code_sent"])
    assert codes == Counter({(u[0], "email"): 1 for u in USERS})
    bad_ids = {row[0] for row, _ in BAD_ROWS}
    assert not {e["user_id"] for e in journal} & bad_ids

    # The ledger in the warehouse agrees: a 'sent' email row for every valid user, bad rows rejected.
    ledger = {
        (user_id, channel): (state, sends)
        for user_id, channel, state, sends in warehouse(
            "SELECT user_id, channel, state, sends FROM sfox_onboarding_ledger"
        )
    }
    for user_id, *_ in USERS:
        assert ledger[(user_id, "email")] == ("sent", 1), user_id
    assert not [key for key in ledger if key[1] == "sms"]  # no email verified yet: no sms
    rejected = {uid for (uid, _), (state, _) in ledger.items() if state == "rejected"}
    assert len(rejected) == len(bad_ids)  # unprintable user_ids are recorded by a placeholder
    assert {"bad-account-type", "bad-email", "bad-no-phone", "bad-phone", "dup-1"} <= rejected
    runs = warehouse("SELECT run_id, status, sent FROM sfox_onboarding_runs")
    assert runs == [(run_id, "success", len(USERS))]


def test_connection_form_of_the_live_ui(live_airflow):
    """What the UI's connection form receives from the running api-server."""
    response = live_airflow.api("GET", "/ui/connections/hook_meta")
    assert response.status_code == 200, response.text
    metas = [meta for meta in response.json() if meta["connection_type"] == "sfox"]
    assert len(metas) == 1, [meta["connection_type"] for meta in response.json()]
    meta = metas[0]
    assert meta["hook_name"] == "sFOX Connect"
    assert meta["hook_class_name"] == "airflow_sfox.hooks.sfox.SfoxConnectHook"
    assert set(meta["extra_fields"]) == set(CONN_FIELDS)
    assert {"timeout", "requests_per_second", "max_retry_seconds"} <= set(meta["extra_fields"])
