"""The live tests' sharing rules (tests/live/fixtures.py), without an Airflow."""

from __future__ import annotations

import pytest

from tests.live.fixtures import configure, order_live_tests


class FakeAirflow:
    """Records which components the shared Airflow would restart, with which environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.base_env = dict(env)
        self.env = dict(env)
        self.restarted: list[tuple[str, dict[str, str]]] = []

    def restart(self, component: str) -> None:
        self.restarted.append((component, dict(self.env)))


BASE = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False", "AIRFLOW__CORE__PARALLELISM": "2"}
JOB_SCHEDULE = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True"}
REPARSE = {"AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5"}


@pytest.mark.parametrize(
    ("previous", "settings", "restarted"),
    [
        ({}, {}, []),
        ({}, JOB_SCHEDULE, ["scheduler"]),
        (JOB_SCHEDULE, JOB_SCHEDULE, []),
        (JOB_SCHEDULE, {}, ["scheduler"]),  # back to the base settings
        (JOB_SCHEDULE, {**JOB_SCHEDULE, **REPARSE}, ["dag-processor"]),
        ({}, {"AIRFLOW__CORE__PARALLELISM": "4"}, ["dag-processor", "scheduler", "triggerer"]),
    ],
    ids=["same", "scheduler-setting", "unchanged", "reverted", "dag-processor-setting", "core-setting"],
)
def test_a_module_s_settings_restart_only_the_components_that_read_them(previous, settings, restarted):
    airflow = FakeAirflow(BASE)
    airflow.env = {**BASE, **previous}
    configure(airflow, settings)  # type: ignore[arg-type]
    assert [component for component, _ in airflow.restarted] == restarted
    assert airflow.env == {**BASE, **settings}
    assert all(env == {**BASE, **settings} for _, env in airflow.restarted)


class FakeItem:
    def __init__(self, name: str, live: bool, fixtures: tuple[str, ...] = ()) -> None:
        self.name = name
        self.fixturenames = fixtures
        self._live = live

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "live" and self._live else None


def test_the_live_tier_runs_last_and_the_shared_airflow_at_the_very_end():
    items = [
        FakeItem("shared-1", True, ("live_airflow",)),
        FakeItem("unit-1", False),
        FakeItem("celery", True, ("databases",)),
        FakeItem("page", True, ("shared_airflow",)),
        FakeItem("unit-2", False, ("postgres_uri",)),
        FakeItem("shared-2", True, ("live_airflow", "sandbox")),
    ]
    order_live_tests(items)  # type: ignore[arg-type]
    assert [item.name for item in items] == ["unit-1", "unit-2", "celery", "shared-1", "page", "shared-2"]
