"""A small onboarding ledger and run table with known figures, shared by the plugin tests."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

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
    """Create the onboarding tables (the engine's own DDL) in a SQLite file and fill them."""
    Warehouse(SqliteFileHook(path)).create_tables()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO sfox_onboarding_ledger (user_id, channel, account_type, state, last_status, "
            "last_error, updated_at, last_request_at, attempts, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, 'scheduled__2026-03-01T10:00:00+00:00')",
            [(*row, row[-1]) for row in LEDGER_ROWS],
        )
        columns = list(RUNS[0])
        conn.executemany(
            f"INSERT INTO sfox_onboarding_runs ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            [tuple(run[c] for c in columns) for run in RUNS],
        )


def build_demo_ledger(path: str, users: int = 2400, seed: int = 7) -> None:
    """
    A realistic ledger (deterministic) for the browser test and the README screenshot.

    Its expected figures are computed by the test with plain SQL, independently of the plugin.
    """
    import random

    rnd = random.Random(seed)
    Warehouse(SqliteFileHook(path)).create_tables()
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
    runs = []
    for day in range(1, 6):
        for hour in (9, 15):
            seconds = rnd.uniform(70, 190)
            requests = int(seconds * rnd.uniform(17, 20))
            runs.append(
                {
                    **RUNS[0],
                    "run_id": f"scheduled__2026-03-0{day}T{hour:02d}:00:00+00:00",
                    "started_at": f"2026-03-0{day}T{hour:02d}:00:00.000000+00:00",
                    "finished_at": f"2026-03-0{day}T{hour:02d}:{int(seconds) // 60:02d}:"
                    f"{int(seconds) % 60:02d}.000000+00:00",
                    "requests": requests,
                    "requests_per_second": round(requests / seconds, 2),
                    "rate_limited": rnd.choice([0, 0, 0, 2, 7]),
                    "failed": rnd.randint(0, 25),
                    "not_registered": rnd.randint(0, 4),
                    "rejected": rnd.randint(80, 100),
                    "sent": int(requests * 0.9),
                    "status": "success",
                }
            )
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO sfox_onboarding_ledger (user_id, channel, account_type, state, last_status, "
            "last_error, updated_at, last_request_at, attempts, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, 'scheduled__2026-03-05T15:00:00+00:00')",
            [(*row, row[-1]) for row in rows],
        )
        columns = list(RUNS[0])
        conn.executemany(
            f"INSERT INTO sfox_onboarding_runs ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            [tuple(run[c] for c in columns) for run in runs],
        )
