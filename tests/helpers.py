"""Helpers shared by the test modules (fixtures live in the conftest files)."""

from __future__ import annotations

import json

#: A recognisable token: tests search logs, errors and XCom for it.
TOKEN = "sfox-test-token-7f3a9c"


def sfox_conn_json(host: str, *, password: str | None = TOKEN, **extra: object) -> str:
    """The JSON form of an ``sfox`` connection, for an ``AIRFLOW_CONN_*`` variable."""
    conn: dict[str, object] = {"conn_type": "sfox", "host": host, "extra": extra}
    if password is not None:
        conn["password"] = password
    return json.dumps(conn)
