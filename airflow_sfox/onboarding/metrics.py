"""
Onboarding figures as Airflow metrics: StatsD or OpenTelemetry, as the deployment configures
Airflow's ``[metrics]`` section, next to Airflow's own figures.

Every metric is tagged ``dag_id``; tags reach DogStatsD, InfluxDB-style StatsD
(``statsd_influxdb_enabled``) and OpenTelemetry; plain StatsD gets the names only. Dry runs
emit none: they send nothing.

Once per plan (the ``plan`` task), counters of users, tagged ``channel`` (``registration``,
``email`` or ``sms``; and ``account_type`` for ``planned``), each emitted when not zero:

``sfox.plan.planned``           codes queued by this run
``sfox.plan.retry``             of those, tries again of failed or not registered users
``sfox.plan.retry_waiting``     failed or not registered users still waiting for their next try
``sfox.plan.gave_up``           users given up after ``max_tries`` tries in a row
``sfox.plan.redrive``           codes queued by the ``redrive`` param
``sfox.plan.resend``            codes sent again, unverified after ``resend_after_hours``
``sfox.plan.rejected_new``      users newly rejected: a user_id on several source rows is one
                                (not tagged ``channel``)

Once per chunk step, tagged ``channel``:

``sfox.requests``               HTTP requests made to sFOX (counter)
``sfox.rate_limited``           answers 429 (counter)
``sfox.outcome.<state>``        ledger outcomes: ``sent``, ``already_verified``, ``failed``,
                                ``not_registered``, ``rejected``, ``held``, ``waiting`` (counters)
``sfox.lost``                   claims a dead try of the step left: requests that may have
                                gone out unanswered (counter)
``sfox.uncertain``              outcomes marked uncertain: a code may have gone out twice (counter)
``sfox.budget_wait``            thread-time spent waiting for the shared rate budget (timer)
``sfox.rate_limit_pause``       thread-time spent in 429 pauses (timer)

Once per run (the ``summarize`` task) and once per missed deadline (the triggerer):

``sfox.run.<status>``           the run's status: ``success``, ``failed``, ``incomplete``,
                                ``auth_failed``, ``plan_failed``, ``interrupted`` (counter)
``sfox.run.duration``           from the run's start to its summary (timer)
``sfox.deadline_missed``        a run still unfinished at its ``deadline`` (counter)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_sfox.onboarding.counts import due_counts
from airflow_sfox.onboarding.model import LEDGER_CHANNELS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_sfox.onboarding.sender import ChunkStats

PREFIX = "sfox"
#: Plan counts ``<figure>_<channel>`` emitted as ``sfox.plan.<figure>``.
PLAN_FIGURES = ("retry", "retry_waiting", "gave_up", "redrive", "resend")


def _stats() -> Any:
    try:  # Airflow 3.2+: the Task SDK's metrics
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.1
        from airflow.stats import Stats  # type: ignore[no-redef,unused-ignore]
    return Stats


def emit_plan(counts: Mapping[str, Any], *, dag_id: str) -> None:
    """
    Emit one plan's figures (none for a dry run).

    :param counts: the plan's counts (:attr:`airflow_sfox.onboarding.planner.Plan.counts`).
    :param dag_id: the DAG, as a tag.
    """
    if counts.get("dry_run"):
        return
    metrics = _stats()
    for (kind, channel), planned in due_counts(counts).items():
        tags = {"dag_id": dag_id, "channel": str(channel), "account_type": str(kind)}
        metrics.incr(f"{PREFIX}.plan.planned", planned, tags=tags)
    for channel in LEDGER_CHANNELS:  # registration's retries too
        for figure in PLAN_FIGURES:
            if users := int(counts.get(f"{figure}_{channel}", 0)):
                tags = {"dag_id": dag_id, "channel": str(channel)}
                metrics.incr(f"{PREFIX}.plan.{figure}", users, tags=tags)
    if rejected := int(counts.get("rejected_new", 0)):
        metrics.incr(f"{PREFIX}.plan.rejected_new", rejected, tags={"dag_id": dag_id})


def emit_chunk(stats: ChunkStats, *, dag_id: str) -> None:
    """
    Emit one chunk step's figures.

    :param stats: what the step did.
    :param dag_id: the DAG, as a tag.
    """
    metrics = _stats()
    tags = {"dag_id": dag_id, "channel": stats.channel}
    metrics.incr(f"{PREFIX}.requests", stats.requests, tags=tags)
    metrics.incr(f"{PREFIX}.rate_limited", stats.rate_limited, tags=tags)
    for state, count in sorted(stats.outcomes.items()):
        metrics.incr(f"{PREFIX}.outcome.{state}", count, tags=tags)
    metrics.incr(f"{PREFIX}.lost", stats.lost, tags=tags)
    metrics.incr(f"{PREFIX}.uncertain", stats.uncertain, tags=tags)
    metrics.timing(f"{PREFIX}.budget_wait", timedelta(seconds=stats.budget_wait_seconds), tags=tags)
    metrics.timing(f"{PREFIX}.rate_limit_pause", timedelta(seconds=stats.pause_seconds), tags=tags)


def emit_run(summary: Mapping[str, Any], *, dag_id: str, started_at: datetime | None, now: datetime) -> None:
    """
    Emit one run's status and duration (none for a dry run).

    :param summary: the run summary (:func:`airflow_sfox.onboarding.runs.summarize_run`).
    :param dag_id: the DAG, as a tag.
    :param started_at: when the run started (``None``: no duration).
    :param now: the time of the summary.
    """
    if summary.get("dry_run"):
        return
    metrics = _stats()
    tags = {"dag_id": dag_id}
    metrics.incr(f"{PREFIX}.run.{summary['status']}", tags=tags)
    if started_at is not None:
        metrics.timing(f"{PREFIX}.run.duration", now - started_at, tags=tags)


def emit_deadline_missed(*, dag_id: str) -> None:
    """Count one run still unfinished at its deadline."""
    _stats().incr(f"{PREFIX}.deadline_missed", tags={"dag_id": dag_id})
