"""
The docker-compose topology, live and native: a real Airflow runs the onboarding DAG.

No Docker engine runs on our machines, so this brings up the same parts as
``docker-compose.yml`` as local processes (the session's live Airflow, ``tests/live/fixtures.py``):
a real PostgreSQL server (``tests/pg.py``) holding both the Airflow metadata database and the
warehouse, the sandbox on loopback, and Airflow's api-server, scheduler (LocalExecutor),
dag-processor and triggerer with a copy of the repository's ``dags/`` folder (plus, for this
module, a second factory DAG, ``sfox_new_user``). The DAG is driven only through Airflow's REST
API, as a user would: a token from ``POST /auth/token``, unpause,
trigger with a conf, wait. Then the ledger (PostgreSQL) and the sandbox journal must agree, and
``GET /ui/connections/hook_meta`` must show the ``sfox`` form fields.

A headless Chromium then logs into the UI (``test_a_new_user_in_the_browser``): it saves the
README screenshots of the run's grid and of the trigger form (to the session's
``screenshot_dir``), adds an ``sfox`` connection through the connection form, and triggers a dry
run of the paused ``sfox_new_user`` from its trigger form, as a new user would.

Every process is started in its own session and stopped by its process-group id in the
fixtures' teardown, also when the test fails. Runs in about 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter

import pytest
import requests

from airflow_sfox.get_provider_info import CONN_FIELDS
from tests.helpers import TOKEN
from tests.live.airflow import ADMIN_USER, CONF, USERS, LiveAirflow, run_onboarding, ts
from tests.onboarding_data import BAD_ROWS

pytestmark = pytest.mark.live

DAG_ID = "sfox_batch_onboarding"
#: A second factory DAG, as a new user would write it, on the connection the browser test adds
#: through the UI's form (it does not exist before): it stays paused until its dry run is triggered.
NEW_USER_DAG_ID = "sfox_new_user"
UI_CONN_ID = "sfox_ui_added"
NEW_USER_DAG_SOURCE = f"""
from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag

dag = onboarding_dag(
    dag_id="{NEW_USER_DAG_ID}",
    source=OnboardingSource(table="sfox_users"),
    sfox_conn_id="{UI_CONN_ID}",
    warehouse_conn_id="sfox_warehouse",
)
"""


@pytest.fixture(scope="module")
def extra_dag_files() -> dict[str, str]:
    return {f"{NEW_USER_DAG_ID}.py": NEW_USER_DAG_SOURCE}


def test_dag_runs_on_a_live_airflow(live_airflow, warehouse, sandbox):
    airflow = live_airflow
    run_id, run = run_onboarding(airflow, sandbox, DAG_ID)
    states = airflow.task_states(run_id, DAG_ID)
    assert run["state"] == "success", f"{states}\n{airflow.report()}"

    # 30 users: individual and corporation chunks of 10, each type on its own path; no sms
    # is due yet (no email is verified), so each individual chunk's email step skips its sms step.
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
    # Skipped before they started: Airflow never ran a task only for it to skip (no try).
    response = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    instances = response.json()["task_instances"]
    assert {ti["try_number"] for ti in instances if ti["task_id"] == "individual.send_sms"} == {0}, states

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
    assert {"timeout", "rate_limit_requests", "max_retry_seconds"} <= set(meta["extra_fields"])


# --- The UI in a browser: the run's grid, the trigger form, a new user's connection and dry run ---

#: The README's pictures (docs/), written to the session's screenshot_dir (``make screenshots``: docs/).
GRID_SCREENSHOT, FORM_SCREENSHOT = "onboarding-grid.png", "onboarding-trigger-form.png"
UI_TIMEOUT = 120.0  # one browser wait (a React page on a busy 2-core machine)
#: The dialog open in the UI (Chakra renders closed ones hidden), or null.
OPEN_DIALOG_JS = """
return Array.from(document.querySelectorAll("[role=dialog][data-part=content]"))
  .find((e) => !e.hidden && e.getClientRects().length > 0) || null;
"""


def _successful_run(airflow: LiveAirflow, sandbox: str) -> str:
    """A successful run of DAG_ID: test_dag_runs_on_a_live_airflow's when it ran first, or a new one."""
    airflow.wait_for_dag(DAG_ID)
    response = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"state": "success"})
    assert response.status_code == 200, response.text
    runs = response.json()["dag_runs"]
    if runs:
        return runs[0]["dag_run_id"]
    run_id, run = run_onboarding(airflow, sandbox, DAG_ID)
    assert run["state"] == "success", f"{airflow.task_states(run_id, DAG_ID)}\n{airflow.report()}"
    return run_id


def _viewport(driver, width: int, height: int) -> None:
    """Size the window so that the page (and its screenshot) is width x height CSS pixels."""
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    outer = driver.get_window_size()
    driver.set_window_size(outer["width"] + width - inner[0], outer["height"] + height - inner[1])


def _journal(sandbox: str) -> list[dict]:
    response = requests.get(f"{sandbox}/_sandbox/journal", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.mark.chromium
def test_a_new_user_in_the_browser(live_airflow, warehouse, sandbox, tmp_path, screenshot_dir):
    """
    Issue #11 and #15 in one browser session: the run's grid and the trigger form (README
    screenshots), then a new user's path: an ``sfox`` connection added through the UI's form,
    and a dry run of a paused DAG triggered from its form, "Unpause on trigger" as the UI
    leaves it. The dry run sends nothing, and the unpause creates no other run.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.live.browser import ensure_chromium, start_chromium

    ensure_chromium()
    airflow = live_airflow
    run_id = _successful_run(airflow, sandbox)
    airflow.wait_for_dag(NEW_USER_DAG_ID)
    new_dag = airflow.api("GET", f"/api/v2/dags/{NEW_USER_DAG_ID}").json()
    assert new_dag["is_paused"] is True, new_dag  # new DAGs start paused: the click must unpause it
    runs_path = f"/api/v2/dags/{NEW_USER_DAG_ID}/dagRuns"
    assert airflow.api("GET", runs_path).json()["dag_runs"] == []

    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        wait = WebDriverWait(driver, UI_TIMEOUT)

        def dialog():  # the open dialog, waited for
            return wait.until(lambda d: d.execute_script(OPEN_DIALOG_JS))

        def click(xpath: str, root=None) -> None:
            wait.until(ec.element_to_be_clickable((By.XPATH, xpath)))
            (root or driver).find_element(By.XPATH, xpath).click()

        _viewport(driver, 1400, 900)
        driver.get(f"{airflow.url}/")
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(ADMIN_USER)
        driver.find_element(By.NAME, "password").send_keys(airflow.password)
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]"))).click()
        wait.until(lambda d: "/auth/login" not in d.current_url)

        # (a) The run's grid, the run selected, both account-type groups expanded.
        driver.get(f"{airflow.url}/dags/{DAG_ID}/runs/{run_id}")
        for group in ("individual", "corporation"):
            toggle = f"span[aria-label='Toggle group'][data-group-id='{group}']"
            child = f"a[data-testid='{group}.send_email']"

            def expanded(d, toggle=toggle, child=child) -> bool:
                # The grid re-renders while it loads: click again until the group's tasks show.
                if any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, child)):
                    return True
                for element in d.find_elements(By.CSS_SELECTOR, toggle):
                    with contextlib.suppress(WebDriverException):
                        element.click()
                time.sleep(1)
                return False

            wait.until(expanded, f"group {group} did not expand")
        tasks = ["plan", "individual_chunks", "corporation_chunks", "summarize"]
        tasks += ["individual", "individual.send_email", "individual.send_sms"]
        tasks += ["corporation", "corporation.send_email"]
        for task_id in tasks:  # the task's row name and its cell in the selected run's column
            for testid in (task_id, f"grid-{run_id}-{task_id}"):
                shown = ec.visibility_of_element_located((By.CSS_SELECTOR, f"a[data-testid='{testid}']"))
                wait.until(shown, f"no visible grid element {testid!r}")
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "a[data-group-id]")]
        assert [n.split()[0] for n in names] == ["corporation", "individual"], names
        wait.until(lambda d: "Success" in d.find_element(By.TAG_NAME, "body").text)
        page = driver.find_element(By.TAG_NAME, "body").text
        assert run_id in page, page
        assert driver.save_screenshot(str(screenshot_dir / GRID_SCREENSHOT))

        # A new user adds the sfox connection through the form (Admin > Connections > Add).
        driver.get(f"{airflow.url}/connections")
        click("//button[normalize-space(.)='Add Connection']")
        form = dialog()
        wait.until(lambda _: form.find_elements(By.NAME, "connection_id"))
        form.find_element(By.NAME, "connection_id").send_keys(UI_CONN_ID)
        form.find_element(By.CSS_SELECTOR, "input[role=combobox]").send_keys("sFOX Connect")
        click("//*[@role='option'][normalize-space(.)='sFOX Connect']")
        host = wait.until(lambda _: form.find_element(By.NAME, "host"))
        assert {"Base URL", "Enterprise API token"} <= set(form.text.splitlines()), form.text
        host.send_keys(sandbox)
        form.find_element(By.NAME, "password").send_keys(TOKEN)
        click(".//button[normalize-space(.)='Save']", form)
        wait.until(lambda d: d.execute_script(OPEN_DIALOG_JS) is None)
        wait.until(ec.presence_of_element_located((By.XPATH, f"//*[normalize-space(text())='{UI_CONN_ID}']")))
        stored = airflow.api("GET", f"/api/v2/connections/{UI_CONN_ID}")
        assert stored.status_code == 200, stored.text
        conn = stored.json()
        assert (conn["conn_type"], conn["host"]) == ("sfox", sandbox), conn
        assert conn["password"] != TOKEN  # write-only: masked in the answer

        # (b) The trigger form of the paused DAG: sections and titles; tick "Dry run" only
        # (and the threshold: the source has bad rows), "Unpause on trigger" left as it is.
        journal_before = len(_journal(sandbox))
        _viewport(driver, 1400, 1100)  # the whole form, its sections and the Trigger button
        driver.get(f"{airflow.url}/dags/{NEW_USER_DAG_ID}")
        click("//button[normalize-space(.)='Trigger']")
        trigger = dialog()
        wait.until(lambda _: trigger.find_elements(By.CSS_SELECTOR, "[data-testid=config-form]"))
        unpause = trigger.find_element(
            By.XPATH, ".//label[@data-scope='checkbox'][contains(normalize-space(.), 'on trigger')]//input"
        )
        unpause_default = unpause.is_selected()
        click(".//button[@data-part='item-trigger'][normalize-space(.)='Safety']", trigger)
        dry_run = (By.CSS_SELECTOR, "label[id='switch:element_dry_run']")
        wait.until(ec.element_to_be_clickable(dry_run)).click()
        wait.until(lambda d: d.find_element(By.NAME, "element_dry_run").is_selected())
        threshold = driver.find_element(By.NAME, "element_failure_threshold")
        threshold.send_keys(Keys.CONTROL, "a")
        threshold.send_keys(str(CONF["failure_threshold"]))
        wait.until(lambda _: threshold.get_attribute("value") == str(CONF["failure_threshold"]))
        shown = trigger.text.splitlines()
        sections = [line for line in shown if line in ("Safety", "Who", "What to send")]
        assert sections == ["Safety", "Who", "What to send"], shown
        assert {"Dry run", "Users per chunk task", "Failure threshold"} <= set(shown), shown
        # The dry run's help, as the params define it: it says what unpausing starts.
        from airflow_sfox.onboarding.params import onboarding_params

        help_text = str(onboarding_params()["dry_run"].description)
        assert "Unpause on trigger" in help_text
        assert help_text in " ".join(shown), shown
        assert f"Unpause {NEW_USER_DAG_ID} on trigger" in shown
        assert unpause.is_selected() is unpause_default  # untouched
        assert driver.save_screenshot(str(screenshot_dir / FORM_SCREENSHOT))
        click(".//button[normalize-space(.)='Trigger']", trigger)
        wait.until(lambda d: d.execute_script(OPEN_DIALOG_JS) is None)
    finally:
        driver.quit()

    # Exactly the run the form triggered: the unpause created none of its own.
    deadline = time.monotonic() + UI_TIMEOUT
    while not (runs := airflow.api("GET", runs_path).json()["dag_runs"]):
        assert time.monotonic() < deadline, "the trigger form created no run"
        time.sleep(2)
    triggered = runs[0]
    run = airflow.wait_for_run(triggered["dag_run_id"], NEW_USER_DAG_ID)
    assert run["state"] == "success", f"{airflow.task_states(run['dag_run_id'], NEW_USER_DAG_ID)}"
    assert (run["run_type"], run["conf"]["dry_run"]) == ("manual", True), run
    assert run["conf"]["failure_threshold"] == CONF["failure_threshold"], run["conf"]
    after = airflow.api("GET", runs_path).json()
    assert [r["dag_run_id"] for r in after["dag_runs"]] == [run["dag_run_id"]], after
    # The box was ticked by default, so the trigger unpaused the DAG: the case that matters.
    assert unpause_default is True
    assert airflow.api("GET", f"/api/v2/dags/{NEW_USER_DAG_ID}").json()["is_paused"] is False

    # The dry run sent nothing: no code and no send-verification POST, but it did plan with the
    # connection added in the form (one GET of the users, accepted with its token).
    during = _journal(sandbox)[journal_before:]
    assert not [e for e in during if e["code_sent"] or "/send-verification/" in e["path"]], during
    assert [(e["method"], e["path"], e["status"]) for e in during] == [("GET", "/v1/enterprise/users", 200)]
    # Its run row stays, marked a dry run (the page shows its preview); it wrote no ledger row.
    rows = warehouse(f"SELECT dry_run, status FROM sfox_onboarding_runs WHERE run_id = '{run['dag_run_id']}'")
    assert [tuple(row) for row in rows] == [(1, "success")], rows
    assert not warehouse(f"SELECT user_id FROM sfox_onboarding_ledger WHERE run_id = '{run['dag_run_id']}'")


def test_unpausing_the_factory_dag_schedules_nothing_in_the_past(live_airflow):
    """
    What the scheduler plans once the DAG is unpaused: its first scheduled run lies ahead of the
    moment it was unpaused (the browser test's dry run), not an hour that had already passed.

    The live Airflow here runs no scheduled run ([scheduler] use_job_schedule is off), so this
    reads the plan the api-server reports instead.
    """
    live_airflow.wait_for_dag(NEW_USER_DAG_ID)
    dag = live_airflow.api("GET", f"/api/v2/dags/{NEW_USER_DAG_ID}").json()
    assert dag["is_paused"] is False, "run after test_a_new_user_in_the_browser, which unpauses it"
    runs = live_airflow.api("GET", f"/api/v2/dags/{NEW_USER_DAG_ID}/dagRuns").json()["dag_runs"]
    unpaused_at = min(ts(run["queued_at"]) for run in runs)  # the click that unpaused it
    assert ts(dag["next_dagrun_run_after"]) > unpaused_at, (dag["next_dagrun_run_after"], unpaused_at)
