"""
The email-verified watcher in a live Airflow: a user confirms their email at the sandbox, the
watcher (in the triggerer) emits an event, and the onboarding DAG scheduled on the asset gets an
asset-triggered run that sends that user's sms. Then the triggerer restarts: a user verified
after it is emitted, and no user is emitted twice.

``test_watcher_latency`` is the benchmark of ``benchmarks/run.py --only watcher`` (sequential
single users, the watcher polling every BENCH_POLL_INTERVAL s); it runs only when
``SFOX_WATCHER_BENCH_OUT`` names the file for its figures.

The session's live Airflow (tests/live/fixtures.py): a real PostgreSQL for Airflow's metadata and
this module's warehouse, this module's sandbox, and api-server, scheduler, dag-processor and
triggerer as processes, each stopped by its process-group id at the end.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path

import psycopg2
import pytest
import requests

from tests.helpers import TOKEN
from tests.live.airflow import CONF, USERS, LiveAirflow, run_onboarding, ts
from tests.onboarding_data import make_users

pytestmark = pytest.mark.live

DAG_ID = "sfox_watch_live"
#: The users of the source table the ``warehouse`` fixture creates: USERS.
INDIVIDUALS = [u[0] for u in USERS if u[1] == "individual"]
CORPORATIONS = [u[0] for u in USERS if u[1] == "corporation"]
#: Real seconds to wait for an asset-triggered run (watcher poll, event, scheduler, the run itself).
EVENT_TIMEOUT = 240.0
#: The benchmark's output file (``benchmarks/run.py --only watcher``): unset, the benchmark is skipped.
BENCH_OUT = os.environ.get("SFOX_WATCHER_BENCH_OUT")
#: The watcher's poll interval: short for the tests, a round figure for the benchmark.
TEST_POLL_INTERVAL, BENCH_POLL_INTERVAL = 3.0, 10.0
POLL_INTERVAL = BENCH_POLL_INTERVAL if BENCH_OUT else TEST_POLL_INTERVAL
#: The benchmark's users: individuals of their own (ids apart from the live test's ``user-*``).
BENCH = 15
BENCH_USERS = [
    (f"wb-{i:05d}", kind, f"wb{i}@example.com", phone)
    for i, (_, kind, _, phone) in enumerate(make_users(BENCH, seed=17, corporation_share=0))
]
#: The benchmark's scheduler setting, as the asset event's (tests/live/test_live_email_verified.py).
BENCH_ENV = {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2"}
DAG_SOURCE = """
try:  # Airflow 3.2+: the Task SDK's, to go with the SDK's CronTriggerTimetable of default_schedule()
    from airflow.sdk import AssetOrTimeSchedule
except ImportError:  # Airflow 3.1
    from airflow.timetables.assets import AssetOrTimeSchedule

from airflow_sfox.assets.sfox import email_verified_asset
from airflow_sfox.onboarding.dag import OnboardingSource, default_schedule, onboarding_dag
from airflow_sfox.triggers.sfox import email_verified_watcher

WATCHER = email_verified_watcher(poll_interval={poll_interval})
EMAIL_VERIFIED = email_verified_asset("{host}", watchers=[WATCHER])

dag = onboarding_dag(
    dag_id="{dag_id}",
    source=OnboardingSource(table="sfox_users"),
    schedule=AssetOrTimeSchedule(timetable=default_schedule(), assets=[EMAIL_VERIFIED]),
)
"""


@pytest.fixture(scope="module")
def extra_dag_files(sandbox) -> dict[str, str]:
    """DAG_ID in the live DAG folder, its asset on this module's sandbox."""
    host = sandbox.removeprefix("http://")
    return {f"{DAG_ID}.py": DAG_SOURCE.format(host=host, dag_id=DAG_ID, poll_interval=POLL_INTERVAL)}


@pytest.fixture(scope="module")
def extra_env() -> dict[str, str]:
    """Asset-triggered runs on and DAG files reparsed every 5 s."""
    env = {
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",  # asset-triggered runs are made there too
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",  # the watcher starts at a reparse
    }
    return {**env, **BENCH_ENV} if BENCH_OUT else env


@pytest.fixture(scope="module")
def watch_dag(live_airflow) -> dict[str, str]:
    """The environment of the live Airflow's components, with DAG_ID in its DAG folder."""
    return live_airflow.env


def _restart(airflow: LiveAirflow, env: dict[str, str], component: str) -> None:
    """Stop a component by its process group, then start it again (in the same environment)."""
    assert env == airflow.env
    airflow.restart(component)


def _confirm_email(sandbox_url: str, *user_ids: str) -> None:
    """The users confirm their email at the sandbox with the code it sent them."""
    for user_id in user_ids:
        codes = requests.get(f"{sandbox_url}/_sandbox/codes/{user_id}", timeout=30).json()["data"]
        confirmed = requests.post(
            f"{sandbox_url}/v1/enterprise/users/verify/{user_id}",
            json={"type": "email", "otp": codes["email"]["latest"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert confirmed.status_code == 200, confirmed.text


def _asset_events(airflow: LiveAirflow, sandbox_url: str) -> list[dict]:
    """Every event of DAG_ID's email-verified asset (the watcher's), oldest first."""
    uri = f"sfox://{sandbox_url.removeprefix('http://')}/email-verified"  # other DAGs have their own
    assets = airflow.api("GET", "/api/v2/assets", params={"uri_pattern": "email-verified"}).json()["assets"]
    (asset,) = [a for a in assets if a["uri"] == uri]
    params = {"asset_id": asset["id"], "order_by": "timestamp"}
    # Airflow answers 500 while an event's run is queued without a start date yet: ask again.
    deadline = time.monotonic() + 60
    while (response := airflow.api("GET", "/api/v2/assets/events", params=params)).status_code == 500:
        assert time.monotonic() < deadline, response.text
        time.sleep(1)
    assert response.status_code == 200, response.text
    return response.json()["asset_events"]


def _emitted(airflow: LiveAirflow, sandbox_url: str) -> Counter:
    events = _asset_events(airflow, sandbox_url)
    assert all(e["extra"].get("from_trigger") is True for e in events), events
    return Counter(uid for e in events for uid in e["extra"]["payload"]["user_ids"])


def _asset_runs(airflow: LiveAirflow) -> list[dict]:
    response = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "asset_triggered"})
    assert response.status_code == 200, response.text
    return response.json()["dag_runs"]


def _wait_until(airflow: LiveAirflow, what: str, ready) -> None:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while not ready():
        airflow.check_alive()
        assert time.monotonic() < deadline, f"{what} not seen in {EVENT_TIMEOUT}s\n{airflow.report()}"
        time.sleep(2)


def _wait_for_sms(airflow: LiveAirflow, sandbox_url: str, user_ids: set[str]) -> None:
    """Until an asset-triggered run has sent these users' sms, and every such run is finished."""

    def sent() -> bool:
        journal = requests.get(f"{sandbox_url}/_sandbox/journal", timeout=30).json()["data"]
        sms = {e["user_id"] for e in journal if e["code_sent"] and e["type"] == "sms"}
        runs = _asset_runs(airflow)
        return user_ids <= sms and all(r["state"] in ("success", "failed") for r in runs)

    _wait_until(airflow, f"sms to {sorted(user_ids)}", sent)


def _send_email_codes(airflow: LiveAirflow, sandbox_url: str, users: list[tuple]) -> None:
    """
    ``users`` registered at the sandbox, DAG_ID unpaused, and a first run that sends every email
    code: the ledger's email rows are `sent` (the source's bad rows are rejected: CONF's failure
    threshold lets the run succeed anyway).
    """
    _, run = run_onboarding(airflow, sandbox_url, DAG_ID, users, CONF)
    assert run["state"] == "success", airflow.report()


def test_a_user_who_verifies_gets_an_asset_triggered_run(live_airflow, watch_dag, warehouse, sandbox):
    airflow = live_airflow
    _send_email_codes(airflow, sandbox, USERS)
    assert _asset_runs(airflow) == []  # nobody verified yet: no event, no asset-triggered run

    # One user per step: an event that arrives while a run is on waits for the next event
    # (apache/airflow#56050), which this test would take for a missed one.
    first = {INDIVIDUALS[0]}
    _confirm_email(sandbox, *first, CORPORATIONS[0])  # a corporation has nothing more to send
    _wait_until(airflow, "the watcher's event", lambda: set(_emitted(airflow, sandbox)) >= first)
    _wait_for_sms(airflow, sandbox, first)
    runs = _asset_runs(airflow)
    assert runs, "no asset-triggered run"
    assert {r["state"] for r in runs} == {"success"}, airflow.report()

    # The triggerer restarts: the trigger is rebuilt from its kwargs; the ledger is its watermark.
    _restart(airflow, watch_dag, "triggerer")
    later = {INDIVIDUALS[1]}
    _confirm_email(sandbox, *later)
    _wait_until(
        airflow, "the event after the restart", lambda: set(_emitted(airflow, sandbox)) >= first | later
    )
    _wait_for_sms(airflow, sandbox, first | later)

    emitted = _emitted(airflow, sandbox)
    assert set(emitted) == first | later  # nobody else: corporations and unverified users never
    assert set(emitted.values()) == {1}, emitted  # no user twice, across the restart
    journal = requests.get(f"{sandbox}/_sandbox/journal", timeout=30).json()["data"]
    sms = Counter(e["user_id"] for e in journal if e["code_sent"] and e["type"] == "sms")
    assert sms == Counter(dict.fromkeys(first | later, 1))
    assert {r["state"] for r in _asset_runs(airflow)} == {"success"}, airflow.report()


@pytest.mark.skipif(
    not BENCH_OUT, reason="the benchmark of benchmarks/run.py --only watcher (SFOX_WATCHER_BENCH_OUT unset)"
)
def test_watcher_latency(live_airflow, watch_dag, warehouse, databases, sandbox):
    """
    Seconds from a user's email confirmation (the sandbox's verify) to their sms request at the
    sandbox, through the watcher polling every POLL_INTERVAL s, over BENCH sequential single users
    (the next confirms once the previous one's run ended, after a random part of the interval);
    written to ``SFOX_WATCHER_BENCH_OUT``.
    """
    airflow = live_airflow
    with psycopg2.connect(databases["warehouse"]) as conn, conn.cursor() as cursor:
        cursor.executemany("INSERT INTO sfox_users VALUES (%s, %s, %s, %s)", BENCH_USERS)
    conn.close()
    _send_email_codes(airflow, sandbox, USERS + BENCH_USERS)

    # Confirmations at a random moment of the poll cycle: its expected wait is half the interval.
    rng = random.Random(16)
    seconds, emitted_s, run_seconds = [], [], []
    for uid, *_ in BENCH_USERS:
        since = max((e["seq"] for e in _journal(sandbox)), default=0)
        time.sleep(rng.uniform(0, POLL_INTERVAL))
        _confirm_email(sandbox, uid)
        # Not the events' API meanwhile: it answers 500 while an event's run is queued (no start date).
        _wait_for_sms(airflow, sandbox, {uid})
        entries = _journal(sandbox, since)
        confirmed = next(e["time"] for e in entries if e["path"] == f"/v1/enterprise/users/verify/{uid}")
        sms = [e["time"] for e in entries if e["code_sent"] and e["type"] == "sms" and e["user_id"] == uid]
        assert len(sms) == 1, entries
        seconds.append(sms[0] - confirmed)
        (event,) = [e for e in _asset_events(airflow, sandbox) if uid in e["extra"]["payload"]["user_ids"]]
        emitted_s.append(ts(event["timestamp"]).timestamp() - confirmed)
        # The run that sent it: the asset-triggered run whose start and end hold the sms request.
        spans = [
            (ts(r["start_date"]).timestamp(), ts(r["end_date"]).timestamp(), r) for r in _asset_runs(airflow)
        ]
        (run,) = [(start, end, r) for start, end, r in spans if start <= sms[0] <= end]
        assert run[2]["state"] == "success", run
        run_seconds.append(run[1] - run[0])
    ordered = sorted(seconds)
    figures = {
        "users": len(seconds),
        "poll_interval_s": POLL_INTERVAL,
        "p50_s": statistics.median(seconds),
        "p95_s": ordered[max(0, round(0.95 * len(ordered)) - 1)],
        "mean_s": statistics.fmean(seconds),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "p50_emitted_s": statistics.median(emitted_s),
        "max_emitted_s": max(emitted_s),
        "runs": len(run_seconds),
        "mean_run_s": statistics.fmean(run_seconds),
        "seconds": [round(s, 3) for s in seconds],
        "emitted_seconds": [round(s, 3) for s in emitted_s],
        "settings": {
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            **BENCH_ENV,
        },
    }
    Path(str(BENCH_OUT)).write_text(json.dumps(figures, indent=2))


def _journal(sandbox_url: str, since: int = 0) -> list[dict]:
    response = requests.get(f"{sandbox_url}/_sandbox/journal", params={"since": since}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]
