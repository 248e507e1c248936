"""
Least privilege, end to end: the page inside a live api-server with the FAB auth manager, whose
users and roles carry per-DAG permissions (created with FAB's own CLI: ``airflow roles import``,
``airflow users import``, after ``airflow sync-perm --include-dags``).

- ``onboarding_reader`` (read on ``DAG:sfox_batch_onboarding`` only) gets the page and the JSON;
- ``viewer`` (FAB's Viewer role: read on every DAG) too;
- ``outsider`` (read on another DAG only) is logged in but gets 403 on both;
- nobody (no token) gets 401 on the JSON and is sent to the login page from the page.
"""

from __future__ import annotations

import pytest

from tests.live.airflow import ONBOARDING_DAG_ID, OTHER_DAG_ID, api_server, http
from tests.plugins.ledger_data import build_demo_ledger, sqlite_conn_json

PAGE = "/sfox-onboarding/"
SUMMARY = "/sfox-onboarding/api/summary"

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    """One api-server with the FAB auth manager for the module, stopped whatever happens."""
    path = str(tmp_path_factory.mktemp("sfox-fab-warehouse") / "warehouse.db")
    build_demo_ledger(path)
    with api_server(
        tmp_path_factory.mktemp("sfox-fab-airflow-home"), sqlite_conn_json(path), auth="fab"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def tokens(fab) -> dict[str, str]:
    """A JWT per FAB user, from FAB's ``POST /auth/token``."""
    return {name: fab.token(name) for name in ("onboarding_reader", "outsider", "viewer")}


def test_the_auth_manager_knows_the_dags_per_user(fab, tokens):
    """Sanity check of the set-up through Airflow's own API: each role reads only its DAG."""

    def readable(name: str) -> set[str]:
        status, body, _ = http("GET", f"{fab.url}/api/v2/dags", token=tokens[name])
        assert status == 200, body
        assert isinstance(body, dict)
        return {dag["dag_id"] for dag in body["dags"]}

    assert readable("onboarding_reader") == {ONBOARDING_DAG_ID}
    assert readable("outsider") == {OTHER_DAG_ID}
    assert readable("viewer") == {ONBOARDING_DAG_ID, OTHER_DAG_ID}


@pytest.mark.parametrize("user", ["onboarding_reader", "viewer"])
def test_user_with_read_on_the_onboarding_dag_gets_page_and_json(fab, tokens, user):
    status, body, _ = http("GET", f"{fab.url}{SUMMARY}", token=tokens[user])
    assert status == 200, body
    assert isinstance(body, dict)
    assert body["funnel"]
    assert body["recent_failures"]
    status, page, _ = http("GET", f"{fab.url}{PAGE}", token=tokens[user])
    assert status == 200
    assert "sFOX onboarding" in str(page)


def test_logged_in_user_without_read_on_the_dag_is_forbidden(fab, tokens):
    status, body, _ = http("GET", f"{fab.url}{SUMMARY}", token=tokens["outsider"])
    assert status == 403, body
    assert isinstance(body, dict)
    assert ONBOARDING_DAG_ID in body["detail"]
    assert "funnel" not in body
    status, page, headers = http("GET", f"{fab.url}{PAGE}", token=tokens["outsider"])
    assert status == 403
    assert "location" not in {k.lower() for k in headers}
    assert "client_" not in str(page)


def test_anonymous_gets_401_and_the_page_sends_to_the_login(fab):
    status, body, _ = http("GET", f"{fab.url}{SUMMARY}")
    assert status == 401, body
    status, _, headers = http("GET", f"{fab.url}{PAGE}")
    assert status == 303
    assert "/auth/login" in headers["location"]
    # A forged token is no login either.
    assert http("GET", f"{fab.url}{SUMMARY}", token="not-a-jwt")[0] == 403


def test_static_files_stay_open(fab):
    assert http("GET", f"{fab.url}/sfox-onboarding/static/dashboard.css")[0] == 200
