"""End users as the sandbox keeps them: seeded or registered objects, and generated ranges.

Generated users (:class:`GeneratedUsers`, for tests at 1,000,000 users) are kept as ranges (a
prefix, a first number, a count and two shares) and built on access from their number; only
those that change (verified, or replaced by a seed) are stored as objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sfox_sandbox.model import (
    ACCOUNT_ROLES,
    ACCOUNT_TYPES,
    CHANNELS,
    EMAIL,
    SMS,
    channels_for,
    requirements_for,
    status_of,
)

_TRUE_STRINGS = {"1", "true", "t", "yes", "y"}
_FALSE_STRINGS = {"0", "false", "f", "no", "n", ""}


@dataclass
class SandboxUser:
    """One end user as the sandbox stores it.

    ``requirements[channel]`` is ``True`` while that channel is STILL to be verified (sFOX's
    meaning); ``status`` is ``VERIFIED`` once no requirement is left.
    """

    user_id: str
    account_type: str
    account_role: str = "client"
    email: str | None = None
    phone_number: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    advisor_user_id: str | None = None
    requirements: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(CHANNELS, True))

    @property
    def status(self) -> str:
        """``PENDING`` while a requirement is left, else ``VERIFIED``."""
        return status_of(self.requirements)

    def to_api(self) -> dict[str, Any]:
        """Return the user object as sFOX's API shows it (role capitalised)."""
        return {
            "user_id": self.user_id,
            "account_type": self.account_type,
            "account_role": self.account_role.capitalize(),
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone_number": self.phone_number,
            "advisor_user_id": self.advisor_user_id,
            "status": self.status,
            "requirements": dict(self.requirements),
        }


_MASK64 = (1 << 64) - 1


def _unit(number: int, salt: int) -> float:
    """A deterministic draw in [0, 1) for a user number (splitmix64)."""
    x = (number * 0x9E3779B97F4A7C15 + salt) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) / 2.0**64


#: Most users one generate call may create.
MAX_GENERATED = 100_000_000


@dataclass
class GeneratedUsers:
    """A range of synthetic users, kept in O(1) memory and built on access.

    User ``n`` (``start <= n < start + count``) is ``{prefix}{n}`` (no leading zeros), an
    individual with probability ``individual_share`` (else a corporation), email already
    verified with probability ``email_verified_share``; a client, email
    ``{prefix}{n}@example.com``, phone ``+1555`` plus 7 digits for individuals. The draws
    are a hash of ``n``: the same number is always the same user. ``changed`` holds the users
    of the range that changed since (by offset), which then win over the built ones.
    """

    prefix: str
    start: int
    count: int
    individual_share: float
    email_verified_share: float
    changed: dict[int, SandboxUser] = field(default_factory=dict)

    def offset_of(self, user_id: str) -> int | None:
        """The offset of ``user_id`` in this range, or ``None`` when it is not one of it."""
        if not user_id.startswith(self.prefix):
            return None
        digits = user_id[len(self.prefix) :]
        if not (digits.isascii() and digits.isdigit()) or (digits[0] == "0" and len(digits) > 1):
            return None
        offset = int(digits) - self.start
        return offset if 0 <= offset < self.count else None

    def build(self, offset: int) -> SandboxUser:
        """A fresh user object for ``offset`` (ignores ``changed``)."""
        number = self.start + offset
        individual = _unit(number, 1) < self.individual_share
        account_type = "individual" if individual else "corporation"
        requirements = requirements_for(account_type)
        if _unit(number, 2) < self.email_verified_share:
            requirements[EMAIL] = False
        user_id = f"{self.prefix}{number}"
        return SandboxUser(
            user_id=user_id,
            account_type=account_type,
            email=f"{user_id}@example.com",
            phone_number=f"+1555{number % 10_000_000:07d}" if individual else None,
            first_name="Generated",
            last_name=f"User{number}",
            requirements=requirements,
        )

    def get(self, offset: int) -> SandboxUser:
        """The user at ``offset``: its changed object if any, else a built one."""
        user = self.changed.get(offset)
        return user if user is not None else self.build(offset)

    def overlaps(self, other: GeneratedUsers) -> bool:
        """Whether some user_id could belong to both ranges."""
        if self.prefix == other.prefix:
            return self.start < other.start + other.count and other.start < self.start + self.count
        # "user-" and "user-1" would both claim "user-10": refuse nested prefixes.
        return self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)

    def to_dict(self) -> dict[str, Any]:
        """The range as a JSON-ready dict (without the changed users)."""
        return {
            "prefix": self.prefix,
            "start": self.start,
            "count": self.count,
            "individual_share": self.individual_share,
            "email_verified_share": self.email_verified_share,
            "first": f"{self.prefix}{self.start}",
            "last": f"{self.prefix}{self.start + self.count - 1}",
        }


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _flag(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_STRINGS | _FALSE_STRINGS:
        return value.strip().lower() in _TRUE_STRINGS
    raise ValueError(f"{key} must be a boolean")


def user_from_seed(obj: Mapping[str, Any]) -> SandboxUser:
    """Build a user from a seed object (JSON object or CSV row). Unknown keys are ignored.

    Keys: ``user_id`` and ``account_type`` (required); ``account_role`` (``client`` by
    default), ``email``, ``phone_number``, ``first_name``, ``last_name``, ``advisor_user_id``
    (optional); to seed a partly or fully verified user, either ``requirements``
    (``{"email": bool, "sms": bool}``, true = still required) or ``email_verified`` /
    ``phone_verified`` (booleans, or strings such as ``true``/``1`` in CSV). Seeds are
    trusted: email and phone formats are not checked.

    :param obj: the seed object.
    :raises ValueError: when a required key is missing or a value has the wrong type.
    """
    user_id = obj.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    account_type = str(obj.get("account_type") or "").strip().lower()
    if account_type not in ACCOUNT_TYPES:
        raise ValueError(f"account_type must be one of {', '.join(ACCOUNT_TYPES)}")
    account_role = str(obj.get("account_role") or "client").strip().lower()
    if account_role not in ACCOUNT_ROLES:
        raise ValueError(f"account_role must be one of {', '.join(ACCOUNT_ROLES)}")
    requirements = requirements_for(account_type)
    given = obj.get("requirements")
    if given is not None:
        if not isinstance(given, Mapping):
            raise ValueError("requirements must be an object")
        for channel in CHANNELS:
            flag = _flag(given, channel)
            if flag is not None:
                requirements[channel] = flag
    email_verified = _flag(obj, "email_verified")
    if email_verified is not None:
        requirements[EMAIL] = not email_verified
    phone_verified = _flag(obj, "phone_verified")
    if phone_verified is not None:
        requirements[SMS] = not phone_verified
    verified_by_type = channels_for(account_type)
    for channel in CHANNELS:
        if channel not in verified_by_type:
            requirements[channel] = False  # e.g. corporations verify email only
    return SandboxUser(
        user_id=user_id,
        account_type=account_type,
        account_role=account_role,
        email=_opt_str(obj, "email"),
        phone_number=_opt_str(obj, "phone_number"),
        first_name=_opt_str(obj, "first_name"),
        last_name=_opt_str(obj, "last_name"),
        advisor_user_id=_opt_str(obj, "advisor_user_id"),
        requirements=requirements,
    )
