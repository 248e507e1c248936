"""What an emulated sFOX call answers: a result, an sFOX-style error, or a cut-off stream.

Also the checks of request body fields shared by the emulated routes (their 400 texts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sfox_sandbox.model import CHANNELS

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping


class StreamCut(Exception):
    """Raised by a streamed body to make the server reset the connection there (a fault)."""


class ApiError(Exception):
    """An sFOX-style error answer: HTTP ``status`` and ``{"error": message}``.

    :param status: HTTP status code.
    :param message: text of the ``error`` key.
    :param fault: the name the journal gives the answer when it is an injected fault (for
        example ``unprocessable``, a 422 text chosen from the admin API).
    """

    def __init__(self, status: int, message: str, *, fault: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fault = fault


@dataclass
class ApiResult:
    """Outcome of one emulated sFOX call: status, JSON body and journal facts."""

    status: int
    body: dict[str, Any]
    code_sent: bool = False
    # Channel of the code sent, when the request body does not name it (register-account).
    channel: str | None = None
    # A body produced in pieces (the user list), sent instead of ``body``.
    stream: Iterator[bytes] | None = None
    # A fault chosen for this answer after the call was carried out (a register fault):
    # ``register_lost`` resets the connection unanswered; ``delay`` holds the answer back.
    fault: str | None = None
    delay: float = 0.0


def required_str(body: Mapping[str, Any], key: str) -> str:
    """The non-blank string ``body[key]``; :class:`ApiError` 400 otherwise."""
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{key} is required")
    return value


def must_be(name: str, choices: Iterable[str]) -> str:
    """``Invalid <name>: must be "a" or "b"``."""
    return f"Invalid {name}: must be " + " or ".join(f'"{choice}"' for choice in choices)


def channel_of(body: Mapping[str, Any]) -> str:
    """The ``type`` of a send or verify body; :class:`ApiError` 400 when it is no channel."""
    channel = body.get("type")
    if not isinstance(channel, str) or channel not in CHANNELS:
        raise ApiError(400, must_be("type", CHANNELS))
    return channel
