"""Drivers of measurements 3, 4, 5 and 6 (each measured in processes of its own)."""

from __future__ import annotations

import statistics
import sys
from typing import TYPE_CHECKING, Any

from sfox_bench.common import (
    BENCH_DIR,
    ONBOARDING_DAG_FILE,
    Sandbox,
    airflow_env,
    log,
    run_measurement,
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
        env = airflow_env(home, AIRFLOW_CONN_SFOX_DEFAULT=sfox_conn(sandbox.url, rate_limit_requests=0))
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


def planning(
    work: Path, *, sizes: list[int], databases: tuple[str, ...] = ("sqlite", "postgres")
) -> dict[str, Any]:
    """
    Measurement 5, per database: an empty table first (the RSS baseline), then each size,
    with as many users registered at the sandbox as the source has rows (the same users).
    """
    import json
    import time
    from urllib.parse import urlsplit

    import requests

    from sfox_bench.planning import generate_spec, seed_postgres, seed_sqlite

    home = work / "home-planning"
    home.mkdir(exist_ok=True)
    out: dict[str, Any] = {"databases": {}, "errors": {}}
    with Sandbox(work / "sandbox-planning.log") as sandbox:
        for database in databases:
            pg_uri = None
            if database == "postgres":
                try:
                    pg_uri = _postgres_uri()
                except Exception as err:  # no server here: say so, keep SQLite's figures
                    out["errors"][database] = f"{type(err).__name__}: {err}"
                    log(f"planning on postgres not run: {out['errors'][database]}")
                    continue
            runs = []
            for rows in [0, *sizes]:
                seed_started = time.monotonic()
                warehouse = work / f"warehouse-plan-{rows}.db"
                if pg_uri is None:
                    seed_sqlite(warehouse, rows)
                    conn = sqlite_conn(warehouse)
                else:
                    seed_postgres(pg_uri, rows)
                    url = urlsplit(pg_uri)
                    conn = json.dumps(
                        {
                            "conn_type": "postgres",
                            "host": url.hostname,
                            "port": url.port,
                            "login": url.username,
                            "password": url.password,
                            "schema": url.path.lstrip("/"),
                        }
                    )
                sandbox.reset()
                if rows:  # every user of the source registered at sFOX
                    requests.post(
                        f"{sandbox.url}/_sandbox/users/generate", json=generate_spec(rows), timeout=60
                    ).raise_for_status()
                seed_s = time.monotonic() - seed_started
                env = airflow_env(
                    home,
                    AIRFLOW_CONN_SFOX_DEFAULT=sfox_conn(sandbox.url, rate_limit_requests=0),
                    AIRFLOW_CONN_SFOX_WAREHOUSE=conn,
                )
                args = {"rows": rows, "database": database}
                log_path = work / f"planning-{database}-{rows}.log"
                server = _postmaster_pid() if pg_uri is not None else None
                cpu_before = {
                    "sandbox": _cpu_s(sandbox.proc.pid if sandbox.proc else None),
                    "db": _cpu_s(server),
                }
                result = run_measurement("planning", args, env, log_path, 3600)
                result["seed_s"] = seed_s
                # CPU beside the plan process: the sandbox serving its list, the PostgreSQL server
                # (its backends, counted once they exit: one per connection, no pool).
                result["sandbox_cpu_s"] = (
                    _cpu_s(sandbox.proc.pid if sandbox.proc else None) - cpu_before["sandbox"]
                )
                result["db_server_cpu_s"] = _cpu_s(server) - cpu_before["db"] if server else None
                if pg_uri is None:
                    warehouse.unlink()
                    for suffix in ("-wal", "-shm"):
                        warehouse.with_name(warehouse.name + suffix).unlink(missing_ok=True)
                runs.append(result)
                log(
                    f"planning {database} {rows:,} rows: {result['wall_s']:.1f} s, peak RSS "
                    f"{result['peak_rss_mb']:.0f} MB, XCom {result['xcom_bytes']:,} B, "
                    f"{result['task_instances']} task instances (seeded in {seed_s:.0f} s)"
                )
            baseline, smallest = runs[0], runs[min(1, len(runs) - 1)]
            for run in runs:
                run["growth_vs_empty_mb"] = run["peak_rss_mb"] - baseline["peak_rss_mb"]
                run["growth_vs_smallest_mb"] = run["peak_rss_mb"] - smallest["peak_rss_mb"]
                run["us_per_row"] = run["wall_s"] / run["rows"] * 1e6 if run["rows"] else None
            out["databases"][database] = {"baseline": baseline, "sizes": runs[1:]}
            if pg_uri is not None:
                _stop_postgres()
    if not out["databases"]:
        raise RuntimeError(f"planning measured on no database: {out['errors']}")
    # The chart's panel and older readers: the first database's figures.
    first = next(iter(out["databases"].values()))
    out.update(baseline=first["baseline"], sizes=first["sizes"])
    return out


def lookup(work: Path, *, sizes: list[int], samples: int) -> dict[str, Any]:
    """
    Measurement 6: the user lookup and the run view, one process and one new SQLite warehouse
    per attempts-table size; the smallest size is the baseline of the ratios.
    """
    home = work / "home-lookup"
    home.mkdir(exist_ok=True)
    runs = []
    for rows in sorted(sizes):
        path = work / f"warehouse-lookup-{rows}.db"
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        env = airflow_env(home, AIRFLOW_CONN_SFOX_WAREHOUSE=sqlite_conn(path))
        args = {"path": str(path), "attempts": rows, "samples": samples}
        result = run_measurement("lookup", args, env, work / f"lookup-{rows}.log", timeout=3600)
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        user, run = result["query"]["user"], result["query"]["run"]
        log(
            f"lookup {result['attempts']:,} attempts ({result['users']:,} users, seeded in "
            f"{result['seed_s']:.0f} s): user p50/p95 {user['p50_ms']:.1f}/{user['p95_ms']:.1f} ms, "
            f"run {run['p50_ms']:.1f}/{run['p95_ms']:.1f} ms"
        )
        runs.append(result)
    baseline, largest = runs[0], runs[-1]
    ratios = {
        f"{how}.{what}": largest[how][what]["p50_ms"] / baseline[how][what]["p50_ms"]
        for how in ("query", "api")
        for what in largest[how]
    }
    return {"samples": samples, "baseline": baseline, "sizes": runs[1:], "ratios_p50": ratios}


def _cpu_s(pid: int | None) -> float:
    """CPU seconds of a process and its reaped children (``/proc/<pid>/stat``); 0 without one."""
    import os

    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _postmaster_pid() -> int | None:
    try:
        data_dir = _pg_module().current_server().data_dir
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError, RuntimeError):
        return None


def _pg_module() -> Any:
    """``tests/pg.py`` (a private PostgreSQL server; run as root), imported by path."""
    import importlib.util

    path = BENCH_DIR.parent / "tests" / "pg.py"
    spec = importlib.util.spec_from_file_location("sfox_bench_pg", path)
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def _postgres_uri() -> str:
    return str(_pg_module().ensure_postgres_server())


def _stop_postgres() -> None:
    _pg_module().stop_postgres_server()
