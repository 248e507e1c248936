"""
One ``dag.test()`` run of a DAG file, in its own process: ``python -m sfox_bench.dagtest '<json>'``.

Arguments: ``dag_file``, ``dag_id``, ``conf`` (the run conf), ``threads`` (optional: a what-if
value for the onboarding DAG's send tasks instead of the operator's default). The environment
holds the Airflow home and the connections. Prints ``{"wall_s", "state", "task_instances",
"ti_states", "tis"}`` (``tis``: each task instance's start and end,
epoch seconds): ``wall_s`` is the whole ``dag.test()`` call (plan, every chunk task, summary).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from sfox_bench.common import emit, log
from tests.helpers import load_dag_file  # the repository root is on PYTHONPATH (common.airflow_env)


def main() -> None:
    args = json.loads(sys.argv[1])
    dag = load_dag_file(args["dag_file"], args["dag_id"])
    if args.get("threads"):
        # What-if only: the shipped DAG leaves the operator's default (sized to the budget).
        for task in dag.tasks:
            if hasattr(task, "threads"):
                task.threads = int(args["threads"])
    log(f"dag.test {args['dag_id']} conf={args.get('conf')} threads={args.get('threads') or 'default'}")
    started_at = time.time()
    started = time.perf_counter()
    dag_run = dag.test(run_conf=args.get("conf") or None)
    wall = time.perf_counter() - started
    ended_at = time.time()

    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        states = Counter(str(ti.state) for ti in tis)
        timeline = [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "state": str(ti.state),
                "start": ti.start_date.timestamp() if ti.start_date else None,
                "end": ti.end_date.timestamp() if ti.end_date else None,
            }
            for ti in tis
        ]
    emit(
        {
            "wall_s": wall,
            "started_at": started_at,
            "ended_at": ended_at,
            "state": str(dag_run.state),
            "task_instances": sum(states.values()),
            "ti_states": dict(states),
            "tis": timeline,
        }
    )


if __name__ == "__main__":
    main()
