"""The HTTP messages the sandbox's handlers see and return, and helpers to read and build them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from sfox_sandbox.answers import ApiError

if TYPE_CHECKING:
    from collections.abc import Iterator

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


def json_body(req: Request) -> Any:
    """The JSON body of ``req``; :class:`ApiError` 400 when it is none."""
    if not req.body.strip():
        raise ApiError(400, "Request body must be JSON")
    try:
        return json.loads(req.body)
    # RecursionError: nesting deeper than the interpreter's recursion limit.
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "Request body must be JSON") from None


def json_object(req: Request) -> dict[str, Any]:
    """The JSON object body of ``req``; :class:`ApiError` 400 when it is none."""
    body = json_body(req)
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body


def query_one(req: Request, name: str) -> str | None:
    """The last value of the query parameter ``name``, or ``None``."""
    values = parse_qs(req.query, keep_blank_values=True).get(name)
    return values[-1] if values else None
