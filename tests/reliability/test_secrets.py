"""
Issue 7.5: a full DAG run (``dag.test``) with a recognisable token and recognisable personal
data, with every kind of outcome: codes sent, users unknown to sFOX (404), sends failing on
5xx after their retry budget, rejected rows, and the token revoked half-way (401s, failed
chunk tasks, a failed summary). Then every task log (stdout, the logging capture and the log
files under AIRFLOW_HOME/logs), every XCom value, every rendered template field, the
exception texts and the warehouse's ledger and run rows are searched: neither the token nor
any email or phone number appears.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import TOKEN, load_dag, sfox_conn_json
from tests.reliability.support import Revoker

DAG_ID = "sfox_batch_onboarding"


def _people(count: int) -> list[tuple]:
    rows = []
    for i in range(count):
        kind = "individual" if i % 3 else "corporation"
        phone = f"+1999555{i:04d}" if kind == "individual" else None
        rows.append((f"cust-{i:04d}", kind, f"pii.canary.{i}@leak-canary.example", phone))
    return rows


#: Invalid rows whose email or phone must not reach a rejection reason.
BAD_PII_ROWS = [
    ("bad-0001", "corporation", "pii.canary.bad@@leak-canary.example", None),
    ("bad-0002", "individual", "pii.canary.bad2@leak-canary.example", "+1 999 555 8888"),
    ("bad-0003", "individual", "pii canary@leak-canary.example", "+19995558889"),
]


def _secrets(rows) -> list[str]:
    found = {TOKEN}
    for _, _, email, phone in rows:
        found.add(email)
        if phone:
            found.add(phone)
            found.add(re.sub(r"\D", "", phone))  # the bare digits, however formatted
    return sorted(found)


def _metadata_texts(run_id: str) -> dict[str, list[str]]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        xcoms = session.scalars(
            select(XComModel).where(XComModel.dag_id == DAG_ID, XComModel.run_id == run_id)
        ).all()
        rtifs = session.scalars(
            select(RenderedTaskInstanceFields).where(
                RenderedTaskInstanceFields.dag_id == DAG_ID, RenderedTaskInstanceFields.run_id == run_id
            )
        ).all()
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)
        ).all()
        return {
            "xcom": [repr(x.value) for x in xcoms],
            "rendered_fields": [repr(r.rendered_fields) + repr(r.k8s_pod_yaml) for r in rtifs],
            "task_instances": [repr((t.task_id, t.rendered_map_index, t.note)) for t in tis],
        }


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_nothing_secret_in_logs_xcom_rendered_fields_or_errors(
    airflow_db, warehouse_db, sfox_sandbox, monkeypatch, caplog, capfd
):
    people = _people(90)
    warehouse_db.seed(people + BAD_PII_ROWS)
    registered = [p for i, p in enumerate(people) if i % 9 != 4]  # every 9th is unknown to sFOX: 404
    sfox_sandbox.seed_users(
        [{"user_id": u, "account_type": k, "email": e, "phone_number": p} for u, k, e, p in registered]
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT",
        sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0, max_retry_seconds=0),
    )
    sfox_sandbox.set_faults(error_500_rate=0.1, latency_ms=20)
    revoker = Revoker(sfox_sandbox, after=45, token=TOKEN)  # the token revoked after 45 sends

    dag_run = load_dag(DAG_ID).test(run_conf={"chunk_size": 20, "failure_threshold": 1.0})

    assert revoker.revoked.is_set()
    assert dag_run.state == "failed"  # chunk tasks failed on 401, the summary on the unsent rest
    statuses = {e.status for e in sfox_sandbox.journal()}
    assert {200, 404, 500, 401} <= statuses, statuses  # every kind of answer happened
    captured = capfd.readouterr()
    texts: dict[str, list[str]] = {
        "stdout": [captured.out],
        "stderr": [captured.err],
        "logging": [caplog.text],
        "log_files": [
            p.read_text(errors="replace") for p in Path(airflow_db, "logs").rglob("*") if p.is_file()
        ],
        **_metadata_texts(dag_run.run_id),
        "ledger": [repr(row) for row in warehouse_db.query("SELECT * FROM sfox_onboarding_ledger")],
        "runs": [repr(row) for row in warehouse_db.query("SELECT * FROM sfox_onboarding_runs")],
        "attempts": [
            repr(row) for row in warehouse_db.query("SELECT * FROM sfox_onboarding_ledger_attempts")
        ],
    }
    # The searches are not vacuous: the logs hold the run, XCom the chunks, errors their text.
    assert "sFOX onboarding summary" in captured.out + caplog.text
    assert "HTTP 401" in captured.out + caplog.text
    # A 500 is retried (an outage is not the user's failure): its request keeps its error text.
    errors_of_500 = warehouse_db.query(
        "SELECT error FROM sfox_onboarding_ledger_attempts WHERE status = 500 AND error IS NOT NULL"
    )
    assert errors_of_500
    assert any("401" in row for row in texts["attempts"])  # the attempts table has every request
    assert texts["xcom"]
    assert any("rejected" in row for row in texts["ledger"])
    for secret in _secrets(people + BAD_PII_ROWS):
        leaks = {where: n for where, items in texts.items() if (n := sum(secret in t for t in items))}
        assert not leaks, f"{secret[:4]}... found in {leaks}"
    print({where: sum(len(t) for t in items) for where, items in texts.items()})
