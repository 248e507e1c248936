"""
Reading sFOX's user list as a stream: one user object at a time, and the next page a list
answer may name (sFOX documents no pagination; it is followed only when present).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import ijson
import requests

from airflow_sfox.exceptions import SfoxError, SfoxPaginationError, SfoxStreamInterruptedError

if TYPE_CHECKING:
    from collections.abc import Generator, Mapping

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


def stream_users(
    response: requests.Response, path: str, base_url: str
) -> Generator[dict[str, Any], None, tuple[str, str] | None]:
    """
    Yield the users of one streamed page; return the next page it names (or ``None``).

    :param response: the open response (``stream=True``), read but not closed.
    :param path: the URL path it answers, for errors.
    :param base_url: the connection's base URL, for errors.
    :raises SfoxStreamInterruptedError: the body broke off or ended before its JSON did.
    :raises SfoxError: the body is not JSON.
    """
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
            return None  # an empty body: no users
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
            f"{type(err).__name__} reading the body from {base_url}, after {count} users",
            status_code=response.status_code,
            method="GET",
            path=path,
        ) from None
    return next_page(found)


def next_page(found: Mapping[str, Any]) -> tuple[str, str] | None:
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


def next_page_path(url: str, path: str, base_url: str) -> tuple[str, dict[str, str]]:
    """
    A next-page URL or path as (path under the base URL, query).

    :raises SfoxPaginationError: the page is not under the base URL (the token goes only there).
    """
    full = urljoin(base_url + "/", url)
    parts, base_parts = urlsplit(full), urlsplit(base_url)
    same_origin = (parts.scheme, parts.netloc) == (base_parts.scheme, base_parts.netloc)
    if not same_origin or not (parts.path + "/").startswith(base_parts.path.rstrip("/") + "/"):
        raise SfoxPaginationError(
            f"the user list's next page is not under {base_url}", method="GET", path=path
        )
    return parts.path[len(base_parts.path.rstrip("/")) :], dict(parse_qsl(parts.query))
