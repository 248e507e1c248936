"""The verification codes the sandbox "sent": history, exact counts, and the one verify accepts."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sfox_sandbox.model import CHANNELS


@dataclass(slots=True)
class SentCode:
    """One verification code the sandbox "sent"."""

    channel: str
    code: str
    time: float


class CodeBook:
    """Codes per user and channel. Not locked: its owner holds the lock.

    ``sent`` holds each user's latest ``history_size`` codes (oldest first); the count and the
    latest code per (user_id, channel) stay exact, and only the latest unused code verifies.

    :param history_size: codes kept per user in ``sent``.
    """

    def __init__(self, history_size: int) -> None:
        self.history_size = history_size
        self.sent: dict[str, deque[SentCode]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._latest: dict[tuple[str, str], SentCode] = {}
        self._pending: dict[tuple[str, str], str] = {}

    def add(self, user_id: str, channel: str, code: str) -> None:
        """Record ``code`` as sent to ``user_id`` by ``channel``; it replaces any unused one."""
        sent = SentCode(channel, code, time.time())
        history = self.sent.get(user_id)
        if history is None:
            history = self.sent[user_id] = deque(maxlen=self.history_size)
        history.append(sent)
        key = (user_id, channel)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._latest[key] = sent
        self._pending[key] = code

    def pending(self, user_id: str, channel: str) -> str | None:
        """The code a verify of ``user_id`` and ``channel`` accepts, if one was sent."""
        return self._pending.get((user_id, channel))

    def use(self, user_id: str, channel: str) -> None:
        """Forget the pending code once it verified."""
        self._pending.pop((user_id, channel), None)

    def summary(self, user_id: str) -> dict[str, Any]:
        """``{"user_id", "email": {"latest", "count", "sent_at"}, "sms": {...}, "history": [...]}``."""
        out: dict[str, Any] = {"user_id": user_id}
        for channel in CHANNELS:
            key = (user_id, channel)
            latest = self._latest.get(key)
            out[channel] = {
                "latest": latest.code if latest else None,
                "count": self._counts.get(key, 0),
                "sent_at": latest.time if latest else None,
            }
        history = self.sent.get(user_id, ())
        out["history"] = [{"type": s.channel, "code": s.code, "time": s.time} for s in history]
        return out
