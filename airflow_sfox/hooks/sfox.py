"""
Hook for the sFOX Connect (enterprise) End Users API.

One :class:`SfoxConnectHook` owns one :class:`requests.Session` (a connection pool sized for
concurrent use) and the retry policy, and asks the shared rate budget
(:mod:`airflow_sfox.ratelimit`) before every request: one window-exact budget, one 429 pause and
the operator's hold for every hook, thread and process behind one egress address. It is safe to
share one hook between the threads of a pool.

The connection's settings live in :mod:`airflow_sfox.hooks.connection`, the budget's backend and
the hold in :mod:`airflow_sfox.hooks.budget`, the user list's streaming in
:mod:`airflow_sfox.hooks.user_list`, the call records in :mod:`airflow_sfox.hooks.transport`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from airflow_sfox import __version__
from airflow_sfox._compat import BaseHook
from airflow_sfox.exceptions import (
    SfoxConfigError,
    SfoxConnectionError,
    SfoxError,
    SfoxPaginationError,
    error_for_status,
    scrub,
)
from airflow_sfox.hooks.budget import open_budget
from airflow_sfox.hooks.connection import SfoxConnectionConfig, connection_form_widgets, ui_field_behaviour
from airflow_sfox.hooks.transport import (
    BASE_BACKOFF_SECONDS,
    MAX_BACKOFF_SECONDS,
    Attempt,
    Call,
    RequestStats,
    SfoxResult,
    as_dict,
    check_verification_type,
    count_stream,
    elapsed,
    error_message,
    is_transient,
    may_have_been_processed,
    payload,
    retry_after,
    user_id_segment,
)
from airflow_sfox.hooks.user_list import CURSOR_PARAM, USERS_PATH, next_page_path, stream_users
from airflow_sfox.ratelimit import BudgetHeld, BudgetUnavailable, PauseTooLong, RateBudget

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

__all__ = [
    "DEFAULT_POOL_SIZE",
    "USERS_PATH",
    "Attempt",
    "SfoxConnectHook",
    "SfoxResult",
    "user_id_segment",
]

ACCOUNT_ROLES: tuple[str, ...] = ("client", "advisor")
#: Threads that may share one hook without waiting for a pooled connection.
DEFAULT_POOL_SIZE = 32  # as many as a chunk task's most threads (sender.MAX_THREADS)
#: ``POST`` registers an end user (not idempotent: see :meth:`SfoxConnectHook.create_user`).
REGISTER_PATH = "/v1/enterprise/register-account"
#: Users ``test_connection`` counts at most before it stops reading the list.
TEST_CONNECTION_MAX_COUNT = 1000


class SfoxConnectHook(BaseHook):
    """
    Interact with the sFOX Connect (enterprise) API.

    The connection's host holds the base URL with its scheme (``https://api.sfox.com``; plain
    ``http`` only for loopback hosts such as the local sandbox), the password the partner's
    Enterprise API token. Extras (all optional): ``timeout``, ``connect_timeout``,
    ``max_retry_seconds``, ``rate_limit_pause_seconds`` and the rate budget's
    ``rate_limit_requests``, ``rate_limit_window_seconds``, ``rate_limit_margin_seconds``,
    ``rate_limit_scope``, ``rate_limit_backend``, ``rate_limit_dir``,
    ``rate_limit_redis_conn_id``; see :data:`airflow_sfox.get_provider_info.CONN_FIELDS`.

    Every request first asks the shared rate budget (:mod:`airflow_sfox.ratelimit`): at most
    N starts in any W seconds for all hooks, threads and processes of one scope; the first 429
    anywhere pauses them all; an operator's hold stops them all (:class:`SfoxHeldError`). For a
    real sFOX host the budget is mandatory (1 to 250 requests per 10 s, a shared backend, at
    least the jitter margin); only a loopback sandbox may go without one.

    Nothing is fetched in ``__init__``: the connection is read and checked once, on first use.

    :param sfox_conn_id: the Airflow connection id.
    :param timeout: read timeout in seconds; overrides the ``timeout`` extra.
    :param rate_limit_requests: requests per budget window; overrides the extra.
    :param max_retry_seconds: retry budget of one call; overrides the ``max_retry_seconds`` extra.
    :param pool_size: connections kept open for concurrent threads.
    :param request_log_level: level of the one log line of a call's first request
        (``logging.DEBUG`` in batch tasks, whose logs report progress instead); retries log at
        DEBUG.
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
        rate_limit_requests: int | None = None,
        max_retry_seconds: float | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        request_log_level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.sfox_conn_id = sfox_conn_id
        self._overrides: Mapping[str, Any] = {
            "timeout": timeout,
            "rate_limit_requests": rate_limit_requests,
            "max_retry_seconds": max_retry_seconds,
        }
        self.pool_size = pool_size
        self.request_log_level = request_log_level
        self.stats = RequestStats()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._init_lock = threading.Lock()
        self._config: SfoxConnectionConfig | None = None
        self._session: requests.Session | None = None
        self._budget: RateBudget | None = None  # set with the config: it needs the connection

    # --- connection and configuration -------------------------------------------------------

    @property
    def config(self) -> SfoxConnectionConfig:
        """The hook's settings, read from the Airflow connection and checked once, on first use."""
        if self._config is None:
            # Threads of one pool share the hook: fetch the connection only once.
            with self._init_lock:
                if self._config is None:
                    conn = self.get_connection(self.sfox_conn_id)
                    config = SfoxConnectionConfig.from_connection(conn, self._overrides)
                    self._budget = open_budget(config, clock=self._clock, sleep=self._sleep)
                    self._config = config
        return self._config

    @property
    def budget(self) -> RateBudget:
        """The shared rate budget this hook asks before every request (reads the connection)."""
        if self._budget is None:
            _ = self.config
        assert self._budget is not None
        return self._budget

    @property
    def budget_rate(self) -> float:
        """
        The rate budget as requests per second, N / W (0: no client-side budget, loopback
        hosts only), shared by every hook of the scope: size thread pools by it.
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
        return as_dict(self.send_verification_result(user_id, verification_type).data)

    def send_verification_result(self, user_id: str, verification_type: str) -> SfoxResult:
        """
        Like :meth:`send_verification`, with the attempts made and whether a code may have
        been sent twice (see :class:`SfoxResult`); for callers that keep a ledger.

        :param user_id: the partner's id of the user.
        :param verification_type: ``"email"`` or ``"sms"``.
        """
        kind = check_verification_type(verification_type)
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
        kind = check_verification_type(verification_type)
        path = f"/v1/enterprise/users/verify/{user_id_segment(user_id)}"
        return as_dict(self._request("POST", path, json={"type": kind, "otp": str(otp)}))

    def get_user(self, user_id: str) -> dict[str, Any]:
        """
        Read one end user: ``GET /v1/enterprise/users/{user_id}``.

        :param user_id: the partner's id of the user.
        :raises SfoxNotFoundError: sFOX does not know the user.
        """
        return as_dict(self.get_user_result(user_id).data)

    def get_user_result(self, user_id: str) -> SfoxResult:
        """:meth:`get_user` with its attempts (see :class:`SfoxResult`), for callers keeping a ledger."""
        return self._call("GET", f"/v1/enterprise/users/{user_id_segment(user_id)}")

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
                following = yield from stream_users(response, path, self.base_url)
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
                path, query = next_page_path(value, path, self.base_url)
            else:
                path, query = USERS_PATH, {**(params or {}), CURSOR_PARAM: value}

    def create_user(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """
        Register an end user: ``POST /v1/enterprise/register-account``.

        Single-shot: the request is not idempotent (a second one may create a duplicate or send
        a second email code), so a 5xx, a timeout or a connection lost after sending is raised,
        never retried; settle it by reading the user (:meth:`get_user`) before posting again.
        Only answers that prove nothing was done are retried: a 429, a connection refused.

        :param payload: the documented body (``account_type``, ``user_id``, ``email``, ...).
        :return: sFOX's ``data`` (its shape is not documented; may be empty).
        """
        return as_dict(self.create_user_result(payload).data)

    def create_user_result(self, payload: Mapping[str, Any]) -> SfoxResult:
        """:meth:`create_user` with its attempts (see :class:`SfoxResult`), for callers keeping a ledger."""
        if not isinstance(payload, Mapping):
            raise TypeError(f"payload must be a mapping, got {type(payload).__name__}")
        return self._call("POST", REGISTER_PATH, json=dict(payload), idempotent=False)

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
                counting = stream_users(response, USERS_PATH, self.base_url)
                count, complete, more_pages = count_stream(counting, TEST_CONNECTION_MAX_COUNT)
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
        idempotent: bool = True,
    ) -> SfoxResult:
        """:meth:`_send`, its errors naming the connection."""
        with self._naming_the_connection():
            return self._send(
                method, path, json=json, params=params, retry=retry, stream=stream, idempotent=idempotent
            )

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        retry: bool = True,
        stream: bool = False,
        idempotent: bool = True,
    ) -> SfoxResult:
        """
        Send one API call with the budget and retries.

        5xx, connection errors and timeouts are retried with capped exponential back-off and
        full jitter; a 429 pauses every sender of the scope (``Retry-After``, else the
        configured pause) and is then retried. Both stop when the next wait would pass
        ``max_retry_seconds``. Other 4xx are raised at once. A raised :class:`SfoxError` carries
        ``attempts`` and ``uncertain`` like :class:`SfoxResult`.

        With ``stream=True`` a 2xx answer is not read: the result's ``data`` is the open
        :class:`requests.Response`, for the caller to read and close (see :meth:`iter_users`).
        With ``idempotent=False`` only what proves the request was not processed is retried (a
        429, a connection never made): a 5xx or a lost answer is raised at once.
        """
        config = self.config
        session = self.session
        call = Call(self.sfox_conn_id, method, path, deadline=self._clock() + config.max_retry_seconds)
        while True:
            call.attempt += 1
            self._wait_for_budget(call)
            sent_at = datetime.now(timezone.utc)
            try:
                response = session.request(
                    method,
                    config.base_url + path,
                    json=json,
                    params=params,
                    timeout=config.timeouts,
                    allow_redirects=False,
                    stream=stream,
                )
            except requests.RequestException as err:
                error, wait = self._no_answer(call, err, sent_at)
            else:
                answer = self._answered(call, response, sent_at, stream=stream)
                if isinstance(answer, SfoxResult):
                    return answer
                error, wait = answer
            # A request that is not idempotent is repeated only when it surely did nothing.
            unsent = error.status_code is None and not call.trail[-1].uncertain
            repeatable = idempotent or error.status_code == 429 or unsent
            if not (retry and error.retryable and repeatable) or self._clock() + wait > call.deadline:
                if error.retryable and call.attempt > 1:
                    self.log.debug("%s %s gave up after %d attempts", method, path, call.attempt)
                raise call.failed(error)
            self.log.debug("%s %s: retrying in %.1f s", method, path, wait)
            if error.status_code != 429:
                self._sleep(wait)
            # after a 429 the budget holds this thread, and every other one, until the pause ends

    def _wait_for_budget(self, call: Call) -> None:
        """Wait for the budget; nothing is sent when it is held, paused too long or unreachable."""
        try:
            self.stats.count_wait(self.budget.wait(call.deadline))
        except PauseTooLong as err:
            call.attempt -= 1
            raise call.failed(call.paused_too_long(err.seconds)) from None
        except BudgetHeld as err:
            call.attempt -= 1
            raise call.failed(call.held(err)) from None
        except BudgetUnavailable as err:
            call.attempt -= 1
            raise call.failed(call.budget_unavailable(err)) from None

    def _no_answer(
        self, call: Call, err: requests.RequestException, sent_at: datetime
    ) -> tuple[SfoxError, float]:
        """A request that got no answer: the error to retry and the back-off (or raise)."""
        base_url = self.config.base_url
        lost = is_transient(err) and call.method == "POST" and may_have_been_processed(err)
        call.trail.append(Attempt(sent_at, None, type(err).__name__, lost))
        if not is_transient(err):
            # TLS failures, bad URLs, ...: retrying cannot help. Never echo str(err).
            raise call.failed(
                SfoxError(f"{type(err).__name__} talking to {base_url}", method=call.method, path=call.path)
            ) from None
        self.stats.count(status=None)
        call.uncertain = call.uncertain or lost
        self.log.debug("%s %s -> %s (attempt %d)", call.method, call.path, type(err).__name__, call.attempt)
        error = SfoxConnectionError(
            f"{type(err).__name__} talking to {base_url}", method=call.method, path=call.path
        )
        return error, self._backoff(call.attempt)

    def _answered(
        self, call: Call, response: requests.Response, sent_at: datetime, *, stream: bool
    ) -> SfoxResult | tuple[SfoxError, float]:
        """A request that got an answer: the result, or the error to retry and the wait."""
        status = response.status_code
        self.stats.count(status=status)
        level = self.request_log_level if call.attempt == 1 else logging.DEBUG
        self.log.log(level, "%s %s -> %d (%.2f s)", call.method, call.path, status, elapsed(response))
        if 200 <= status < 300:
            try:
                data = response if stream else payload(response, call.method, call.path)
            except SfoxError as err:
                call.trail.append(Attempt(sent_at, status, err.message))
                raise call.failed(err) from None
            call.trail.append(Attempt(sent_at, status))
            return call.result(data, status)
        if status < 400:  # 1xx, or a redirect we do not follow
            call.trail.append(Attempt(sent_at, status, f"HTTP {status}"))
            raise call.failed(
                SfoxError(f"unexpected HTTP {status}", status_code=status, method=call.method, path=call.path)
            )
        error = error_for_status(
            status, error_message(response, self._secrets()), method=call.method, path=call.path
        )
        call.trail.append(Attempt(sent_at, status, error.message[:255]))
        if status != 429:
            return error, self._backoff(call.attempt)
        header = retry_after(response.headers.get("Retry-After"))
        wait = self.config.rate_limit_pause_seconds if header is None else header
        # Every thread and process of the scope waits: sFOX blocks the whole IP.
        try:
            self.budget.pause(wait)
        except BudgetUnavailable as err:
            raise call.failed(call.budget_unavailable(err)) from None
        return error, wait

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential back-off: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        ceiling = min(MAX_BACKOFF_SECONDS, BASE_BACKOFF_SECONDS * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    # --- Airflow 3.1 connection form (3.2+ reads get_provider_info) ---------------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the extra fields of the connection form, for Airflow 3.1's UI."""
        return connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the relabelling and hidden fields of the connection form, for Airflow 3.1's UI."""
        return ui_field_behaviour()
