"""Onboard the users of the warehouse table ``sfox_users`` onto sFOX (see ``onboarding_dag``)."""

from __future__ import annotations

from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag

dag = onboarding_dag(
    dag_id="sfox_batch_onboarding",
    source=OnboardingSource(table="sfox_users"),
    sfox_conn_id="sfox_default",
    warehouse_conn_id="sfox_warehouse",
)
