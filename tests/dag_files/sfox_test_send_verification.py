"""Test DAG: SendVerificationOperator mapped over users (driven by tests/operators)."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_sfox.operators.verification import SendVerificationOperator

with DAG(dag_id="sfox_test_send_verification", schedule=None, catchup=False, tags=["sfox-test"]) as dag:
    SendVerificationOperator.partial(task_id="send_email", verification_type="email").expand(
        user_id=["ind-1", "corp-1", "done-1"]
    )
    SendVerificationOperator(task_id="send_sms", user_id="done-1", verification_type="sms")
    SendVerificationOperator(
        task_id="send_sms_strict", user_id="done-1", verification_type="sms", fail_if_already_verified=True
    )
