"""Register-account bodies of the sandbox tests, written from the API contract.

``registration(kind, **changes)`` builds a valid body of one kind (``us-individual``,
``individual`` with a passport, ``corporation``) and applies changes by dotted path
(``individual.address.city``, ``beneficial_owners.0.dob``); ``DELETE`` removes the key.
"""

from __future__ import annotations

import copy
from typing import Any

REGISTER = "/v1/enterprise/register-account"
DELETE = object()

_CONTACT = {
    "account_role": "client",
    "first_name": "Grace",
    "last_name": "Hopper",
    "email": "grace@example.com",
    "phone_country_code": "US",
    "phone_number": "+12025550123",
}
BODIES: dict[str, dict[str, Any]] = {
    "us-individual": {
        **_CONTACT,
        "account_type": "individual",
        "user_id": "new-1",
        "account_purpose": "Investing",
        "individual": {
            "dob": "1990-01-31",
            "address": {"street": "1 Main St", "city": "Arlington", "postal_code": "22201", "country": "US"},
            "ssn": "123-45-6789",
        },
    },
    "individual": {
        **_CONTACT,
        "account_type": "individual",
        "user_id": "new-1",
        "phone_country_code": "FR",
        "phone_number": "+33612345678",
        "account_purpose": "Trading",
        "individual": {
            "dob": "1985-12-01",
            "address": {"street": "2 rue Haute", "city": "Paris", "postal_code": "75001", "country": "FR"},
            "passport_number": "12AB34567",
            "passport_country": "FR",
        },
    },
    "corporation": {
        **_CONTACT,
        "account_type": "corporation",
        "user_id": "new-1",
        "first_name": "Acme",
        "last_name": "Inc",
        "email": "ops@acme.example",
        "account_purpose": "Treasury Management",
        "business": {"name": "Acme Inc", "country": "US"},
        "beneficial_owners": [{"first_name": "Wile", "last_name": "Coyote", "dob": "1970-05-05"}],
    },
}


def registration(kind: str = "us-individual", **changes: Any) -> dict[str, Any]:
    """A valid body of ``kind`` with ``changes`` (dotted path -> value, or :data:`DELETE`)."""
    body = copy.deepcopy(BODIES[kind])
    for path, value in changes.items():
        set_path(body, path, value)
    return body


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """Set (or, with :data:`DELETE`, remove) ``path`` in ``body``; numbers index lists."""
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
