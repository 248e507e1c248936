"""
The DAG factory of batch onboarding: a DAG file is one call to :func:`onboarding_dag`.

::

    from airflow_sfox.onboarding.dag import OnboardingSource, onboarding_dag

    dag = onboarding_dag(
        dag_id="sfox_batch_onboarding",
        source=OnboardingSource(table="customers", columns={"user_id": "customer_id"}),
        sfox_conn_id="sfox_default",
        warehouse_conn_id="sfox_warehouse",
    )

The graph has one path per account type, from the table of channels per account type
(:data:`~airflow_sfox.onboarding.model.CHANNELS_BY_ACCOUNT_TYPE`)::

    plan -> corporation_chunks -> corporation (mapped: send_email)              -> summarize -> announce
         -> individual_chunks  -> individual  (mapped: send_email >> send_sms)  -> summarize

A source that registers the users sFOX does not know yet
(``OnboardingSource(registration=Registration(...))``, see
:mod:`airflow_sfox.onboarding.registration`) puts a ``send_registration`` step first in each
path; without it the graph is the one above.

:func:`email_verified_dag` builds the follow-up DAG, scheduled on the "email verified" asset
of an sFOX host: each run sends the sms of the users its events name, at once::

    plan -> individual_chunks -> send_sms (mapped) -> summarize -> announce

The chunk tasks retry with back-off when an outage stops them (``send_retries``); ``summarize``
alone judges the run and writes its outcome; ``announce`` emits the ledger's asset event, and
a dry run skips it.

Building a DAG does no I/O: no connection, database or network is touched at parse time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, task, task_group

from airflow_sfox._compat import RETRY_EXPONENTIAL_BACKOFF
from airflow_sfox.assets.sfox import email_verified_asset, ledger_asset
from airflow_sfox.defaults import (
    DEFAULT_EMAIL_VERIFIED_DAG_ID,
    DEFAULT_ONBOARDING_DAG_ID,
    DEFAULT_SFOX_CONN_ID,
    DEFAULT_WAREHOUSE_CONN_ID,
    LEDGER_TABLE,
)
from airflow_sfox.onboarding.alerts import deadline_alert
from airflow_sfox.onboarding.config import OnboardingSource
from airflow_sfox.onboarding.model import CHANNELS_BY_ACCOUNT_TYPE, AccountType, Channel
from airflow_sfox.onboarding.params import event_params, onboarding_params
from airflow_sfox.onboarding.schema import check_identifier
from airflow_sfox.onboarding.tasks import STOPPED_KEY, RegisterBatchOperator, SendVerificationBatchOperator

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from airflow.sdk import Asset
    from airflow.sdk.definitions.xcom_arg import XComArg

    from airflow_sfox._compat import AsyncCallback
    from airflow_sfox.onboarding.alerts import Notifier

try:  # Airflow 3.2+
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable
except ImportError:  # Airflow 3.1
    from airflow.timetables.assets import AssetOrTimeSchedule  # type: ignore[assignment,no-redef,unused-ignore]
    from airflow.timetables.trigger import CronTriggerTimetable  # type: ignore[assignment,no-redef,unused-ignore]

_log = logging.getLogger(__name__)
PLAN_TASK_ID = "plan"
#: Retries of a chunk task stopped by an outage: 1, 2, 4, 8, then 15 minutes apart (at least;
#: Airflow adds up to as much again), about 75 minutes in all: one-hour maintenance windows.
SEND_RETRIES = 8
SEND_RETRY_DELAY = timedelta(minutes=1)
SEND_MAX_RETRY_DELAY = timedelta(minutes=15)

__all__ = ["OnboardingSource", "default_schedule", "email_verified_dag", "onboarding_dag"]

_DOC = """
Send sFOX verification codes to the users of a warehouse source, in chunks, within the sFOX
rate budget, idempotently: corporations verify their email; individuals their email, then
(in a later run, once sFOX reports the email verified) their phone by sms.

Source: `{source}` through connection `{where[warehouse_conn_id]}`; sFOX connection `{sfox}`.
"""


def default_schedule() -> CronTriggerTimetable:
    """
    Hourly, at minute 0 UTC, creating no run when the DAG is unpaused.

    A cron *trigger* timetable on a DAG without a start date waits for the next tick: unlike
    ``"@hourly"`` it does not start a run for the hour that just passed as soon as somebody
    unpauses the DAG (for example by triggering a dry run from the form with "unpause on
    trigger" ticked). Two details of Airflow's timetable matter:

    - given a start date, it plans the latest past tick at once (without catchup it aims at the
      latest tick already past), so the factory sets none;
    - ``run_immediately=False`` still runs the past tick within 6 minutes of it (10 % of the
      period, at least 5 minutes: Airflow 3.3.2 treats False like None), so the grace is set
      to zero instead.
    """
    return CronTriggerTimetable("0 * * * *", timezone="UTC", run_immediately=timedelta(0))


def onboarding_dag(
    *,
    source: OnboardingSource,
    dag_id: str = DEFAULT_ONBOARDING_DAG_ID,
    sfox_conn_id: str = DEFAULT_SFOX_CONN_ID,
    warehouse_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID,
    warehouse_schema: str | None = None,
    parallel_chunks: int = 2,
    schedule: Any = None,
    source_asset: Asset | None = None,
    start_date: datetime | None = None,
    params: dict[str, Any] | None = None,
    on_failure: Sequence[Notifier] = (),
    on_recovery: Sequence[Notifier] = (),
    deadline: timedelta | None = None,
    on_deadline: Sequence[AsyncCallback] = (),
    send_retries: int | None = None,
    send_retry_delay: timedelta | None = None,
    send_max_retry_delay: timedelta | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """
    Build the onboarding DAG of one source (the batch onboarding guide explains each argument).

    :param source: where the users come from (table or query, column mapping).
    :param dag_id: the DAG id.
    :param sfox_conn_id: the ``sfox`` connection.
    :param warehouse_conn_id: the SQL connection of the source, the ledger and the run table.
    :param warehouse_schema: the schema of the ledger and run tables (``None``: the connection's).
    :param parallel_chunks: chunk tasks that may send at once (default 2), sharing one budget.
    :param schedule: when to run (default: :func:`default_schedule`, hourly; nothing at unpause).
    :param source_asset: the source's :func:`~airflow_sfox.assets.sfox.table_asset`: updates start runs.
    :param start_date: leave it unset: with one, unpausing plans a run for the latest past tick.
    :param params: other defaults of the run params, e.g. ``{"chunk_size": 200}``.
    :param on_failure: notifiers called once when a run fails (:mod:`~airflow_sfox.onboarding.alerts`).
    :param on_recovery: notifiers called once when a run succeeds after one that did not.
    :param deadline: how long after it was queued a run should be finished (a Deadline Alert).
    :param on_deadline: ``AsyncCallback`` objects the triggerer calls when a run misses it.
    :param send_retries: retries of a chunk task an outage stopped (default 8; :func:`send_retry`)...
    :param send_retry_delay: ...the first one after this (default 1 minute), doubling each time...
    :param send_max_retry_delay: ...up to this (default 15 minutes): about 75 minutes in all.
    :param dag_kwargs: any other :class:`~airflow.sdk.DAG` argument (``tags``, default ``["sfox"]``; ...).
    """
    where = _warehouse_where(warehouse_conn_id, warehouse_schema)
    retry = send_retry(send_retries, send_retry_delay, send_max_retry_delay)
    dag_kwargs.setdefault("description", f"Send sFOX verification codes to the users of {source.sql()[:60]}")
    dag_kwargs.setdefault("doc_md", _DOC.format(source=source.sql(), sfox=sfox_conn_id, where=where))
    with _dag(
        dag_id,
        schedule=_timetable(schedule, source_asset),
        parallel_chunks=parallel_chunks,
        params=onboarding_params(**(params or {})),
        start_date=start_date,
        deadline=deadline_alert(deadline, tuple(on_deadline), **where),
        **dag_kwargs,
    ) as dag:
        _onboarding_graph(source, sfox_conn_id, where, retry, on_failure=on_failure, on_recovery=on_recovery)
    return dag


def email_verified_dag(
    *,
    asset: Asset | None = None,
    dag_id: str = DEFAULT_EMAIL_VERIFIED_DAG_ID,
    sfox_conn_id: str = DEFAULT_SFOX_CONN_ID,
    warehouse_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID,
    warehouse_schema: str | None = None,
    parallel_chunks: int = 2,
    params: dict[str, Any] | None = None,
    on_failure: Sequence[Notifier] = (),
    on_recovery: Sequence[Notifier] = (),
    send_retries: int | None = None,
    send_retry_delay: timedelta | None = None,
    send_max_retry_delay: timedelta | None = None,
    **dag_kwargs: Any,
) -> DAG:
    """
    Build the follow-up DAG: the sms of the users named by "email verified" events, at once.

    Scheduled on ``asset``: a partner backend posts its events (``POST /api/v2/assets/events``
    with ``{"asset_id": ..., "extra": {"user_ids": [...]}}``), or its watcher emits them.
    Airflow folds the events that arrive while a run is queued into one run, but leaves the
    events that came after the first of them waiting for the next event (apache/airflow#56050):
    so each run also reads the asset's events posted after its own (the plan task's inlet) and
    sends theirs too; a later run handed them again skips them, uncounted. Each run queues
    the sms of the individuals the ledger knows, whose email code went out and whose sms was
    never requested (see :mod:`airflow_sfox.onboarding.events`), and sends them through the
    same engine, ledger and rate budget as the onboarding DAG; other ids are counted and skipped.
    The onboarding DAG's hourly run stays the safety net: it sends the sms of any user whose
    event was lost once sFOX reports the email verified.

    :param asset: the email-verified asset (default: ``email_verified_asset()``, api.sfox.com).
        Pass the same object every DAG names it with (its watcher, if any, comes with it).
    :param params: other defaults of its params (see :func:`~airflow_sfox.onboarding.params.event_params`).

    The other parameters are :func:`onboarding_dag`'s.
    """
    asset = email_verified_asset() if asset is None else asset
    where = _warehouse_where(warehouse_conn_id, warehouse_schema)
    dag_kwargs.setdefault(
        "description", f"Send the sms of the users whose email {asset.uri} reports verified"
    )
    params_ = event_params(**(params or {}))
    with _dag(dag_id, schedule=[asset], parallel_chunks=parallel_chunks, params=params_, **dag_kwargs) as dag:
        planned = _plan_events_task(asset, **where)
        chunks = _chunks_task(AccountType.INDIVIDUAL, planned)
        sends = SendVerificationBatchOperator.partial(
            task_id=f"send_{Channel.SMS}",
            verification_type=str(Channel.SMS),
            **where,
            sfox_conn_id=sfox_conn_id,
            **send_retry(send_retries, send_retry_delay, send_max_retry_delay),
        ).expand(chunk=chunks)
        _end(sends, where, sends=[f"send_{Channel.SMS}"], on_failure=on_failure, on_recovery=on_recovery)
    return dag


def _timetable(schedule: Any, source_asset: Asset | None) -> Any:
    """``schedule`` (default hourly), or it or an update of ``source_asset``, whichever comes first."""
    timetable = default_schedule() if schedule is None else schedule
    return (
        timetable if source_asset is None else AssetOrTimeSchedule(timetable=timetable, assets=source_asset)
    )


def _onboarding_graph(
    source: OnboardingSource,
    sfox_conn_id: str,
    where: dict[str, Any],
    retry: dict[str, Any],
    *,
    on_failure: Sequence[Notifier],
    on_recovery: Sequence[Notifier],
) -> None:
    """The onboarding DAG's tasks: plan, one path per account type, summarize and announce."""
    planned = _plan_task(source=source, sfox_conn_id=sfox_conn_id, **where)
    paths = [
        _account_type_path(kind, _chunks_task(kind, planned), sfox_conn_id, where, retry, source=source)
        for kind in CHANNELS_BY_ACCOUNT_TYPE
    ]
    sends = [_step_id(kind, c) for kind in CHANNELS_BY_ACCOUNT_TYPE for c in _path_channels(kind, source)]
    _end(paths, where, sends=sends, on_failure=on_failure, on_recovery=on_recovery)


def _path_channels(kind: AccountType, source: OnboardingSource) -> tuple[Channel, ...]:
    """The steps of an account type's path: registration first when the source registers users."""
    registering = (Channel.REGISTRATION,) if source.registration is not None else ()
    return (*registering, *CHANNELS_BY_ACCOUNT_TYPE[kind])


def _dag(dag_id: str, *, schedule: Any, parallel_chunks: int, **kwargs: Any) -> DAG:
    """Both factories' DAG: one active run, ``parallel_chunks`` tasks at once, no catch-up."""
    kwargs["tags"] = list(kwargs.get("tags", ("sfox",)))
    if int(parallel_chunks) < 1:
        raise ValueError(f"parallel_chunks must be >= 1, got {parallel_chunks!r}")
    return DAG(
        dag_id=dag_id,
        schedule=schedule,
        catchup=False,
        max_active_runs=1,
        max_active_tasks=parallel_chunks,
        **kwargs,
    )


def _plan_events_task(asset: Asset, *, warehouse_conn_id: str, warehouse_schema: str | None) -> XComArg:
    @task(task_id=PLAN_TASK_ID, inlets=[asset])
    def plan(**context: Any) -> dict[str, Any]:
        """Queue the sms of the users the run's email-verified events name (and later events')."""
        from airflow_sfox.onboarding.events import event_key
        from airflow_sfox.onboarding.runs import plan_event_run

        if not context["params"].get("dry_run"):
            _mark_interrupted(context, warehouse_conn_id, warehouse_schema)
        triggering = [
            event for events in (context.get("triggering_asset_events") or {}).values() for event in events
        ]
        events = list(triggering)
        if triggering:  # a run of events: the ones Airflow left for a next event, too
            events += _events_after(
                context["inlet_events"], asset, max(event.timestamp for event in triggering)
            )
        result = plan_event_run(
            # Keyed, so that a run handed an event an earlier run judged skips it.
            events=[(event_key(event), event.extra) for event in events],
            params=context["params"],
            conf=context["dag_run"].conf,
            run_id=context["run_id"],
            dag_id=context["dag"].dag_id,
            warehouse_conn_id=warehouse_conn_id,
            warehouse_schema=warehouse_schema,
            started_at=context["dag_run"].start_date,
        )
        context["ti"].xcom_push(key=str(AccountType.INDIVIDUAL), value=result[str(AccountType.INDIVIDUAL)])
        return result["counts"]

    return plan()


def _events_after(inlet_events: Any, asset: Asset, last: datetime) -> list[Any]:
    """
    The asset's events later than ``last`` (the run's latest triggering event).

    Airflow's run of a burst takes only the events up to the first one that arrived while the
    previous run was queued or running; the others wait for the next event, which may never
    come (apache/airflow#56050). Reading them here sends their sms now; the run they would
    have triggered finds them judged already and skips them.
    """
    events = inlet_events[asset]
    if hasattr(events, "after"):  # Airflow 3.2+: a lazy query; 3.1 answers every event
        events = events.after(last.isoformat())
    return [event for event in events if event.timestamp > last]


def _warehouse_where(warehouse_conn_id: str, warehouse_schema: str | None) -> dict[str, Any]:
    """The warehouse arguments of every task, checked."""
    if warehouse_schema is not None:
        check_identifier(warehouse_schema, "warehouse_schema")
        if "." in warehouse_schema:
            raise ValueError(f"warehouse_schema must be a plain SQL identifier, got {warehouse_schema!r}")
    return {"warehouse_conn_id": warehouse_conn_id, "warehouse_schema": warehouse_schema}


def _plan_task(
    *, source: OnboardingSource, sfox_conn_id: str, warehouse_conn_id: str, warehouse_schema: str | None
) -> XComArg:
    @task(task_id=PLAN_TASK_ID)
    def plan(**context: Any) -> dict[str, Any]:
        """Check the source, plan who gets which code, and queue it in the ledger."""
        from airflow_sfox.onboarding.metrics import emit_plan
        from airflow_sfox.onboarding.runs import plan_run

        if not context["params"].get("dry_run"):
            _mark_interrupted(context, warehouse_conn_id, warehouse_schema)
        result = plan_run(
            params=context["params"],
            conf=context["dag_run"].conf,
            run_id=context["run_id"],
            dag_id=context["dag"].dag_id,
            warehouse_conn_id=warehouse_conn_id,
            warehouse_schema=warehouse_schema,
            sfox_conn_id=sfox_conn_id,
            source=source,
            started_at=context["dag_run"].start_date,
        )
        for kind in CHANNELS_BY_ACCOUNT_TYPE:  # each path's chunks task hands its key on
            context["ti"].xcom_push(key=str(kind), value=result[str(kind)])
        emit_plan(result["counts"], dag_id=context["dag"].dag_id)
        return result["counts"]

    return plan()


def _chunks_task(kind: AccountType, plan: XComArg) -> XComArg:
    """The chunk descriptors of one account type (Airflow maps only over a task's return value)."""

    @task(task_id=f"{kind}_chunks")
    def chunks(**context: Any) -> list[dict[str, Any]]:
        """Hand this account type's chunks to its mapped group, and say what they hold."""
        found = context["ti"].xcom_pull(task_ids=PLAN_TASK_ID, key=str(kind)) or []
        due = {
            str(c): sum(int(chunk.get(str(c), 0)) for chunk in found) for c in CHANNELS_BY_ACCOUNT_TYPE[kind]
        }
        counts = ", ".join(f"{n} {channel} codes" for channel, n in due.items())
        if found:
            _log.info("%d %s chunks to send: %s", len(found), kind, counts)
        else:
            _log.info("No %s chunk to send: no %s user has a code due (see the plan task's log)", kind, kind)
        return found

    selected = chunks()
    plan >> selected
    return selected


def _account_type_path(
    kind: AccountType,
    chunks: XComArg,
    sfox_conn_id: str,
    where: dict[str, Any],
    retry: dict[str, Any],
    *,
    source: OnboardingSource,
) -> Any:
    """One mapped group per account type, a chunk per instance: a step per channel, in order."""
    channels = _path_channels(kind, source)

    @task_group(group_id=str(kind), tooltip=f"{kind} chunks: {', '.join(channels)}")
    def path(chunk: dict[str, Any]) -> None:
        common = {**where, "sfox_conn_id": sfox_conn_id, **retry}
        steps = [
            _step(
                c,
                chunk,
                source,
                first=not n,
                later={str(x): _step_id(kind, x) for x in channels[n + 1 :]},
                **common,
            )
            for n, c in enumerate(channels)
        ]
        for before, after in itertools.pairwise(steps):
            before >> after

    return path.expand(chunk=chunks)


def _step_id(kind: AccountType, channel: Channel) -> str:
    """The task id of an account type's step of ``channel`` (in its mapped group)."""
    return f"{kind}.send_{channel}"


def _step(
    channel: Channel,
    chunk: Any,
    source: OnboardingSource,
    *,
    first: bool,
    later: dict[str, str],
    **common: Any,
) -> SendVerificationBatchOperator:
    """
    One chunk step; a later one runs when the one before had nothing to do (skipped) too. A step
    that sends skips the ``later`` ones the plan queued nothing for (see ``later_steps``).
    """
    kwargs = {"task_id": f"send_{channel}", "chunk": chunk, "later_steps": later, **common}
    kwargs["trigger_rule"] = "all_success" if first else "none_failed"
    # A later step of a chunk often has nothing to send (it skips): run it as soon as its chunk
    # lets it, not after every chunk's first step, so skips overlap the sending instead of
    # trailing it (Airflow's default rule ranks the first steps highest).
    kwargs["weight_rule"] = "upstream"
    if channel == Channel.REGISTRATION:
        return RegisterBatchOperator(source=source, **kwargs)
    return SendVerificationBatchOperator(verification_type=str(channel), **kwargs)


def _end(
    upstream: Any,
    where: dict[str, Any],
    *,
    sends: Sequence[str],
    on_failure: Sequence[Notifier],
    on_recovery: Sequence[Notifier],
) -> None:
    """``summarize`` after the chunk tasks, whatever became of them; then ``announce``."""
    summary = _summarize_task(
        **where, sends=sends, on_failure=tuple(on_failure), on_recovery=tuple(on_recovery)
    )
    upstream >> summary
    summary >> _announce_task(**where)


def send_retry(
    retries: int | None = None, delay: timedelta | None = None, max_delay: timedelta | None = None
) -> dict[str, Any]:
    """
    The retry arguments of the chunk tasks: exponential back-off on every Airflow version.

    A chunk task an outage stopped (sFOX, the rate budget's backend, the warehouse) leaves its
    users queued; each retry resumes them. With the factories' defaults (8 retries, 1 minute
    doubling up to 15) the retries span about 75 minutes: a one-hour maintenance window is
    ridden out. A refused token or an unusable connection fails at once, never retried.

    :param retries: how many times a chunk task stopped by an outage is tried again
        (``None``: :data:`SEND_RETRIES`).
    :param delay: the first retry's delay (``None``: :data:`SEND_RETRY_DELAY`).
    :param max_delay: the longest delay between two retries (``None``: :data:`SEND_MAX_RETRY_DELAY`).
    """
    retries = SEND_RETRIES if retries is None else int(retries)
    if retries < 0:
        raise ValueError(f"send_retries must be >= 0, got {retries!r}")
    return {
        "retries": retries,
        "retry_delay": SEND_RETRY_DELAY if delay is None else delay,
        "retry_exponential_backoff": RETRY_EXPONENTIAL_BACKOFF,
        "max_retry_delay": SEND_MAX_RETRY_DELAY if max_delay is None else max_delay,
    }


def _mark_interrupted(context: Any, warehouse_conn_id: str, warehouse_schema: str | None) -> None:
    """Mark the DAG's earlier runs that say ``running`` but no longer run ``interrupted``."""
    from airflow_sfox.onboarding.runs import mark_interrupted
    from airflow_sfox.onboarding.warehouse import Warehouse

    dag_id, ti = context["dag"].dag_id, context["ti"]

    def state_of(run_id: str) -> str | None:
        try:  # the Task SDK asks the API server
            state = type(ti).get_dagrun_state(dag_id=dag_id, run_id=run_id)
            return str(getattr(state, "value", state))  # a DagRunState enum
        except Exception:  # noqa: BLE001 - e.g. the run was deleted from Airflow: unknown
            _log.debug("no Airflow state for run %s", run_id, exc_info=True)
            return None

    warehouse = Warehouse.from_conn_id(warehouse_conn_id, schema=warehouse_schema)
    mark_interrupted(warehouse, dag_id=dag_id, run_id=context["run_id"], state_of=state_of)


def _stops(context: Any, sends: Sequence[str]) -> list[dict[str, Any]]:
    """What the chunk tasks that stopped said was down (their ``stopped`` XCom, every map index)."""
    found = context["ti"].xcom_pull(task_ids=list(sends), key=STOPPED_KEY)
    found = found if isinstance(found, list) else [found]
    return [stop for stop in found if isinstance(stop, dict)]


def _summarize_task(
    *,
    warehouse_conn_id: str,
    warehouse_schema: str | None,
    sends: Sequence[str],
    on_failure: tuple[Notifier, ...],
    on_recovery: tuple[Notifier, ...],
) -> XComArg:
    @task(task_id="summarize", trigger_rule="all_done")
    def summarize(**context: Any) -> dict[str, Any]:
        """This run's accounting, logged as a table; fails the run past the threshold; alerts."""
        from airflow_sfox.onboarding import metrics
        from airflow_sfox.onboarding.runs import OnboardingRunFailed, summarize_run
        from airflow_sfox.onboarding.schema import utcnow

        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        started_at = context["dag_run"].start_date
        where = {"warehouse_conn_id": warehouse_conn_id, "warehouse_schema": warehouse_schema}
        try:
            summary = summarize_run(
                # Pulled, not passed: a failed plan leaves no XCom, and the summary says so.
                counts=context["ti"].xcom_pull(task_ids=PLAN_TASK_ID),
                params=context["params"],
                run_id=run_id,
                dag_id=dag_id,
                started_at=started_at,
                stops=_stops(context, sends),
                warehouse_conn_id=warehouse_conn_id,
                warehouse_schema=warehouse_schema,
            )
        except OnboardingRunFailed as failure:
            metrics.emit_run(failure.summary, dag_id=dag_id, started_at=started_at, now=utcnow())
            _alert(on_failure, context, failure.summary, where)
            raise
        metrics.emit_run(summary, dag_id=dag_id, started_at=started_at, now=utcnow())
        if not summary["dry_run"]:
            _alert(on_recovery, context, summary, where)
        return summary

    return summarize()


def _alert(
    notifiers: Sequence[Notifier], context: Any, summary: dict[str, Any], where: dict[str, Any]
) -> None:
    """Call the notifiers once per outage and once per recovery, not once per run (see alerts)."""
    from airflow_sfox.onboarding import alerts
    from airflow_sfox.onboarding.warehouse import Warehouse

    if not notifiers:
        return
    previous = None
    with contextlib.suppress(Exception):  # the warehouse may be what is down: alert anyway
        warehouse = Warehouse.from_conn_id(where["warehouse_conn_id"], schema=where["warehouse_schema"])
        previous = alerts.previous_status(warehouse, dag_id=summary["dag_id"], run_id=summary["run_id"])
    if alerts.should_notify(previous, str(summary.get("status"))):
        alerts.notify(notifiers, context, summary)


def _announce_task(*, warehouse_conn_id: str, warehouse_schema: str | None) -> XComArg:
    ledger = LEDGER_TABLE if warehouse_schema is None else f"{warehouse_schema}.{LEDGER_TABLE}"

    # The ledger's asset: a DAG downstream of onboarding (a report, a sync) runs on its events.
    # Outlets are emitted when a task succeeds, and asset schedules cannot filter on an event's
    # extra: so a dry run skips this task, and announces nothing.
    @task(task_id="announce", outlets=[ledger_asset(warehouse_conn_id, ledger)])
    def announce(**context: Any) -> None:
        """Announce the ledger's new rows to the DAGs scheduled on its asset (not in a dry run)."""
        from airflow_sfox._compat import AirflowSkipException

        if context["params"].get("dry_run"):
            raise AirflowSkipException("a dry run wrote nothing to the ledger: nothing to announce")

    return announce()
