"""
End to end: the plugin inside a live Airflow api-server, with Airflow's real authentication,
seen by a headless Chromium that logs in, opens the page and reads the numbers it shows, and
opens a DAG run's page and follows its sFOX tab to that run's view.

Saves the README screenshots ``sfox-onboarding.png`` (the page), ``sfox-onboarding-lookup.png``
(a user's timeline and a run's view) and ``sfox-onboarding-run-tab.png`` (a DAG run's tab) to
the session's ``screenshot_dir`` (``make screenshots``: docs/).
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from tests.live.airflow import OTHER_DAG_ID, PASSWORD, http, plugin_entry_point_installed
from tests.live.airflow import VIEWER_USER as USERNAME
from tests.live.browser import ensure_chromium, start_chromium
from tests.live.fixtures import PAGE_LEDGER_CONN_ID
from tests.plugins.ledger_data import build_demo_ledger, sqlite_conn_json

if TYPE_CHECKING:
    from collections.abc import Iterator

SCREENSHOT, LOOKUP_SCREENSHOT = "sfox-onboarding.png", "sfox-onboarding-lookup.png"
RUN_TAB_SCREENSHOT = "sfox-onboarding-run-tab.png"
PAGE = "/sfox-onboarding/"
SUMMARY = "/sfox-onboarding/api/summary"
#: Reads what the page shows, in one go.
SNAPSHOT_JS = """
const texts = (selector) => Array.from(document.querySelectorAll(selector), (e) => e.textContent);
const metrics = {};
for (const e of document.querySelectorAll("[data-metric]")) metrics[e.dataset.metric] = e.textContent;
return {
  metrics,
  counts: texts("#reasons [data-field='count']"),
  runs: document.querySelectorAll("#runs tbody tr").length,
  users: texts("#failures [data-field='user_id']"),
  body: document.body.innerText,
};
"""
#: Reads the user lookup and the run view, in one go (the page re-renders them on every poll).
LOOKUP_JS = """
const byId = (id) => document.getElementById(id);
const shownText = (id) => (byId(id).hidden ? null : byId(id).textContent);
const rows = (id) => Array.from(document.querySelectorAll(`#${id} tbody tr`), (tr) =>
  Array.from(tr.children, (td) => td.textContent));
return {
  user: document.body.dataset.user ?? null,
  run: document.body.dataset.run ?? null,
  userError: shownText("user-error"),
  ledger: rows("user-ledger"),
  attempts: rows("user-attempts"),
  capped: document.getElementById("user-capped").textContent,
  outcomes: rows("run-outcomes"),
  runLedger: rows("run-ledger"),
  runReasons: rows("run-attempt-reasons"),
  figures: Object.fromEntries(Array.from(document.querySelectorAll("#run-figures [data-figure]"),
    (e) => [e.dataset.figure, e.querySelector("b").textContent])),
  body: document.body.innerText,
};
"""
#: Bounded waits for the browser (the machine may be busy).
UI_TIMEOUT = 90
#: The onboarding DAG of the run-tab test: this module's own DAG id (the shared Airflow runs
#: the repository's ``sfox_batch_onboarding`` for other modules).
RUN_TAB_DAG_ID = "sfox_plugin_run_tab"
RUN_TAB_DAG_SOURCE = f"""
from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag

dag = onboarding_dag(dag_id="{RUN_TAB_DAG_ID}", source=OnboardingSource(table="sfox_users"))
"""

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> str:
    """A realistic SQLite ledger and run table."""
    path = str(tmp_path_factory.mktemp("sfox-plugin-warehouse") / "warehouse.db")
    build_demo_ledger(path)
    return path


@pytest.fixture(scope="module")
def extra_dag_files() -> dict[str, str]:
    """The onboarding DAG the run-tab test opens a run of, under a DAG id of this module's own."""
    return {f"{RUN_TAB_DAG_ID}.py": RUN_TAB_DAG_SOURCE}


@pytest.fixture(scope="module")
def live(live_airflow, ledger):
    """
    The session's live Airflow with this module's DAG file, its page reading this ledger, as the
    simple auth manager's viewer.
    """
    live_airflow.set_connection(PAGE_LEDGER_CONN_ID, sqlite_conn_json(ledger))
    return live_airflow.as_user(USERNAME)


def expected_from_sql(path: str) -> dict[str, dict[str, int | None]]:
    """The funnel computed with plain SQL on the ledger, independently of the plugin's code."""

    def one(conn: sqlite3.Connection, sql: str, *params: object) -> int:
        return int(conn.execute(sql, params).fetchone()[0])

    done, verified = "('sent', 'verified', 'already_verified')", "('verified', 'already_verified')"
    expected: dict[str, dict[str, int | None]] = {}
    with sqlite3.connect(path) as conn:
        for kind in ("individual", "corporation"):
            where = "account_type = ?"
            row: dict[str, int | None] = {
                "seen": one(
                    conn, f"SELECT COUNT(DISTINCT user_id) FROM sfox_onboarding_ledger WHERE {where}", kind
                ),
                "email_requested": one(
                    conn,
                    f"SELECT COUNT(*) FROM sfox_onboarding_ledger WHERE {where} "
                    f"AND channel = 'email' AND state IN {done}",
                    kind,
                ),
                "email_verified": one(
                    conn,
                    f"SELECT COUNT(*) FROM sfox_onboarding_ledger WHERE {where} "
                    f"AND channel = 'email' AND state IN {verified}",
                    kind,
                ),
            }
            for state in ("queued", "rejected", "failed", "not_registered", "gave_up", "held"):
                row[state] = one(
                    conn,
                    f"SELECT COUNT(*) FROM sfox_onboarding_ledger WHERE {where} AND state = ?",
                    kind,
                    state,
                )
            if kind == "individual":
                row["sms_requested"] = one(
                    conn,
                    f"SELECT COUNT(*) FROM sfox_onboarding_ledger WHERE {where} "
                    f"AND channel = 'sms' AND state IN {done}",
                    kind,
                )
                row["verified"] = one(
                    conn,
                    f"SELECT COUNT(*) FROM sfox_onboarding_ledger WHERE {where} "
                    f"AND channel = 'sms' AND state IN {verified}",
                    kind,
                )
            else:
                row["sms_requested"] = None  # corporations verify their email only
                row["verified"] = row["email_verified"]
            expected[kind] = row
        expected["none"] = {
            "rejected": one(
                conn,
                "SELECT COUNT(*) FROM sfox_onboarding_ledger "
                "WHERE account_type IS NULL AND state = 'rejected'",
            )
        }
        expected["reasons"] = {
            "top": one(
                conn,
                "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM sfox_onboarding_ledger "
                "WHERE state IN ('rejected', 'failed') GROUP BY state, last_error)",
            )
        }
    return expected


def test_plugin_is_registered_with_the_api_server(live):
    status, body, _ = http("GET", f"{live.url}/api/v2/plugins", token=live.token())
    assert status == 200, body
    assert isinstance(body, dict)
    plugin = next(p for p in body["plugins"] if p["name"] == "sfox_onboarding")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/sfox-onboarding"
    view = plugin["external_views"][0]
    assert (view["name"], view["href"], view["url_route"]) == (
        "sFOX",
        "sfox-onboarding/",
        "sfox-onboarding",
    )
    source = "entry point" if plugin_entry_point_installed() else "plugins folder stand-in"
    print(f"plugin loaded through its {source}: {plugin['source']}")
    assert not http("GET", f"{live.url}/api/v2/importErrors", token=live.token())[1].get("import_errors")


def test_endpoints_need_an_airflow_login(live):
    token = live.token()  # POST /auth/token of the simple auth manager
    status, body, _ = http("GET", f"{live.url}{SUMMARY}", token=token)
    assert status == 200, body
    assert isinstance(body, dict)
    assert body["funnel"]

    assert http("GET", f"{live.url}{SUMMARY}")[0] == 401  # anonymous
    assert http("GET", f"{live.url}{SUMMARY}", token="not-a-jwt")[0] == 403
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert http("GET", f"{live.url}{SUMMARY}", token=forged)[0] in (401, 403)
    # An anonymous visitor of the page is sent to Airflow's login page; the HTML is not served.
    status, body, headers = http("GET", f"{live.url}{PAGE}")
    assert status == 303
    assert headers["location"].startswith("/auth/login")
    assert http("GET", f"{live.url}{PAGE}", token=token)[0] == 200


def _log_in(driver, wait, live) -> None:
    """Airflow's own login form, as the test user."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(f"{live.url}/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(USERNAME)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]"))).click()
    wait.until(lambda d: "/auth/login" not in d.current_url)


@pytest.mark.chromium
def test_browser_shows_the_ledger_figures(live, ledger, tmp_path, screenshot_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ensure_chromium()
    expected = expected_from_sql(ledger)
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        wait = WebDriverWait(driver, UI_TIMEOUT)
        _log_in(driver, wait, live)

        # The page is in Airflow's navigation bar (or, should a release group plugins, its Plugins menu).
        link = "a[href$='plugin/sfox-onboarding']"
        if not driver.find_elements(By.CSS_SELECTOR, link):
            time.sleep(3)  # the navigation renders once the UI has fetched the plugins
        if not driver.find_elements(By.CSS_SELECTOR, link):
            wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Plugins']"))).click()
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, link))).click()
        frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='sFOX']")))
        driver.switch_to.frame(frame)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))

        def snapshot() -> dict:
            # One script: the page re-renders every refresh, element handles would go stale.
            return driver.execute_script(SNAPSHOT_JS)

        shown = snapshot()
        for kind in ("individual", "corporation"):
            for key, value in expected[kind].items():
                text = shown["metrics"][f"{kind}.{key}"]
                assert text == ("n/a" if value is None else f"{value:,}"), (kind, key, text, value)
        assert shown["metrics"]["none.rejected"] == f"{expected['none']['rejected']:,}"
        assert shown["counts"][0] == f"{expected['reasons']['top']:,}"
        assert shown["runs"] == 10
        assert shown["users"]
        assert all(u.startswith("client_") for u in shown["users"])
        assert "@" not in shown["body"]

        # The page refreshes itself: a new ledger row shows up without a reload.
        with sqlite3.connect(ledger) as conn:
            conn.execute(
                "INSERT INTO sfox_onboarding_ledger (user_id, channel, account_type, state, updated_at) "
                "VALUES ('client_new', 'email', 'corporation', 'queued', '2026-03-06T00:00:00+00:00')"
            )
        want = f"{int(expected['corporation']['seen'] or 0) + 1:,}"
        wait.until(lambda _: snapshot()["metrics"]["corporation.seen"] == want)
        time.sleep(1)  # let the bars settle before the screenshot

        driver.switch_to.default_content()
        assert driver.save_screenshot(str(screenshot_dir / SCREENSHOT))

        driver.switch_to.frame(frame)
        _look_up_a_user_and_open_a_run(driver, wait, ledger)
        driver.switch_to.default_content()
        assert driver.save_screenshot(str(screenshot_dir / LOOKUP_SCREENSHOT))
    finally:
        driver.quit()


def _when(iso: str) -> str:
    """A stored time as the page writes it (UTC, to the second)."""
    return iso.replace("T", " ").split(".")[0].removesuffix("+00:00")


def _run_from_sql(ledger: str, run_id: str) -> tuple[list[tuple[str, str, int]], int]:
    """A run's requests by (channel, outcome) and its run row's request count, with plain SQL."""
    with sqlite3.connect(ledger) as conn:
        outcomes = conn.execute(
            "SELECT channel, outcome, COUNT(*) FROM sfox_onboarding_ledger_attempts WHERE run_id = ? "
            "GROUP BY channel, outcome ORDER BY channel, outcome",
            (run_id,),
        ).fetchall()
        (requests,) = conn.execute(
            "SELECT requests FROM sfox_onboarding_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
    return outcomes, requests


def _look_up_a_user_and_open_a_run(driver, wait, ledger: str) -> None:
    """Type a user_id into the lookup and read its timeline; click a run and read its view."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with sqlite3.connect(ledger) as conn:
        # The user with attempts on both channels and the most of them.
        (user_id,) = conn.execute(
            "SELECT user_id FROM sfox_onboarding_ledger_attempts GROUP BY user_id "
            "HAVING COUNT(DISTINCT channel) = 2 ORDER BY COUNT(*) DESC, user_id LIMIT 1"
        ).fetchone()
        timeline = conn.execute(
            "SELECT attempted_at, channel, status, outcome FROM sfox_onboarding_ledger_attempts "
            "WHERE user_id = ? ORDER BY attempted_at DESC, id DESC",
            (user_id,),
        ).fetchall()
        states = conn.execute(
            "SELECT channel, state FROM sfox_onboarding_ledger WHERE user_id = ? ORDER BY channel", (user_id,)
        ).fetchall()

    def lookup() -> dict:
        return driver.execute_script(LOOKUP_JS)

    box = driver.find_element(By.ID, "user-id")
    box.send_keys(f"{user_id} ", Keys.ENTER)  # a trailing space: another user_id, which nobody has
    wait.until(lambda _: lookup()["userError"])
    assert lookup()["userError"] == f"Unknown user_id '{user_id} ': no ledger row and no attempt has it"
    box.clear()
    box.send_keys(user_id, Keys.ENTER)
    wait.until(lambda _: lookup()["user"] == user_id)
    shown = lookup()
    assert [(row[0], row[1].replace(" ", "_")) for row in shown["ledger"]] == states
    assert [(row[0], row[1], row[4], row[5].replace(" ", "_")) for row in shown["attempts"]] == [
        (_when(at), channel, "\u2013" if status is None else str(status), outcome)
        for at, channel, status, outcome in timeline
    ]
    assert shown["capped"] == f"{len(timeline)} attempts."

    # The newest run of the run table, clicked there (in one script: the table re-renders on each poll).
    run_id = driver.execute_script(
        "const b = document.querySelector('#runs tbody button[data-run-id]'); "
        "b.click(); return b.dataset.runId;"
    )
    wait.until(lambda _: lookup()["run"] == run_id)
    outcomes, requests = _run_from_sql(ledger, run_id)
    shown = lookup()
    assert [(row[0], row[1].replace(" ", "_"), row[2]) for row in shown["outcomes"]] == [
        (channel, outcome, f"{n:,}") for channel, outcome, n in outcomes
    ]
    assert shown["figures"]["requests"] == f"{requests:,}"
    assert shown["runLedger"]
    assert shown["runReasons"]
    assert "@" not in shown["body"]
    driver.execute_script("document.getElementById('lookup').scrollIntoView();")
    time.sleep(1)  # let the scroll settle before the screenshot


#: The DAG run the run-tab test opens: a manual run of RUN_TAB_DAG_ID, in Airflow and in the
#: warehouse (its ':' and '+' must survive the tab's URL on every Airflow version).
RUN_ID = "manual__2026-03-06T10:00:00+00:00"


@pytest.fixture(scope="module")
def dag_run(live, ledger) -> Iterator[str]:
    """
    A queued run :data:`RUN_ID` of RUN_TAB_DAG_ID, triggered while the DAG is paused (the shared
    Airflow's scheduler starts nothing of it; the run is deleted afterwards); the warehouse's runs
    made runs of that DAG, the newest renamed to RUN_ID, and a run of another DAG.
    """
    airflow = live.airflow
    airflow.wait_for_dag(RUN_TAB_DAG_ID)
    paused = airflow.api("PATCH", f"/api/v2/dags/{RUN_TAB_DAG_ID}", json={"is_paused": True})
    assert paused.status_code == 200, paused.text
    assert paused.json()["is_paused"] is True
    runs = f"/api/v2/dags/{RUN_TAB_DAG_ID}/dagRuns"
    triggered = airflow.api(
        "POST", runs, json={"dag_run_id": RUN_ID, "logical_date": None, "conf": {"dry_run": True}}
    )
    assert triggered.status_code == 200, triggered.text
    assert triggered.json()["state"] == "queued", triggered.text
    with sqlite3.connect(ledger) as conn:
        (newest,) = conn.execute(
            "SELECT run_id FROM sfox_onboarding_runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        # Every run (and every row a run wrote: rows name their run by DAG and run id) of this DAG.
        for table in ("sfox_onboarding_runs", "sfox_onboarding_ledger", "sfox_onboarding_ledger_attempts"):
            conn.execute(f"UPDATE {table} SET run_id = ? WHERE run_id = ?", (RUN_ID, newest))
            conn.execute(f"UPDATE {table} SET dag_id = ? WHERE dag_id IS NOT NULL", (RUN_TAB_DAG_ID,))
        conn.execute(
            "INSERT INTO sfox_onboarding_runs (run_id, dag_id, dry_run, started_at, status) "
            "VALUES ('manual__elsewhere', ?, 0, '2026-03-07T00:00:00+00:00', 'success')",
            (OTHER_DAG_ID,),
        )
    try:
        yield RUN_ID
    finally:
        # Still queued (nothing ran); then gone, so no later unpause can start it.
        run_path = f"{runs}/{quote(RUN_ID, safe='')}"
        left = airflow.api("GET", run_path)
        deleted = airflow.api("DELETE", run_path)
        assert left.status_code == 200, left.text
        assert left.json()["state"] == "queued", left.text
        assert deleted.status_code == 204, deleted.text


#: Reads the run view and the DAG the page shows, in one go.
RUN_TAB_JS = """
const rows = (id) => Array.from(document.querySelectorAll(`#${id} tbody tr`), (tr) =>
  Array.from(tr.children, (td) => td.textContent));
return {
  dag: document.body.dataset.dag ?? null,
  run: document.body.dataset.run ?? null,
  runFirst: document.body.classList.contains("run-first"),
  outcomes: rows("run-outcomes"),
  figures: Object.fromEntries(Array.from(document.querySelectorAll("#run-figures [data-figure]"),
    (e) => [e.dataset.figure, e.querySelector("b").textContent])),
  runDags: Array.from(document.querySelectorAll("#runs [data-field='dag_id']"), (e) => e.textContent),
  body: document.body.innerText,
};
"""


def _open_tab(driver, wait, route: str):
    """Click the sFOX tab (``plugin/<route>``) of the DAG or DAG run page shown; enter its frame."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"a[href$='plugin/{route}']"))).click()
    wait.until(lambda d: d.current_url.endswith(f"plugin/{route}"))
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='sFOX']")))
    driver.switch_to.frame(frame)


@pytest.mark.chromium
def test_dag_run_page_has_an_sfox_tab_with_that_runs_counts(live, ledger, dag_run, screenshot_dir, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    ensure_chromium()
    outcomes, requests = _run_from_sql(ledger, dag_run)
    with sqlite3.connect(ledger) as conn:
        (dag_runs,) = conn.execute(
            "SELECT COUNT(*) FROM sfox_onboarding_runs WHERE dag_id = ?", (RUN_TAB_DAG_ID,)
        ).fetchone()
    assert outcomes
    assert requests
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        wait = WebDriverWait(driver, UI_TIMEOUT)
        _log_in(driver, wait, live)
        driver.get(f"{live.url}/dags/{RUN_TAB_DAG_ID}/runs/{quote(dag_run, safe='')}")
        _open_tab(driver, wait, "sfox-onboarding-run")

        def shown() -> dict:
            return driver.execute_script(RUN_TAB_JS)

        # The run's view and the summary load apart: both rendered (the summary sets ``dag``).
        wait.until(lambda _: shown()["run"] == dag_run and shown()["dag"] is not None)
        view = shown()
        assert (view["dag"], view["runFirst"]) == (RUN_TAB_DAG_ID, True)
        assert [(row[0], row[1].replace(" ", "_"), row[2]) for row in view["outcomes"]] == [
            (channel, outcome, f"{n:,}") for channel, outcome, n in outcomes
        ]
        assert view["figures"]["requests"] == f"{requests:,}"
        assert view["figures"]["dag"] == RUN_TAB_DAG_ID
        # The figures below are the run's DAG's: the other DAG's run is not among them.
        wait.until(lambda _: len(shown()["runDags"]) == min(dag_runs, 15))
        assert set(shown()["runDags"]) == {RUN_TAB_DAG_ID}
        assert "@" not in view["body"]
        driver.switch_to.default_content()
        assert driver.save_screenshot(str(screenshot_dir / RUN_TAB_SCREENSHOT))

        # The DAG's own tab: that DAG's figures.
        driver.get(f"{live.url}/dags/{RUN_TAB_DAG_ID}")
        _open_tab(driver, wait, "sfox-onboarding-dag")
        wait.until(
            lambda _: shown()["dag"] == RUN_TAB_DAG_ID and len(shown()["runDags"]) == min(dag_runs, 15)
        )
        assert set(shown()["runDags"]) == {RUN_TAB_DAG_ID}
        assert shown()["run"] is None
    finally:
        driver.quit()
