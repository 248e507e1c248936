"""
A first warehouse for the install guide: the table ``sfox_users`` in a SQLite file, from the
same CSV the sandbox is seeded with, so the warehouse's users are the sandbox's users.

Usage: ``python make_warehouse.py users.csv warehouse.db``
"""

from __future__ import annotations

import csv
import sqlite3
import sys

COLUMNS = ("user_id", "account_type", "email", "phone_number")


def make_warehouse(csv_path: str, db_path: str) -> int:
    """(Re)create ``sfox_users`` in the SQLite file ``db_path`` from ``csv_path``; return its row count."""
    with open(csv_path, newline="", encoding="utf-8") as source:
        rows = [tuple(row.get(c) or None for c in COLUMNS) for row in csv.DictReader(source)]
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TABLE IF EXISTS sfox_users")
        db.execute("CREATE TABLE sfox_users (user_id TEXT, account_type TEXT, email TEXT, phone_number TEXT)")
        db.executemany("INSERT INTO sfox_users VALUES (?, ?, ?, ?)", rows)
    return len(rows)


if __name__ == "__main__":
    print(make_warehouse(sys.argv[1], sys.argv[2]), "rows")
