"""
Measurement 5, planning at scale: ``python -m sfox_bench.planning '<json>'``.

Plans one first run (nobody onboarded yet) the way the DAG's ``plan`` task does, through
:func:`~airflow_sfox.onboarding.runs.plan_run` with the DAG's default params, over a source
table the caller seeded (SQLite or PostgreSQL, connection ``sfox_warehouse``) and a sandbox
that knows every user of the source (``sfox_default``, pacing off): the users of
:func:`source_rows` and the sandbox's generated range are the same users, ids, types, emails
and phones. So planning streams as many users from sFOX into the snapshot as the source has
rows, and each individual whose email sFOX reports verified is due an sms.

One process per (database, size), so peak RSS (``getrusage`` ``ru_maxrss``) is this plan's
alone. Prints wall time, RSS before and the peak, the XCom bytes the plan task pushes (its
counts plus one chunk list per account type) and the task instances the DAG built by
:func:`~airflow_sfox.onboarding.dag.onboarding_dag` would run for this plan.

The helpers above :func:`main` (the users and the seeding of the source) are used by the
driver, ``micro.planning``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

from sfox_bench.common import SOURCE_TABLE, emit, seed_warehouse

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: The sandbox's generated users (``POST /_sandbox/users/generate``), mirrored by the source.
USER_PREFIX = "user-"
INDIVIDUAL_SHARE = 0.7
#: A third of the users have their email verified at sFOX: their sms is due (individuals).
EMAIL_VERIFIED_SHARE = 1 / 3
SOURCE_COLUMNS = ("user_id", "account_type", "email", "phone_number")


def generate_spec(rows: int) -> dict[str, Any]:
    """The body of ``POST /_sandbox/users/generate`` registering the users of the source."""
    return {
        "count": rows,
        "prefix": USER_PREFIX,
        "start": 0,
        "individual_share": INDIVIDUAL_SHARE,
        "email_verified_share": EMAIL_VERIFIED_SHARE,
    }


def source_rows(rows: int) -> Iterator[tuple[str, str, str, str | None]]:
    """The source rows of the sandbox's generated users ``user-0`` .. (built lazily)."""
    from sfox_sandbox.state import GeneratedUsers

    block = GeneratedUsers(USER_PREFIX, 0, rows, INDIVIDUAL_SHARE, EMAIL_VERIFIED_SHARE)
    for offset in range(rows):
        user = block.build(offset)
        yield (user.user_id, user.account_type, user.email or "", user.phone_number)


def seed_sqlite(path: Path, rows: int) -> None:
    """A new SQLite warehouse whose source table holds the ``rows`` users (one executemany)."""
    seed_warehouse(path, rows, source_rows(rows))


class _CopyStream:
    """A file-like object over the rows as COPY text lines, for ``cursor.copy_expert``."""

    def __init__(self, rows: Iterator[tuple[str, str, str, str | None]]) -> None:
        self.rows = rows
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            lines = []
            for row in self.rows:
                lines.append("\t".join(r"\N" if v is None else v for v in row) + "\n")
                if len(lines) >= 1000:
                    break
            if not lines:
                break
            self.buffer += "".join(lines).encode()
        if size < 0:
            size = len(self.buffer)
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


def seed_postgres(uri: str, rows: int) -> None:
    """
    An empty ``public`` schema (no ledger, snapshot or run table of an earlier size), then the
    source table with the ``rows`` users (one COPY), analysed as a warehouse's would be.
    """
    import psycopg2

    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS public CASCADE")
            cur.execute("CREATE SCHEMA public")
            cur.execute(
                f"CREATE TABLE {SOURCE_TABLE} "
                "(user_id TEXT, account_type TEXT, email TEXT, phone_number TEXT, extra TEXT)"
            )
            cur.copy_expert(
                f"COPY {SOURCE_TABLE} ({', '.join(SOURCE_COLUMNS)}) FROM STDIN",
                _CopyStream(source_rows(rows)),
            )
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"ANALYZE {SOURCE_TABLE}")
    finally:
        conn.close()


def _rss_mb() -> float:
    """Current RSS (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return float(psutil.Process().memory_info().rss) / 2**20


def _dag_task_instances(chunks_per_type: dict[str, int]) -> dict[str, Any]:
    """The task instances of one run of the factory's DAG: its unmapped tasks, plus each
    mapped group's steps once per chunk descriptor of its account type."""
    from airflow_sfox.onboarding.config import OnboardingSource
    from airflow_sfox.onboarding.dag import onboarding_dag

    dag = onboarding_dag(source=OnboardingSource(), dag_id="sfox_bench_planning")
    steps: dict[str, int] = {kind: 0 for kind in chunks_per_type}
    unmapped = 0
    for task in dag.tasks:
        group = task.task_group.group_id if task.task_group is not None else None
        if group in steps:
            steps[group] += 1
        else:
            unmapped += 1
    mapped = {kind: chunks_per_type[kind] * steps[kind] for kind in steps}
    return {"unmapped": unmapped, "steps": steps, "mapped": mapped, "total": unmapped + sum(mapped.values())}


def _time_snapshot(warehouse_class: Any) -> list[float]:
    """Time ``Warehouse.write_snapshot`` (streaming sFOX's list into the snapshot) from now on."""
    spent: list[float] = []
    write = warehouse_class.write_snapshot

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return write(self, *args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    warehouse_class.write_snapshot = timed
    return spent


def main() -> None:
    args = json.loads(sys.argv[1])
    from airflow_sfox.hooks.sfox import SfoxConnectHook  # noqa: F401 - imported before the clock
    from airflow_sfox.onboarding.config import OnboardingSource
    from airflow_sfox.onboarding.model import ACCOUNT_TYPES
    from airflow_sfox.onboarding.params import onboarding_params
    from airflow_sfox.onboarding.runs import plan_run
    from airflow_sfox.onboarding.warehouse import Warehouse

    Warehouse.from_conn_id("sfox_warehouse").engine.dispose()  # driver imported before the clock
    snapshot_s = _time_snapshot(Warehouse)
    params = {name: param.value for name, param in onboarding_params().items()}  # the DAG's defaults
    rss_before = _rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = plan_run(
        params=params,
        run_id=f"bench_{args['database']}_{args['rows']}",
        dag_id="sfox_batch_onboarding",
        warehouse_conn_id="sfox_warehouse",
        sfox_conn_id="sfox_default",
        source=OnboardingSource(),
    )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    phases = {
        "snapshot (sFOX list streamed + written)": sum(snapshot_s),
        "join + decide + ledger writes": wall - sum(snapshot_s),
    }
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # What the plan task pushes: its return value (the counts) and one chunk list per type.
    pushed = {"return_value": result["counts"], **{str(k): result[str(k)] for k in ACCOUNT_TYPES}}
    xcom = {key: len(json.dumps(value)) for key, value in pushed.items()}
    chunks = {str(k): len(result[str(k)]) for k in ACCOUNT_TYPES}
    tis = _dag_task_instances(chunks)
    counts = result["counts"]
    emit(
        {
            "database": args["database"],
            "rows": args["rows"],
            "wall_s": wall,
            "phases_s": phases,
            # CPU of the plan process itself (the sandbox and the database server run beside it)
            # and the machine's 1-minute load: a shared machine stretches wall time.
            "cpu_s": cpu,
            "load_1min": [load_before, os.getloadavg()[0]],
            "rss_before_mb": rss_before,
            "peak_before_mb": peak_before,
            "peak_rss_mb": peak_after,
            "growth_mb": peak_after - max(rss_before, 0.0),
            "chunks": sum(chunks.values()),
            "chunks_per_type": chunks,
            "xcom_per_key_bytes": xcom,
            "xcom_bytes": sum(xcom.values()),
            "task_instances": tis["total"],
            "task_instances_detail": tis,
            "planned_users": counts["planned_users"],
            "source_rows": counts["source_rows"],
            "rejected": counts["rejected"],
            "counts": {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)},
        }
    )


if __name__ == "__main__":
    main()
