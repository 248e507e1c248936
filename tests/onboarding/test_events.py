"""Reading the user_ids of email-verified asset events."""

from __future__ import annotations

import pytest

from airflow_sfox.onboarding.events import chunk_descriptors, event_user_ids


@pytest.mark.parametrize(
    ("extras", "ids", "malformed"),
    [
        ([{"user_ids": ["a", "b"]}, {"user_ids": ["b", "c"]}], ["a", "b", "c"], 0),  # a burst, once each
        ([{"from_rest_api": True, "user_ids": [7, "8"]}], ["7", "8"], 0),  # posted through the REST API
        ([{"from_trigger": True, "payload": {"user_ids": ["w1"]}}], ["w1"], 0),  # from the watcher
        ([{"user_ids": ["", "x" * 129, "a\nb", True, None, {"id": 1}, "ok"]}], ["ok"], 6),
        ([{"user_ids": "a,b"}, {}, None, {"payload": "x"}], [], 4),  # no list of ids
    ],
    ids=["burst", "rest-api", "watcher", "bad-ids", "no-list"],
)
def test_event_user_ids(extras, ids, malformed):
    assert event_user_ids(extras) == (ids, malformed)


@pytest.mark.parametrize(
    ("due", "size", "users"),
    [(0, 10, []), (3, 10, [3]), (10, 10, [10]), (25, 10, [10, 10, 5])],
)
def test_chunk_descriptors_cover_every_queued_sms_once(due, size, users):
    chunks = chunk_descriptors(due, size, hold_uncertain=False)
    assert [c["users"] for c in chunks] == [c["sms"] for c in chunks] == users
    assert [c["chunks"] for c in chunks] == [[i, i] for i in range(len(users))]
    assert {c["email"] for c in chunks} <= {0}
