"""sFOX's rate limit as the sandbox applies it: a sliding window per client, then a block."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sfox_sandbox.config import RateLimitSettings


class RateLimiter:
    """Sliding-window log per client address, with a block once the limit is passed."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def clear(self) -> None:
        """Forget every window and block."""
        self._hits.clear()
        self._blocked_until.clear()

    def check(self, key: str, now: float, settings: RateLimitSettings) -> float | None:
        """Count one request; return the seconds left in the block when it must get 429.

        :param key: client address.
        :param now: ``time.monotonic()`` of the request.
        :param settings: current rate-limit settings.
        """
        if settings.limit <= 0:
            return None
        until = self._blocked_until.get(key)
        if until is not None:
            if now < until:
                return until - now
            # Block over: start from an empty window, as after a real 60 s wait.
            del self._blocked_until[key]
            self._hits.pop(key, None)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        cutoff = now - settings.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= settings.limit:
            hits.clear()
            self._blocked_until[key] = now + settings.block
            return settings.block
        hits.append(now)
        return None

    def blocked(self, now: float) -> dict[str, float]:
        """Return client address to seconds left, for the blocks still running."""
        return {key: until - now for key, until in self._blocked_until.items() if until > now}
