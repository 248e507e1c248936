"""Synthetic source rows with registration fields (no real personal data), and their source table."""

from __future__ import annotations

import json
from typing import Any

#: The registration source's columns, in order.
COLUMNS = (
    "user_id",
    "account_type",
    "email",
    "phone_number",
    "first_name",
    "last_name",
    "phone_country_code",
    "account_purpose",
    "individual",
    "business",
    "beneficial_owners",
)


def individual(n: int, **override: Any) -> dict[str, Any]:
    """One individual's row (every value unique to ``n``, so tests can search for each)."""
    row = {
        "user_id": f"ind-{n:04d}",
        "account_type": "individual",
        "email": f"ind{n}.person@example.com",
        "phone_number": f"+1202555{n:04d}",
        "first_name": f"Ada{n}x",
        "last_name": f"Lovelace{n}y",
        "phone_country_code": "US",
        "account_purpose": "Investing",
        "individual": json.dumps(
            {
                "dob": f"19{50 + n % 40:02d}-0{1 + n % 9}-1{n % 9}",
                "address": {
                    "street": f"{n} Analytical Engine Way",
                    "city": f"Babbage{n}ton",
                    "postal_code": f"PC{n:04d}Q",
                    "country": "US",
                },
                "ssn": f"9{n:02d}-77-{n:04d}",
            }
        ),
        "business": None,
        "beneficial_owners": None,
    }
    row.update(override)
    return row


def corporation(n: int, **override: Any) -> dict[str, Any]:
    """One corporation's row."""
    row = {
        "user_id": f"corp-{n:04d}",
        "account_type": "corporation",
        "email": f"treasury{n}@corp{n}.example.com",
        "phone_number": f"+1303555{n:04d}",
        "first_name": f"Grace{n}q",
        "last_name": f"Hopper{n}w",
        "phone_country_code": "US",
        "account_purpose": "Treasury Management",
        "individual": None,
        "business": json.dumps(
            {"legal_name": f"Compiler{n} Holdings LLC", "ein": f"88-{n:07d}", "country": "US"}
        ),
        "beneficial_owners": json.dumps(
            [{"first_name": f"Owner{n}z", "last_name": f"Share{n}k", "dob": "1970-05-05", "country": "GB"}]
        ),
    }
    row.update(override)
    return row


def personal_values(rows: list[dict[str, Any]]) -> list[str]:
    """Every registration field value of these rows that is personal (what must never leak)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and len(value) > 4:
            found.append(value)

    for row in rows:
        for name in ("first_name", "last_name", "email", "phone_number"):
            walk(row[name])
        for name in ("individual", "business", "beneficial_owners"):
            if row[name]:
                walk(json.loads(row[name]))
    return sorted(set(found))


def seed_registration_source(db: Any, rows: list[dict[str, Any]], table: str = "sfox_users") -> None:
    """Create (or replace) a source table with registration columns in a warehouse of ``WarehouseDB``."""
    db.query(f"DROP TABLE IF EXISTS {table}")
    db.query(
        f"CREATE TABLE {table} (user_id VARCHAR(300), account_type VARCHAR(40), email VARCHAR(300), "
        "phone_number VARCHAR(40), first_name VARCHAR(100), last_name VARCHAR(100), "
        "phone_country_code VARCHAR(8), account_purpose VARCHAR(60), individual TEXT, business TEXT, "
        "beneficial_owners TEXT)"
    )
    marks = ", ".join(["?"] * len(COLUMNS))
    for row in rows:
        db.query(
            f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({marks})", tuple(row[c] for c in COLUMNS)
        )
