"""Synthetic warehouse users for tests, benchmarks and the demo (no real personal data)."""

from __future__ import annotations

import random
from typing import Any

SOURCE_COLUMNS = ("user_id", "account_type", "email", "phone_number")

#: Rows that must be rejected, with the reason the planner gives (in order of user_id).
BAD_ROWS: list[tuple[tuple[Any, ...], str]] = [
    (("bad-account-type", "trust", "t@example.com", "+12025550100"), "account_type"),
    (("bad-email", "individual", "not-an-email", "+12025550101"), "email is malformed"),
    (("bad-no-phone", "individual", "np@example.com", None), "phone_number is missing"),
    (("bad-phone", "corporation", "bp@example.com", "555-0102"), "E.164"),
    (("dup-1", "individual", "d1@example.com", "+12025550103"), "appears 2 times"),
    (("dup-1", "corporation", "d2@example.com", None), "appears 2 times"),
    (("x" * 200, "individual", "long@example.com", "+12025550104"), "longer than"),
    (("ctl\x07id", "corporation", "c@example.com", None), "control characters"),
]


def make_users(count: int, *, seed: int = 7, corporation_share: float = 0.3) -> list[tuple[Any, ...]]:
    """``count`` valid users ``(user_id, account_type, email, phone_number)``."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        kind = "corporation" if rng.random() < corporation_share else "individual"
        phone = f"+1202{rng.randrange(10**7):07d}" if kind == "individual" else None
        rows.append((f"user-{i:06d}", kind, f"person{i}@example.com", phone))
    return rows


def seed_sqlite(path: str, rows: list[tuple[Any, ...]], table: str = "sfox_users") -> None:
    """Create (or replace) the source table in a SQLite file."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} "
            "(user_id TEXT, account_type TEXT, email TEXT, phone_number TEXT, extra TEXT)"
        )
        conn.executemany(
            f"INSERT INTO {table} (user_id, account_type, email, phone_number) VALUES (?, ?, ?, ?)", rows
        )


def sandbox_users(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The sandbox seed objects of valid rows (the users the partner registered on sFOX)."""
    return [
        {"user_id": uid, "account_type": kind, "email": email, "phone_number": phone}
        for uid, kind, email, phone in rows
    ]
