"""
The email-verified watcher against the real sandbox and a real warehouse, on a fake clock.

``trigger.run()`` is driven in-process: the module's clock and sleep are replaced, so time moves
only when the trigger sleeps, and each sleep may play one step of the scene (users confirming
their email at the sandbox), or stop the trigger as the triggerer does (``CancelledError``).
A "restart" is a new trigger built from ``serialize()``'s kwargs, as the triggerer builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import Counter
from datetime import datetime, timezone
from importlib import import_module

import pytest

from airflow_sfox.assets.sfox import USER_IDS_KEY, email_verified_asset
from airflow_sfox.hooks.sfox import USERS_PATH, SfoxConnectHook
from airflow_sfox.onboarding.config import OnboardingConfig
from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.planner import Planner
from airflow_sfox.onboarding.sender import send_chunk
from airflow_sfox.onboarding.warehouse import Warehouse
from airflow_sfox.triggers import sfox as watcher_module
from airflow_sfox.triggers.sfox import (
    DEFAULT_WATCHER_NAME,
    SfoxEmailVerifiedTrigger,
    email_verified_watcher,
)
from tests.helpers import TOKEN, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users

#: The fake clock's start: the watcher's times are all read from it.
T0 = 1_900_000_000.0
INTERVAL = 300.0
#: Real seconds after which a run that never reaches its last sleep fails the test (not a timing check).
HANG_GUARD_SECONDS = 120
USERS = make_users(40, seed=31, corporation_share=0.3)
INDIVIDUALS = [u[0] for u in USERS if u[1] == "individual"]
CORPORATIONS = [u[0] for u in USERS if u[1] == "corporation"]
#: Known to sFOX with a verified email, never planned: no ledger row.
STRANGER = {"user_id": "stranger-1", "account_type": "individual", "email_verified": True}


#: The step that stops the trigger, as the triggerer cancels a trigger it no longer runs.
STOP = object()


class FakeClock:
    """Epoch seconds that move only when the trigger sleeps; each sleep plays the next step."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.steps: list = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        step = self.steps.pop(0) if self.steps else STOP
        if step is STOP:
            raise asyncio.CancelledError  # what the triggerer does to a trigger it stops
        self.now += seconds
        step()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(watcher_module, "_now", fake.time)
    monkeypatch.setattr(watcher_module, "_sleep", fake.sleep)
    return fake


@pytest.fixture
def watcher_log(monkeypatch, caplog):
    """The trigger's log as a plain stdlib logger that caplog sees (Airflow's own is structlog)."""
    logger = logging.getLogger("tests.sfox_watcher")
    monkeypatch.setattr(SfoxEmailVerifiedTrigger, "log", logger)
    caplog.set_level(logging.DEBUG, logger=logger.name)
    return caplog


def run_trigger(trigger: SfoxEmailVerifiedTrigger, clock: FakeClock, *steps) -> list[list[str]]:
    """Run the trigger until a sleep finds no step left; return each event's user_ids."""
    clock.steps = list(steps)
    clock.sleeps = []

    async def collect(events: list[list[str]]) -> None:
        async for event in trigger.run():
            assert set(event.payload) == {USER_IDS_KEY}
            events.append(event.payload[USER_IDS_KEY])

    events: list[list[str]] = []
    with pytest.raises(asyncio.CancelledError):  # a hang (a loop that never sleeps) is a TimeoutError
        asyncio.run(asyncio.wait_for(collect(events), HANG_GUARD_SECONDS))
    return events


def restarted(trigger: SfoxEmailVerifiedTrigger) -> SfoxEmailVerifiedTrigger:
    """A new trigger built the way the triggerer builds one: classpath and JSON kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(import_module(module), name)(**json.loads(json.dumps(kwargs)))


def confirm(server, *user_ids: str) -> None:
    """The users confirm their email with the code the sandbox sent them (sFOX's verify route)."""
    with SfoxConnectHook() as hook:
        for user_id in user_ids:
            hook.confirm_verification(user_id, "email", server.codes(user_id)["email"]["latest"])


def list_gets(server) -> int:
    return sum(1 for e in server.journal() if e.method == "GET" and e.path.startswith(USERS_PATH))


@pytest.fixture
def onboarded(warehouse_db, sfox_sandbox, monkeypatch):
    """USERS registered with sFOX, planned by run r1 and sent their email code: every email row ``sent``."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT",
        sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0, max_retry_seconds=0),
    )
    warehouse_db.seed(USERS)
    sfox_sandbox.seed_users(sandbox_users(USERS))
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    with SfoxConnectHook() as hook:
        plan = Planner(
            warehouse, hook, OnboardingConfig(chunk_size=1000), run=RunRef("sfox_test", "r1")
        ).plan()
        for chunk in plan.chunks:
            send_chunk(warehouse, hook, run=RunRef("sfox_test", "r1"), chunk=chunk, channel="email")
    assert {row["state"] for row in warehouse_db.ledger().values()} == {"sent"}
    sfox_sandbox.clear_journal()
    return warehouse


def ledger_state(warehouse_db, user_id: str, channel: str = "email") -> str | None:
    row = warehouse_db.ledger().get((user_id, channel))
    return None if row is None else row["state"]


def test_newly_verified_individuals_are_emitted_once_across_a_restart(
    onboarded, warehouse_db, sfox_sandbox, clock
):
    first, during, after_restart = INDIVIDUALS[:5], INDIVIDUALS[7:9], INDIVIDUALS[9:12]
    failed_row, sms_done = INDIVIDUALS[5], INDIVIDUALS[6]
    never_confirmed = INDIVIDUALS[12:]
    confirm(sfox_sandbox, *first, *CORPORATIONS[:2], failed_row, sms_done)
    sfox_sandbox.seed_users([STRANGER])
    now = warehouse_db.timestamp(datetime.now(timezone.utc))
    warehouse_db.query(
        "UPDATE sfox_onboarding_ledger SET state = 'failed' WHERE user_id = ? AND channel = 'email'",
        (failed_row,),
    )
    warehouse_db.query(
        "INSERT INTO sfox_onboarding_ledger (user_id, channel, account_type, state, updated_at) "
        "VALUES (?, 'sms', 'individual', 'sent', ?)",
        (sms_done, now),
    )
    trigger = SfoxEmailVerifiedTrigger(poll_interval=INTERVAL)

    # No poll recorded: it polls at once, then every interval; users verified while it sleeps
    # come with the next poll.
    events = run_trigger(trigger, clock, lambda: confirm(sfox_sandbox, *during))
    assert [sorted(e) for e in events] == [sorted(first), sorted(during)]
    assert clock.sleeps == [INTERVAL, INTERVAL]
    assert list_gets(sfox_sandbox) == 2  # one list per poll

    # The triggerer is down for 100 s after the last poll; meanwhile more users verify. The
    # restarted trigger waits the 200 s left of the interval, then emits only the new ones.
    clock.now += 100
    confirm(sfox_sandbox, *after_restart)
    events += run_trigger(restarted(trigger), clock, lambda: None)
    assert clock.sleeps == [INTERVAL - 100, INTERVAL]
    assert [sorted(e) for e in events[2:]] == [sorted(after_restart)]
    assert list_gets(sfox_sandbox) == 3

    emitted = Counter(uid for event in events for uid in event)
    assert set(emitted.values()) == {1}
    assert set(emitted) == {*first, *during, *after_restart}
    never = {*CORPORATIONS, failed_row, sms_done, STRANGER["user_id"], *never_confirmed}
    assert not never & set(emitted)
    # The watermark is the ledger: the emitted users' email rows are verified, the rest untouched.
    for user_id in emitted:
        assert ledger_state(warehouse_db, user_id) == "verified"
    assert ledger_state(warehouse_db, failed_row) == "failed"
    assert {ledger_state(warehouse_db, uid) for uid in [*CORPORATIONS, sms_done, *never_confirmed]} == {
        "sent"
    }
    assert ledger_state(warehouse_db, STRANGER["user_id"]) is None


def test_the_planner_then_sends_the_sms_of_the_users_emitted(onboarded, warehouse_db, sfox_sandbox, clock):
    confirm(sfox_sandbox, *INDIVIDUALS[:3])
    events = run_trigger(SfoxEmailVerifiedTrigger(poll_interval=INTERVAL), clock)
    assert [sorted(e) for e in events] == [sorted(INDIVIDUALS[:3])]

    # The asset-triggered (or hourly) run plans their sms, reading sFOX; the email rows stay verified.
    with SfoxConnectHook() as hook:
        plan = Planner(
            onboarded, hook, OnboardingConfig(chunk_size=1000), run=RunRef("sfox_test", "r2")
        ).plan()
    assert plan.counts["due_individual_sms"] == 3
    assert {ledger_state(warehouse_db, uid, "sms") for uid in INDIVIDUALS[:3]} == {"queued"}
    assert {ledger_state(warehouse_db, uid) for uid in INDIVIDUALS[:3]} == {"verified"}


@pytest.mark.parametrize(
    ("page_size", "lookup_batch", "max_ids", "verified", "pages_per_poll"),
    [
        (0, 1000, 1000, 10, 1),  # sFOX's documented answer: one list
        (7, 3, 4, 10, 6),  # 41 users in 6 pages of 7; lookups of 3; events of at most 4
        (7, 2, 1, 3, 6),
        (50, 1, 1000, 10, 1),
    ],
)
def test_batches_and_pages(
    onboarded, sfox_sandbox, clock, monkeypatch, page_size, lookup_batch, max_ids, verified, pages_per_poll
):
    sfox_sandbox.set_list(page_size=page_size)
    monkeypatch.setattr(watcher_module, "LOOKUP_BATCH", lookup_batch)
    sfox_sandbox.seed_users([STRANGER])
    confirm(sfox_sandbox, *INDIVIDUALS[:verified])

    events = run_trigger(
        SfoxEmailVerifiedTrigger(poll_interval=INTERVAL, max_user_ids_per_event=max_ids), clock, lambda: None
    )

    assert sorted(uid for event in events for uid in event) == sorted(INDIVIDUALS[:verified])
    assert all(1 <= len(event) <= max_ids for event in events)
    assert len(events) == -(-verified // max_ids)  # full events: batches span lookups and pages
    assert list_gets(sfox_sandbox) == 2 * pages_per_poll  # two polls, each one pass over the list


@pytest.mark.parametrize(("max_ids", "marked_before_stop"), [(1, True), (1000, False)])
def test_a_trigger_stopped_mid_poll_marks_nothing_more(
    onboarded, warehouse_db, sfox_sandbox, clock, monkeypatch, max_ids, marked_before_stop
):
    """The triggerer cancels the trigger while its thread reads the list: the thread stops there."""
    confirm(sfox_sandbox, *INDIVIDUALS)
    monkeypatch.setattr(watcher_module, "LOOKUP_BATCH", 1)
    listed, pause_at = [], USERS[20][0]
    reached, resume, finished = threading.Event(), threading.Event(), threading.Event()
    snapshot_row, record_poll = watcher_module.snapshot_row, SfoxEmailVerifiedTrigger._record_poll

    def slow_row(user):
        listed.append(user["user_id"])
        if user["user_id"] == pause_at:
            reached.set()
            resume.wait(HANG_GUARD_SECONDS)
        return snapshot_row(user)

    def recorded(self, *args):
        record_poll(self, *args)
        finished.set()

    monkeypatch.setattr(watcher_module, "snapshot_row", slow_row)
    monkeypatch.setattr(SfoxEmailVerifiedTrigger, "_record_poll", recorded)
    trigger = SfoxEmailVerifiedTrigger(poll_interval=INTERVAL, max_user_ids_per_event=max_ids)

    async def stopped_mid_poll() -> None:
        async def consume() -> None:
            async for _ in trigger.run():
                pass

        task = asyncio.ensure_future(consume())
        assert await asyncio.to_thread(reached.wait, HANG_GUARD_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        resume.set()
        assert await asyncio.to_thread(finished.wait, HANG_GUARD_SECONDS)

    asyncio.run(stopped_mid_poll())

    assert listed[-1] == pause_at  # no user read after the stop
    before = set(listed[:-1])
    marked = {uid for uid in INDIVIDUALS if ledger_state(warehouse_db, uid) == "verified"}
    # Events of one user are marked as they are read; a batch of 1000 was never full.
    assert marked == ({uid for uid in INDIVIDUALS if uid in before} if marked_before_stop else set())
    # The restarted trigger emits the rest at its next poll, each once.
    events = run_trigger(restarted(trigger), clock, lambda: None)
    assert clock.sleeps == [INTERVAL, INTERVAL]  # the cancelled poll was recorded
    assert sorted(uid for event in events for uid in event) == sorted(set(INDIVIDUALS) - marked)


def test_a_refused_token_is_logged_loudly_each_poll_then_events_flow(
    onboarded, sfox_sandbox, clock, monkeypatch, watcher_log, capfd
):
    confirm(sfox_sandbox, *INDIVIDUALS[:2])
    sfox_sandbox.set_token("rotated-token")
    trigger = SfoxEmailVerifiedTrigger(poll_interval=INTERVAL)

    def rotate_connection() -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_SFOX_DEFAULT",
            sfox_conn_json(sfox_sandbox.url, password="rotated-token", rate_limit_requests=0),
        )

    events = run_trigger(trigger, clock, lambda: None, rotate_connection, lambda: None)

    assert [sorted(e) for e in events] == [sorted(INDIVIDUALS[:2])]  # the third poll, once fixed
    records = watcher_log.records
    refused = [r for r in records if r.levelno == logging.ERROR and "cannot be used" in r.getMessage()]
    assert len(refused) == 2  # each failed poll
    assert all("'sfox_default'" in r.getMessage() and "HTTP 401" in r.getMessage() for r in refused)
    logs = watcher_log.text + capfd.readouterr().out
    assert "newly verified" in logs  # the logs were seen
    assert TOKEN not in logs
    assert "rotated-token" not in logs
    assert "@example.com" not in logs  # no email address (user ids are fine)


def test_a_failed_poll_is_retried_at_the_next_and_recorded(
    onboarded, warehouse_db, sfox_sandbox, clock, watcher_log
):
    confirm(sfox_sandbox, *INDIVIDUALS[:2])
    sfox_sandbox.set_faults(error_503_rate=1.0)
    seen: list = []

    def heal() -> None:
        seen.append(watch_rows(warehouse_db))
        sfox_sandbox.set_faults(error_503_rate=0.0)

    events = run_trigger(SfoxEmailVerifiedTrigger(poll_interval=INTERVAL), clock, heal, lambda: None)

    assert [sorted(e) for e in events] == [sorted(INDIVIDUALS[:2])]
    failures = [r.getMessage() for r in watcher_log.records if "poll failed" in r.getMessage()]
    assert len(failures) == 1
    assert "HTTP 503" in failures[0]
    (row,) = seen[0]
    assert row[1] == T0  # recorded though it failed: a restart does not poll at once
    assert "503" in row[2]
    ((_, last_poll_at, error),) = watch_rows(warehouse_db)
    assert (last_poll_at, error) == (T0 + 2 * INTERVAL, None)


def test_a_warehouse_connection_fixed_between_polls_is_read_again(
    onboarded, warehouse_db, sfox_sandbox, clock, monkeypatch, tmp_path, watcher_log
):
    confirm(sfox_sandbox, *INDIVIDUALS[:2])
    broken = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "missing" / "warehouse.db")})
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", broken)

    def fix() -> None:
        monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", warehouse_db.conn_json)

    events = run_trigger(SfoxEmailVerifiedTrigger(poll_interval=INTERVAL), clock, fix)

    assert [sorted(e) for e in events] == [sorted(INDIVIDUALS[:2])]
    assert any("poll failed" in r.getMessage() for r in watcher_log.records)
    assert list_gets(sfox_sandbox) == 1  # the failed poll asked nothing of sFOX


def watch_rows(warehouse_db) -> list[tuple]:
    rows = warehouse_db.query("SELECT watcher, last_poll_at, last_error FROM sfox_onboarding_ledger_watch")
    return [(w, Warehouse.parse_ts(at).timestamp(), error) for w, at, error in rows]


def test_without_a_ledger_nothing_is_asked_of_sfox(warehouse_db, sfox_sandbox, clock):
    sfox_sandbox.seed_users([STRANGER])
    events = run_trigger(SfoxEmailVerifiedTrigger(poll_interval=INTERVAL), clock, lambda: None)
    assert events == []
    assert clock.sleeps == [INTERVAL, INTERVAL]
    assert list_gets(sfox_sandbox) == 0
    assert not warehouse_db.has_table("sfox_onboarding_ledger_watch")


def test_each_watcher_keeps_its_own_poll_time(onboarded, warehouse_db, sfox_sandbox, clock):
    one = SfoxEmailVerifiedTrigger(poll_interval=INTERVAL)
    run_trigger(one, clock)  # polls at once, stops at its first sleep
    clock.now += 60
    assert one.watcher_key == restarted(one).watcher_key
    # A new interval is the same watcher: it keeps the last poll's time (60 s ago).
    run_trigger(SfoxEmailVerifiedTrigger(poll_interval=2 * INTERVAL), clock)
    assert clock.sleeps == [2 * INTERVAL - 60]
    assert len(watch_rows(warehouse_db)) == 1
    # Another sFOX connection is another watcher: no poll of its own yet, so it polls at once.
    other = SfoxEmailVerifiedTrigger(sfox_conn_id="sfox_other", poll_interval=INTERVAL)
    assert other.watcher_key != one.watcher_key
    run_trigger(other, clock)
    assert clock.sleeps == [INTERVAL]
    assert len(watch_rows(warehouse_db)) == 2


# --- construction, serialization, the watcher ------------------------------------------------------


def test_serialize_round_trips_json_kwargs():
    trigger = SfoxEmailVerifiedTrigger(
        sfox_conn_id="s",
        warehouse_conn_id="w",
        warehouse_schema="onboarding",
        ledger_table="ledger",
        poll_interval=60,
        max_user_ids_per_event=10,
        snapshot_max_age=300,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_sfox.triggers.sfox.SfoxEmailVerifiedTrigger"
    assert kwargs == {
        "sfox_conn_id": "s",
        "warehouse_conn_id": "w",
        "warehouse_schema": "onboarding",
        "ledger_table": "ledger",
        "poll_interval": 60.0,
        "max_user_ids_per_event": 10,
        "snapshot_max_age": 300.0,
    }
    again = restarted(trigger)
    assert again.serialize() == (classpath, kwargs)
    assert SfoxEmailVerifiedTrigger.hash(classpath, kwargs) == SfoxEmailVerifiedTrigger.hash(
        *again.serialize()
    )


def test_defaults():
    _, kwargs = SfoxEmailVerifiedTrigger().serialize()
    assert kwargs == {
        "sfox_conn_id": "sfox_default",
        "warehouse_conn_id": "sfox_warehouse",
        "warehouse_schema": None,
        "ledger_table": "sfox_onboarding_ledger",
        "poll_interval": 300.0,
        "max_user_ids_per_event": 1000,
        "snapshot_max_age": 0.0,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -5}, "poll_interval"),
        ({"poll_interval": float("inf")}, "poll_interval"),
        ({"poll_interval": "300"}, "poll_interval"),
        ({"poll_interval": True}, "poll_interval"),
        ({"max_user_ids_per_event": 0}, "max_user_ids_per_event"),
        ({"max_user_ids_per_event": 1.5}, "max_user_ids_per_event"),
        ({"ledger_table": "ledger; drop"}, "ledger_table"),
        ({"warehouse_schema": "a.b"}, "warehouse_schema"),
        ({"sfox_conn_id": ""}, "sfox_conn_id"),
        ({"warehouse_conn_id": None}, "warehouse_conn_id"),
        ({"snapshot_max_age": -1}, "snapshot_max_age"),
        ({"snapshot_max_age": "60"}, "snapshot_max_age"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SfoxEmailVerifiedTrigger(**kwargs)


def test_the_watcher_goes_on_the_email_verified_asset():
    watcher = email_verified_watcher(sfox_conn_id="sfox_sandbox", poll_interval=60)
    asset = email_verified_asset("127.0.0.1:8089", watchers=[watcher])
    assert asset.watchers == [watcher]
    assert watcher.name == DEFAULT_WATCHER_NAME
    assert isinstance(watcher.trigger, SfoxEmailVerifiedTrigger)
    assert watcher.trigger.serialize()[1]["sfox_conn_id"] == "sfox_sandbox"
    with pytest.raises(TypeError, match="poll_intervall"):
        email_verified_watcher(poll_intervall=60)  # a misspelt argument is no silent default


def test_the_provider_registers_its_trigger_module():
    from airflow.providers_manager import ProvidersManager

    triggers = {info.package_name: info for info in ProvidersManager().trigger}
    assert triggers["airflow-provider-sfox"].trigger_class_name == "airflow_sfox.triggers.sfox"


def test_the_watcher_uses_a_fresh_shared_snapshot_instead_of_reading_the_list(
    onboarded, warehouse_db, sfox_sandbox, clock
):
    with SfoxConnectHook() as hook:  # a plan shares its read of the list: nobody verified yet
        config = OnboardingConfig(chunk_size=1000, snapshot_max_age_minutes=30)
        Planner(onboarded, hook, config, run=RunRef("sfox_test", "r2")).plan()
    confirm(sfox_sandbox, *INDIVIDUALS[:3])  # after the snapshot: only a read of the list tells
    # What the snapshot says is what the watcher goes by: one user verified in it.
    warehouse_db.query(
        "UPDATE sfox_onboarding_snapshot SET email_required = ? WHERE user_id = ?", (False, INDIVIDUALS[5])
    )
    sfox_sandbox.clear_journal()

    shared = run_trigger(SfoxEmailVerifiedTrigger(poll_interval=INTERVAL, snapshot_max_age=600), clock)
    assert shared == [[INDIVIDUALS[5]]]
    assert list_gets(sfox_sandbox) == 0  # the snapshot answered

    clock.now += INTERVAL  # the next poll is due
    fresh = run_trigger(SfoxEmailVerifiedTrigger(poll_interval=INTERVAL, snapshot_max_age=0), clock)
    assert [sorted(e) for e in fresh] == [sorted(INDIVIDUALS[:3])]
    assert list_gets(sfox_sandbox) == 1
