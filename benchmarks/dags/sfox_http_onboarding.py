"""
The alternative a user would write by hand: one HttpOperator task per user, mapped.

Reads the user ids from the same warehouse table as the onboarding DAG (connection
``sfox_warehouse``) and asks sFOX to send each an email code through Airflow's own
HttpOperator (connection ``sfox_http``: the base URL, and the ``Authorization`` header in the
extra). No pacing, no ledger: a 429 fails that task. A map holds at most 1,024 items
(``max_map_length``), so the ``limit`` param is capped at 1,000.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pendulum
from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="sfox_http_onboarding",
    description="Send sFOX email codes with one HttpOperator task per user (benchmark baseline)",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"limit": Param(1000, type="integer", minimum=1, maximum=1000)},
    tags=["sfox", "benchmark"],
) as dag:

    @task
    def endpoints(**context) -> list[str]:
        from airflow.providers.sqlite.hooks.sqlite import SqliteHook

        rows = SqliteHook(sqlite_conn_id="sfox_warehouse").get_records(
            "SELECT user_id FROM sfox_users ORDER BY user_id LIMIT ?", parameters=[context["params"]["limit"]]
        )
        return [f"v1/enterprise/users/send-verification/{quote(str(r[0]), safe='')}" for r in rows]

    HttpOperator.partial(
        task_id="send_email",
        http_conn_id="sfox_http",
        method="POST",
        data=json.dumps({"type": "email"}),
        map_index_template="{{ task.endpoint.rsplit('/', 1)[-1] }}",
    ).expand(endpoint=endpoints())
