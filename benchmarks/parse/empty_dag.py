"""
The parse-time baseline: a DAG file with the onboarding DAG's Airflow imports and no tasks.

Not in any DAG folder: ``benchmarks/sfox_bench/parse.py`` loads it directly.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task, task_group

with DAG(
    dag_id="empty_baseline",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    pass

# Imported like the onboarding DAG file imports them; unused in an empty DAG.
__all__ = ["dag", "task", "task_group"]
