"""
The onboarding DAG as the registration benchmark (issue #23) runs it: the factory with
registration switched on (the default mapping: each register-account field from the column of
its name, the nested objects from JSON columns), over table ``sfox_new_users`` of the
``sfox_registration_warehouse`` connection, with ``parallel_chunks`` 2, ``chunk_size`` 480 and
no schedule, as the verification-only DAG it is compared with (``sfox_onboarding_p2`` of
``sfox_onboarding_bench.py``). The key of the fields' keyed hash comes from the Airflow
Variable ``sfox_registration_secret`` (``AIRFLOW_VAR_SFOX_REGISTRATION_SECRET``).
"""

from __future__ import annotations

from airflow.timetables.simple import NullTimetable

from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag
from airflow_sfox.onboarding.registration import Registration

#: Users per chunk task, as the verification-only DAG of the budget benchmark.
CHUNK_SIZE = 480

dag = onboarding_dag(
    dag_id="sfox_onboarding_registration",
    source=OnboardingSource(table="sfox_new_users", registration=Registration()),
    sfox_conn_id="sfox_default",
    warehouse_conn_id="sfox_registration_warehouse",
    parallel_chunks=2,
    schedule=NullTimetable(),
    params={"chunk_size": CHUNK_SIZE},
    tags=("sfox", "benchmark"),
)
