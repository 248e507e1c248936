"""
What one API call of :class:`~airflow_sfox.hooks.sfox.SfoxConnectHook` sends, records and how it
decides to retry: the user id as a path segment, results, per-request attempts, counters,
``Retry-After``, error kinds and the answer's payload.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from urllib3.exceptions import NewConnectionError

from airflow_sfox.exceptions import SfoxError, SfoxHeldError, SfoxRateBudgetError, SfoxRateLimitError, scrub

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from airflow_sfox.ratelimit import BudgetHeld, BudgetUnavailable, Waited

VERIFICATION_TYPES: tuple[str, ...] = ("email", "sms")
#: Longest single back-off between two retries of a 5xx or a connection error.
MAX_BACKOFF_SECONDS = 30.0
#: Longest Retry-After honoured; sFOX documents a 60 s block.
MAX_RETRY_AFTER_SECONDS = 3600.0
BASE_BACKOFF_SECONDS = 0.5


@dataclass(frozen=True)
class SfoxResult:
    """
    The outcome of one API call, retries included.

    :param data: the ``data`` of sFOX's JSON envelope.
    :param status_code: the HTTP status of the final answer.
    :param attempts: HTTP requests made for this call (1 plus retries).
    :param uncertain: an earlier attempt of this POST may have reached sFOX without us seeing
        the answer (a read timeout or a connection lost after sending): sFOX may have sent an
        extra code.
    :param trail: each HTTP request of the call, in order (the last one gave ``status_code``).
    """

    data: Any
    status_code: int
    attempts: int = 1
    uncertain: bool = False
    trail: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """
    One HTTP request of an API call, for callers that keep a per-request history.

    :param at: when it was sent (UTC).
    :param status: the HTTP status of its answer; ``None``: no answer arrived.
    :param error: why it did not succeed (no personal data, never the token); ``None`` for a 2xx.
    :param uncertain: it may have reached sFOX although no answer arrived.
    """

    at: datetime
    status: int | None
    error: str | None = None
    uncertain: bool = False


@dataclass
class Call:
    """
    The state of one API call across its retries.

    :param conn_id: the Airflow connection it goes through.
    :param method: the HTTP method.
    :param path: the URL path (no host, no query).
    :param deadline: clock time after which no retry starts.
    """

    conn_id: str
    method: str
    path: str
    deadline: float
    attempt: int = 0
    uncertain: bool = False
    trail: list[Attempt] = field(default_factory=list)

    def result(self, data: Any, status_code: int) -> SfoxResult:
        """The call's result, its attempts recorded."""
        return SfoxResult(data, status_code, self.attempt, self.uncertain, tuple(self.trail))

    def failed(self, error: SfoxError) -> SfoxError:
        """``error``, carrying the attempts made (as :class:`SfoxResult` does)."""
        error.attempts, error.uncertain, error.trail = self.attempt, self.uncertain, tuple(self.trail)
        return error

    def paused_too_long(self, seconds: float) -> SfoxRateLimitError:
        """The error of a 429 pause that lasts past the retry budget (nothing sent)."""
        return SfoxRateLimitError(
            f"sFOX rate limit: requests are paused for another {seconds:.0f} s, past the retry budget",
            status_code=429,
            method=self.method,
            path=self.path,
        )

    def budget_unavailable(self, err: BudgetUnavailable) -> SfoxRateBudgetError:
        """The error of a budget backend that cannot be used (nothing sent)."""
        return SfoxRateBudgetError(
            f"sFOX rate budget of connection {self.conn_id!r}: {err}; the request was not sent "
            "(never unpaced). A retry of the task resumes once the backend is back.",
            method=self.method,
            path=self.path,
        )

    def held(self, err: BudgetHeld) -> SfoxHeldError:
        """The error of a scope an operator holds (nothing sent)."""
        hold = err.hold
        until = hold.until.isoformat() if hold.until else "released"
        return SfoxHeldError(
            f"sFOX sends through connection {self.conn_id!r} are held by an operator (scope "
            f"{hold.scope!r}) until {until}: {hold.reason}. The request was not sent; release with "
            f"`python -m airflow_sfox release --conn-id {self.conn_id}`.",
            method=self.method,
            path=self.path,
            until=hold.until,
            scope=hold.scope,
        )


@dataclass
class RequestStats:
    """
    Counters of the HTTP requests of one hook, all threads together (thread-safe), and the
    seconds its threads waited (summed over threads) for the rate budget and for 429 pauses.
    """

    requests: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    budget_wait_seconds: float = 0.0
    pause_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, *, status: int | None) -> None:
        """Count one request, by its HTTP status (``None``: no answer)."""
        with self._lock:
            self.requests += 1
            if status is None:
                self.connection_errors += 1
            elif status == 429:
                self.rate_limited += 1
            elif status >= 500:
                self.server_errors += 1

    def count_wait(self, waited: Waited) -> None:
        """Add the seconds one request waited for the budget and for a 429 pause."""
        if waited.budget_seconds or waited.pause_seconds:
            with self._lock:
                self.budget_wait_seconds += waited.budget_seconds
                self.pause_seconds += waited.pause_seconds

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        with self._lock:
            return {
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "server_errors": self.server_errors,
                "connection_errors": self.connection_errors,
                "budget_wait_seconds": round(self.budget_wait_seconds, 3),
                "pause_seconds": round(self.pause_seconds, 3),
            }


def retry_after(value: str | None) -> float | None:
    """Parse a Retry-After header (delta-seconds or an HTTP date) into seconds, if valid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def is_transient(err: requests.RequestException) -> bool:
    """Whether a request error may pass on a retry (a network hiccup, not a TLS or URL error)."""
    if isinstance(err, requests.exceptions.SSLError):
        return False
    return isinstance(
        err, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    )


def may_have_been_processed(err: requests.RequestException) -> bool:
    """Whether a failed request may have reached the server (not a failure to connect)."""
    if isinstance(err, requests.ConnectTimeout):
        return False
    if isinstance(err, requests.ReadTimeout):
        return True
    reason = err.args[0] if err.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return not isinstance(reason, NewConnectionError)


_NOT_JSON = object()


def payload(response: requests.Response, method: str, path: str) -> Any:
    """The ``data`` of a 2xx answer's JSON envelope (the body itself when it has none)."""
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        body = _NOT_JSON
    if body is _NOT_JSON:
        # Raised outside the except block: the decode error holds the whole body (PII).
        raise SfoxError("response is not JSON", status_code=response.status_code, method=method, path=path)
    if isinstance(body, dict) and "data" in body:
        return body["data"]
    return body


def error_message(response: requests.Response, secrets: tuple[str, ...]) -> str:
    """sFOX's error message of a 4xx or 5xx answer, scrubbed of ``secrets`` and personal data."""
    message: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("error") or body.get("message")
    if not isinstance(message, str) or not message:
        message = response.reason or "no error message"
    return scrub(message, secrets=secrets)


def count_stream(items: Iterator[Any], limit: int) -> tuple[int, bool, bool]:
    """
    Count a generator's items up to ``limit`` without keeping them: the count, whether it
    ended, and whether its return value (a next page) is set.
    """
    count = 0
    while count < limit:
        try:
            next(items)
        except StopIteration as end:
            return count, True, end.value is not None
        count += 1
    return count, False, False


def elapsed(response: requests.Response) -> float:
    """Seconds from sending the request to its answer's headers."""
    took = getattr(response, "elapsed", None)
    return took.total_seconds() if took is not None else 0.0


def as_dict(data: Any) -> dict[str, Any]:
    """sFOX's ``data`` when it is an object; ``{}`` for an empty or unexpected payload."""
    return data if isinstance(data, dict) else {}


def check_verification_type(verification_type: str) -> str:
    if verification_type not in VERIFICATION_TYPES:
        raise ValueError(f"verification_type must be 'email' or 'sms', got {verification_type!r}")
    return verification_type


def user_id_segment(user_id: str) -> str:
    """
    Validate a ``user_id`` and percent-encode it as exactly one URL path segment.

    Every reserved character (``/ ? # %`` and the rest) and every non-ASCII character is
    encoded. ``.`` and ``..`` are refused: ``requests`` sends ``%2E`` as ``.``, and servers and
    CDNs resolve dot segments, so no encoding keeps them from changing the path.

    :param user_id: the partner's id of the user.
    :raises ValueError: not a string, empty, ``.`` or ``..``, or containing control characters.
    """
    if not isinstance(user_id, str):
        raise ValueError(f"user_id must be a string, got {type(user_id).__name__}")
    if not user_id:
        raise ValueError("user_id must not be empty")
    if user_id in (".", ".."):
        raise ValueError(f"user_id {user_id!r} cannot be sent: it is a relative URL path segment")
    if any(unicodedata.category(char) == "Cc" for char in user_id):
        raise ValueError("user_id must not contain control characters")
    return quote(user_id, safe="")
