"""
The plugin's JSON endpoints against a real SQLite ledger with known figures (FastAPI TestClient),
and its authorization dependency against a fake auth manager with per-DAG read rights.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest
from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
from fastapi import HTTPException
from fastapi.testclient import TestClient

from airflow_sfox.onboarding.outcomes import LOST_ERROR
from airflow_sfox.onboarding.warehouse import Warehouse
from airflow_sfox.plugins.app import TTLCache, create_app, dag_ids_from_config
from airflow_sfox.plugins.dashboard import LEDGER_INDEXES, DashboardSettings, ledger_indexes
from tests.plugins.ledger_data import (
    ATTEMPT_ROWS,
    EXPECTED_FAILURES,
    EXPECTED_FUNNEL,
    EXPECTED_REASONS,
    EXPECTED_RUN_0_ATTEMPT_REASONS,
    EXPECTED_RUN_0_OUTCOMES,
    GAVE_UP_REASON,
    LEDGER_ROWS,
    ODD_ID_ATTEMPTS,
    ODD_ID_ROWS,
    RUN_0,
    RUN_1,
    RUNS,
    build_ledger,
    fill_warehouse,
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


def _client(user: str | None = "reader", manager: FakeAuthManager | None = None, **app_kwargs) -> TestClient:
    """The app as ``user`` (``None``: anonymous), authorized by ``manager`` (default: :data:`RIGHTS`)."""
    from airflow.api_fastapi.core_api.security import get_user

    manager = manager or FakeAuthManager(RIGHTS)
    app = create_app(cache_seconds=0, auth_manager=lambda: manager, **app_kwargs)
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
                              "views": [[v["destination"], v["url_route"]] for v in P.external_views]}))
"""
ROUTES = [["nav", "sfox-onboarding"], ["dag", "sfox-onboarding-dag"], ["dag_run", "sfox-onboarding-run"]]


@pytest.mark.parametrize(
    ("enabled", "apps", "views"),
    [(None, ["/sfox-onboarding"], ROUTES), ("False", [], [])],
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


@pytest.mark.parametrize(
    ("destination", "href"),
    [
        ("nav", "sfox-onboarding/"),
        ("dag", "sfox-onboarding/#dag_id={DAG_ID}"),
        ("dag_run", "sfox-onboarding/#dag_id={DAG_ID}&run_id={RUN_ID}"),
    ],
)
def test_views_open_the_page_with_the_ids_of_the_dag_or_run(destination, href):
    """Each view is one Airflow accepts (its own response model) and opens the page with its ids."""
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    from airflow_sfox.plugins.onboarding import VIEWS

    view = next(v for v in VIEWS if v["destination"] == destination)
    assert ExternalViewResponse.model_validate(view).destination == destination
    assert view["href"] == href
    assert not view["href"].startswith("/")  # relative to the UI's base: works under a sub-path
    assert view["url_route"]  # a tab needs a route of its own
    assert len({v["url_route"] for v in VIEWS}) == len(VIEWS)  # the UI finds a view by route alone


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


def _record_selects(warehouse: Warehouse) -> list[tuple[str, tuple]]:
    """The SELECT statements the page sends through this warehouse's engine, with their parameters."""
    import sqlalchemy as sa

    statements: list[tuple[str, tuple]] = []

    @sa.event.listens_for(warehouse.engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "sqlite_" not in statement:
            statements.append((statement, tuple(parameters)))

    return statements


def _plans(path: str, statements: list[tuple[str, tuple]]) -> list[list[str]]:
    """SQLite's query plan of each statement, one step a line."""
    with sqlite3.connect(path) as conn:
        return [
            [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            for sql, params in statements
        ]


def test_proposed_indexes_serve_the_queries(ledger_path):
    """With the proposed indexes, SQLite answers every page query from an index."""
    from airflow_sfox.plugins.lookups import Lookups as Dashboard
    from tests.plugins.ledger_data import SqliteFileHook

    assert ledger_indexes("s.l")[0].startswith("CREATE INDEX IF NOT EXISTS ix_s_l_funnel ON s.l ")
    with sqlite3.connect(ledger_path) as conn:
        for statement in LEDGER_INDEXES:
            conn.execute(statement)
    warehouse = Warehouse(SqliteFileHook(ledger_path))
    statements = _record_selects(warehouse)
    Dashboard(warehouse, DashboardSettings()).summary()
    warehouse.engine.dispose()
    plans = [" | ".join(plan) for plan in _plans(ledger_path, statements)]
    ledger_plans = [
        plan for (sql, _), plan in zip(statements, plans, strict=True) if "sfox_onboarding_runs" not in sql
    ]
    assert "COVERING INDEX ix_sfox_onboarding_ledger_funnel" in ledger_plans[0]  # the funnel
    assert "COVERING INDEX ix_sfox_onboarding_ledger_funnel" in ledger_plans[1]  # users without email
    for plan in ledger_plans:  # no step reads the ledger itself row by row
        for step in plan.split(" | "):
            assert not step.startswith("SCAN") or "INDEX" in step, plan


# --- the user lookup and the run view, on SQLite, PostgreSQL and MariaDB -----------------------

#: The partner's source table beside the ledger: the lookups must never read it.
SOURCE_ROWS = [
    ("ind_4", "individual", "ind4.private@example.com", "+12025550104"),
    ("abc", "corporation", "abc.private@example.com", None),
]


@pytest.fixture
def lookup_db(warehouse_db):
    """The known ledger, the odd user ids and their attempts, and a source with emails and phones."""
    warehouse_db.seed(SOURCE_ROWS)
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    fill_warehouse(warehouse, LEDGER_ROWS + ODD_ID_ROWS, ATTEMPT_ROWS + ODD_ID_ATTEMPTS)
    warehouse.engine.dispose()
    return warehouse_db


def _user(client: TestClient, user_id: str):
    return client.get("/api/user", params={"user_id": user_id})


def _run(client: TestClient, run_id: str):
    return client.get("/api/run", params={"run_id": run_id})


def test_user_lookup_shows_both_channels_and_the_timeline_newest_first(lookup_db):
    response = _user(_client(), "ind_4")
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["user_id"] == "ind_4"
    ledger = {row["channel"]: row for row in data["ledger"]}
    assert [row["channel"] for row in data["ledger"]] == ["email", "sms"]
    assert (ledger["email"]["state"], ledger["email"]["sends"], ledger["email"]["attempts"]) == (
        "verified",
        1,
        1,
    )
    sms = ledger["sms"]
    assert (sms["state"], sms["sends"], sms["attempts"], sms["uncertain"]) == ("failed", 0, 3, False)
    assert (sms["last_status"], sms["last_error"], sms["run_id"]) == (500, "HTTP 500 after 3 attempts", RUN_0)
    assert sms["first_request_at"] == "2026-03-01T10:01:04+00:00"
    assert sms["last_request_at"] == "2026-03-01T10:01:07+00:00"
    assert sms["failures"] == 0
    mine = sorted((a for a in ATTEMPT_ROWS if a[0] == "ind_4"), key=lambda a: a[3], reverse=True)
    timeline = [
        (a["channel"], a["run_id"], a["attempt"], a["status"], a["outcome"], a["uncertain"], a["error"])
        for a in data["attempts"]
    ]
    assert timeline == [(a[1], a[2], a[4], a[5], a[6], bool(a[7]), a[8]) for a in mine]
    assert data["attempts"][0]["attempted_at"] == "2026-03-01T10:01:07+00:00"
    assert (data["attempts_total"], data["attempts_limit"]) == (4, 200)


def test_user_lookup_caps_the_timeline_and_says_how_many_there_are(lookup_db):
    client = _client(settings=lambda: DashboardSettings(timeline=2))
    data = _user(client, "ind_4").json()
    assert [a["attempted_at"] for a in data["attempts"]] == [
        "2026-03-01T10:01:07+00:00",
        "2026-03-01T10:01:05+00:00",
    ]
    assert (data["attempts_total"], data["attempts_limit"]) == (4, 2)


def test_user_lookup_shows_a_lost_request_as_uncertain(lookup_db):
    data = _user(_client(), "ind_8").json()
    assert [(r["channel"], r["state"], r.get("uncertain"), r.get("run_id")) for r in data["ledger"]] == [
        ("email", "queued", True, RUN_1),
        ("sms", None, None, None),  # an individual's sms: not planned before its email is verified
    ]
    assert [(a["outcome"], a["uncertain"], a["status"], a["error"]) for a in data["attempts"]] == [
        ("lost", True, None, LOST_ERROR)
    ]


@pytest.mark.parametrize(
    ("user_id", "state"),
    [
        ("abc", "sent"),
        ("abc ", "failed"),
        ("ABC", "not_registered"),
        ("team/7 ü", "sent"),
        ("..", "sent"),
        ("abc  ", None),
        (" abc", None),
        ("Abc", None),
        ("team/7 u", None),
        ("ab", None),
    ],
)
def test_user_ids_are_compared_as_exact_text(lookup_db, user_id, state):
    response = _user(_client(), user_id)
    if state is None:
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == (
            f"Unknown user_id {user_id!r}: no ledger row and no attempt has it"
        )
        return
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["user_id"] == user_id
    assert [(row["channel"], row["state"]) for row in data["ledger"]] == [("email", state)]
    assert [(a["run_id"], a["outcome"]) for a in data["attempts"]] == [(RUN_1, state)]


def test_run_view_counts_outcomes_states_and_reasons(lookup_db):
    response = _run(_client(), RUN_0)
    assert response.status_code == 200, response.text
    data = response.json()
    run = data["run"]
    assert (run["run_id"], run["status"], run["requests"], run["failed"]) == (RUN_0, "failed", 120, 3)
    assert run["duration_seconds"] == 150.0
    assert run["reason"] is None
    outcomes = {(o["channel"], o["outcome"]): (o["count"], o["uncertain"]) for o in data["outcomes"]}
    assert outcomes == EXPECTED_RUN_0_OUTCOMES
    touched = Counter((row[1], row[3]) for row in LEDGER_ROWS if row[0] != "ind_8")  # ind_8: RUN_1's
    assert {(r["channel"], r["state"]): r["count"] for r in data["ledger"]} == dict(touched)
    assert data["attempt_reasons"] == EXPECTED_RUN_0_ATTEMPT_REASONS
    assert data["ledger_reasons"] == EXPECTED_REASONS


def test_run_view_of_a_running_run_with_a_lost_request(lookup_db):
    data = _run(_client(), RUN_1).json()
    assert (data["run"]["status"], data["run"]["finished_at"], data["run"]["duration_seconds"]) == (
        "running",
        None,
        None,
    )
    odd = Counter((a[1], a[6]) for a in ODD_ID_ATTEMPTS)
    outcomes = {(o["channel"], o["outcome"]): (o["count"], o["uncertain"]) for o in data["outcomes"]}
    assert outcomes == {**{key: (n, 0) for key, n in odd.items()}, ("email", "lost"): (1, 1)}
    assert {(r["channel"], r["state"]): r["count"] for r in data["ledger"]} == {
        ("email", "queued"): 1,
        ("email", "sent"): 3,
        ("email", "failed"): 1,
        ("email", "not_registered"): 1,
    }
    assert data["attempt_reasons"] == [
        {"outcome": "failed", "reason": "HTTP 500 after 3 attempts", "count": 1},
        {"outcome": "lost", "reason": LOST_ERROR, "count": 1},
        {"outcome": "not_registered", "reason": "user not found", "count": 1},
    ]
    assert data["ledger_reasons"] == [{"state": "failed", "reason": "HTTP 500 after 3 attempts", "count": 1}]


@pytest.mark.parametrize(
    ("path", "param", "value", "detail"),
    [
        ("/api/user", "user_id", "nobody", "Unknown user_id 'nobody': no ledger row and no attempt has it"),
        (
            "/api/run",
            "run_id",
            "manual__2026-01-01",
            "Unknown run_id 'manual__2026-01-01': the run table, the ledger and the attempts have none",
        ),
        (
            "/api/run",
            "run_id",
            RUN_0 + " ",
            f"Unknown run_id {RUN_0 + ' '!r}: the run table, the ledger and the attempts have none",
        ),
    ],
)
def test_unknown_user_or_run_is_404_with_a_clear_message(lookup_db, path, param, value, detail):
    response = _client().get(path, params={param: value})
    assert response.status_code == 404
    assert response.json() == {"detail": detail}


@pytest.mark.parametrize("path", ["/api/user", "/api/run"])
@pytest.mark.parametrize(
    ("value", "status", "detail"),
    [
        (None, 422, "{name} is required"),
        ("", 422, "{name} is required"),
        ("x" * 256, 422, "{name} must be at most 255 characters, got 256"),
        ("ü" * 256, 422, "{name} must be at most 255 characters, got 256"),
        ("a\x00b", 422, "{name} must not contain a NUL character"),
        ("x" * 255, 404, None),
        ("ü" * 255, 404, None),
    ],
)
def test_lookup_keys_are_validated(ledger_path, path, value, status, detail):
    name = "user_id" if path == "/api/user" else "run_id"
    response = _client().get(path, params={} if value is None else {name: value})
    assert response.status_code == status, response.text
    if detail is not None:
        assert response.json() == {"detail": detail.format(name=name)}


def test_lookups_before_the_first_run_say_there_is_no_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", sqlite_conn_json(str(tmp_path / "empty.db")))
    for response in (_user(_client(), "ind_4"), _run(_client(), RUN_0)):
        assert response.status_code == 404
        assert response.json()["detail"].startswith("No onboarding ledger yet (sfox_onboarding_ledger)")


def test_lookups_of_a_ledger_without_attempts_table_show_the_ledger(ledger_path):
    with sqlite3.connect(ledger_path) as conn:  # a ledger of a version before the attempts table
        conn.execute("DROP TABLE sfox_onboarding_ledger_attempts")
    data = _user(_client(), "ind_4").json()
    assert [row["state"] for row in data["ledger"]] == ["verified", "failed"]
    assert (data["attempts"], data["attempts_total"]) == ([], 0)
    run = _run(_client(), RUN_0).json()
    assert (run["outcomes"], run["attempt_reasons"]) == ([], [])
    assert run["ledger_reasons"] == EXPECTED_REASONS


@pytest.mark.parametrize(
    ("path", "params"),
    [("/api/user", {"user_id": "ind_4"}), ("/api/run", {"run_id": RUN_0})],
)
def test_lookups_need_read_access_to_the_onboarding_dag(ledger_path, path, params):
    manager = FakeAuthManager(RIGHTS)
    assert _client(None, manager).get(path, params=params).status_code == 401
    assert manager.calls == []
    denied = _client("outsider", manager).get(path, params=params)
    assert denied.status_code == 403
    assert "read access to the DAG(s) sfox_batch_onboarding" in denied.json()["detail"]
    assert "ind_4" not in denied.text
    assert "HTTP 500" not in denied.text
    assert [(m, u, d.id) for m, u, _, d in manager.calls] == [("GET", "outsider", "sfox_batch_onboarding")]
    assert _client("reader", manager).get(path, params=params).status_code == 200


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/user", {"user_id": "ind_4"}),
        ("/api/user", {"user_id": "abc"}),
        ("/api/run", {"run_id": RUN_0}),
        ("/api/run", {"run_id": RUN_1}),
    ],
)
def test_lookups_hold_no_email_or_phone(lookup_db, path, params):
    response = _client().get(path, params=params)
    assert response.status_code == 200, response.text
    for _, _, email, phone in SOURCE_ROWS:
        assert email not in response.text
        assert phone is None or phone not in response.text

    def keys(value) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        return {k for v in value for k in keys(v)} if isinstance(value, list) else set()

    assert not {k for k in keys(response.json()) if "email" in k or "phone" in k}


def test_lookups_read_through_keys_and_indexes(ledger_path):
    """SQLite answers every query of the user lookup and the run view by an index search, never a scan."""
    from airflow_sfox.plugins.lookups import Lookups as Dashboard
    from tests.plugins.ledger_data import SqliteFileHook

    warehouse = Warehouse(SqliteFileHook(ledger_path))
    statements = _record_selects(warehouse)
    dashboard = Dashboard(warehouse, DashboardSettings())
    dashboard.user("ind_4")
    dashboard.run(RUN_0)
    dashboard.run(RUN_0, "sfox_batch_onboarding")
    warehouse.engine.dispose()
    # user: ledger, attempts count, timeline; run: its DAG (when not given), run row, states, held
    # rows, reasons, outcomes, errors
    assert len(statements) == 3 + 7 + 6
    indexes = set()
    for (sql, _), plan in zip(statements, _plans(ledger_path, statements), strict=True):
        searches = [step for step in plan if not step.startswith("USE TEMP B-TREE")]
        assert searches, (sql, plan)
        for step in searches:
            assert step.startswith("SEARCH "), (sql, plan)
            assert " INDEX " in step, (sql, plan)
            indexes.add(step.split(" INDEX ")[1].split(" ")[0])
    assert indexes == {
        "sqlite_autoindex_sfox_onboarding_ledger_1",  # (user_id, channel)
        "sqlite_autoindex_sfox_onboarding_runs_1",  # (run_id, dag_id)
        "ix_sfox_onboarding_ledger_run",  # (dag_id, run_id, ...): the run's rows, its held ones too
        "ix_sfox_onboarding_ledger_at_user",
        "ix_sfox_onboarding_ledger_at_run",
    }


# --- one DAG's figures, every channel of a user, the vocabulary from the server -----------------

OTHER_DAG, OTHER_RUN = "sfox_partner_b", "manual__2026-03-04T08:00:00+00:00"
#: Ledger rows the other DAG's run touched last: corp_1 (verified), corp_2 (sent), ind_6 (held).
OTHER_ROWS = {"corp_1": "verified", "corp_2": "sent", "ind_6": "held"}


def _other_dags_run(path: str, run_id: str, started_at: str, status: str, *, dry_run: int = 0, reason=None):
    """A run of the other DAG, which touched OTHER_ROWS last."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO sfox_onboarding_runs (run_id, dag_id, dry_run, started_at, status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, OTHER_DAG, dry_run, started_at, status, reason),
        )
        for user_id, state in OTHER_ROWS.items():
            conn.execute(
                "UPDATE sfox_onboarding_ledger SET dag_id = ?, run_id = ?, state = ?, "
                "last_error = CASE WHEN ? = 'held' THEN 'held for review' ELSE last_error END "
                "WHERE user_id = ? AND channel = 'email'",
                (OTHER_DAG, run_id, state, state, user_id),
            )


@pytest.fixture
def two_dags(ledger_path) -> str:
    """The known ledger, with a dry run of another DAG that was interrupted and touched three rows."""
    started = "2026-03-04T08:00:00.000000+00:00"
    _other_dags_run(ledger_path, OTHER_RUN, started, "interrupted", dry_run=1, reason="preview")
    return ledger_path


def _dag_client() -> TestClient:
    rights = {"reader": {"sfox_batch_onboarding", OTHER_DAG}}
    return _client("reader", FakeAuthManager(rights))


def test_summary_lists_the_dags_and_labels_each_run_with_its_dag(two_dags):
    data = _dag_client().get("/api/summary").json()
    assert data["dag_id"] is None
    assert data["dags"] == ["sfox_batch_onboarding", OTHER_DAG]
    assert [(r["run_id"], r["dag_id"]) for r in data["runs"]] == [
        (OTHER_RUN, OTHER_DAG),
        (RUN_1, "sfox_batch_onboarding"),
        (RUN_0, "sfox_batch_onboarding"),
    ]
    # A status and a reason the page has no word for are shown as the run row has them.
    assert (data["runs"][0]["status"], data["runs"][0]["reason"], data["runs"][0]["dry_run"]) == (
        "interrupted",
        "preview",
        True,
    )


@pytest.mark.parametrize(
    ("dag_id", "runs", "seen", "held"),
    [
        (OTHER_DAG, [OTHER_RUN], {"individual": 1, "corporation": 2}, 1),
        ("sfox_batch_onboarding", [RUN_1, RUN_0], {"individual": 8, "corporation": 3}, 0),
        ("sfox_no_runs", [], {}, 0),
    ],
)
def test_summary_of_one_dag_counts_its_runs_rows_only(two_dags, dag_id, runs, seen, held):
    data = _dag_client().get("/api/summary", params={"dag_id": dag_id})
    if dag_id == "sfox_no_runs":  # a DAG the reader may not read: refused before any figure
        assert data.status_code == 403
        assert "sfox_no_runs" in data.json()["detail"]
        return
    data = data.json()
    assert data["dag_id"] == dag_id
    assert [r["run_id"] for r in data["runs"]] == runs
    funnel = {row["account_type"]: row for row in data["funnel"]}
    assert {kind: funnel[kind]["seen"] for kind in seen} == seen
    assert data["totals"]["held"] == held
    reasons = {(r["state"], r["reason"]) for r in data["reasons"]}
    assert (("gave_up", GAVE_UP_REASON) in reasons) is (dag_id != OTHER_DAG)


def test_a_dag_filter_needs_read_access_to_that_dag_too(two_dags):
    manager = FakeAuthManager(RIGHTS)  # reader: sfox_batch_onboarding only
    response = _client("reader", manager).get("/api/summary", params={"dag_id": OTHER_DAG})
    assert response.status_code == 403
    assert f"sfox_batch_onboarding, {OTHER_DAG}" in response.json()["detail"]
    assert [d.id for *_, d in manager.calls] == ["sfox_batch_onboarding", OTHER_DAG]
    assert (
        _client("reader", manager)
        .get("/api/run", params={"run_id": OTHER_RUN, "dag_id": OTHER_DAG})
        .status_code
        == 403
    )


@pytest.mark.parametrize(
    ("run_id", "dag_id", "status"),
    [
        (OTHER_RUN, OTHER_DAG, 200),
        (OTHER_RUN, None, 200),
        (OTHER_RUN, "sfox_batch_onboarding", 404),  # run_ids are unique within a DAG only
        (RUN_0, OTHER_DAG, 404),
    ],
)
def test_run_view_of_a_dag_run_needs_a_run_row_of_that_dag(two_dags, run_id, dag_id, status):
    params = {"run_id": run_id} | ({"dag_id": dag_id} if dag_id else {})
    response = _dag_client().get("/api/run", params=params)
    assert response.status_code == status, response.text
    if status == 404:
        assert (
            response.json()["detail"] == f"DAG {dag_id!r} has no onboarding run {run_id!r} in the run table"
        )
        return
    data = response.json()
    assert (data["run"]["status"], data["run"]["reason"], data["run"]["dag_id"]) == (
        "interrupted",
        "preview",
        OTHER_DAG,
    )
    assert {(r["channel"], r["state"]): r["count"] for r in data["ledger"]} == {
        ("email", "verified"): 1,
        ("email", "sent"): 1,
        ("email", "held"): 1,
    }
    assert [(h["user_id"], h["channel"], h["reason"]) for h in data["held"]] == [
        ("ind_6", "email", "held for review")
    ]


def test_two_dags_runs_of_one_run_id_are_two_runs_on_the_page(ledger_path):
    """Two DAGs on one hourly schedule get the same run id: the page keeps their runs apart."""

    def ledger_of(dag_id: str) -> Counter:
        data = _dag_client().get("/api/run", params={"run_id": RUN_0, "dag_id": dag_id}).json()
        assert (data["run"]["dag_id"], data["run"]["run_id"]) == (dag_id, RUN_0)
        return Counter({(r["channel"], r["state"]): r["count"] for r in data["ledger"]})

    before = ledger_of("sfox_batch_onboarding")
    # The other DAG's run of the same hour, which touched three rows RUN_0 of the batch DAG had.
    _other_dags_run(ledger_path, RUN_0, "2026-03-01T10:00:00.000000+00:00", "success")

    other = ledger_of(OTHER_DAG)
    assert other == Counter({(("email", state)): 1 for state in OTHER_ROWS.values()})
    moved = Counter({("email", state): 1 for state in ("verified", "sent", "failed")})  # as they were
    assert ledger_of("sfox_batch_onboarding") == before - moved
    # Without its DAG, the run id names two runs: the page asks which.
    response = _dag_client().get("/api/run", params={"run_id": RUN_0})
    assert response.status_code == 422, response.text
    assert OTHER_DAG in response.json()["detail"]
    assert "sfox_batch_onboarding" in response.json()["detail"]
    # Each DAG's figures count its own rows; every DAG's, both.
    held = {
        dag_id: _dag_client().get("/api/summary", params={"dag_id": dag_id}).json()["totals"]["held"]
        for dag_id in (OTHER_DAG, "sfox_batch_onboarding")
    }
    assert held == {OTHER_DAG: 1, "sfox_batch_onboarding": 0}
    runs = _dag_client().get("/api/summary").json()["runs"]
    assert sorted((r["dag_id"], r["run_id"]) for r in runs if r["run_id"] == RUN_0) == [
        ("sfox_batch_onboarding", RUN_0),
        (OTHER_DAG, RUN_0),
    ]


@pytest.mark.parametrize(
    ("user_id", "account_type", "channels"),
    [
        # email sent, not verified: the sms waits for it
        ("ind_5", "individual", [("email", "sent", None), ("sms", None, "email")]),
        # email verified: the sms is due and the next run plans it
        ("ind_3", "individual", [("email", "verified", None), ("sms", "sent", None)]),
        # an sms row without an email row: the email is due and waits for nothing
        ("ind_9", "individual", [("email", None, None), ("sms", "queued", None)]),
        ("corp_2", "corporation", [("email", "sent", None)]),
        # a rejected row: no account type, no channel is due
        ("bad_1", None, [("email", "rejected", None)]),
    ],
)
def test_user_lookup_shows_every_channel_due_for_the_account_type(
    ledger_path, user_id, account_type, channels
):
    data = _user(_client(), user_id).json()
    assert data["account_type"] == account_type
    assert [(r["channel"], r["state"], r["waits_for"]) for r in data["ledger"]] == channels


def test_the_page_gets_the_ledger_states_and_channels_from_the_server(ledger_path):
    from airflow_sfox.onboarding.model import CHANNELS, STATE_LABELS, LedgerState

    data = _client().get("/api/summary").json()
    assert [s["state"] for s in data["states"]] == [state.value for state in LedgerState]
    assert {s["state"]: s["label"] for s in data["states"]} == {
        state.value: STATE_LABELS[state.value] for state in LedgerState
    }
    assert data["channels"] == [channel.value for channel in CHANNELS]
    assert set(data["side_states"]) <= {state.value for state in LedgerState}
    script = _client().get("/static/dashboard.js").text
    for state in LedgerState:  # no copy of the states' labels in the page's script
        if STATE_LABELS[state.value] != state.value:
            assert f'"{STATE_LABELS[state.value]}"' not in script, state
    assert '"held"' not in script
    assert "Corporations" not in _client().get("/").text  # nor of the channel rule


@pytest.fixture
def hold_watches(monkeypatch) -> dict:
    """No watch of a hold kept from another test: the process's watches start empty."""
    watches: dict = {}
    monkeypatch.setattr("airflow_sfox.hooks.budget._WATCHES", watches)
    return watches


def test_summary_shows_the_operator_s_hold_on_the_senders_scope(
    ledger_path, tmp_path, monkeypatch, hold_watches
):
    """A hold set with ``python -m airflow_sfox hold`` (here its function) is on the page until released."""
    import json

    from airflow_sfox.hooks.budget import hold, release

    extra = {"rate_limit_backend": "local", "rate_limit_dir": str(tmp_path / "budget")}
    conn = {"conn_type": "sfox", "host": "http://127.0.0.1:9", "password": "t", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", json.dumps(conn))
    client = _client()
    assert client.get("/api/summary").json()["hold"] is None

    hold("sfox_default", reason="sFOX maintenance")
    shown = client.get("/api/summary").json()["hold"]
    assert (shown["reason"], shown["until"], shown["backend"]) == ("sFOX maintenance", None, "local")

    release("sfox_default")
    assert client.get("/api/summary").json()["hold"] is None


def test_summary_without_a_readable_sfox_connection_shows_no_hold_and_says_so_once(
    ledger_path, monkeypatch, caplog, hold_watches
):
    monkeypatch.setenv("AIRFLOW__SFOX__ONBOARDING_SFOX_CONN_ID", "no_such_connection")
    client = _client()
    with caplog.at_level(logging.DEBUG, logger="airflow_sfox.hooks.budget"):
        for _ in range(3):  # three polls
            response = client.get("/api/summary")
            assert response.status_code == 200, response.text
            assert response.json()["hold"] is None
    said = [r for r in caplog.records if r.name == "airflow_sfox.hooks.budget"]
    assert [r.levelno for r in said] == [logging.WARNING]
    assert "'no_such_connection'" in said[0].getMessage()


def test_every_poll_reads_the_hold_through_one_backend(ledger_path, tmp_path, monkeypatch, hold_watches):
    """The connection is read and the budget's backend opened once per process, not per poll."""

    from airflow_sfox.hooks import budget as budget_module

    extra = {"rate_limit_backend": "local", "rate_limit_dir": str(tmp_path / "budget")}
    conn = {"conn_type": "sfox", "host": "http://127.0.0.1:9", "password": "t", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", json.dumps(conn))
    opened = []
    budget_of = budget_module._budget_of
    monkeypatch.setattr(budget_module, "_budget_of", lambda *a: opened.append(a) or budget_of(*a))
    client = _client()
    for reason in ("first window", "second window"):
        budget_module.hold("sfox_default", reason=reason)
        for _ in range(3):
            assert client.get("/api/summary").json()["hold"]["reason"] == reason
    budget_module.release("sfox_default")
    assert client.get("/api/summary").json()["hold"] is None
    page_reads = [call for call in opened if call == ("sfox_default", None)]
    assert len(page_reads) == 1 + 3  # the page's one, and hold/hold/release's own
