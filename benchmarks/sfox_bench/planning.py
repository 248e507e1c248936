"""
Measurement 5, planning at scale: ``python -m sfox_bench.planning '<json>'``.

Plans one first run (nobody onboarded yet: every valid user is due an email) over a SQLite
source table that the caller seeded, with :class:`~airflow_sfox.onboarding.planner.Planner`
driven directly: ``Warehouse`` on ``sfox_warehouse`` and an ``SfoxConnectHook`` on
``sfox_default`` (a sandbox without users, pacing off). One process per table size, so peak
RSS (``getrusage`` ``ru_maxrss``) is this plan's alone. Prints wall time, RSS before and the
peak, XCom bytes and the task instances the DAG would map.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from sfox_bench.common import emit


def _rss_mb() -> float:
    """Current RSS (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as statm:
            import os

            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return float(psutil.Process().memory_info().rss) / 2**20


def main() -> None:
    args = json.loads(sys.argv[1])
    from airflow_sfox.hooks.sfox import SfoxConnectHook
    from airflow_sfox.onboarding.planner import OnboardingConfig, Planner
    from airflow_sfox.onboarding.warehouse import Warehouse

    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    config = OnboardingConfig()  # the DAG's defaults: chunk_size 500, max_chunks 256
    with SfoxConnectHook(sfox_conn_id="sfox_default") as sfox:
        sfox.list_users()  # connection read and session opened before the clock starts
        rss_before = _rss_mb()
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        plan = Planner(warehouse, sfox, config, run_id=f"bench_{args['rows']}").plan()
        wall = time.perf_counter() - started
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    xcom = plan.as_xcom()
    emit(
        {
            "rows": args["rows"],
            "wall_s": wall,
            "rss_before_mb": rss_before,
            "peak_before_mb": peak_before,
            "peak_rss_mb": peak_after,
            "growth_mb": peak_after - max(rss_before, 0.0),
            "chunks": len(plan.chunks),
            "xcom_chunks_bytes": len(json.dumps(plan.chunks)),
            "xcom_counts_bytes": len(json.dumps(plan.counts)),
            "xcom_bytes": len(json.dumps(xcom["chunks"])) + len(json.dumps(xcom["counts"])),
            "task_instances": len(plan.chunks) * 2 + 2,
            "planned_users": plan.counts["planned_users"],
        }
    )


if __name__ == "__main__":
    main()
