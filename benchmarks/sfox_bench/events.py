"""
Measurement 7 (issue #16): seconds from a user's email confirmation to their sms request, on a
live Airflow, through the email-verified asset event.

The live test module ``tests/live/test_live_email_verified.py`` brings up the Airflow (api-server,
scheduler with LocalExecutor, dag-processor, triggerer on a private PostgreSQL), runs the
onboarding DAG once to send the email codes, and makes the sandbox post an asset event on each
email confirmation; its ``test_event_latency`` then confirms the benchmark's users one at a time
(one event, wait for its run to end, next) and writes the figures to ``SFOX_EVENTS_BENCH_OUT``.
Both ends of each interval are the sandbox's own journal times: the verify request and the
sms send-verification request.

Measurement 8 is the same interval through the email-verified watcher (in the triggerer) instead
of the sandbox's event, against the watcher's poll interval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from sfox_bench.common import REPO, log

if TYPE_CHECKING:
    from pathlib import Path

#: The hourly onboarding run's expected wait for a confirmation at a random moment: half an hour.
HOURLY_MEAN_WAIT_S = 1800.0
TEST = "tests/live/test_live_email_verified.py::test_event_latency"
WATCHER_TEST = "tests/triggers/test_live_watcher.py::test_watcher_latency"


def latency(work: Path, *, timeout_s: float = 1200) -> dict[str, Any]:
    """Run the live benchmark test; its figures, with the hourly schedule's expected wait beside them."""
    figures = _run_test(TEST, "SFOX_EVENTS_BENCH_OUT", work, "events", timeout_s)
    # What the hourly run would take instead: the wait for the next tick, then the same work.
    hourly = HOURLY_MEAN_WAIT_S + figures["mean_run_s"]
    figures["hourly_expected_s"] = hourly
    figures["ratio_p50"] = figures["p50_s"] / hourly
    figures["ratio_p95"] = figures["p95_s"] / hourly
    log(
        f"events: p50 {figures['p50_s']:.1f} s, p95 {figures['p95_s']:.1f} s over {figures['events']} "
        f"events; hourly {hourly:.0f} s"
    )
    return figures


def watcher_latency(work: Path, *, timeout_s: float = 1200) -> dict[str, Any]:
    """
    Measurement 8: the same interval through the email-verified watcher instead of the sandbox's
    event (``tests/triggers/test_live_watcher.py::test_watcher_latency``): its figures, with the
    poll interval and the expected wait (half the interval, then the run) beside them.
    """
    figures = _run_test(WATCHER_TEST, "SFOX_WATCHER_BENCH_OUT", work, "watcher", timeout_s)
    interval = figures["poll_interval_s"]
    expected = interval / 2 + figures["mean_run_s"]
    figures["expected_s"] = expected
    figures["ratio_p50_interval"] = figures["p50_s"] / interval
    figures["ratio_p95_interval"] = figures["p95_s"] / interval
    figures["ratio_p50_expected"] = figures["p50_s"] / expected
    figures["ratio_p95_expected"] = figures["p95_s"] / expected
    log(
        f"watcher: p50 {figures['p50_s']:.1f} s, p95 {figures['p95_s']:.1f} s over {figures['users']} "
        f"users; poll interval {interval:g} s, expected {expected:.1f} s"
    )
    return figures


def _run_test(test: str, out_var: str, work: Path, name: str, timeout_s: float) -> dict[str, Any]:
    """Run one opt-in live benchmark test with ``out_var`` naming its output file; the figures it wrote."""
    out = work / f"{name}-latency.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, out_var: str(out)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [
        sys.executable,
        "-m",
        "pytest",
        test,
        "-q",
        "-p",
        "no:cacheprovider",
        "--basetemp",
        str(work / name),
    ]
    with open(work / f"{name}.log", "wb") as logfile:
        proc = subprocess.run(
            argv, cwd=REPO, env=env, stdout=logfile, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
        )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{test} exited {proc.returncode}: see {work / f'{name}.log'}")
    return json.loads(out.read_text())
