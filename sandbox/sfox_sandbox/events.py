"""Posting an Airflow asset event when a user confirms their email, off the request path.

:meth:`AssetEvents.confirmed` only queues the user_id (O(1), under a lock), so the sFOX
confirm answer never waits for Airflow. One worker thread per sandbox, started on the first
confirmation, posts the queue in confirmation order:

1. a bearer token: the configured ``token``, or one from ``POST {airflow_url}/auth/token``
   with ``{"username", "password"}`` (kept, and fetched again once when Airflow answers 401);
2. the asset id, looked up once with ``GET /api/v2/assets?uri_pattern=<asset_uri>`` and
   kept: that search is a substring (ILIKE) match where ``_`` is a wildcard, so only the
   entry whose ``uri`` equals ``asset_uri`` counts. None yet (the asset exists once a DAG
   that uses it was parsed): the event fails and the next confirmation looks again;
3. ``POST /api/v2/assets/events`` with ``{"asset_id": N, "extra": {"user_ids": [...]}}``.

A connection error, a timeout, 429 or 5xx is retried ``retries`` times with a doubling
back-off; any other answer ends the event as failed. Counters and the last error (never a
secret, no personal data but user counts) are in :meth:`AssetEvents.status`. Only the
standard library is used, with a timeout on every call, no proxy from the environment and no
redirect (a redirect would carry the token elsewhere).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sfox_sandbox.config import AssetEventSettings

log = logging.getLogger(__name__)

#: Most confirmations waiting to be posted; past it they are dropped (and counted).
MAX_PENDING = 100_000
#: Most user ids in one event, however many confirmations a batch window holds.
MAX_BATCH = 1_000
#: Assets asked for per page of the lookup, and pages read at most.
_LOOKUP_PAGE = 100
_LOOKUP_PAGES = 10
#: Statuses worth another attempt: the server may answer next time.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_ERROR_EXCERPT = 200
_TOKEN_PATH = "/auth/token"  # noqa: S105 - a path, not a secret


class _Failure(Exception):
    """One failed call to Airflow, with a message free of secrets.

    :param message: what went wrong (method, path without query, status or reason).
    :param retry: whether another attempt may succeed.
    :param status: the HTTP status, when Airflow answered.
    """

    def __init__(self, message: str, *, retry: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry
        self.status = status


@dataclass
class _Answer:
    status: int
    body: Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


# No proxy from the environment: Airflow is local, and a proxy would see the token.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _request(
    settings: AssetEventSettings, method: str, path: str, body: Any = None, token: str | None = None
) -> _Answer:
    """One HTTP call to Airflow; an answer of any status, or :class:`_Failure` when none came.

    :param path: path and query below ``airflow_url``.
    """
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    # airflow_url is checked to be http(s) (AssetEventSettings.validate).
    url = settings.base_url + path
    req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with _OPENER.open(req, timeout=settings.timeout_seconds) as resp:
            return _Answer(resp.status, _parse(resp.read()))
    except urllib.error.HTTPError as exc:  # an answer, not 2xx
        error = exc
    except (OSError, HTTPException) as exc:  # URLError, refused, reset, timeout, bad answer
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _Failure(f"{_label(method, path)}: cannot reach Airflow: {reason}", retry=True) from None
    try:
        raw = error.read()
    except (OSError, HTTPException):
        raw = b""  # the status is what counts
    finally:
        error.close()
    return _Answer(error.code, _parse(raw))


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return raw[:_ERROR_EXCERPT].decode("utf-8", "replace")


def _exact(assets: list[Any], uri: str) -> int | None:
    """The id of the asset whose ``uri`` is exactly ``uri`` in a page of the lookup."""
    for asset in assets:
        if isinstance(asset, dict) and asset.get("uri") == uri:
            asset_id = asset.get("id")
            if isinstance(asset_id, int) and not isinstance(asset_id, bool):
                return asset_id
    return None


def _asset_key(settings: AssetEventSettings) -> tuple[str, str]:
    """What a cached asset id belongs to: one Airflow and one uri."""
    return (settings.base_url, settings.asset_uri)


def _label(method: str, path: str) -> str:
    """``METHOD /path`` without the query (it holds the asset uri, long and not useful)."""
    return f"{method} {path.partition('?')[0]}"


def _failure(answer: _Answer, method: str, path: str, settings: AssetEventSettings) -> _Failure:
    """The failure of a non-2xx answer, with a short excerpt of Airflow's reason.

    The excerpt never holds a secret: a validation error may echo the request body, so
    ``/auth/token`` gets none, and the token and password are blanked out of any other.
    """
    text = f"{_label(method, path)}: HTTP {answer.status}"
    detail = answer.body.get("detail") if isinstance(answer.body, dict) else answer.body
    if path == _TOKEN_PATH:
        text += " (check the username and password)" if answer.status in (401, 403) else ""
    elif detail:
        excerpt = str(detail)[:_ERROR_EXCERPT]
        for secret in (settings.token, settings.password):
            if secret:
                excerpt = excerpt.replace(secret, "***")
        text += ": " + excerpt
    return _Failure(text, retry=answer.status in _RETRY_STATUSES, status=answer.status)


@dataclass
class _Stats:
    """Delivery counters; see :meth:`AssetEvents.status` for their meaning."""

    confirmations: int = 0
    posted: int = 0
    failed: int = 0
    dropped: int = 0
    retried: int = 0
    last_status: int | None = None
    last_error: str | None = None


@dataclass
class _Job:
    """One event to post: its user ids and the settings in force when it was taken."""

    user_ids: list[str]
    settings: AssetEventSettings
    generation: int
    stop: threading.Event = field(repr=False)


class AssetEvents:
    """Queues email confirmations and posts them to Airflow as asset events (one thread).

    :param settings: the start-up settings (:meth:`reset` returns to them).
    """

    def __init__(self, settings: AssetEventSettings) -> None:
        self._cond = threading.Condition()
        self._settings = settings
        self._queue: deque[tuple[str, float]] = deque()  # (user_id, time.monotonic())
        self._in_flight = 0
        self._flush = False
        # Bumped by reset: a delivery of an older generation neither counts nor retries.
        self._generation = 0
        self._stats = _Stats()
        self._token: tuple[tuple[str, ...], str] | None = None
        self._asset_id: tuple[tuple[str, str], int] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------ admin side
    @property
    def settings(self) -> AssetEventSettings:
        """The settings in force."""
        with self._cond:
            return self._settings

    def configure(self, changes: Mapping[str, Any]) -> AssetEventSettings:
        """Apply a partial update; it turns posting on unless it says ``"enabled": false``.

        :param changes: :class:`~sfox_sandbox.config.AssetEventSettings` fields.
        :raises ValueError: on an invalid change (nothing is applied).
        """
        with self._cond:
            self._settings = self._settings.updated({"enabled": True, **changes})
            self._cond.notify_all()
            return self._settings

    def disable(self) -> AssetEventSettings:
        """Turn posting off and forget the credentials (token, username, password);
        confirmations still queued are dropped."""
        return self.configure({"enabled": False, "token": None, "username": None, "password": None})

    def flush(self) -> int:
        """Post the batch being collected now instead of at the end of its window; return
        how many confirmations were waiting."""
        with self._cond:
            waiting = len(self._queue)
            if waiting:
                self._flush = True
                self._cond.notify_all()
            return waiting

    def reset(self, settings: AssetEventSettings) -> None:
        """Back to ``settings`` with nothing queued, zero counters and nothing cached.

        :param settings: the start-up settings.
        """
        with self._cond:
            self._settings = settings
            self._queue.clear()
            self._in_flight = 0
            self._flush = False
            self._generation += 1
            self._stats = _Stats()
            self._token = None
            self._asset_id = None
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        """Settings (secrets masked) and delivery counters, JSON-ready.

        ``delivery``: ``confirmations`` queued for posting, events ``posted`` (Airflow
        answered 2xx) and ``failed`` (given up), confirmations ``dropped`` (posting turned
        off before they went, or the queue was full), ``retried`` attempts, ``pending``
        confirmations (queued or being posted), ``last_status`` (of the latest answer from
        Airflow), ``last_error`` and the cached ``asset_id``.
        """
        with self._cond:
            stats = self._stats
            settings = self._settings
            cached = self._asset_id
            delivery = {
                "confirmations": stats.confirmations,
                "posted": stats.posted,
                "failed": stats.failed,
                "dropped": stats.dropped,
                "retried": stats.retried,
                "pending": len(self._queue) + self._in_flight,
                "last_status": stats.last_status,
                "last_error": stats.last_error,
                "asset_id": cached[1] if cached and cached[0] == _asset_key(settings) else None,
            }
            return {"settings": settings.to_dict(), "delivery": delivery}

    def close(self, timeout: float = 2.0) -> None:
        """Stop the worker thread (queued confirmations stay; a later one starts it again).

        :param timeout: seconds to wait for an HTTP call under way to end.
        """
        with self._cond:
            thread, self._thread = self._thread, None
            self._stop.set()
            # An event under way is not counted once stopped: it is lost.
            self._stats.dropped += self._in_flight
            self._in_flight = 0
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)

    # -------------------------------------------------------- request side
    def confirmed(self, user_id: str) -> None:
        """Queue one email confirmation when posting is on (cheap: never does I/O).

        :param user_id: the user who confirmed their email.
        """
        with self._cond:
            if not self._settings.enabled:
                return
            if len(self._queue) >= MAX_PENDING:
                self._stats.dropped += 1
                self._stats.last_error = f"more than {MAX_PENDING} confirmations waiting: dropped"
                return
            self._stats.confirmations += 1
            self._queue.append((user_id, time.monotonic()))
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="sfox-sandbox-asset-events", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    # --------------------------------------------------------------- worker
    def _run(self, stop: threading.Event) -> None:
        while (job := self._next_job(stop)) is not None:
            try:
                status = self._post_with_retries(job)
            except _Failure as exc:
                self._finish(job, exc)
            except Exception as exc:  # a sandbox bug must not end the worker
                log.exception("sandbox bug while posting an asset event")
                self._finish(job, _Failure(f"sandbox error: {type(exc).__name__}", retry=False))
            else:
                self._finish(job, status)

    def _next_job(self, stop: threading.Event) -> _Job | None:
        """Wait for the next event to post (a batch once its window closed); ``None`` on stop."""
        with self._cond:
            while not stop.is_set():
                if not self._queue:
                    self._flush = False
                    self._cond.wait()
                    continue
                settings = self._settings
                if not settings.enabled:
                    self._stats.dropped += len(self._queue)
                    self._queue.clear()
                    continue
                count = 1
                if settings.batch_ms > 0:
                    left = self._queue[0][1] + settings.batch_ms / 1000.0 - time.monotonic()
                    if left > 0 and not self._flush:
                        self._cond.wait(left)
                        continue
                    count = min(len(self._queue), MAX_BATCH)
                user_ids = [self._queue.popleft()[0] for _ in range(count)]
                if not self._queue:
                    self._flush = False  # a later confirmation opens a window of its own
                self._in_flight = count
                return _Job(user_ids, settings, self._generation, stop)
        return None

    def _current(self, job: _Job) -> bool:
        """Whether ``job`` still belongs to the running state (no reset, no stop since)."""
        return job.generation == self._generation and not job.stop.is_set()

    def _finish(self, job: _Job, outcome: int | _Failure) -> None:
        with self._cond:
            if not self._current(job):
                return  # reset meanwhile: the counters start again from zero
            self._in_flight = 0
            if isinstance(outcome, _Failure):
                self._stats.failed += 1
                self._note(outcome)
                log.warning("asset event for %d user(s) not posted: %s", len(job.user_ids), outcome.message)
            else:
                self._stats.posted += 1
                self._stats.last_status = outcome

    def _note(self, failure: _Failure) -> None:
        """Record a failed attempt (hold the lock)."""
        self._stats.last_error = failure.message
        if failure.status is not None:
            self._stats.last_status = failure.status

    def _post_with_retries(self, job: _Job) -> int:
        """Post one event, retrying what may succeed later; return Airflow's status."""
        delay = job.settings.backoff_ms / 1000.0
        for _ in range(job.settings.retries):
            try:
                return self._post(job)
            except _Failure as exc:
                if not exc.retry:
                    raise
                with self._cond:
                    if not self._current(job):
                        raise
                    self._stats.retried += 1
                    self._note(exc)
                    # Woken early by reset, stop or turning posting off; they end the job.
                    self._cond.wait_for(lambda: not (self._current(job) and self._settings.enabled), delay)
                    if not self._current(job):
                        raise
                    if not self._settings.enabled:
                        raise _Failure("posting was turned off while retrying", retry=False) from exc
            delay *= 2
        return self._post(job)

    def _post(self, job: _Job) -> int:
        settings = job.settings
        body = {"asset_id": self._lookup_asset_id(settings), "extra": {"user_ids": job.user_ids}}
        path = "/api/v2/assets/events"
        answer = self._authorized(settings, "POST", path, body)
        if answer.status == 404:
            with self._cond:
                self._asset_id = None  # the asset may be gone: look it up again next time
        if not 200 <= answer.status < 300:
            raise _failure(answer, "POST", path, settings)
        return answer.status

    def _authorized(self, settings: AssetEventSettings, method: str, path: str, body: Any = None) -> _Answer:
        """A call with the bearer token; on 401, once more with a new token when the
        username and password allow getting one."""
        answer = _request(settings, method, path, body, self._bearer(settings))
        if answer.status == 401 and settings.username:
            answer = _request(settings, method, path, body, self._bearer(settings, renew=True))
        return answer

    def _bearer(self, settings: AssetEventSettings, *, renew: bool = False) -> str:
        """The token to send: a fetched one kept from before, the configured one, or a new
        one from ``POST /auth/token``."""
        key = (settings.base_url, settings.token, settings.username, settings.password)
        if not renew:
            with self._cond:
                if self._token is not None and self._token[0] == key:
                    return self._token[1]
            if settings.token:
                return settings.token
        path = _TOKEN_PATH
        credentials = {"username": settings.username, "password": settings.password}
        answer = _request(settings, "POST", path, credentials)
        if not 200 <= answer.status < 300:
            raise _failure(answer, "POST", path, settings)
        token = answer.body.get("access_token") if isinstance(answer.body, dict) else None
        if not isinstance(token, str) or not token:
            raise _Failure(f"POST {path}: the answer has no access_token", retry=False, status=answer.status)
        with self._cond:
            self._token = (key, token)
        return token

    def _lookup_asset_id(self, settings: AssetEventSettings) -> int:
        """The id of the asset whose ``uri`` is exactly ``asset_uri`` (kept once found)."""
        uri = settings.asset_uri
        key = _asset_key(settings)
        with self._cond:
            if self._asset_id is not None and self._asset_id[0] == key:
                return self._asset_id[1]
        offset = 0
        for _ in range(_LOOKUP_PAGES):
            query = urlencode({"uri_pattern": uri, "limit": _LOOKUP_PAGE, "offset": offset})
            path = f"/api/v2/assets?{query}"
            answer = self._authorized(settings, "GET", path)
            if not 200 <= answer.status < 300:
                raise _failure(answer, "GET", path, settings)
            assets = answer.body.get("assets") if isinstance(answer.body, dict) else None
            if not isinstance(assets, list):
                raise _Failure("GET /api/v2/assets: the answer has no assets list", retry=False)
            asset_id = _exact(assets, uri)
            if asset_id is not None:
                with self._cond:
                    self._asset_id = (key, asset_id)
                return asset_id
            offset += len(assets)
            total = answer.body.get("total_entries")
            if not assets or not isinstance(total, int) or offset >= total:
                break
        raise _Failure(
            f"Airflow has no asset with uri {uri!r} yet (it appears once a DAG that uses it is parsed)",
            retry=False,
        )
