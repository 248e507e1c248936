"""A small onboarding ledger, attempts and run table with known figures, shared by the plugin tests."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from typing import Any

import sqlalchemy as sa

from airflow_sfox.onboarding.outcomes import LOST_ERROR
from airflow_sfox.onboarding.warehouse import Warehouse

T = "2026-03-0{day}T{hour:02d}:00:00.000000+00:00"
GAVE_UP_REASON = "gave up after 4 tries in a row ending not_registered: user not found"

#: (user_id, channel, account_type, state, last_status, last_error, updated_at)
LEDGER_ROWS: list[tuple[Any, ...]] = [
    ("ind_1", "email", "individual", "verified", 200, None, T.format(day=1, hour=1)),
    ("ind_1", "sms", "individual", "verified", 200, None, T.format(day=1, hour=2)),
    ("ind_2", "email", "individual", "already_verified", 422, None, T.format(day=1, hour=1)),
    ("ind_2", "sms", "individual", "already_verified", 422, None, T.format(day=1, hour=2)),
    ("ind_3", "email", "individual", "verified", 200, None, T.format(day=1, hour=1)),
    ("ind_3", "sms", "individual", "sent", 200, None, T.format(day=1, hour=2)),
    ("ind_4", "email", "individual", "verified", 200, None, T.format(day=1, hour=1)),
    ("ind_4", "sms", "individual", "failed", 500, "HTTP 500 after 3 attempts", T.format(day=2, hour=5)),
    ("ind_5", "email", "individual", "sent", 200, None, T.format(day=1, hour=1)),
    ("ind_6", "email", "individual", "failed", 500, "HTTP 500 after 3 attempts", T.format(day=2, hour=3)),
    ("ind_7", "email", "individual", "not_registered", 404, "user not found", T.format(day=2, hour=4)),
    ("ind_8", "email", "individual", "queued", None, None, T.format(day=1, hour=1)),
    # An sms row without an email row (a run with channels=["sms"]): still one user seen.
    ("ind_9", "sms", "individual", "queued", None, None, T.format(day=1, hour=1)),
    ("corp_1", "email", "corporation", "verified", 200, None, T.format(day=1, hour=1)),
    ("corp_2", "email", "corporation", "sent", 200, None, T.format(day=1, hour=1)),
    ("corp_3", "email", "corporation", "failed", 400, "HTTP 400 invalid request", T.format(day=2, hour=1)),
    ("corp_4", "email", "corporation", "already_verified", 422, None, T.format(day=1, hour=1)),
    ("corp_5", "email", "corporation", "gave_up", 404, GAVE_UP_REASON, T.format(day=2, hour=6)),
    (
        "<empty user_id, source row 14>",
        "email",
        None,
        "rejected",
        None,
        "user_id is empty",
        T.format(day=1, hour=0),
    ),
    ("bad_1", "email", None, "rejected", None, "email is malformed", T.format(day=1, hour=0)),
    ("bad_2", "email", None, "rejected", None, "email is malformed", T.format(day=1, hour=0)),
]

#: What the page must show for that ledger.
EXPECTED_FUNNEL: dict[str | None, dict[str, Any]] = {
    "individual": {
        "seen": 9,
        "email_requested": 5,
        "email_verified": 4,
        "sms_requested": 3,
        "sms_verified": 2,
        "verified": 2,
        "queued": 2,
        "rejected": 0,
        "failed": 2,
        "not_registered": 1,
        "gave_up": 0,
        "held": 0,
    },
    "corporation": {
        "seen": 5,
        "email_requested": 3,
        "email_verified": 2,
        "sms_requested": None,
        "sms_verified": None,
        "verified": 2,
        "queued": 0,
        "rejected": 0,
        "failed": 1,
        "not_registered": 0,
        "gave_up": 1,
        "held": 0,
    },
    None: {
        "seen": 3,
        "email_requested": 0,
        "email_verified": 0,
        "sms_requested": 0,
        "sms_verified": 0,
        "verified": 0,
        "queued": 0,
        "rejected": 3,
        "failed": 0,
        "not_registered": 0,
        "gave_up": 0,
        "held": 0,
    },
}
EXPECTED_REASONS = [
    {"state": "failed", "reason": "HTTP 500 after 3 attempts", "count": 2},
    {"state": "rejected", "reason": "email is malformed", "count": 2},
    {"state": "failed", "reason": "HTTP 400 invalid request", "count": 1},
    {"state": "gave_up", "reason": GAVE_UP_REASON, "count": 1},
    {"state": "rejected", "reason": "user_id is empty", "count": 1},
]
#: Recent failures, newest first: (user_id, channel, state).
EXPECTED_FAILURES = [
    ("corp_5", "email", "gave_up"),
    ("ind_4", "sms", "failed"),
    ("ind_7", "email", "not_registered"),
    ("ind_6", "email", "failed"),
    ("corp_3", "email", "failed"),
]
RUNS: list[dict[str, Any]] = [
    {
        "run_id": "scheduled__2026-03-01T10:00:00+00:00",
        "dag_id": "sfox_batch_onboarding",
        "dry_run": 0,
        "started_at": "2026-03-01T10:00:00.000000+00:00",
        "finished_at": "2026-03-01T10:02:30.000000+00:00",
        "source_rows": 17,
        "planned": 14,
        "rejected": 3,
        "sent": 6,
        "already_verified": 2,
        "not_registered": 1,
        "failed": 3,
        "uncertain": 0,
        "requests": 120,
        "rate_limited": 4,
        "send_seconds": 140.0,
        "requests_per_second": 0.8,
        "status": "failed",
    },
    {
        "run_id": "manual__2026-03-02T09:00:00+00:00",
        "dag_id": "sfox_batch_onboarding",
        "dry_run": 0,
        "started_at": "2026-03-02T09:00:00.000000+00:00",
        "finished_at": None,
        "source_rows": 17,
        "planned": 2,
        "rejected": 3,
        "sent": None,
        "already_verified": None,
        "not_registered": None,
        "failed": None,
        "uncertain": None,
        "requests": 7,
        "rate_limited": 0,
        "send_seconds": None,
        "requests_per_second": None,
        "status": "running",
    },
]


RUN_0, RUN_1 = RUNS[0]["run_id"], RUNS[1]["run_id"]
A = "2026-03-01T10:{minute:02d}:{second:02d}.000000+00:00"
#: (user_id, channel, run_id, attempted_at, attempt, status, outcome, uncertain, error): one row
#: per HTTP request. ind_4 has attempts on both channels (its sms retried twice, then failed);
#: ind_8's claimed request was in flight when its task died in RUN_1 (lost, uncertain).
ATTEMPT_ROWS: list[tuple[Any, ...]] = [
    ("ind_1", "email", RUN_0, A.format(minute=0, second=1), 1, 200, "sent", 0, None),
    ("ind_1", "sms", RUN_0, A.format(minute=1, second=1), 1, 200, "sent", 0, None),
    ("ind_4", "email", RUN_0, A.format(minute=0, second=4), 1, 200, "sent", 0, None),
    ("ind_4", "sms", RUN_0, A.format(minute=1, second=4), 1, 500, "retried", 0, "HTTP 500"),
    ("ind_4", "sms", RUN_0, A.format(minute=1, second=5), 2, 500, "retried", 0, "HTTP 500"),
    ("ind_4", "sms", RUN_0, A.format(minute=1, second=7), 3, 500, "failed", 0, "HTTP 500 after 3 attempts"),
    ("ind_6", "email", RUN_0, A.format(minute=0, second=6), 1, 500, "retried", 0, "HTTP 500"),
    ("ind_6", "email", RUN_0, A.format(minute=0, second=7), 2, 500, "retried", 0, "HTTP 500"),
    ("ind_6", "email", RUN_0, A.format(minute=0, second=9), 3, 500, "failed", 0, "HTTP 500 after 3 attempts"),
    ("ind_7", "email", RUN_0, A.format(minute=0, second=10), 1, 404, "not_registered", 0, "user not found"),
    ("corp_2", "email", RUN_0, A.format(minute=0, second=20), 1, 503, "retried", 0, "HTTP 503"),
    ("corp_2", "email", RUN_0, A.format(minute=0, second=21), 2, 200, "sent", 0, None),
    (
        "corp_3",
        "email",
        RUN_0,
        A.format(minute=0, second=22),
        1,
        400,
        "failed",
        0,
        "HTTP 400 invalid request",
    ),
    ("ind_8", "email", RUN_1, "2026-03-02T09:00:05.000000+00:00", 1, None, "lost", 1, LOST_ERROR),
]
#: RUN_0's attempts by (channel, outcome): (requests, uncertain ones).
EXPECTED_RUN_0_OUTCOMES = {
    ("email", "sent"): (3, 0),
    ("email", "retried"): (3, 0),
    ("email", "failed"): (2, 0),
    ("email", "not_registered"): (1, 0),
    ("sms", "sent"): (1, 0),
    ("sms", "retried"): (2, 0),
    ("sms", "failed"): (1, 0),
}
#: RUN_0's most frequent errors of requests that neither sent a code nor found it verified.
EXPECTED_RUN_0_ATTEMPT_REASONS = [
    {"outcome": "retried", "reason": "HTTP 500", "count": 4},
    {"outcome": "failed", "reason": "HTTP 500 after 3 attempts", "count": 2},
    {"outcome": "failed", "reason": "HTTP 400 invalid request", "count": 1},
    {"outcome": "not_registered", "reason": "user not found", "count": 1},
    {"outcome": "retried", "reason": "HTTP 503", "count": 1},
]
#: Users whose ids differ only by case, a trailing space, or hold slashes, dots and non-ASCII
#: text: each is a user of its own (user_id, channel, account_type, state, status, error, at).
ODD_ID_ROWS: list[tuple[Any, ...]] = [
    ("abc", "email", "corporation", "sent", 200, None, T.format(day=3, hour=1)),
    ("abc ", "email", "corporation", "failed", 500, "HTTP 500 after 3 attempts", T.format(day=3, hour=2)),
    ("ABC", "email", "corporation", "not_registered", 404, "user not found", T.format(day=3, hour=3)),
    ("team/7 ü", "email", "corporation", "sent", 200, None, T.format(day=3, hour=4)),
    ("..", "email", "corporation", "sent", 200, None, T.format(day=3, hour=5)),
]
#: One attempt per odd user, in RUN_1: its outcome is the state of its ledger row.
ODD_ID_ATTEMPTS: list[tuple[Any, ...]] = [
    (uid, channel, RUN_1, at, 1, status, state, 0, error)
    for uid, channel, _, state, status, error, at in ODD_ID_ROWS
]


def fill_warehouse(
    warehouse: Warehouse,
    ledger_rows: list[tuple[Any, ...]] = LEDGER_ROWS,
    attempt_rows: list[tuple[Any, ...]] = ATTEMPT_ROWS,
    runs: list[dict[str, Any]] = RUNS,
    default_run_id: str = RUN_0,
) -> None:
    """
    Create the onboarding tables (the engine's own DDL) on any supported database and fill them.

    A ledger row's counters and request times come from its attempts (a row without any made
    one request, at its ``updated_at``, whose attempt the retention pruned); its run is that of
    its last attempt, else ``default_run_id``; a run's DAG is that of its run row. Times are
    ISO 8601 text in one format.
    """
    warehouse.create_tables()
    dag_of = {run["run_id"]: run["dag_id"] for run in runs}
    keys = (
        "user_id",
        "channel",
        "run_id",
        "attempted_at",
        "attempt",
        "status",
        "outcome",
        "uncertain",
        "error",
    )
    attempts = [dict(zip(keys, row, strict=True)) for row in attempt_rows]
    for attempt in attempts:
        attempt["dag_id"] = dag_of[attempt["run_id"]]
    mine: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for attempt in attempts:
        mine.setdefault((attempt["user_id"], attempt["channel"]), []).append(attempt)
    ledger = []
    for user_id, channel, account_type, state, status, error, at in ledger_rows:
        trail = mine.get((user_id, channel), [])
        sent = [a for a in trail if a["outcome"] == "sent"]
        ledger.append(
            {
                "user_id": user_id,
                "channel": channel,
                "account_type": account_type,
                "state": state,
                "last_status": status,
                "last_error": error,
                "updated_at": max(at, trail[-1]["attempted_at"]) if trail else at,
                "first_request_at": trail[0]["attempted_at"] if trail else at,
                "last_request_at": trail[-1]["attempted_at"] if trail else at,
                "attempts": len(trail) or 1,
                "sends": len(sent),
                "last_sent_at": sent[-1]["attempted_at"] if sent else None,
                "uncertain": max((a["uncertain"] for a in trail), default=0),
                "run_id": trail[-1]["run_id"] if trail else default_run_id,
                "dag_id": dag_of[trail[-1]["run_id"] if trail else default_run_id],
            }
        )
    with warehouse.connect() as conn:
        conn.execute(sa.insert(warehouse.ledger_t), ledger)
        if attempts:
            conn.execute(sa.insert(warehouse.attempts_t), attempts)
        conn.execute(sa.insert(warehouse.runs_t), runs)
        conn.commit()


def sqlite_conn_json(path: str) -> str:
    """The ``AIRFLOW_CONN_*`` JSON of a SQLite warehouse file."""
    return json.dumps({"conn_type": "sqlite", "host": path})


class SqliteFileHook:
    """The part of a SQLite DbApiHook the Warehouse uses, for one file, without a connection."""

    conn_type = "sqlite"
    placeholder = "?"

    def __init__(self, path: str) -> None:
        self.path = path

    def get_conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)

    def get_sqlalchemy_engine(self, engine_kwargs: dict | None = None):
        import sqlalchemy

        return sqlalchemy.create_engine(f"sqlite:///{self.path}", **(engine_kwargs or {}))


def build_ledger(path: str) -> None:
    """The known ledger, attempts and run table in a SQLite file."""
    warehouse = Warehouse(SqliteFileHook(path))
    fill_warehouse(warehouse)
    warehouse.engine.dispose()


#: A failed row's reason -> (status, error, how many, uncertain) of its requests before the last
#: (a connection reset may come after the request reached sFOX).
DEMO_RETRIED = {
    "HTTP 500 after 4 attempts": (500, "HTTP 500", 3, 0),
    "connection reset after 3 attempts": (None, "connection reset", 2, 1),
}


def build_demo_ledger(path: str, users: int = 2400, seed: int = 7) -> None:
    """
    A realistic ledger, attempts and run table (deterministic) for the browser tests and the
    README screenshots: ten runs, each sending a share of the users' codes.

    Its expected figures are computed by the tests with plain SQL, independently of the plugin.
    """
    import random

    rnd = random.Random(seed)
    rows: list[tuple[Any, ...]] = []
    errors = ["HTTP 500 after 4 attempts", "connection reset after 3 attempts", "HTTP 400 phone rejected"]
    rejects = [
        "email is malformed",
        "phone_number is not in E.164 format (+ and 7 to 15 digits)",
        "phone_number is missing (required for individuals)",
        "account_type 'partnership' is not one of individual, corporation",
        "user_id appears 2 times in the source",
    ]
    for i in range(users):
        at = "individual" if rnd.random() < 0.72 else "corporation"
        updated = f"2026-03-0{1 + i % 5}T{8 + i % 10:02d}:{i % 60:02d}:00.000000+00:00"
        if rnd.random() < 0.04:
            reason = rnd.choices(rejects, [5, 4, 3, 2, 1])[0]
            rows.append((f"src_row_{i}", "email", None, "rejected", None, reason, updated))
            continue
        email = rnd.choices(
            ["verified", "already_verified", "sent", "queued", "failed", "not_registered"],
            [48, 14, 26, 6, 4, 2],
        )[0]
        status = {"failed": 500, "not_registered": 404, "queued": None}.get(email, 200)
        error = rnd.choice(errors[:2]) if email == "failed" else ("user not found" if status == 404 else None)
        rows.append((f"client_{i:05d}", "email", at, email, status, error, updated))
        if at == "individual" and email in ("verified", "already_verified"):
            sms = rnd.choices(
                ["verified", "already_verified", "sent", "queued", "failed"], [46, 8, 34, 6, 6]
            )[0]
            status = {"failed": 400, "queued": None}.get(sms, 200)
            rows.append(
                (f"client_{i:05d}", "sms", at, sms, status, errors[2] if sms == "failed" else None, updated)
            )
    run_ids = [f"scheduled__2026-03-0{day}T{hour:02d}:00:00+00:00" for day in range(1, 6) for hour in (9, 15)]
    attempts = _demo_attempts(rows, run_ids, random.Random(seed + 1))
    warehouse = Warehouse(SqliteFileHook(path))
    runs = _demo_runs(run_ids, attempts, rnd)
    fill_warehouse(warehouse, rows, attempts, runs, default_run_id=run_ids[-1])
    warehouse.engine.dispose()


def _demo_attempts(rows: list[tuple[Any, ...]], run_ids: list[str], rnd: Any) -> list[tuple[Any, ...]]:
    """
    The requests behind the demo ledger's rows, spread over its runs (a user's sms in the run of
    its email or later): the last one answered as the row says, retried ones before it.
    """
    from datetime import datetime, timedelta

    attempts: list[tuple[Any, ...]] = []
    email_run: dict[str, int] = {}
    in_run = Counter[int]()
    for user_id, channel, _, state, status, error, _ in rows:
        if state == "queued" and rnd.random() < 0.2:  # in flight when its task died in the last run
            lost = (run_ids[-1], "2026-03-05T15:00:30.000000+00:00", 1, None, "lost", 1, LOST_ERROR)
            attempts.append((user_id, channel, *lost))
        if state in ("rejected", "queued"):
            continue
        first = email_run.get(user_id, 0) if channel == "sms" else 0
        run = email_run[user_id] = rnd.randint(first, len(run_ids) - 1)
        before = DEMO_RETRIED.get(error or "") or (503, "HTTP 503", int(rnd.random() < 0.08), 0)
        calls = [(before[0], "retried", before[3], before[1])] * before[2]
        calls.append((status, "sent" if state == "verified" else state, 0, error))
        start = datetime.fromisoformat(run_ids[run].split("__")[1])
        for number, (code, outcome, uncertain, text) in enumerate(calls, start=1):
            in_run[run] += 1
            at = (start + timedelta(seconds=5 + in_run[run] / 19)).isoformat(timespec="microseconds")
            attempts.append((user_id, channel, run_ids[run], at, number, code, outcome, uncertain, text))
    return attempts


def _demo_runs(run_ids: list[str], attempts: list[tuple[Any, ...]], rnd: Any) -> list[dict[str, Any]]:
    """The run rows of the demo: requests and outcomes counted from its attempts."""
    from datetime import datetime, timedelta

    outcomes = Counter((a[2], a[6]) for a in attempts)
    requests = Counter(a[2] for a in attempts)
    runs = []
    for run_id in run_ids:
        seconds = requests[run_id] / 19 + rnd.uniform(8, 20)
        start = datetime.fromisoformat(run_id.split("__")[1])
        runs.append(
            {
                **RUNS[0],
                "run_id": run_id,
                "started_at": start.isoformat(timespec="microseconds"),
                "finished_at": (start + timedelta(seconds=seconds)).isoformat(timespec="microseconds"),
                "planned": sum(
                    n for (run, what), n in outcomes.items() if run == run_id and what != "retried"
                ),
                "requests": requests[run_id],
                "requests_per_second": round(requests[run_id] / seconds, 2),
                "rate_limited": rnd.choice([0, 0, 0, 2, 7]),
                "sent": outcomes[(run_id, "sent")],
                "already_verified": outcomes[(run_id, "already_verified")],
                "failed": outcomes[(run_id, "failed")],
                "not_registered": outcomes[(run_id, "not_registered")],
                "uncertain": outcomes[(run_id, "lost")],
                "rejected": rnd.randint(80, 100),
                "status": "success",
            }
        )
    return runs
