"""
Onboarding figures as Airflow metrics: StatsD or OpenTelemetry, as the deployment configures
Airflow's ``[metrics]`` section, next to Airflow's own figures.

Emitted once per chunk step, tagged ``dag_id`` and ``channel`` (tags reach DogStatsD and
OpenTelemetry; plain StatsD gets the names only):

``sfox.requests``               HTTP requests made to sFOX (counter)
``sfox.rate_limited``           answers 429 (counter)
``sfox.outcome.<state>``        ledger outcomes: ``sent``, ``already_verified``, ``failed``,
                                ``not_registered``, ``rejected`` (counters)
``sfox.budget_wait``            thread-time spent waiting for the shared rate budget (timer)
``sfox.rate_limit_pause``       thread-time spent in 429 pauses (timer)
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_sfox.onboarding.sender import ChunkStats

PREFIX = "sfox"


def _stats() -> Any:
    try:  # Airflow 3.2+: the Task SDK's metrics
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.1
        from airflow.stats import Stats  # type: ignore[no-redef,unused-ignore]
    return Stats


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
    metrics.timing(f"{PREFIX}.budget_wait", timedelta(seconds=stats.budget_wait_seconds), tags=tags)
    metrics.timing(f"{PREFIX}.rate_limit_pause", timedelta(seconds=stats.pause_seconds), tags=tags)
