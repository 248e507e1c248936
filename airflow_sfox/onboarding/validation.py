"""Validation of source rows: a bad row is rejected with a reason and never sent."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from airflow_sfox.onboarding.model import ACCOUNT_TYPES, CHANNELS_BY_ACCOUNT_TYPE, Channel, channels_for

#: The ledger row of a rejected source row is kept on the channel every account type verifies
#: first (its account type may be the very thing that is wrong).
_FIRST_CHANNELS = {order[0] for order in CHANNELS_BY_ACCOUNT_TYPE.values()}
if len(_FIRST_CHANNELS) != 1:  # the ledger keys a rejected row by one channel for every type
    raise RuntimeError(
        f"every account type must verify the same channel first, got {sorted(_FIRST_CHANNELS)} "
        "in CHANNELS_BY_ACCOUNT_TYPE"
    )
(REJECTED_CHANNEL,) = _FIRST_CHANNELS
#: sFOX documents no limit; ids longer than this are almost surely data errors.
MAX_USER_ID_LENGTH = 128
MAX_EMAIL_LENGTH = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@dataclass(frozen=True)
class SourceUser:
    """
    One valid source row.

    :param user_id: the partner's id, the key shared with sFOX.
    :param account_type: ``individual`` or ``corporation``.
    """

    user_id: str
    account_type: str


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def as_text(value: object) -> str:
    """A source value as text: ``None`` is empty, anything else ``str()``."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def user_id_problem(uid: str) -> str | None:
    """Why a user_id cannot be sent (``None``: it can); the reason names the field only."""
    if not uid.strip():
        return "user_id is empty"
    if len(uid) > MAX_USER_ID_LENGTH:
        return f"user_id is longer than {MAX_USER_ID_LENGTH} characters"
    if _has_control(uid):
        return "user_id contains control characters"
    if uid in (".", ".."):
        return "user_id cannot be '.' or '..'"
    return None


def validate_row(user_id: object, account_type: object, email: object, phone: object) -> SourceUser | str:
    """
    Check one source row; return the user, or the reason it is rejected.

    Reasons name the field and never repeat an email or phone number.

    :param user_id: the ``user_id`` column.
    :param account_type: the ``account_type`` column (case and surrounding blanks ignored).
    :param email: the ``email`` column (required).
    :param phone: the ``phone_number`` column, E.164 (required for account types that verify sms).
    """
    uid = as_text(user_id)
    problem = user_id_problem(uid)
    if problem:
        return problem
    kind = as_text(account_type).strip().lower()
    if kind not in ACCOUNT_TYPES:
        shown = as_text(account_type)[:32]
        return f"account_type {shown!r} is not one of {', '.join(ACCOUNT_TYPES)}"
    verifies = channels_for(kind)
    mail = as_text(email).strip()
    if not mail:
        return "email is missing"
    if len(mail) > MAX_EMAIL_LENGTH or not _EMAIL.match(mail):
        return "email is malformed"
    number = as_text(phone).strip()
    if Channel.SMS in verifies and not number:
        return f"phone_number is missing (required for {kind}s)"
    if number and not _E164.match(number):
        return "phone_number is not in E.164 format (+ and 7 to 15 digits)"
    return SourceUser(uid, kind)


def ledger_key(user_id: object) -> str:
    """
    The ledger key of a rejected row: its user_id when storable, else a stable stand-in.

    The stand-in of an unstorable id (control characters, too long) is a printable prefix
    and a hash of the whole id, so the same bad row keeps one ledger row from run to run.

    :param user_id: the raw ``user_id`` value.
    """
    uid = as_text(user_id)
    if not uid.strip():
        return "<empty user_id>"
    if _has_control(uid) or len(uid) > MAX_USER_ID_LENGTH:
        digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        printable = "".join(c if unicodedata.category(c) != "Cc" else "?" for c in uid[:40])
        cut = "..." if len(uid) > 40 else ""
        return f"<invalid user_id {printable!r}{cut} sha256:{digest}>"
    return uid
