"""
The chunk step as an Airflow task: what a step that sent skips of its chunk's later steps.

Airflow honours the skip on a live scheduler (``tests/live/test_live_airflow.py`` checks that the
skipped steps never started); here, which steps a finished step names, and that its figures
still reach XCom.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_sfox._compat import DownstreamTasksSkipped
from airflow_sfox.onboarding.tasks import SendVerificationBatchOperator

LATER = {"email": "individual.send_email", "sms": "individual.send_sms"}


class _TaskInstance:
    """The two things the step asks of its task instance here."""

    def __init__(self, map_index: int) -> None:
        self.map_index = map_index
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def _step(due: dict[str, int], later: dict[str, str] | None) -> SendVerificationBatchOperator:
    chunk = {"account_type": "individual", "label": "individual 1-10", "chunks": [0, 0], **due}
    return SendVerificationBatchOperator(
        task_id="send_registration", chunk=chunk, verification_type="registration", later_steps=later
    )


@pytest.mark.parametrize(
    ("due", "later", "skipped"),
    [
        ({"registration": 10, "email": 0, "sms": 0}, LATER, ["individual.send_email", "individual.send_sms"]),
        ({"registration": 4, "email": 6, "sms": 0}, LATER, ["individual.send_sms"]),
        # An empty step between two with work is skipped too: the next one's rule lets it run.
        ({"registration": 4, "email": 0, "sms": 6}, LATER, ["individual.send_email"]),
        ({"registration": 4, "email": 3, "sms": 3}, LATER, []),
        ({"registration": 10, "email": 0, "sms": 0}, None, []),  # a step outside the factory's graph
    ],
)
def test_a_step_that_sent_skips_the_later_steps_with_nothing_planned(due, later, skipped):
    step, ti = _step(due, later), _TaskInstance(map_index=3)
    figures = {"sent": 10}

    if not skipped:
        step._skip_empty_later_steps({"ti": ti}, figures)
        assert ti.pushed == {}  # Airflow pushes the return value as usual
        return
    with pytest.raises(DownstreamTasksSkipped) as raised:
        step._skip_empty_later_steps({"ti": ti}, figures)
    assert raised.value.tasks == [(task_id, 3) for task_id in skipped]  # this chunk's instances only
    assert ti.pushed == {"return_value": figures}
