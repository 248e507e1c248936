"""
Issue 20: an outage is never a user's failure.

sFOX answering 503 for a whole run, or the rate budget's backend (a local SQLite folder, a real
Redis server) lost in the middle of a chunk: the chunk stops within a few requests, the users
not answered stay ``queued`` with their ``failures`` unchanged, the task fails naming what is
down, the run row says ``interrupted``, and the next run sends everyone, once.
"""

from __future__ import annotations

import glob
import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from airflow_sfox.onboarding.sender import ENGINE_MAX_RETRY_SECONDS, OUTAGE_STREAK, ChunkStopped
from tests.helpers import TOKEN, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users
from tests.reliability.support import audit, run_onboarding, sends, wait_for
from tests.workers import run_together

USERS = 300
#: Chunks of the outage run: each chunk task meets the outage on its own.
CHUNK_SIZE = 150
#: The most requests one chunk task may spend on a dead sFOX: one call at a time until one
#: is answered, so OUTAGE_STREAK calls of at most ~2 requests a second of retries each.
MOST_PER_CHUNK = OUTAGE_STREAK * (2 * int(ENGINE_MAX_RETRY_SECONDS) + 2)


def _failures(warehouse_db) -> Counter:
    return Counter(row[0] for row in warehouse_db.query("SELECT failures FROM sfox_onboarding_ledger"))


def _run_row(warehouse_db, run_id: str) -> tuple[str, str | None]:
    rows = warehouse_db.query("SELECT status, reason FROM sfox_onboarding_runs WHERE run_id = ?", (run_id,))
    return rows[0]


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_a_503_outage_fails_nobody_and_the_next_run_sends_everyone(warehouse_db, sfox_sandbox, monkeypatch):
    users = make_users(USERS, seed=201, corporation_share=1.0)
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    # The connection allows 300 s of per-call retries: the engine's own budget is seconds. Its
    # outage probes come within the engine's wait for a due probe (ENGINE_MAX_RETRY_SECONDS).
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT",
        sfox_conn_json(
            sfox_sandbox.url, rate_limit_requests=0, max_retry_seconds=300, outage_probe_seconds=1
        ),
    )
    # The plan reads sFOX's users while sFOX is up; then sFOX goes into maintenance.
    from airflow_sfox.onboarding.runs import plan_run

    original = plan_run

    def plan_then_outage(**kwargs):
        planned = original(**kwargs)
        sfox_sandbox.set_faults(error_503_rate=1.0)
        return planned

    monkeypatch.setattr("airflow_sfox.onboarding.runs.plan_run", plan_then_outage)
    params = {"chunk_size": CHUNK_SIZE}
    out = run_onboarding("outage-1", params=params)

    chunks = USERS // CHUNK_SIZE
    assert len(out["task_errors"]) == chunks  # each chunk task failed: Airflow retries it
    for error in out["task_errors"]:
        assert isinstance(error, ChunkStopped), repr(error)
        assert "sFOX unavailable (HTTP 503)" in str(error)
        assert TOKEN not in str(error)
    spent = len(sends(sfox_sandbox))
    assert 0 < spent <= MOST_PER_CHUNK + 1, spent
    # The first chunk task saw the outage; the second knew it from the budget scope: one probe.
    assert [error.stats.requests for error in out["task_errors"][1:]] == [1] * (chunks - 1)
    print("requests spent on the outage:", spent)
    # Nobody failed: every user is still queued, no failure counted.
    ledger = warehouse_db.ledger()
    assert Counter(row["state"] for row in ledger.values()) == {"queued": USERS}
    assert _failures(warehouse_db) == {0: USERS}
    assert warehouse_db.claimed() == set()
    # The run says what happened, and what happens next.
    assert "sFOX unavailable (HTTP 503)" in out["error"]
    status, reason = _run_row(warehouse_db, "outage-1")
    assert status == "interrupted"
    assert reason == f"sFOX unavailable (HTTP 503) — {USERS} users left queued; they are sent by the next run"

    # sFOX is back: the next run sends everyone, at once, once.
    sfox_sandbox.set_faults(error_503_rate=0.0)
    monkeypatch.setattr("airflow_sfox.onboarding.runs.plan_run", original)
    rerun = run_onboarding("outage-2", params=params)
    assert rerun["error"] is None, rerun["error"]
    assert rerun["summary"]["status"] == "success"
    report = audit(sfox_sandbox.journal(), warehouse_db.ledger(), [u[0] for u in users])
    assert report.missed == [], report.summary()
    assert report.duplicates == {}, report.summary()
    assert _failures(warehouse_db) == {0: USERS}


WORKER = Path(__file__).with_name("chunk_worker.py")
#: Tries of each chunk task during the outage (Airflow's task retries), and the pause between
#: them (a retry delay, compressed).
OUTAGE_TRIES = 5
RETRY_PAUSE = 1.0


def _run_chunk_tasks(run_id: str, chunks: list[dict], *, tries: int) -> list[list[dict]]:
    """Each chunk's task in a process of its own, started together: each one's tries."""
    settings = [{"run_id": run_id, "chunk": chunk, "tries": tries, "pause": RETRY_PAUSE} for chunk in chunks]
    return run_together(WORKER, settings, [{} for _ in chunks], timeout=300)


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_chunk_tasks_in_two_processes_share_what_they_know_of_an_outage(
    warehouse_db, sfox_sandbox, monkeypatch, tmp_path
):
    """
    Two chunk tasks, each in its own process, each tried OUTAGE_TRIES times during an sFOX
    outage (the sandbox's outage window: every request 503): the first detection costs at most
    one chunk's streak per process; every later try spends at most one request (the scope's
    probe, no per-call retries) or none. Nobody fails, and once sFOX is back the tries resume.

    On the default ``local`` backend only (35 s a run): every backend's shared outage state is
    tested across instances in ``tests/ratelimit/test_outage_circuit.py``.
    """
    users = make_users(120, seed=203, corporation_share=1.0)
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    extra = {"rate_limit_requests": 0, "outage_probe_seconds": 1, "rate_limit_backend": "local"}
    extra["rate_limit_dir"] = str(tmp_path / "budget")
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, **extra))
    from airflow_sfox.onboarding.runs import plan_run

    params = {"channels": ["email"], "chunk_size": 60, "failure_threshold": 0.2}
    planned = plan_run(
        params=params,
        run_id="shared-1",
        dag_id="sfox_reliability",
        warehouse_conn_id="sfox_warehouse",
        sfox_conn_id="sfox_default",
    )
    chunks = planned["chunks"]
    assert len(chunks) == 2
    before = len(sends(sfox_sandbox))
    sfox_sandbox.set_outage(3600)

    results = _run_chunk_tasks("shared-1", chunks, tries=OUTAGE_TRIES)

    spent = len(sends(sfox_sandbox)) - before
    per_try = [[t["requests"] for t in tries] for tries in results]
    print(f"\nrequests during the outage: {spent}; per try of each process: {per_try}")
    for tries in results:
        assert len(tries) == OUTAGE_TRIES
        assert {(t["service"], t["stopped"]) for t in tries} == {("sfox", "sFOX unavailable (HTTP 503)")}
        assert tries[0]["requests"] <= MOST_PER_CHUNK  # the streak of the first detection
        assert all(t["requests"] <= 1 for t in tries[1:])  # the scope knows: a probe at most
    assert spent == sum(map(sum, per_try))
    assert spent <= 2 * MOST_PER_CHUNK + 2 * (OUTAGE_TRIES - 1)
    ledger = warehouse_db.ledger()
    assert {row["state"] for row in ledger.values()} == {"queued"}
    assert _failures(warehouse_db) == {0: len(users)}

    # sFOX is back: the tasks' next tries probe, and send everyone, once.
    sfox_sandbox.clear_outage()
    results = _run_chunk_tasks("shared-1", chunks, tries=30)
    for tries in results:
        assert tries[-1]["stopped"] is None, tries
    report = audit(sfox_sandbox.journal(), warehouse_db.ledger(), [u[0] for u in users])
    assert report.missed == [], report.summary()
    assert report.duplicates == {}, report.summary()
    assert _failures(warehouse_db) == {0: len(users)}


def _kill_local(folder: str) -> None:
    """
    The local backend's files are destroyed under it (a disk failure), and this process's
    handles on them are lost with them: an open SQLite connection may otherwise go on serving
    its cache and write-ahead log, and the budget would keep working (nothing to stop for).
    """
    from airflow_sfox.ratelimit import local_backend

    for path in glob.glob(os.path.join(folder, "*")):
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            handle.write(b"\xff" * max(size, 4096))
    local_backend(folder).close()


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("backend", ["local", "redis"])
def test_the_budget_backend_lost_mid_chunk_stops_it_and_fails_nobody(
    warehouse_db, sfox_sandbox, monkeypatch, tmp_path, request, backend
):
    users = make_users(120, seed=202, corporation_share=1.0)
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    extra = {"rate_limit_requests": 1000, "rate_limit_window_seconds": 1, "rate_limit_backend": backend}
    redis = None
    if backend == "local":
        extra["rate_limit_dir"] = str(tmp_path / "budget")
        kill = lambda: _kill_local(str(tmp_path / "budget"))  # noqa: E731
        where = str(tmp_path / "budget")
    else:
        from tests.redis_server import RedisServer

        binary = request.getfixturevalue("redis_server").binary  # skips when Redis is not there
        redis = RedisServer(binary)
        redis.start()
        monkeypatch.setenv("AIRFLOW_CONN_BUDGET_REDIS", redis.url)
        extra["rate_limit_redis_conn_id"] = "budget_redis"
        kill = redis.stop
        where = f"Airflow connection 'budget_redis', 127.0.0.1:{redis.port}"
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, **extra))
    sfox_sandbox.set_faults(latency_ms=50)  # the chunk takes seconds: the kill lands in it
    killed = threading.Event()

    def kill_mid_chunk() -> None:
        if wait_for(lambda: len(sends(sfox_sandbox)) >= 20, timeout=120):
            kill()
            killed.set()

    killer = threading.Thread(target=kill_mid_chunk, daemon=True)
    killer.start()
    try:
        out = run_onboarding(f"budget-{backend}-1", params={"chunk_size": 200})
    finally:
        killer.join(60)
        if redis is not None:
            redis.stop()
    assert killed.is_set()

    (error,) = out["task_errors"]
    assert isinstance(error, ChunkStopped), repr(error)
    assert f"the {backend!r} rate-limit backend ({where}" in str(error)
    sent = {e.user_id for e in sfox_sandbox.journal() if e.code_sent}
    ledger = warehouse_db.ledger()
    assert 20 <= len(sent) < len(users)
    assert {uid for (uid, _), row in ledger.items() if row["state"] == "sent"} == sent
    assert {row["state"] for (uid, _), row in ledger.items() if uid not in sent} == {"queued"}
    assert _failures(warehouse_db) == {0: len(users)}
    status, reason = _run_row(warehouse_db, f"budget-{backend}-1")
    assert status == "interrupted"
    assert reason.startswith("the rate budget's backend is unavailable"), reason

    # The backend is back (a fresh folder, a new server): the next run sends the others, once.
    if backend == "local":
        extra["rate_limit_dir"] = str(tmp_path / "budget-back")
    else:
        redis = RedisServer(binary)
        redis.start()
        monkeypatch.setenv("AIRFLOW_CONN_BUDGET_REDIS", redis.url)
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, **extra))
    sfox_sandbox.set_faults(latency_ms=0)
    try:
        rerun = run_onboarding(f"budget-{backend}-2", params={"chunk_size": 200})
    finally:
        if redis is not None:
            redis.stop()
    assert rerun["error"] is None, rerun["error"]
    report = audit(sfox_sandbox.journal(), warehouse_db.ledger(), [u[0] for u in users])
    assert report.missed == [], report.summary()
    assert report.duplicates == {}, report.summary()
