"""
Hook for the sFOX Connect (enterprise) End Users API.

One :class:`SfoxConnectHook` owns one :class:`requests.Session` (a connection pool sized for
concurrent use) and the retry policy, and asks the shared rate budget
(:mod:`airflow_sfox.ratelimit`) before every request: one window-exact budget and one 429
pause for every hook, thread and process behind one egress address. It is safe to share one
hook between the threads of a pool.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import ipaddress
import itertools
import logging
import math
import random
import threading
import time
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

import ijson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from airflow_sfox import __version__
from airflow_sfox._compat import BaseHook, mask_secret
from airflow_sfox.exceptions import (
    SfoxConfigError,
    SfoxConnectionError,
    SfoxError,
    SfoxPaginationError,
    SfoxRateBudgetError,
    SfoxRateLimitError,
    SfoxStreamInterruptedError,
    error_for_status,
    scrub,
)
from airflow_sfox.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_sfox.ratelimit import (
    BACKENDS,
    DEFAULT_DIR,
    SFOX_LIMIT_REQUESTS,
    SFOX_LIMIT_WINDOW_SECONDS,
    Budget,
    BudgetBackend,
    BudgetUnavailable,
    MemoryBackend,
    PauseTooLong,
    RateBudget,
    RedisBackend,
    SqliteBackend,
    Waited,
    budget_from_rate,
    local_backend,
    redis_client_from_connection,
)

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from types import TracebackType

    from airflow.sdk import Connection

VerificationType = Literal["email", "sms"]
VERIFICATION_TYPES: tuple[str, ...] = ("email", "sms")
ACCOUNT_ROLES: tuple[str, ...] = ("client", "advisor")

DEFAULT_BASE_URL = "https://api.sfox.com"
#: Defaults of the connection extras, taken from the form definition so the two never drift.
EXTRA_DEFAULTS: dict[str, Any] = {name: field["schema"]["default"] for name, field in CONN_FIELDS.items()}
#: Threads that may share one hook without waiting for a pooled connection.
DEFAULT_POOL_SIZE = 32  # as many as a chunk task's most threads (sender.MAX_THREADS)
#: Longest single back-off between two retries of a 5xx or a connection error.
MAX_BACKOFF_SECONDS = 30.0
#: Longest Retry-After honoured; sFOX documents a 60 s block.
MAX_RETRY_AFTER_SECONDS = 3600.0
BASE_BACKOFF_SECONDS = 0.5

USERS_PATH = "/v1/enterprise/users"
#: Keys of the top-level object of a user-list answer that name its next page. sFOX documents no
#: pagination; these are read when present, in this order. Their value is a URL on the
#: connection's host or a path (``/v1/enterprise/users?cursor=...``); a value that is neither is
#: taken as a cursor.
NEXT_URL_KEYS: tuple[str, ...] = ("next", "next_url", "links.next")
#: Keys whose value is a cursor, sent back as the ``cursor`` query parameter (after the URL keys).
NEXT_CURSOR_KEYS: tuple[str, ...] = ("next_cursor", "cursor", "meta.next_cursor", "pagination.next_cursor")
#: The query parameter a cursor is sent back in.
CURSOR_PARAM = "cursor"
#: Bytes asked of the socket per read while a user list streams.
STREAM_CHUNK_BYTES = 64 * 1024
#: Users ``test_connection`` counts at most before it stops reading the list.
TEST_CONNECTION_MAX_COUNT = 1000


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


class RequestPacer:
    """
    Thread-safe pacing of requests at a steady rate, with a pause after a 429, in one process.

    Deprecated: the hook no longer uses it; it asks the shared, window-exact
    :class:`airflow_sfox.ratelimit.RateBudget` instead. Kept for callers of the old API.

    Pacing is a virtual-scheduling token bucket (GCRA): request *n* may start no earlier than
    ``n / rate`` after the first, with at most ``burst`` requests ahead of that schedule. With
    the default burst of 1, any window of ``w`` seconds holds at most ``rate * w + 1`` requests,
    so a budget of 20/s keeps every 10-s window at 201, under sFOX's 250. A full-window burst
    (as a plain token bucket of capacity 250 would allow) could let ~500 through in 10 s.

    :param rate: requests per second; ``0`` disables pacing (pauses still apply).
    :param burst: how many requests may go out back to back.
    :param clock: monotonic clock, injectable for tests.
    :param sleep: sleep function, injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = rate
        self._interval = 1.0 / rate if rate else 0.0
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start = 0.0  # theoretical start time of the next request
        self._paused_until = 0.0

    def wait(self, deadline: float | None = None) -> float:
        """
        Block until the caller may send one request; return the seconds waited.

        :param deadline: clock time after which the caller gives up: a pause that lasts past
            it raises :class:`PauseTooLong` at once instead of sleeping.
        """
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                pause = self._paused_until - now
                if pause > 0 and deadline is not None and self._paused_until > deadline:
                    raise PauseTooLong(pause)
                if pause <= 0:
                    scheduled = max(self._next_start, now)
                    start = max(now, scheduled - self._tolerance)
                    self._next_start = scheduled + self._interval
            if pause > 0:
                self._sleep(pause)
                waited += pause
                continue
            delay = start - now
            if delay > 0:
                self._sleep(delay)
                waited += delay
                # A 429 seen by another thread while we slept pauses this request too.
                with self._lock:
                    if self._paused_until > self._clock():
                        continue
            return waited

    def pause(self, seconds: float) -> None:
        """Hold every request of every thread for ``seconds`` from now (never shortens a pause)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())


class SfoxConnectHook(BaseHook):
    """
    Interact with the sFOX Connect (enterprise) API.

    The connection's host holds the base URL with its scheme (``https://api.sfox.com``; plain
    ``http`` only for loopback hosts such as the local sandbox), the password the partner's
    Enterprise API token. Extras (all optional): ``timeout``, ``connect_timeout``,
    ``max_retry_seconds``, ``rate_limit_pause_seconds`` and the rate budget's
    ``rate_limit_requests``, ``rate_limit_window_seconds``, ``rate_limit_scope``,
    ``rate_limit_backend``, ``rate_limit_dir``, ``rate_limit_redis_conn_id`` (and the deprecated
    ``requests_per_second``); see :data:`airflow_sfox.get_provider_info.CONN_FIELDS`.

    Every request first asks the shared rate budget (:mod:`airflow_sfox.ratelimit`): at most
    N starts in any W seconds for all hooks, threads and processes of one scope, and the first
    429 anywhere pauses them all. Budget resolution: the ``requests_per_second`` argument if
    given; else ``rate_limit_requests`` / ``rate_limit_window_seconds`` if either is set; else
    the deprecated ``requests_per_second`` extra, as ``ceil(10 * rps)`` per 10 s; else 200 per
    10 s. A budget that may put more than sFOX's 250 requests in one 10-s window is refused.

    Nothing is fetched in ``__init__``: the connection is read once, on the first request.

    :param sfox_conn_id: the Airflow connection id.
    :param timeout: read timeout in seconds; overrides the ``timeout`` extra.
    :param requests_per_second: request budget as a rate, ``ceil(10 * value)`` per 10 s;
        overrides the connection's budget. Deprecated.
    :param max_retry_seconds: retry budget of one call; overrides the ``max_retry_seconds`` extra.
    :param rate_share: deprecated and ignored: every hook of a scope now shares one budget, so
        parallel tasks need no static split. Still checked to be in (0, 1].
    :param pool_size: connections kept open for concurrent threads.
    :param request_log_level: level of the one log line per request (``logging.DEBUG`` in batch
        tasks, whose logs report progress instead; retries and failures log at WARNING).
    :param clock: monotonic clock, injectable for tests. A hook given its own clock keeps its
        budget in memory (``memory`` backend) unless the connection names a backend: a budget
        shared between processes needs a clock they all share.
    :param sleep: sleep function, injectable for tests.
    :param rng: random source of the back-off jitter, injectable for tests.
    """

    conn_name_attr = "sfox_conn_id"
    default_conn_name = "sfox_default"
    conn_type = "sfox"
    hook_name = "sFOX Connect"

    def __init__(
        self,
        *,
        sfox_conn_id: str = default_conn_name,
        timeout: float | None = None,
        requests_per_second: float | None = None,
        max_retry_seconds: float | None = None,
        rate_share: float = 1.0,
        pool_size: int = DEFAULT_POOL_SIZE,
        request_log_level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.sfox_conn_id = sfox_conn_id
        self._overrides = {
            "timeout": timeout,
            "requests_per_second": requests_per_second,
            "max_retry_seconds": max_retry_seconds,
        }
        if not 0 < rate_share <= 1:
            raise ValueError(f"rate_share must be in (0, 1], got {rate_share!r}")
        if rate_share != 1:
            warnings.warn(
                "SfoxConnectHook(rate_share=...) is deprecated and ignored: every hook of a scope "
                "shares one rate budget (see the rate_limit_* connection extras).",
                DeprecationWarning,
                stacklevel=2,
            )
        self.rate_share = rate_share
        self.pool_size = pool_size
        self.request_log_level = request_log_level
        self.stats = RequestStats()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._init_lock = threading.Lock()
        self._config: _HookConfig | None = None
        self._session: requests.Session | None = None
        self._budget: RateBudget | None = None  # set with the config: it needs the connection

    # --- connection and configuration -------------------------------------------------------

    @property
    def config(self) -> _HookConfig:
        """The hook's settings, read from the Airflow connection once, on first use."""
        if self._config is None:
            # Threads of one pool share the hook: fetch the connection only once.
            with self._init_lock:
                if self._config is None:
                    conn = self.get_connection(self.sfox_conn_id)
                    config = _HookConfig.from_connection(conn, self._overrides)
                    backend = self._budget_backend(config)
                    self._budget = RateBudget(
                        backend, config.rate_limit_scope, config.budget, clock=self._clock, sleep=self._sleep
                    )
                    self._config = config
        return self._config

    def _budget_backend(self, config: _HookConfig) -> BudgetBackend:
        """The backend named by the connection (or ``memory`` for a hook on its own clock)."""
        name = config.rate_limit_backend
        if name is None:
            name = "local" if self._clock is time.monotonic else "memory"
        if name == "memory":
            return MemoryBackend(self._clock)
        if name == "local":
            folder = config.rate_limit_dir or DEFAULT_DIR
            if self._clock is time.monotonic:
                return local_backend(folder)  # one SQLite connection per scope and process
            return SqliteBackend(folder, clock=self._clock)
        redis_conn_id = config.rate_limit_redis_conn_id
        try:
            import redis  # noqa: F401 - an optional dependency
        except ImportError:
            raise SfoxConfigError(
                f"Connection {self.sfox_conn_id!r}: rate_limit_backend 'redis' needs the redis package: "
                "pip install 'airflow-provider-sfox[redis]'."
            ) from None
        try:
            redis_conn = self.get_connection(redis_conn_id)
            client = redis_client_from_connection(redis_conn)
        except Exception as err:  # noqa: BLE001 - not found, bad URI, ...: all fail closed
            raise SfoxRateBudgetError(
                f"sFOX rate budget of connection {self.sfox_conn_id!r}: the 'redis' backend's Airflow "
                f"connection {redis_conn_id!r} cannot be read ({type(err).__name__}); no request was sent."
            ) from None
        address = f"{redis_conn.host or 'localhost'}:{redis_conn.port or 6379}"
        where = f"Airflow connection {redis_conn_id!r}, {address}"
        return RedisBackend(client, where)

    @property
    def budget(self) -> RateBudget:
        """The shared rate budget this hook asks before every request (reads the connection)."""
        if self._budget is None:
            _ = self.config
        assert self._budget is not None
        return self._budget

    @property
    def pacer(self) -> RateBudget:
        """Deprecated alias of :attr:`budget` (it has the old pacer's ``wait``/``pause``)."""
        return self.budget

    @property
    def pacer_rate(self) -> float:
        """
        The rate budget as requests per second, N / W (0: no client-side budget), shared by
        every hook of the scope: size thread pools by it. ``rate_share`` no longer divides it.
        """
        return self.budget.rate

    @property
    def base_url(self) -> str:
        """The base URL requests go to, from the connection's host."""
        return self.config.base_url

    @property
    def session(self) -> requests.Session:
        """The one HTTP session of this hook, created on first use."""
        if self._session is None:
            config = self.config
            with self._init_lock:
                if self._session is None:
                    session = requests.Session()
                    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size, max_retries=0)
                    session.mount("https://", adapter)
                    session.mount("http://", adapter)
                    session.headers.update(
                        {
                            "Authorization": f"Bearer {config.token}",
                            "Accept": "application/json",
                            "User-Agent": f"airflow-provider-sfox/{__version__}",
                        }
                    )
                    self._session = session
        return self._session

    def get_conn(self) -> requests.Session:
        """Return the hook's :class:`requests.Session` (Airflow's hook convention)."""
        return self.session

    def close(self) -> None:
        """Close the HTTP session and its pooled connections; the hook may be used again."""
        with self._init_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> SfoxConnectHook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- endpoints ---------------------------------------------------------------------------

    def send_verification(self, user_id: str, verification_type: str) -> dict[str, Any]:
        """
        Ask sFOX to send a one-time code to the user's email or phone.

        ``POST /v1/enterprise/users/send-verification/{user_id}``. Not idempotent: a retried
        request whose first answer was lost may send a second code.

        :param user_id: the partner's id of the user.
        :param verification_type: ``"email"`` or ``"sms"``.
        :return: sFOX's ``data``: ``user_id``, ``type`` and the email or ``phone_number``.
        :raises SfoxAlreadyVerifiedError: the channel is already verified (422).
        """
        return _as_dict(self.send_verification_result(user_id, verification_type).data)

    def send_verification_result(self, user_id: str, verification_type: str) -> SfoxResult:
        """
        Like :meth:`send_verification`, with the attempts made and whether a code may have
        been sent twice (see :class:`SfoxResult`); for callers that keep a ledger.

        :param user_id: the partner's id of the user.
        :param verification_type: ``"email"`` or ``"sms"``.
        """
        kind = _check_verification_type(verification_type)
        path = f"/v1/enterprise/users/send-verification/{user_id_segment(user_id)}"
        return self._call("POST", path, json={"type": kind})

    def confirm_verification(self, user_id: str, verification_type: str, otp: str) -> dict[str, Any]:
        """
        Submit the one-time code the user received.

        ``POST /v1/enterprise/users/verify/{user_id}``.

        :param user_id: the partner's id of the user.
        :param verification_type: ``"email"`` or ``"sms"``.
        :param otp: the 6-digit code.
        """
        kind = _check_verification_type(verification_type)
        path = f"/v1/enterprise/users/verify/{user_id_segment(user_id)}"
        return _as_dict(self._request("POST", path, json={"type": kind, "otp": str(otp)}))

    def get_user(self, user_id: str) -> dict[str, Any]:
        """
        Read one end user: ``GET /v1/enterprise/users/{user_id}``.

        :param user_id: the partner's id of the user.
        :raises SfoxNotFoundError: sFOX does not know the user.
        """
        return _as_dict(self._request("GET", f"/v1/enterprise/users/{user_id_segment(user_id)}"))

    def list_users(self, account_role: str | None = None) -> list[dict[str, Any]]:
        """
        Read every end user of the partner into one list: ``GET /v1/enterprise/users``.

        Loads everything in memory (about 1.5 KB a user): for large partners use
        :meth:`iter_users`, which this wraps.

        :param account_role: ``"client"`` or ``"advisor"`` to filter; ``None`` for all.
        :raises SfoxStreamInterruptedError: the list broke off mid-body (see :meth:`iter_users`).
        """
        return list(self.iter_users(account_role))

    def iter_users(self, account_role: str | None = None) -> Iterator[dict[str, Any]]:
        """
        Stream every end user of the partner, one user object at a time.

        ``GET /v1/enterprise/users`` is sent with ``stream=True`` and its body parsed
        incrementally (``ijson``, the ``data.item`` objects), so memory does not grow with the
        number of users. Each request goes through the hook's normal path: auth, pacing (one
        request counts once in the budget), retries and typed errors *before* the body starts
        (a 401 raises :class:`SfoxAuthError`, a 5xx is retried, then :class:`SfoxServerError`).

        Pagination is not documented by sFOX and never assumed; when a page's top-level object
        names a next page (before or after ``data``), it is fetched the same way until none is
        named: :data:`NEXT_URL_KEYS` (``next``, ``next_url``, ``links.next``: a URL on the
        connection's host or a path; any other string there is a cursor), then
        :data:`NEXT_CURSOR_KEYS` (``next_cursor``, ``cursor``, ``meta.next_cursor``,
        ``pagination.next_cursor``: sent back as ``?cursor=``, with the role filter).

        Nothing is retried once a body has started: a retry would yield the users already
        yielded a second time. A caller that needs the whole list starts again from scratch.

        :param account_role: ``"client"`` or ``"advisor"`` to filter; ``None`` for all.
        :raises ValueError: ``account_role`` is not ``"client"``, ``"advisor"`` or ``None``
            (at once, before any request).
        :raises SfoxStreamInterruptedError: the connection broke, a read timed out or the body
            ended before its JSON did, after some users were yielded (retryable, never by the
            hook itself).
        :raises SfoxPaginationError: a next page named twice (a loop) or on another host.
        :raises SfoxError: a body that is not JSON, and the typed errors of a failed request.
        """
        params = None
        if account_role is not None:
            if account_role not in ACCOUNT_ROLES:
                raise ValueError(f"account_role must be one of {ACCOUNT_ROLES}, got {account_role!r}")
            params = {"accountRole": account_role}
        return self._iter_user_pages(params)

    def _iter_user_pages(self, params: dict[str, str] | None) -> Iterator[dict[str, Any]]:
        with self._naming_the_connection():  # errors raised mid-stream too
            yield from self._user_pages(params)

    def _user_pages(self, params: dict[str, str] | None) -> Iterator[dict[str, Any]]:
        path, query = USERS_PATH, params
        seen: set[str] = set()
        while True:
            response = self._call("GET", path, params=query, stream=True).data
            try:
                following = yield from self._stream_users(response, path)
            finally:
                response.close()
            if following is None:
                return
            kind, value = following
            if value in seen:
                raise SfoxPaginationError(
                    f"the user list names the same next page twice ({kind} seen before): a loop",
                    method="GET",
                    path=path,
                )
            seen.add(value)
            if kind == "url":
                path, query = self._next_page_path(value, path)
            else:
                path, query = USERS_PATH, {**(params or {}), CURSOR_PARAM: value}

    def _next_page_path(self, url: str, path: str) -> tuple[str, dict[str, str]]:
        """A next-page URL or path as (path under the base URL, query); only on the base URL."""
        base = self.base_url
        full = urljoin(base + "/", url)
        parts, base_parts = urlsplit(full), urlsplit(base)
        same_origin = (parts.scheme, parts.netloc) == (base_parts.scheme, base_parts.netloc)
        if not same_origin or not (parts.path + "/").startswith(base_parts.path.rstrip("/") + "/"):
            # The token goes only to the connection's host.
            raise SfoxPaginationError(
                f"the user list's next page is not under {base}", method="GET", path=path
            )
        return parts.path[len(base_parts.path.rstrip("/")) :], dict(parse_qsl(parts.query))

    def _stream_users(
        self, response: requests.Response, path: str
    ) -> Generator[dict[str, Any], None, tuple[str, str] | None]:
        """Yield the users of one streamed page; return the next page it names (or ``None``)."""
        reader = _StreamReader(response)
        found: dict[str, Any] = {}

        def tap(event: tuple[str, str, Any]) -> tuple[str, str, Any]:
            # Top-level pagination keys, wherever they come (before or after "data").
            if event[0] in _PAGINATION_PREFIXES and event[1] in ("string", "number"):
                found.setdefault(event[0], event[2])
            return event

        count = 0
        try:
            events = ijson.parse(reader, use_float=True)
            first = next(events)
            prefix = "item" if first[1] == "start_array" else "data.item"  # a bare list, too
            for user in ijson.items(map(tap, itertools.chain([first], events)), prefix):
                if isinstance(user, dict):
                    count += 1
                    yield user
        except ijson.JSONError:
            if reader.eof and reader.received == 0:
                return None  # an empty body: no users, as before
            if reader.eof:
                raise SfoxStreamInterruptedError(
                    f"the body ended before its JSON did, after {count} users",
                    status_code=response.status_code,
                    method="GET",
                    path=path,
                ) from None
            # Never chain the parser's error: it quotes the body (PII).
            raise SfoxError(
                "response is not JSON", status_code=response.status_code, method="GET", path=path
            ) from None
        except requests.RequestException as err:
            raise SfoxStreamInterruptedError(
                f"{type(err).__name__} reading the body from {self.base_url}, after {count} users",
                status_code=response.status_code,
                method="GET",
                path=path,
            ) from None
        return _next_page(found)

    def create_user(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """
        Register an end user: ``POST /v1/enterprise/register-account``.

        :param payload: the documented body (``account_type``, ``user_id``, ``email``, ...).
        :return: sFOX's ``data`` (its shape is not documented; may be empty).
        """
        if not isinstance(payload, Mapping):
            raise TypeError(f"payload must be a mapping, got {type(payload).__name__}")
        return _as_dict(self._request("POST", "/v1/enterprise/register-account", json=dict(payload)))

    def test_connection(self) -> tuple[bool, str]:
        """
        Make one authenticated read, without retries; never raises.

        Streams the first page of ``GET /v1/enterprise/users`` and counts its users without
        keeping them, stopping after :data:`TEST_CONNECTION_MAX_COUNT` (the rest of the body is
        not read). Failure messages name the connection id.
        """
        try:
            response = self._call("GET", USERS_PATH, retry=False, stream=True).data
            try:
                counting = self._stream_users(response, USERS_PATH)
                count, complete, more_pages = 0, False, False
                while count < TEST_CONNECTION_MAX_COUNT:
                    try:
                        next(counting)
                    except StopIteration as end:
                        complete, more_pages = True, end.value is not None
                        break
                    count += 1
            finally:
                response.close()
        except Exception as err:  # noqa: BLE001 - a connection test reports, it never raises
            if isinstance(err, SfoxError):
                message = str(err)
            else:
                message = f"{type(err).__name__}: {scrub(str(err), secrets=self._secrets())}"
            if repr(self.sfox_conn_id) not in message:
                message = f"Connection {self.sfox_conn_id!r}: {message}"
            return False, message
        if not complete:
            seen = f"at least {count} end users visible (stopped counting)"
        elif more_pages:
            seen = f"{count} end users on the first page, more pages follow"
        else:
            seen = f"{count} end users visible"
        return True, f"Connected to {self.base_url} as the partner: {seen}."

    # --- transport ---------------------------------------------------------------------------

    def _secrets(self) -> tuple[str, ...]:
        return (self._config.token,) if self._config else ()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one API call (see :meth:`_call`); return the ``data`` of its JSON envelope."""
        return self._call(method, path, **kwargs).data

    @contextlib.contextmanager
    def _naming_the_connection(self) -> Iterator[None]:
        """Every error of a request names the Airflow connection it used (config errors already do)."""
        try:
            yield
        except SfoxError as error:
            if error.conn_id is None and not isinstance(error, SfoxConfigError):
                error.conn_id = self.sfox_conn_id
            raise

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        retry: bool = True,
        stream: bool = False,
    ) -> SfoxResult:
        """:meth:`_send`, its errors naming the connection."""
        with self._naming_the_connection():
            return self._send(method, path, json=json, params=params, retry=retry, stream=stream)

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        retry: bool = True,
        stream: bool = False,
    ) -> SfoxResult:
        """
        Send one API call with pacing and retries.

        5xx, connection errors and timeouts are retried with capped exponential back-off and
        full jitter; a 429 pauses every thread of the hook (``Retry-After``, else the configured
        pause) and is then retried. Both stop when the next wait would pass
        ``max_retry_seconds``. Other 4xx are raised at once. A raised :class:`SfoxError` carries
        ``attempts`` and ``uncertain`` like :class:`SfoxResult`.

        With ``stream=True`` a 2xx answer is not read: the result's ``data`` is the open
        :class:`requests.Response`, for the caller to read and close (see :meth:`iter_users`).
        """
        config = self.config
        session = self.session
        url = config.base_url + path
        deadline = self._clock() + config.max_retry_seconds
        attempt = 0
        uncertain = False
        trail: list[Attempt] = []

        def failed(error: SfoxError) -> SfoxError:
            error.attempts, error.uncertain, error.trail = attempt, uncertain, tuple(trail)
            return error

        while True:
            attempt += 1
            try:
                self.stats.count_wait(self.budget.wait(deadline))
            except PauseTooLong as err:
                attempt -= 1
                raise failed(self._rate_limit_error(method, path, err.seconds)) from None
            except BudgetUnavailable as err:
                attempt -= 1
                raise failed(self._budget_error(method, path, err)) from None
            started, sent_at = self._clock(), datetime.now(timezone.utc)
            try:
                response = session.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    timeout=config.timeouts,
                    allow_redirects=False,
                    stream=stream,
                )
            except requests.RequestException as err:
                lost = _is_transient(err) and method == "POST" and _may_have_been_processed(err)
                trail.append(Attempt(sent_at, None, type(err).__name__, lost))
                if not _is_transient(err):
                    # TLS failures, bad URLs, ...: retrying cannot help. Never echo str(err).
                    raise failed(
                        SfoxError(
                            f"{type(err).__name__} talking to {config.base_url}", method=method, path=path
                        )
                    ) from None
                self.stats.count(status=None)
                uncertain = uncertain or lost
                error: SfoxError = SfoxConnectionError(
                    f"{type(err).__name__} talking to {config.base_url}", method=method, path=path
                )
                self.log.warning("%s %s -> %s (attempt %d)", method, path, type(err).__name__, attempt)
                wait = self._backoff(attempt)
            else:
                self.stats.count(status=response.status_code)
                elapsed = self._clock() - started
                self.log.log(
                    self.request_log_level,
                    "%s %s -> %d (%.2f s)",
                    method,
                    path,
                    response.status_code,
                    elapsed,
                )
                if 200 <= response.status_code < 300:
                    try:
                        data = response if stream else self._payload(response, method, path)
                    except SfoxError as err:
                        trail.append(Attempt(sent_at, response.status_code, err.message))
                        raise failed(err) from None
                    trail.append(Attempt(sent_at, response.status_code))
                    return SfoxResult(data, response.status_code, attempt, uncertain, tuple(trail))
                if response.status_code < 400:  # 1xx, or a redirect we do not follow
                    trail.append(Attempt(sent_at, response.status_code, f"HTTP {response.status_code}"))
                    raise failed(
                        SfoxError(
                            f"unexpected HTTP {response.status_code}",
                            status_code=response.status_code,
                            method=method,
                            path=path,
                        )
                    )
                error = error_for_status(
                    response.status_code,
                    self._error_message(response),
                    method=method,
                    path=path,
                )
                trail.append(Attempt(sent_at, response.status_code, error.message[:255]))
                if response.status_code == 429:
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    wait = config.rate_limit_pause_seconds if retry_after is None else retry_after
                    # Every thread and process of the scope waits: sFOX blocks the whole IP.
                    try:
                        self.budget.pause(wait)
                    except BudgetUnavailable as err:
                        raise failed(self._budget_error(method, path, err)) from None
                else:
                    wait = self._backoff(attempt)
            if not (retry and error.retryable) or self._clock() + wait > deadline:
                if error.retryable and attempt > 1:
                    self.log.error("%s %s gave up after %d attempts", method, path, attempt)
                raise failed(error)
            self.log.info("%s %s: retrying in %.1f s", method, path, wait)
            if error.status_code != 429:
                self._sleep(wait)
            # after a 429 the budget holds this thread, and every other one, until the pause ends

    @staticmethod
    def _rate_limit_error(method: str, path: str, seconds: float) -> SfoxRateLimitError:
        return SfoxRateLimitError(
            f"sFOX rate limit: requests are paused for another {seconds:.0f} s, past the retry budget",
            status_code=429,
            method=method,
            path=path,
        )

    def _budget_error(self, method: str, path: str, err: BudgetUnavailable) -> SfoxRateBudgetError:
        return SfoxRateBudgetError(
            f"sFOX rate budget of connection {self.sfox_conn_id!r}: {err}; the request was not sent "
            "(never unpaced). A retry of the task resumes once the backend is back.",
            method=method,
            path=path,
        )

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential back-off: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        ceiling = min(MAX_BACKOFF_SECONDS, BASE_BACKOFF_SECONDS * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    def _payload(self, response: requests.Response, method: str, path: str) -> Any:
        if not response.content:
            return None
        try:
            body = response.json()
        except ValueError:
            body = _NOT_JSON
        if body is _NOT_JSON:
            # Raised outside the except block: the decode error holds the whole body (PII).
            raise SfoxError(
                "response is not JSON", status_code=response.status_code, method=method, path=path
            )
        if isinstance(body, dict) and "data" in body:
            return body["data"]
        return body

    def _error_message(self, response: requests.Response) -> str:
        message: Any = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            message = body.get("error") or body.get("message")
        if not isinstance(message, str) or not message:
            message = response.reason or "no error message"
        return scrub(message, secrets=self._secrets())

    # --- Airflow 3.1 connection form (3.2+ reads get_provider_info) ---------------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the extra fields of the connection form, for Airflow 3.1's UI."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField
        from wtforms.validators import Optional

        return {
            name: StringField(
                lazy_gettext(field["label"]),
                widget=BS3TextFieldWidget(),
                validators=[Optional()],
                description=field["description"]
                + ("" if field["schema"]["default"] is None else f" Default: {field['schema']['default']}."),
            )
            for name, field in CONN_FIELDS.items()
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the relabelling and hidden fields of the connection form, for Airflow 3.1's UI."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": {
                **UI_FIELD_BEHAVIOUR["placeholders"],
                **{
                    name: str(field["schema"]["default"])
                    for name, field in CONN_FIELDS.items()
                    if field["schema"]["default"] is not None
                },
            },
        }


class _HookConfig:
    """The validated settings of one hook, read once from its Airflow connection."""

    __slots__ = (
        "base_url",
        "budget",
        "max_retry_seconds",
        "rate_limit_backend",
        "rate_limit_dir",
        "rate_limit_pause_seconds",
        "rate_limit_redis_conn_id",
        "rate_limit_scope",
        "timeouts",
        "token",
    )

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeouts: tuple[float, float],
        budget: Budget | None,
        max_retry_seconds: float,
        rate_limit_pause_seconds: float,
        rate_limit_scope: str,
        rate_limit_backend: str | None = None,
        rate_limit_dir: str | None = None,
        rate_limit_redis_conn_id: str = "redis_default",
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.timeouts = timeouts
        self.budget = budget
        self.max_retry_seconds = max_retry_seconds
        self.rate_limit_pause_seconds = rate_limit_pause_seconds
        self.rate_limit_scope = rate_limit_scope
        self.rate_limit_backend = rate_limit_backend
        self.rate_limit_dir = rate_limit_dir
        self.rate_limit_redis_conn_id = rate_limit_redis_conn_id

    @property
    def requests_per_second(self) -> float:
        """The budget as a rate, N / W (0: no client-side budget); for older callers."""
        return self.budget.rate if self.budget else 0.0

    def __repr__(self) -> str:  # never show the token
        return f"_HookConfig(base_url={self.base_url!r}, token='***')"

    @classmethod
    def from_connection(cls, conn: Connection, overrides: Mapping[str, float | None]) -> _HookConfig:
        conn_id = conn.conn_id
        token = (conn.password or "").strip()
        if not token:
            raise SfoxConfigError(
                f"Connection {conn_id!r} has no Enterprise API token: set it as the connection's password."
            )
        if any(char.isspace() or unicodedata.category(char) == "Cc" for char in token):
            # requests would echo the whole header (token included) in its error message.
            raise SfoxConfigError(
                f"Connection {conn_id!r}: the Enterprise API token contains spaces or control characters."
            )
        mask_secret(token)
        extras = conn.extra_dejson or {}

        def given(name: str) -> Any:
            value = overrides.get(name)
            if value is None:
                value = extras.get(name)
            return None if value == "" else value

        def number(name: str) -> float:
            value = given(name)
            if value is None:
                return float(EXTRA_DEFAULTS[name])
            try:
                result = float(value)
            except (TypeError, ValueError):
                raise SfoxConfigError(
                    f"Connection {conn_id!r}: extra {name!r} must be a number, got {value!r}."
                ) from None
            if not math.isfinite(result):
                raise SfoxConfigError(
                    f"Connection {conn_id!r}: extra {name!r} must be finite, got {value!r}."
                )
            schema = CONN_FIELDS[name]["schema"]
            if result < schema["minimum"]:
                raise SfoxConfigError(
                    f"Connection {conn_id!r}: extra {name!r} must be >= {schema['minimum']}, got {value!r}."
                )
            if "maximum" in schema and result > schema["maximum"] and name != "rate_limit_requests":
                raise SfoxConfigError(
                    f"Connection {conn_id!r}: extra {name!r} must be <= {schema['maximum']}, got {value!r}."
                )
            return result

        def text(name: str) -> str | None:
            value = given(name)
            if value is None:
                default = EXTRA_DEFAULTS[name]
                return None if default is None else str(default)
            if not isinstance(value, str) or not value.strip():
                raise SfoxConfigError(
                    f"Connection {conn_id!r}: extra {name!r} must be a non-empty string, got {value!r}."
                )
            return value.strip()

        base_url = _base_url(conn)
        backend = text("rate_limit_backend") if given("rate_limit_backend") is not None else None
        if backend is not None and backend not in BACKENDS:
            raise SfoxConfigError(
                f"Connection {conn_id!r}: extra 'rate_limit_backend' must be one of {BACKENDS}, "
                f"got {backend!r}."
            )
        return cls(
            base_url=base_url,
            token=token,
            timeouts=(number("connect_timeout"), number("timeout")),
            budget=_with_margin(
                _budget(
                    conn_id,
                    given,
                    number,
                    rate_given=overrides.get("requests_per_second") is not None,
                    # The local sandbox may run sFOX's limit on a faster clock: no sFOX is behind it.
                    sfox_limit=not _is_loopback(urlsplit(base_url).hostname or ""),
                ),
                number("rate_limit_margin_seconds")
                if given("rate_limit_margin_seconds") is not None
                else None,
            ),
            max_retry_seconds=number("max_retry_seconds"),
            rate_limit_pause_seconds=number("rate_limit_pause_seconds"),
            rate_limit_scope=text("rate_limit_scope") or _default_scope(base_url),
            rate_limit_backend=backend,
            rate_limit_dir=text("rate_limit_dir"),
            rate_limit_redis_conn_id=text("rate_limit_redis_conn_id") or "redis_default",
        )


def _with_margin(budget: Budget | None, margin_seconds: float | None) -> Budget | None:
    """The budget with the connection's own jitter margin, when it sets one."""
    if budget is None or margin_seconds is None:
        return budget
    return dataclasses.replace(budget, margin_seconds=margin_seconds)


def _budget(
    conn_id: str | None,
    given: Callable[[str], Any],
    number: Callable[[str], float],
    *,
    rate_given: bool,
    sfox_limit: bool = True,
) -> Budget | None:
    """
    The connection's rate budget (``None``: no client-side budget), refused when it may put
    more than sFOX's 250 requests in one 10-s window.

    :param rate_given: the hook's ``requests_per_second`` argument is set: it wins.
    :param sfox_limit: refuse budgets above sFOX's limit (not for a loopback sandbox).
    """
    if not rate_given and (
        given("rate_limit_requests") is not None or given("rate_limit_window_seconds") is not None
    ):
        requests = number("rate_limit_requests")
        if requests != int(requests):
            raise SfoxConfigError(
                f"Connection {conn_id!r}: extra 'rate_limit_requests' must be a whole number, "
                f"got {requests!r}."
            )
        if requests == 0:
            return None
        budget = Budget(int(requests), number("rate_limit_window_seconds"))
        worst = budget.per_sfox_window()
        if sfox_limit and worst > SFOX_LIMIT_REQUESTS:
            raise SfoxConfigError(
                f"Connection {conn_id!r}: extra 'rate_limit_requests' = {budget.requests} per "
                f"'rate_limit_window_seconds' = {budget.window_seconds:g} s is above sFOX's limit of "
                f"{SFOX_LIMIT_REQUESTS} requests per {SFOX_LIMIT_WINDOW_SECONDS:g} s per IP: it may put "
                f"{worst} requests in one 10-s window (N x ceil(10 / W) must be <= {SFOX_LIMIT_REQUESTS})."
            )
        return budget
    if given("requests_per_second") is not None:
        rate = number("requests_per_second")
        if rate == 0:
            return None
        budget = budget_from_rate(rate)
        if sfox_limit and budget.requests > SFOX_LIMIT_REQUESTS:
            raise SfoxConfigError(
                f"Connection {conn_id!r}: extra 'requests_per_second' = {rate:g} ({budget.requests} per "
                f"{SFOX_LIMIT_WINDOW_SECONDS:g} s) is above sFOX's limit of {SFOX_LIMIT_REQUESTS} "
                f"requests per {SFOX_LIMIT_WINDOW_SECONDS:g} s per IP (25/s); set at most 25, or use "
                "rate_limit_requests and rate_limit_window_seconds."
            )
        return budget
    return Budget(
        int(EXTRA_DEFAULTS["rate_limit_requests"]), float(EXTRA_DEFAULTS["rate_limit_window_seconds"])
    )


def _default_scope(base_url: str) -> str:
    """The default scope of the budget: the base URL's host[:port], lower case."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


def _base_url(conn: Connection) -> str:
    """Build the base URL from the connection's host (a URL with its scheme, or a bare host)."""
    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SfoxConfigError(
            f"Connection {conn.conn_id!r}: host must be a base URL such as {DEFAULT_BASE_URL}, "
            f"got {conn.host!r}."
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise SfoxConfigError(
            f"Connection {conn.conn_id!r}: https is required to send the API token; plain http is "
            f"allowed only for loopback hosts (the local sandbox), got host {parts.hostname!r}."
        )
    if parts.query or parts.fragment:
        raise SfoxConfigError(f"Connection {conn.conn_id!r}: base URL must have no query or fragment.")
    return host.rstrip("/")


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _retry_after(value: str | None) -> float | None:
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


_NOT_JSON = object()
_PAGINATION_PREFIXES = frozenset(NEXT_URL_KEYS + NEXT_CURSOR_KEYS)


class _StreamReader:
    """A file-like view of a streamed response body for ijson, counting what it read."""

    def __init__(self, response: requests.Response) -> None:
        self._chunks = response.iter_content(STREAM_CHUNK_BYTES)
        self.received = 0
        self.eof = False

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""  # ijson's probe of the file's type
        for chunk in self._chunks:
            if chunk:
                self.received += len(chunk)
                return chunk
        self.eof = True
        return b""


def _next_page(found: Mapping[str, Any]) -> tuple[str, str] | None:
    """The next page a list answer names, as ``("url", value)`` or ``("cursor", value)``."""
    for key in NEXT_URL_KEYS + NEXT_CURSOR_KEYS:
        value = found.get(key)
        if isinstance(value, bool) or value is None or value == "":
            continue
        text = str(value)
        if key in NEXT_URL_KEYS and (text.startswith("/") or "://" in text):
            return "url", text
        return "cursor", text
    return None


def _is_transient(err: requests.RequestException) -> bool:
    """Whether a request error may pass on a retry (a network hiccup, not a TLS or URL error)."""
    if isinstance(err, requests.exceptions.SSLError):
        return False
    return isinstance(
        err, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    )


def _may_have_been_processed(err: requests.RequestException) -> bool:
    """Whether a failed request may have reached the server (not a failure to connect)."""
    if isinstance(err, requests.ConnectTimeout):
        return False
    if isinstance(err, requests.ReadTimeout):
        return True
    reason = err.args[0] if err.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return not isinstance(reason, NewConnectionError)


def _as_dict(data: Any) -> dict[str, Any]:
    """sFOX's ``data`` when it is an object; ``{}`` for an empty or unexpected payload."""
    return data if isinstance(data, dict) else {}


def _check_verification_type(verification_type: str) -> str:
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
