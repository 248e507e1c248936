"""An outage window: for a while every ``/v1/`` request gets 503, or its connection is refused.

Set with ``PUT /_sandbox/outage`` (``{"seconds": S, "mode": "503" | "refuse"}``) or
``SandboxServer.set_outage``. ``S`` is in the sandbox's seconds: multiplied by the rate
limit's ``time_scale`` (``0.01``: a one-hour outage lasts 36 real seconds), as the rate
limit's window and block are. ``until`` is the wall-clock end (epoch seconds); the window is
timed on the monotonic clock and ends by itself. Requests answered during it are journaled
with the fault ``outage`` (status ``503``, or ``"refused"``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

#: ``503``: answered ``503 {"error": ...}`` (sFOX's maintenance answer); ``refuse``: the
#: connection is closed without an answer (TCP RST), as when nothing listens.
OUTAGE_MODES: tuple[str, ...] = ("503", "refuse")
OUTAGE_MESSAGE = "Service unavailable: maintenance in progress, try later"


@dataclass(frozen=True)
class Outage:
    """One outage window.

    :param mode: ``503`` or ``refuse``.
    :param until: wall-clock end, epoch seconds.
    :param deadline: ``time.monotonic()`` at the end.
    """

    mode: str
    until: float
    deadline: float

    @classmethod
    def start(cls, seconds: Any, mode: Any = "503", *, time_scale: float = 1.0) -> Outage:
        """An outage from now for ``seconds`` sandbox seconds.

        :raises ValueError: ``seconds`` not a positive finite number, or an unknown ``mode``.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ValueError("seconds must be a number > 0")
        if seconds <= 0:
            raise ValueError("seconds must be a number > 0")
        if mode not in OUTAGE_MODES:
            raise ValueError(f"mode must be one of {', '.join(repr(m) for m in OUTAGE_MODES)}")
        real = float(seconds) * time_scale
        return cls(mode=str(mode), until=time.time() + real, deadline=time.monotonic() + real)

    def active(self, now: float | None = None) -> bool:
        """Whether the window is still open at ``now`` (``time.monotonic()``)."""
        return (time.monotonic() if now is None else now) < self.deadline

    def to_dict(self) -> dict[str, Any]:
        """``{"until", "mode", "seconds_left"}`` (real seconds left)."""
        left = max(0.0, self.deadline - time.monotonic())
        return {"until": self.until, "mode": self.mode, "seconds_left": left}
