"""A minimal asyncio HTTP/1.1 server (keep-alive) that serves a :class:`~sfox_sandbox.app.SandboxApp`.

Why not uvicorn: the faults ``reset`` and ``drop`` must abort the TCP connection with a RST
and no answer, which an ASGI app cannot do portably. The stdlib keeps the sandbox free of
version differences between Airflow releases and fast to start.

Bounds: heads up to 64 KiB (else 431), bodies up to ``SandboxConfig.max_body_bytes`` (else
413), chunk-size lines and trailers up to 64 KiB in all (else 400). Every read of a started
request and every write must complete within ``SandboxConfig.request_timeout``: a stalled
request gets 408 and the connection is closed. A keep-alive connection waiting for its next
request is closed after ``SandboxConfig.idle_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

from sfox_sandbox.answers import StreamCut
from sfox_sandbox.messages import Request, Response, error_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterator

    from sfox_sandbox.app import SandboxApp

log = logging.getLogger(__name__)

_MAX_HEAD_BYTES = 64 * 1024
# Size lines plus trailers of one chunked body.
_MAX_CHUNK_FRAMING_BYTES = 64 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}
# Strict grammars: int() alone would also take "-5", "+5", "0x5", "1_0" or non-ASCII digits.
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CONTENT_LENGTH_RE = re.compile(r"[0-9]+")
_T = TypeVar("_T")


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), without any answer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _encode(resp: Response, keep_alive: bool, head_only: bool) -> bytes:
    """The head (and body) of an answer; only the head when ``resp.stream`` is set."""
    lines = [
        f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}",
        "Transfer-Encoding: chunked" if resp.stream is not None else f"Content-Length: {len(resp.body)}",
        "Connection: keep-alive" if keep_alive else "Connection: close",
        "Server: sfox-sandbox",
    ]
    lines.extend(f"{name}: {value}" for name, value in resp.headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only or resp.stream is not None else head + resp.body


def _expire(writer: asyncio.StreamWriter, kind: str) -> None:
    """Timer callback: a read or write took too long, close the connection.

    ``kind`` is ``idle`` (waiting for the next request: plain close), ``request`` (a started
    request stalled: best-effort 408, then close) or ``write`` (the client does not read:
    abort, as a close would wait for the unsent answer).
    """
    transport = writer.transport
    if transport.is_closing():
        return
    log.debug("closing a sandbox connection: %s timeout", kind)
    if kind == "request" and transport.get_write_buffer_size() == 0:
        transport.write(_encode(error_response(408, "Request timeout"), False, False))
    if kind == "write" or transport.get_write_buffer_size() > 0:
        transport.abort()
    else:
        transport.close()


def _chunk_size(line: bytes) -> int:
    """Parse a chunk-size line (``1a;ext=1`` plus CRLF); :class:`_HttpError` 400 when malformed."""
    digits = line[:-2].split(b";", 1)[0].strip()
    if not _CHUNK_SIZE_RE.fullmatch(digits):
        raise _HttpError(400, "Bad chunk size")
    return int(digits, 16)


class HttpServer:
    """Serves one :class:`SandboxApp` over HTTP/1.1 with keep-alive on an asyncio loop."""

    def __init__(
        self, app: SandboxApp, max_body: int, request_timeout: float = 30.0, idle_timeout: float = 75.0
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._connection, host, port, limit=_MAX_HEAD_BYTES, backlog=1024
        )
        sockname = self._server.sockets[0].getsockname()
        return int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Keep-alive connections would keep wait_closed() waiting (Python >= 3.12).
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        aborted = False
        try:
            aborted = await self._serve_connection(reader, writer, client)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away mid-request
        except asyncio.CancelledError:
            aborted = True
            writer.transport.abort()
        except Exception:
            log.exception("sandbox connection error")
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            if not aborted:
                writer.close()

    async def _timed(self, aw: Awaitable[_T], timeout: float, writer: asyncio.StreamWriter, kind: str) -> _T:
        """Await one read or write; past ``timeout`` the connection is closed (see _expire).

        A timer callback rather than ``asyncio.wait_for``, which would wrap every read in a
        new task on Python < 3.12. The closed transport ends the pending read with EOF.
        """
        assert self._loop is not None
        handle = self._loop.call_later(timeout, _expire, writer, kind)
        try:
            return await aw
        finally:
            handle.cancel()

    async def _read_head(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        """Read one request head; ``None`` when the connection ended (or idled out) before it."""
        try:
            first = await self._timed(reader.readexactly(1), self.idle_timeout, writer, "idle")
            # Empty lines before a request line are ignored (RFC 9112, section 2.2).
            while first in (b"\r", b"\n"):
                first = await self._timed(reader.readexactly(1), self.idle_timeout, writer, "idle")
        except asyncio.IncompleteReadError:
            return None  # clean end of a keep-alive connection
        rest = await self._timed(reader.readuntil(b"\r\n\r\n"), self.request_timeout, writer, "request")
        return first + rest

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> bool:
        """Serve requests until the connection ends; return True when it was aborted."""
        while True:
            try:
                head = await self._read_head(reader, writer)
            except asyncio.IncompleteReadError:
                return False  # cut-off head (client gone or request timeout)
            except asyncio.LimitOverrunError:
                await self._refuse(writer, _HttpError(431, "Request header too large"))
                return False
            if head is None:
                return False
            try:
                req, keep_alive = await self._parse(head, reader, writer, client)
            except _HttpError as exc:
                await self._refuse(writer, exc)
                return False
            resp = await self.app.handle(req)
            if resp.action != "send":
                _abort(writer)
                return True
            if resp.delay > 0:
                await asyncio.sleep(resp.delay)
                if writer.transport.is_closing():
                    return False
            writer.write(_encode(resp, keep_alive, req.method == "HEAD"))
            await self._timed(writer.drain(), self.request_timeout, writer, "write")
            if resp.stream is not None and req.method != "HEAD":
                try:
                    await self._write_chunked(writer, resp.stream)
                except StreamCut:
                    _abort(writer)
                    return True
            if not keep_alive:
                return False

    async def _write_chunked(self, writer: asyncio.StreamWriter, pieces: Iterator[bytes]) -> None:
        """Send a body in pieces (chunked transfer encoding), waiting for each to drain, so the
        whole body is never in memory."""
        try:
            for piece in pieces:
                if piece:
                    writer.write(b"%x\r\n" % len(piece))
                    writer.write(piece)
                    writer.write(b"\r\n")
                    await self._timed(writer.drain(), self.request_timeout, writer, "write")
            writer.write(b"0\r\n\r\n")
            await self._timed(writer.drain(), self.request_timeout, writer, "write")
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    async def _refuse(self, writer: asyncio.StreamWriter, exc: _HttpError) -> None:
        writer.write(_encode(error_response(exc.status, exc.message), False, False))
        with contextlib.suppress(ConnectionError):
            await self._timed(writer.drain(), self.request_timeout, writer, "write")

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> bytes:
        timeout = self.request_timeout
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            framing = 0
            while True:
                try:
                    size_line = await self._timed(reader.readuntil(b"\r\n"), timeout, writer, "request")
                except asyncio.LimitOverrunError:
                    raise _HttpError(400, "Bad chunk size") from None
                framing += len(size_line)
                if framing > _MAX_CHUNK_FRAMING_BYTES:
                    raise _HttpError(400, "Chunked framing too large")
                size = _chunk_size(size_line)
                if size == 0:
                    while True:  # trailers, up to an empty line
                        try:
                            line = await self._timed(reader.readuntil(b"\r\n"), timeout, writer, "request")
                        except asyncio.LimitOverrunError:
                            raise _HttpError(400, "Chunked framing too large") from None
                        framing += len(line)
                        if framing > _MAX_CHUNK_FRAMING_BYTES:
                            raise _HttpError(400, "Chunked framing too large")
                        if line == b"\r\n":
                            return b"".join(parts)
                total += size
                if total > self.max_body:
                    raise _HttpError(413, "Request body too large")
                parts.append(await self._timed(reader.readexactly(size), timeout, writer, "request"))
                if await self._timed(reader.readexactly(2), timeout, writer, "request") != b"\r\n":
                    raise _HttpError(400, "Bad chunk: data must end with CRLF")
        length_raw = headers.get("content-length")
        if not length_raw:
            return b""
        if not _CONTENT_LENGTH_RE.fullmatch(length_raw):
            raise _HttpError(400, "Bad Content-Length")
        # (int() refuses more than 4300 digits: check the length first)
        length = int(length_raw) if len(length_raw) <= 18 else self.max_body + 1
        if length > self.max_body:
            raise _HttpError(413, "Request body too large")
        return await self._timed(reader.readexactly(length), timeout, writer, "request") if length else b""

    async def _parse(
        self,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: str,
    ) -> tuple[Request, bool]:
        lines = head[:-4].lstrip(b"\r\n").split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _HttpError(400, "Bad request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise _HttpError(400, "Bad header line")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(reader, writer, headers)
        if target.startswith(("http://", "https://")):
            # absolute-form (proxies): keep only the path and query
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
        path, _, query = target.partition("?")
        connection = headers.get("connection", "").lower()
        # HTTP/1.1 keeps the connection open unless told otherwise; HTTP/1.0 the reverse.
        keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        return Request(method.upper(), path, query, headers, body, client), keep_alive
