"""Unit tests of SendVerificationOperator that need no HTTP (templating, result shape)."""

from __future__ import annotations

import pytest

from airflow_sfox.operators.verification import SendVerificationOperator, mask_destination


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("jane.doe@example.com", "j***@example.com"),
        ("a@b.co", "a***@b.co"),
        ("+12223334444", "**********44"),
        ("12", "12"),
        ("", ""),
        (None, ""),
        (42, ""),
    ],
)
def test_mask_destination(value, masked):
    assert mask_destination(value) == masked


def test_template_fields_are_rendered():
    from airflow.sdk import DAG

    with DAG("render_test", schedule=None):
        op = SendVerificationOperator(
            task_id="send",
            user_id="{{ params.user_id }}",
            verification_type="{{ params.kind }}",
            params={"user_id": "client_7", "kind": "sms"},
        )
    op.render_template_fields({"params": {"user_id": "client_7", "kind": "sms"}})
    assert (op.user_id, op.verification_type) == ("client_7", "sms")
    assert set(SendVerificationOperator.template_fields) == {"user_id", "verification_type"}


def test_defaults():
    op = SendVerificationOperator(task_id="send", user_id="u1", verification_type="email")
    assert op.sfox_conn_id == "sfox_default"
    assert op.fail_if_already_verified is False


@pytest.mark.parametrize(
    ("kwargs", "template"),
    [
        ({}, "{{ task.verification_type }} {{ task.user_id }}"),
        ({"map_index_template": "{{ task.user_id }}"}, "{{ task.user_id }}"),
    ],
)
def test_partial_sets_a_readable_map_index_label(kwargs, template):
    from airflow.sdk import DAG

    with DAG("label_test", schedule=None):
        mapped = SendVerificationOperator.partial(task_id="send", verification_type="email", **kwargs).expand(
            user_id=["a", "b"]
        )
    assert mapped.map_index_template == template


def test_default_connection_id_is_the_hooks():
    from airflow_sfox.hooks.sfox import SfoxConnectHook
    from airflow_sfox.operators.verification import DEFAULT_SFOX_CONN_ID

    assert SfoxConnectHook.default_conn_name == DEFAULT_SFOX_CONN_ID
