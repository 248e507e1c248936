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


def make_warehouse(csv_path: str, db_path: str, table: str = "sfox_users") -> int:
    """(Re)create ``table`` in the SQLite file ``db_path`` from ``csv_path``; return its row count."""
    with open(csv_path, newline="", encoding="utf-8") as source:
        rows = [tuple(row.get(c) or None for c in COLUMNS) for row in csv.DictReader(source)]
    with sqlite3.connect(db_path) as db:
        db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(f"CREATE TABLE {table} ({', '.join(f'{c} TEXT' for c in COLUMNS)})")
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", rows)
    return len(rows)


if __name__ == "__main__":
    print(make_warehouse(sys.argv[1], sys.argv[2]), "rows")
