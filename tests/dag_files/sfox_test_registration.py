"""An onboarding DAG that registers the users sFOX does not know yet (driven by tests/onboarding)."""

from __future__ import annotations

from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag
from airflow_sfox.onboarding.registration import Registration

dag = onboarding_dag(
    dag_id="sfox_test_registration",
    source=OnboardingSource(registration=Registration()),
    schedule=None,
    send_retries=0,
)
