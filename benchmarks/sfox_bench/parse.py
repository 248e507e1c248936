"""
Measurement 4, DAG parse time: ``python -m sfox_bench.parse '<json>'`` loads one DAG file once.

Run in a fresh process per repetition: ``import airflow`` first (what every Airflow process
has loaded before it parses a file), then the timer runs around loading the file, its own
imports (``airflow.sdk``, ``pendulum``, the provider) included. Prints ``{"load_ms",
"airflow_import_ms", "tasks", "new_modules", "new_packages"}`` (``new_*``: what loading the
file imported); ``airflow_import_ms`` runs from the script's first line.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import importlib.util  # noqa: E402 - after the clock starts
import json  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    args = json.loads(sys.argv[1])
    import airflow  # noqa: F401

    t_airflow = time.perf_counter()
    spec = importlib.util.spec_from_file_location("bench_parse_target", args["file"])
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    started = time.perf_counter()
    spec.loader.exec_module(module)
    load = time.perf_counter() - started
    new = set(sys.modules) - before
    dags = [v for v in vars(module).values() if hasattr(v, "dag_id") and hasattr(v, "tasks")]
    print(
        json.dumps(
            {
                "load_ms": load * 1000,
                "airflow_import_ms": (t_airflow - _T0) * 1000,
                "tasks": sum(len(d.tasks) for d in dags),
                "new_modules": len(new),
                "new_packages": sorted({m.split(".")[0] for m in new} - {"bench_parse_target"}),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
