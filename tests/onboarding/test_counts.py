"""The shapes a plan hands on: chunk descriptors and count keys, each with one builder."""

from __future__ import annotations

from typing import get_type_hints

import pytest

from airflow_sfox.onboarding.counts import (
    ChunkDescriptor,
    chunk_descriptor,
    codes_due,
    due_counts,
    due_key,
    parse_due_key,
    plan_result,
)
from airflow_sfox.onboarding.model import LEDGER_CHANNELS, AccountType, Channel


@pytest.mark.parametrize(
    ("kind", "channel", "key"),
    [
        ("individual", "email", "due_individual_email"),
        ("individual", "sms", "due_individual_sms"),
        (AccountType.CORPORATION, Channel.EMAIL, "due_corporation_email"),
    ],
)
def test_due_keys_are_built_and_parsed_in_one_place(kind, channel, key):
    assert due_key(kind, channel) == key
    assert parse_due_key(key) == (AccountType(kind), Channel(channel))


@pytest.mark.parametrize("key", ["due_", "due_trust_email", "due_individual_fax", "retry_email", "rejected"])
def test_other_keys_are_not_due_keys(key):
    assert parse_due_key(key) is None


@pytest.mark.parametrize(("kind", "channel"), [("trust", "email"), ("individual", "fax")])
def test_a_due_key_of_an_unknown_type_or_channel_is_refused(kind, channel):
    with pytest.raises(ValueError, match="is not a valid"):
        due_key(kind, channel)


def test_due_counts_reads_the_codes_due_in_the_model_s_order_without_zeros():
    counts = {"due_corporation_email": 2, "due_individual_sms": 0, "due_individual_email": 5, "rejected": 3}
    assert list(due_counts(counts).items()) == [
        ((AccountType.INDIVIDUAL, Channel.EMAIL), 5),
        ((AccountType.CORPORATION, Channel.EMAIL), 2),
    ]


def test_a_chunk_descriptor_has_one_field_per_channel():
    fields = get_type_hints(ChunkDescriptor)
    assert {c.value for c in LEDGER_CHANNELS} <= set(fields)
    chunk = chunk_descriptor(
        "individual", chunks=(2, 3), first_user=11, users=7, due={"sms": 4}, hold_uncertain=True
    )
    assert set(chunk) == set(fields)
    assert chunk == {
        "account_type": "individual",
        "chunks": [2, 3],
        "label": "individual 11-17",
        "users": 7,
        "hold_uncertain": True,
        "registration": 0,
        "email": 0,
        "sms": 4,
    }
    assert [codes_due([chunk, chunk], c) for c in LEDGER_CHANNELS] == [0, 0, 8]


def test_a_plan_result_gives_each_account_type_its_chunks():
    made = [
        chunk_descriptor(kind, chunks=(0, 0), first_user=1, users=1, due={"email": 1}, hold_uncertain=False)
        for kind in ("corporation", "individual", "corporation")
    ]
    result = plan_result({"planned_users": 3}, made)
    assert result["chunks"] == made
    assert result["corporation"] == [made[0], made[2]]
    assert result["individual"] == [made[1]]
