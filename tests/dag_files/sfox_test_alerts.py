"""Test DAG: the factory with notifiers that record what they were asked to say (tests/onboarding)."""

from __future__ import annotations

from airflow.sdk import BaseNotifier

from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag


class Recorder(BaseNotifier):
    """A notifier that keeps what it was asked to say (its template is rendered like Slack's)."""

    template_fields = ("text",)

    def __init__(self, text: str = "{{ sfox_summary }}") -> None:
        super().__init__()
        self.text = text
        self.sent: list[str] = []

    def notify(self, context) -> None:
        self.sent.append(self.text)


failures, recoveries = Recorder(), Recorder()
dag = onboarding_dag(
    dag_id="sfox_test_alerts",
    source=OnboardingSource(),
    schedule=None,
    params={"chunk_size": 50},
    on_failure=[failures],
    on_recovery=[recoveries],
)
