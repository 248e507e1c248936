"""The planner against a real warehouse (SQLite and PostgreSQL) and the real sandbox."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_sfox.hooks.sfox import SfoxConnectHook
from airflow_sfox.onboarding.config import OnboardingConfig, OnboardingSource
from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.planner import Planner
from airflow_sfox.onboarding.warehouse import Warehouse
from tests.onboarding_data import BAD_ROWS, make_users, sandbox_users

RUN = "run-1"


@pytest.fixture
def plan(warehouse_db, sfox_sandbox):
    """Plan with the given settings; returns the Plan (ledger in ``warehouse_db``)."""

    def run(
        run_id: str = RUN, now: datetime | None = None, source: OnboardingSource | None = None, **settings
    ):
        warehouse = Warehouse.from_conn_id("sfox_warehouse")
        with SfoxConnectHook() as hook:
            config = OnboardingConfig(**settings)
            return Planner(
                warehouse, hook, config, source=source, run=RunRef("sfox_test", run_id), now=now
            ).plan()

    return run


def test_first_plan_queues_email_for_every_valid_user(plan, warehouse_db, sfox_sandbox):
    users = make_users(23, seed=1)
    warehouse_db.seed(users + [row for row, _ in BAD_ROWS])
    sfox_sandbox.seed_users(sandbox_users(users))

    result = plan(chunk_size=5)

    ledger = warehouse_db.ledger()
    queued = {uid for (uid, channel), row in ledger.items() if row["state"] == "queued"}
    assert queued == {u[0] for u in users}
    assert all(channel == "email" for (_, channel), row in ledger.items() if row["state"] == "queued")
    assert result.counts["source_rows"] == len(users) + len(BAD_ROWS)
    assert result.counts["rejected"] == len(BAD_ROWS) - 1  # users: dup-1 is one user on two rows
    assert result.counts["duplicate_rows"] == 1
    rejected = {uid: row["last_error"] for (uid, _), row in ledger.items() if row["state"] == "rejected"}
    assert rejected["bad-email"] == "email is malformed"
    assert rejected["dup-1"] == "user_id appears 2 times in the source"
    for _row, reason in BAD_ROWS:
        assert any(reason in error for error in rejected.values()), reason
    # A rejected row keeps its account type where that was valid (the page counts it there).
    kinds = dict(
        warehouse_db.query(
            "SELECT user_id, account_type FROM sfox_onboarding_ledger WHERE state = 'rejected'"
        )
    )
    assert (kinds["bad-email"], kinds["bad-phone"], kinds["bad-account-type"]) == (
        "individual",
        "corporation",
        None,
    )
    # Chunks: one account type each, at most chunk_size users, labels count users from 1.
    individuals = sum(1 for u in users if u[1] == "individual")
    for chunk in result.chunks:
        assert chunk["users"] <= 5
        assert chunk["label"].startswith(chunk["account_type"])
    assert sum(c["users"] for c in result.chunks if c["account_type"] == "individual") == individuals
    first_individual = next(c for c in result.chunks if c["account_type"] == "individual")
    assert first_individual["label"] == "individual 1-5"


def test_dry_run_writes_nothing(plan, warehouse_db, sfox_sandbox):
    users = make_users(10, seed=2)
    warehouse_db.seed(users)
    result = plan(dry_run=True)
    assert result.chunks == []
    assert result.counts["planned_users"] == 10
    for table in ("sfox_onboarding_ledger", "sfox_onboarding_snapshot", "sfox_onboarding_runs"):
        assert not warehouse_db.has_table(table), table
    assert [e for e in sfox_sandbox.journal() if e.method == "POST"] == []


def test_sms_due_only_once_sfox_reports_email_verified(plan, warehouse_db, sfox_sandbox):
    users = [
        ("ind-a", "individual", "a@example.com", "+12025550101"),
        ("ind-b", "individual", "b@example.com", "+12025550102"),
        ("corp-c", "corporation", "c@example.com", None),
    ]
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(
        [
            {**sandbox_users(users)[0], "email_verified": True},
            sandbox_users(users)[1],
            {**sandbox_users(users)[2], "email_verified": True},
        ]
    )
    plan()
    ledger = warehouse_db.ledger()
    assert ledger[("ind-a", "email")]["state"] == "already_verified"
    assert ledger[("ind-a", "sms")]["state"] == "queued"
    assert ledger[("ind-b", "email")]["state"] == "queued"
    assert ("ind-b", "sms") not in ledger
    assert ledger[("corp-c", "email")]["state"] == "already_verified"
    assert ("corp-c", "sms") not in ledger  # corporations never verify a phone


def _mark_sent(warehouse_db, user_id: str, channel: str, *, sends: int, hours_ago: float) -> None:
    at = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    value = warehouse_db.timestamp(at)
    warehouse_db.query(
        "UPDATE sfox_onboarding_ledger SET state = 'sent', sends = ?, last_sent_at = ? "
        "WHERE user_id = ? AND channel = ?",
        (sends, value, user_id, channel),
    )


@pytest.mark.parametrize(
    ("sends", "hours_ago", "due"),
    [
        (1, 49, True),  # unverified after the resend delay: send again
        (1, 47, False),  # too early
        (3, 100, False),  # max_sends reached
        (2, 48, True),
    ],
)
def test_resend_policy(plan, warehouse_db, sfox_sandbox, sends, hours_ago, due):
    users = [("u1", "corporation", "a@example.com", None)]
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    plan(run_id="first")
    _mark_sent(warehouse_db, "u1", "email", sends=sends, hours_ago=hours_ago)

    result = plan(run_id="second", resend_after_hours=48, max_sends=3)

    state = warehouse_db.ledger()[("u1", "email")]["state"]
    assert (state == "queued") is due
    assert result.counts["planned_users"] == (1 if due else 0)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"user_ids": ["user-000002", "user-000005", "nobody"]}, {"user-000002", "user-000005"}),
        ({"max_users": 3}, {"user-000000", "user-000001", "user-000002"}),
        ({"max_users": 0}, set()),
    ],
)
def test_selection(plan, warehouse_db, sfox_sandbox, settings, expected):
    users = make_users(8, seed=3)
    warehouse_db.seed(users)
    plan(**settings)
    queued = {uid for (uid, _), row in warehouse_db.ledger().items() if row["state"] == "queued"}
    assert queued == expected


def test_column_mapping_and_query_source(plan, warehouse_db, sfox_sandbox):
    warehouse_db.query("DROP TABLE IF EXISTS customers")
    warehouse_db.query(
        "CREATE TABLE customers "
        "(cid VARCHAR(20), kind VARCHAR(20), mail VARCHAR(50), tel VARCHAR(20), active INT)"
    )
    for row in [
        ("c1", "individual", "a@example.com", "+12025550100", 1),
        ("c2", "corporation", "b@example.com", None, 0),
    ]:
        warehouse_db.query("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", row)
    columns = {"user_id": "cid", "account_type": "kind", "email": "mail", "phone_number": "tel"}

    plan(source=OnboardingSource(table="customers", columns=columns), run_id="by-table")
    assert {k for k, v in warehouse_db.ledger().items() if v["state"] == "queued"} == {
        ("c1", "email"),
        ("c2", "email"),
    }
    warehouse_db.query("DELETE FROM sfox_onboarding_ledger")
    query = "SELECT * FROM customers WHERE active = 1"
    plan(source=OnboardingSource(query=query, columns=columns), run_id="by-query")
    assert {k for k, v in warehouse_db.ledger().items() if v["state"] == "queued"} == {("c1", "email")}


def test_many_chunks_are_grouped_under_max_chunks(plan, warehouse_db, sfox_sandbox):
    users = make_users(50, seed=4, corporation_share=0)
    warehouse_db.seed(users)
    result = plan(chunk_size=2, max_chunks=5)
    assert len(result.chunks) == 5
    assert [c["chunks"] for c in result.chunks] == [[0, 4], [5, 9], [10, 14], [15, 19], [20, 24]]
    assert [c["label"] for c in result.chunks][:2] == ["individual 1-10", "individual 11-20"]
    assert sum(c["users"] for c in result.chunks) == 50


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ({"table": "users; DROP TABLE x"}, "source table must be a SQL identifier"),
        ({"columns": {"user_id": "id)--"}}, "columns"),
        ({"columns": {"nickname": "n"}}, "unknown key 'nickname'"),
        ({"query": "  "}, "source query is empty"),
    ],
)
def test_bad_sources_are_refused(source, match):
    with pytest.raises(ValueError, match=match):
        OnboardingSource(**source)


@pytest.mark.parametrize(
    ("conf", "match"),
    [
        ({"source_query": "SELECT * FROM secrets"}, "'source_query' is refused"),
        ({"source_table": "payroll"}, "'source_table' is refused"),
        ({"columns": {"user_id": "ssn"}}, "'columns' is refused"),
        ({"dryrun": True}, "'dryrun' is not a param"),
    ],
)
def test_run_conf_naming_the_source_or_an_unknown_key_is_refused(conf, match):
    with pytest.raises(ValueError, match=match):
        OnboardingConfig.check_conf(conf)


def test_missing_source_column_is_named_before_any_request(plan, warehouse_db, sfox_sandbox):
    warehouse_db.query("DROP TABLE IF EXISTS customers")
    warehouse_db.query(
        "CREATE TABLE customers (user_id VARCHAR(20), account_type VARCHAR(20), email VARCHAR(50))"
    )
    with pytest.raises(ValueError, match=r"no column 'phone_number'.*columns=") as error:
        plan(source=OnboardingSource(table="customers"))
    assert "tel" not in str(error.value)
    with pytest.raises(ValueError, match=r"'phone_number' \(mapped to 'tel'\)"):
        plan(source=OnboardingSource(table="customers", columns={"phone_number": "tel"}))
    assert sfox_sandbox.journal() == []  # not even the GET of sFOX's users


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"channels": ["fax"]}, "channels"),
        ({"channels": []}, "channels"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"failure_threshold": 2}, "failure_threshold"),
        ({"max_tries": 0}, "max_tries"),
        ({"retry_wait_hours": []}, "retry_wait_hours"),
        ({"retry_wait_hours": [1, -1]}, "retry_wait_hours"),
        ({"redrive": ["bogus"]}, "redrive"),
    ],
)
def test_bad_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        OnboardingConfig(**settings)


def _mark_failed(warehouse_db, user_id: str, *, state: str, failures: int, hours_ago: float, uncertain=0):
    at = warehouse_db.timestamp(datetime.now(timezone.utc) - timedelta(hours=hours_ago))
    warehouse_db.query(
        "UPDATE sfox_onboarding_ledger SET state = ?, failures = ?, last_request_at = ?, uncertain = ? "
        "WHERE user_id = ? AND channel = 'email'",
        (state, failures, at, uncertain, user_id),
    )


@pytest.mark.parametrize(
    ("state", "failures", "hours_ago", "redrive", "after", "count"),
    [
        # The wait grows with the failures in a row: 1 h, 4 h, then 24 h (max_tries 4); a try
        # is due once 90% of its wait has passed (the hourly run after the one that failed).
        ("failed", 1, 0.5, [], "failed", "retry_waiting_email"),
        ("failed", 1, 0.95, [], "queued", "retry_email"),
        ("failed", 1, 1.5, [], "queued", "retry_email"),
        ("not_registered", 2, 3, [], "not_registered", "retry_waiting_email"),
        ("not_registered", 2, 5, [], "queued", "retry_email"),
        ("failed", 3, 21, [], "failed", "retry_waiting_email"),
        ("failed", 3, 23, [], "queued", "retry_email"),
        ("failed", 0, 0.5, [], "failed", "retry_waiting_email"),  # a row older than the count
        # The 4th failure in a row: given up, whatever the wait; and it stays so.
        ("failed", 4, 100, [], "gave_up", "gave_up_email"),
        ("not_registered", 4, 0.1, [], "gave_up", "gave_up_email"),
        ("gave_up", 4, 1000, [], "gave_up", None),
        # A re-drive queues the states it names at once, and no others.
        ("gave_up", 4, 0.1, ["gave_up"], "queued", "redrive_email"),
        ("failed", 1, 0.1, ["failed"], "queued", "redrive_email"),
        ("not_registered", 9, 0.1, ["not_registered"], "queued", "redrive_email"),
        ("gave_up", 4, 0.1, ["failed", "not_registered"], "gave_up", None),
        # uncertain: failed or not registered channels whose request's answer was lost, only.
        ("failed", 1, 0.1, ["uncertain"], "queued", "redrive_email"),
        ("gave_up", 4, 0.1, ["uncertain"], "gave_up", None),
        ("sent", 0, 0.1, ["uncertain"], "sent", None),
    ],
)
def test_retries_across_runs_wait_then_give_up_until_a_redrive(
    plan, warehouse_db, sfox_sandbox, state, failures, hours_ago, redrive, after, count
):
    users = [("u1", "corporation", "a@example.com", None), ("u2", "corporation", "b@example.com", None)]
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    plan(run_id="first")
    _mark_failed(warehouse_db, "u1", state=state, failures=failures, hours_ago=hours_ago, uncertain=1)
    _mark_failed(warehouse_db, "u2", state="sent", failures=0, hours_ago=0.1)  # not re-driven: certain

    result = plan(run_id="second", redrive=redrive)

    ledger = warehouse_db.ledger()
    assert ledger[("u1", "email")]["state"] == after
    assert ledger[("u2", "email")]["state"] == "sent"
    if count is not None:
        assert result.counts[count] == 1
    assert result.counts["planned_users"] == (1 if after == "queued" else 0)
    if after == "gave_up" and state != "gave_up":
        expected = f"gave up after {max(failures, 1)} tries in a row ending {state}: -"
        assert ledger[("u1", "email")]["last_error"] == expected


@pytest.fixture
def three_given_up(plan, warehouse_db, sfox_sandbox):
    """Users u0, u1, u2, planned once, then given up on (4 failures in a row)."""
    users = [(f"u{i}", "corporation", f"u{i}@example.com", None) for i in range(3)]
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    plan(run_id="first")
    for user_id, *_ in users:
        _mark_failed(warehouse_db, user_id, state="gave_up", failures=4, hours_ago=1)


def test_a_redrive_in_a_dry_run_counts_and_writes_nothing(plan, warehouse_db, three_given_up):
    before = warehouse_db.ledger()

    result = plan(run_id="dry", redrive=["gave_up"], user_ids=["u0", "u2"], dry_run=True)

    assert result.counts["redrive_email"] == 2
    assert result.counts["due_corporation_email"] == 2
    assert warehouse_db.ledger() == before


def test_404s_are_retried_on_the_schedule_then_given_up(plan, warehouse_db, sfox_sandbox):
    """A user sFOX does not know: sent, then tried again after 1 h, 4 h, 24 h, then given up."""
    from airflow_sfox.onboarding.sender import send_chunk

    users = [("ghost", "corporation", "g@example.com", None)]
    warehouse_db.seed(users)  # not registered at sFOX: every request is a 404
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    start = datetime.now(timezone.utc)
    sent_at: list[float] = []
    for hours in (0, 0.5, 1.1, 1.5, 5.2, 29.0, 29.5, 53.5, 1000):
        run_id = f"run-{hours}"
        result = plan(run_id=run_id, now=start + timedelta(hours=hours))
        for chunk in result.chunks:
            with SfoxConnectHook() as hook:
                send_chunk(
                    warehouse, hook, run=RunRef("sfox_test", run_id), chunk=chunk, channel="email", threads=1
                )
            sent_at.append(hours)
        # The sender stamps the real time: move it to the run's clock.
        warehouse_db.query(
            "UPDATE sfox_onboarding_ledger SET last_request_at = ? WHERE user_id = 'ghost' AND run_id = ?",
            (warehouse_db.timestamp(start + timedelta(hours=hours)), run_id),
        )
    # Tried at 0, then once 90% of 1 h had passed (1.1), of 4 h after that (5.2), of 24 h after
    # that (29.0 >= 5.2 + 21.6): 4 tries, then given up.
    assert sent_at == [0, 1.1, 5.2, 29.0]
    row = warehouse_db.ledger()[("ghost", "email")]
    assert row["state"] == "gave_up"
    assert row["attempts"] == 4
    assert len(sfox_sandbox.journal(user_id="ghost")) == 4


def test_a_sent_answer_resets_the_failures(plan, warehouse_db, sfox_sandbox):
    from airflow_sfox.onboarding.sender import send_chunk

    users = [("u1", "corporation", "a@example.com", None)]
    warehouse_db.seed(users)
    sfox_sandbox.seed_users(sandbox_users(users))
    plan(run_id="first")
    _mark_failed(warehouse_db, "u1", state="failed", failures=3, hours_ago=30)

    result = plan(run_id="second")
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    with SfoxConnectHook() as hook:
        send_chunk(
            warehouse, hook, run=RunRef("sfox_test", "second"), chunk=result.chunks[0], channel="email"
        )

    assert warehouse_db.query("SELECT state, failures FROM sfox_onboarding_ledger") == [("sent", 0)]


def test_a_redrive_beyond_max_users_counts_only_the_users_it_queues(plan, three_given_up):

    result = plan(run_id="second", redrive=["gave_up"], max_users=2)

    assert (result.counts["redrive_email"], result.counts["planned_users"]) == (2, 2)


def test_rejected_users_are_one_figure_in_the_plan_the_run_row_and_the_page(warehouse_db, sfox_sandbox):
    """A user_id on several rows is one rejected user everywhere; its other rows are duplicates."""
    from airflow_sfox.onboarding.runs import plan_run
    from airflow_sfox.plugins.dashboard import DashboardSettings
    from airflow_sfox.plugins.lookups import Lookups

    users = make_users(20, seed=5)
    bad = [row for row, _ in BAD_ROWS]  # dup-1 on two rows
    more = [
        users[0],  # a valid row written twice: rejected, both rows
        bad[1],  # bad-email twice
        (None, "corporation", "n@example.com", None),  # two spellings of an empty id: one ledger row
        ("", "corporation", "e@example.com", None),
    ]
    warehouse_db.seed(users + bad + more)
    sfox_sandbox.seed_users(sandbox_users(users))

    counts = plan_run(
        params={"failure_threshold": 1.0},
        run_id=RUN,
        dag_id="onboarding",
        warehouse_conn_id="sfox_warehouse",
        sfox_conn_id="sfox_default",
    )["counts"]

    rejected_users = len({row[0] for row in bad}) + 2  # + users[0] + the empty id
    assert counts["source_rows"] == len(users) + len(bad) + len(more)
    assert counts["rejected"] == rejected_users
    assert counts["duplicate_rows"] == 4  # dup-1, users[0], bad-email, the second empty id
    assert counts["source_rows"] == counts["valid_users"] + counts["rejected"] + counts["duplicate_rows"]
    assert sum(counts["rejected_reasons"].values()) == rejected_users
    assert counts["planned_users"] == len(users) - 1

    ledger = [row for row in warehouse_db.ledger().values() if row["state"] == "rejected"]
    assert len(ledger) == rejected_users
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    run = warehouse.run_row(RunRef("onboarding", RUN))
    assert (run["rejected"], run["duplicate_rows"], run["planned"]) == (rejected_users, 4, len(users) - 1)
    # The page: the funnel, the top reasons, and the run view's row and ledger states.
    dashboard = Lookups(warehouse, DashboardSettings(reasons=50))
    page = dashboard.summary()
    assert page["totals"]["rejected"] == rejected_users
    assert sum(r["count"] for r in page["reasons"] if r["state"] == "rejected") == rejected_users
    view = dashboard.run(RUN)
    assert view["run"]["rejected"] == rejected_users
    assert view["run"]["duplicate_rows"] == 4
    assert sum(s["count"] for s in view["ledger"] if s["state"] == "rejected") == rejected_users


WRONG_TOKEN = "sfox-wrong-token-41c2e8"


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        ("column", "has no column 'phone_number'"),
        ("token", "401"),
    ],
    ids=["missing-column", "wrong-token"],
)
def test_a_failing_plan_says_why_on_one_error_line_before_raising(
    warehouse_db, sfox_sandbox, monkeypatch, caplog, broken, says
):
    import logging

    from airflow_sfox.onboarding.runs import plan_run
    from tests.helpers import sfox_conn_json

    users = make_users(3, seed=6)
    if broken == "column":
        warehouse_db.query("DROP TABLE IF EXISTS sfox_users")
        warehouse_db.query(
            "CREATE TABLE sfox_users (user_id VARCHAR(20), account_type VARCHAR(20), email VARCHAR(50))"
        )
    else:
        warehouse_db.seed(users)
        monkeypatch.setenv(
            "AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, password=WRONG_TOKEN)
        )

    caplog.set_level(logging.INFO)
    with pytest.raises(Exception, match=says):  # a ValueError, or the hook's auth error
        plan_run(
            params={},
            run_id=RUN,
            dag_id="onboarding",
            warehouse_conn_id="sfox_warehouse",
            sfox_conn_id="sfox_default",
        )

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert "\n" not in line
    assert line.startswith(f"sFOX onboarding run {RUN} of onboarding: planning failed, nothing was sent: ")
    assert says in line
    assert errors[0].exc_info is None  # the message, not a second traceback
    assert WRONG_TOKEN not in caplog.text
    assert not any(u[2] in caplog.text for u in users)  # no email
    run = Warehouse.from_conn_id("sfox_warehouse").run_row(RunRef("onboarding", RUN))
    assert run["status"] == "plan_failed"
