"""Loading seed users from a JSON or CSV file (``--seed FILE``).

JSON: a list of user objects, or an object with the list under ``"users"`` or ``"data"``.
CSV: a header row with the columns ``user_id, account_type, email, phone_number,
first_name, last_name`` and optionally ``account_role``, ``advisor_user_id``,
``email_verified``, ``phone_verified``; empty cells count as missing, other
columns are ignored. See :func:`sfox_sandbox.state.user_from_seed` for the meaning
of each key.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from sfox_sandbox.users import user_from_seed

CSV_REQUIRED_COLUMNS = ("user_id", "account_type")


def load_seed_file(path: str | Path) -> list[dict[str, Any]]:
    """Read seed user objects from a ``.json`` or ``.csv`` file and check them.

    The format follows the file extension; another extension is tried as JSON, then CSV.

    :param path: file to read.
    :returns: the user objects, ready for ``SandboxConfig(seed_users=...)``.
    :raises ValueError: when the file cannot be parsed or a user is invalid.
    """
    file = Path(path)
    text = file.read_text(encoding="utf-8-sig")  # tolerate a BOM from spreadsheet exports
    suffix = file.suffix.lower()
    if suffix == ".csv":
        users = _parse_csv(text)
    elif suffix == ".json":
        users = _parse_json(text)
    else:
        try:
            users = _parse_json(text)
        except ValueError:
            users = _parse_csv(text)
    for index, obj in enumerate(users):
        try:
            user_from_seed(obj)
        except ValueError as exc:
            raise ValueError(f"{file}: user #{index}: {exc}") from None
    return users


def _parse_json(text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("users", data.get("data"))
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("JSON seed must be a list of user objects")
    return data


def _parse_csv(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"CSV seed lacks the column(s): {', '.join(missing)}")
    users: list[dict[str, Any]] = []
    for row in reader:
        users.append(
            {
                key.strip(): value.strip()
                for key, value in row.items()
                if key is not None and value is not None and value.strip() != ""
            }
        )
    return users
