"""Run rows: a run table of an earlier version is brought up to date, and reasons reach the page."""

from __future__ import annotations

import sqlite3

from airflow_sfox.onboarding.warehouse import Warehouse
from airflow_sfox.plugins.dashboard import Dashboard, DashboardSettings
from tests.plugins.ledger_data import SqliteFileHook


def _page_runs(warehouse: Warehouse) -> list[dict]:
    with warehouse.connect() as conn:
        return Dashboard(warehouse, DashboardSettings()).runs(conn)


def test_a_run_table_without_reason_is_read_then_upgraded(tmp_path):
    path = str(tmp_path / "warehouse.db")
    warehouse = Warehouse(SqliteFileHook(path))
    warehouse.create_tables()
    with sqlite3.connect(path) as conn:  # as version 0.1.0 made it: no reason column
        conn.execute("ALTER TABLE sfox_onboarding_runs DROP COLUMN reason")
        conn.execute("INSERT INTO sfox_onboarding_runs (run_id, status) VALUES ('old', 'success')")
    assert [(r["run_id"], r["reason"]) for r in _page_runs(warehouse)] == [("old", None)]

    warehouse.create_tables()  # the next run's plan
    warehouse.write_run({"run_id": "new", "status": "plan_failed", "reason": "planning failed: no column"})
    assert {r["run_id"]: r["reason"] for r in _page_runs(warehouse)} == {
        "old": None,
        "new": "planning failed: no column",
    }
