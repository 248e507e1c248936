"""A real ``dag.test()`` run of SendVerificationOperator, mapped, against the sandbox."""

from __future__ import annotations

import json

import pytest

from tests.helpers import TOKEN, load_dag

USERS = [
    {
        "user_id": "ind-1",
        "account_type": "individual",
        "email": "ind1@example.com",
        "phone_number": "+12223334444",
    },
    {"user_id": "corp-1", "account_type": "corporation", "email": "corp1@example.com"},
    {
        "user_id": "done-1",
        "account_type": "individual",
        "email": "done1@example.com",
        "phone_number": "+12223335555",
    },
]


@pytest.fixture(scope="module")
def mapped_run(airflow_db, sfox_sandbox_server):
    """Run the test DAG once: ind-1 and corp-1 are due, done-1 has verified both channels."""
    import os

    from tests.helpers import sfox_conn_json

    server = sfox_sandbox_server
    server.reset()
    server.seed_users(USERS)
    for channel in ("email", "sms"):
        # done-1 verifies through the API, like a user typing the code.
        import requests

        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = f"{server.url}/v1/enterprise/users"
        requests.post(f"{url}/send-verification/done-1", json={"type": channel}, headers=headers, timeout=5)
        otp = server.codes("done-1")[channel]["latest"]
        response = requests.post(
            f"{url}/verify/done-1", json={"type": channel, "otp": otp}, headers=headers, timeout=5
        )
        assert response.status_code == 200, response.text
    server.clear_journal()

    os.environ["AIRFLOW_CONN_SFOX_DEFAULT"] = sfox_conn_json(server.url)
    try:
        dag = load_dag("sfox_test_send_verification")
        dag_run = dag.test()
    finally:
        del os.environ["AIRFLOW_CONN_SFOX_DEFAULT"]
    return dag_run, server.journal()


def _task_instances(dag_run):
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        return {(ti.task_id, ti.map_index): (ti.state, ti.rendered_map_index) for ti in tis}


def _xcom(dag_run, task_id: str, map_index: int):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key == "return_value",
            )
        ).one()
        return XComModel.deserialize_value(row)


def test_mapped_operator_sends_each_user_once(mapped_run):
    dag_run, journal = mapped_run
    tis = _task_instances(dag_run)
    assert {key: state for key, (state, _) in tis.items() if key[0] == "send_email"} == {
        ("send_email", 0): "success",
        ("send_email", 1): "success",
        ("send_email", 2): "success",
    }
    sends = [(e.user_id, e.type, e.status) for e in journal if "/send-verification/" in e.path]
    assert sorted(sends) == sorted(
        [
            ("ind-1", "email", 200),
            ("corp-1", "email", 200),
            ("done-1", "email", 422),
            ("done-1", "sms", 422),
            ("done-1", "sms", 422),
        ]
    )


def test_mapped_results_are_masked_and_labelled(mapped_run):
    dag_run, _ = mapped_run
    tis = _task_instances(dag_run)
    assert [tis[("send_email", i)][1] for i in range(3)] == ["email ind-1", "email corp-1", "email done-1"]

    results = [_xcom(dag_run, "send_email", i) for i in range(3)]
    assert results == [
        {"user_id": "ind-1", "type": "email", "outcome": "sent", "destination": "i***@example.com"},
        {"user_id": "corp-1", "type": "email", "outcome": "sent", "destination": "c***@example.com"},
        {"user_id": "done-1", "type": "email", "outcome": "already_verified", "destination": ""},
    ]
    dumped = json.dumps(results)
    for user in USERS:
        assert user["email"] not in dumped
    assert TOKEN not in dumped


def test_already_verified_is_success_by_default_or_fails_when_asked(mapped_run):
    dag_run, _ = mapped_run
    tis = _task_instances(dag_run)
    assert tis[("send_sms", -1)][0] == "success"
    assert _xcom(dag_run, "send_sms", -1)["outcome"] == "already_verified"
    assert tis[("send_sms_strict", -1)][0] == "failed"
    assert dag_run.state == "failed"
