"""
Onboard users from a warehouse table onto sFOX, in chunks, rate-aware and idempotent.

plan -> per chunk: send_email -> send_sms (skipped for corporation chunks) -> summarize.
Corporations verify email; individuals verify email, then (in a later run, once sFOX reports
their email verified) sms. All logic lives in ``airflow_sfox.onboarding``; this file wires it.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task, task_group

from airflow_sfox.onboarding.params import onboarding_params
from airflow_sfox.onboarding.runs import plan_run, summarize_run
from airflow_sfox.operators.verification import SendVerificationBatchOperator

WAREHOUSE_CONN_ID = "sfox_warehouse"
SFOX_CONN_ID = "sfox_default"
#: Chunk tasks that may send at once. Each gets 1/PARALLEL_CHUNKS of the connection's request
#: budget, so together they stay within it (sFOX limits the whole IP). One task with a few
#: threads already fills the budget: more parallel chunks add no speed, only spread work.
PARALLEL_CHUNKS = 1

with DAG(
    dag_id="sfox_batch_onboarding",
    description="Send sFOX verification codes to the users of a warehouse table",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=PARALLEL_CHUNKS,
    params=onboarding_params(),
    tags=["sfox"],
    doc_md=__doc__,
) as dag:

    @task
    def plan(**context: Any) -> list[dict[str, Any]]:
        result = plan_run(
            params=context["params"],
            run_id=context["run_id"],
            dag_id=context["dag"].dag_id,
            warehouse_conn_id=WAREHOUSE_CONN_ID,
            sfox_conn_id=SFOX_CONN_ID,
            started_at=context["dag_run"].start_date,
        )
        # The chunk descriptors are mapped over; the counts go to the summary.
        context["ti"].xcom_push(key="counts", value=result["counts"])
        return result["chunks"]

    @task_group
    def onboard_chunk(chunk: dict[str, Any]) -> None:
        """One chunk of users of one account type: email for all, then sms for individuals."""
        send = {
            channel: SendVerificationBatchOperator(
                task_id=f"send_{channel}",
                chunk=chunk,
                verification_type=channel,
                # The branch per account type: corporation chunks skip the sms step.
                account_types=("individual",) if channel == "sms" else ("individual", "corporation"),
                warehouse_conn_id=WAREHOUSE_CONN_ID,
                sfox_conn_id=SFOX_CONN_ID,
                rate_share=1 / PARALLEL_CHUNKS,
            )
            for channel in ("email", "sms")
        }
        send["email"] >> send["sms"]

    @task(trigger_rule="all_done")
    def summarize(**context: Any) -> dict[str, Any]:
        return summarize_run(
            counts=context["ti"].xcom_pull(task_ids="plan", key="counts"),
            params=context["params"],
            run_id=context["run_id"],
            dag_id=context["dag"].dag_id,
            warehouse_conn_id=WAREHOUSE_CONN_ID,
            started_at=context["dag_run"].start_date,
        )

    onboard_chunk.expand(chunk=plan()) >> summarize()
