"""
Measurement 10 (issue #23): registering the users sFOX does not know yet, at sFOX's real limit.

One sandbox at sFOX's limit shape, unscaled (250 per 10 s, 60-s block, 100 ms latency), the
connection's budget 240 per 10 s. The users are rows of ``sfox_new_users`` carrying valid
register-account fields of both account types (:mod:`sfox_bench.new_users`, deterministic); sFOX
(the sandbox) starts empty of them. Three parts, all counted from the sandbox's journal and its
register-account counts per ``user_id`` (``GET /_sandbox/register-requests``):

1. Requests per new user up to its email step (goal: 1.0, the registration whose first email
   code sFOX sends itself, plus the plan's one read of the user list), against a hand-written
   register-then-request loop over :data:`LOOP_USERS` users (one ``requests.Session``, 8
   threads, 24 request starts per second: 2.0 per user).
2. Whole-run throughput as a share of sFOX's 25 requests/s under a live scheduler (api-server,
   scheduler with LocalExecutor, dag-processor): the registration DAG
   (``benchmarks/dags/sfox_onboarding_registration.py``) against the verification-only DAG of
   the budget benchmark (``sfox_onboarding_p2``: the same ``parallel_chunks`` and
   ``chunk_size``) over as many users sFOX already knows (goal: the same share, within
   :data:`SHARE_TOLERANCE`).
3. Duplicates after a mid-run kill (goal: 0): the registration DAG under ``dag.test()`` is
   killed with SIGKILL (its process group) once :data:`KILL_SHARE` of the users are registered,
   the killed Airflow run is marked failed (as an operator does; nothing else watches a
   ``dag.test()`` run) and the DAG runs again. Every user must end with exactly one register
   request that reached sFOX, its account, its one email code (sFOX's) and no send-verification.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import requests

from sfox_bench.common import (
    BENCH_DAGS,
    BENCH_DIR,
    REPO,
    TOKEN,
    Sandbox,
    airflow_env,
    log,
    new_home,
    run_measurement,
    sandbox_seed,
    seed_warehouse,
    sqlite_conn,
)
from sfox_bench.new_users import iter_new_users, register_body, seed_new_users, user_ids

if TYPE_CHECKING:
    from pathlib import Path

DAG_FILE = BENCH_DAGS / "sfox_onboarding_registration.py"
DAG_ID = "sfox_onboarding_registration"
LEDGER = "sfox_onboarding_ledger"
#: The key of the registration fields' keyed hash (an Airflow Variable, from the environment).
SECRET_ENV = {"AIRFLOW_VAR_SFOX_REGISTRATION_SECRET": "sfox-bench-registration-key-0123456789"}
#: Users of the hand-written register-then-request loop.
LOOP_USERS = 200
#: The kill lands once this share of the users is registered (0.45: in the middle of a budget
#: window of 240 at 600 and 5,000 users, so that requests are in flight).
KILL_SHARE = 0.45
#: The registration run's share of 25 requests/s may be this much below the verification-only
#: run's and still count as "the same" (runs of minutes on a shared 2-core machine).
SHARE_TOLERANCE = 0.05
#: Goals of issue #23.
REQUESTS_PER_USER_GOAL = 1.0
REGISTER_PATH = "/v1/enterprise/register-account"
SEND_PATH = "/v1/enterprise/users/send-verification/"
USERS_PATH = "/v1/enterprise/users"

# --- the sandbox -------------------------------------------------------------------------------


def _empty(sandbox: Sandbox, known: list[dict[str, Any]] | None = None) -> None:
    """sFOX back to its start, knowing only ``known`` (default nobody); the budget's log expired."""
    from sfox_bench.e2e import budget_span

    sandbox.seed([])
    sandbox.reset()
    if known:
        sandbox.seed(known)
    time.sleep(budget_span() + 0.5)


def register_counts(sandbox: Sandbox, entries: list[dict[str, Any]]) -> dict[str, int]:
    """
    Register-account requests per ``user_id`` that reached sFOX (``GET /_sandbox/register-requests``);
    from the journal (answered other than 429) on a sandbox without that route.
    """
    answer = requests.get(f"{sandbox.url}/_sandbox/register-requests", timeout=60)
    if answer.status_code == 200:
        return {str(k): int(v) for k, v in answer.json()["data"].items()}
    return dict(
        Counter(
            str(e["user_id"])
            for e in entries
            if e["path"] == REGISTER_PATH and str(e["status"]) not in ("429", "reset")
        )
    )


def census(entries: list[dict[str, Any]], counts: dict[str, int], ids: list[str]) -> dict[str, Any]:
    """What sFOX saw of the users ``ids``: requests by kind, per user, duplicates, misses, codes."""
    ours = set(ids)
    kinds: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    sends: Counter[str] = Counter()
    for e in entries:
        kind = _kind(e)
        kinds[kind] += 1
        if str(e["status"]) == "429":
            kinds["rate_limited"] += 1
        if e["code_sent"] and e["user_id"] in ours:
            codes[str(e["user_id"])] += 1
        if kind.startswith("send_") and e["user_id"] in ours:
            sends[str(e["user_id"])] += 1
    users = len(ids)
    per_user = kinds["register"] + kinds["user_read"] + kinds["send_email"]
    return {
        "users": users,
        "requests": len(entries),
        "by_kind": dict(kinds),
        "rate_limited": kinds["rate_limited"],
        "list_reads": kinds["list_read"],
        "requests_per_user": per_user / users if users else None,
        "register_reached": sum(counts.get(u, 0) for u in ids),
        "duplicates": sum(1 for u in ids if counts.get(u, 0) > 1),
        "not_registered": sum(1 for u in ids if counts.get(u, 0) == 0),
        "users_sent_verification": len(sends),
        "codes": sum(codes.values()),
        "users_not_one_code": sum(1 for u in ids if codes.get(u, 0) != 1),
    }


def _kind(entry: dict[str, Any]) -> str:
    path, method = entry["path"], entry["method"]
    if path == REGISTER_PATH:
        return "register"
    if path.startswith(SEND_PATH):
        return f"send_{entry.get('type') or 'unknown'}"
    if method == "GET" and path.rstrip("/") == USERS_PATH:
        return "list_read"
    if method == "GET" and path.startswith(USERS_PATH + "/"):
        return "user_read"
    return f"other {method} {path.split('/')[3] if path.count('/') >= 3 else path}"


# --- 1. the hand-written register-then-request loop ------------------------------------------------


def register_then_request(
    sandbox: Sandbox, count: int, *, rate: float = 24.0, threads: int = 8
) -> dict[str, Any]:
    """
    What a data engineer writes without the factory: register each user, then request its email
    code; ``rate`` request starts per second on ``threads`` threads (never over 240 per 10 s).
    """
    rows = list(iter_new_users(count))
    _empty(sandbox)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=threads))
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    t0 = time.monotonic()

    def post(index: int, url: str, body: dict[str, Any]) -> None:
        delay = t0 + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            status = str(session.post(url, json=body, timeout=30).status_code)
        except requests.RequestException as err:
            status = type(err).__name__
        with lock:
            statuses[status] += 1

    def one_user(index: int, row: dict[str, Any]) -> None:
        post(2 * index, f"{sandbox.url}{REGISTER_PATH}", register_body(row))
        post(2 * index + 1, f"{sandbox.url}{SEND_PATH}{row['user_id']}", {"type": "email"})

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for index, row in enumerate(rows):
            pool.submit(one_user, index, row)
    wall = time.monotonic() - started
    entries = sandbox.journal()
    figures = census(entries, register_counts(sandbox, entries), [r["user_id"] for r in rows])
    log(
        f"register-then-request loop: {count} users, {figures['requests']} requests "
        f"({figures['requests_per_user']:.2f} per user) in {wall:.1f} s, statuses {dict(statuses)}"
    )
    return {
        **figures,
        "state": "done",
        "wall_s": wall,
        "statuses": dict(statuses),
        "rate": rate,
        "threads": threads,
    }


# --- 2. throughput under a live scheduler ----------------------------------------------------------


def live_runs(work: Path, sandbox: Sandbox, users: int, timeout_s: float) -> dict[str, Any]:
    """
    The registration DAG over ``users`` users sFOX does not know, then the verification-only
    DAG over as many it knows, in one live Airflow.
    """
    from sfox_bench.e2e import BUDGET_DAG_FILE, _conn, budget_dag
    from sfox_bench.live import LiveAirflow

    verified_wh, new_wh = work / "warehouse-registration-baseline.db", work / "warehouse-registration-live.db"
    home = new_home(work, "home-registration-live", [BUDGET_DAG_FILE, DAG_FILE])
    conns = {
        "AIRFLOW_CONN_SFOX_DEFAULT": _conn(sandbox.url, work / "ratelimit-registration-live"),
        "AIRFLOW_CONN_SFOX_WAREHOUSE": sqlite_conn(verified_wh),
        "AIRFLOW_CONN_SFOX_REGISTRATION_WAREHOUSE": sqlite_conn(new_wh),
        **SECRET_ENV,
    }
    results: dict[str, Any] = {}
    with LiveAirflow(work, home, conns) as live:
        started = time.monotonic()
        live.wait_parsed([budget_dag(2), DAG_ID], timeout_s=180)
        results["startup_s"] = time.monotonic() - started
        results["executor"], results["parallelism"] = live.executor, live.parallelism
        # Registration first: a first run's extra costs (imports, caches) count against it.
        seed_new_users(new_wh, users)
        _empty(sandbox)
        run = live.run_dag(DAG_ID, {}, timeout_s=timeout_s)
        results["registration"] = _live_figures(sandbox, run, user_ids(users))
        results["registration"]["ledger"] = ledger_states(new_wh)
        _log_run("live registration", results["registration"])
        seed_warehouse(verified_wh, users)
        _empty(sandbox, sandbox_seed(users))
        run = live.run_dag(budget_dag(2), {}, timeout_s=timeout_s)
        results["verification_only"] = _live_figures(sandbox, run, user_ids(users))
        _log_run("live verification-only", results["verification_only"])
    return results


def _live_figures(sandbox: Sandbox, run: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """A live run against the journal: the census, and requests and users per second of 25."""
    from sfox_bench.e2e import PHYSICAL_RPS

    entries = sandbox.journal()
    figures = census(entries, register_counts(sandbox, entries), ids)
    wall = run.get("wall_s") or 0.0
    reached = len({e["user_id"] for e in entries if e["code_sent"] and e["user_id"] in set(ids)})
    run = {k: v for k, v in run.items() if k != "tis"}
    times = sorted(e["time"] for e in entries)
    return {
        **run,
        **figures,
        # Where the run's wall time went: before sFOX's first request, between, after its last.
        "before_first_request_s": times[0] - run["started_at"] if times and run.get("started_at") else None,
        "request_span_s": times[-1] - times[0] if times else None,
        "after_last_request_s": run["ended_at"] - times[-1] if times and run.get("ended_at") else None,
        "users_with_code": reached,
        "requests_per_s": figures["requests"] / wall if wall else 0.0,
        "share": figures["requests"] / wall / PHYSICAL_RPS if wall else 0.0,
        "user_share": reached / wall / PHYSICAL_RPS if wall else 0.0,
    }


def _log_run(name: str, x: dict[str, Any]) -> None:
    log(
        f"{name}: {x.get('state')} in {x.get('wall_s') or 0:.1f} s, {x['requests']} requests "
        f"({x['share']:.3f} of 25/s; users with a code {x['users_with_code']}, {x['user_share']:.3f}), "
        f"{x['rate_limited']} x 429, by kind {x['by_kind']}"
    )


def ledger_states(warehouse: Path) -> dict[str, Any]:
    """Ledger rows by ``channel:state`` (no personal data: the ledger holds none)."""
    return _grouped(warehouse, LEDGER, "state")


def attempt_outcomes(warehouse: Path) -> dict[str, Any]:
    """The attempts table's rows by ``channel:outcome``."""
    return _grouped(warehouse, f"{LEDGER}_attempts", "outcome")


def _grouped(warehouse: Path, table: str, column: str) -> dict[str, Any]:
    try:
        with sqlite3.connect(warehouse) as db:
            rows = db.execute(
                f"SELECT channel, {column}, COUNT(*) FROM {table} GROUP BY channel, {column}"
            ).fetchall()
    except sqlite3.Error as err:
        return {"error": str(err)}
    return {f"{channel}:{value}": int(n) for channel, value, n in rows}


# --- 3. a kill -9 mid-registration, then a rerun ---------------------------------------------------


def kill_and_rerun(work: Path, sandbox: Sandbox, users: int) -> dict[str, Any]:
    """
    The registration DAG under dag.test(), killed once ``KILL_SHARE`` of the users are
    registered, then run again.
    """
    from sfox_bench.e2e import _conn

    ids = user_ids(users)
    home = new_home(work, "home-registration-kill", [DAG_FILE])
    warehouse = work / "warehouse-registration-kill.db"
    seed_new_users(warehouse, users)
    _empty(sandbox)
    env = airflow_env(
        home,
        None,
        AIRFLOW_CONN_SFOX_DEFAULT=_conn(sandbox.url, work / "ratelimit-registration-kill"),
        AIRFLOW_CONN_SFOX_REGISTRATION_WAREHOUSE=sqlite_conn(warehouse),
        AIRFLOW_VAR_SFOX_REGISTRATION_SECRET=SECRET_ENV["AIRFLOW_VAR_SFOX_REGISTRATION_SECRET"],
    )
    args = {"dag_file": str(DAG_FILE), "dag_id": DAG_ID, "conf": {}}
    killed = _killed_run(sandbox, env, args, work / "registration-killed.log", int(users * KILL_SHARE))
    entries = sandbox.journal()
    at_kill = {
        **census(entries, register_counts(sandbox, entries), ids),
        "state": "killed",
        "wall_s": killed["seconds_to_kill"],
    }
    killed["marked_failed"] = _mark_failed(home)
    killed["ledger"] = ledger_states(warehouse)
    # Registered by sFOX, not recorded in the ledger: the requests in flight at the kill.
    killed["in_flight"] = at_kill["register_reached"] - killed["ledger"].get("registration:registered", 0)
    rerun = run_measurement("dagtest", args, env, work / "registration-rerun.log", timeout=3600)
    rerun = {k: v for k, v in rerun.items() if k != "tis"}
    entries = sandbox.journal()
    after = {
        **census(entries, register_counts(sandbox, entries), ids),
        "state": f"rerun {rerun.get('state')}",
        "wall_s": rerun.get("wall_s"),
    }
    result = {
        "users": users,
        "killed": killed,
        "at_kill": at_kill,
        "rerun": rerun,
        "after": after,
        "ledger": ledger_states(warehouse),
        "attempts": attempt_outcomes(warehouse),
    }
    log(
        f"kill: killed after {at_kill['register_reached']} registrations, rerun {rerun.get('state')}; "
        f"{after['duplicates']} duplicates, {after['not_registered']} not registered, "
        f"{after['users_sent_verification']} users sent a verification, "
        f"{after['users_not_one_code']} users without exactly one code"
    )
    return result


def _killed_run(
    sandbox: Sandbox, env: dict[str, str], args: dict[str, Any], log_path: Path, threshold: int
) -> dict[str, Any]:
    """Start dag.test() in a process group of its own; SIGKILL it once ``threshold`` users are registered."""
    env = {**env, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), env.get("PYTHONPATH", "")])}
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sfox_bench.dagtest", json.dumps(args)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,  # the kill takes the task and every child with it
        )
    registered, since = 0, 0
    try:
        while proc.poll() is None and registered < threshold and time.monotonic() - started < 3600:
            answer = requests.get(f"{sandbox.url}/_sandbox/journal", params={"since": since}, timeout=60)
            entries = answer.json()["data"]
            if entries:
                since = int(entries[-1]["seq"])
                registered += sum(1 for e in entries if e["path"] == REGISTER_PATH and e["code_sent"])
            time.sleep(0.2)
    finally:
        alive = proc.poll() is None
        if alive:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    time.sleep(1.0)  # requests already on the wire still reach the sandbox (100 ms latency)
    return {
        "killed": alive,
        "exit": proc.returncode,
        "seconds_to_kill": time.monotonic() - started,
        "registered_seen": registered,
    }


def _mark_failed(home: Path) -> int:
    """The killed run as Airflow sees it: ``running`` for ever (no scheduler); marked failed, as in the UI."""
    with sqlite3.connect(home / "airflow.db") as db:
        cursor = db.execute(
            "UPDATE dag_run SET state = 'failed' WHERE dag_id = ? AND state = 'running'", (DAG_ID,)
        )
        return cursor.rowcount


# --- the step ---------------------------------------------------------------------------------


def registration(work: Path, users: int, timeout_s: float) -> dict[str, Any]:
    """Measurement 10: the loop, the two live runs, the kill; one sandbox at sFOX's real limit."""
    from sfox_bench.e2e import _sandbox, _settings

    results: dict[str, Any] = {"users": users, "loop_users": min(LOOP_USERS, users), **_settings()}
    with _sandbox(work, "registration") as sandbox:
        for part, measure in (
            ("loop", lambda: register_then_request(sandbox, min(LOOP_USERS, users))),
            ("live", lambda: live_runs(work, sandbox, users, timeout_s)),
            ("kill", lambda: kill_and_rerun(work, sandbox, users)),
        ):
            try:
                results[part] = measure()
            except Exception as err:  # one failed part must not lose the others
                results[part] = {"error": f"{type(err).__name__}: {err}"}
                log(f"registration {part} FAILED: {results[part]['error']}")
    return results


# --- the report --------------------------------------------------------------------------------


def _row(goal: str, figure: str, ok: bool | None, cause: str) -> dict[str, Any]:
    return {"goal": goal, "figure": figure, "ok": ok, "cause": "" if ok else cause}


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The three goal rows of measurement 10 (a part that failed is 'not run' with its error)."""
    loop, live, kill = r.get("loop", {}), r.get("live", {}), r.get("kill", {})
    reg, base = live.get("registration") or {}, live.get("verification_only") or {}
    rows = []
    if "requests_per_user" in reg and "requests_per_user" in loop:
        ok = reg["requests_per_user"] <= REQUESTS_PER_USER_GOAL and reg["list_reads"] <= 1
        rows.append(
            _row(
                f"10a. Requests per new user up to the email step: {REQUESTS_PER_USER_GOAL:g} plus the "
                "plan's one list read (register-then-request: 2.0)",
                f"{reg['requests_per_user']:.3f} per user + {reg['list_reads']} list read(s) "
                f"({_kinds(reg)}); register-then-request loop {loop['requests_per_user']:.2f}",
                ok,
                "See section 10: requests by kind.",
            )
        )
    else:
        rows.append(
            _row("10a. Requests per new user", f"not run: {reg.get('error') or loop.get('error')}", None, "")
        )
    if reg.get("share") and base.get("share"):
        ok = reg["share"] >= base["share"] * (1 - SHARE_TOLERANCE) and reg.get("state") == "success"
        rows.append(
            _row(
                "10b. Whole-run throughput of the registration run, as a share of 25 requests/s under "
                f"a live scheduler: the verification-only run's (within {SHARE_TOLERANCE:.0%})",
                f"{reg['share']:.3f} ({reg['state']} in {reg['wall_s']:.0f} s) against {base['share']:.3f} "
                f"({base['state']} in {base['wall_s']:.0f} s)",
                ok,
                "See section 10: the two runs' timelines.",
            )
        )
    else:
        rows.append(
            _row(
                "10b. Throughput against verification only",
                f"not run: {live.get('error', reg.get('state'))}",
                None,
                "",
            )
        )
    rows.append(_kill_goal(kill))
    return rows


def _kinds(x: dict[str, Any]) -> str:
    kinds = x.get("by_kind", {})
    return ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if k != "rate_limited")


def _kill_goal(kill: dict[str, Any]) -> dict[str, Any]:
    after = kill.get("after")
    if not after:
        return _row("10c. Duplicates after a mid-run kill", f"not run: {kill.get('error')}", None, "")
    bad = after["duplicates"] + after["not_registered"] + after["users_sent_verification"]
    landed = kill["killed"]["killed"] and 0 < kill["at_kill"]["register_reached"] < after["users"]
    ok = landed and bad == 0 and after["users_not_one_code"] == 0 and kill["rerun"].get("state") == "success"
    return _row(
        "10c. kill -9 of the chunk tasks mid-registration, then a rerun: 0 users with more than one "
        "register request, every user registered once, its one email code sFOX's, no send-verification",
        f"{after['duplicates']} duplicates; {after['not_registered']} not registered; "
        f"{after['users_not_one_code']} of {after['users']} without exactly one code; "
        f"{after['users_sent_verification']} sent a verification; killed after "
        f"{kill['at_kill']['register_reached']} registrations, rerun {kill['rerun'].get('state')}",
        ok,
        "See section 10: the kill."
        if landed
        else "The kill did not land in the middle of the registrations (the first run ended first).",
    )


def section(r: dict[str, Any] | None) -> list[str]:
    """Section 10 of the report."""
    if not r:
        return []
    loop, live, kill = r.get("loop", {}), r.get("live", {}), r.get("kill", {})
    out = [
        "## 10. Registering users sFOX does not know (issue #23)",
        "",
        f"{r['users']} users of both account types that sFOX (the sandbox) does not know, with valid "
        "register-account fields, at sFOX's real limit (250 per 10 s, 60-s block, 100 ms latency; "
        f"budget {r['budget']}). Every count is the sandbox's: its journal, and its register-account "
        "requests per `user_id` that reached the call.",
        "",
        "| run | state, wall | requests | per user (register + user reads + email requests) "
        "| list reads | 429s | share of 25/s | email codes (sFOX's and requested) "
        "| users without exactly one code | by kind |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in (
        (f"register-then-request loop ({r.get('loop_users')} users, 24/s, 8 threads)", loop),
        ("live: verification only (`sfox_onboarding_p2`, registered users)", live.get("verification_only")),
        ("live: registration (`sfox_onboarding_registration`)", live.get("registration")),
        ("dag.test(): registration, killed", kill.get("at_kill")),
        ("dag.test(): the killed run and the rerun, in all (wall: the rerun)", kill.get("after")),
    ):
        out.append(_section_row(name, x or {}))
    out += ["", *_notes(live, kill), ""]
    return out


def _section_row(name: str, x: dict[str, Any]) -> str:
    if "requests" not in x:
        return f"| {name} | not run: {x.get('error', '')} | | | | | | | | |"
    wall = " in ".join(filter(None, (x.get("state"), f"{x['wall_s']:.0f} s" if x.get("wall_s") else "")))
    share = f"{x['share']:.3f}" if "share" in x else ""
    return (
        f"| {name} | {wall} | {x['requests']} | {x['requests_per_user']:.3f} | {x['list_reads']} | "
        f"{x['rate_limited']} | {share} | {x['codes']} | {x['users_not_one_code']} | {_kinds(x)} |"
    )


def _notes(live: dict[str, Any], kill: dict[str, Any]) -> list[str]:
    out = []
    if live.get("startup_s"):
        out.append(
            f"Live: {live['executor']}, parallelism {live['parallelism']}, services up and DAGs parsed "
            f"in {live['startup_s']:.0f} s; both DAGs `parallel_chunks` 2, `chunk_size` 480; the "
            "registration run first (a first run's extra costs count against it)."
        )
    for name in ("registration", "verification_only"):
        x = live.get(name) or {}
        if x.get("request_span_s") is not None:
            out.append(
                f"Live {name.replace('_', '-')} run: {x['before_first_request_s']:.1f} s before sFOX's "
                f"first request, {x['request_span_s']:.1f} s from first to last request, "
                f"{x['after_last_request_s']:.1f} s after the last; {x['task_instances']} task "
                f"instances ({x.get('ti_states')})."
            )
    if live.get("registration", {}).get("ledger"):
        out.append(f"Ledger after the live registration run: {live['registration']['ledger']}.")
    if kill.get("killed"):
        k = kill["killed"]
        out.append(
            f"Kill: SIGKILL to the `dag.test()` process group {k['seconds_to_kill']:.0f} s in, once "
            f"{k['registered_seen']} registrations were seen in the journal (exit {k['exit']}); ledger "
            f"then {k.get('ledger')}: {k.get('in_flight')} registrations in flight (made by sFOX, not "
            f"recorded). The rerun: {kill['rerun'].get('state')} in "
            f"{kill['rerun'].get('wall_s', 0):.0f} s; ledger after {kill.get('ledger')}; attempts "
            f"{kill.get('attempts')}."
        )
    return out
