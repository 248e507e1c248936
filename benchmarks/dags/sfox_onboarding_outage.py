"""
The onboarding DAG as the outage benchmark runs it: the factory's defaults, with the chunk
tasks' retry back-off compressed by ``SFOX_BENCH_OUTAGE_SCALE`` (the same factor that
compresses the one-hour outage: 0.05 turns 1 minute doubling to 15 minutes into 3 s doubling to
45 s), ``chunk_size`` 480 (as the budget benchmark) and no schedule: runs are only triggered.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.timetables.simple import NullTimetable

from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag

SCALE = float(os.environ.get("SFOX_BENCH_OUTAGE_SCALE", "0.05"))

dag = onboarding_dag(
    dag_id="sfox_onboarding_outage",
    source=OnboardingSource(table="sfox_users"),
    schedule=NullTimetable(),
    params={"chunk_size": 480},
    send_retry_delay=timedelta(minutes=1) * SCALE,
    send_max_retry_delay=timedelta(minutes=15) * SCALE,
    tags=("sfox", "benchmark"),
)
