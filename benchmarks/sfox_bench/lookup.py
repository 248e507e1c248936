"""
Measurement 6, the page's user lookup and run view on a large attempts table:
``python -m sfox_bench.lookup '<json>'``.

One process per size: it creates the onboarding tables with the engine's own DDL and indexes
(:meth:`Warehouse.create_tables` on connection ``sfox_warehouse``, a new SQLite file), seeds them
with plain ``executemany`` in batches (:func:`seed`), then times, for ``samples`` user ids and
run ids drawn at random (seeded), the two lookups the way the page asks for them:

* ``query``: :meth:`Lookups.user` / :meth:`Lookups.run` on one :class:`Warehouse`, each on
  a connection of its own (catalog reads included), as ``GET api/user`` and ``api/run`` run them;
* ``api``: the whole HTTP request through the plugin's FastAPI app (``create_app``; the
  connection looked up, a new engine per request, JSON), with the DAG-access check answered
  by a stand-in auth manager that allows everything.

Each statement is also timed on its own (SQLAlchemy cursor events) and explained (SQLite's
``EXPLAIN QUERY PLAN``), so a slow query and the index it uses (or lacks) are named.

The shape does not depend on the size: ~5.7 attempts per user (email, and sms for the 70%
individuals; retries, failed calls tried again in the next run), users sent in id order by runs
of ~5,000 attempts, and 1% of the rows on heavy users with 500 attempts each (their timeline is
capped at 200). So the size alone differs between the baseline and the large table.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_sfox.onboarding.model import AttemptOutcome
from sfox_bench.common import emit

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Attempts per user (about: users are drawn until the table has its rows) and per run.
ATTEMPTS_PER_USER = 5
ATTEMPTS_PER_RUN = 5000
INDIVIDUAL_SHARE = 0.7
#: Heavy users (1% of the rows, at least one): retried in run after run, 500 attempts each.
HEAVY_ATTEMPTS = 500
#: The DAG of every run (the page's run links name it: run_ids are unique within a DAG only).
DAG_ID = "sfox_batch_onboarding"
BATCH = 50_000
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: The final answer of a call (outcome, status, error) and its weight; a call not sent is tried
#: again in the next run, up to MAX_CALLS calls per channel.
SENT, FAILED, NOT_REGISTERED = AttemptOutcome.SENT, AttemptOutcome.FAILED, AttemptOutcome.NOT_REGISTERED
#: The ledger state is the outcome of the channel's last call (these outcomes are ledger states too).
ANSWERS = [
    ((SENT.value, 200, None), 62),
    ((AttemptOutcome.ALREADY_VERIFIED.value, 422, "already verified"), 4),
    ((FAILED.value, 500, "HTTP 500 after 4 attempts"), 18),
    ((FAILED.value, 400, "HTTP 400 invalid phone_number"), 6),
    ((NOT_REGISTERED.value, 404, "user not found"), 10),
]
MAX_CALLS = 4
#: Requests retried by the hook before a call's last one: how many (weights), and what they got.
RETRIED = [0, 1, 2, 3]
RETRIED_WEIGHTS = [50, 25, 15, 10]
RETRIES = [(500, "HTTP 500", 0), (503, "HTTP 503", 0), (None, "connection reset", 1)]
HEAVY_ANSWER = (NOT_REGISTERED.value, 404, "user not found")
Call = tuple[int, int, tuple[str, int | None, str | None]]  # run, requests retried, final answer


def _ts(at: datetime) -> str:
    """A time as the SQLite warehouse stores it (ISO 8601 text, microseconds, UTC)."""
    return at.isoformat(timespec="microseconds")


def run_id_of(index: int) -> str:
    return f"scheduled__{(T0 + timedelta(hours=index)).isoformat()}"


def user_id_of(index: int) -> str:
    return f"user-{index:07d}"


def _calls(rnd: random.Random, first_run: int, runs: int) -> list[Call]:
    """One channel's calls: in run after run until one is sent (or MAX_CALLS)."""
    calls: list[Call] = []
    for k in range(MAX_CALLS):
        answer = rnd.choices([a for a, _ in ANSWERS], [w for _, w in ANSWERS])[0]
        retried = 3 if answer[1] == 500 else rnd.choices(RETRIED, RETRIED_WEIGHTS)[0]
        calls.append((min(first_run + k, runs - 1), retried, answer))
        if answer[0] not in (FAILED, NOT_REGISTERED):
            break
    return calls


def _rows(
    rnd: random.Random, index: int, channel: str, account_type: str, calls: list[Call]
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """One ledger row and its attempts rows, from its calls."""
    user_id = user_id_of(index)
    rows: list[tuple[Any, ...]] = []
    sends, last_sent = 0, None
    for call, (run, retried, (outcome, status, error)) in enumerate(calls):
        at = T0 + timedelta(hours=run, seconds=(index % 9000) * 0.4 + call * 0.01)
        for number in range(1, retried + 2):
            when = _ts(at + timedelta(milliseconds=300 * number))
            if number <= retried:
                r_status, r_error, uncertain = rnd.choice(RETRIES)
                retry = (when, number, r_status, AttemptOutcome.RETRIED.value, uncertain, r_error)
                rows.append((user_id, channel, run_id_of(run), *retry, DAG_ID))
            else:
                last = (when, number, status, outcome, 0, error)
                rows.append((user_id, channel, run_id_of(run), *last, DAG_ID))
        if outcome == SENT:
            sends, last_sent = sends + 1, rows[-1][3]
    run, _, (outcome, status, error) = calls[-1]
    failures = sum(1 for *_, (o, _, _) in calls if o in (FAILED, NOT_REGISTERED))
    uncertain = int(any(r[7] for r in rows))
    ledger = (
        user_id, channel, account_type, outcome, sends, len(rows), uncertain, status, error,
        rows[0][3], rows[-1][3], last_sent, run_id_of(run), 0, rows[-1][3], failures, DAG_ID,
    )  # fmt: skip
    return ledger, rows


LEDGER_INSERT = (
    "INSERT INTO sfox_onboarding_ledger (user_id, channel, account_type, state, sends, attempts, uncertain, "
    "last_status, last_error, first_request_at, last_request_at, last_sent_at, run_id, chunk, updated_at, "
    "failures, dag_id) VALUES (" + ", ".join("?" * 17) + ")"
)
ATTEMPT_INSERT = (
    "INSERT INTO sfox_onboarding_ledger_attempts (user_id, channel, run_id, attempted_at, attempt, status, "
    "outcome, uncertain, error, dag_id) VALUES (" + ", ".join("?" * 10) + ")"
)
RUN_INSERT = (
    "INSERT INTO sfox_onboarding_runs (run_id, dag_id, dry_run, started_at, finished_at, requests, sent, "
    "already_verified, failed, not_registered, status) "
    "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, 'success')"
)


def _run_row(run_id: str, counts: dict[str, int]) -> tuple[Any, ...]:
    """A run's row, its figures counted from its attempts."""
    start = datetime.fromisoformat(run_id.split("__", 1)[1])
    outcomes = (SENT, AttemptOutcome.ALREADY_VERIFIED, FAILED, NOT_REGISTERED)
    return (
        run_id, DAG_ID, _ts(start), _ts(start + timedelta(minutes=40)), sum(counts.values()),
        *(counts.get(o.value, 0) for o in outcomes),
    )  # fmt: skip


def _users(rnd: random.Random, attempts: int, runs: int) -> Iterator[tuple[int, bool, list[tuple[Any, ...]]]]:
    """``(index, heavy, [(ledger row, attempts rows), ...])`` per user, until ``attempts`` rows."""
    heavy_users = max(1, attempts // 100 // HEAVY_ATTEMPTS)
    regular = attempts - heavy_users * HEAVY_ATTEMPTS
    expected = max(1, regular // ATTEMPTS_PER_USER)
    written = index = 0
    while written < regular:
        kind = "individual" if rnd.random() < INDIVIDUAL_SHARE else "corporation"
        first_run = min(index * runs // expected, runs - 1)  # users are sent in id order, run after run
        channels = ("email", "sms") if kind == "individual" else ("email",)
        user = [_rows(rnd, index, c, kind, _calls(rnd, first_run + i, runs)) for i, c in enumerate(channels)]
        written += sum(len(rows) for _, rows in user)
        yield index, False, user
        index += 1
    for h in range(heavy_users):  # retried in every run, one request each, spread over the runs
        calls: list[Call] = [
            ((h * runs // heavy_users + k) % runs, 0, HEAVY_ANSWER) for k in range(HEAVY_ATTEMPTS)
        ]
        yield index + h, True, [_rows(rnd, index + h, "email", "corporation", sorted(calls))]


def seed(path: str, attempts: int, seed_value: int = 11) -> dict[str, Any]:
    """
    Fill the (empty, created) onboarding tables of a SQLite file: about ``attempts`` attempts
    rows in runs of ~5,000, users drawn until the table has them. Returns the shape.
    """
    rnd = random.Random(seed_value)
    runs = max(1, attempts // ATTEMPTS_PER_RUN)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")  # seeding only: the measurement reopens it as the page does
    ledger: list[tuple[Any, ...]] = []
    rows: list[tuple[Any, ...]] = []
    per_run: dict[str, dict[str, int]] = {}
    shape = {"attempts": 0, "users": 0, "heavy_users": [], "ledger_rows": 0, "runs": runs}

    def flush() -> None:
        conn.executemany(LEDGER_INSERT, ledger)
        conn.executemany(ATTEMPT_INSERT, rows)
        conn.commit()
        ledger.clear()
        rows.clear()

    for index, heavy, user in _users(rnd, attempts, runs):
        for ledger_row, attempt_rows in user:
            ledger.append(ledger_row)
            rows.extend(attempt_rows)
            shape["attempts"] += len(attempt_rows)
            for row in attempt_rows:
                counts = per_run.setdefault(row[2], {})
                counts[row[6]] = counts.get(row[6], 0) + 1
        shape["ledger_rows"] += len(user)
        if heavy:
            shape["heavy_users"].append(user_id_of(index))
        else:
            shape["users"] += 1
        if len(rows) >= BATCH:
            flush()
    flush()
    conn.executemany(RUN_INSERT, [_run_row(run_id, counts) for run_id, counts in sorted(per_run.items())])
    conn.commit()
    conn.execute("ANALYZE")  # as a maintained warehouse has its statistics
    conn.close()
    shape["run_attempts"] = sorted(sum(c.values()) for c in per_run.values())
    return shape


def _label(sql: str) -> str:
    """Which query of the lookups a statement is (the catalog reads are one label)."""
    # Columns as SQLAlchemy qualifies them ("sfox_onboarding_ledger.channel"): by their name.
    head = re.sub(r"\bsfox_onboarding_\w+\.", "", " ".join(sql.split())).lower()[:80]
    for prefix, label in (
        ("select channel, account_type, state", "user: ledger rows"),
        ("select count(*) as count_1 from sfox_onboarding_ledger_attempts", "user: attempts count"),
        ("select channel, run_id", "user: timeline"),
        ("select run_id, dag_id", "run: run row"),
        ("select channel, state, count(*)", "run: ledger by state"),
        ("select user_id, channel, account_type", "run: held rows"),
        ("select state, last_error", "run: ledger reasons"),
        ("select channel, outcome", "run: attempts by outcome"),
        ("select outcome, error", "run: attempt reasons"),
    ):
        if head.startswith(prefix):
            return label
    return "catalog (tables, columns)"


class _Statements:
    """Times every statement of an engine, by label, and keeps one of each for its plan."""

    def __init__(self, engine: Any) -> None:
        import sqlalchemy as sa

        self.ms: dict[str, list[float]] = {}
        self.examples: dict[str, tuple[str, tuple[Any, ...]]] = {}
        self._started = 0.0
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        self._started = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        label = _label(statement)
        self.ms.setdefault(label, []).append((time.perf_counter() - self._started) * 1000)
        self.examples.setdefault(label, (statement, tuple(params or ())))


def stats(ms: list[float]) -> dict[str, Any]:
    """p50, p95, max and mean of a list of milliseconds."""
    p95 = statistics.quantiles(ms, n=100, method="inclusive")[94] if len(ms) > 1 else ms[0]
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p95_ms": p95,
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }


def _timed(call: Any, keys: list[str]) -> list[float]:
    out = []
    for key in keys:
        started = time.perf_counter()
        call(key)
        out.append((time.perf_counter() - started) * 1000)
    return out


class _AllowAll:
    """A stand-in auth manager: everyone may read every DAG (the check itself is still made)."""

    def batch_is_authorized_dag(self, requests: Any, *, user: Any) -> bool:
        return True


def _api_client() -> Any:
    """The plugin's app behind a TestClient, as a known user (the caller's token is not checked here)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    from airflow_sfox.plugins.app import create_app

    app = create_app(cache_seconds=0, auth_manager=_AllowAll)
    app.dependency_overrides[get_user] = lambda: object()
    return TestClient(app)


def _get(client: Any, path: str, param: str, **more: str) -> Any:
    def call(key: str) -> None:
        response = client.get(path, params={param: key, **more})
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:200]}")

    return call


def _plans(path: str, examples: dict[str, tuple[str, tuple[Any, ...]]]) -> dict[str, list[str]]:
    """SQLite's plan of each (non-catalog) statement."""
    with sqlite3.connect(path) as conn:
        return {
            label: [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            for label, (sql, params) in sorted(examples.items())
            if not label.startswith("catalog")
        }


def main() -> None:
    args = json.loads(sys.argv[1])
    from airflow_sfox.onboarding.warehouse import Warehouse
    from airflow_sfox.plugins.dashboard import DashboardSettings
    from airflow_sfox.plugins.lookups import Lookups

    seed_started = time.perf_counter()
    Warehouse.from_conn_id("sfox_warehouse").create_tables()
    shape = seed(args["path"], args["attempts"])
    seed_s = time.perf_counter() - seed_started

    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    dashboard = Lookups(warehouse, DashboardSettings())
    rnd = random.Random(5)
    samples = int(args["samples"])
    users = [user_id_of(rnd.randrange(shape["users"])) for _ in range(samples)]
    runs = [run_id_of(rnd.randrange(shape["runs"])) for _ in range(samples)]
    heavy = [rnd.choice(shape["heavy_users"]) for _ in range(samples)]
    capped = dashboard.user(heavy[0])
    dashboard.run(runs[0], DAG_ID)  # warm-up: first connection, imports
    statements = _Statements(warehouse.engine)
    per_run = shape.pop("run_attempts")
    out: dict[str, Any] = {
        **shape,
        "heavy_users": len(shape["heavy_users"]),
        "run_attempts": {"min": per_run[0], "median": per_run[len(per_run) // 2], "max": per_run[-1]},
        "samples": samples,
        "seed_s": seed_s,
    }
    out["query"] = {
        "user": stats(_timed(dashboard.user, users)),
        "run": stats(_timed(lambda run_id: dashboard.run(run_id, DAG_ID), runs)),
        "heavy_user": stats(_timed(dashboard.user, heavy)),
    }
    out["statements"] = {label: stats(ms) for label, ms in sorted(statements.ms.items())}
    out["plans"] = _plans(args["path"], statements.examples)
    out["heavy_timeline"] = {"shown": len(capped["attempts"]), "total": capped["attempts_total"]}
    client = _api_client()
    _get(client, "/api/user", "user_id")(users[0])  # warm-up: the app's first request
    out["api"] = {
        "user": stats(_timed(_get(client, "/api/user", "user_id"), users)),
        "run": stats(_timed(_get(client, "/api/run", "run_id", dag_id=DAG_ID), runs)),
    }
    emit(out)


if __name__ == "__main__":
    main()
