"""
Alerts of onboarding runs: Airflow notifiers called on failure and on recovery.

The DAG factory takes notifier objects (``SmtpNotifier``, ``SlackNotifier``, any
``BaseNotifier`` or plain callable taking the context) and the ``summarize`` task, the one
place that judges a run, calls them:

- on failure: every run that fails (threshold, unsent work, planning failed, token refused);
- on recovery: a run that succeeds after the DAG's previous recorded run did not.

Each notifier gets the task's context plus ``sfox_summary`` (a short text: the run, why it
failed, its outcome counts and top reasons, never an email, phone or token) and ``sfox_run``
(the same as a dict), so a template such as ``SlackNotifier(text="{{ sfox_summary }}")`` works.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_sfox.onboarding.model import RunStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_sfox.onboarding.warehouse import Warehouse

    Notifier = Callable[[Mapping[str, Any]], Any]

log = logging.getLogger(__name__)

#: Run statuses a later success recovers from.
UNHEALTHY = frozenset({RunStatus.FAILED, RunStatus.INCOMPLETE, RunStatus.AUTH_FAILED, RunStatus.PLAN_FAILED})
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
    The status of the DAG's latest recorded run before this one (dry runs record none).

    :param warehouse: where the run table is.
    :param dag_id: the DAG.
    :param run_id: this run, left out.
    """
    import sqlalchemy as sa

    t = warehouse.runs_t
    query = (
        sa.select(t.c.status)
        .where(t.c.dag_id == dag_id, t.c.run_id != run_id, t.c.started_at.is_not(None))
        .order_by(t.c.started_at.desc())
        .limit(1)
    )
    with warehouse.connect() as conn:
        status = conn.execute(query).scalar()
    return None if status is None else str(status)


def is_recovery(previous: str | None, current: str) -> bool:
    """Whether a run with status ``current`` recovers from one with status ``previous``."""
    return current == RunStatus.SUCCESS and previous in UNHEALTHY
