"""
A live Airflow api-server and a headless Chromium for the plugin's end-to-end tests.

The api-server runs as a subprocess with its own AIRFLOW_HOME (a tmp dir): SQLite metadata DB,
the simple auth manager with one known user, the plugin registered through its
``airflow.plugins`` entry point, or, while the installed package does not declare it yet,
through a one-line file in the plugins folder. Chromium and chromedriver are the Debian
packages (installed with apt-get when missing); Selenium is pointed at them explicitly and
never downloads anything.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

PLUGIN_CLASS = "airflow_sfox.plugins.onboarding:SfoxOnboardingPlugin"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USERNAME = "compliance"
PASSWORD = secrets.token_urlsafe(12)
#: Bounded waits, generous for a busy 2-core machine.
MIGRATE_TIMEOUT = 600
START_TIMEOUT = 240


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plugin_entry_point_installed() -> bool:
    """Whether the installed distribution declares the plugin's ``airflow.plugins`` entry point."""
    return any(ep.value == PLUGIN_CLASS for ep in entry_points(group="airflow.plugins"))


def ensure_chromium() -> None:
    """Install the Debian ``chromium`` and ``chromium-driver`` packages when missing (needs root)."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    from tests.tiers import require_installable

    require_installable("chromium", False, "Debian's chromium/chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    subprocess.run(["apt-get", *lock, "update", "-qq"], check=True, env=env, timeout=900)
    subprocess.run(
        ["apt-get", *lock, "install", "-y", "-qq", "chromium", "chromium-driver"],
        check=True,
        env=env,
        timeout=1800,
    )


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

    def __init__(self, home: Path, warehouse_conn_json: str) -> None:
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
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                # A viewer: the page needs a login, not an admin.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:viewer",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW_CONN_SFOX_WAREHOUSE": warehouse_conn_json,
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")]),
            }
        )
        return env

    def _airflow(self) -> list[str]:
        return [sys.executable, "-m", "airflow"]

    def start(self) -> None:
        """Migrate the metadata DB, start the api-server and wait until it answers."""
        subprocess.run(
            [*self._airflow(), "db", "migrate"],
            env=self.env,
            check=True,
            timeout=MIGRATE_TIMEOUT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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

    def token(self) -> str:
        """A JWT of the test user from the simple auth manager's ``POST /auth/token``."""
        status, body, _ = http(
            "POST", f"{self.url}/auth/token", body={"username": USERNAME, "password": PASSWORD}
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
