"""What the ``dag.test()`` runs of the shipped DAGs read back: codes, task states, XCom."""

from __future__ import annotations

from collections import Counter

import requests

from tests.helpers import TOKEN

#: The onboarding DAG of ``dags/sfox_batch_onboarding.py``.
DAG_ID = "sfox_batch_onboarding"


def codes(server) -> Counter:
    """Codes the sandbox sent, by (user_id, channel)."""
    return Counter((e.user_id, e.type) for e in server.journal() if e.code_sent)


def verify(server, user_id: str, channel: str) -> None:
    """The user types the code they received."""
    otp = server.codes(user_id)[channel]["latest"]
    response = requests.post(
        f"{server.url}/v1/enterprise/users/verify/{user_id}",
        json={"type": channel, "otp": otp},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text


def task_states(dag_run) -> dict[tuple[str, int], tuple[str, str | None]]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == dag_run.run_id)
        ).all()
        return {(ti.task_id, ti.map_index): (ti.state, ti.rendered_map_index) for ti in tis}


def return_value(dag_run, task_id: str, dag_id: str = DAG_ID):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
        ).one()
        return XComModel.deserialize_value(row)
