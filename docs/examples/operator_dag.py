"""SendVerificationOperator in a DAG (docs: operators): one user from a param, and a mapped list."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_sfox.operators.verification import SendVerificationOperator

# [START howto_operator]
with DAG(
    dag_id="sfox_send_verification_example",
    schedule=None,
    params={"user_id": Param("client_account_1", type="string")},
) as dag:
    # One user, from the trigger form: user_id and verification_type are templated.
    SendVerificationOperator(task_id="send_email", user_id="{{ params.user_id }}", verification_type="email")

    # One task instance per user, labelled "email client_1", ... in the grid.
    SendVerificationOperator.partial(task_id="send_email_each", verification_type="email").expand(
        user_id=["client_1", "client_2"]
    )
# [END howto_operator]
