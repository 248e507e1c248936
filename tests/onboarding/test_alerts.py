"""Alerts: notifiers passed to the DAG factory fire once on failure and once on recovery (real runs)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from airflow_sfox.onboarding.alerts import alert_text, is_recovery, should_notify
from tests.helpers import TOKEN, sfox_conn_json
from tests.onboarding_data import BAD_ROWS, make_users, sandbox_users


@pytest.fixture
def alerting_dag(airflow_db, sfox_sandbox, warehouse_db, monkeypatch):
    """The DAG file's DAG and its two recording notifiers."""
    spec = importlib.util.spec_from_file_location(
        "sfox_test_alerts_dag", Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "sfox_test_alerts.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(**extra):
        monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, **extra))
        return module.dag.test().state

    return run, module.failures, module.recoveries


def test_failure_then_recovery_alert_once_each_without_personal_data(
    alerting_dag, warehouse_db, sfox_sandbox
):
    run, failures, recoveries = alerting_dag
    users = make_users(30, seed=41)
    bad = [row for row, _ in BAD_ROWS]
    warehouse_db.seed(users + bad)  # 8 bad rows of 38: over the 5 % threshold
    sfox_sandbox.seed_users(sandbox_users(users))

    assert run() == "failed"
    assert (len(failures.sent), len(recoveries.sent)) == (1, 0)
    text = failures.sent[0]
    assert "sfox_test_alerts: failed" in text
    assert "over the failure threshold" in text
    assert "email:sent 30" in text
    assert "email is malformed (1)" in text
    for _, _, email, phone in users + bad:
        assert not email or str(email) not in text
        assert not phone or str(phone) not in text
    assert TOKEN not in text

    warehouse_db.seed(users)  # the partner fixes the source
    assert run() == "success"
    assert (len(failures.sent), len(recoveries.sent)) == (1, 1)
    assert "sfox_test_alerts: success" in recoveries.sent[0]

    assert run() == "success"  # healthy after healthy: no second recovery
    assert (len(failures.sent), len(recoveries.sent)) == (1, 1)


@pytest.mark.parametrize(
    ("previous", "current", "recovered"),
    [
        ("failed", "success", True),
        ("incomplete", "success", True),
        ("plan_failed", "success", True),
        ("auth_failed", "success", True),
        ("interrupted", "success", True),
        ("success", "success", False),
        (None, "success", False),  # the first run
        ("failed", "failed", False),
    ],
)
def test_is_recovery(previous, current, recovered):
    assert is_recovery(previous, current) is recovered


@pytest.mark.parametrize(
    ("previous", "current", "notify"),
    [
        (None, "interrupted", True),  # an outage starts: one alert
        ("success", "interrupted", True),
        ("interrupted", "interrupted", False),  # the same outage goes on: no alert per run
        ("interrupted", "failed", True),  # something else went wrong
        ("failed", "failed", True),  # each failure of the data or the threshold alerts
        ("interrupted", "success", True),  # sends flow again: one recovery
        ("success", "success", False),
    ],
)
def test_one_alert_per_outage(previous, current, notify):
    assert should_notify(previous, current) is notify


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_an_outage_alerts_once_and_its_end_recovers_once(alerting_dag, warehouse_db, sfox_sandbox):
    run, failures, recoveries = alerting_dag
    users = make_users(10, seed=42)
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    sfox_sandbox.set_faults(error_503_rate=1.0)  # a maintenance window over two runs

    assert run(max_retry_seconds=1) == "failed"
    assert run(max_retry_seconds=1) == "failed"
    assert (len(failures.sent), len(recoveries.sent)) == (1, 0)
    assert "sfox_test_alerts: interrupted" in failures.sent[0]
    assert "sFOX unavailable (HTTP 503)" in failures.sent[0]
    statuses = [row[0] for row in warehouse_db.query("SELECT status FROM sfox_onboarding_runs")]
    assert statuses == ["interrupted", "interrupted"]

    sfox_sandbox.set_faults(error_503_rate=0.0)
    assert run() == "success"
    assert (len(failures.sent), len(recoveries.sent)) == (1, 1)


def test_alert_text_is_short_and_names_the_top_outcomes_and_reasons():
    summary = {
        "run_id": "r1",
        "dag_id": "d",
        "status": "failed",
        "problem": "3 failed",
        "outcomes": {f"email:s{i}": i for i in range(10)},
        "rejected_reasons": {"email is malformed": 4, "phone_number is missing": 2},
    }
    text = alert_text(summary)
    assert text.splitlines()[0] == "sFOX onboarding run r1 of d: failed"
    assert "email:s9 9, email:s8 8" in text
    assert "email:s0" not in text  # top 5 only
    assert "email is malformed (4)" in text
    assert json.dumps(summary)  # what the notifier gets as sfox_run is JSON-ready
