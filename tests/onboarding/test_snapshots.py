"""The shared snapshot of sFOX's user list: one read per interval for the plans of one warehouse."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_sfox.hooks.sfox import USERS_PATH, SfoxConnectHook
from airflow_sfox.onboarding.config import OnboardingConfig
from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.planner import Planner
from airflow_sfox.onboarding.schema import utcnow
from airflow_sfox.onboarding.snapshots import SNAPSHOT_GRACE
from airflow_sfox.onboarding.warehouse import Warehouse
from tests.helpers import sfox_conn_json
from tests.onboarding_data import make_users, sandbox_users


def list_reads(sandbox) -> int:
    return sum(1 for e in sandbox.journal() if e.method == "GET" and e.path == USERS_PATH)


def plan(warehouse, run_id, **config):
    with SfoxConnectHook() as hook:
        return Planner(
            warehouse, hook, OnboardingConfig(chunk_size=1000, **config), run=RunRef("sfox_test", run_id)
        ).plan()


@pytest.fixture
def users(warehouse_db, sfox_sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFOX_DEFAULT", sfox_conn_json(sfox_sandbox.url, rate_limit_requests=0))
    rows = make_users(20, seed=31)
    warehouse_db.seed(rows)
    sfox_sandbox.seed_users(sandbox_users(rows))
    return Warehouse.from_conn_id("sfox_warehouse")


@pytest.mark.parametrize(("age", "reads"), [(0, 3), (30, 1)], ids=["every-plan", "shared"])
def test_plans_within_the_age_share_one_read_of_the_list(users, warehouse_db, sfox_sandbox, age, reads):
    first = plan(users, "r1", snapshot_max_age_minutes=age)
    second = plan(users, "r2", snapshot_max_age_minutes=age)
    preview = plan(users, "r3", snapshot_max_age_minutes=age, dry_run=True)

    assert list_reads(sfox_sandbox) == reads
    assert [p.counts["snapshot_reused"] for p in (first, second, preview)] == [
        0,
        int(bool(age)),
        int(bool(age)),
    ]
    assert first.counts["planned_users"] == 20
    assert second.counts["planned_users"] == 20  # the same decisions from the same list
    kept = warehouse_db.query("SELECT COUNT(DISTINCT snapshot_id) FROM sfox_onboarding_snapshot")
    assert kept == [(1 if age else 0,)]  # shared: kept for the others; else removed by its plan


def test_a_shared_snapshot_past_its_age_is_read_again_and_the_old_one_removed(
    users, warehouse_db, sfox_sandbox
):
    plan(users, "r1", snapshot_max_age_minutes=30)
    old = warehouse_db.timestamp(utcnow() - timedelta(minutes=31) - SNAPSHOT_GRACE)
    warehouse_db.query("UPDATE sfox_onboarding_snapshot_taken SET taken_at = ?", (old,))

    again = plan(users, "r2", snapshot_max_age_minutes=30)

    assert again.counts["snapshot_reused"] == 0
    assert list_reads(sfox_sandbox) == 2
    assert warehouse_db.query("SELECT COUNT(*) FROM sfox_onboarding_snapshot_taken") == [(1,)]
    assert warehouse_db.query("SELECT COUNT(DISTINCT snapshot_id) FROM sfox_onboarding_snapshot") == [(1,)]
