"""The request journal: one entry per ``/v1/`` request, the latest ``journal_size`` kept."""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from sfox_sandbox.model import CHANNELS

# Canonical copies of the short strings every journal entry repeats (saves ~100 B an entry).
_SHARED_STRINGS = {s: s for s in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", *CHANNELS)}


@dataclass(slots=True)
class JournalEntry:
    """One ``/v1/`` request as the sandbox saw it.

    ``status`` is the HTTP status answered, or ``"reset"`` (connection reset before
    processing) or ``"dropped"`` (processed, then the connection was reset instead of
    answered). ``fault`` names the injected fault, if any (``error_500``, ``error_503``,
    ``reset``, ``hang``, ``drop``, ``outage``, ``unprocessable``, ``register_lost``,
    ``register_503``, ``register_timeout``). ``type`` is the verification channel of the
    request body, when it had one (``email`` for a register-account that sent the first
    code). ``user_id`` is the one of the path, or of the body for register-account.
    """

    seq: int
    time: float
    method: str
    path: str
    user_id: str | None
    status: int | str
    code_sent: bool
    type: str | None
    client: str
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as a JSON-ready dict."""
        return asdict(self)


class Journal:
    """The latest ``size`` entries in arrival order, ``seq`` increasing by one from entry to
    entry (it keeps counting when old entries leave). Not locked: its owner holds the lock.

    :param size: most entries kept.
    """

    def __init__(self, size: int) -> None:
        self.entries: deque[JournalEntry] = deque(maxlen=size)
        self.seq = 0

    def record(
        self,
        *,
        method: str,
        path: str,
        user_id: str | None,
        status: int | str,
        code_sent: bool,
        channel: str | None,
        client: str,
        fault: str | None = None,
    ) -> JournalEntry:
        """Append one entry (when the journal is full the oldest entry is dropped)."""
        self.seq += 1
        entry = JournalEntry(
            seq=self.seq,
            time=time.time(),
            method=_SHARED_STRINGS.get(method, method),
            path=path,
            user_id=user_id,
            status=status,
            code_sent=code_sent,
            type=_SHARED_STRINGS.get(channel, channel) if channel is not None else None,
            client=client,
            fault=fault,
        )
        self.entries.append(entry)
        return entry

    def since(self, since: int = 0) -> list[JournalEntry]:
        """The entries whose ``seq`` is greater than ``since``, in O(entries returned)."""
        # seq grows by one per entry and entries leave only from the left, so the last
        # ``self.seq - since`` entries are exactly those with ``seq > since``.
        wanted = self.seq - since
        if wanted <= 0:
            return []
        if wanted >= len(self.entries):
            return list(self.entries)
        entries = list(itertools.islice(reversed(self.entries), wanted))
        entries.reverse()
        return entries
