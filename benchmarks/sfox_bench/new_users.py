"""
The users sFOX does not know yet, for the registration benchmark (issue #23): the rows of
``sfox_new_users``, with valid register-account fields of both account types, deterministic
and of no real person, and the body a hand-written loop sends for one of them.
"""

from __future__ import annotations

import json
import random
import sqlite3
from typing import TYPE_CHECKING, Any

from airflow_sfox.onboarding.registration import DEFAULT_FIELDS, SOURCE_FIELDS
from sfox_bench.common import iter_users

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NEW_TABLE = "sfox_new_users"
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "John")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman")
_CITIES = (("Washington", "US"), ("Austin", "US"), ("Lisbon", "PT"), ("Toronto", "CA"), ("Berlin", "DE"))
_INDIVIDUAL_PURPOSES = ("Trading", "Investing", "Online payments", "Buying only", "Other")
_CORPORATE_PURPOSES = ("Treasury Management", "Operating", "Investment Fund", "Cross Border Payments")
#: The columns of the default mapping: the source's own, then each register-account field's.
_COLUMNS = (*SOURCE_FIELDS, *DEFAULT_FIELDS)


def _address(rng: random.Random, i: int) -> dict[str, str]:
    city, country = rng.choice(_CITIES)
    return {
        "street": f"{rng.randrange(1, 999)} Main Street",
        "city": city,
        "postal_code": f"{i % 100000:05d}",
        "country": country,
    }


def _dob(rng: random.Random) -> str:
    return f"{rng.randrange(1950, 2005)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"


def iter_new_users(count: int) -> Iterator[dict[str, Any]]:
    """
    The rows of ``sfox_new_users``: the user ids and account types of
    :func:`~sfox_bench.common.iter_users`, with valid register-account fields (individuals with
    a date of birth, an address and an SSN or a passport; corporations with a business and one
    or two beneficial owners). Deterministic; no real person's data.
    """
    rng = random.Random(23)
    for user_id, kind, email, _ in iter_users(count):
        i = int(user_id.rsplit("-", 1)[1])
        address = _address(rng, i)
        row: dict[str, Any] = {
            "user_id": user_id,
            "account_type": kind,
            "email": email,
            "phone_number": f"+1202{rng.randrange(10**7):07d}",
            "first_name": rng.choice(_FIRST),
            "last_name": rng.choice(_LAST),
            "phone_country_code": "US",
            "individual": None,
            "business": None,
            "beneficial_owners": None,
        }
        if kind == "individual":
            national = (
                {"ssn": f"{rng.randrange(100, 900)}-{rng.randrange(10, 100)}-{rng.randrange(1000, 10000)}"}
                if address["country"] == "US"
                else {
                    "passport_number": f"P{rng.randrange(10**8):08d}",
                    "passport_country": address["country"],
                }
            )
            row["account_purpose"] = rng.choice(_INDIVIDUAL_PURPOSES)
            row["individual"] = json.dumps({"dob": _dob(rng), "address": address, **national})
        else:
            row["account_purpose"] = rng.choice(_CORPORATE_PURPOSES)
            row["business"] = json.dumps(
                {"name": f"Company {i} LLC", "incorporation_date": _dob(rng), "address": address}
            )
            owners = [
                {"first_name": rng.choice(_FIRST), "last_name": rng.choice(_LAST), "dob": _dob(rng)}
                for _ in range(rng.randrange(1, 3))
            ]
            row["beneficial_owners"] = json.dumps(owners)
        yield row


def user_ids(count: int) -> list[str]:
    """The ids of the first ``count`` users (of :func:`iter_new_users` and of the verification-only runs)."""
    return [row[0] for row in iter_users(count)]


def seed_new_users(path: Path, count: int) -> None:
    """A new SQLite warehouse whose ``sfox_new_users`` holds ``count`` users sFOX does not know."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"CREATE TABLE {NEW_TABLE} ({', '.join(f'{c} TEXT' for c in _COLUMNS)})")
        conn.executemany(
            f"INSERT INTO {NEW_TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            ([row[c] for c in _COLUMNS] for row in iter_new_users(count)),
        )
        conn.commit()
    finally:
        conn.close()


def register_body(row: dict[str, Any]) -> dict[str, Any]:
    """The register-account body a hand-written loop sends for one row (client accounts)."""
    body = {
        k: v
        for k, v in row.items()
        if v is not None and k not in ("individual", "business", "beneficial_owners")
    }
    body["account_role"] = "client"
    for name in ("individual", "business", "beneficial_owners"):
        if row[name] is not None:
            body[name] = json.loads(row[name])
    return body
