"""
The plugin's JSON endpoints against a real SQLite ledger with known figures (FastAPI TestClient),
and its authorization dependency against a fake auth manager with per-DAG read rights.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from fastapi import HTTPException
from fastapi.testclient import TestClient

from airflow_sfox.plugins.app import create_app, dag_ids_from_config
from airflow_sfox.plugins.dashboard import LEDGER_INDEXES, TTLCache, ledger_indexes
from tests.plugins.ledger_data import (
    EXPECTED_FAILURES,
    EXPECTED_FUNNEL,
    EXPECTED_REASONS,
    GAVE_UP_REASON,
    RUNS,
    build_ledger,
    sqlite_conn_json,
)


@pytest.fixture
def ledger_path(tmp_path, monkeypatch) -> str:
    """A SQLite warehouse with the known ledger, as ``sfox_warehouse``."""
    path = str(tmp_path / "warehouse.db")
    build_ledger(path)
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", sqlite_conn_json(path))
    return path


class FakeUser:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeAuthManager:
    """
    Per-DAG read rights, ``{user name: readable dag ids}``; records every question.

    ``batch_is_authorized_dag`` is Airflow's own default, which asks ``is_authorized_dag`` once
    per request: the dependency is checked against the auth-manager API it really calls.
    """

    batch_is_authorized_dag = BaseAuthManager.batch_is_authorized_dag

    def __init__(self, readable: dict[str, set[str]]) -> None:
        self.readable = readable
        self.calls: list[tuple] = []

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        self.calls.append((method, user.name, access_entity, details))
        return (
            method == "GET"
            and access_entity is None
            and details is not None
            and details.id in self.readable.get(user.name, set())
        )


#: Who may read which DAG in these tests.
RIGHTS = {"reader": {"sfox_batch_onboarding"}, "outsider": {"some_other_dag"}}


def _client(user: str | None = "reader", manager: FakeAuthManager | None = None) -> TestClient:
    """The app as ``user`` (``None``: anonymous), authorized by ``manager`` (default: :data:`RIGHTS`)."""
    from airflow.api_fastapi.core_api.security import get_user

    manager = manager or FakeAuthManager(RIGHTS)
    app = create_app(cache_seconds=0, auth_manager=lambda: manager)
    if user is not None:
        # Unit level only: Airflow's own token check is proven against a live api-server.
        app.dependency_overrides[get_user] = lambda: FakeUser(user)
    return TestClient(app)


def test_summary_funnel_matches_the_ledger(ledger_path):
    response = _client().get("/api/summary")
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["conn_id"] == "sfox_warehouse"
    assert data["ledger_missing"] is False
    assert data["refresh_seconds"] == 10
    funnel = {row["account_type"]: row for row in data["funnel"]}
    assert [row["account_type"] for row in data["funnel"]] == ["individual", "corporation", None]
    for account_type, expected in EXPECTED_FUNNEL.items():
        assert {k: funnel[account_type][k] for k in expected} == expected, account_type
    assert funnel["corporation"]["channels"] == ["email"]
    assert funnel["individual"]["channels"] == ["email", "sms"]
    assert data["totals"]["seen"] == 17
    assert data["totals"]["verified"] == 4
    assert data["totals"]["failed"] == 3
    assert data["totals"]["rejected"] == 3


def test_summary_reasons_failures_and_runs(ledger_path):
    data = _client().get("/api/summary").json()
    assert data["reasons"] == EXPECTED_REASONS
    failures = [(f["user_id"], f["channel"], f["state"]) for f in data["recent_failures"]]
    assert failures == EXPECTED_FAILURES
    first, second = data["recent_failures"][:2]
    assert (first["last_status"], first["reason"]) == (404, GAVE_UP_REASON)
    assert first["updated_at"] == "2026-03-02T06:00:00+00:00"
    assert second["last_status"] == 500
    assert second["reason"] == "HTTP 500 after 3 attempts"
    assert second["updated_at"] == "2026-03-02T05:00:00+00:00"

    runs = data["runs"]
    assert [r["run_id"] for r in runs] == [RUNS[1]["run_id"], RUNS[0]["run_id"]]  # newest first
    running, finished = runs
    assert running["status"] == "running"
    assert running["duration_seconds"] is None
    assert finished["duration_seconds"] == 150.0
    assert finished["requests"] == 120
    assert finished["requests_per_second"] == 0.8
    assert finished["rate_limited"] == 4
    assert finished["failed"] == 3
    assert finished["started_at"] == "2026-03-01T10:00:00+00:00"
    assert finished["dry_run"] is False


def test_summary_holds_no_personal_data(ledger_path):
    with sqlite3.connect(ledger_path) as conn:
        conn.execute("UPDATE sfox_onboarding_ledger SET last_error = 'x' WHERE user_id = 'nobody'")
    text = _client().get("/api/summary").text
    assert "@" not in text
    assert "+1" not in text


def test_missing_ledger_is_an_empty_page(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", sqlite_conn_json(str(tmp_path / "empty.db")))
    data = _client().get("/api/summary").json()
    assert data["ledger_missing"] is True
    assert data["funnel"] == []
    assert data["runs"] == []


def test_settings_come_from_airflow_config(ledger_path, tmp_path, monkeypatch):
    other = str(tmp_path / "other.db")
    build_ledger(other)
    with sqlite3.connect(other) as conn:
        conn.execute("ALTER TABLE sfox_onboarding_ledger RENAME TO my_ledger")
        conn.execute("DELETE FROM my_ledger WHERE account_type IS NULL")
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_WAREHOUSE", sqlite_conn_json(other))
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_WAREHOUSE_CONN_ID", "other_warehouse")
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_LEDGER_TABLE", "my_ledger")
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_REFRESH_SECONDS", "30")
    data = _client().get("/api/summary").json()
    assert data["conn_id"] == "other_warehouse"
    assert data["ledger_table"] == "my_ledger"
    assert data["refresh_seconds"] == 30
    assert [row["account_type"] for row in data["funnel"]] == ["individual", "corporation"]


def test_bad_settings_and_connections_are_reported_without_details(monkeypatch):
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_LEDGER_TABLE", "x; DROP TABLE y")
    response = _client().get("/api/summary")
    assert response.status_code == 500
    assert "ledger_table must be a SQL identifier" in response.json()["detail"]

    monkeypatch.delenv("AIRFLOW__SFOX__ONBOARDING_LEDGER_TABLE")
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_WAREHOUSE_CONN_ID", "no_such_conn")
    response = _client().get("/api/summary")
    assert response.status_code == 503
    assert "'no_such_conn'" in response.json()["detail"]


def test_page_and_static_files(ledger_path):
    client = _client()
    page = client.get("/")
    assert page.status_code == 200
    assert "sFOX onboarding" in page.text
    assert page.headers["cache-control"] == "no-store"
    for asset in ("dashboard.js", "dashboard.css", "icon.svg", "icon-dark.svg"):
        assert client.get(f"/static/{asset}").status_code == 200, asset
    # Everything is served by the plugin: no external script, style or font.
    assert "http" not in page.text.replace('xmlns="http', "")
    assert "http://www.w3.org/2000/svg" in client.get("/static/dashboard.js").text
    assert "https://" not in client.get("/static/dashboard.js").text


def test_anonymous_requests_are_refused(ledger_path):
    manager = FakeAuthManager(RIGHTS)
    client = _client(user=None, manager=manager)
    assert client.get("/api/summary").status_code == 401
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303  # to Airflow's login page
    assert manager.calls == []  # no user, no question to the auth manager
    # The static files hold no data: open to anyone.
    assert client.get("/static/dashboard.js").status_code == 200


def test_reader_is_asked_for_get_on_the_onboarding_dag(ledger_path):
    manager = FakeAuthManager(RIGHTS)
    client = _client("reader", manager)
    assert client.get("/api/summary").status_code == 200
    assert client.get("/").status_code == 200
    assert len(manager.calls) == 2
    for method, user, access_entity, details in manager.calls:
        assert (method, user, access_entity) == ("GET", "reader", None)
        assert (details.id, details.team_name) == ("sfox_batch_onboarding", None)


def test_user_without_read_on_the_dag_is_forbidden(ledger_path):
    client = _client("outsider")
    response = client.get("/api/summary")
    assert response.status_code == 403
    assert "sfox_batch_onboarding" in response.json()["detail"]
    assert "funnel" not in response.text
    # The page answers 403 too (a short page, not a redirect: logging in again would not help).
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "read access to the DAG(s) sfox_batch_onboarding" in page.text
    assert "client_" not in page.text


def test_invalid_token_sends_the_page_to_the_login(ledger_path):
    from airflow.api_fastapi.core_api.security import get_user

    def invalid_token():
        raise HTTPException(status_code=403, detail="Invalid JWT token")  # what get_user raises

    app = create_app(cache_seconds=0, auth_manager=lambda: FakeAuthManager(RIGHTS))
    app.dependency_overrides[get_user] = invalid_token
    client = TestClient(app)
    assert client.get("/", follow_redirects=False).status_code == 303
    assert client.get("/api/summary").status_code == 403


def test_every_configured_dag_must_be_readable(ledger_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_DAG_IDS", " sfox_batch_onboarding, sfox_followup ,")
    rights = {"reader": {"sfox_batch_onboarding"}, "both": {"sfox_batch_onboarding", "sfox_followup"}}
    manager = FakeAuthManager(rights)
    assert _client("reader", manager).get("/api/summary").status_code == 403
    assert _client("reader", manager).get("/").status_code == 403
    manager.calls.clear()
    assert _client("both", manager).get("/api/summary").status_code == 200
    assert [details.id for *_, details in manager.calls] == ["sfox_batch_onboarding", "sfox_followup"]


def test_no_configured_dag_is_refused_not_opened(ledger_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_DAG_IDS", " , ")
    response = _client("reader").get("/api/summary")
    assert response.status_code == 500
    assert "onboarding_dag_ids" in response.json()["detail"]


def test_dag_ids_setting_is_parsed(monkeypatch):
    assert dag_ids_from_config() == ("sfox_batch_onboarding",)  # the declared default
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_DAG_IDS", "a, b,,a , c")
    assert dag_ids_from_config() == ("a", "b", "c")


def test_team_of_the_dag_is_passed_in_multi_team_mode(ledger_path, monkeypatch):
    from airflow.models.dag import DagModel

    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    monkeypatch.setattr(DagModel, "get_team_name", staticmethod(lambda dag_id, **_: f"team_of_{dag_id}"))
    manager = FakeAuthManager(RIGHTS)
    assert _client("reader", manager).get("/api/summary").status_code == 200
    assert manager.calls[0][3].team_name == "team_of_sfox_batch_onboarding"


_PLUGIN_SCRIPT = """
import json
from airflow_sfox.plugins.onboarding import SfoxOnboardingPlugin as P
print("PLUGIN=" + json.dumps({"apps": [a["url_prefix"] for a in P.fastapi_apps],
                              "views": [v["name"] for v in P.external_views]}))
"""


@pytest.mark.parametrize(
    ("enabled", "apps", "views"),
    [(None, ["/sfox-onboarding"], ["sFOX"]), ("False", [], [])],
)
def test_switch_registers_no_app_and_no_view(enabled, apps, views):
    """``[sfox] onboarding_page_enabled`` is read when the plugin class is built (a fresh process)."""
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__SFOX__ONBOARDING_PAGE_ENABLED"}
    if enabled is not None:
        env["AIRFLOW__SFOX__ONBOARDING_PAGE_ENABLED"] = enabled
    out = subprocess.run(
        [sys.executable, "-c", _PLUGIN_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("PLUGIN="))
    assert json.loads(line.removeprefix("PLUGIN=")) == {"apps": apps, "views": views}


def test_cache_serves_one_summary_for_a_while():
    now = [100.0]
    cache = TTLCache(5, clock=lambda: now[0])
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"n": len(calls)}

    assert cache.get("k", compute) == {"n": 1}
    now[0] += 4
    assert cache.get("k", compute) == {"n": 1}
    now[0] += 2
    assert cache.get("k", compute) == {"n": 2}
    assert cache.get("other", compute) == {"n": 3}


def test_proposed_indexes_serve_the_queries(ledger_path):
    """With the proposed indexes, SQLite answers every page query from an index."""
    from airflow_sfox.onboarding.warehouse import Warehouse
    from airflow_sfox.plugins.dashboard import Dashboard, DashboardSettings
    from tests.plugins.ledger_data import SqliteFileHook

    assert ledger_indexes("s.l")[0].startswith("CREATE INDEX IF NOT EXISTS ix_s_l_funnel ON s.l ")
    with sqlite3.connect(ledger_path) as conn:
        for statement in LEDGER_INDEXES:
            conn.execute(statement)
        plans = []

        class Recorder:
            """The part of a SQLAlchemy connection the page uses: raw SQL, with its query plan."""

            def exec_driver_sql(self, sql, params=()):
                plans.append(" | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)))
                self._rows = conn.execute(sql, params).fetchall()
                return self

            def fetchall(self):
                return self._rows

        dashboard = Dashboard(Warehouse(SqliteFileHook(ledger_path)), DashboardSettings())
        recorder = Recorder()
        dashboard.funnel(recorder)
        dashboard.reasons(recorder)
        dashboard.recent_failures(recorder)
    assert "COVERING INDEX ix_sfox_onboarding_ledger_funnel" in plans[0]
    assert "COVERING INDEX ix_sfox_onboarding_ledger_funnel" in plans[1]
    for plan in plans:  # no step reads the table itself row by row
        for step in plan.split(" | "):
            assert not step.startswith("SCAN") or "INDEX" in step, plan
