"""
The run level of onboarding: plan a run, record chunk figures, summarise and judge it.

These are the functions the DAG's tasks call; each takes plain values (connection ids,
params, the run id) so it can be driven from a test without a scheduler.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_sfox._compat import AirflowException
from airflow_sfox.assets.sfox import USER_IDS_KEY
from airflow_sfox.exceptions import SfoxRateBudgetError, SfoxServerError
from airflow_sfox.onboarding.config import OnboardingConfig
from airflow_sfox.onboarding.counts import due_counts, plan_result
from airflow_sfox.onboarding.model import (
    LedgerState,
    RunRef,
    RunStatus,
)
from airflow_sfox.onboarding.planner import Planner
from airflow_sfox.onboarding.schema import REASON_LENGTH, of_run, utcnow
from airflow_sfox.onboarding.sender import outage_text
from airflow_sfox.onboarding.verdict import Verdict, judge, log_share, log_table, outcome_table, summary_of
from airflow_sfox.onboarding.warehouse import Warehouse

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from datetime import datetime

    from airflow_sfox.onboarding.config import OnboardingSource

log = logging.getLogger(__name__)


class OnboardingRunFailed(AirflowException):
    """
    The run failed; ``summary`` holds its accounting (no personal data), for alerts.

    :param message: why, with the run id.
    :param summary: the run summary (see :func:`summarize_run`).
    """

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


#: Plan counts of the retries across runs, logged on a line of their own.
_RETRY_COUNTS = ("retry_", "gave_up_", "redrive_")


def plan_run(
    *,
    params: Mapping[str, Any],
    run_id: str,
    dag_id: str,
    warehouse_conn_id: str,
    sfox_conn_id: str,
    source: OnboardingSource | None = None,
    conf: Mapping[str, Any] | None = None,
    started_at: datetime | None = None,
    warehouse_schema: str | None = None,
) -> dict[str, Any]:
    """
    Plan one run and open its summary row.

    Returns ``{"counts": {...}, "<account type>": [chunk descriptors], ...}``: one list per
    account type, for its own mapped group. A plan that fails logs why on one ERROR line, and
    records it in the run row, before the error is raised.

    :param params: the DAG params (see :func:`airflow_sfox.onboarding.params.onboarding_params`).
    :param run_id: the Airflow run id.
    :param dag_id: the DAG id, recorded in the run row.
    :param warehouse_conn_id: the SQL connection of the warehouse.
    :param sfox_conn_id: the ``sfox`` connection.
    :param source: where the users come from (default: table ``sfox_users``).
    :param conf: the run's conf, refused when it names the source or an unknown key.
    :param started_at: when the run started (default: now).
    :param warehouse_schema: the schema of the ledger, run and snapshot tables (``None``: the
        connection's default); set where the DAG is defined, never by a run.
    """
    from airflow_sfox.hooks.sfox import SfoxConnectHook  # not at parse time: see operators

    started_at, run = started_at or utcnow(), RunRef(dag_id, run_id)
    warehouse: Warehouse | None = None
    try:
        warehouse = Warehouse.from_conn_id(warehouse_conn_id, schema=warehouse_schema)
        OnboardingConfig.check_conf(conf)
        config = OnboardingConfig.from_params(params)
        with SfoxConnectHook(sfox_conn_id=sfox_conn_id) as sfox:
            plan = Planner(warehouse, sfox, config, source=source, run=run).plan()
    except Exception as error:
        _plan_failed(error, warehouse, params=params, run=run, started_at=started_at)
        raise
    figures = sfox.stats.as_dict()  # the one bulk read of sFOX's users counts too
    _log_plan(plan.counts, chunks=len(plan.chunks), dry_run=config.dry_run)
    if not config.dry_run:
        days = config.attempts_retention_days
        if pruned := warehouse.prune_attempts(older_than=started_at - timedelta(days=days)):
            log.info("Pruned %d attempts older than %d days", pruned, days)
        open_run(
            warehouse,
            run=run,
            started_at=started_at,
            counts=plan.counts,
            steps=plan.steps,
            requests=figures["requests"],  # the plan's one read of sFOX's users
            rate_limited=figures["rate_limited"],
        )
    return plan_result(plan.counts, plan.chunks)


def _plan_failed(
    error: Exception,
    warehouse: Warehouse | None,
    *,
    params: Mapping[str, Any],
    run: RunRef,
    started_at: datetime,
) -> None:
    """
    Say why a plan failed on one plain ERROR line (before Airflow's traceback), and record it
    in the run row unless the run is a dry run.

    The hook's errors are scrubbed of the token, emails and phones; the planner's name columns,
    params and connection ids; the warehouse's never repeat statement parameters.
    """
    lines = str(error).strip().splitlines()
    why = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    log.error("sFOX onboarding run %s: planning failed, nothing was sent: %s", run, why[:REASON_LENGTH])
    if warehouse is not None and not params.get("dry_run"):
        _record_plan_failure(warehouse, run=run, started_at=started_at, error=error)


def _log_plan(counts: Mapping[str, Any], *, chunks: int, dry_run: bool) -> None:
    """The plan's figures: users planned, rejected (with their reasons), duplicates, retries."""
    log.info(
        "Planned %d users (%s) from %d source rows; rejected users: %d; duplicate rows: %d; "
        "chunks to map: %d%s",
        counts["planned_users"],
        ", ".join(f"{kind}_{channel}: {n}" for (kind, channel), n in due_counts(counts).items()) or "none",
        counts["source_rows"],
        counts["rejected"],
        counts["duplicate_rows"],
        chunks,
        " (dry run: nothing written or sent)" if dry_run else "",
    )
    for reason, users in counts["rejected_reasons"].items():
        log.info("rejected users: %d, %s", users, reason)
    retries = {k: v for k, v in counts.items() if k.startswith(_RETRY_COUNTS)}
    if retries:  # failed and not registered users: tried again, still waiting, given up, re-driven
        log.info("Retries across runs: %s", ", ".join(f"{k} {v}" for k, v in retries.items()))


def plan_event_run(
    *,
    events: Iterable[tuple[str | None, Mapping[str, Any] | None]],
    params: Mapping[str, Any],
    run_id: str,
    dag_id: str,
    warehouse_conn_id: str,
    conf: Mapping[str, Any] | None = None,
    started_at: datetime | None = None,
    warehouse_schema: str | None = None,
) -> dict[str, Any]:
    """
    Queue the sms of the users named by "email verified" events, and open the run's row.

    Returns ``{"counts": {...}, "individual": [chunk descriptors]}`` like :func:`plan_run`; the
    counts say how many events and ids the run judged and why each skipped one was skipped.
    An event an earlier run judged is skipped, uncounted; malformed ids are reported
    (``malformed_ids``), never counted against the run (see :mod:`airflow_sfox.onboarding.events`).

    :param events: ``(key, extra)`` of each event handed to the run (see
        :func:`~airflow_sfox.onboarding.events.event_key`); the ``user_ids`` param counts as one
        more, without a key, for a run triggered by hand.
    :param params: the DAG params (see :func:`airflow_sfox.onboarding.params.event_params`).
    """
    from airflow_sfox.onboarding.events import plan_events

    started_at, run = started_at or utcnow(), RunRef(dag_id, run_id)
    warehouse: Warehouse | None = None
    try:
        OnboardingConfig.check_conf(conf)
        config = OnboardingConfig.from_params(params)
        by_hand = [(None, {USER_IDS_KEY: config.user_ids})] if config.user_ids else []
        warehouse = Warehouse.from_conn_id(warehouse_conn_id, schema=warehouse_schema)
        if not config.dry_run:
            warehouse.create_tables()
        plan = plan_events(
            warehouse,
            [*events, *by_hand],
            run=run,
            chunk_size=config.chunk_size,
            dry_run=config.dry_run,
        )
    except Exception as error:
        _plan_failed(error, warehouse, params=params, run=run, started_at=started_at)
        raise
    plan.log(dry_run=config.dry_run)
    counts = plan.counts(dry_run=config.dry_run)
    chunks = [] if config.dry_run else plan.chunks(config.chunk_size, hold_uncertain=config.hold_uncertain)
    if not config.dry_run:
        warehouse.prune_events(older_than=started_at - timedelta(days=config.attempts_retention_days))
        open_run(warehouse, run=run, started_at=started_at, counts=counts, steps=len(chunks))
    return plan_result(counts, chunks)


def open_run(
    warehouse: Warehouse,
    *,
    run: RunRef,
    started_at: datetime,
    counts: Mapping[str, Any],
    steps: int,
    requests: int = 0,
    rate_limited: int = 0,
) -> None:
    """
    Write the run row of a run whose work is planned, forgetting the steps of an earlier plan.

    :param counts: the plan's counts (``source_rows``, ``planned_users``, ``rejected``).
    :param steps: chunk steps to run: one per chunk and channel with codes due (others skip).
    :param requests: requests the plan made, and those answered 429.
    """
    warehouse.forget_steps(run)
    warehouse.write_run(
        {
            **run._asdict(),
            "dry_run": 0,
            "started_at": started_at,
            "source_rows": counts["source_rows"],
            "planned": counts["planned_users"],
            "rejected": counts["rejected"],
            "duplicate_rows": counts.get("duplicate_rows", 0),
            "malformed_ids": counts.get("malformed_ids", 0),
            "steps": steps,
            "steps_done": 0,
            "requests": requests,
            "rate_limited": rate_limited,
            "send_seconds": 0.0,
            "status": RunStatus.RUNNING.value,
        }
    )


def _record_plan_failure(
    warehouse: Warehouse, *, run: RunRef, started_at: datetime, error: Exception
) -> None:
    """Write the run row of a run whose planning failed, with the reason, so the page shows it."""
    # The hook's errors are already scrubbed of the token, emails and phones; others name
    # columns, params and connection ids.
    status, reason = RunStatus.PLAN_FAILED, f"planning failed: {type(error).__name__}: {error}"
    if isinstance(error, (SfoxServerError, SfoxRateBudgetError)):  # an outage, not a bad plan
        status = RunStatus.INTERRUPTED
        reason = f"planning stopped: {outage_text(error)[1]}; nothing was sent, the next run plans again"
    try:
        warehouse.create_tables()
        row = {**run._asdict(), "dry_run": 0, "started_at": started_at}
        warehouse.write_run(
            {**row, "finished_at": utcnow(), "status": status.value, "reason": reason[:REASON_LENGTH]}
        )
    except Exception:  # the warehouse itself is the problem: the task log has the first error
        log.warning("could not record the failed plan of run %s in the warehouse", run, exc_info=True)


def mark_interrupted(
    warehouse: Warehouse, *, dag_id: str, run_id: str, state_of: Callable[[str], str | None]
) -> list[str]:
    """
    Mark the DAG's earlier run rows that still say ``running`` but whose Airflow run is no
    longer running (killed, failed without a summary) ``interrupted``, with what they finished.

    :param warehouse: where the run table is.
    :param dag_id: the DAG.
    :param run_id: the run that starts (left alone).
    :param state_of: the Airflow state of a run of the DAG (``None``: unknown); Airflow is asked,
        not assumed: ``airflow dags test`` ignores ``max_active_runs``.
    :return: the run ids marked.
    """
    import sqlalchemy as sa

    if not warehouse.has_ledger():
        return []
    t = warehouse.runs_t
    query = sa.select(t.c.run_id, t.c.steps, t.c.steps_done).where(
        t.c.dag_id == dag_id, t.c.status == RunStatus.RUNNING.value, t.c.run_id != run_id
    )
    with warehouse.connect() as conn:
        rows = conn.execute(query).all()
    marked = []
    for other, steps, steps_done in rows:
        state = state_of(other)
        if state in ("running", "queued"):
            continue
        table = warehouse.run_counts(RunRef(dag_id, other))
        sent = sum(v for (_, done), v in table.items() if done == LedgerState.SENT)
        left = sum(v for (_, done), v in table.items() if done == LedgerState.QUEUED)
        reason = (
            f"interrupted: its Airflow run is {state or 'gone'} and never summarized; "
            f"{steps_done or 0} of {steps or 0} chunk steps done, {sent} codes sent, "
            f"{left} users left queued for the next run"
        )
        log.warning("Run %s of %s: %s", other, dag_id, reason)
        warehouse.write_run(
            {
                "dag_id": dag_id,
                "run_id": other,
                "status": RunStatus.INTERRUPTED.value,
                "finished_at": utcnow(),
                "sent": sent,
                "reason": reason[:REASON_LENGTH],
            }
        )
        marked.append(other)
    return marked


def record_chunk(
    warehouse: Warehouse, run: RunRef, stats: Mapping[str, Any], *, step: str, done: bool
) -> None:
    """
    Add one try of a chunk step's request figures to the run row; if the step finished, mark it
    done (once: a retry or a clear of a finished step does not count it again).

    :param warehouse: where the run row is.
    :param run: the run.
    :param step: the step's key in the run (its channel and chunk).
    :param stats: ``requests``, ``rate_limited``, ``seconds``, ``budget_wait_seconds`` and
        ``pause_seconds`` (thread-seconds waiting for the rate budget and for 429 pauses) of the step.
    :param done: the step sent all its work (a failed step is counted, not done).
    """
    import sqlalchemy as sa

    t, steps = warehouse.runs_t, warehouse.steps_t
    with warehouse.connect() as conn:
        # The run row first: its lock orders the steps of a run that finish at once. The count
        # of finished steps then reads after the step before it committed (PostgreSQL reads a
        # statement's subquery as of the statement's start: counted beside the first update, two
        # steps finishing together each missed the other's row, and the run was failed).
        figures = sa.update(t).where(of_run(t, run))
        conn.execute(
            figures.values(
                requests=t.c.requests + int(stats["requests"]),
                rate_limited=t.c.rate_limited + int(stats["rate_limited"]),
                send_seconds=t.c.send_seconds + float(stats["seconds"]),
                budget_wait_seconds=sa.func.coalesce(t.c.budget_wait_seconds, 0)
                + float(stats.get("budget_wait_seconds", 0.0)),
                pause_seconds=sa.func.coalesce(t.c.pause_seconds, 0) + float(stats.get("pause_seconds", 0.0)),
            )
        )
        if done:
            row = {**run._asdict(), "step": step, "finished_at": utcnow()}
            conn.execute(warehouse.upsert(steps, (*RunRef._fields, "step"), ["finished_at"]), [row])
            count = sa.select(sa.func.count()).select_from(steps).where(of_run(steps, run)).scalar_subquery()
            conn.execute(figures.values(steps_done=count))
        conn.commit()


def summarize_run(
    *,
    counts: Mapping[str, Any] | None,
    params: Mapping[str, Any],
    run_id: str,
    dag_id: str,
    warehouse_conn_id: str,
    started_at: datetime | None = None,
    warehouse_schema: str | None = None,
    stops: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """
    Count the run's outcomes, log them as a table, write the run row's outcome (the one place
    that does), and fail the run when an outage stopped it, planned work was left unsent, or
    failed plus rejected rows pass ``failure_threshold``. A dry run never fails: it says what a
    real run would conclude.

    :param counts: the ``counts`` of what :func:`plan_run` returned.
    :param params: the DAG params.
    :param run_id: the Airflow run id.
    :param dag_id: the DAG id.
    :param warehouse_conn_id: the SQL connection of the warehouse.
    :param started_at: when the run started, for the run's requests per second.
    :param warehouse_schema: the schema of the onboarding tables (``None``: the connection's default).
    :param stops: what the chunk steps that stopped said was down (their ``stopped`` XCom).
    """
    warehouse = Warehouse.from_conn_id(warehouse_conn_id, schema=warehouse_schema)
    ref = RunRef(dag_id, run_id)
    if counts is None:
        raise _failed_plan_summary(warehouse, run=ref, dry_run=bool(params.get("dry_run")))
    config = OnboardingConfig.from_params(params)
    table = outcome_table(warehouse, ref, counts, dry_run=config.dry_run)
    log_table(table, dry_run=config.dry_run)
    run = {} if config.dry_run else warehouse.run_row(ref)
    verdict = judge(table, counts, config.failure_threshold, run=run, stops=stops)
    summary = summary_of(counts, table, verdict, run=ref, dry_run=config.dry_run)
    if config.dry_run:
        _write_dry_run(warehouse, summary, counts, verdict, started_at=started_at)
    else:
        _write_outcome(warehouse, summary, table, verdict, run=run, started_at=started_at)
    log_share(verdict.judged, config.failure_threshold)  # the summary's last line
    if summary["problem"]:
        raise OnboardingRunFailed(f"sFOX onboarding run {ref}: {summary['problem']}", summary)
    return summary


def _failed_plan_summary(warehouse: Warehouse, *, run: RunRef, dry_run: bool) -> OnboardingRunFailed:
    """The failure of a run whose plan failed, with the reason the plan task recorded, if it could."""
    why, status = "planning failed, nothing was sent", RunStatus.PLAN_FAILED.value
    with contextlib.suppress(Exception):
        recorded = warehouse.run_row(run)
        why += f": {recorded.get('reason') or 'see its log'}"
        status = recorded.get("status") or status  # interrupted: an outage stopped the plan
    failed_plan: dict[str, Any] = {**run._asdict(), "dry_run": dry_run, "status": status, "problem": why}
    return OnboardingRunFailed(f"sFOX onboarding run {run}: {why}", failed_plan)


def _write_dry_run(
    warehouse: Warehouse,
    summary: dict[str, Any],
    counts: Mapping[str, Any],
    verdict: Verdict,
    *,
    started_at: datetime | None,
) -> None:
    """A dry run succeeds and says what a real run would conclude, in its summary and run row."""
    rejected, rows = int(counts["rejected"]), int(counts["source_rows"])
    users = int(counts.get("valid_users") or 0) + rejected
    would = "fail" if verdict.status == RunStatus.FAILED else "pass"
    preview = f"a real run would {would} the threshold: {rejected} of {users} users rejected"
    log.info("Dry run: %s (%s)", preview, verdict.judged)
    summary.update(status=RunStatus.SUCCESS.value, problem=None, preview=preview)
    try:
        warehouse.create_tables()
        warehouse.write_run(
            {
                "run_id": summary["run_id"],
                "dag_id": summary["dag_id"],
                "dry_run": 1,
                "started_at": started_at or utcnow(),
                "finished_at": utcnow(),
                "source_rows": rows,
                "planned": int(counts.get("planned_users") or 0),
                "rejected": rejected,
                "steps": 0,
                "steps_done": 0,
                "status": RunStatus.SUCCESS.value,
                "reason": preview[:REASON_LENGTH],
            }
        )
    except Exception:  # a preview is not worth failing for
        log.warning("could not record the dry run in the warehouse", exc_info=True)


def _write_outcome(
    warehouse: Warehouse,
    summary: dict[str, Any],
    table: Mapping[tuple[str, str], int],
    verdict: Verdict,
    *,
    run: Mapping[str, Any],
    started_at: datetime | None,
) -> None:
    """Write the run row's outcome, and log the run's request figures."""
    ref = RunRef(summary["dag_id"], summary["run_id"])
    finished = utcnow()
    seconds = (finished - (started_at or finished)).total_seconds()
    states = (
        LedgerState.SENT,
        LedgerState.ALREADY_VERIFIED,
        LedgerState.NOT_REGISTERED,
        LedgerState.REGISTERED,
    )
    by_state = {state.value: 0 for state in states}
    for (_, state), v in table.items():
        if state in by_state:
            by_state[state] += v
    # Requests that may have sent a second code (answers lost, or in flight at a crash).
    uncertain = summary["uncertain"] = warehouse.uncertain_count(ref)
    requests = int(run.get("requests") or 0)
    warehouse.write_run(
        {
            **ref._asdict(),
            "finished_at": finished,
            "failed": verdict.failed,
            "uncertain": uncertain,
            "requests_per_second": requests / seconds if seconds > 0 else None,
            "status": verdict.status.value,
            "reason": verdict.problem[:REASON_LENGTH] if verdict.problem else None,
            **by_state,
        }
    )
    waits = {key: round(float(run.get(key) or 0.0), 1) for key in ("budget_wait_seconds", "pause_seconds")}
    summary.update(requests=requests, rate_limited=int(run.get("rate_limited") or 0), **waits)
    log.info(
        "%d requests, %d answered 429, %.1f requests/s over the run; request threads waited "
        "%.1f s for the shared rate budget and %.1f s in 429 pauses",
        requests,
        summary["rate_limited"],
        requests / seconds if seconds > 0 else 0.0,
        waits["budget_wait_seconds"],
        waits["pause_seconds"],
    )
