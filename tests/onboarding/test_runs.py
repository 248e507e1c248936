"""Run rows: reasons reach the page, steps count once."""

from __future__ import annotations

import pytest

from airflow_sfox.onboarding.model import RunRef
from airflow_sfox.onboarding.runs import record_chunk
from airflow_sfox.onboarding.warehouse import Warehouse
from airflow_sfox.plugins.dashboard import Dashboard, DashboardSettings
from tests.plugins.ledger_data import SqliteFileHook


def _page_runs(warehouse: Warehouse) -> list[dict]:
    with warehouse.connect() as conn:
        present = [c.name for c in warehouse.runs_t.columns]
        return Dashboard(warehouse, DashboardSettings()).runs(conn, present)


def test_a_runs_reason_reaches_the_page(tmp_path):
    warehouse = Warehouse(SqliteFileHook(str(tmp_path / "warehouse.db")))
    warehouse.create_tables()
    warehouse.write_run({"dag_id": "d", "run_id": "old", "status": "success"})
    warehouse.write_run(
        {"dag_id": "d", "run_id": "new", "status": "plan_failed", "reason": "planning failed: no column"}
    )
    assert {r["run_id"]: r["reason"] for r in _page_runs(warehouse)} == {
        "old": None,
        "new": "planning failed: no column",
    }


def _figures(requests: int) -> dict:
    return {"requests": requests, "rate_limited": 0, "seconds": 1.0}


@pytest.mark.parametrize(
    ("tries", "steps_done", "requests"),
    [
        ([], 0, 0),
        ([("a", True)], 1, 10),
        # Killed after it finished (before Airflow heard of it), then retried: done once.
        ([("a", True), ("a", True)], 1, 20),
        ([("a", False), ("a", True)], 1, 20),  # a failed try counts its requests, not a step
        ([("a", False)], 0, 10),
        ([("a", True), ("b", True), ("a", True)], 2, 30),
    ],
)
def test_a_step_is_done_once_however_often_it_is_tried(warehouse_db, tries, steps_done, requests):
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    run, other_run, other_dag = RunRef("d", "r"), RunRef("d", "other"), RunRef("e", "r")
    row = {"steps": 2, "steps_done": 0, "requests": 0, "rate_limited": 0, "send_seconds": 0.0}
    for each in (run, other_run, other_dag):  # another run of the DAG, and a run of another DAG
        warehouse.write_run({**row, **each._asdict()})
    record_chunk(warehouse, other_run, _figures(5), step="a", done=True)
    record_chunk(warehouse, other_dag, _figures(5), step="email individual a", done=True)
    for step, done in tries:
        record_chunk(warehouse, run, _figures(10), step=f"email individual {step}", done=done)
    got = warehouse.run_row(run)
    assert (got["steps_done"], got["requests"]) == (steps_done, requests)
    assert warehouse.run_row(other_run)["steps_done"] == 1
    assert (warehouse.run_row(other_dag)["steps_done"], warehouse.run_row(other_dag)["requests"]) == (1, 5)


def test_a_plan_that_runs_again_forgets_the_steps_of_its_first_plan(warehouse_db):
    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    run, other_dag = RunRef("d", "r"), RunRef("e", "r")
    for each in (run, other_dag):
        row = {"steps": 1, "steps_done": 0, "requests": 0, "rate_limited": 0}
        warehouse.write_run({**each._asdict(), **row})
        record_chunk(warehouse, each, _figures(1) | {"seconds": 0.0}, step="email individual 0-1", done=True)
    warehouse.forget_steps(run)
    warehouse.write_run({**run._asdict(), "steps_done": 0})
    record_chunk(warehouse, run, _figures(1), step="email individual 2-3", done=False)
    assert warehouse.run_row(run)["steps_done"] == 0
    # The other DAG's run of the same run id keeps its finished step.
    record_chunk(warehouse, other_dag, _figures(1), step="email individual 2-3", done=False)
    assert warehouse.run_row(other_dag)["steps_done"] == 1


@pytest.mark.parametrize(
    ("airflow_state", "marked"),
    [("running", False), ("queued", False), ("failed", True), ("success", True), (None, True)],
)
def test_a_starting_run_marks_earlier_rows_interrupted_only_when_airflow_no_longer_runs_them(
    warehouse_db, airflow_state, marked
):
    from airflow_sfox.onboarding.runs import mark_interrupted

    warehouse = Warehouse.from_conn_id("sfox_warehouse")
    warehouse.create_tables()
    base = {"dag_id": "d", "steps": 4, "steps_done": 1, "requests": 0, "rate_limited": 0}
    warehouse.write_run({**base, "run_id": "old", "status": "running"})
    warehouse.write_run({**base, "run_id": "done", "status": "success"})
    warehouse.write_run({**base, "run_id": "other-dag", "dag_id": "e", "status": "running"})
    warehouse.write_run({**base, "run_id": "new", "status": "running"})
    warehouse.write_run({**base, "run_id": "old", "dag_id": "e", "status": "running"})  # same id, other DAG
    asked = []

    def state_of(run_id):
        asked.append(run_id)
        return airflow_state

    got = mark_interrupted(warehouse, dag_id="d", run_id="new", state_of=state_of)

    assert asked == ["old"]  # Airflow is asked, for this DAG's rows that say running, not this run's
    assert got == (["old"] if marked else [])
    old = warehouse.run_row(RunRef("d", "old"))
    if marked:
        assert old["status"] == "interrupted"
        assert old["finished_at"] is not None
        assert f"its Airflow run is {airflow_state or 'gone'}" in old["reason"]
        assert "1 of 4 chunk steps done, 0 codes sent" in old["reason"]
    else:
        assert (old["status"], old["reason"]) == ("running", None)
    assert {warehouse.run_row(RunRef("d", r))["status"] for r in ("done", "new")} == {"success", "running"}
    assert warehouse.run_row(RunRef("e", "other-dag"))["status"] == "running"
    assert warehouse.run_row(RunRef("e", "old"))["status"] == "running"  # the other DAG's run is its own
