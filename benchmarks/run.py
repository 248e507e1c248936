"""
Benchmarks of the sFOX provider: ``make bench`` (quick, a few minutes) or ``make bench-full``.

Measures, side by side in one run, against the local sFOX sandbox (a process of its own):

1. the onboarding DAG at a budget of 240 per 10 s against sFOX's real limit shape (250 per
   10 s, 60-s block, 100 ms latency), under ``dag.test()`` and a live scheduler, against a
   hand-written loop; with a second DAG sharing the budget; the seconds lost between chunks;
2. the alternative: one mapped HttpOperator task per user, under ``dag.test()`` and under a
   live scheduler (api-server + scheduler with LocalExecutor + dag-processor);
3. client overhead: ``SfoxConnectHook`` against a bare ``requests.Session`` loop;
4. DAG parse time against an empty DAG file with the same Airflow imports;
5. planning at 10k / 100k (/ 1M) source rows: wall time, peak RSS, XCom bytes, task instances;
6. the UI page's user lookup and run view on a 1M-row attempts table against a 10k-row one;
7. seconds from an email confirmation's asset event to the user's sms request, live (p50, p95);
8. the same through the email-verified watcher, against its poll interval;
9. a one-hour sFOX outage (compressed) in the middle of a run: requests spent, recovery, users charged.

Writes ``benchmarks/REPORT.md``, ``benchmarks/report.png`` and ``benchmarks/results.json``.
Every figure is measured in processes of its own; logs of every process stay in the work
folder (``--work``, default a temporary folder, named in the report). No timing is asserted:
goals are compared and reported, met or missed.

    python benchmarks/run.py --mode quick
    python benchmarks/run.py --mode full
    python benchmarks/run.py --mode quick --only overhead,parse
    python benchmarks/run.py --mode quick --only lookup --merge  # one step into the committed report
    python benchmarks/run.py --mode quick --only events --merge
    python benchmarks/run.py --mode quick --only watcher --merge
    python benchmarks/run.py --mode full --only outage --merge --out benchmarks/full
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sfox_bench import e2e, events, micro, outage, registration
from sfox_bench.common import BENCH_DIR, log, machine
from sfox_bench.report import write_report

MODES = {
    "quick": {
        "budget_users": 1500,
        "compare_p1": False,
        "alt_users": 100,
        "live_timeout_s": 240,
        "overhead": {"threads": 8, "seconds": 3.0, "rounds": 2},
        "parse_reps": 5,
        "planning_sizes": [10_000, 100_000],
        "planning_databases": ["sqlite", "postgres"],
        "lookup_sizes": [10_000, 1_000_000],
        "lookup_samples": 50,
        "events_timeout_s": 1200,
        "watcher_timeout_s": 1500,
        "registration_users": 600,
    },
    "full": {
        "budget_users": 5000,
        "compare_p1": True,
        "alt_users": 1000,
        "live_timeout_s": 1800,
        "overhead": {"threads": 8, "seconds": 10.0, "rounds": 5},
        "parse_reps": 9,
        "planning_sizes": [10_000, 100_000, 1_000_000],
        "planning_databases": ["sqlite", "postgres"],
        "lookup_sizes": [10_000, 1_000_000],
        "lookup_samples": 200,
        "events_timeout_s": 1200,
        "watcher_timeout_s": 1500,
        "registration_users": 5000,
    },
}
STEPS = (
    "budget",
    "loop",
    "budget_live",
    "alternative",
    "live",
    "overhead",
    "parse",
    "planning",
    "lookup",
    "events",
    "watcher",
    "outage",
    "registration",
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument(
        "--only", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}"
    )
    parser.add_argument("--work", type=Path, help="folder for Airflow homes, warehouses and logs (kept)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where REPORT.md and report.png go")
    parser.add_argument(
        "--budget-users", type=int, help="users of the budget runs (a trial; not for the report)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other steps' figures of OUT/results.json (same mode): the report names each "
        "run and the steps it measured",
    )
    args = parser.parse_args()
    steps = [s for s in args.only.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps: {sorted(unknown)}")
    settings = dict(MODES[args.mode])
    if args.budget_users:
        settings["budget_users"] = args.budget_users
    work = args.work or Path(tempfile.mkdtemp(prefix="sfox-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"mode {args.mode}, work folder {work}")

    results: dict = {"mode": args.mode, "settings": settings, "machine": machine(), "work": str(work)}
    errors: dict[str, str] = {}
    started = time.monotonic()
    for step in steps:
        step_started = time.monotonic()
        log(f"--- {step}")
        try:
            if step == "budget":
                results[step] = e2e.budget_dag_test(work, settings["budget_users"], settings["compare_p1"])
            elif step == "loop":
                results[step] = e2e.hand_loop(work, settings["budget_users"])
            elif step == "budget_live":
                results[step] = e2e.budget_live(
                    work, settings["budget_users"], settings["live_timeout_s"], settings["compare_p1"]
                )
            elif step == "alternative":
                results[step] = e2e.alternative_dag_test(work, settings["alt_users"])
            elif step == "live":
                results[step] = e2e.alternative_live(work, settings["alt_users"], settings["live_timeout_s"])
            elif step == "overhead":
                results[step] = micro.overhead(work, **settings["overhead"])
            elif step == "parse":
                results[step] = micro.parse(work, reps=settings["parse_reps"])
            elif step == "planning":
                results[step] = micro.planning(
                    work, sizes=settings["planning_sizes"], databases=tuple(settings["planning_databases"])
                )
            elif step == "lookup":
                results[step] = micro.lookup(
                    work, sizes=settings["lookup_sizes"], samples=settings["lookup_samples"]
                )
            elif step == "events":
                results[step] = events.latency(work, timeout_s=settings["events_timeout_s"])
            elif step == "watcher":
                results[step] = events.watcher_latency(work, timeout_s=settings["watcher_timeout_s"])
            elif step == "outage":
                results[step] = outage.outage(work, settings["budget_users"])
            elif step == "registration":
                results[step] = registration.registration(
                    work, settings["registration_users"], settings["live_timeout_s"]
                )
        except Exception as err:  # one failed measurement must not lose the others
            errors[step] = f"{type(err).__name__}: {err}"
            log(f"{step} FAILED: {errors[step]}")
        results.setdefault("step_seconds", {})[step] = time.monotonic() - step_started
    results["errors"] = errors
    results["total_seconds"] = time.monotonic() - started
    results["machine"]["load_average_end"] = machine()["load_average"]
    results["runs"] = [_this_run(results, steps)]
    if args.merge:
        results = _merged(args.out / "results.json", results, steps)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_report(results, args.out / "REPORT.md", args.out / "report.png")
    log(f"done in {time.monotonic() - started:.0f} s: {args.out / 'REPORT.md'}")
    if not args.work and not errors:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if errors else 0


def _this_run(results: dict, steps: list[str]) -> dict:
    """What one invocation measured, when, with which command, and the machine's load."""
    return {
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "steps": steps,
        "seconds": results["total_seconds"],
        "load_average": [results["machine"]["load_average"], results["machine"]["load_average_end"]],
    }


def _merged(path: Path, results: dict, steps: list[str]) -> dict:
    """
    The earlier results of the same mode with this run's steps replaced: one report of
    figures measured in several runs, each named (an earlier run's figures are not re-measured).
    """
    if not path.exists():
        return results
    earlier = json.loads(path.read_text())
    if earlier.get("mode") != results["mode"]:
        raise SystemExit(f"--merge: {path} holds {earlier.get('mode')} mode, not {results['mode']}")
    runs = earlier.get("runs") or [_earlier_run(earlier, path.with_name("REPORT.md"))]
    merged = {**earlier, **{k: v for k, v in results.items() if k in steps}}
    # A step's settings are named after it (lookup_sizes): the others stay as measured.
    ours = {k: v for k, v in results["settings"].items() if k.split("_")[0] in steps}
    merged["settings"] = {**earlier["settings"], **ours}
    merged["step_seconds"] = {**earlier.get("step_seconds", {}), **results["step_seconds"]}
    merged["errors"] = {
        **{k: v for k, v in earlier.get("errors", {}).items() if k not in steps},
        **results["errors"],
    }
    merged["total_seconds"] = sum(merged["step_seconds"].values())
    merged["runs"] = [*runs, *results["runs"]]
    return merged


def _earlier_run(earlier: dict, report: Path) -> dict:
    """A run of before ``--merge`` existed, described from its results and its report's first lines."""
    import re

    header = report.read_text()[:1000] if report.exists() else ""
    at = re.search(r"run (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", header)
    return {
        "at": at.group(1) if at else None,
        "command": f"python benchmarks/run.py --mode {earlier['mode']}",
        "steps": list(earlier.get("step_seconds", {})),
        "seconds": earlier.get("total_seconds"),
        "load_average": [earlier["machine"]["load_average"], earlier["machine"].get("load_average_end")],
    }


if __name__ == "__main__":
    sys.exit(main())
