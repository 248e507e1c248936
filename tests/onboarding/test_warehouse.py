"""The portable warehouse on SQLite, PostgreSQL and MariaDB: ids as exact text, indexes, schemas, dialects."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from airflow_sfox.hooks.sfox import SfoxConnectHook
from airflow_sfox.onboarding.config import OnboardingConfig, OnboardingSource
from airflow_sfox.onboarding.dialects import UnsupportedDialectError
from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.outcomes import Claim
from airflow_sfox.onboarding.planner import Planner
from airflow_sfox.onboarding.schema import (
    SCHEMA_VERSION,
    SchemaVersionError,
    snapshot_row,
    snapshot_verified,
    utcnow,
)
from airflow_sfox.onboarding.warehouse import Warehouse
from tests.onboarding_data import sandbox_users

EMAIL = "x@example.com"


def _plan(run_id: str = "run-1", *, schema: str | None = None, source: OnboardingSource | None = None):
    warehouse = Warehouse.from_conn_id("sfox_warehouse", schema=schema)
    with SfoxConnectHook() as hook:
        return Planner(
            warehouse, hook, OnboardingConfig(), source=source, run=RunRef("sfox_test", run_id)
        ).plan()


def _ledger_of(warehouse_db, table: str = "sfox_onboarding_ledger") -> dict[tuple[str, str], tuple]:
    rows = warehouse_db.query(f"SELECT user_id, channel, state, last_error FROM {table}")
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def test_integer_and_text_777_are_one_user_rejected_as_duplicate(warehouse_db, sfox_sandbox):
    """An integer 777 and a text '777' in the source are one user_id: rejected, never sent."""
    warehouse_db.query("DROP TABLE IF EXISTS ids_int")
    warehouse_db.query("DROP TABLE IF EXISTS ids_text")
    columns = "account_type VARCHAR(20), email VARCHAR(50), phone_number VARCHAR(20)"
    warehouse_db.query(f"CREATE TABLE ids_int (user_id INTEGER, {columns})")
    warehouse_db.query(f"CREATE TABLE ids_text (user_id VARCHAR(20), {columns})")
    warehouse_db.query("INSERT INTO ids_int VALUES (777, 'corporation', ?, NULL)", (EMAIL,))
    warehouse_db.query("INSERT INTO ids_text VALUES ('777', 'corporation', ?, NULL)", (EMAIL,))
    warehouse_db.query("INSERT INTO ids_text VALUES ('778', 'corporation', ?, NULL)", (EMAIL,))
    # PostgreSQL's UNION needs one type per column; SQLite and MariaDB keep 777 an integer.
    int_id = "CAST(user_id AS VARCHAR(20))" if warehouse_db.kind == "postgres" else "user_id"
    query = (
        f"SELECT {int_id} AS user_id, account_type, email, phone_number FROM ids_int "
        "UNION ALL SELECT user_id, account_type, email, phone_number FROM ids_text"
    )
    result = _plan(source=OnboardingSource(query=query))
    assert result.counts["source_rows"] == 3
    assert (result.counts["rejected"], result.counts["duplicate_rows"]) == (1, 1)
    assert result.counts["planned_users"] == 1
    assert _ledger_of(warehouse_db) == {
        ("777", "email"): ("rejected", "user_id appears 2 times in the source"),
        ("778", "email"): ("queued", None),
    }


def test_sqlite_column_holding_integer_and_text_777(tmp_path, monkeypatch, sfox_sandbox):
    """The original bug: a typeless SQLite column holding 777 and '777' sorted them apart."""
    import json
    import sqlite3

    path = str(tmp_path / "w.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE sfox_users (user_id, account_type, email, phone_number)")
        conn.executemany(
            "INSERT INTO sfox_users VALUES (?, 'corporation', ?, NULL)",
            [(777, EMAIL), ("700", EMAIL), ("777", EMAIL), (7770, EMAIL)],
        )
        assert {type(r[0]) for r in conn.execute("SELECT user_id FROM sfox_users")} == {int, str}
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": path}))
    result = _plan()
    assert result.counts["source_rows"] == 4
    assert (result.counts["rejected"], result.counts["duplicate_rows"]) == (1, 1)
    assert result.counts["planned_users"] == 2
    with sqlite3.connect(path) as conn:
        rows = dict(conn.execute("SELECT user_id, state FROM sfox_onboarding_ledger"))
    assert rows == {"777": "rejected", "700": "queued", "7770": "queued"}


def test_look_alike_ids_are_different_users_everywhere(warehouse_db, sfox_sandbox):
    """
    user_ids are exact text: 'ABC', 'abc' and 'abc ' are three users on every database
    (MariaDB's default collations would call them equal: case-insensitive, PAD SPACE).
    """
    ids = ["ABC", "abc", "abc ", "x"]
    warehouse_db.seed(
        [(uid, "corporation", EMAIL, None) for uid in ids] + [("x", "corporation", EMAIL, None)]
    )
    sfox_sandbox.seed_users(sandbox_users([("abc", "corporation", EMAIL, None)]))
    result = _plan()
    assert result.counts["planned_users"] == 3
    assert (result.counts["rejected"], result.counts["duplicate_rows"]) == (1, 1)  # 'x' twice, and only 'x'
    ledger = _ledger_of(warehouse_db)
    assert ledger == {
        ("ABC", "email"): ("queued", None),
        ("abc", "email"): ("queued", None),
        ("abc ", "email"): ("queued", None),
        ("x", "email"): ("rejected", "user_id appears 2 times in the source"),
    }
    # The sender reads them back one by one, exactly.
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    queued = warehouse.queued(RunRef("sfox_test", "run-1"), "corporation", "email", (0, 10))
    assert sorted(claim.user_id for claim in queued) == ["ABC", "abc", "abc "]


def test_indexes_exist_after_create_tables(warehouse_db):
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    warehouse.create_tables()  # idempotent
    inspector = sa.inspect(warehouse.engine)
    indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("sfox_onboarding_ledger")}
    assert indexes["ix_sfox_onboarding_ledger_funnel"] == ["account_type", "channel", "state", "user_id"]
    assert indexes["ix_sfox_onboarding_ledger_state"] == ["state", "updated_at", "last_error"]
    run_index = ["run_id", "dag_id", "account_type", "chunk", "channel", "state"]
    assert indexes["ix_sfox_onboarding_ledger_run"] == run_index
    attempts = {
        ix["name"]: ix["column_names"] for ix in inspector.get_indexes("sfox_onboarding_ledger_attempts")
    }
    assert attempts["ix_sfox_onboarding_ledger_at_run"] == ["run_id", "dag_id", "outcome"]
    # A run is named by its DAG and its run id: run ids are unique within a DAG only.
    for table, key in [
        ("sfox_onboarding_runs", ["run_id", "dag_id"]),
        ("sfox_onboarding_runs_steps", ["run_id", "dag_id", "step"]),
    ]:
        assert inspector.get_pk_constraint(table)["constrained_columns"] == key, table
    assert inspector.get_pk_constraint("sfox_onboarding_ledger")["constrained_columns"] == [
        "user_id",
        "channel",
    ]
    assert inspector.get_pk_constraint("sfox_onboarding_snapshot")["constrained_columns"] == [
        "snapshot_id",
        "user_id",
    ]
    snapshot_columns = {c["name"] for c in inspector.get_columns("sfox_onboarding_snapshot")}
    assert not snapshot_columns & {"email", "phone_number", "phone"}


def test_create_tables_records_the_schema_version_once(warehouse_db):
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    warehouse.create_tables()
    assert warehouse_db.query("SELECT id, version FROM sfox_onboarding_ledger_version") == [
        (1, SCHEMA_VERSION)
    ]


@pytest.mark.parametrize(
    ("recorded", "advice"),
    [
        (
            SCHEMA_VERSION + 1,
            f"to the release that made them (schema version {SCHEMA_VERSION + 1})",
        ),
        (
            SCHEMA_VERSION - 1,
            f"upgrade them from version {SCHEMA_VERSION - 1} to {SCHEMA_VERSION} with the steps",
        ),
    ],
)
@pytest.mark.parametrize("reader", ["create_tables", "has_ledger"])  # a real run, a dry run
def test_tables_of_another_schema_version_are_refused_and_left_alone(warehouse_db, reader, recorded, advice):
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    warehouse_db.query("UPDATE sfox_onboarding_ledger_version SET version = ?", (recorded,))
    warehouse_db.query("DROP TABLE sfox_onboarding_runs_steps")  # created again if not refused
    with pytest.raises(SchemaVersionError) as error:
        getattr(warehouse, reader)()
    message = str(error.value)
    assert f"schema version {recorded} in sfox_onboarding_ledger_version" in message
    assert f"uses schema version {SCHEMA_VERSION}" in message
    assert advice in message
    assert not warehouse_db.has_table("sfox_onboarding_runs_steps")
    assert warehouse_db.query("SELECT version FROM sfox_onboarding_ledger_version") == [(recorded,)]


@pytest.fixture
def server_db(warehouse_db):
    """The warehouse, on the database servers only (SQLite has attached files, not schemas)."""
    for name in ("sfox_onboarding", "crm"):
        warehouse_db.query(
            f"DROP SCHEMA IF EXISTS {name} CASCADE"
            if warehouse_db.kind == "postgres"
            else f"DROP DATABASE IF EXISTS {name}"
        )
    return warehouse_db


@pytest.mark.parametrize("warehouse_db", ["postgres", "mariadb"], indirect=True)
def test_tables_in_a_schema_of_their_own(server_db, sfox_sandbox):
    """Ledger, runs and snapshot in schema ``sfox_onboarding`` (created); the source in ``crm``."""
    db = server_db
    db.query("CREATE SCHEMA crm" if db.kind == "postgres" else "CREATE DATABASE crm")
    db.query(
        "CREATE TABLE crm.customers (user_id VARCHAR(40), account_type VARCHAR(20), "
        "email VARCHAR(50), phone_number VARCHAR(20))"
    )
    db.query("INSERT INTO crm.customers VALUES ('c1', 'corporation', ?, NULL)", (EMAIL,))
    result = _plan(schema="sfox_onboarding", source=OnboardingSource(table="crm.customers"))
    assert result.counts["planned_users"] == 1
    assert _ledger_of(db, "sfox_onboarding.sfox_onboarding_ledger") == {("c1", "email"): ("queued", None)}
    assert not db.has_table("sfox_onboarding_ledger")  # nothing in the connection's default schema
    warehouse = Warehouse.from_conn_id("sfox_warehouse", schema="sfox_onboarding")
    inspector = sa.inspect(warehouse.engine)
    for table in ("sfox_onboarding_ledger", "sfox_onboarding_runs", "sfox_onboarding_snapshot"):
        assert inspector.has_table(table, schema="sfox_onboarding"), table
    names = {ix["name"] for ix in inspector.get_indexes("sfox_onboarding_ledger", schema="sfox_onboarding")}
    assert {"ix_sfox_onboarding_sfox_onboarding_ledger_funnel"} <= names
    run = RunRef("d", "r")
    warehouse.write_run({**run._asdict(), "status": "running", "requests": 1, "rate_limited": 0})
    assert warehouse.run_row(run)["status"] == "running"
    # The snapshot of the plan is gone once the plan is done.
    assert db.query("SELECT COUNT(*) FROM sfox_onboarding.sfox_onboarding_snapshot") == [(0,)]


def test_a_table_naming_another_schema_is_refused(tmp_path):
    from tests.plugins.ledger_data import SqliteFileHook

    hook = SqliteFileHook(str(tmp_path / "w.db"))
    with pytest.raises(ValueError, match="names schema 'a', but the warehouse schema is 'b'"):
        Warehouse(hook, ledger_table="a.ledger", schema="b")
    with pytest.raises(ValueError, match="SQLite"):
        Warehouse(hook, schema="b")


def test_a_dialect_without_upsert_is_refused_naming_the_connection():
    class FakeHook:
        conn_name_attr = "fake_conn_id"
        fake_conn_id = "my_warehouse"

        def get_sqlalchemy_engine(self, engine_kwargs=None):
            engine = sa.create_engine("sqlite://")
            engine.dialect.name = "fakedb"
            return engine

    with pytest.raises(UnsupportedDialectError) as error:
        Warehouse(FakeHook())  # type: ignore[arg-type]
    message = str(error.value)
    assert "'my_warehouse'" in message
    assert "'fakedb'" in message
    assert "upsert" in message
    assert "DIALECTS" in message


def test_snapshot_reads_requirements_tolerantly_and_holds_no_contact_data():
    row = snapshot_row(
        {
            "user_id": 7,
            "account_type": "individual",
            "status": "PENDING",
            "email": "a@example.com",
            "phone_number": "+12025550100",
            "requirements": {"email": False, "sms": "yes"},
        }
    )
    assert row == {
        "user_id": "7",
        "account_type": "individual",
        "status": "PENDING",
        "email_required": False,
        "sms_required": None,
    }
    assert snapshot_verified("PENDING", False)
    assert not snapshot_verified("PENDING", None)
    assert not snapshot_verified(None, True)
    assert snapshot_verified("verified", True)
    assert snapshot_row({"account_type": "individual"}) is None
    assert snapshot_row({"user_id": "u", "requirements": "nonsense"})["email_required"] is None


def test_snapshot_is_written_in_batches_last_entry_wins(warehouse_db):
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    users = [{"user_id": f"u{i % 7}", "status": "VERIFIED" if i >= 7 else "PENDING"} for i in range(10)]
    with warehouse.connect() as conn:
        written = warehouse.write_snapshot(
            conn, iter(users), snapshot_id="s1", run=RunRef("sfox_test", "r"), batch=3
        )
    assert written == 10
    rows = dict(
        warehouse_db.query("SELECT user_id, status FROM sfox_onboarding_snapshot WHERE snapshot_id = 's1'")
    )
    assert rows == {f"u{i}": ("VERIFIED" if i < 3 else "PENDING") for i in range(7)}
    with warehouse.connect() as conn:
        warehouse.drop_snapshot(conn, "s1", shared_before=utcnow())
    assert warehouse_db.query("SELECT COUNT(*) FROM sfox_onboarding_snapshot") == [(0,)]


def test_the_planner_streams_users_through_iter_users_when_the_hook_has_it(warehouse_db, sfox_sandbox):
    from airflow_sfox.onboarding.snapshots import sfox_users

    class Streaming:
        def iter_users(self, account_role=None):
            yield {"user_id": "a"}

        def list_users(self, account_role=None):
            raise AssertionError("list_users must not be called when iter_users exists")

    class Listing:
        def list_users(self, account_role=None):
            return [{"user_id": "b"}]

    assert list(sfox_users(Streaming())) == [{"user_id": "a"}]  # type: ignore[arg-type]
    assert list(sfox_users(Listing())) == [{"user_id": "b"}]  # type: ignore[arg-type]


def test_prune_attempts_deletes_only_what_is_older_than_the_retention(warehouse_db):
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    now = utcnow()
    ages = {"u-old": 91, "u-edge": 89, "u-new": 0}
    with warehouse.connect() as conn:
        claims = [Claim(uid, RunRef("d", "r0"), now - timedelta(days=days)) for uid, days in ages.items()]
        warehouse.record_lost(conn, claims, channel="email", hold=False)
        conn.commit()

    assert warehouse.prune_attempts(older_than=now - timedelta(days=90)) == 1
    assert sorted(row["user_id"] for row in warehouse_db.attempts()) == ["u-edge", "u-new"]
    assert warehouse.prune_attempts(older_than=now - timedelta(days=90)) == 0


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("length", "refused"), [(40, False), (53, True)])
def test_a_ledger_name_too_long_for_its_index_names_is_refused(warehouse_db, length, refused):
    name = "l" * length
    if not refused:
        Warehouse.from_conn_id("sfox_warehouse", ledger_table=name).create_tables()
        return
    with pytest.raises(ValueError, match=rf"ledger_table '{name}' is too long: its index 'ix_{name}_"):
        Warehouse.from_conn_id("sfox_warehouse", ledger_table=name)
