"""
Errors raised by the sFOX provider.

Every error carries the HTTP status (``None`` when no response arrived) and sFOX's own
``{"error": "..."}`` message, truncated and scrubbed of the API token, e-mail addresses and
phone numbers, so it is safe to log and to show in the Airflow UI. The tree lets a caller
tell apart what to fix (auth, input), what to skip (already verified, not found) and what
to retry later (rate limited, server unavailable)::

    SfoxError
    ├── SfoxConfigError            the Airflow connection is unusable (no token, plain http, ...)
    ├── SfoxAuthError              401 / 403
    ├── SfoxNotFoundError          404
    ├── SfoxInvalidRequestError    400, 405, 406, 409, other 4xx and 422
    │   └── SfoxAlreadyVerifiedError   422 "... already verified"
    ├── SfoxRateLimitError         429 (retryable)
    ├── SfoxRateBudgetError        the shared rate budget's backend is unreachable (retryable)
    │   └── SfoxHeldError          an operator holds the budget scope (the emergency stop)
    ├── SfoxServerError            5xx (retryable)
    │   └── SfoxConnectionError    no response: connection refused / reset, timeout
    ├── SfoxStreamInterruptedError a streamed list broke off mid-body (retryable, by the caller)
    └── SfoxPaginationError        a list's next page loops or leaves the connection's host
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow_sfox._compat import AirflowException

if TYPE_CHECKING:
    from datetime import datetime

#: Longest sFOX message kept in an exception; error bodies are short, anything longer is noise.
MAX_MESSAGE_LENGTH = 200

_EMAIL_RE = re.compile(r"[^\s@\"'<>]+@[^\s@\"'<>]+")
# A run of 7+ digits, optionally with +, spaces, dashes, dots or brackets between them.
_PHONE_RE = re.compile(r"\+?\d(?:[\s\-.()]*\d){6,}")


def scrub(text: str, *, secrets: tuple[str, ...] = (), limit: int = MAX_MESSAGE_LENGTH) -> str:
    """
    Make a server-supplied message safe to log: no secrets, e-mails or phone numbers.

    :param text: the message as received.
    :param secrets: literal values to hide (the API token).
    :param limit: maximum length of the result.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _EMAIL_RE.sub("<email>", text)
    text = _PHONE_RE.sub("<phone>", text)
    text = " ".join(text.split())  # no newlines or control characters in a one-line message
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


class SfoxError(AirflowException):
    """
    Base class of every error of the sFOX provider.

    :param message: sFOX's error message (or ours, when no response arrived).
    :param status_code: the HTTP status, ``None`` when no response arrived.
    :param method: the HTTP method of the failed request.
    :param path: the URL path of the failed request (no host, no query).
    """

    #: Whether trying the same request again later may succeed.
    retryable: bool = False
    #: The HTTP status of sFOX's answer; ``None`` when no answer arrived.
    status_code: int | None  # type: ignore[assignment]  # AirflowException declares an HTTPStatus

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        #: HTTP requests made before giving up (set by the hook).
        self.attempts = 1
        #: Whether an attempt may have reached sFOX unanswered (a code may have been sent).
        self.uncertain = False
        #: Each HTTP request made, in order (the hook's ``Attempt`` records; set by the hook).
        self.trail: tuple[Any, ...] = ()
        self.method = method
        self.path = path
        #: The Airflow connection the request used (set by the hook).
        self.conn_id: str | None = None
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"sFOX {self.method} {self.path}" if self.method and self.path else "sFOX"
        status = f"HTTP {self.status_code}" if self.status_code is not None else "no response"
        through = f" through connection {self.conn_id!r}" if self.conn_id else ""
        return f"{where} failed ({status}){through}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling; Airflow pickles
        # exceptions across processes.
        return (
            _rebuild,
            (type(self), self.message, self.status_code, self.method, self.path, self.conn_id),
            {"attempts": self.attempts, "uncertain": self.uncertain, "trail": self.trail},
        )


def _rebuild(
    cls: type[SfoxError],
    message: str,
    status_code: int | None,
    method: str | None,
    path: str | None,
    conn_id: str | None = None,
) -> SfoxError:
    error = cls(message, status_code=status_code, method=method, path=path)
    error.conn_id = conn_id
    return error


class SfoxConfigError(SfoxError):
    """The Airflow connection cannot be used as it is (missing token, plain http, bad extra)."""

    def __str__(self) -> str:
        return self.message


class SfoxAuthError(SfoxError):
    """401 or 403: the token is missing, wrong, revoked, or not allowed on this endpoint."""


class SfoxNotFoundError(SfoxError):
    """404: sFOX does not know this user (or route)."""


class SfoxInvalidRequestError(SfoxError):
    """sFOX refused the request as invalid (400, 405, 406, 409, 422 and other 4xx)."""


class SfoxAlreadyVerifiedError(SfoxInvalidRequestError):
    """422: the channel (email or phone) is already verified; nothing to send."""


class SfoxRateLimitError(SfoxError):
    """429: sFOX's rate limit was hit and the retry budget ran out while waiting."""

    retryable = True


class SfoxRateBudgetError(SfoxError):
    """
    The shared rate budget's backend (the ``local`` folder, the ``redis`` server) cannot be
    used: the request was not sent (never unpaced). A retry of the task resumes once it is back.
    """

    retryable = True

    def __str__(self) -> str:
        return self.message


class SfoxHeldError(SfoxRateBudgetError):
    """
    An operator holds every sender of the budget scope (one egress IP): the request was not
    sent. Like any budget error the work stops and stays queued; a retry of the task (or the
    next run) resumes once the hold is released or ends.

    :param until: when the hold ends (UTC); ``None``: until released.
    :param scope: the budget scope held.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        method: str | None = None,
        path: str | None = None,
        until: datetime | None = None,
        scope: str | None = None,
    ) -> None:
        self.until = until
        self.scope = scope
        super().__init__(message, status_code=status_code, method=method, path=path)

    def __reduce__(self) -> tuple[object, ...]:
        rebuild, args, state = super().__reduce__()
        assert isinstance(state, dict)
        return (rebuild, args, {**state, "until": self.until, "scope": self.scope})


class SfoxServerError(SfoxError):
    """5xx: sFOX had an internal error or is in maintenance."""

    retryable = True


class SfoxConnectionError(SfoxServerError):
    """No response at all: connection refused or reset, or a timeout."""


class SfoxStreamInterruptedError(SfoxError):
    """
    A streamed answer (the user list) broke off after its body had started: the connection was
    lost, a read timed out, or the body ended before its JSON did.

    The hook never retries it: the items read before the break were already handed to the
    caller, and a retry would hand them again. Retryable by the caller, from the start.
    """

    retryable = True


class SfoxPaginationError(SfoxError):
    """A paginated list names the same next page twice (a loop), or a page on another host."""


def error_for_status(
    status_code: int, message: str, *, method: str | None = None, path: str | None = None
) -> SfoxError:
    """
    Build the typed error for an HTTP error status.

    :param status_code: the HTTP status of the response (4xx or 5xx).
    :param message: sFOX's error message, already scrubbed.
    :param method: the HTTP method of the request.
    :param path: the URL path of the request.
    """
    cls: type[SfoxError]
    if status_code in (401, 403):
        cls = SfoxAuthError
    elif status_code == 404:
        cls = SfoxNotFoundError
    elif status_code == 429:
        cls = SfoxRateLimitError
    elif status_code >= 500:
        cls = SfoxServerError
    elif status_code == 422 and _is_already_verified(message):
        cls = SfoxAlreadyVerifiedError
    else:
        cls = SfoxInvalidRequestError
    return cls(message, status_code=status_code, method=method, path=path)


# Documented texts: "Email already verified", "Phone number has already been verified".
# Anchored, so "Email must be already verified" is not taken for success.
_ALREADY_VERIFIED = re.compile(
    r"^\s*(e-?mail|phone(\s+number)?)\s+(has\s+)?already\s+(been\s+)?verified\b", re.IGNORECASE
)


def _is_already_verified(message: str) -> bool:
    return bool(_ALREADY_VERIFIED.match(message))
