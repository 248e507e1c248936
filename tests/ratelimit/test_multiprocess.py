"""
Several OS processes, each with its own hook and 8+ threads, share one budget against the
real sandbox enforcing sFOX's limit: 250 per 10 s, then a block. Once with the ``local``
backend (a SQLite file), once with a real Redis server. Assertions are on counts and
windows of the sandbox's journal, not on durations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import most_in_window, sfox_conn_json
from tests.workers import run_together

WORKER = Path(__file__).with_name("budget_worker.py")
PROCESSES = 4
THREADS = 8


def run_workers(url: str, workers: list[dict[str, Any]], timeout: float = 240) -> list[dict[str, Any]]:
    """Start one process per worker setting, wait until all are READY, release them together."""
    settings = [
        {"threads": THREADS, "requests": worker["requests"], "start_delay": worker.get("delay", 0)}
        for worker in workers
    ]
    envs = [{"AIRFLOW_CONN_SFOX_DEFAULT": sfox_conn_json(url, **worker["extra"])} for worker in workers]
    return run_together(WORKER, settings, envs, timeout=timeout)


def test_processes_share_exactly_250_per_10s_without_a_429(sandbox, backend_extras):
    sandbox.set_rate_limit(limit=250, window_seconds=10, block_seconds=60, time_scale=1)
    budget = {"rate_limit_requests": 250, "rate_limit_window_seconds": 10, "rate_limit_scope": "sandbox"}
    total = 3 * 250  # three windows' worth: the first 250 at once, then one window each
    workers = [
        {"extra": {**budget, **backend_extras}, "requests": total // PROCESSES} for _ in range(PROCESSES)
    ]
    workers[0]["requests"] += total - sum(w["requests"] for w in workers)

    results = run_workers(sandbox.url, workers)

    journal = sandbox.journal()
    arrivals = sorted(entry.time for entry in journal)
    statuses = [entry.status for entry in journal]
    outcomes = [r["outcome"] for result in results for r in result["requests"]]
    most = most_in_window(arrivals, 10.0)
    # The budget's rate: the first window's 250 go at once, the next 250 one span later, ... so
    # the 501st arrival is ~2 spans after the 1st; 500 / that is what the budget lets through.
    # (The overall rate also counts how long this 2-core machine takes to send the last burst.)
    rate = 500 / (arrivals[500] - arrivals[0])
    overall = (len(arrivals) - 250) / (arrivals[-1] - arrivals[0])
    closest = min(arrivals[i + 250] - arrivals[i] for i in range(len(arrivals) - 250))
    waited = sum(result["stats"]["budget_wait_seconds"] for result in results)
    print(
        f"\n[{backend_extras['rate_limit_backend']}] {len(arrivals)} requests, 429s: {statuses.count(429)}, "
        f"max in a 10-s window: {most}, rate {rate:.2f}/s = {rate / 25:.3f} of the budget "
        f"(overall {overall / 25:.3f}), "
        f"closest start k to k+250 at the server: {closest:.3f} s, budget waits {waited:.0f} s"
    )
    failures = [outcome for outcome in outcomes if outcome != "ok"]
    assert failures == []
    assert len(arrivals) == total
    assert statuses.count(429) == 0
    assert outcomes == ["ok"] * total
    assert sum(result["stats"]["rate_limited"] for result in results) == 0
    assert most <= 250
    assert rate >= 0.9 * 25
    assert all(result["stats"]["budget_wait_seconds"] > 0 for result in results)  # each was paced


def test_a_429_in_one_process_pauses_every_process(sandbox, backend_extras):
    """
    Process A sends with no client budget until the sandbox blocks the IP (limit 50 per 1 s,
    block 6 s, Retry-After); B, C, D pace themselves at 5 per 1 s. A's first 429 pauses them
    all: the journal shows no request from anyone during the block (after a 1-s grace for
    requests already in flight).
    """
    sandbox.set_rate_limit(limit=50, window_seconds=10, block_seconds=60, time_scale=0.1, retry_after=True)
    shared = {"rate_limit_scope": "pause-test", "max_retry_seconds": 120, **backend_extras}
    paced = {"extra": {**shared, "rate_limit_requests": 5, "rate_limit_window_seconds": 1}, "requests": 12}
    flood = {"extra": {**shared, "rate_limit_requests": 0}, "requests": 80, "delay": 1.0}
    results = run_workers(sandbox.url, [flood, paced, paced, paced])

    journal = sandbox.journal()
    blocked = [entry.time for entry in journal if entry.status == 429]
    assert blocked, "the flood did not meet the sandbox's limit"
    first = blocked[0]
    during = [e for e in journal if first + 1.0 < e.time < first + 5.9]
    after = [e for e in journal if e.time >= first + 6.0]
    print(
        f"\n[{backend_extras['rate_limit_backend']}] {len(journal)} requests, 429s: {len(blocked)} "
        f"(last {blocked[-1] - first:.2f} s after the first), during the block: {len(during)}, "
        f"after it: {len(after)}, pauses: {[r['stats']['pause_seconds'] for r in results]}"
    )
    assert during == []
    assert len(blocked) <= PROCESSES * THREADS  # only requests already in flight
    assert all(entry.status != 429 for entry in after)  # one block only
    assert {e.status for e in after} == {200}
    for result in results:
        assert {r["outcome"] for r in result["requests"]} == {"ok"}  # every call went through
    for result in results[1:]:  # the paced processes never saw a 429 of their own ...
        assert result["stats"]["pause_seconds"] > 0  # ... yet they waited for A's pause
    assert len(after) > 0
