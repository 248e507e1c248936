"""
A live Airflow api-server and a headless Chromium for the plugin's end-to-end tests.

The api-server runs as a subprocess with its own AIRFLOW_HOME (a tmp dir): SQLite metadata DB,
the simple auth manager with one known user (or, with ``auth="fab"``, the FAB auth manager with
real users and roles that have per-DAG permissions), the plugin registered through its
``airflow.plugins`` entry point, or, while the installed package does not declare it yet,
through a one-line file in the plugins folder. Chromium and chromedriver are the Debian
packages (installed by ``make services``); Selenium is pointed at them explicitly and
never downloads anything.
"""

from __future__ import annotations

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
from importlib.metadata import entry_points
from pathlib import Path

from tests.tiers import free_port

PLUGIN_CLASS = "airflow_sfox.plugins.onboarding:SfoxOnboardingPlugin"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USERNAME = "compliance"
PASSWORD = secrets.token_urlsafe(12)
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
#: The onboarding DAG the page shows by default ([sfox] onboarding_dag_ids) and another one.
ONBOARDING_DAG_ID = "sfox_batch_onboarding"
OTHER_DAG_ID = "sfox_unrelated"
ONBOARDING_DAG_FILE = Path(__file__).parents[2] / "dags" / f"{ONBOARDING_DAG_ID}.py"
OTHER_DAG_SOURCE = f"""
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("{OTHER_DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    EmptyOperator(task_id="nothing")
"""
#: FAB roles, imported with ``airflow roles import``: read on one DAG each, nothing else.
FAB_ROLES = [
    {"name": "sfox_onboarding_reader", "resource": f"DAG:{ONBOARDING_DAG_ID}", "action": "can_read"},
    {"name": "sfox_outsider", "resource": f"DAG:{OTHER_DAG_ID}", "action": "can_read"},
]
#: FAB users (``airflow users create``): user name -> role; all share PASSWORD.
FAB_USERS = {
    "onboarding_reader": "sfox_onboarding_reader",
    "outsider": "sfox_outsider",
    "viewer": "Viewer",  # FAB's built-in role: read on every DAG
}
#: Bounded waits, generous for a busy 2-core machine.
MIGRATE_TIMEOUT = 600
START_TIMEOUT = 240


def plugin_entry_point_installed() -> bool:
    """Whether the installed distribution declares the plugin's ``airflow.plugins`` entry point."""
    return any(ep.value == PLUGIN_CLASS for ep in entry_points(group="airflow.plugins"))


def ensure_chromium() -> None:
    """Skip (or fail) the chromium tier's test unless Debian's chromium and chromium-driver are installed."""
    from tests.tiers import require_service

    present = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
    require_service("chromium", present, "Chromium (chromium, chromium-driver)")


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


class LiveAirflow:
    """A running ``airflow api-server`` subprocess."""

    def __init__(self, home: Path, warehouse_conn_json: str, *, auth: str = "simple") -> None:
        """
        :param auth: ``"simple"`` (one viewer, USERNAME) or ``"fab"`` (FAB_USERS and FAB_ROLES).
        """
        if auth not in ("simple", "fab"):
            raise ValueError(f"auth must be 'simple' or 'fab', got {auth!r}")
        self.auth = auth
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "api-server.log"
        self.process: subprocess.Popen | None = None
        self.env = self._environment(warehouse_conn_json)

    def _environment(self, warehouse_conn_json: str) -> dict[str, str]:
        home = self.home
        (home / "dags").mkdir()
        plugins = home / "plugins"
        plugins.mkdir()
        if not plugin_entry_point_installed():
            # Stand-in for the entry point until pyproject declares it (same class, same name).
            (plugins / "sfox_onboarding_plugin.py").write_text(
                "from airflow_sfox.plugins.onboarding import SfoxOnboardingPlugin  # noqa: F401\n"
            )
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({USERNAME: PASSWORD}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SFOX_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER
                if self.auth == "fab"
                else SIMPLE_AUTH_MANAGER,
                # A viewer: the page needs read access to the onboarding DAG, which viewers have.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:viewer",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                # Airflow 3.1 with PyJWT 2.10+ issues no usable token without an issuer.
                "AIRFLOW__API_AUTH__JWT_ISSUER": "sfox-live-tests",
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW_CONN_SFOX_WAREHOUSE": warehouse_conn_json,
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")]),
            }
        )
        return env

    def _airflow(self) -> list[str]:
        return [sys.executable, "-m", "airflow"]

    def cli(self, *args: str, timeout: float = MIGRATE_TIMEOUT) -> None:
        """One ``airflow`` command in the server's environment; its output goes to ``cli.log``."""
        with open(self.home / "cli.log", "ab") as log:
            log.write(f"$ airflow {' '.join(args)}\n".encode())
            log.flush()
            done = subprocess.run(
                [*self._airflow(), *args], env=self.env, timeout=timeout, stdout=log, stderr=subprocess.STDOUT
            )
        if done.returncode:
            tail = "\n".join((self.home / "cli.log").read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}:\n{tail}")

    def _set_up_fab(self) -> None:
        """Real DAGs, their FAB permissions, roles with read on one DAG each, and the users."""
        dags = self.home / "dags"
        shutil.copy(ONBOARDING_DAG_FILE, dags / ONBOARDING_DAG_FILE.name)
        (dags / f"{OTHER_DAG_ID}.py").write_text(OTHER_DAG_SOURCE)
        self.cli("dags", "reserialize")  # the DAGs into the metadata DB, as the DAG processor would
        self.cli("sync-perm", "--include-dags")  # creates the DAG:<dag_id> resources
        roles = self.home / "roles.json"
        roles.write_text(json.dumps(FAB_ROLES))
        self.cli("roles", "import", str(roles))
        for name, role in FAB_USERS.items():
            self.cli(
                "users", "create", "--username", name, "--password", PASSWORD, "--role", role,
                "--firstname", name, "--lastname", "test", "--email", f"{name}@example.invalid",
            )  # fmt: skip

    def start(self) -> None:
        """Migrate the metadata DB (and set up FAB), start the api-server and wait until it answers."""
        self.cli("db", "migrate")
        if self.auth == "fab":
            self._set_up_fab()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*self._airflow(), "api-server", "--host", "127.0.0.1", "--port", str(self.port), "-w", "1"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one, by our pid
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"api-server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if http("GET", f"{self.url}/api/v2/monitor/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"api-server did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        """The end of the api-server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the api-server's process group (started by us), politely first."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def token(self, username: str = USERNAME) -> str:
        """A JWT of a test user from the auth manager's ``POST /auth/token`` (simple and FAB alike)."""
        status, body, _ = http(
            "POST", f"{self.url}/auth/token", body={"username": username, "password": PASSWORD}
        )
        assert status == 201, (status, body)
        assert isinstance(body, dict)
        return body["access_token"]


def start_chromium(user_data_dir: Path):  # -> selenium WebDriver
    """Headless Debian Chromium driven through the Debian chromedriver; nothing is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,1150",
        "--force-prefers-reduced-motion",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(user_data_dir.parent / "chromedriver.log"))
    try:
        return webdriver.Chrome(service=service, options=options)
    except Exception:
        if service.process is not None and service.process.poll() is None:
            service.process.kill()  # the chromedriver we started, by its pid
        raise
