"""Request handling of the sandbox: sFOX ``/v1/`` routes, fault injection and ``/_sandbox/`` admin.

The HTTP layer (:mod:`sfox_sandbox.server`) parses a request into a :class:`Request`
and carries out the :class:`Response` it gets back from :meth:`SandboxApp.handle`, including
the actions ``reset`` and ``drop`` (abort the TCP connection) and a ``delay`` (hang).

Order of events for a ``/v1/`` request: latency (+ jitter) -> rate limit (429) -> one RNG
draw picks at most one fault: ``reset`` / ``error_500`` / ``error_503`` (request not
processed), else auth (401) and routing (404 / 405) and the emulated call, then ``hang``
(answer held back) or ``drop`` (connection reset after processing). Every ``/v1/`` request
is journaled. Paths outside ``/v1/`` and ``/_sandbox/`` get a plain 404 and are not journaled.

Admin routes (no faults, no rate limit, not journaled), all JSON in ``{"data": ...}``.
They are UNAUTHENTICATED: anyone who can reach the port can read every verification code,
change faults or the token, seed users and reset the state. Keep the sandbox on a loopback
address (the default ``127.0.0.1``); the CLI warns on stderr for any other ``--host``.

- ``GET /_sandbox/health`` -> ``{"ok": true}``
- ``GET /_sandbox/codes/{user_id}`` -> ``{"user_id", "email": {"latest", "count",
  "sent_at"}, "sms": {...}, "history": [...]}``; 404 if the user neither exists nor got codes
- ``PUT /_sandbox/faults`` with a partial object of fault settings, plus an optional
  ``"random_seed"`` to re-seed the RNG -> the new fault settings; 400 on invalid values
- ``PUT /_sandbox/rate-limit`` with a partial object -> the new rate-limit settings plus
  ``"blocked"`` (client address -> seconds left); 400 on invalid values
- ``PUT /_sandbox/token`` with ``{"token": "..."}`` -> ``{"token_changed": true}``: from
  then on ``/v1/`` requests must present the new token (the old one gets 401, as a revoked
  sFOX key does); 400 when the token is absent or empty; ``reset`` restores the start-up token
- ``POST /_sandbox/users`` with a list of seed objects (or ``{"users": [...]}``) ->
  ``{"seeded": n}``
- ``POST /_sandbox/users/generate`` with ``{"count": N, "prefix": "user-", "start": 0,
  "individual_share": 0.7, "email_verified_share": 0.33}`` (all but ``count`` optional) ->
  the range created (``prefix``, ``start``, ``count``, ``first``, ``last``, shares) plus
  ``"total_users"``: N synthetic users kept in O(1) memory (see ``GeneratedUsers``); 400 on
  invalid values or a range that could collide with existing users
- ``PUT /_sandbox/list`` with a partial object ``{"page_size": 0, "next_key": "next",
  "next_first": false}`` -> the new settings: ``page_size > 0`` makes ``GET
  /v1/enterprise/users`` answer in pages naming the next one (see ``ListSettings``)
- ``PUT /_sandbox/asset-events`` with a partial object ``{"airflow_url":
  "http://127.0.0.1:8080", "asset_uri": "sfox://api.sfox.com/email-verified", "token":
  "<JWT>"}`` (or ``"username"`` and ``"password"`` instead of ``"token"``; optional
  ``"enabled"``, ``"batch_ms"``, ``"timeout_seconds"``, ``"retries"``, ``"backoff_ms"``)
  -> the same as ``GET``: each successful email verify then posts ``{"asset_id": N,
  "extra": {"user_ids": [...]}}`` to ``{airflow_url}/api/v2/assets/events``, off the
  request path (see ``AssetEventSettings`` and :mod:`sfox_sandbox.events`). A PUT turns
  posting on unless it says ``"enabled": false``; a new ``airflow_url`` drops the
  credentials not given with it (the token never follows a URL to another host); 400 on
  invalid or missing values
- ``GET /_sandbox/asset-events`` -> ``{"settings": {...}, "delivery": {"confirmations",
  "posted", "failed", "dropped", "retried", "pending", "last_status", "last_error",
  "asset_id"}}``; ``token`` and ``password`` show as ``"***"`` (or ``null``), never in clear
- ``DELETE /_sandbox/asset-events`` -> posting off, token, username and password forgotten
- ``POST /_sandbox/asset-events/flush`` -> ``{"flushed": n}``: the batch being collected is
  posted now, without waiting for the end of its ``batch_ms`` window
- ``POST /_sandbox/reset`` -> back to the start state
- ``GET /_sandbox/journal[?since=SEQ][&user_id=ID]`` -> list of journal entries
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from sfox_sandbox.state import ApiError, ApiResult, SandboxState

log = logging.getLogger(__name__)

JSON_HEADERS: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


@dataclass
class Request:
    """One parsed HTTP request.

    :param method: upper-case method.
    :param path: RAW path of the request target (still percent-encoded, no query).
    :param query: raw query string (without ``?``).
    :param headers: header names in lower case.
    :param body: request body.
    :param client: client IP address.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    client: str


@dataclass
class Response:
    """What the HTTP layer must do: answer, or abort the connection.

    :param action: ``send`` an answer, or ``reset`` / ``drop`` the connection (TCP RST).
    :param delay: seconds to hold the answer back (hang fault).
    :param stream: a body produced in pieces, sent with chunked transfer encoding instead of
        ``body`` (the user list).
    """

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: str = "send"
    delay: float = 0.0
    stream: Iterator[bytes] | None = None


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    """Build a JSON :class:`Response`."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, list(JSON_HEADERS) + (headers or []))


def error_response(status: int, message: str) -> Response:
    """Build an sFOX-style ``{"error": message}`` response."""
    return json_response(status, {"error": message})


def split_path(raw_path: str) -> list[str]:
    """Split a raw path on ``/`` and only then percent-decode each segment.

    ``/v1/enterprise/users/a%2Fb`` gives ``["v1", "enterprise", "users", "a/b"]``.

    :param raw_path: path as sent on the wire.
    :raises ApiError: 400 when a segment is not valid percent-encoded UTF-8.
    """
    try:
        return [unquote(seg, errors="strict") for seg in raw_path.split("/")[1:]]
    except UnicodeDecodeError:
        raise ApiError(400, "Invalid percent-encoding in path") from None


def _json_body(req: Request) -> Any:
    if not req.body.strip():
        raise ApiError(400, "Request body must be JSON")
    try:
        return json.loads(req.body)
    # RecursionError: nesting deeper than the interpreter's recursion limit.
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "Request body must be JSON") from None


def _json_object(req: Request) -> dict[str, Any]:
    body = _json_body(req)
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


# A route: fixed segments, with None where the user_id goes.
_Pattern = tuple["str | None", ...]
_Handler = Callable[[SandboxState, Request, "str | None"], ApiResult]

_V1_ROUTES: list[tuple[_Pattern, str, _Handler]] = [
    (
        ("v1", "enterprise", "register-account"),
        "POST",
        lambda s, r, u: s.register_account(_json_object(r)),
    ),
    (
        ("v1", "enterprise", "users"),
        "GET",
        lambda s, r, u: s.get_users(_query_one(r, "accountRole"), _query_one(r, "cursor")),
    ),
    (("v1", "enterprise", "users", None), "GET", lambda s, r, u: s.get_user(_uid(u))),
    (
        ("v1", "enterprise", "users", "send-verification", None),
        "POST",
        lambda s, r, u: s.send_verification(_uid(u), _json_object(r)),
    ),
    (
        ("v1", "enterprise", "users", "verify", None),
        "POST",
        lambda s, r, u: s.verify(_uid(u), _json_object(r)),
    ),
]


def _uid(user_id: str | None) -> str:
    assert user_id is not None  # routes with a user_id slot always fill it
    return user_id


def _query_one(req: Request, name: str) -> str | None:
    values = parse_qs(req.query, keep_blank_values=True).get(name)
    return values[-1] if values else None


def match_route(segments: list[str], method: str) -> tuple[_Handler | None, str | None, bool]:
    """Find the ``/v1/`` route of a request.

    :returns: ``(handler, user_id, path_known)``; ``handler`` is ``None`` when no route
        matches (``path_known`` then tells 405 from 404).
    """
    path_known = False
    for pattern, route_method, handler in _V1_ROUTES:
        if len(pattern) != len(segments):
            continue
        user_id = None
        for want, got in zip(pattern, segments, strict=True):
            if want is None:
                if not got:
                    break
                user_id = got
            elif want != got:
                break
        else:
            if route_method == method:
                return handler, user_id, True
            path_known = True
    return None, None, path_known


def _channel_of(body: bytes) -> str | None:
    """The ``type`` of a JSON body, for the journal; never raises."""
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    channel = parsed.get("type") if isinstance(parsed, dict) else None
    return channel if isinstance(channel, str) else None


class SandboxApp:
    """Turns :class:`Request` objects into :class:`Response` objects over a :class:`SandboxState`.

    :param state: the state to serve (it holds the Enterprise token clients must present).
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    async def handle(self, req: Request) -> Response:
        """Handle one request; never raises (a sandbox bug becomes a 500)."""
        try:
            if req.path == "/_sandbox" or req.path.startswith("/_sandbox/"):
                return self._admin(req)
            if req.path.startswith("/v1/"):
                return await self._v1(req)
            return error_response(404, "Not found")
        except Exception:
            log.exception("sandbox bug while handling %s request", req.method)
            return error_response(500, "Internal sandbox error")

    # ------------------------------------------------------------------ /v1/
    def _authorized(self, req: Request) -> bool:
        given = req.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        candidate = f"{scheme.lower()} {token.strip()}".encode()
        return hmac.compare_digest(candidate, self.state.auth_header)

    async def _v1(self, req: Request) -> Response:
        state = self.state
        with state.lock:
            faults = state.faults
            rate = state.rate_limit
            delay_ms = faults.latency_ms
            if faults.jitter_ms:
                delay_ms += state.rng.uniform(0.0, faults.jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)

        now = time.monotonic()
        try:
            segments: list[str] | None = split_path(req.path)
        except ApiError:
            segments = None
        handler, user_id, path_known = (
            match_route(segments, req.method) if segments is not None else (None, None, False)
        )
        channel = _channel_of(req.body) if handler is not None and req.method == "POST" else None

        def record(status: int | str, code_sent: bool = False, fault: str | None = None) -> None:
            state.record(
                method=req.method,
                path=req.path + ("?" + req.query if req.query else ""),
                user_id=user_id,
                status=status,
                code_sent=code_sent,
                channel=channel,
                client=req.client,
                fault=fault,
            )

        with state.lock:
            left = state.limiter.check(req.client, now, rate)
            draw = state.rng.random() if left is None else 1.0
        if left is not None:
            record(429)
            headers = []
            if rate.retry_after:
                # whole seconds, rounded up; float noise must not add a second
                headers.append(("Retry-After", str(max(1, math.ceil(left - 1e-6)))))
            return json_response(429, {"error": "Rate limit exceeded"}, headers)

        fault = None
        for name in faults.share_names():
            share = getattr(faults, name)
            if draw < share:
                fault = name[: -len("_rate")]
                break
            draw -= share
        if fault == "reset":
            record("reset", fault=fault)
            return Response(0, action="reset")
        if fault in ("error_500", "error_503"):
            status = 500 if fault == "error_500" else 503
            record(status, fault=fault)
            message = "Internal server error" if status == 500 else "Service unavailable"
            return error_response(status, message)

        code_sent = False
        stream = None
        if not self._authorized(req):
            status, payload = 401, {"error": "Unauthorized: missing or invalid API key"}
        elif segments is None:
            status, payload = 400, {"error": "Invalid percent-encoding in path"}
        elif handler is None:
            status, payload = (
                (405, {"error": "Method not allowed"}) if path_known else (404, {"error": "Not found"})
            )
        else:
            try:
                result = handler(state, req, user_id)
            except ApiError as exc:
                status, payload = exc.status, {"error": exc.message}
            else:
                status, payload, code_sent = result.status, result.body, result.code_sent
                channel = result.channel or channel
                stream = result.stream

        if fault == "drop":
            record("dropped", code_sent, fault)
            return Response(status, action="drop")
        record(status, code_sent, fault)
        if stream is not None:
            resp = Response(status, headers=list(JSON_HEADERS), stream=stream)
        else:
            resp = json_response(status, payload)
        if fault == "hang":
            resp.delay = faults.hang_seconds
        return resp

    # ---------------------------------------------------------------- admin
    def _admin(self, req: Request) -> Response:
        try:
            segments = split_path(req.path)[1:]
            return self._admin_route(req, segments)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except ValueError as exc:
            return error_response(400, str(exc))

    def _admin_route(self, req: Request, segments: list[str]) -> Response:
        state = self.state
        method = req.method
        head = segments[0] if segments else ""
        rest = segments[1:]
        if head == "health" and not rest and method == "GET":
            return json_response(200, {"data": {"ok": True}})
        if head == "codes" and len(rest) == 1 and rest[0] and method == "GET":
            return self._codes_one(rest[0])
        if head == "faults" and not rest and method == "PUT":
            changes = _json_object(req)
            if "random_seed" in changes:
                seed = changes.pop("random_seed")
                if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                    raise ApiError(400, "random_seed must be an integer or null")
                state.set_faults(changes)
                state.reseed(seed)
            else:
                state.set_faults(changes)
            with state.lock:
                return json_response(200, {"data": state.faults.to_dict()})
        if head == "rate-limit" and not rest and method == "PUT":
            state.set_rate_limit(_json_object(req))
            now = time.monotonic()
            with state.lock:
                data = state.rate_limit.to_dict()
                data["blocked"] = state.limiter.blocked(now)
            return json_response(200, {"data": data})
        if head == "token" and not rest and method == "PUT":
            token = _json_object(req).get("token")
            if not isinstance(token, str):
                raise ApiError(400, "token must be a non-empty string")
            state.set_token(token)  # ValueError (empty, spaces): 400
            return json_response(200, {"data": {"token_changed": True}})
        if head == "users" and not rest and method == "POST":
            body = _json_body(req)
            if isinstance(body, dict):
                body = body.get("users", body.get("data"))
            if not isinstance(body, list):
                raise ApiError(400, "Body must be a list of user objects")
            return json_response(200, {"data": {"seeded": state.seed_users(body)}})
        if head == "users" and rest == ["generate"] and method == "POST":
            options = _json_object(req)
            unknown = set(options) - {"count", "prefix", "start", "individual_share", "email_verified_share"}
            if unknown:
                raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
            if "count" not in options:
                raise ApiError(400, "count is required")
            block = state.generate_users(**options)  # ValueError: 400
            return json_response(200, {"data": {**block.to_dict(), "total_users": state.user_count}})
        if head == "list" and not rest and method == "PUT":
            return json_response(200, {"data": state.set_list(_json_object(req)).to_dict()})
        if head == "asset-events":
            return self._asset_events(req, rest)
        if head == "reset" and not rest and method == "POST":
            state.reset()
            return json_response(200, {"data": {"reset": True}})
        if head == "journal" and not rest and method == "GET":
            since_raw = _query_one(req, "since") or "0"
            if not (since_raw.isascii() and since_raw.isdigit()):
                raise ApiError(400, "since must be a non-negative integer")
            entries = state.journal_entries(int(since_raw), _query_one(req, "user_id"))
            return json_response(200, {"data": [e.to_dict() for e in entries]})
        return error_response(404, "Unknown sandbox admin route")

    def _asset_events(self, req: Request, rest: list[str]) -> Response:
        events = self.state.asset_events
        if rest == ["flush"] and req.method == "POST":
            return json_response(200, {"data": {"flushed": events.flush()}})
        if rest or req.method not in ("GET", "PUT", "DELETE"):
            return error_response(404, "Unknown sandbox admin route")
        if req.method == "PUT":
            events.configure(_json_object(req))  # ValueError: 400
        elif req.method == "DELETE":
            events.disable()
        return json_response(200, {"data": events.status()})

    def _codes_one(self, user_id: str) -> Response:
        state = self.state
        with state.lock:
            known = state.find_user(user_id) is not None or user_id in state.sent_codes
        if not known:
            return error_response(404, "User not found")
        return json_response(200, {"data": state.codes_for(user_id)})
