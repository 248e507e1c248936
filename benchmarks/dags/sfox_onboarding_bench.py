"""
The onboarding DAG as the budget benchmark runs it: the factory with ``parallel_chunks`` 1, 2
and 4 (one DAG each), ``chunk_size`` 480 and no schedule: runs are only triggered. (Under
the factory's hourly default, unpausing a DAG created a scheduled run at once in a trial,
and the triggered run waited behind it.)

``chunk_size`` 480 is two windows of the 240-per-10-s budget: about 20 s of sending per chunk
task, long enough that a task's start-up (seconds under a live scheduler) is hidden while
another chunk task sends, small enough that a run of 1,500 users still has 4 chunk tasks.
"""

from __future__ import annotations

from airflow.timetables.simple import NullTimetable

from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag

#: Users per chunk task (see the module docstring).
CHUNK_SIZE = 480

for _parallel in (1, 2, 4):
    globals()[f"dag_p{_parallel}"] = onboarding_dag(
        dag_id=f"sfox_onboarding_p{_parallel}",
        source=OnboardingSource(table="sfox_users"),
        sfox_conn_id="sfox_default",
        warehouse_conn_id="sfox_warehouse",
        parallel_chunks=_parallel,
        schedule=NullTimetable(),
        params={"chunk_size": CHUNK_SIZE},
        tags=("sfox", "benchmark"),
    )
