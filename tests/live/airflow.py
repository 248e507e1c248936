"""
The one helper of the live tests: a real Airflow, its components as subprocesses.

:class:`LiveAirflow` runs ``airflow db migrate`` and then any of api-server, scheduler
(LocalExecutor unless the environment says otherwise), dag-processor and triggerer, each in a
session (process group) of its own, logging to a file in its AIRFLOW_HOME, stopped by its
process-group id. It is driven only through Airflow's REST API, as a user would (a token from
``POST /auth/token``). The fixtures that share one instance between the test modules are in
``tests/live/fixtures.py``; the Celery deployment (``celery_stack.py``) builds on this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from tests.onboarding_data import make_users, sandbox_users
from tests.tiers import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

REPO = Path(__file__).resolve().parents[2]
PLUGIN_CLASS = "airflow_sfox.plugins.onboarding:SfoxOnboardingPlugin"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
#: The simple auth manager's users: an admin (the REST API, the UI) and a viewer (the plugin's page).
ADMIN_USER, VIEWER_USER = "admin", "compliance"
#: Every test user's password (simple and FAB auth managers alike), new for each session.
PASSWORD = secrets.token_urlsafe(16)
#: The components of a whole Airflow, in start order (stopped in reverse).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
MIGRATE_TIMEOUT = 600.0
START_TIMEOUT = 240.0  # api-server up, or a DAG parsed (2 busy cores, cold bytecode cache)
RUN_TIMEOUT = 300.0  # a triggered run reaches a final state
#: The valid users of every module's source table (``tests/live/fixtures.py``'s ``warehouse``).
USERS = make_users(30, seed=21)
#: The conf of an onboarding run of them: chunks of 10, and the source's bad rows tolerated.
CONF = {"chunk_size": 10, "failure_threshold": 0.5}


def tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for a failure message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Process:
    """A subprocess in its own session (process group), output to a log file, stopped by pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log_dir, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM the process group, without waiting (:meth:`stop` waits)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)

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
        return f"--- {self.name} (pid {self.pid}, {state}) {self.log} ---\n{tail(self.log)}"


def plugin_entry_point_installed() -> bool:
    """Whether the installed distribution declares the plugin's ``airflow.plugins`` entry point."""
    return any(ep.value == PLUGIN_CLASS for ep in entry_points(group="airflow.plugins"))


def http(
    method: str, url: str, *, body: dict | None = None, token: str | None = None
) -> tuple[int, dict | str, dict]:
    """One HTTP request without following redirects: ``(status, json or text, headers)``."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http only
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), dict(error.headers)
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text), got
    except ValueError:
        return status, text, got


def conn_json_postgres(uri: str) -> str:
    """The JSON form of a ``postgres`` connection to a libpq URI of tests/pg.py's server."""
    credentials, location = uri.split("://", 1)[1].split("@", 1)
    login, password = credentials.split(":", 1)
    host_port, database = location.split("/", 1)
    host, port = host_port.split(":")
    conn = {"conn_type": "postgres", "host": host, "port": int(port), "login": login}
    return json.dumps({**conn, "password": password, "schema": database})


def airflow_env(home: Path, api_port: int, meta_url: str, *, auth: str = "simple") -> dict[str, str]:
    """
    The environment of every component of one Airflow: its home, metadata DB, DAG and plugins
    folders (created here), auth manager, secrets shared by all components, free log-server ports.

    :param meta_url: the metadata DB's SQLAlchemy URL (a ``postgresql://`` URI gets psycopg2).
    :param auth: ``"simple"`` (ADMIN_USER, VIEWER_USER) or ``"fab"`` (users made by the caller).
    """
    if auth not in ("simple", "fab"):
        raise ValueError(f"auth must be 'simple' or 'fab', got {auth!r}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "SFOX_"))}
    # Airflow imports thousands of modules: cache their bytecode (as the Makefile does).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(REPO / ".cache" / "pycache"))
    # This checkout's code (and the tests' helpers), not the installed copy, in every component.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    for folder in ("dags", "plugins"):
        (home / folder).mkdir(exist_ok=True)
    if not plugin_entry_point_installed():
        # Stand-in for the entry point until pyproject declares it (same class, same name).
        (home / "plugins" / "sfox_onboarding_plugin.py").write_text(
            "from airflow_sfox.plugins.onboarding import SfoxOnboardingPlugin  # noqa: F401\n"
        )
    (home / "passwords.json").write_text(json.dumps(dict.fromkeys((ADMIN_USER, VIEWER_USER), PASSWORD)))
    url = f"http://127.0.0.1:{api_port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url.replace(
                "postgresql://", "postgresql+psycopg2://", 1
            ),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER if auth == "fab" else SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin,{VIEWER_USER}:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            # Shared by every component, as docker-compose's .env does (else each generates its own).
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            # Without an issuer, Airflow 3.1.3 with a recent PyJWT (2.15) cannot sign tokens ("Issuer (iss)
            # must be a string"): /auth/token and the tasks' execution API tokens fail.
            "AIRFLOW__API_AUTH__JWT_ISSUER": "sfox-live-test",
            # Only the runs a test triggers (a module that needs the schedule turns it on).
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # A module's DAG files are found within seconds, not the default 5 minutes.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # Log servers of the scheduler (LocalExecutor) and triggerer: free ports, not 8793/8794.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    return env


class LiveAirflow:
    """A running Airflow: its REST base URL, an admin token, its processes and their logs."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        #: The environment it started with (``env`` is what its components run with now).
        self.base_env = dict(env)
        self.url = env["AIRFLOW__API__BASE_URL"]
        self.password = PASSWORD
        self.processes: list[Process] = []
        self.session = requests.Session()

    @property
    def dags_folder(self) -> Path:
        return Path(self.env["AIRFLOW__CORE__DAGS_FOLDER"])

    # --- processes -------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = MIGRATE_TIMEOUT) -> None:
        """One ``airflow`` command in the components' environment; its output goes to ``cli.log``."""
        log = self.home / "cli.log"
        with open(log, "ab") as out:
            out.write(f"$ airflow {' '.join(args)}\n".encode())
            out.flush()
            done = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                timeout=timeout,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}:\n{tail(log)}")

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        """Start one more process of this Airflow (in its home, stopped with it)."""
        process = Process(name, argv, env or self.env, self.home)
        self.processes.append(process)
        return process

    def start(self, components: Iterable[str] = COMPONENTS, *, login: bool = True) -> None:
        """Start ``components`` (after ``db migrate``); wait for the api-server; log in as ADMIN_USER."""
        for component in components:
            self.spawn(component, [sys.executable, "-m", "airflow", component])
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.check_alive()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"api-server not up in {START_TIMEOUT}s\n{self.report()}"
            time.sleep(1)
        if login:
            self.login()

    def restart(self, component: str, env: dict[str, str] | None = None) -> None:
        """Stop a component by its process group, then start it again (its log gets a new part)."""
        process = next(p for p in self.processes if p.name == component)
        process.stop()
        self.processes.remove(process)
        self.spawn(component, [sys.executable, "-m", "airflow", component], env)

    def stop(self) -> None:
        """Every process stopped: all asked at once (they shut down side by side), then waited for."""
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            process.stop()

    def check_alive(self) -> None:
        dead = [p for p in self.processes if not p.alive()]
        assert not dead, f"{', '.join(p.name for p in dead)} exited early\n{self.report()}"

    def report(self) -> str:
        """Tails of every component's log and of every task log, for a failure message."""
        parts = [process.report() for process in self.processes]
        for log in sorted((self.home / "logs").glob("dag_id=*/**/*.log")):
            parts.append(f"--- task log {log.relative_to(self.home / 'logs')} ---\n{tail(log, 25)}")
        return "\n".join(parts)

    # --- the REST API ----------------------------------------------------------------------

    def token(self, username: str = ADMIN_USER) -> str:
        """A JWT of a test user from the auth manager's ``POST /auth/token`` (simple and FAB alike)."""
        response = requests.post(
            f"{self.url}/auth/token", json={"username": username, "password": PASSWORD}, timeout=30
        )
        assert response.status_code == 201, response.text
        return str(response.json()["access_token"])

    def login(self) -> None:
        """Use ADMIN_USER's token for every later :meth:`api` call."""
        self.session.headers["Authorization"] = f"Bearer {self.token(ADMIN_USER)}"

    def as_user(self, username: str) -> ApiUser:
        """This Airflow as one of its users sees it: its URL and that user's tokens."""
        return ApiUser(self, username)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, f"{self.url}{path}", timeout=60, **kwargs)

    def set_connection(self, conn_id: str, conn_json: str) -> None:
        """Create or replace a connection in the metadata DB from its JSON (``AIRFLOW_CONN_*``) form."""
        conn = json.loads(conn_json)
        body = {"connection_id": conn_id, **{k: v for k, v in conn.items() if k != "extra"}}
        if "extra" in conn:
            body["extra"] = json.dumps(conn["extra"])
        self.api("DELETE", f"/api/v2/connections/{conn_id}")
        created = self.api("POST", "/api/v2/connections", json=body)
        assert created.status_code == 201, created.text

    def pause_all(self) -> None:
        """Pause every unpaused DAG: nothing of one test module runs into the next."""
        response = self.api("GET", "/api/v2/dags", params={"paused": False, "limit": 100})
        assert response.status_code == 200, response.text
        for dag in response.json()["dags"]:
            paused = self.api("PATCH", f"/api/v2/dags/{dag['dag_id']}", json={"is_paused": True})
            assert paused.status_code == 200, paused.text

    def wait_for_dag(self, dag_id: str) -> None:
        """Until the dag-processor has parsed the DAG file and the API knows the DAG."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.check_alive()
            response = self.api("GET", f"/api/v2/dags/{dag_id}")
            if response.status_code == 200:
                return
            assert response.status_code == 404, response.text
            assert time.monotonic() < deadline, f"DAG not parsed in {START_TIMEOUT}s\n{self.report()}"
            time.sleep(2)

    def task_states(self, run_id: str, dag_id: str) -> list[tuple[str, int, str | None]]:
        response = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        assert response.status_code == 200, response.text
        instances = response.json()["task_instances"]
        return sorted((ti["task_id"], ti["map_index"], ti["state"]) for ti in instances)

    def wait_for_run(self, run_id: str, dag_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        """Until the run is final; the run (as the API answers it)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            response = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            assert response.status_code == 200, response.text
            run = response.json()
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                states = self.task_states(run_id, dag_id)
                pytest.fail(f"run still {run['state']} after {timeout}s\n{states}\n{self.report()}")
            time.sleep(2)

    # --- the FAB auth manager --------------------------------------------------------------

    def set_up_fab(self, roles: list[dict[str, str]], users: dict[str, str]) -> None:
        """The DAGs into the metadata DB with their FAB permissions, ``roles``, ``users`` (name -> role)."""
        self.cli("dags", "reserialize")  # the DAGs into the metadata DB, as the DAG processor would
        self.cli("sync-perm", "--include-dags")  # creates the DAG:<dag_id> resources
        roles_file = self.home / "roles.json"
        roles_file.write_text(json.dumps(roles))
        self.cli("roles", "import", str(roles_file))
        for name, role in users.items():  # ``users import`` sets no password: one ``users create`` each
            self.cli(
                "users", "create", "--username", name, "--password", PASSWORD, "--role", role,
                "--firstname", name, "--lastname", "test", "--email", f"{name}@example.invalid",
            )  # fmt: skip


class ApiUser:
    """A user of a live Airflow: ``url``, and ``token()`` of that user."""

    def __init__(self, airflow: LiveAirflow, username: str) -> None:
        self.airflow = airflow
        self.url = airflow.url
        self.username = username

    def token(self, username: str | None = None) -> str:
        return self.airflow.token(username or self.username)


#: The FAB auth manager's test set-up (``api_server(auth="fab")``): the onboarding DAG the page
#: shows by default ([sfox] onboarding_dag_ids) and another one, roles with read on one DAG
#: each, and users of those roles (all with PASSWORD).
ONBOARDING_DAG_ID, OTHER_DAG_ID = "sfox_batch_onboarding", "sfox_unrelated"
OTHER_DAG_SOURCE = f"""
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("{OTHER_DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    EmptyOperator(task_id="nothing")
"""
FAB_ROLES = [
    {"name": "sfox_onboarding_reader", "resource": f"DAG:{ONBOARDING_DAG_ID}", "action": "can_read"},
    {"name": "sfox_outsider", "resource": f"DAG:{OTHER_DAG_ID}", "action": "can_read"},
]
FAB_USERS = {
    "onboarding_reader": "sfox_onboarding_reader",
    "outsider": "sfox_outsider",
    "viewer": "Viewer",  # FAB's built-in role: read on every DAG
}


@contextlib.contextmanager
def api_server(home: Path, warehouse_conn_json: str, *, auth: str = "simple") -> Iterator[LiveAirflow]:
    """
    An Airflow of one api-server (SQLite metadata DB), ``sfox_warehouse`` at ``warehouse_conn_json``;
    with ``auth="fab"``, the FAB auth manager with FAB_USERS and FAB_ROLES over two real DAGs.
    Stopped (by its process group id) whatever happens.
    """
    env = airflow_env(home, free_port(), f"sqlite:///{home}/airflow.db", auth=auth)
    env["AIRFLOW_CONN_SFOX_WAREHOUSE"] = warehouse_conn_json
    server = LiveAirflow(home, env)
    try:
        server.cli("db", "migrate")
        if auth == "fab":
            shutil.copy(REPO / "dags" / f"{ONBOARDING_DAG_ID}.py", server.dags_folder)
            (server.dags_folder / f"{OTHER_DAG_ID}.py").write_text(OTHER_DAG_SOURCE)
            server.set_up_fab(FAB_ROLES, FAB_USERS)
        server.start(("api-server",), login=auth == "simple")  # FAB has no ADMIN_USER
        yield server
    finally:
        server.stop()


def copy_repo_dags(folder: Path) -> None:
    """The repository's DAG files into a live DAG folder."""
    for path in (REPO / "dags").glob("*.py"):
        shutil.copy(path, folder / path.name)


def ts(text: str) -> datetime:
    """A time as the REST API writes it."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_onboarding(
    airflow: LiveAirflow, sandbox: str, dag_id: str, users: list[tuple] = USERS, conf: dict = CONF
) -> tuple[str, dict]:
    """Register ``users`` with the sandbox, unpause ``dag_id``, trigger it with ``conf``; wait for the run."""
    registered = requests.post(f"{sandbox}/_sandbox/users", json=sandbox_users(users), timeout=30)
    assert registered.status_code == 200, registered.text
    airflow.wait_for_dag(dag_id)
    unpaused = airflow.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    assert unpaused.status_code == 200, unpaused.text
    assert unpaused.json()["is_paused"] is False
    run_id = f"live_{uuid.uuid4().hex[:8]}"
    triggered = airflow.api(
        "POST",
        f"/api/v2/dags/{dag_id}/dagRuns",
        json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
    )
    assert triggered.status_code == 200, triggered.text
    assert triggered.json()["conf"] == conf
    return run_id, airflow.wait_for_run(run_id, dag_id)


def warehouse_sql(uri: str) -> Callable[..., list[tuple]]:
    """``execute(sql, rows=None, params=())`` on a PostgreSQL warehouse: the rows it returns, if any."""
    import psycopg2

    def execute(sql: str, rows: list[tuple] | None = None, params: tuple = ()) -> list[tuple]:
        with psycopg2.connect(uri) as conn, conn.cursor() as cursor:
            if rows is None:
                cursor.execute(sql, params or None)
            else:
                cursor.executemany(sql, rows)
            result = cursor.fetchall() if cursor.description else []
        conn.close()
        return result

    return execute


def create_source_table(execute: Callable[..., list[tuple]], rows: list[tuple]) -> None:
    """The source table ``sfox_users`` with ``rows`` (user_id, account_type, email, phone_number)."""
    execute(
        "CREATE TABLE sfox_users (user_id VARCHAR(300), account_type VARCHAR(40), "
        "email VARCHAR(300), phone_number VARCHAR(40))"
    )
    execute("INSERT INTO sfox_users VALUES (%s, %s, %s, %s)", rows)
