"""
Another DAG on the same sFOX connection (the same budget scope): ``SendVerificationOperator``
mapped over ``count`` user ids from ``first`` on (``user-0001500`` ...), one task per user.
The budget benchmark runs it while the onboarding DAG's 4 chunk tasks send.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_sfox.operators.verification import SendVerificationOperator

with DAG(
    dag_id="sfox_operator_users",
    description="One SendVerificationOperator task per user on sfox_default (benchmark)",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "first": Param(0, type="integer", minimum=0),
        "count": Param(200, type="integer", minimum=1, maximum=1000),
    },
    tags=["sfox", "benchmark"],
) as dag:

    @task
    def user_ids(**context) -> list[str]:
        first, count = context["params"]["first"], context["params"]["count"]
        return [f"user-{i:07d}" for i in range(first, first + count)]

    SendVerificationOperator.partial(
        task_id="send_email", verification_type="email", sfox_conn_id="sfox_default"
    ).expand(user_id=user_ids())
