"""
Whole DAG runs against the sandbox at sFOX's real, unscaled limit shape (250 per 10 s, 60-s
block, 100 ms latency).

1. The budget (issue #12): the onboarding DAG at a budget of 240 per 10 s, from the factory
   with ``parallel_chunks=2`` (and 1 for comparison), under ``dag.test()`` and under a live
   scheduler, against a hand-written loop (one ``requests.Session``, 8 threads, 24/s); then
   4 parallel chunk tasks while a second DAG maps ``SendVerificationOperator`` over 200 users
   on the same connection. Rates, 429s, the most requests in a 10-s window at the server, and
   the seconds lost between chunks with their causes, all from the sandbox's journal.
2. The alternative: the same users through one mapped HttpOperator task per user, against
   the onboarding DAG for the same users, under ``dag.test()`` and under a live scheduler.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sfox_bench import journal
from sfox_bench.common import (
    BENCH_DAGS,
    HTTP_DAG_FILE,
    SOURCE_TABLE,
    TOKEN,
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

#: sFOX's limit shape, unscaled: 250 per 10 s, then a 60 s block; sFOX answers in ~100 ms.
LIMIT = 250
WINDOW_S = 10.0
BLOCK_S = 60.0
LATENCY_MS = 100.0
#: The connection's budget: 240 per 10 s; the physical limit is 25 requests/s.
BUDGET_REQUESTS = 240
BUDGET_WINDOW_S = 10.0
PHYSICAL_RPS = LIMIT / WINDOW_S
#: The hand-written loop's pace and threads.
LOOP_RPS = 24.0
LOOP_THREADS = 8
#: Users of the second DAG (SendVerificationOperator mapped) in the shared-budget run.
OPERATOR_USERS = 200
BUDGET_DAG_FILE = BENCH_DAGS / "sfox_onboarding_bench.py"
OPERATOR_DAG_FILE = BENCH_DAGS / "sfox_operator_users.py"
#: The onboarding DAG of the HttpOperator comparison: the factory with parallel_chunks=1, as
#: dags/sfox_batch_onboarding.py, but unscheduled (see benchmarks/dags/sfox_onboarding_bench.py).
ONBOARDING_DAG = "sfox_onboarding_p1"
OPERATOR_DAG = "sfox_operator_users"
HTTP_DAG = "sfox_http_onboarding"


def budget_dag(parallel: int) -> str:
    return f"sfox_onboarding_p{parallel}"


def budget_span() -> float:
    """Seconds a start counts in the budget's log (window + jitter margin)."""
    from airflow_sfox.ratelimit import Budget

    return Budget(BUDGET_REQUESTS, BUDGET_WINDOW_S).span


def chunk_size() -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sfox_onboarding_bench_dag", BUDGET_DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.CHUNK_SIZE)


def _sandbox(work: Path, name: str) -> Sandbox:
    return Sandbox(
        work / f"sandbox-{name}.log", rate_limit=LIMIT, window=WINDOW_S, block=BLOCK_S, latency_ms=LATENCY_MS
    )


def _conn(url: str, rate_dir: Path, **extra: Any) -> str:
    """The sFOX connection: the budget of 240 per 10 s, its SQLite log in the work folder."""
    return sfox_conn(
        url,
        rate_limit_requests=BUDGET_REQUESTS,
        rate_limit_window_seconds=BUDGET_WINDOW_S,
        rate_limit_backend="local",
        rate_limit_dir=str(rate_dir),
        **extra,
    )


def _figures(sandbox: Sandbox, run: dict[str, Any], *, loop: str | None) -> dict[str, Any]:
    """The journal against one run: rates (of the physical limit), 429s, windows, losses."""
    entries = sandbox.journal()
    sends = journal.send_times(entries)
    wall = run["wall_s"] or 0.0
    span = (sends[-1] - sends[0]) if len(sends) > 1 else 0.0
    out: dict[str, Any] = {
        "requests": len(entries),
        "send_requests": len(sends),
        "rate_limited": sum(1 for e in entries if str(e["status"]) == "429"),
        "max_per_10s": journal.max_per_window([e["time"] for e in entries], WINDOW_S),
        "requests_per_s": len(entries) / wall if wall else 0.0,
        "send_requests_per_s": len(sends) / span if span else 0.0,
        "send_span_s": span,
    }
    out["share"] = out["requests_per_s"] / PHYSICAL_RPS
    out["send_share"] = out["send_requests_per_s"] / PHYSICAL_RPS
    if loop is not None and sends:
        out["losses"] = journal.losses(
            [e["time"] for e in entries],
            sends,
            run.get("tis", []),
            requests=BUDGET_REQUESTS,
            span=budget_span(),
            run_start=run.get("started_at"),
            run_end=run.get("ended_at"),
            latency_s=LATENCY_MS / 1000,
            loop=loop,
        )
    return out


def _dag_test(
    work: Path,
    sandbox: Sandbox,
    name: str,
    *,
    users: int,
    dag_file: Path,
    dag_id: str,
    conf: dict[str, Any],
) -> dict[str, Any]:
    """One dag.test() run in a fresh home, warehouse and budget log, the sandbox reset before it."""
    sandbox.reset()
    home = new_home(work, f"home-{name}", [dag_file])
    warehouse = work / f"warehouse-{name}.db"
    seed_warehouse(warehouse, users)
    env = airflow_env(
        home,
        AIRFLOW_CONN_SFOX_DEFAULT=_conn(sandbox.url, work / f"ratelimit-{name}"),
        AIRFLOW_CONN_SFOX_WAREHOUSE=sqlite_conn(warehouse),
        AIRFLOW_CONN_SFOX_HTTP=http_conn(sandbox.url),
    )
    args = {"dag_file": str(dag_file), "dag_id": dag_id, "conf": conf}
    run = run_measurement("dagtest", args, env, work / f"{name}.log", timeout=3600)
    api = _dag_test_api_startup(work / f"{name}.log")
    if api:
        run["tis"] = [api, *run["tis"]]
    result = {
        **run,
        **_figures(sandbox, run, loop="dag.test() loop (between task instances)"),
        "users": users,
    }
    log(
        f"{name}: {run['state']} in {run['wall_s']:.1f} s, {result['requests']} requests "
        f"({result['share']:.3f} of {PHYSICAL_RPS:g}/s over the run, {result['send_share']:.3f} sending), "
        f"{result['rate_limited']} x 429, max {result['max_per_10s']} per 10 s"
    )
    return result


def _dag_test_api_startup(log_path: Path) -> dict[str, Any] | None:
    """
    dag.test() starts its in-process execution API when it runs the first task: from the first
    "[DAG TEST] running task" line to the first "Task started" of the log (seconds, each run).
    """
    from datetime import datetime

    begin = end = None
    for line in log_path.read_text(errors="replace").splitlines():
        stamp = line.split(" ", 1)[0]
        if not stamp.endswith("Z") or "T" not in stamp:
            continue
        if begin is None and "[DAG TEST] running task" in line:
            begin = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        elif begin is not None and "Task started" in line:
            end = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            break
    if begin is None or end is None:
        return None
    return {
        "task_id": "",
        "label": "dag.test(): in-process execution API start-up (first task only)",
        "start": begin,
        "end": end,
    }


def _hand_loop(work: Path, sandbox: Sandbox, users: int) -> dict[str, Any]:
    sandbox.reset()
    warehouse = work / "warehouse-loop.db"
    seed_warehouse(warehouse, users)
    args = {
        "url": sandbox.url,
        "token": TOKEN,
        "warehouse": str(warehouse),
        "table": SOURCE_TABLE,
        "threads": LOOP_THREADS,
        "rate": LOOP_RPS,
    }
    run = run_measurement("handloop", args, airflow_env(work), work / "handloop.log", timeout=3600)
    result = {**run, **_figures(sandbox, run, loop=None), "users": users, "state": "success"}
    log(
        f"hand-written loop: {run['wall_s']:.1f} s, {result['requests']} requests, "
        f"{result['rate_limited']} x 429, max {result['max_per_10s']} per 10 s"
    )
    return result


def _settings() -> dict[str, Any]:
    return {
        "limit": f"{LIMIT} per {WINDOW_S:g} s, {BLOCK_S:g} s block",
        "latency_ms": LATENCY_MS,
        "budget": f"{BUDGET_REQUESTS} per {BUDGET_WINDOW_S:g} s",
        "budget_span_s": budget_span(),
        "physical_rps": PHYSICAL_RPS,
        "chunk_size": chunk_size(),
        "loop_rps": LOOP_RPS,
        "loop_threads": LOOP_THREADS,
    }


def budget_dag_test(work: Path, users: int, compare_p1: bool) -> dict[str, Any]:
    """The budget under dag.test(): parallel_chunks=2 (and 1 for comparison)."""
    results: dict[str, Any] = {"users": users, **_settings()}
    with _sandbox(work, "budget-dagtest") as sandbox:
        sandbox.seed(sandbox_seed(users))
        for parallel in (2, 1) if compare_p1 else (2,):
            results[f"p{parallel}"] = _dag_test(
                work,
                sandbox,
                f"budget-dagtest-p{parallel}",
                users=users,
                dag_file=BUDGET_DAG_FILE,
                dag_id=budget_dag(parallel),
                conf={},
            )
    return results


def hand_loop(work: Path, users: int) -> dict[str, Any]:
    """The hand-written loop against its own sandbox with the same settings and users."""
    with _sandbox(work, "budget-loop") as sandbox:
        sandbox.seed(sandbox_seed(users))
        return _hand_loop(work, sandbox, users)


def budget_live(work: Path, users: int, timeout_s: float, compare_p1: bool) -> dict[str, Any]:
    """
    The budget under a live scheduler: parallel_chunks=2 (and 1), then parallel_chunks=4
    while the SendVerificationOperator DAG sends to 200 other users.
    """
    from sfox_bench.live import LiveAirflow

    results: dict[str, Any] = {"users": users, "operator_users": OPERATOR_USERS, **_settings()}
    loop_label = "scheduler loop (no task instance running)"
    with _sandbox(work, "budget-live") as sandbox:
        sandbox.seed(sandbox_seed(users + OPERATOR_USERS))  # the operator DAG's users come after
        warehouse = work / "warehouse-budget-live.db"
        home = new_home(work, "home-budget-live", [BUDGET_DAG_FILE, OPERATOR_DAG_FILE])
        conns = {
            "AIRFLOW_CONN_SFOX_DEFAULT": _conn(sandbox.url, work / "ratelimit-budget-live"),
            "AIRFLOW_CONN_SFOX_WAREHOUSE": sqlite_conn(warehouse),
        }
        with LiveAirflow(work, home, conns) as live:
            started = time.monotonic()
            live.wait_parsed([budget_dag(2), budget_dag(1), budget_dag(4), OPERATOR_DAG], timeout_s=180)
            results["startup_s"] = time.monotonic() - started
            results["executor"], results["parallelism"] = live.executor, live.parallelism
            for parallel in (2, 1) if compare_p1 else (2,):
                _fresh(sandbox, warehouse, users)
                run = live.run_dag(budget_dag(parallel), {}, timeout_s=timeout_s)
                results[f"p{parallel}"] = {**run, **_figures(sandbox, run, loop=loop_label)}
                _log_live(f"live p{parallel}", results[f"p{parallel}"])
            # 4 chunk tasks and, at the same time, 200 SendVerificationOperator tasks: one scope.
            _fresh(sandbox, warehouse, users)
            onboarding_id = live.start_run(budget_dag(4), {})
            operator_id = live.start_run(OPERATOR_DAG, {"first": users, "count": OPERATOR_USERS})
            p4 = live.wait_run(budget_dag(4), onboarding_id, timeout_s)
            operator = live.wait_run(OPERATOR_DAG, operator_id, timeout_s)
            both = {
                "started_at": min(filter(None, (p4["started_at"], operator["started_at"])), default=None),
                "ended_at": max(filter(None, (p4["ended_at"], operator["ended_at"])), default=None),
            }
            both["wall_s"] = (
                both["ended_at"] - both["started_at"] if both["started_at"] and both["ended_at"] else None
            )
            results["shared"] = {
                **both,
                **_figures(sandbox, both, loop=None),
                "onboarding": p4,
                "operator": operator,
            }
            _log_live("live p4 + operator DAG", results["shared"])
    return results


def _fresh(sandbox: Sandbox, warehouse: Path, users: int) -> None:
    """A new warehouse, a fresh sFOX, and a budget log whose starts have all expired."""
    seed_warehouse(warehouse, users)
    sandbox.reset()
    time.sleep(budget_span() + 0.5)


def _log_live(name: str, x: dict[str, Any]) -> None:
    log(
        f"{name}: {x.get('state', '')} in {x['wall_s'] or 0:.1f} s, {x['requests']} requests "
        f"({x['share']:.3f} of {PHYSICAL_RPS:g}/s), {x['rate_limited']} x 429, "
        f"max {x['max_per_10s']} per 10 s"
    )


def alternative_dag_test(work: Path, users: int) -> dict[str, Any]:
    """Measurement 2 under dag.test(): the same users through both DAGs."""
    with _sandbox(work, "alt-dagtest") as sandbox:
        sandbox.seed(sandbox_seed(users))
        ours = _dag_test(
            work,
            sandbox,
            "alt-dagtest-onboarding",
            users=users,
            dag_file=BUDGET_DAG_FILE,
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
        home = new_home(work, "home-live", [BUDGET_DAG_FILE, HTTP_DAG_FILE])
        conns = {
            "AIRFLOW_CONN_SFOX_DEFAULT": _conn(sandbox.url, work / "ratelimit-alt-live"),
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
                figures = _figures(sandbox, run, loop=None)
                results[key] = {**run, **figures}
                log(
                    f"live {dag_id}: {run['state']} in {run['wall_s'] or 0:.1f} s "
                    f"({run['task_instances']} task instances), {figures['rate_limited']} x 429"
                )
            results["executor"] = live.executor
            results["parallelism"] = live.parallelism
    if results["onboarding"]["wall_s"] and results["http"]["wall_s"]:
        results["ratio"] = results["http"]["wall_s"] / results["onboarding"]["wall_s"]
    return results
