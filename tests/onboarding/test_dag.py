"""The DAG factory: its shape, its params, and two factory DAGs side by side (real runs)."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from airflow_sfox.assets.sfox import email_verified_asset, ledger_asset, table_asset
from airflow_sfox.onboarding.dag import OnboardingSource, default_schedule, email_verified_dag, onboarding_dag
from airflow_sfox.onboarding.model import CHANNELS_BY_ACCOUNT_TYPE
from airflow_sfox.onboarding.params import EVENT_PARAMS
from tests.helpers import copy_metadata_db, load_dag_file, sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users

DAG_FILE = "sfox_test_two_sources"
RETAIL, BUSINESS = "sfox_test_retail", "sfox_test_business"


def test_each_account_type_has_its_own_path_from_the_channel_table():
    dag = onboarding_dag(dag_id="shape", source=OnboardingSource())
    for kind, channels in CHANNELS_BY_ACCOUNT_TYPE.items():
        steps = [f"{kind}.send_{channel}" for channel in channels]
        assert dag.get_task(f"{kind}_chunks").upstream_task_ids == {"plan"}
        assert dag.get_task(steps[0]).upstream_task_ids == {f"{kind}_chunks"}
        for before, after in itertools.pairwise(steps):
            assert before in dag.get_task(after).upstream_task_ids
        assert steps[-1] in dag.get_task("summarize").upstream_task_ids
    assert "corporation.send_sms" not in dag.task_dict


@pytest.mark.parametrize("registering", [False, True], ids=["verification-only", "registering"])
def test_a_registering_source_adds_a_registration_step_before_each_email_step(registering):
    from airflow_sfox.onboarding.registration import Registration

    source = OnboardingSource(registration=Registration() if registering else None)
    dag = onboarding_dag(dag_id="shape", source=source)
    for kind, channels in CHANNELS_BY_ACCOUNT_TYPE.items():
        first = f"{kind}.send_{channels[0]}"
        if registering:
            step = dag.get_task(f"{kind}.send_registration")
            assert step.upstream_task_ids == {f"{kind}_chunks"}
            assert f"{kind}.send_registration" in dag.get_task(first).upstream_task_ids
            assert step.template_fields == ("chunk",)  # the source (and its columns) is never rendered
        else:
            assert dag.get_task(first).upstream_task_ids == {f"{kind}_chunks"}
    assert sum(task_id.endswith("send_registration") for task_id in dag.task_dict) == (
        2 if registering else 0
    )


@pytest.mark.parametrize("registering", [False, True], ids=["verification-only", "registering"])
def test_a_chunks_later_steps_rank_above_its_earlier_ones(registering):
    """A later step (often a skip) runs as soon as its chunk lets it, not after every first step."""
    from airflow_sfox.onboarding.registration import Registration

    source = OnboardingSource(registration=Registration() if registering else None)
    from types import SimpleNamespace

    from airflow.task.priority_strategy import validate_and_load_priority_weight_strategy

    def weight(task):  # what the scheduler gives each of its task instances
        rule = task.weight_rule  # a strategy object on Airflow 3.1, its name on later versions
        strategy = rule if hasattr(rule, "get_weight") else validate_and_load_priority_weight_strategy(rule)
        return strategy.get_weight(SimpleNamespace(task=task))

    dag = onboarding_dag(dag_id="shape", source=source)
    for kind in CHANNELS_BY_ACCOUNT_TYPE:
        steps = [t for t in dag.task_dict.values() if t.task_id.startswith(f"{kind}.send_")]
        steps.sort(key=lambda t: len(t.get_flat_relative_ids(upstream=True)))
        weights = [weight(t) for t in steps]
        assert weights == sorted(set(weights)), (kind, [t.task_id for t in steps], weights)


def test_every_param_has_a_title_a_description_and_a_section():
    dag = onboarding_dag(dag_id="form", source=OnboardingSource())
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.schema.get("title"), name
        assert param.schema.get("section"), name
        assert param.description, name
    assert not {"source_table", "source_query", "columns"} & set(dag.params)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"parallel_chunks": 0}, "parallel_chunks"),
        ({"params": {"source_query": "SELECT 1"}}, "unknown onboarding params"),
        ({"params": {"chunk_size": 0}}, "chunk_size"),
    ],
)
def test_bad_factory_arguments_are_refused_at_parse_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        onboarding_dag(dag_id="bad", source=OnboardingSource(), **kwargs)


class TwoWarehouses:
    """The retail and business warehouses (SQLite files) behind the two DAGs' connections."""

    def __init__(self, tmp_path: Path, monkeypatch) -> None:
        self.paths = {RETAIL: str(tmp_path / "retail.db"), BUSINESS: str(tmp_path / "business.db")}
        for dag_id, conn_id in ((RETAIL, "RETAIL"), (BUSINESS, "BUSINESS")):
            conn = json.dumps({"conn_type": "sqlite", "host": self.paths[dag_id]})
            monkeypatch.setenv(f"AIRFLOW_CONN_SFOX_WAREHOUSE_{conn_id}", conn)
        self.execute(
            RETAIL,
            "CREATE TABLE retail_customers (customer_id TEXT, account_type TEXT, "
            "email TEXT, phone_number TEXT)",
        )
        self.execute(
            BUSINESS,
            "CREATE TABLE companies (user_id TEXT, account_type TEXT, email TEXT, "
            "phone_number TEXT, active INT)",
        )

    def execute(self, dag_id: str, sql: str, rows=None) -> list[tuple]:
        with sqlite3.connect(self.paths[dag_id]) as conn:
            cursor = conn.executemany(sql, rows) if rows is not None else conn.execute(sql)
            return cursor.fetchall()

    def add(self, retail: list[tuple], business: list[tuple]) -> None:
        self.execute(RETAIL, "INSERT INTO retail_customers VALUES (?, ?, ?, ?)", retail)
        self.execute(BUSINESS, "INSERT INTO companies VALUES (?, ?, ?, ?, 1)", business)
        # An inactive company: the business DAG's query leaves it out.
        self.execute(
            BUSINESS, "INSERT INTO companies VALUES ('inactive-1', 'corporation', 'i@example.com', NULL, 0)"
        )

    def ledger_users(self, dag_id: str) -> set[str]:
        return {row[0] for row in self.execute(dag_id, "SELECT user_id FROM sfox_onboarding_ledger")}


def _codes(server) -> Counter:
    return Counter((e.user_id, e.type) for e in server.journal() if e.code_sent)


def _users(prefix: str, count: int, seed: int) -> list[tuple]:
    return [(f"{prefix}-{uid}", *rest) for uid, *rest in make_users(count, seed=seed)]


@pytest.fixture
def two_warehouses(airflow_db, sfox_sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=5000)
    )
    return TwoWarehouses(tmp_path, monkeypatch)


def test_two_factory_dags_one_after_the_other_and_at_once(two_warehouses, sfox_sandbox, airflow_db, tmp_path):
    retail, business = _users("r", 30, seed=21), _users("b", 25, seed=22)
    two_warehouses.add(retail, business)
    sfox_sandbox.seed_users(sandbox_users(retail + business))

    # One after the other, in this process.
    for dag_id in (RETAIL, BUSINESS):
        assert load_dag_file_dag(dag_id).test().state == "success"
    assert _codes(sfox_sandbox) == Counter({(u[0], "email"): 1 for u in retail + business})

    # At once: two `airflow dags test` processes, each with a copy of the migrated metadata DB.
    more_retail, more_business = _users("r2", 40, seed=23), _users("b2", 40, seed=24)
    two_warehouses.add(more_retail, more_business)
    sfox_sandbox.seed_users(sandbox_users(more_retail + more_business))
    procs = [_dags_test(dag_id, airflow_db, tmp_path) for dag_id in (RETAIL, BUSINESS)]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]

    everyone = retail + business + more_retail + more_business
    assert _codes(sfox_sandbox) == Counter({(u[0], "email"): 1 for u in everyone})
    assert "inactive-1" not in {e.user_id for e in sfox_sandbox.journal()}
    # Each DAG's ledger holds its own users and none of the other's.
    assert two_warehouses.ledger_users(RETAIL) == {u[0] for u in retail + more_retail}
    assert two_warehouses.ledger_users(BUSINESS) == {u[0] for u in business + more_business}


def load_dag_file_dag(dag_id: str):
    return load_dag_file(Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{DAG_FILE}.py", dag_id)


def _dags_test(dag_id: str, airflow_home: str, tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": copy_metadata_db(
            airflow_home, tmp_path / f"{dag_id}-airflow.db"
        ),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{DAG_FILE}.py"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_conf_naming_the_source_fails_before_any_sql(two_warehouses, sfox_sandbox):
    retail = _users("r", 5, seed=25)
    two_warehouses.add(retail, [])
    dag_run = load_dag_file_dag(RETAIL).test(run_conf={"source_query": "SELECT * FROM sqlite_master"})
    assert dag_run.state == "failed"
    assert sfox_sandbox.journal() == []
    assert two_warehouses.execute(RETAIL, "SELECT COUNT(*) FROM retail_customers") == [(5,)]
    assert two_warehouses.execute(RETAIL, "SELECT COUNT(*) FROM sfox_onboarding_ledger") == [(0,)]
    # The run row says why the run failed, for the onboarding page.
    ((status, reason),) = two_warehouses.execute(RETAIL, "SELECT status, reason FROM sfox_onboarding_runs")
    assert status == "plan_failed"
    assert "'source_query' is refused" in reason


def _core_timetable(timetable):
    """The scheduler's side of a DAG's timetable (Airflow 3.2+ splits SDK and core classes)."""
    if hasattr(timetable, "next_dagrun_info"):
        return timetable
    from airflow.serialization.encoders import coerce_to_core_timetable

    return coerce_to_core_timetable(timetable)


@pytest.mark.parametrize("minutes_after_the_hour", [0.5, 3, 30, 59])
@pytest.mark.parametrize(
    ("schedule", "runs_at_unpause"),
    [
        (None, False),  # the factory's default: the next hourly tick, nothing for the past hour
        ("@hourly", True),  # what the DAG used to have: a run for the hour that just ended
    ],
)
def test_unpausing_creates_no_run_for_the_past_hour(
    monkeypatch, schedule, runs_at_unpause, minutes_after_the_hour
):
    """What the scheduler plans for a DAG that was never run, the moment it is unpaused."""
    import importlib

    import pendulum
    from airflow.timetables.base import TimeRestriction

    dag = onboarding_dag(dag_id="unpause", source=OnboardingSource(), schedule=schedule)
    timetable = _core_timetable(dag.timetable)
    now = pendulum.datetime(2026, 12, 1, 9, tz="UTC").add(seconds=int(minutes_after_the_hour * 60))
    for module in {type(timetable).__module__, "airflow.timetables._cron"}:
        monkeypatch.setattr(importlib.import_module(module), "utcnow", lambda: now, raising=False)
    planned = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup),
    )
    assert (planned.run_after <= now) is runs_at_unpause, planned


def test_warehouse_schema_is_set_where_the_dag_is_defined():
    dag = onboarding_dag(
        dag_id="schema", source=OnboardingSource(table="crm.customers"), warehouse_schema="sfox"
    )
    for kind, channels in CHANNELS_BY_ACCOUNT_TYPE.items():
        for channel in channels:
            task = dag.get_task(f"{kind}.send_{channel}")
            assert task.warehouse_schema == "sfox"
    assert "warehouse_schema" not in dag.params  # never a run param
    with pytest.raises(ValueError, match="warehouse_schema"):
        onboarding_dag(dag_id="bad", source=OnboardingSource(), warehouse_schema="a.b")
    with pytest.raises(ValueError, match="warehouse_schema"):
        onboarding_dag(dag_id="bad", source=OnboardingSource(), warehouse_schema="x; DROP TABLE y")


def test_a_wrong_token_fails_the_plan_naming_the_connection_and_the_page_shows_why(
    two_warehouses, sfox_sandbox, monkeypatch
):
    two_warehouses.add(_users("r", 5, seed=26), [])
    wrong = "not-the-token-1234"
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, password=wrong))
    assert load_dag_file_dag(RETAIL).test().state == "failed"

    assert [(e.method, e.status) for e in sfox_sandbox.journal()] == [("GET", 401)]  # then nothing
    ((status, reason),) = two_warehouses.execute(RETAIL, "SELECT status, reason FROM sfox_onboarding_runs")
    assert status == "plan_failed"
    assert "HTTP 401" in reason
    assert "through connection 'sfox_default'" in reason
    assert wrong not in reason


def _assets(timetable) -> list:
    condition = timetable.asset_condition  # one asset, or AssetAll of those of schedule=[...]
    return list(getattr(condition, "objects", [condition]))


def test_a_source_asset_starts_runs_as_well_as_the_hour_and_runs_update_the_ledger_asset():
    source = table_asset("postgres://db:5432/wh", "customers")
    dag = onboarding_dag(dag_id="on_asset", source=OnboardingSource(table="customers"), source_asset=source)
    assert _assets(dag.timetable) == [source]
    assert type(dag.timetable.timetable) is type(default_schedule())  # still on the hour too
    # The ledger's event comes from "announce", after "summarize" (a dry run skips it).
    assert dag.get_task("announce").outlets == [ledger_asset("sfox_warehouse", "sfox_onboarding_ledger")]
    assert dag.get_task("announce").upstream_task_ids == {"summarize"}
    assert dag.get_task("summarize").outlets == []
    plain = onboarding_dag(dag_id="on_time", source=OnboardingSource(), warehouse_schema="crm")
    assert type(plain.timetable) is type(default_schedule())
    assert plain.get_task("announce").outlets == [
        ledger_asset("sfox_warehouse", "crm.sfox_onboarding_ledger")
    ]


def test_the_email_verified_dag_runs_on_its_asset_and_sends_sms_only():
    asset = email_verified_asset("127.0.0.1:8089")
    dag = email_verified_dag(dag_id="followup", asset=asset)
    assert _assets(dag.timetable) == [asset]
    assert dag.get_task("send_sms").upstream_task_ids == {"individual_chunks"}
    assert "send_email" not in dag.task_dict
    assert set(dag.params) == set(EVENT_PARAMS)
    with pytest.raises(ValueError, match="params of the email-verified DAG"):
        email_verified_dag(dag_id="bad", params={"redrive": ["failed"]})


def _ledger_events(dag_run) -> int:
    """Events of the ledger's asset that this DAG run emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    uri = ledger_asset("sfox_warehouse", "sfox_onboarding_ledger").uri
    with create_session() as session:
        query = (
            select(func.count())
            .select_from(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri, AssetEvent.source_run_id == dag_run.run_id)
        )
        return int(session.scalar(query) or 0)


def _task_state(dag_run, task_id: str) -> str:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(TaskInstance.run_id == dag_run.run_id, TaskInstance.task_id == task_id)
        ).one()
        return str(ti.state)


def _summary(dag_run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == "summarize",
                XComModel.key == "return_value",
            )
        ).one()
        return XComModel.deserialize_value(row)


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_a_dry_run_previews_succeeds_and_announces_nothing(
    airflow_db, warehouse_db, sfox_sandbox, monkeypatch
):
    from tests.helpers import load_dag
    from tests.onboarding_data import BAD_ROWS

    users = make_users(30, seed=91)
    warehouse_db.seed(users + [row for row, _ in BAD_ROWS])  # 8 bad rows: 7 of 37 users, over 5 %
    sfox_sandbox.seed_users(sandbox_users(users))
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    dag = load_dag("sfox_batch_onboarding")

    dry = dag.test(run_conf={"dry_run": True, "failure_threshold": 0.05})

    assert dry.state == "success"  # never red for data quality
    preview = "a real run would fail the threshold: 7 of 37 users rejected"
    assert _summary(dry)["preview"] == preview
    assert _task_state(dry, "announce") == "skipped"
    assert _ledger_events(dry) == 0  # nothing announced to the DAGs on the ledger's asset
    assert [e for e in sfox_sandbox.journal() if e.method == "POST"] == []
    assert warehouse_db.ledger() == {}
    assert warehouse_db.attempts() == []
    rows = warehouse_db.query("SELECT run_id, dry_run, status, reason FROM sfox_onboarding_runs")
    assert rows == [(dry.run_id, 1, "success", preview)]  # the page can show the preview

    warehouse_db.seed(users)  # the partner fixes the source; a real run announces its work
    real = dag.test(run_conf={"dry_run": False, "failure_threshold": 0.05})
    assert real.state == "success"
    assert _task_state(real, "announce") == "success"
    assert _ledger_events(real) == 1
