"""The user list (``GET /v1/enterprise/users``): streamed in pieces, paged when asked to.

sFOX documents no pagination: by default the whole list is one answer, streamed in pieces of
:data:`LIST_BATCH` users so it is never held whole in memory. ``PUT /_sandbox/list`` turns on
pages (see :class:`ListSettings`) and a fault that cuts the body off mid-stream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sfox_sandbox.answers import ApiError, StreamCut

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator, Mapping

    from sfox_sandbox.users import GeneratedUsers, SandboxUser

#: Keys a paginated list may name its next page under; URL keys carry a path, others a cursor.
LIST_NEXT_KEYS = ("next", "next_url", "links.next", "next_cursor", "cursor", "meta.next_cursor")
_LIST_URL_KEYS = ("next", "next_url", "links.next")
#: Users serialised per piece of a streamed list body (one lock hold, ~250 KB).
LIST_BATCH = 1000


@dataclass(frozen=True)
class ListSettings:
    """How ``GET /v1/enterprise/users`` pages (``PUT /_sandbox/list``); off by default.

    :param page_size: users per page; ``0``: one answer with every user (sFOX's documented
        behaviour), streamed.
    :param next_key: where a page names the next one (see :data:`LIST_NEXT_KEYS`; dotted keys
        nest: ``links.next`` is ``{"links": {"next": ...}}``). URL keys hold a path
        ``/v1/enterprise/users?cursor=...``, the others the cursor itself; the client sends
        the cursor back as ``?cursor=``. The last page has no such key.
    :param next_first: put that key before ``data`` instead of after it.
    :param cut_after: a fault: reset the connection once this many users of a list body were
        sent (the body breaks off mid-stream); ``0``: off.
    """

    page_size: int = 0
    next_key: str = "next"
    next_first: bool = False
    cut_after: int = 0

    def updated(self, changes: Mapping[str, Any]) -> ListSettings:
        """A copy with a partial update applied; ``ValueError`` on an invalid one."""
        values = asdict(self)
        for key, value in changes.items():
            if key not in values:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(values))}")
            values[key] = value
        page_size, next_key, next_first = values["page_size"], values["next_key"], values["next_first"]
        for name in ("page_size", "cut_after"):
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        if next_key not in LIST_NEXT_KEYS:
            raise ValueError(f"next_key must be one of {', '.join(LIST_NEXT_KEYS)}")
        if not isinstance(next_first, bool):
            raise ValueError("next_first must be a boolean")
        return ListSettings(page_size, next_key, next_first, values["cut_after"])

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)


def list_body(
    lock: threading.RLock,
    role: str | None,
    explicit: list[SandboxUser],
    blocks: list[GeneratedUsers],
    cursor: str | None,
    settings: ListSettings,
    account_role: str | None,
) -> Iterator[bytes]:
    """The body of one list answer, in pieces, from snapshots of the users and ranges.

    :param lock: the state's lock, held per piece (never across the whole list).
    :param role: keep users of this role only (lower case), or all.
    :param cursor: ``?cursor=`` of the request.
    :param account_role: ``?accountRole=`` as sent (repeated in next-page URLs).
    :raises ApiError: 400 on an invalid cursor.
    """
    position = _parse_cursor(cursor)
    if position[0] > len(blocks):
        raise ApiError(400, "Invalid cursor")
    walk = _ListWalk(lock, role, explicit, blocks)
    stream = _page(walk, position, settings, account_role) if settings.page_size else _whole(walk, position)
    return _cut(stream, settings.cut_after) if settings.cut_after else stream


def _whole(walk: _ListWalk, position: tuple[int, int]) -> Iterator[bytes]:
    """One answer with every user from ``position`` (sFOX's documented behaviour)."""
    yield b'{"data":['
    separator = b""
    at: tuple[int, int] | None = position
    while at is not None:
        parts, at = walk.batch(at, LIST_BATCH)
        if parts:
            yield separator + b",".join(parts)
            separator = b","
    yield b"]}"


def _page(
    walk: _ListWalk, position: tuple[int, int], settings: ListSettings, account_role: str | None
) -> Iterator[bytes]:
    """One page from ``position``, naming the next one under ``settings.next_key``."""
    parts, at = walk.batch(position, settings.page_size)
    if at is not None and not walk.batch(at, 1)[0]:
        at = None  # nothing after this page
    key_json = b""
    if at is not None:
        cursor = f"{at[0]}.{at[1]}"
        value: str = cursor
        if settings.next_key in _LIST_URL_KEYS:
            value = "/v1/enterprise/users?" + (f"accountRole={account_role}&" if account_role else "")
            value += f"cursor={cursor}"
        head, _, tail = settings.next_key.partition(".")
        named: Any = {tail: value} if tail else value
        key_json = json.dumps(head).encode() + b":" + json.dumps(named, separators=(",", ":")).encode()
    if settings.next_first and key_json:
        yield b"{" + key_json + b',"data":['
    else:
        yield b'{"data":['
    for start in range(0, len(parts), LIST_BATCH):
        yield (b"," if start else b"") + b",".join(parts[start : start + LIST_BATCH])
    yield b"]}" if settings.next_first or not key_json else b"]," + key_json + b"}"


def _cut(pieces: Iterator[bytes], users: int) -> Iterator[bytes]:
    """Pass a list body on until ``users`` users went out (counted by ``"user_id"``), then
    raise :class:`StreamCut` in the middle of the next user."""
    sent = 0
    for piece in pieces:
        count = piece.count(b'"user_id":')
        if sent + count >= users:
            at = -1
            for _ in range(users - sent + 1):  # the first user past the limit, if in this piece
                at = piece.find(b'"user_id":', at + 1)
            yield piece[: at + 5] if at >= 0 else piece
            raise StreamCut
        sent += count
        yield piece


def _parse_cursor(cursor: str | None) -> tuple[int, int]:
    """``"<segment>.<offset>"`` (segment 0: seeded users, k: the k-th generated range)."""
    if cursor is None:
        return (0, 0)
    segment, dot, offset = cursor.partition(".")
    if not (dot and segment.isascii() and segment.isdigit() and offset.isascii() and offset.isdigit()):
        raise ApiError(400, "Invalid cursor")
    return (int(segment), int(offset))


class _ListWalk:
    """One request's walk over the user list, from snapshots of the seeded users and ranges."""

    def __init__(
        self,
        lock: threading.RLock,
        role: str | None,
        explicit: list[SandboxUser],
        blocks: list[GeneratedUsers],
    ) -> None:
        self.lock = lock
        self.role = role
        self.explicit = explicit
        self.blocks = blocks

    def batch(self, at: tuple[int, int], limit: int) -> tuple[list[bytes], tuple[int, int] | None]:
        """Up to ``limit`` users' JSON from position ``at``; return them and the position after
        the last one (``None`` at the end of the list)."""
        role = self.role
        parts: list[bytes] = []
        segment, offset = at
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        with self.lock:
            while segment <= len(self.blocks):
                if segment == 0:
                    source = self.explicit
                    while offset < len(source) and len(parts) < limit:
                        user = source[offset]
                        offset += 1
                        if role is None or user.account_role == role:
                            parts.append(dumps(user.to_api()).encode())
                else:
                    block = self.blocks[segment - 1]
                    if role == "advisor":
                        # Generated users are clients: only changed ones may be advisors.
                        for changed in sorted(k for k in block.changed if k >= offset):
                            if len(parts) >= limit:
                                break
                            offset = changed + 1
                            if block.changed[changed].account_role == role:
                                parts.append(dumps(block.changed[changed].to_api()).encode())
                        else:
                            offset = block.count
                    else:
                        while offset < block.count and len(parts) < limit:
                            user = block.get(offset)
                            offset += 1
                            if role is None or user.account_role == role:
                                parts.append(dumps(user.to_api()).encode())
                if len(parts) >= limit:
                    return parts, (segment, offset)
                segment, offset = segment + 1, 0
        return parts, None
