"""Drivers of measurements 3, 4 and 5 (each measured in processes of its own)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from sfox_bench.common import (
    BENCH_DIR,
    ONBOARDING_DAG_FILE,
    Sandbox,
    airflow_env,
    log,
    run_measurement,
    seed_warehouse,
    sfox_conn,
    sqlite_conn,
)

if TYPE_CHECKING:
    from pathlib import Path

EMPTY_DAG_FILE = BENCH_DIR / "parse" / "empty_dag.py"


def overhead(work: Path, *, threads: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Measurement 3."""
    home = work / "home-overhead"
    home.mkdir(exist_ok=True)
    with Sandbox(work / "sandbox-overhead.log") as sandbox:
        sandbox.seed(
            [
                {"user_id": f"u{i}", "account_type": "corporation", "email": f"u{i}@example.com"}
                for i in range(100)
            ]
        )
        env = airflow_env(home, AIRFLOW_CONN_SFOX_DEFAULT=sfox_conn(sandbox.url, requests_per_second=0))
        args = {"url": sandbox.url, "threads": threads, "seconds": seconds, "rounds": rounds, "users": 100}
        result = run_measurement("overhead", args, env, work / "overhead.log", timeout=600)
    log(f"overhead: hook/bare = {result['ratio']:.2f}")
    return result


def parse(work: Path, *, reps: int) -> dict[str, Any]:
    """Measurement 4: files alternate within each repetition; medians are compared."""
    home = work / "home-parse"
    home.mkdir(exist_ok=True)
    env = airflow_env(home)
    files = {"empty": EMPTY_DAG_FILE, "onboarding": ONBOARDING_DAG_FILE}
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in files}
    for rep in range(reps):
        for key, path in files.items():
            samples[key].append(
                run_measurement(
                    "parse", {"file": str(path)}, env, work / f"parse-{key}-{rep}.log", timeout=300
                )
            )
    out: dict[str, Any] = {"reps": reps}
    for key, runs in samples.items():
        out[key] = {
            "load_ms": statistics.median(r["load_ms"] for r in runs),
            "total_ms": statistics.median(r["load_ms"] + r["airflow_import_ms"] for r in runs),
            "load_ms_all": [round(r["load_ms"], 1) for r in runs],
            "tasks": runs[0]["tasks"],
            "new_modules": runs[0]["new_modules"],
            "new_packages": runs[0]["new_packages"],
        }
    out["ratio"] = out["onboarding"]["load_ms"] / out["empty"]["load_ms"]
    out["total_ratio"] = out["onboarding"]["total_ms"] / out["empty"]["total_ms"]
    log(f"parse: {out['onboarding']['load_ms']:.0f} ms vs {out['empty']['load_ms']:.0f} ms")
    return out


def planning(work: Path, *, sizes: list[int]) -> dict[str, Any]:
    """Measurement 5: an empty table first (the RSS baseline), then each size."""
    home = work / "home-planning"
    home.mkdir(exist_ok=True)
    runs = []
    with Sandbox(work / "sandbox-planning.log") as sandbox:  # no users: nobody verified yet
        for rows in [0, *sizes]:
            warehouse = work / f"warehouse-plan-{rows}.db"
            seed_warehouse(warehouse, rows)
            sandbox.reset()
            env = airflow_env(
                home,
                AIRFLOW_CONN_SFOX_DEFAULT=sfox_conn(sandbox.url, requests_per_second=0),
                AIRFLOW_CONN_SFOX_WAREHOUSE=sqlite_conn(warehouse),
            )
            result = run_measurement("planning", {"rows": rows}, env, work / f"planning-{rows}.log", 3600)
            warehouse.unlink()
            for suffix in ("-wal", "-shm"):
                warehouse.with_name(warehouse.name + suffix).unlink(missing_ok=True)
            runs.append(result)
            log(
                f"planning {rows:,} rows: {result['wall_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                f"XCom {result['xcom_bytes']:,} B, {result['task_instances']} task instances"
            )
    baseline = runs[0]
    for run in runs:
        run["growth_vs_empty_mb"] = run["peak_rss_mb"] - baseline["peak_rss_mb"]
        run["us_per_row"] = run["wall_s"] / run["rows"] * 1e6 if run["rows"] else None
    return {"baseline": baseline, "sizes": runs[1:]}
