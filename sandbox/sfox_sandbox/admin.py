"""The sandbox's admin API under ``/_sandbox/``: codes, faults, users, settings, journal.

Admin routes (no faults, no rate limit, not journaled), all JSON in ``{"data": ...}``.
They can read every verification code, change faults or the token, seed users and reset the
state, so: with an admin token configured (``SandboxConfig.admin_token``, ``--admin-token``
or ``$SFOX_SANDBOX_ADMIN_TOKEN``; never the API token) every admin route needs it in the
``X-Sandbox-Admin-Token`` header (compared in constant time; 401 otherwise). Without one they
are open on a loopback address (the default ``127.0.0.1``, what the test suite uses) and
refused with 403 on any other address.

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
- ``PUT /_sandbox/outage`` with ``{"seconds": S, "mode": "503" | "refuse"}`` (``mode``
  optional, ``503`` by default) -> ``{"until": <epoch seconds>, "mode", "seconds_left"}``:
  for the next S sandbox seconds (times the rate limit's ``time_scale``) every ``/v1/``
  request is answered ``503 {"error": ...}`` (``503``) or its connection is reset without an
  answer (``refuse``), and journaled with ``fault: "outage"`` (status 503 or ``"refused"``);
  the window ends by itself. ``GET`` -> the open window or ``null``; ``DELETE`` ends it now
  (-> ``null``); 400 on invalid values. See :mod:`sfox_sandbox.outage`
- ``PUT /_sandbox/users/{user_id}/unprocessable`` with ``{"type": "email" | "sms", "error":
  "<any text>"}`` -> ``{"user_id", "email": text | null, "sms": text | null}``: every
  send-verification of that user and channel is answered ``422 {"error": "<text>"}``
  (nothing sent, state unchanged, journaled with ``fault: "unprocessable"``) until ``DELETE
  /_sandbox/users/{user_id}/unprocessable[?type=email]`` (no ``type``: both channels) or a
  reset; ``GET`` tells the texts set; 404 for an unknown user, 400 on invalid values
- ``PUT /_sandbox/users/{user_id}/register-fault`` with ``{"mode": "lost" | "503" |
  "timeout", "times": 1, "seconds": null}`` (all optional) -> ``{"user_id", "mode",
  "times", "seconds"}``: the next ``times`` register-account requests of that ``user_id``
  (which need not exist yet) are carried out (account created, first code sent, or refused),
  then their answer is lost (connection reset), a 503, or held back ``seconds`` (default the
  faults' ``hang_seconds``); ``GET`` -> the fault left or ``null``; ``DELETE`` -> ``null``.
  See :mod:`sfox_sandbox.registrar`
- ``GET /_sandbox/register-answers`` -> ``{"existing": {"status", "error"}, "invalid":
  {...}}``; ``PUT /_sandbox/register-answers/{kind}`` (``existing`` or ``invalid``) with a
  partial ``{"status": 400..599, "error": "<text>"}`` -> the new answer: sFOX documents
  neither the answer to an existing ``user_id`` nor its validation errors. ``{field}`` and
  ``{reason}`` in the text are replaced by the field at fault and what it must be
- ``GET /_sandbox/register-requests`` -> ``{user_id: n}``: register-account requests per
  ``user_id`` that reached the call (created, refused or lost), since the last reset
- ``POST /_sandbox/reset`` -> back to the start state
- ``GET /_sandbox/journal[?since=SEQ][&user_id=ID]`` -> list of journal entries
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from sfox_sandbox.answers import ApiError
from sfox_sandbox.config import ADMIN_TOKEN_HEADER, is_loopback
from sfox_sandbox.messages import (
    Request,
    Response,
    error_response,
    json_body,
    json_object,
    json_response,
    query_one,
    split_path,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from sfox_sandbox.state import SandboxState

_GENERATE_FIELDS = frozenset({"count", "prefix", "start", "individual_share", "email_verified_share"})


def _ok(data: Any) -> Response:
    return json_response(200, {"data": data})


def _fields(req: Request, known: set[str] | frozenset[str]) -> dict[str, Any]:
    """The JSON object body of ``req``; :class:`ApiError` 400 naming unknown fields."""
    body = json_object(req)
    unknown = set(body) - known
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    return body


class AdminRoutes:
    """Serves ``/_sandbox/...`` over a :class:`~sfox_sandbox.state.SandboxState`.

    :param state: the state the routes read and change.
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        # (first segment, further segments, method) -> handler; codes and asset-events have
        # variable tails and are routed by :meth:`_route`.
        self._routes: dict[tuple[str, tuple[str, ...], str], Callable[[Request], Response]] = {
            ("health", (), "GET"): lambda req: _ok({"ok": True}),
            ("faults", (), "PUT"): self._faults,
            ("rate-limit", (), "PUT"): self._rate_limit,
            ("token", (), "PUT"): self._token,
            ("users", (), "POST"): self._seed,
            ("users", ("generate",), "POST"): self._generate,
            ("list", (), "PUT"): lambda req: _ok(state.set_list(json_object(req)).to_dict()),
            ("reset", (), "POST"): self._reset,
            ("journal", (), "GET"): self._journal,
            ("outage", (), "GET"): lambda req: self._outage(),
            ("outage", (), "PUT"): self._set_outage,
            ("outage", (), "DELETE"): self._clear_outage,
            ("register-answers", (), "GET"): lambda req: _ok(state.registrar.answers_dict()),
            ("register-requests", (), "GET"): lambda req: _ok(state.registrar.request_counts()),
        }

    def handle(self, req: Request) -> Response:
        """Answer one admin request (400 for invalid input, 404 for an unknown route)."""
        refused = self._refusal(req)
        if refused is not None:
            return refused
        try:
            return self._route(req, split_path(req.path)[1:])
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except ValueError as exc:
            return error_response(400, str(exc))

    def _refusal(self, req: Request) -> Response | None:
        """401 without the configured admin token; 403 off loopback when none is configured."""
        config = self.state.config
        if config.admin_token:
            given = req.headers.get(ADMIN_TOKEN_HEADER.lower(), "").encode()
            if hmac.compare_digest(given, config.admin_token.encode()):
                return None
            return error_response(401, f"Missing or wrong {ADMIN_TOKEN_HEADER} header")
        if is_loopback(config.host):
            return None
        return error_response(
            403,
            f"The sandbox's admin routes are off: it listens on {config.host}, not a loopback "
            f"address, and has no admin token. Set SFOX_SANDBOX_ADMIN_TOKEN (or --admin-token, "
            f"SandboxConfig.admin_token) and send it in the {ADMIN_TOKEN_HEADER} header.",
        )

    def _route(self, req: Request, segments: list[str]) -> Response:
        head = segments[0] if segments else ""
        rest = tuple(segments[1:])
        if head == "codes" and len(rest) == 1 and rest[0] and req.method == "GET":
            return self._codes(rest[0])
        if head == "asset-events":
            return self._asset_events(req, rest)
        if head == "users" and len(rest) == 2 and rest[0] and rest[1] == "unprocessable":
            return self._unprocessable(req, rest[0])
        if head == "users" and len(rest) == 2 and rest[0] and rest[1] == "register-fault":
            return self._register_fault(req, rest[0])
        if head == "register-answers" and len(rest) == 1 and req.method == "PUT":
            return self._register_answer(req, rest[0])
        handler = self._routes.get((head, rest, req.method))
        if handler is None:
            return error_response(404, "Unknown sandbox admin route")
        return handler(req)

    def _faults(self, req: Request) -> Response:
        state = self.state
        changes = json_object(req)
        if "random_seed" in changes:
            seed = changes.pop("random_seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise ApiError(400, "random_seed must be an integer or null")
            state.set_faults(changes)
            state.reseed(seed)
        else:
            state.set_faults(changes)
        with state.lock:
            return _ok(state.faults.to_dict())

    def _rate_limit(self, req: Request) -> Response:
        state = self.state
        state.set_rate_limit(json_object(req))
        now = time.monotonic()
        with state.lock:
            data = state.rate_limit.to_dict()
            data["blocked"] = state.limiter.blocked(now)
        return _ok(data)

    def _token(self, req: Request) -> Response:
        token = json_object(req).get("token")
        if not isinstance(token, str):
            raise ApiError(400, "token must be a non-empty string")
        self.state.set_token(token)  # ValueError (empty, spaces): 400
        return _ok({"token_changed": True})

    def _seed(self, req: Request) -> Response:
        body = json_body(req)
        if isinstance(body, dict):
            body = body.get("users", body.get("data"))
        if not isinstance(body, list):
            raise ApiError(400, "Body must be a list of user objects")
        return _ok({"seeded": self.state.seed_users(body)})

    def _generate(self, req: Request) -> Response:
        options = _fields(req, _GENERATE_FIELDS)
        if "count" not in options:
            raise ApiError(400, "count is required")
        block = self.state.generate_users(**options)  # ValueError: 400
        return _ok({**block.to_dict(), "total_users": self.state.user_count})

    def _reset(self, req: Request) -> Response:
        self.state.reset()
        return _ok({"reset": True})

    def _journal(self, req: Request) -> Response:
        since_raw = query_one(req, "since") or "0"
        if not (since_raw.isascii() and since_raw.isdigit()):
            raise ApiError(400, "since must be a non-negative integer")
        entries = self.state.journal_entries(int(since_raw), query_one(req, "user_id"))
        return _ok([e.to_dict() for e in entries])

    def _outage(self) -> Response:
        outage = self.state.current_outage()
        return _ok(outage.to_dict() if outage is not None else None)

    def _set_outage(self, req: Request) -> Response:
        body = _fields(req, {"seconds", "mode"})
        if "seconds" not in body:
            raise ApiError(400, "seconds is required")
        self.state.set_outage(body["seconds"], body.get("mode", "503"))  # ValueError: 400
        return self._outage()

    def _clear_outage(self, req: Request) -> Response:
        self.state.clear_outage()
        return _ok(None)

    def _unprocessable(self, req: Request, user_id: str) -> Response:
        state = self.state
        if req.method == "GET":
            return _ok(state.unprocessable_for(user_id))
        if req.method == "DELETE":
            return _ok(state.clear_unprocessable(user_id, query_one(req, "type")))
        if req.method != "PUT":
            return error_response(404, "Unknown sandbox admin route")
        body = json_object(req)
        unknown = set(body) - {"type", "error"}
        if unknown or "type" not in body or "error" not in body:
            raise ApiError(400, 'body must be {"type": "email" | "sms", "error": "<text>"}')
        return _ok(state.set_unprocessable(user_id, body["type"], body["error"]))

    def _register_fault(self, req: Request, user_id: str) -> Response:
        registrar = self.state.registrar
        if req.method == "DELETE":
            registrar.clear_fault(user_id)
        elif req.method == "PUT":
            body = _fields(req, {"mode", "times", "seconds"})
            registrar.set_fault(
                user_id, body.get("mode", "lost"), body.get("times", 1), body.get("seconds")
            )  # ValueError: 400
        elif req.method != "GET":
            return error_response(404, "Unknown sandbox admin route")
        return _ok(registrar.fault_dict(user_id))

    def _register_answer(self, req: Request, kind: str) -> Response:
        body = _fields(req, {"status", "error"})
        answer = self.state.registrar.set_answer(kind, body.get("status"), body.get("error"))
        return _ok(answer.to_dict())

    def _asset_events(self, req: Request, rest: tuple[str, ...]) -> Response:
        events = self.state.asset_events
        if rest == ("flush",) and req.method == "POST":
            return _ok({"flushed": events.flush()})
        if rest or req.method not in ("GET", "PUT", "DELETE"):
            return error_response(404, "Unknown sandbox admin route")
        if req.method == "PUT":
            events.configure(json_object(req))  # ValueError: 400
        elif req.method == "DELETE":
            events.disable()
        return _ok(events.status())

    def _codes(self, user_id: str) -> Response:
        state = self.state
        with state.lock:
            known = state.find_user(user_id) is not None or user_id in state.sent_codes
        if not known:
            return error_response(404, "User not found")
        return _ok(state.codes_for(user_id))
