"""
Alerts of onboarding runs: Airflow notifiers called on failure, on recovery, and when a run
passes its deadline.

The DAG factory takes notifier objects (``SmtpNotifier``, ``SlackNotifier``, any
``BaseNotifier`` or plain callable taking the context) and the ``summarize`` task, the one
place that judges a run, calls them:

- on failure: every run that fails (threshold, unsent work, planning failed, token refused),
  except a run an outage interrupts after a run the same outage interrupted: one alert per outage;
- on recovery: a run that succeeds after the DAG's previous recorded run did not.

Each notifier gets the task's context plus ``sfox_summary`` (a short text: the run, why it
failed, its outcome counts and top reasons, never an email, phone or token) and ``sfox_run``
(the same as a dict), so a template such as ``SlackNotifier(text="{{ sfox_summary }}")`` works.

A deadline on run duration is an Airflow Deadline Alert (:func:`deadline_alert`): when a run
is still unfinished that long after it was queued, the scheduler hands
:func:`deadline_missed` to the triggerer, which reads the run's progress from the run table
and calls the ``on_deadline`` notifiers. They run in the triggerer, not in a task built from
the DAG file, so they are given as Airflow callbacks (a notifier *class* and its arguments,
``AsyncCallback(SmtpNotifier, kwargs={...})``), never as notifier objects.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_sfox._compat import AsyncCallback, DeadlineAlert, DeadlineReference, SyncCallback
from airflow_sfox.onboarding.model import RunRef, RunStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_sfox.onboarding.warehouse import Warehouse

    Notifier = Callable[[Mapping[str, Any]], Any]

log = logging.getLogger(__name__)

#: Run statuses a later success recovers from.
UNHEALTHY = frozenset(
    {
        RunStatus.FAILED,
        RunStatus.INCOMPLETE,
        RunStatus.AUTH_FAILED,
        RunStatus.PLAN_FAILED,
        RunStatus.INTERRUPTED,
    }
)
#: Reasons and outcomes shown in an alert.
TOP = 5


def alert_text(summary: Mapping[str, Any]) -> str:
    """
    The alert's text: which run, what happened, outcome counts and top reasons.

    :param summary: the run summary of :func:`airflow_sfox.onboarding.runs.summarize_run`.
    """
    status = summary.get("status", "failed")
    lines = [f"sFOX onboarding run {summary.get('run_id')} of {summary.get('dag_id')}: {status}"]
    if summary.get("problem"):
        lines.append(f"Why: {summary['problem']}")
    outcomes = sorted((summary.get("outcomes") or {}).items(), key=lambda item: -int(item[1]))
    if outcomes:
        lines.append("Outcomes: " + ", ".join(f"{key} {value}" for key, value in outcomes[:TOP]))
    reasons = list((summary.get("rejected_reasons") or {}).items())[:TOP]
    if reasons:
        lines.append("Top rejection reasons: " + "; ".join(f"{reason} ({rows})" for reason, rows in reasons))
    return "\n".join(lines)


def notify(notifiers: Sequence[Notifier], context: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    """
    Call each notifier with the context plus ``sfox_summary`` and ``sfox_run``.

    A notifier that fails is logged and does not hide the run's own outcome.

    :param notifiers: notifier objects or callables.
    :param context: the task's Airflow context.
    :param summary: the run summary.
    """
    if not notifiers:
        return
    enriched = {**context, "sfox_summary": alert_text(summary), "sfox_run": dict(summary)}
    for notifier in notifiers:
        try:
            notifier(enriched)
        except Exception:
            log.exception("sFOX onboarding: notifier %r failed", notifier)


def previous_status(warehouse: Warehouse, *, dag_id: str, run_id: str) -> str | None:
    """
    The status of the DAG's latest recorded run before this one, dry runs left out.

    :param warehouse: where the run table is.
    :param dag_id: the DAG.
    :param run_id: this run, left out.
    """
    import sqlalchemy as sa

    t = warehouse.runs_t
    query = (
        sa.select(t.c.status)
        .where(
            t.c.dag_id == dag_id,
            t.c.run_id != run_id,
            t.c.started_at.is_not(None),
            t.c.dry_run == 0,
        )
        .order_by(t.c.started_at.desc())
        .limit(1)
    )
    with warehouse.connect() as conn:
        status = conn.execute(query).scalar()
    return None if status is None else str(status)


def is_recovery(previous: str | None, current: str) -> bool:
    """Whether a run with status ``current`` recovers from one with status ``previous``."""
    return current == RunStatus.SUCCESS and previous in UNHEALTHY


def should_notify(previous: str | None, current: str) -> bool:
    """
    Whether a run with status ``current`` alerts, after one with status ``previous``: every
    failure, except an outage that goes on (an interrupted run after an interrupted run: one
    alert per outage, not one per run); a success only when it recovers.

    :param previous: the status of the DAG's run before (``None``: none).
    :param current: this run's status.
    """
    if current == RunStatus.SUCCESS:
        return is_recovery(previous, current)
    return not (current == RunStatus.INTERRUPTED and previous == RunStatus.INTERRUPTED)


# --- the deadline on run duration ---------------------------------------------------------------

#: Run-row figures a deadline alert reports: counts only, never a user.
PROGRESS = ("planned", "steps", "steps_done", "requests", "rate_limited")


def deadline_alert(
    deadline: timedelta | None,
    on_deadline: Sequence[AsyncCallback],
    *,
    warehouse_conn_id: str,
    warehouse_schema: str | None,
) -> DeadlineAlert | None:
    """
    The Airflow Deadline Alert of the factory's ``deadline`` and ``on_deadline`` (``None``: none).

    :param deadline: how long after a run is queued it should be finished.
    :param on_deadline: ``AsyncCallback`` objects (a notifier class or an async callable, and its
        kwargs) called with ``sfox_summary`` and ``sfox_run`` in their context.
    :param warehouse_conn_id: where the run table is, for the run's progress.
    :param warehouse_schema: the schema of the run table.
    :raises TypeError: ``deadline`` is not a timedelta, or an ``on_deadline`` item is not an
        ``AsyncCallback``.
    :raises ValueError: ``deadline`` is not positive, or ``on_deadline`` is given without it.
    """
    if deadline is None:
        if on_deadline:
            raise ValueError("on_deadline needs deadline=timedelta(...): without a deadline it never fires")
        return None
    if not isinstance(deadline, timedelta):
        raise TypeError(
            "deadline must be a datetime.timedelta (how long after a run is queued it should be "
            f"finished), got {type(deadline).__name__}; for other Airflow deadline alerts, build "
            "the DAG yourself"
        )
    if deadline <= timedelta(0):
        raise ValueError(f"deadline must be positive, got {deadline!r}")
    kwargs = {
        "warehouse_conn_id": warehouse_conn_id,
        "warehouse_schema": warehouse_schema,
        "notifiers": [_notifier_spec(callback) for callback in on_deadline],
    }
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=deadline,
        callback=AsyncCallback(deadline_missed, kwargs=kwargs),
    )


def _notifier_spec(callback: object) -> dict[str, Any]:
    """The import path and kwargs of one ``on_deadline`` callback: what travels to the triggerer."""
    if isinstance(callback, AsyncCallback):
        return {"path": callback.path, "kwargs": dict(callback.kwargs or {})}
    if isinstance(callback, SyncCallback):
        why = "the deadline's notifiers run in the triggerer, which awaits them"
    else:  # e.g. the notifier objects of on_failure: the triggerer cannot rebuild those
        why = "notifier objects cannot be sent to the triggerer, where the deadline's notifiers run"
    raise TypeError(
        f"on_deadline takes AsyncCallback objects, got {type(callback).__name__}: {why}. Give the "
        "notifier's class and arguments, e.g. AsyncCallback(SmtpNotifier, kwargs={'to': ..., "
        "'html_content': '{{ sfox_summary }}'}) (a notifier with async_notify), or an async function"
    )


async def deadline_missed(
    *,
    warehouse_conn_id: str,
    warehouse_schema: str | None = None,
    notifiers: Sequence[Mapping[str, Any]] = (),
    context: Mapping[str, Any] | None = None,
) -> None:
    """
    Deadline Alert callback, run by the triggerer: say that a run is past its deadline.

    Airflow passes ``context`` (``dag_run``, as the REST API shows it, and ``deadline``). A run
    that ended before its deadline (Airflow keeps the deadline of a failed run) is left to the
    failure alert. Otherwise: one ``sfox.deadline_missed`` metric, a warning in the triggerer's
    log, and each notifier called with ``sfox_summary`` and ``sfox_run`` in its context.

    :param warehouse_conn_id: where the run table is.
    :param warehouse_schema: the schema of the run table.
    :param notifiers: ``{"path": ..., "kwargs": {...}}`` of each ``on_deadline`` callback.
    :param context: Airflow's context of the missed deadline.
    :raises RuntimeError: a notifier failed (after every notifier was called): Airflow records
        the callback as failed.
    """
    from asgiref.sync import sync_to_async

    from airflow_sfox.onboarding import metrics

    context = dict(context or {})
    run, deadline = dict(context.get("dag_run") or {}), dict(context.get("deadline") or {})
    due = _as_datetime(deadline.get("deadline_time"))
    ended = _as_datetime(run.get("end_date"))
    if ended is not None and due is not None and ended <= due:
        log.info("sFOX onboarding run %s ended before its deadline: no deadline alert", run.get("dag_run_id"))
        return
    # The connection and the query are blocking calls: off the triggerer's event loop.
    ref = RunRef(str(run.get("dag_id")), str(run.get("dag_run_id")))
    progress = await sync_to_async(_progress)(
        ref, warehouse_conn_id=warehouse_conn_id, warehouse_schema=warehouse_schema
    )
    summary = {
        "run_id": run.get("dag_run_id"),
        "dag_id": run.get("dag_id"),
        "deadline": due.isoformat(timespec="seconds") if due else None,
        **progress,
    }
    text = deadline_text(summary)
    log.warning("%s", text)
    metrics.emit_deadline_missed(dag_id=str(run.get("dag_id")))
    enriched = {**context, "sfox_summary": text, "sfox_run": summary}
    failed = 0
    for spec in notifiers:
        try:
            await _call(spec, enriched)
        except Exception:
            failed += 1
            log.exception("sFOX onboarding: deadline notifier %s failed", spec.get("path"))
    if failed:
        raise RuntimeError(f"{failed} of {len(notifiers)} deadline notifiers failed (see the triggerer log)")


def deadline_text(summary: Mapping[str, Any]) -> str:
    """
    The deadline alert's text: which run, its deadline, and its progress so far (counts only).

    :param summary: ``run_id``, ``dag_id``, ``deadline`` and the run row's :data:`PROGRESS` figures
        (or a ``note`` saying why they are unknown).
    """
    lines = [
        f"sFOX onboarding run {summary.get('run_id')} of {summary.get('dag_id')}: still running "
        f"past its deadline ({summary.get('deadline')})"
    ]
    if summary.get("steps") is None:
        lines.append(f"Progress: unknown ({summary.get('note') or 'the plan has not finished'})")
    else:
        lines.append(
            f"Progress: {summary.get('steps_done') or 0} of {summary['steps']} chunk steps done, "
            f"{summary.get('planned') or 0} users planned, {summary.get('requests') or 0} requests to "
            f"sFOX so far ({summary.get('rate_limited') or 0} answered 429)"
        )
    return "\n".join(lines)


def _progress(run: RunRef, *, warehouse_conn_id: str, warehouse_schema: str | None) -> dict[str, Any]:
    """The run row's :data:`PROGRESS` figures; ``note`` says why when they cannot be read."""
    from airflow_sfox.onboarding.warehouse import Warehouse

    try:
        row = Warehouse.from_conn_id(warehouse_conn_id, schema=warehouse_schema).run_row(run)
    except Exception:
        log.warning("could not read the progress of run %s from the warehouse", run, exc_info=True)
        return {"note": "the warehouse could not be read: see the triggerer log"}
    if row.get("steps") is None:
        return {}
    return {key: int(row.get(key) or 0) for key in PROGRESS}


async def _call(spec: Mapping[str, Any], context: Mapping[str, Any]) -> None:
    """Call one notifier as Airflow's triggerer calls a deadline callback: context if it takes one."""
    module, _, name = str(spec["path"]).rpartition(".")
    target = getattr(importlib.import_module(module), name)
    kwargs = dict(spec.get("kwargs") or {})
    if _accepts_context(target):
        kwargs["context"] = context
    result = target(**kwargs)  # a notifier class gives a notifier, awaited: its async_notify runs
    if inspect.isawaitable(result):
        await result


def _accepts_context(target: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "context" or p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters)


def _as_datetime(value: object) -> datetime | None:
    """A datetime from Airflow's context: a datetime, or ISO text (the REST API's form)."""
    if isinstance(value, datetime) or value is None:
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
