"""
Notifiers for the deadline tests, importable by a triggerer (``tests.onboarding.deadline_notifier``).

The triggerer builds each from its class path and kwargs, as it builds ``SmtpNotifier`` or
``SlackWebhookNotifier``, and awaits it: what it says is appended to a file, one JSON line each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier

RECORDER = f"{__name__}.FileNotifier"
FAILING = f"{__name__}.FailingNotifier"


class FileNotifier(BaseNotifier):
    """Append the rendered ``text`` and the ``sfox_run`` it was given to ``path``."""

    template_fields = ("text",)

    def __init__(self, *, path: str, text: str = "{{ sfox_summary }}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.text = text

    async def async_notify(self, context: Any) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps({"text": self.text, "sfox_run": context.get("sfox_run")}) + "\n")

    def notify(self, context: Any) -> None:
        raise AssertionError("a deadline notifier is awaited in the triggerer, never called")


class FailingNotifier(BaseNotifier):
    """A notifier whose service is down."""

    async def async_notify(self, context: Any) -> None:
        raise ConnectionError("the notification service is down")


def said(path: str | Path) -> list[dict[str, Any]]:
    """What the FileNotifiers writing to ``path`` said, in order."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
