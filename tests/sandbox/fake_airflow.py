"""A tiny fake of Airflow 3's REST API, for the sandbox's asset events: a real HTTP server.

It serves what the sandbox calls, as Airflow does: ``POST /auth/token`` (201 and an
``access_token`` for the right username and password), ``GET /api/v2/assets?uri_pattern=``
(a case-insensitive substring match where ``_`` is a wildcard, like Airflow's ILIKE) and
``POST /api/v2/assets/events``. Every request is recorded; the next answers of the events
route can be made to fail, and the tokens issued so far can be expired.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sfox_sandbox.config import DEFAULT_ASSET_URI

USERNAME = "admin"
PASSWORD = "pw-s3cret"
STATIC_TOKEN = "static-jwt-s3cret"

#: Uris that Airflow's substring search also finds for the ones the tests look up; each
#: comes before the exact one, so taking the first match would pick the wrong id.
ASSETS = [
    {"id": 1, "uri": "sfox://api.sfox.com/email-verified-v2"},
    {"id": 4, "uri": "sfox://api.sfox.com/email-verified2"},
    {"id": 2, "uri": "sfox://api.sfox.com/email_verified2"},
    {"id": 3, "uri": DEFAULT_ASSET_URI},
]


@dataclass
class Seen:
    """One request the fake got."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: Any
    accepted: bool = False


def _ilike(pattern: str) -> re.Pattern[str]:
    """Airflow's ``ILIKE '%pattern%'``: ``_`` is any one character, ``%`` any run."""
    parts = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


class FakeAirflow:
    """The fake API server on 127.0.0.1 (a free port) in a thread; use as a context manager."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.assets = [dict(a) for a in ASSETS]
        self.seen: list[Seen] = []
        #: Statuses the next ``POST /api/v2/assets/events`` calls answer instead of accepting.
        self.event_failures: deque[int] = deque()
        #: Status and JSON ``POST /auth/token`` answers instead of checking the credentials.
        self.token_failure: tuple[int, Any] | None = None
        self.issued: list[str] = []
        self._valid = {STATIC_TOKEN}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._serve(self)

            def do_POST(self) -> None:
                fake._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAirflow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    # ------------------------------------------------------------------ reading
    def calls(self, method: str, path: str) -> list[Seen]:
        """The requests of one route, in arrival order."""
        with self.lock:
            return [s for s in self.seen if (s.method, s.path) == (method, path)]

    def events(self) -> list[Any]:
        """The bodies of the events the fake accepted (answered 200)."""
        with self.lock:
            return [s.body for s in self.seen if s.accepted]

    def accepted_auth(self) -> list[str | None]:
        """The ``Authorization`` header of each accepted event."""
        with self.lock:
            return [s.authorization for s in self.seen if s.accepted]

    def expire_tokens(self) -> None:
        """Make every token issued so far (and the static one) get 401 from now on."""
        with self.lock:
            self._valid = set()

    # ------------------------------------------------------------------ serving
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        seen = Seen(
            handler.command,
            url.path,
            parse_qs(url.query),
            handler.headers.get("Authorization"),
            json.loads(raw) if raw else None,
        )
        with self.lock:
            self.seen.append(seen)
            status, payload = self._answer(seen)
        body = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _answer(self, seen: Seen) -> tuple[int, Any]:
        """Status and JSON of one request (the lock is held)."""
        route = (seen.method, seen.path)
        if route == ("POST", "/auth/token"):
            if self.token_failure is not None:
                return self.token_failure
            if seen.body != {"username": USERNAME, "password": PASSWORD}:
                return 401, {"detail": "Invalid credentials"}
            token = f"tok-{len(self.issued) + 1}"
            self.issued.append(token)
            self._valid.add(token)
            return 201, {"access_token": token}
        scheme, _, token = (seen.authorization or "").partition(" ")
        if scheme != "Bearer" or token not in self._valid:
            return 401, {"detail": "Not authenticated"}
        if route == ("GET", "/api/v2/assets"):
            found = _ilike(seen.query["uri_pattern"][0])
            matches = [a for a in self.assets if found.search(a["uri"])]
            offset = int(seen.query.get("offset", ["0"])[0])
            limit = int(seen.query.get("limit", ["50"])[0])
            return 200, {"assets": matches[offset : offset + limit], "total_entries": len(matches)}
        if route == ("POST", "/api/v2/assets/events"):
            if self.event_failures:
                return self.event_failures.popleft(), {"detail": "injected failure"}
            if seen.body["asset_id"] not in {a["id"] for a in self.assets}:
                return 404, {"detail": "Asset not found"}
            seen.accepted = True
            return 200, {"id": sum(s.accepted for s in self.seen), **seen.body}
        return 404, {"detail": "Not Found"}
