"""The checks of a ``register-account`` body, per account type, written from the API contract.

What sFOX documents (``sfox-connect-api.md``, "Registering end users", and its Individuals
KYC guide), and how the sandbox checks it:

- Required for every account type: ``account_type`` (``individual`` / ``corporation``),
  ``user_id``, ``first_name``, ``last_name``, ``email``, ``phone_country_code``,
  ``phone_number``, ``account_purpose`` (non-empty strings). ``account_role`` is optional
  (``client`` / ``advisor``, any case; ``client`` when absent); ``advisor_user_id``, when
  given, a string.
- ``email``: no leading or trailing spaces (RFC 3696), one ``@``, a dot in the domain, at most
  254 characters (64 before the ``@``).
- ``phone_number``: E.164 (``+``, then 7 to 15 digits, the first not 0).
- ``phone_country_code`` (and every country below): ISO 3166-1 alpha-2, two upper-case letters.
- ``account_purpose``: one of the documented values of the account type, exactly as listed
  (:data:`~sfox_sandbox.model.ACCOUNT_PURPOSES`).
- Individuals: an ``individual`` object with ``dob`` (``YYYY-MM-DD``, a real date after
  1900-01-01 and before today), a residential address (an object under ``address`` or
  ``residential_address``, or its keys directly in ``individual``) with a street, ``city``, a
  postal code and ``country``, and a national id: ``ssn`` (9 digits, dashes allowed) when the
  address is in the US, else ``passport_number`` and the passport's issuing country.
- Corporations: a non-empty ``business`` object and a non-empty ``beneficial_owners`` list of
  non-empty objects (an owner's ``dob`` or ``country``, when given, is checked as above).

Not documented by sFOX, so chosen here: the key names inside ``individual`` (the docs name
``dob`` and list the address and national id in prose). Accepted spellings: street
``street``, ``street_address``, ``address_line_1``, ``line1``, ``address1``; postal code
``postal_code``, ``zip``, ``zip_code``, ``postcode``; country ``country``,
``country_code``; passport country ``passport_country``, ``passport_issuing_country``,
``passport_country_code``. An answer names the canonical spelling. Unknown extra fields
anywhere pass (the contract is incomplete: sFOX's own answer has the last word).

:func:`check_registration` raises :class:`InvalidRegistration` naming the first field at fault
(a dotted path such as ``individual.address.city`` or ``beneficial_owners[0]``) and what it
must be, never its value: the registrar (:mod:`sfox_sandbox.registrar`) turns it into the
configured answer.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from sfox_sandbox.model import ACCOUNT_PURPOSES, ACCOUNT_ROLES, ACCOUNT_TYPES, CORPORATION, INDIVIDUAL

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_SSN_RE = re.compile(r"^[0-9]{3}-?[0-9]{2}-?[0-9]{4}$")
_EARLIEST_DOB = datetime.date(1900, 1, 1)

REQUIRED = "is required"
NOT_TEXT = "must be a non-empty string"
COUNTRY = "must be an ISO 3166-1 alpha-2 country code (two upper-case letters)"
DATE = "must be a date YYYY-MM-DD after 1900-01-01 and before today"

#: Top-level fields every account type needs, in the order they are checked.
REQUIRED_FIELDS: tuple[str, ...] = (
    "user_id",
    "account_type",
    "first_name",
    "last_name",
    "email",
    "phone_country_code",
    "phone_number",
    "account_purpose",
)
#: Canonical key -> accepted spellings, inside a residential address.
ADDRESS_KEYS: dict[str, tuple[str, ...]] = {
    "street": ("street", "street_address", "address_line_1", "line1", "address1"),
    "city": ("city",),
    "postal_code": ("postal_code", "zip", "zip_code", "postcode"),
    "country": ("country", "country_code"),
}
PASSPORT_COUNTRY_KEYS: tuple[str, ...] = (
    "passport_country",
    "passport_issuing_country",
    "passport_country_code",
)


class InvalidRegistration(ValueError):
    """A register-account body sFOX would refuse.

    :param field: dotted path of the field at fault (``individual.dob``).
    :param reason: what the field must be (``is required``, ``must be ...``); never its value.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


def check_registration(body: Mapping[str, Any]) -> None:
    """Check a register-account body against the documented rules of its account type.

    :param body: the decoded JSON object.
    :raises InvalidRegistration: naming the first field at fault.
    """
    for name in REQUIRED_FIELDS:
        _text(body, name, name)
    account_type = body["account_type"]
    if account_type not in ACCOUNT_TYPES:
        raise InvalidRegistration("account_type", _one_of(ACCOUNT_TYPES))
    role = body.get("account_role")
    if role is not None and (not isinstance(role, str) or role.lower() not in ACCOUNT_ROLES):
        raise InvalidRegistration("account_role", _one_of(ACCOUNT_ROLES))
    advisor = body.get("advisor_user_id")
    if advisor is not None and not isinstance(advisor, str):
        raise InvalidRegistration("advisor_user_id", "must be a string")
    _check_email(body["email"])
    if not _COUNTRY_RE.match(body["phone_country_code"]):
        raise InvalidRegistration("phone_country_code", COUNTRY)
    if not _E164_RE.match(body["phone_number"]):
        raise InvalidRegistration("phone_number", "must be in E.164 format (+ then 7 to 15 digits)")
    purposes = ACCOUNT_PURPOSES[account_type]
    if body["account_purpose"] not in purposes:
        raise InvalidRegistration("account_purpose", f"must be one of the {account_type} purposes")
    if account_type == INDIVIDUAL:
        _check_individual(body.get("individual"))
    elif account_type == CORPORATION:
        _check_corporation(body)


def _one_of(choices: tuple[str, ...]) -> str:
    return "must be one of: " + ", ".join(choices)


def _text(obj: Mapping[str, Any], key: str, path: str) -> str:
    """The non-blank string ``obj[key]``, else :class:`InvalidRegistration` for ``path``."""
    value = obj.get(key)
    if value is None or value == "":
        raise InvalidRegistration(path, REQUIRED)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRegistration(path, NOT_TEXT)
    return value


def _first_text(obj: Mapping[str, Any], keys: tuple[str, ...], path: str) -> str:
    """The first of ``keys`` present in ``obj`` (checked as :func:`_text`), named by ``path``."""
    for key in keys:
        if obj.get(key) not in (None, ""):
            return _text(obj, key, path)
    raise InvalidRegistration(path, REQUIRED)


def _object(value: Any, path: str, missing: str = REQUIRED) -> Mapping[str, Any]:
    if value is None:
        raise InvalidRegistration(path, missing)
    if not isinstance(value, Mapping) or not value:
        raise InvalidRegistration(path, "must be a non-empty object")
    return value


def _check_email(email: str) -> None:
    if email != email.strip() or len(email) > 254 or not _EMAIL_RE.match(email):
        raise InvalidRegistration("email", "must be an email address without leading or trailing spaces")


def _check_date(value: Any, path: str) -> None:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise InvalidRegistration(path, DATE)
    try:
        day = datetime.date.fromisoformat(value)
    except ValueError:
        raise InvalidRegistration(path, DATE) from None
    if not _EARLIEST_DOB <= day < datetime.date.today():
        raise InvalidRegistration(path, DATE)


def _check_country(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _COUNTRY_RE.match(value):
        raise InvalidRegistration(path, COUNTRY)
    return value


def _check_individual(value: Any) -> None:
    individual = _object(value, "individual", "is required for individual accounts")
    if individual.get("dob") in (None, ""):
        raise InvalidRegistration("individual.dob", REQUIRED)
    _check_date(individual["dob"], "individual.dob")
    country = _check_address(individual)
    if country == "US":
        ssn = _text(individual, "ssn", "individual.ssn")
        if not _SSN_RE.match(ssn):
            raise InvalidRegistration("individual.ssn", "must be 9 digits (dashes allowed)")
        return
    _text(individual, "passport_number", "individual.passport_number")
    path = "individual.passport_country"
    _check_country(_first_text(individual, PASSPORT_COUNTRY_KEYS, path), path)


def _check_address(individual: Mapping[str, Any]) -> str:
    """Check the residential address of ``individual``; return its country."""
    nested = individual.get("address", individual.get("residential_address"))
    flat = any(key in individual for key in ADDRESS_KEYS["street"])
    if nested is None and flat:
        address, prefix = individual, "individual."
    else:
        address, prefix = _object(nested, "individual.address"), "individual.address."
    for name, keys in ADDRESS_KEYS.items():
        _first_text(address, keys, prefix + name)
    path = prefix + "country"
    return _check_country(_first_text(address, ADDRESS_KEYS["country"], path), path)


def _check_corporation(body: Mapping[str, Any]) -> None:
    _object(body.get("business"), "business", "is required for corporation accounts")
    owners = body.get("beneficial_owners")
    if owners is None:
        raise InvalidRegistration("beneficial_owners", "is required for corporation accounts")
    if not isinstance(owners, list) or not owners:
        raise InvalidRegistration("beneficial_owners", "must be a non-empty list of objects")
    for index, owner in enumerate(owners):
        path = f"beneficial_owners[{index}]"
        owner = _object(owner, path)
        if owner.get("dob") is not None:
            _check_date(owner["dob"], f"{path}.dob")
        if owner.get("country") is not None:
            _check_country(owner["country"], f"{path}.country")
