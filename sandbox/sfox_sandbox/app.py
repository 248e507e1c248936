"""Request handling of the sandbox: sFOX ``/v1/`` routes and fault injection; admin routes are
in :mod:`sfox_sandbox.admin`.

The HTTP layer (:mod:`sfox_sandbox.server`) parses a request into a :class:`Request`
and carries out the :class:`Response` it gets back from :meth:`SandboxApp.handle`, including
the actions ``reset`` and ``drop`` (abort the TCP connection) and a ``delay`` (hang).

Order of events for a ``/v1/`` request: an outage window (503, or the connection reset; see
:mod:`sfox_sandbox.outage`) -> latency (+ jitter) -> rate limit (429) -> one RNG
draw picks at most one fault: ``reset`` / ``error_500`` / ``error_503`` (request not
processed), else auth (401) and routing (404 / 405) and the emulated call, then ``hang``
(answer held back) or ``drop`` (connection reset after processing). A 422 text chosen for a
user (``PUT /_sandbox/users/{user_id}/unprocessable``) answers its send-verification before
any other check of the call. A register fault (``PUT
/_sandbox/users/{user_id}/register-fault``, see :mod:`sfox_sandbox.registrar`) is chosen by
the register-account call itself, after its work: it wins over a ``hang`` or ``drop`` drawn
for the same request. Every ``/v1/`` request is journaled (a register-account under the
``user_id`` of its body). Paths outside ``/v1/`` and ``/_sandbox/`` get a plain 404 and are
not journaled.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sfox_sandbox.admin import AdminRoutes
from sfox_sandbox.answers import ApiError, ApiResult
from sfox_sandbox.messages import (
    Request,
    Response,
    error_response,
    json_object,
    json_response,
    query_one,
    split_path,
)
from sfox_sandbox.outage import OUTAGE_MESSAGE
from sfox_sandbox.state import SandboxState

if TYPE_CHECKING:
    from sfox_sandbox.config import FaultSettings, RateLimitSettings

__all__ = ["Request", "Response", "SandboxApp", "error_response", "json_response", "match_route"]

log = logging.getLogger(__name__)


# A route: fixed segments, with None where the user_id goes.
_Pattern = tuple["str | None", ...]
_Handler = Callable[[SandboxState, Request, "str | None"], ApiResult]

_V1_ROUTES: list[tuple[_Pattern, str, _Handler]] = [
    (
        ("v1", "enterprise", "register-account"),
        "POST",
        lambda s, r, u: s.register_account(json_object(r)),
    ),
    (
        ("v1", "enterprise", "users"),
        "GET",
        lambda s, r, u: s.get_users(query_one(r, "accountRole"), query_one(r, "cursor")),
    ),
    (("v1", "enterprise", "users", None), "GET", lambda s, r, u: s.get_user(_uid(u))),
    (
        ("v1", "enterprise", "users", "send-verification", None),
        "POST",
        lambda s, r, u: s.send_verification(_uid(u), json_object(r)),
    ),
    (
        ("v1", "enterprise", "users", "verify", None),
        "POST",
        lambda s, r, u: s.verify(_uid(u), json_object(r)),
    ),
]


# Faults after which the connection is reset instead of answered.
_LOST = ("drop", "register_lost")


def _uid(user_id: str | None) -> str:
    assert user_id is not None  # routes with a user_id slot always fill it
    return user_id


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


def _body_fields(body: bytes) -> tuple[str | None, str | None]:
    """The ``type`` and ``user_id`` strings of a JSON body, for the journal; never raises."""
    if not body:
        return None, None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    channel, user_id = parsed.get("type"), parsed.get("user_id")
    return (
        channel if isinstance(channel, str) else None,
        user_id if isinstance(user_id, str) and user_id else None,
    )


@dataclass
class _Call:
    """One ``/v1/`` request, routed, and how the journal records it."""

    req: Request
    segments: list[str] | None
    handler: _Handler | None
    user_id: str | None
    path_known: bool
    channel: str | None

    @classmethod
    def route(cls, req: Request) -> _Call:
        try:
            segments: list[str] | None = split_path(req.path)
        except ApiError:
            segments = None
        handler, user_id, path_known = (
            match_route(segments, req.method) if segments is not None else (None, None, False)
        )
        channel = None
        if handler is not None and req.method == "POST":
            channel, body_user = _body_fields(req.body)
            # A POST without a user_id in its path (register-account) names it in its body.
            user_id = user_id if user_id is not None else body_user
        return cls(req, segments, handler, user_id, path_known, channel)

    def record(
        self, state: SandboxState, status: int | str, code_sent: bool = False, fault: str | None = None
    ) -> None:
        req = self.req
        state.record(
            method=req.method,
            path=req.path + ("?" + req.query if req.query else ""),
            user_id=self.user_id,
            status=status,
            code_sent=code_sent,
            channel=self.channel,
            client=req.client,
            fault=fault,
        )


def _pick_fault(faults: FaultSettings, draw: float) -> str | None:
    """The fault one RNG draw in [0, 1) picks, or ``None``."""
    for name in faults.share_names():
        share = getattr(faults, name)
        if draw < share:
            return name[: -len("_rate")]
        draw -= share
    return None


def _too_many(left: float, rate: RateLimitSettings) -> Response:
    headers = []
    if rate.retry_after:
        # whole seconds, rounded up; float noise must not add a second
        headers.append(("Retry-After", str(max(1, math.ceil(left - 1e-6)))))
    return json_response(429, {"error": "Rate limit exceeded"}, headers)


class SandboxApp:
    """Turns :class:`Request` objects into :class:`Response` objects over a :class:`SandboxState`.

    :param state: the state to serve (it holds the Enterprise token clients must present).
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.admin = AdminRoutes(state)

    async def handle(self, req: Request) -> Response:
        """Handle one request; never raises (a sandbox bug becomes a 500)."""
        try:
            if req.path == "/_sandbox" or req.path.startswith("/_sandbox/"):
                return self.admin.handle(req)
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
        call = _Call.route(req)
        outage = state.current_outage()
        if outage is not None:
            # sFOX is down: nothing is processed or rate-counted, but the request is journaled.
            if outage.mode == "refuse":
                call.record(state, "refused", fault="outage")
                return Response(0, action="reset")
            call.record(state, 503, fault="outage")
            return error_response(503, OUTAGE_MESSAGE)
        with state.lock:
            faults, rate = state.faults, state.rate_limit
            delay_ms = faults.latency_ms
            if faults.jitter_ms:
                delay_ms += state.rng.uniform(0.0, faults.jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)
        with state.lock:
            left = state.limiter.check(req.client, time.monotonic(), rate)
            draw = state.rng.random() if left is None else 1.0
        if left is not None:
            call.record(state, 429)
            return _too_many(left, rate)
        fault = _pick_fault(faults, draw)
        if fault == "reset":
            call.record(state, "reset", fault=fault)
            return Response(0, action="reset")
        if fault in ("error_500", "error_503"):
            status = 500 if fault == "error_500" else 503
            call.record(state, status, fault=fault)
            return error_response(status, "Internal server error" if status == 500 else "Service unavailable")
        return self._answer(call, fault, faults)

    def _answer(self, call: _Call, fault: str | None, faults: FaultSettings) -> Response:
        """Carry out an authorised, routed call; ``fault`` (or one the call chose, a register
        fault) may hang or drop its answer."""
        result = self._call(call)
        fault = result.fault or fault
        if fault in _LOST:
            call.record(self.state, "dropped", result.code_sent, fault)
            return Response(result.status, action="drop")
        call.record(self.state, result.status, result.code_sent, fault)
        resp = (
            Response(result.status, headers=[("Content-Type", "application/json")], stream=result.stream)
            if result.stream is not None
            else json_response(result.status, result.body)
        )
        resp.delay = faults.hang_seconds if fault == "hang" else result.delay
        return resp

    def _call(self, call: _Call) -> ApiResult:
        """The outcome of the call, an error answer included."""
        if not self._authorized(call.req):
            return ApiResult(401, {"error": "Unauthorized: missing or invalid API key"})
        if call.segments is None:
            return ApiResult(400, {"error": "Invalid percent-encoding in path"})
        if call.handler is None:
            if call.path_known:
                return ApiResult(405, {"error": "Method not allowed"})
            return ApiResult(404, {"error": "Not found"})
        try:
            result = call.handler(self.state, call.req, call.user_id)
        except ApiError as exc:
            return ApiResult(exc.status, {"error": exc.message}, fault=exc.fault)
        call.channel = result.channel or call.channel
        return result
