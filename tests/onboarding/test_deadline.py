"""
The deadline on run duration: the factory's Airflow Deadline Alert, and its callback as the
triggerer calls it (a real run whose deadline passes is in tests/live/test_live_deadline.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_sfox._compat import AsyncCallback, DeadlineAlert, DeadlineReference, SyncCallback
from airflow_sfox.onboarding import metrics
from airflow_sfox.onboarding.alerts import deadline_missed
from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag
from airflow_sfox.onboarding.warehouse import Warehouse
from tests.onboarding.deadline_notifier import FAILING, RECORDER, FileNotifier, said

QUEUED = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
DUE = QUEUED + timedelta(hours=1)
CALLBACK = "airflow_sfox.onboarding.alerts.deadline_missed"


def _dag(**kwargs):
    return onboarding_dag(dag_id="deadline", source=OnboardingSource(), schedule=None, **kwargs)


def _serialized_deadline(dag) -> list:
    """The DAG's deadline as the dag-processor stores it (the serializer's name differs by version)."""
    try:  # Airflow 3.2+
        from airflow.serialization.serialized_objects import DagSerialization as serializer
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as serializer
    return json.loads(json.dumps(serializer.to_dict(dag)))["dag"]["deadline"]


def test_the_dag_carries_a_deadline_alert_on_run_duration(tmp_path):
    notifier = AsyncCallback(RECORDER, kwargs={"path": str(tmp_path / "said"), "text": "late"})
    dag = _dag(deadline=timedelta(minutes=90), on_deadline=[notifier], warehouse_schema="ops")

    [alert] = dag.deadline
    assert isinstance(alert, DeadlineAlert)
    assert type(alert.reference) is type(DeadlineReference.DAGRUN_QUEUED_AT)
    assert alert.interval == timedelta(minutes=90)
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == CALLBACK
    assert alert.callback.kwargs == {
        "warehouse_conn_id": "sfox_warehouse",
        "warehouse_schema": "ops",
        "notifiers": [{"path": RECORDER, "kwargs": {"path": str(tmp_path / "said"), "text": "late"}}],
    }
    assert CALLBACK in json.dumps(_serialized_deadline(dag))  # the dag-processor can store it


def test_no_deadline_unless_asked():
    assert not _dag().deadline


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"on_deadline": [AsyncCallback(RECORDER)]}, ValueError, "on_deadline needs deadline"),
        ({"deadline": timedelta(0)}, ValueError, "deadline must be positive"),
        ({"deadline": 3600}, TypeError, "deadline must be a datetime.timedelta"),
        # on_failure's kind of notifier: an object the triggerer cannot rebuild
        ({"deadline": timedelta(hours=1), "on_deadline": [FileNotifier(path="x")]}, TypeError, "on_deadline"),
        ({"deadline": timedelta(hours=1), "on_deadline": [SyncCallback(RECORDER)]}, TypeError, "on_deadline"),
    ],
    ids=["no-deadline", "zero", "seconds", "notifier-object", "sync-callback"],
)
def test_bad_deadline_arguments_are_refused_at_parse_time(kwargs, error, match):
    with pytest.raises(error, match=match):
        _dag(**kwargs)


@pytest.fixture
def warehouse(tmp_path, monkeypatch) -> Warehouse:
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    return warehouse


@pytest.fixture
def counted(monkeypatch) -> list[tuple[str, dict]]:
    """The metrics counted, as (name, tags)."""
    calls: list[tuple[str, dict]] = []

    class Recording:
        @staticmethod
        def incr(name, count=1, *, tags=None):
            calls.extend([(name, tags)] * count)

    monkeypatch.setattr(metrics, "_stats", lambda: Recording)
    return calls


def _miss(notifiers, *, run_id="r1", end_date=None, conn_id="sfox_warehouse") -> None:
    """Call the callback as the triggerer does, with Airflow's context of a missed deadline."""
    run = {"dag_run_id": run_id, "dag_id": "d", "queued_at": QUEUED.isoformat(), "state": "running"}
    run.update(end_date=end_date and end_date.isoformat().replace("+00:00", "Z"), conf={"chunk_size": 10})
    context = {"dag_run": run, "deadline": {"id": "0190", "deadline_time": DUE}}
    asyncio.run(deadline_missed(warehouse_conn_id=conn_id, notifiers=notifiers, context=context))


RUNNING = "Progress: 1 of 4 chunk steps done, 30 users planned, 12 requests to sFOX so far (2 answered 429)"
PROGRESS = {"planned": 30, "steps": 4, "steps_done": 1, "requests": 12, "rate_limited": 2}


@pytest.mark.parametrize(
    ("row", "miss", "expected"),
    [
        (PROGRESS, {}, RUNNING),
        # Airflow keeps the deadline of a run that failed: ended before it, the failure alert said it all
        (PROGRESS, {"end_date": DUE - timedelta(minutes=5)}, None),
        (PROGRESS, {"end_date": DUE + timedelta(minutes=5)}, "Progress: 1 of 4 chunk steps done"),
        (None, {}, "Progress: unknown (the plan has not finished)"),
        (PROGRESS, {"conn_id": "no_such_conn"}, "Progress: unknown (the warehouse could not be read"),
    ],
    ids=["running", "failed-in-time", "ended-late", "not-planned-yet", "warehouse-down"],
)
def test_a_missed_deadline_says_the_run_and_its_progress_once(
    warehouse, counted, tmp_path, row, miss, expected
):
    if row is not None:
        warehouse.write_run({"run_id": "r1", "dag_id": "d", "status": "running", **row})
    log = tmp_path / "said"

    _miss([{"path": RECORDER, "kwargs": {"path": str(log), "text": "{{ sfox_summary }}"}}], **miss)

    if expected is None:
        assert (said(log), counted) == ([], [])
        return
    [message] = said(log)
    first, second = message["text"].splitlines()
    assert first == f"sFOX onboarding run r1 of d: still running past its deadline ({DUE.isoformat()})"
    assert second.startswith(expected)
    assert message["sfox_run"]["run_id"] == "r1"
    assert counted == [("sfox.deadline_missed", {"dag_id": "d"})]


def test_a_failing_notifier_does_not_silence_the_others(warehouse, counted, tmp_path):
    log = tmp_path / "said"
    notifiers = [{"path": FAILING, "kwargs": {}}, {"path": RECORDER, "kwargs": {"path": str(log)}}]
    # Raised after every notifier was called: Airflow records the callback as failed.
    with pytest.raises(RuntimeError, match="1 of 2 deadline notifiers failed"):
        _miss(notifiers)
    assert len(said(log)) == 1
