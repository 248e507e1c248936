"""The operator's hold as the hook, the functions and the command line see it (issue 20)."""

from __future__ import annotations

import argparse
import json
import pickle
from datetime import datetime, timedelta, timezone

import pytest
import requests_mock as rm

from airflow_sfox import cli
from airflow_sfox.exceptions import SfoxHeldError, SfoxRateBudgetError
from airflow_sfox.hooks.budget import current_hold, hold, release
from tests.helpers import sfox_conn_json
from tests.hooks.conftest import BASE_URL

SEND = f"{BASE_URL}/v1/enterprise/users/send-verification/"
OK_EMAIL = {"data": {"user_id": "u1", "type": "email", "email": "jane.doe@example.com"}}
UNTIL = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def mock() -> rm.Mocker:
    with rm.Mocker() as m:
        yield m


@pytest.fixture
def local_conn(monkeypatch, tmp_path) -> str:
    """The connection ``sfox_default`` on the ``local`` backend in a private folder."""
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT",
        sfox_conn_json(BASE_URL, password="secret-token", rate_limit_dir=str(tmp_path / "budget")),
    )
    return "sfox_default"


@pytest.mark.parametrize(
    ("until", "shown"), [(None, "until released"), (UNTIL, "until 2031-01-02T03:04:05+00:00")]
)
def test_a_held_scope_sends_nothing_and_says_until_when(make_hook, mock, until, shown):
    mock.post(rm.ANY, json=OK_EMAIL)
    hook = make_hook(password="secret-token")
    hook.budget.hold(until=until, reason="sFOX maintenance")
    with pytest.raises(SfoxHeldError) as caught:
        hook.send_verification("u1", "email")
    error = caught.value
    assert mock.call_count == 0
    assert isinstance(error, SfoxRateBudgetError)  # the engine stops the chunk, users stay queued
    assert error.retryable
    assert (error.until, error.scope, error.attempts) == (until, "api.sfox.test", 0)
    assert shown in str(error)
    assert "'sfox_default'" in str(error)
    assert "sFOX maintenance" in str(error)
    assert "secret-token" not in str(error)
    assert hook.stats.as_dict()["requests"] == 0


def test_the_held_error_survives_pickling():
    error = SfoxHeldError("held", method="POST", path="/x", until=UNTIL, scope="egress-1")
    error.conn_id = "sfox_default"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is SfoxHeldError
    assert (copy.until, copy.scope, copy.conn_id, str(copy)) == (UNTIL, "egress-1", "sfox_default", "held")


def test_a_hold_set_between_retries_stops_the_next_attempt(make_hook, mock, clock):
    mock.post(f"{SEND}u1", status_code=503, json={"error": "maintenance"})
    hook = make_hook()

    def operator_holds(seconds: float) -> None:
        hook.budget.hold(until=None)

    clock.on_sleep = operator_holds
    with pytest.raises(SfoxHeldError) as caught:
        hook.send_verification("u1", "email")
    assert mock.call_count == 1
    assert caught.value.attempts == 1


def test_hold_release_and_current_hold_through_the_connection(local_conn, make_hook, mock):
    assert current_hold(local_conn) is None
    shown = hold(local_conn, until=UNTIL, reason="change freeze")
    assert shown == current_hold(local_conn)
    assert shown is not None
    assert {key: shown[key] for key in ("scope", "reason", "until", "backend")} == {
        "scope": "api.sfox.test",
        "reason": "change freeze",
        "until": UNTIL.isoformat(),
        "backend": "local",
    }
    datetime.fromisoformat(shown["since"])
    assert release(local_conn) is True
    assert release(local_conn) is False
    assert current_hold(local_conn) is None


@pytest.mark.parametrize(
    ("until", "match"),
    [
        (datetime(2031, 1, 1), "timezone-aware"),
        (datetime.now(timezone.utc) - timedelta(minutes=1), "in the past"),
    ],
)
def test_hold_refuses_a_bad_until(local_conn, until, match):
    with pytest.raises(ValueError, match=match):
        hold(local_conn, until=until)
    assert current_hold(local_conn) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("1d", 86400), (" 45M ", 2700)],
)
def test_durations(text, seconds):
    assert cli.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "m30", "1h 30m", "0m", "-5m", "1w", "soon"])
def test_bad_durations(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2031-01-02T03:04:05Z", UNTIL),
        ("2031-01-02T03:04:05+00:00", UNTIL),
        ("2031-01-02T05:04:05+02:00", UNTIL),
    ],
)
def test_until(text, when):
    assert cli.parse_until(text) == when


@pytest.mark.parametrize(("text", "match"), [("2031-01-02T03:04:05", "offset"), ("tomorrow", "ISO 8601")])
def test_bad_until(text, match):
    with pytest.raises(argparse.ArgumentTypeError, match=match):
        cli.parse_until(text)


def test_the_commands(local_conn, capsys):
    assert cli.main(["status", "--conn-id", local_conn]) == 0
    assert capsys.readouterr().out.strip() == "sfox_default: not held."

    assert cli.main(["hold", "--conn-id", local_conn, "--for", "30m", "--reason", "sFOX maintenance"]) == 0
    assert "sfox_default: held until " in capsys.readouterr().out

    assert cli.main(["status", "--conn-id", local_conn, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["hold"]
    until = datetime.fromisoformat(shown["until"])
    assert timedelta(minutes=29) < until - datetime.now(timezone.utc) <= timedelta(minutes=30)
    assert shown["reason"] == "sFOX maintenance"

    assert cli.main(["release", "--conn-id", local_conn]) == 0
    assert capsys.readouterr().out.strip() == "sfox_default: released."
    assert cli.main(["hold", "--conn-id", local_conn]) == 0  # until released
    assert "held until released (held by operator)" in capsys.readouterr().out
    assert current_hold(local_conn)["until"] is None


def test_status_shows_the_outage_the_scope_recorded_and_claims_no_probe(local_conn, capsys):
    from airflow_sfox.hooks.budget import _budget_of

    budget = _budget_of(local_conn, None)
    budget.trip("sFOX unavailable (HTTP 503)", first_probe=0)  # a probe is due at once
    assert cli.main(["status", "--conn-id", local_conn, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["hold"] is None
    assert shown["outage"]["down"] == "sFOX unavailable (HTTP 503)"
    assert shown["outage"]["probes"] == 0
    assert shown["outage"]["probe_in"] < 1
    assert cli.main(["status", "--conn-id", local_conn]) == 0
    text = capsys.readouterr().out
    assert text.startswith("sfox_default: not held.\nsfox_default: sFOX unavailable (HTTP 503) since ")
    assert budget.outage(claim=60)[1] is True  # status left the due probe unclaimed
    budget.close_outage()
    assert cli.main(["status", "--conn-id", local_conn]) == 0
    assert capsys.readouterr().out.strip() == "sfox_default: not held."


def test_a_command_on_an_unusable_connection_names_it(monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_BROKEN", sfox_conn_json(BASE_URL, password=None))
    assert cli.main(["status", "--conn-id", "sfox_broken"]) == 1
    assert "'sfox_broken'" in capsys.readouterr().err


def test_a_hold_needs_no_sound_budget(local_conn, monkeypatch):
    """The emergency stop works even where the budget itself would be refused."""
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    assert hold(local_conn)["reason"] == "held by operator"
    assert release(local_conn) is True


def test_another_scope_of_the_backend(local_conn, capsys):
    """A per-host scope is held host by host: the operator names the other machines' scopes."""
    assert cli.main(["hold", "--conn-id", local_conn, "--scope", "egress-worker-2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scope"] == "egress-worker-2"
    assert current_hold(local_conn) is None  # the connection's own scope is free
    assert current_hold(local_conn, scope="egress-worker-2")["reason"] == "held by operator"
    assert release(local_conn, scope="egress-worker-2") is True
