"""The onboarding DAG scheduled hourly and on the email-verified watcher's events (docs: event-driven)."""

from __future__ import annotations

# [START howto_watcher]
try:  # Airflow 3.2+: the Task SDK's, to match default_schedule()'s timetable
    from airflow.sdk import AssetOrTimeSchedule
except ImportError:  # Airflow 3.1
    from airflow.timetables.assets import AssetOrTimeSchedule  # type: ignore[no-redef]

from airflow_sfox.assets.sfox import email_verified_asset
from airflow_sfox.onboarding.dag import OnboardingSource, default_schedule, onboarding_dag
from airflow_sfox.triggers.sfox import email_verified_watcher

# Build the asset once, in a module every DAG file imports: a DAG file that names the asset
# without its watcher removes the watcher.
EMAIL_VERIFIED = email_verified_asset(
    "api.sfox.com", watchers=[email_verified_watcher(sfox_conn_id="sfox_default", poll_interval=300)]
)

dag = onboarding_dag(
    dag_id="sfox_batch_onboarding",
    source=OnboardingSource(table="sfox_users"),
    schedule=AssetOrTimeSchedule(timetable=default_schedule(), assets=[EMAIL_VERIFIED]),
)
# [END howto_watcher]
