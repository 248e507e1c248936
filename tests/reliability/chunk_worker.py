"""
One OS process of the shared-outage test: a chunk task (``send_email``) tried a few times, as
Airflow's task retries would. Run as ``python tests/reliability/chunk_worker.py '<json>'``
with the connections in ``AIRFLOW_CONN_*``: prints ``READY``, waits for a line on stdin, runs
the tries (``tries``, ``pause`` seconds apart, until one succeeds), then prints one
``RESULT [...]`` line: per try, what stopped it (or ``None``) and the requests it spent.
"""

from __future__ import annotations

import json
import sys
import time


def main(settings: dict) -> None:
    from airflow_sfox.onboarding.sender import ChunkStopped
    from tests.reliability.support import FakeTI, chunk_task

    task = chunk_task(
        "sfox_reliability",
        task_id="send_email",
        chunk=settings["chunk"],
        verification_type="email",
        threads=8,
    )
    print("READY", flush=True)
    sys.stdin.readline()
    tries = []
    for _ in range(settings["tries"]):
        try:
            stats = task.execute({"run_id": settings["run_id"], "ti": FakeTI()})  # type: ignore[arg-type]
        except ChunkStopped as stopped:
            tries.append(
                {"stopped": stopped.down, "service": stopped.service, "requests": stopped.stats.requests}
            )
            time.sleep(settings["pause"])
            continue
        tries.append({"stopped": None, "service": None, "requests": stats["requests"]})
        break
    print("RESULT " + json.dumps(tries), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
