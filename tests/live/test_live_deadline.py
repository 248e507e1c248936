"""
The deadline on run duration, live: a run still sending when its deadline passes is reported
once, from the triggerer, with its progress and no personal data.

The session's live Airflow (``tests/live/fixtures.py``) gets one more DAG file for this module:
the factory with ``deadline=`` of 10 s and a notifier that appends what it says to a file. Its
sFOX connection (``sfox_paced``, on this module's sandbox) allows one request a second, so the
run's 30 codes take half a minute at least: the scheduler finds the deadline passed, the
triggerer runs the callback.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
import requests

from tests.helpers import TOKEN, sfox_conn_json
from tests.live.airflow import USERS
from tests.onboarding.deadline_notifier import RECORDER, said
from tests.onboarding_data import BAD_ROWS, sandbox_users

pytestmark = pytest.mark.live

DAG_ID = "sfox_deadline"
DEADLINE_SECONDS = 10
DAG_SOURCE = """
from datetime import timedelta

from airflow_sfox._compat import AsyncCallback
from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag

dag = onboarding_dag(
    dag_id="{dag_id}",
    source=OnboardingSource(table="sfox_users"),
    sfox_conn_id="sfox_paced",
    schedule=None,
    params={{"failure_threshold": 0.5}},
    deadline=timedelta(seconds={seconds}),
    on_deadline=[AsyncCallback("{recorder}", kwargs={{"path": "{said}"}})],
)
"""


@pytest.fixture(scope="module")
def said_path(tmp_path_factory):
    return tmp_path_factory.mktemp("deadline") / "said.jsonl"


@pytest.fixture(scope="module")
def extra_dag_files(said_path) -> dict[str, str]:
    source = DAG_SOURCE.format(dag_id=DAG_ID, seconds=DEADLINE_SECONDS, recorder=RECORDER, said=said_path)
    return {f"{DAG_ID}.py": source}


@pytest.fixture(scope="module")
def extra_connections(sandbox) -> dict[str, str]:
    # One request a second: the run's 30 codes (30 s at least) outlast the deadline (10 s) by far.
    return {"sfox_paced": sfox_conn_json(sandbox, rate_limit_requests=1, rate_limit_window_seconds=1)}


def test_a_run_past_its_deadline_is_reported_once_from_the_triggerer(
    live_airflow, warehouse, sandbox, said_path
):
    airflow = live_airflow
    registered = requests.post(f"{sandbox}/_sandbox/users", json=sandbox_users(USERS), timeout=30)
    assert registered.status_code == 200, registered.text
    airflow.wait_for_dag(DAG_ID)
    assert airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    run_id = f"late_{uuid.uuid4().hex[:8]}"
    triggered = airflow.api(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": None}
    )
    assert triggered.status_code == 200, triggered.text

    run = airflow.wait_for_run(run_id, DAG_ID)
    assert run["state"] == "success", f"{airflow.task_states(run_id, DAG_ID)}\n{airflow.report()}"

    # Once, though the run went on for long after it (and the scheduler looked again and again).
    messages = said(said_path)
    assert len(messages) == 1, f"{messages}\n{airflow.report()}"
    text = messages[0]["text"]
    first, progress = text.splitlines()
    assert first.startswith(f"sFOX onboarding run {run_id} of {DAG_ID}: still running past its deadline (")
    # The plan had queued the 30 valid users in 2 chunk steps (one per account type), from the run table.
    assert re.fullmatch(r"Progress: \d of 2 chunk steps done, 30 users planned, \d+ requests to .*", progress)
    assert messages[0]["sfox_run"]["run_id"] == run_id

    # Counts only: no email, phone number or token in what it said, nor in the triggerer's log.
    triggerer = next(p for p in airflow.processes if p.name == "triggerer")
    triggerer_log = triggerer.log.read_text(errors="replace")
    said_text = json.dumps(messages)
    for _, _, email, phone in USERS + [row for row, _ in BAD_ROWS]:
        for value in (email, phone):
            assert not value or str(value) not in said_text + triggerer_log
    assert TOKEN not in said_text + triggerer_log
