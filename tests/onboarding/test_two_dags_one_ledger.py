"""
Two onboarding DAGs on one warehouse connection (one ledger, one run table) whose runs get the
same Airflow run id, as two DAGs on the factory's hourly default get every hour: each run's
plan, steps, claims, figures and summary are its own.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from airflow_sfox.onboarding.config import OnboardingSource
from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.runs import plan_run, record_chunk, summarize_run
from airflow_sfox.onboarding.sender import send_chunk
from airflow_sfox.onboarding.warehouse import Warehouse
from tests.dags.support import return_value
from tests.helpers import sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users

#: What an hourly schedule gives both DAGs for the same hour.
RUN_ID = "scheduled__2026-12-06T10:00:00+00:00"
#: Each DAG's source table: disjoint users.
SOURCES = {"sfox_test_retail": "retail_users", "sfox_test_business": "business_users"}


def _users(prefix: str, count: int, seed: int) -> list[tuple]:
    return [(f"{prefix}-{uid}", *rest) for uid, *rest in make_users(count, seed=seed)]


@pytest.fixture
def two_sources(warehouse_db, sfox_sandbox, monkeypatch) -> dict[str, list[tuple]]:
    """Each DAG's users in its own table of the one warehouse, all of them known to the sandbox."""
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    users = {
        "sfox_test_retail": _users("r", 14, seed=31),
        "sfox_test_business": _users("b", 11, seed=32),
    }
    for dag_id, rows in users.items():
        warehouse_db.seed(rows, table=SOURCES[dag_id])
    sfox_sandbox.seed_users(sandbox_users([u for rows in users.values() for u in rows]))
    return users


def _emails(sandbox) -> Counter:
    return Counter(e.user_id for e in sandbox.journal() if e.code_sent and e.type == "email")


def _plan(dag_id: str) -> dict:
    source = OnboardingSource(table=SOURCES[dag_id])
    params = {"chunk_size": 5, "failure_threshold": 0.5}
    return plan_run(
        params=params,
        run_id=RUN_ID,
        dag_id=dag_id,
        warehouse_conn_id="sfox_warehouse",
        sfox_conn_id="sfox_default",
        source=source,
    )


def _send_steps(dag_id: str, plan: dict) -> None:
    """The email steps of one run's chunks, as its mapped chunk tasks run them."""
    from airflow_sfox.hooks.sfox import SfoxConnectHook

    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    run = RunRef(dag_id=dag_id, run_id=RUN_ID)
    with SfoxConnectHook() as hook:
        for chunk in plan["chunks"]:
            if chunk.get("email"):
                stats = send_chunk(warehouse, hook, run=run, chunk=chunk, channel="email")
                figures = {**stats.as_dict(), "seconds": 0.1}
                record_chunk(warehouse, run, figures, step=f"email {chunk['label']}", done=True)


def _summarize(dag_id: str, plan: dict) -> dict:
    return summarize_run(
        counts=plan["counts"],
        params={"failure_threshold": 0.5},
        run_id=RUN_ID,
        dag_id=dag_id,
        warehouse_conn_id="sfox_warehouse",
    )


@pytest.mark.parametrize(
    "order",
    [
        # Both plans first, then each run's steps: what two DAGs on one hourly tick do.
        ("plan retail", "plan business", "send retail", "send business"),
        ("plan retail", "plan business", "send business", "send retail"),
        # One run over before the other starts.
        ("plan retail", "send retail", "plan business", "send business"),
    ],
    ids=["at-once", "at-once-reversed", "one-after-the-other"],
)
def test_two_dags_on_one_ledger_with_the_same_run_id_keep_their_runs_apart(
    two_sources, warehouse_db, sfox_sandbox, order
):
    dag_ids = {"retail": "sfox_test_retail", "business": "sfox_test_business"}
    plans: dict[str, dict] = {}
    for step in order:
        what, name = step.split()
        dag_id = dag_ids[name]
        if what == "plan":
            plans[dag_id] = _plan(dag_id)
            continue
        before = _emails(sfox_sandbox)
        _send_steps(dag_id, plans[dag_id])
        # A run's steps send its own users' codes, none of the other run's.
        assert set(_emails(sfox_sandbox) - before) == {u[0] for u in two_sources[dag_id]}

    everyone = [u for rows in two_sources.values() for u in rows]
    assert _emails(sfox_sandbox) == Counter({u[0]: 1 for u in everyone})
    for dag_id, users in two_sources.items():
        summary = _summarize(dag_id, plans[dag_id])
        assert (summary["dag_id"], summary["run_id"]) == (dag_id, RUN_ID)
        emails = {k: v for k, v in summary["outcomes"].items() if k.startswith("email:")}
        assert emails == {"email:sent": len(users)}
    rows = warehouse_db.query(
        "SELECT dag_id, run_id, planned, sent, steps, steps_done FROM sfox_onboarding_runs"
    )
    assert sorted(rows) == sorted(
        (dag_id, RUN_ID, len(users), len(users), len(plans[dag_id]["chunks"]), len(plans[dag_id]["chunks"]))
        for dag_id, users in two_sources.items()
    )
    # Each ledger row names the run that planned it, and the attempts the run that sent them.
    ledger = warehouse_db.query("SELECT user_id, dag_id, run_id FROM sfox_onboarding_ledger")
    attempts = warehouse_db.query("SELECT user_id, dag_id, run_id FROM sfox_onboarding_ledger_attempts")
    owner = {u[0]: dag_id for dag_id, rows in two_sources.items() for u in rows}
    assert sorted(ledger) == sorted((uid, owner[uid], RUN_ID) for uid in owner)
    assert sorted(attempts) == sorted((uid, owner[uid], RUN_ID) for uid in owner)


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)
def test_two_factory_dags_on_one_warehouse_run_for_the_same_logical_date(
    airflow_db, two_sources, warehouse_db, sfox_sandbox
):
    from airflow_sfox.onboarding.dag import onboarding_dag

    logical_date = datetime(2026, 12, 6, 10, tzinfo=timezone.utc)
    dag_runs = {}
    for dag_id, table in SOURCES.items():
        dag = onboarding_dag(
            dag_id=dag_id,
            source=OnboardingSource(table=table),
            warehouse_conn_id="sfox_warehouse",
            schedule=None,
        )
        # The run id is made of the time the run may start: the same for both, as every hour's.
        dag_runs[dag_id] = dag.test(
            run_after=logical_date, logical_date=logical_date, run_conf={"chunk_size": 5}
        )

    (run_id,) = {run.run_id for run in dag_runs.values()}
    assert run_id.startswith("manual__2026-12-06T10:00:00")
    assert {run.state for run in dag_runs.values()} == {"success"}
    everyone = [u for rows in two_sources.values() for u in rows]
    assert _emails(sfox_sandbox) == Counter({u[0]: 1 for u in everyone})
    for dag_id, users in two_sources.items():
        outcomes = return_value(dag_runs[dag_id], "summarize", dag_id=dag_id)["outcomes"]
        assert {k: v for k, v in outcomes.items() if k.startswith("email:")} == {"email:sent": len(users)}
    rows = warehouse_db.query("SELECT dag_id, run_id, planned, sent, status FROM sfox_onboarding_runs")
    assert sorted(rows) == sorted(
        (dag_id, run_id, len(users), len(users), "success") for dag_id, users in two_sources.items()
    )
