"""Email-verified asset events: their ids, their keys, and each event judged once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_sfox.onboarding.events import AFTER_EMAIL, EventPlan, event_key, event_user_ids, plan_events
from airflow_sfox.onboarding.model import AccountType, Channel, RunRef
from airflow_sfox.onboarding.warehouse import Warehouse

URI = "sfox://api.sfox.com/email-verified"
AT = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("extras", "ids", "malformed"),
    [
        ([{"user_ids": ["a", "b"]}, {"user_ids": ["b", "c"]}], ["a", "b", "c"], {}),  # a burst, once each
        ([{"from_rest_api": True, "user_ids": [7, "8"]}], ["7", "8"], {}),  # posted through the REST API
        ([{"from_trigger": True, "payload": {"user_ids": ["w1"]}}], ["w1"], {}),  # from the watcher
        ([{"user_ids": ["a/..", "x/../y"]}], ["a/..", "x/../y"], {}),  # odd, but one path segment each
        (
            [{"user_ids": ["", "x" * 2_000_000, "a\nb", True, None, {"id": 1}, "ok", ".."]}],
            ["ok"],
            {
                "user_id is empty": 1,
                "user_id is longer than 128 characters": 1,
                "user_id contains control characters": 1,
                "user_id is not text": 3,
                "user_id cannot be '.' or '..'": 1,
            },
        ),
        ([{"user_ids": "a,b"}, {}, None, {"payload": "x"}], [], {"user_ids is not a list": 4}),
    ],
    ids=["burst", "rest-api", "watcher", "dots", "bad-ids", "no-list"],
)
def test_event_user_ids(extras, ids, malformed):
    found, bad = event_user_ids(extras)
    assert found == ids
    assert dict(bad) == malformed


def _sdk_events(*, timestamp: datetime, map_index: int | None, source_dag_id: str | None = None):
    """The same event as the Task SDK hands it to a run: a triggering event, and an inlet event."""
    from airflow.sdk.api.datamodels._generated import (
        AssetEventDagRunReference,
        AssetEventResponse,
        AssetReferenceAssetEventDagRun,
        AssetResponse,
    )

    source = {"source_dag_id": source_dag_id, "source_run_id": None, "source_task_id": None}
    triggering = AssetEventDagRunReference(
        asset=AssetReferenceAssetEventDagRun(name="sfox_email_verified", uri=URI, extra={}),
        extra={"user_ids": ["u1"]},
        source_aliases=[],
        timestamp=timestamp,
        source_map_index=map_index,
        **source,
    )
    inlet = AssetEventResponse(
        id=42,
        asset=AssetResponse(name="sfox_email_verified", uri=URI, group="asset"),
        extra={"user_ids": ["u1"]},
        created_dagruns=[],
        timestamp=timestamp.astimezone(timezone(timedelta(hours=2))),  # the same instant
        source_map_index=-1 if map_index is None else map_index,
        **source,
    )
    return triggering, inlet


def test_an_event_has_one_key_as_a_triggering_event_and_as_an_inlet_event():
    triggering, inlet = _sdk_events(timestamp=AT, map_index=None)
    assert event_key(triggering) == event_key(inlet)
    assert len(event_key(inlet)) == 64  # fits the events table's key column


@pytest.mark.parametrize(
    "other",
    [
        {"timestamp": AT + timedelta(microseconds=1), "map_index": None},
        {"timestamp": AT, "map_index": 3},
        {"timestamp": AT, "map_index": None, "source_dag_id": "load_users"},
    ],
    ids=["a microsecond later", "mapped", "from a DAG"],
)
def test_other_events_have_other_keys(other):
    assert event_key(_sdk_events(timestamp=AT, map_index=None)[0]) != event_key(_sdk_events(**other)[1])


def _ledger(warehouse: Warehouse, rows: list[tuple[str, str, str, str]]) -> None:
    """Ledger rows ``(user_id, channel, account_type, state)`` as earlier runs left them."""
    warehouse.create_tables()
    with warehouse.connect() as conn:
        warehouse.upsert_plan(conn, [(*row, None, None) for row in rows], run=RunRef("sfox_test", "hourly"))
        conn.commit()


def _plan(warehouse: Warehouse, events, run_id: str, *, dry_run: bool = False) -> EventPlan:
    return plan_events(warehouse, events, run=RunRef("sfox_test", run_id), chunk_size=3, dry_run=dry_run)


@pytest.fixture
def warehouse(warehouse_db):
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    _ledger(
        warehouse,
        [(f"i{n}", "email", "individual", "sent") for n in range(5)]
        + [("c0", "email", "corporation", "sent"), ("i9", "email", "individual", "queued")],
    )
    return warehouse


def test_an_event_handed_to_two_runs_is_judged_by_the_first(warehouse):
    first = [("e1", {"user_ids": ["i0", "i1", "c0"]}), ("e2", {"user_ids": ["i2", "x" * 200]})]
    run1 = _plan(warehouse, first, "run-1")
    assert (run1.events, run1.events_seen, run1.queued) == (2, 0, 3)
    assert run1.due == {AccountType.INDIVIDUAL: ["i0", "i1", "i2"]}
    assert dict(run1.skips) == {"corporation": 1}
    assert sum(run1.malformed.values()) == 1

    # Airflow hands the next run the same events again, with a new one.
    run2 = _plan(warehouse, [*first, ("e3", {"user_ids": ["i3", "i9", "nobody"]})], "run-2")
    assert (run2.events, run2.events_seen, run2.queued) == (1, 2, 1)
    assert run2.user_ids == ["i3", "i9", "nobody"]
    assert dict(run2.skips) == {"email_not_requested": 1, "unknown": 1}
    assert not run2.malformed  # e2's bad id was reported by run-1, and only there
    counts = run2.counts(dry_run=False)
    assert (counts["events"], counts["events_seen"], counts["malformed_ids"], counts["rejected"]) == (
        1,
        2,
        0,
        0,
    )
    assert counts["due_individual_sms"] == 1
    # Ids given by hand (no event key) are judged by every run.
    run3 = _plan(warehouse, [(None, {"user_ids": ["i4"]})], "run-3")
    assert (run3.events, run3.queued) == (0, 1)


def test_200_posted_events_are_counted_as_200(warehouse):
    """A burst: the first run reads them all (its look-ahead), later runs are handed them again."""
    events = [(f"event-{n}", {"user_ids": [f"i{n % 5}", f"nobody-{n}"]}) for n in range(200)]
    counted = [_plan(warehouse, events, "run-1").events]
    for start in (20, 120, 199):
        counted.append(_plan(warehouse, events[start:], f"run-at-{start}").events)
    assert counted == [200, 0, 0, 0]


def test_a_dry_run_writes_nothing_and_judges_again_later(warehouse):
    events = [("e1", {"user_ids": ["i0"]})]
    dry = _plan(warehouse, events, "dry", dry_run=True)
    assert (dry.events, dry.queued) == (1, 1)
    assert _plan(warehouse, events, "real").events == 1  # the dry run recorded nothing


@pytest.mark.parametrize(("due", "size", "users"), [(0, 3, []), (3, 3, [3]), (7, 3, [3, 3, 1])])
def test_chunk_descriptors_cover_every_queued_user_once(due, size, users):
    plan = EventPlan(due={AccountType.INDIVIDUAL: [f"i{n}" for n in range(due)]} if due else {})
    chunks = plan.chunks(size, hold_uncertain=False)
    assert [c["users"] for c in chunks] == [c["sms"] for c in chunks] == users
    assert [c["chunks"] for c in chunks] == [[i, i] for i in range(len(users))]
    assert {c["email"] for c in chunks} <= {0}
    assert [c["label"] for c in chunks][:1] == ([f"individual 1-{min(size, due)}"] if due else [])


def test_the_follow_up_channel_comes_from_the_model_s_channel_rule():
    assert AFTER_EMAIL == {AccountType.INDIVIDUAL: Channel.SMS}


def test_a_failing_event_plan_says_why_on_one_error_line(caplog):
    import logging

    from airflow_sfox.onboarding.runs import plan_event_run

    caplog.set_level(logging.INFO)
    with pytest.raises(Exception, match="no_such_warehouse"):  # Airflow's "connection not found"
        plan_event_run(
            events=[("e1", {"user_ids": ["u1"]})],
            params={},
            run_id="events-1",
            dag_id="sfox_email_verified",
            warehouse_conn_id="no_such_warehouse",
        )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "sFOX onboarding run events-1 of sfox_email_verified: planning failed, nothing was sent: "
    )
    assert "no_such_warehouse" in errors[0]
    assert "\n" not in errors[0]
