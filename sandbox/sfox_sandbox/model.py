"""The sandbox's own model of sFOX Connect, written from the API contract.

Source: the project's contract ``sfox-connect-api.md`` ("sFOX Connect API: the contract this
project codes against", a digest of docs.sfox.com's Connect API section). This module is the
one place the sandbox keeps sFOX's rules; it imports nothing from the provider
(``airflow_sfox``) on purpose: the emulator must be able to disagree with a provider that got
a rule wrong, so that the provider's tests fail.

What the contract says, and where it is used:

- "``account_type`` values are ``individual`` and ``corporation``" -> :data:`ACCOUNT_TYPES`.
- "Corporations verify email only. Individuals verify email and sms, and email must be
  verified before an sms code may be requested." -> :data:`VERIFIED_CHANNELS` (in order),
  :func:`channels_for`, :func:`prerequisite`.
- A user's ``status`` is ``PENDING``, ``VERIFIED`` (or ``UNSUPPORTED``, which the sandbox never
  gives); ``requirements`` are "the remaining requirements to complete account verification",
  ``{"email": false, "sms": false}`` on a verified user, so ``true`` means still to verify ->
  :func:`requirements_for`, :func:`status_of`.
- ``account_role`` is ``client`` or ``advisor``, capitalised in responses -> :data:`ACCOUNT_ROLES`.
- 422 when the channel is already verified: ``"Email already verified"``; the phone case is
  documented as "Phone number has already been verified" -> :data:`ALREADY_VERIFIED`.
- A send-verification answer names the contact the code went to: ``email`` or
  ``phone_number`` -> :data:`CONTACT_FIELDS`.
- ``account_purpose`` of ``register-account`` is one of a list per account type ->
  :data:`ACCOUNT_PURPOSES` (the rest of registration's rules: :mod:`sfox_sandbox.registration`).

Not documented by sFOX, so chosen here (clients must not depend on the wording): the error for
sms requested before email is verified (:func:`verify_first`, 422: ``"Email must be
verified before phone"``), for an unknown user
(:data:`USER_NOT_FOUND`, 404), for a channel the account type does not verify
(:func:`not_available`, 400) and for an invalid ``type`` (400).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

EMAIL = "email"
SMS = "sms"
#: The verification channels: the ``type`` of ``POST .../send-verification/{user_id}``.
CHANNELS: tuple[str, ...] = (EMAIL, SMS)

INDIVIDUAL = "individual"
CORPORATION = "corporation"
#: The channels each account type verifies, in the order they must be verified.
VERIFIED_CHANNELS: dict[str, tuple[str, ...]] = {
    INDIVIDUAL: (EMAIL, SMS),
    CORPORATION: (EMAIL,),
}
ACCOUNT_TYPES: tuple[str, ...] = tuple(VERIFIED_CHANNELS)
ACCOUNT_ROLES: tuple[str, ...] = ("client", "advisor")
#: The documented ``account_purpose`` values of ``register-account``, per account type.
ACCOUNT_PURPOSES: dict[str, tuple[str, ...]] = {
    INDIVIDUAL: (
        "Trading",
        "Selling only",
        "Other",
        "Online purchases",
        "Online payments",
        "Investing",
        "Buying only",
        "Business",
    ),
    CORPORATION: (
        "Treasury Management",
        "Operating",
        "Liquidating Crypto Assets",
        "Investment Fund",
        "Cross Border Payments",
        "Arbitrage Trading",
        "Other",
    ),
}

PENDING = "PENDING"
VERIFIED = "VERIFIED"

#: The user field a channel's code goes to, as the send-verification answer names it.
CONTACT_FIELDS: dict[str, str] = {EMAIL: "email", SMS: "phone_number"}
#: How answers name a channel.
LABELS: dict[str, str] = {EMAIL: "Email", SMS: "Phone"}
#: The documented 422 texts of a channel already verified.
ALREADY_VERIFIED: dict[str, str] = {
    EMAIL: "Email already verified",
    SMS: "Phone number has already been verified",
}
#: Undocumented: 404 for a user_id sFOX does not know (the sandbox's wording).
USER_NOT_FOUND = "User not found"


def channels_for(account_type: str) -> tuple[str, ...]:
    """The channels ``account_type`` verifies, in order (empty for an unknown type).

    :param account_type: ``individual`` or ``corporation``.
    """
    return VERIFIED_CHANNELS.get(account_type, ())


def prerequisite(account_type: str, channel: str) -> str | None:
    """The channel that must be verified before a code of ``channel`` may be requested.

    :param account_type: ``individual`` or ``corporation``.
    :param channel: ``email`` or ``sms``.
    """
    order = channels_for(account_type)
    if channel not in order:
        return None
    position = order.index(channel)
    return order[position - 1] if position else None


def requirements_for(account_type: str) -> dict[str, bool]:
    """A new user's ``requirements``: ``True`` for each channel its account type verifies.

    :param account_type: ``individual`` or ``corporation``.
    """
    needed = channels_for(account_type)
    return {channel: channel in needed for channel in CHANNELS}


def status_of(requirements: Mapping[str, bool]) -> str:
    """``PENDING`` while a requirement is left, else ``VERIFIED``.

    :param requirements: channel to "still to verify".
    """
    return PENDING if any(requirements.values()) else VERIFIED


def not_available(channel: str, account_type: str) -> str:
    """Undocumented: the 400 text for a channel ``account_type`` does not verify."""
    return f"{channel.upper()} verification is not available for {account_type} accounts"


def verify_first(before: str, channel: str) -> str:
    """Undocumented: the 422 text for ``channel`` requested before ``before`` is verified."""
    return f"{LABELS[before]} must be verified before {LABELS[channel].lower()}"
