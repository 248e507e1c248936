"""
Measurements 1 and 2: whole DAG runs against the sandbox at sFOX's limit shape, scaled up.

1. Throughput: the onboarding DAG under ``dag.test()`` for N users, shipped as is, and a
   what-if run with the send tasks' ``threads`` raised to cover budget x latency.
2. The alternative: the same users through one mapped HttpOperator task per user, against
   the onboarding DAG for the same users, under ``dag.test()`` and under a live scheduler.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sfox_bench.common import (
    HTTP_DAG_FILE,
    ONBOARDING_DAG_FILE,
    Sandbox,
    airflow_env,
    http_conn,
    log,
    new_home,
    run_measurement,
    sandbox_seed,
    seed_warehouse,
    sfox_conn,
    sqlite_conn,
)

if TYPE_CHECKING:
    from pathlib import Path

#: sFOX's limit shape (250 per 10 s, then a 60 s block) with the count scaled up 10x so runs
#: finish: 2,500 per 10 s is a 250 req/s ceiling; the client's budget stays under it.
LIMIT = 2500
WINDOW_S = 10.0
BLOCK_S = 60.0
LATENCY_MS = 100.0
BUDGET = 240.0
ONBOARDING_DAG = "sfox_batch_onboarding"
HTTP_DAG = "sfox_http_onboarding"


def shipped_threads(budget: float = BUDGET) -> int:
    """The send threads the shipped operator picks for this budget."""
    from airflow_sfox.onboarding.sender import threads_for

    return threads_for(budget)


def whatif_threads(budget: float = BUDGET) -> int:
    """The what-if: twice the shipped threads, to show whether threads still limit the rate."""
    return 2 * shipped_threads(budget)


def _sandbox(work: Path, name: str) -> Sandbox:
    return Sandbox(
        work / f"sandbox-{name}.log", rate_limit=LIMIT, window=WINDOW_S, block=BLOCK_S, latency_ms=LATENCY_MS
    )


def _dag_test(
    work: Path,
    sandbox: Sandbox,
    name: str,
    *,
    users: int,
    dag_file: Path,
    dag_id: str,
    conf: dict[str, Any],
    threads: int | None = None,
) -> dict[str, Any]:
    """One dag.test() run in a fresh home and warehouse, with the sandbox reset before it."""
    sandbox.reset()
    home = new_home(work, f"home-{name}", [dag_file])
    warehouse = work / f"warehouse-{name}.db"
    seed_warehouse(warehouse, users)
    env = airflow_env(
        home,
        AIRFLOW_CONN_SFOX_DEFAULT=sfox_conn(sandbox.url, requests_per_second=BUDGET),
        AIRFLOW_CONN_SFOX_WAREHOUSE=sqlite_conn(warehouse),
        AIRFLOW_CONN_SFOX_HTTP=http_conn(sandbox.url),
    )
    args = {"dag_file": str(dag_file), "dag_id": dag_id, "conf": conf, "threads": threads}
    run = run_measurement("dagtest", args, env, work / f"{name}.log", timeout=3600)
    figures = sandbox.figures()
    result = {**run, **figures, "users": users}
    result["requests_per_s"] = figures["requests"] / run["wall_s"] if run["wall_s"] else 0.0
    if figures["first"] is not None:
        result["before_first_request_s"] = figures["first"] - run["started_at"]
        result["after_last_request_s"] = run["ended_at"] - figures["last"]
    result["send_requests_per_s"] = (
        figures["requests"] / figures["send_span_s"] if figures["send_span_s"] else 0.0
    )
    log(
        f"{name}: {run['state']} in {run['wall_s']:.1f} s, {figures['requests']} requests "
        f"({result['requests_per_s']:.1f}/s over the run), {figures['rate_limited']} x 429"
    )
    return result


def throughput(work: Path, users: int) -> dict[str, Any]:
    """Measurement 1."""
    with _sandbox(work, "throughput") as sandbox:
        sandbox.seed(sandbox_seed(users))
        common = {"users": users, "dag_file": ONBOARDING_DAG_FILE, "dag_id": ONBOARDING_DAG, "conf": {}}
        shipped = _dag_test(work, sandbox, "e2e-shipped", **common)
        threads = whatif_threads()
        whatif = _dag_test(work, sandbox, "e2e-whatif", threads=threads, **common)
    for run in (shipped, whatif):
        run["ideal_s"] = run["requests"] / BUDGET
        run["budget_share"] = run["requests_per_s"] / BUDGET
        run["send_budget_share"] = run["send_requests_per_s"] / BUDGET
    return {
        "budget": BUDGET,
        "limit": f"{LIMIT} per {WINDOW_S:g} s, {BLOCK_S:g} s block",
        "latency_ms": LATENCY_MS,
        "default_threads": shipped_threads(),
        "whatif_threads": threads,
        "shipped": shipped,
        "whatif": whatif,
    }


def alternative_dag_test(work: Path, users: int) -> dict[str, Any]:
    """Measurement 2 under dag.test(): the same users through both DAGs."""
    with _sandbox(work, "alt-dagtest") as sandbox:
        sandbox.seed(sandbox_seed(users))
        ours = _dag_test(
            work,
            sandbox,
            "alt-dagtest-onboarding",
            users=users,
            dag_file=ONBOARDING_DAG_FILE,
            dag_id=ONBOARDING_DAG,
            conf={},
        )
        http = _dag_test(
            work,
            sandbox,
            "alt-dagtest-http",
            users=users,
            dag_file=HTTP_DAG_FILE,
            dag_id=HTTP_DAG,
            conf={"limit": users},
        )
    return {"users": users, "onboarding": ours, "http": http, "ratio": http["wall_s"] / ours["wall_s"]}


def alternative_live(work: Path, users: int, timeout_s: float) -> dict[str, Any]:
    """Measurement 2 under a live scheduler (see :mod:`sfox_bench.live`)."""
    from sfox_bench.live import LiveAirflow

    with _sandbox(work, "alt-live") as sandbox:
        sandbox.seed(sandbox_seed(users))
        warehouse = work / "warehouse-live.db"
        seed_warehouse(warehouse, users)
        home = new_home(work, "home-live", [ONBOARDING_DAG_FILE, HTTP_DAG_FILE])
        conns = {
            "AIRFLOW_CONN_SFOX_DEFAULT": sfox_conn(sandbox.url, requests_per_second=BUDGET),
            "AIRFLOW_CONN_SFOX_WAREHOUSE": sqlite_conn(warehouse),
            "AIRFLOW_CONN_SFOX_HTTP": http_conn(sandbox.url),
        }
        with LiveAirflow(work, home, conns) as live:
            started = time.monotonic()
            live.wait_parsed([ONBOARDING_DAG, HTTP_DAG], timeout_s=180)
            startup = time.monotonic() - started
            results: dict[str, Any] = {"users": users, "startup_s": startup}
            for key, dag_id, conf in (
                ("onboarding", ONBOARDING_DAG, {}),
                ("http", HTTP_DAG, {"limit": users}),
            ):
                sandbox.reset()
                run = live.run_dag(dag_id, conf, timeout_s=timeout_s)
                figures = sandbox.figures()
                results[key] = {**run, **figures}
                log(
                    f"live {dag_id}: {run['state']} in {run['wall_s']:.1f} s "
                    f"({run['task_instances']} task instances), {figures['rate_limited']} x 429"
                )
            results["executor"] = live.executor
            results["parallelism"] = live.parallelism
    if results["onboarding"]["wall_s"] and results["http"]["wall_s"]:
        results["ratio"] = results["http"]["wall_s"] / results["onboarding"]["wall_s"]
    return results
