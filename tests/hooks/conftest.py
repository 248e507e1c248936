from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING

import pytest

from airflow_sfox.hooks.sfox import SfoxConnectHook
from tests.helpers import sfox_conn_json

if TYPE_CHECKING:
    from collections.abc import Callable

BASE_URL = "https://api.sfox.test"
#: A loopback host (the local sandbox): the budget rules of a real sFOX host do not apply.
LOOPBACK_URL = "http://127.0.0.1:8089"


class FakeClock:
    """A monotonic clock whose ``sleep`` advances time at once and records each wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[tuple[str, float]] = []
        self.on_sleep: Callable[[float], None] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append((threading.current_thread().name, seconds))
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        with self._lock:
            self.now += seconds

    @property
    def waits(self) -> list[float]:
        return [seconds for _, seconds in self.sleeps]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_hook(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Callable[..., SfoxConnectHook]:
    """Build a hook on a fake clock whose connection ``sfox_default`` has the given extras."""

    def make(*, host: str = BASE_URL, password: str | None = "tok", **extra: object) -> SfoxConnectHook:
        monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(host, password=password, **extra))
        return SfoxConnectHook(clock=clock, sleep=clock.sleep, rng=random.Random(7))

    return make
