"""
End to end: the plugin inside a live Airflow api-server, with Airflow's real authentication,
seen by a headless Chromium that logs in, opens the page and reads the numbers it shows.

Saves the README screenshots ``sfox-onboarding.png`` (the page) and ``sfox-onboarding-lookup.png``
(a user's timeline and a run's view) to the session's ``screenshot_dir`` (``make screenshots``: docs/).
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.live.airflow import PASSWORD, http, plugin_entry_point_installed
from tests.live.airflow import VIEWER_USER as USERNAME
from tests.live.browser import ensure_chromium, start_chromium
from tests.live.fixtures import PAGE_LEDGER_CONN_ID
from tests.plugins.ledger_data import build_demo_ledger, sqlite_conn_json

SCREENSHOT, LOOKUP_SCREENSHOT = "sfox-onboarding.png", "sfox-onboarding-lookup.png"
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

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> str:
    """A realistic SQLite ledger and run table."""
    path = str(tmp_path_factory.mktemp("sfox-plugin-warehouse") / "warehouse.db")
    build_demo_ledger(path)
    return path


@pytest.fixture(scope="module")
def live(shared_airflow, ledger):
    """The session's live Airflow, its page reading this ledger, as the simple auth manager's viewer."""
    shared_airflow.set_connection(PAGE_LEDGER_CONN_ID, sqlite_conn_json(ledger))
    return shared_airflow.as_user(USERNAME)


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
        driver.get(f"{live.url}/")
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(USERNAME)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]"))).click()
        wait.until(lambda d: "/auth/login" not in d.current_url)

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
    with sqlite3.connect(ledger) as conn:
        outcomes = conn.execute(
            "SELECT channel, outcome, COUNT(*) FROM sfox_onboarding_ledger_attempts WHERE run_id = ? "
            "GROUP BY channel, outcome ORDER BY channel, outcome",
            (run_id,),
        ).fetchall()
        (requests,) = conn.execute(
            "SELECT requests FROM sfox_onboarding_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
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
