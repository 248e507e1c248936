"""
The params of the onboarding DAG: its trigger form in the UI and ``dags trigger -c``.

Only operational knobs are params. Where the users come from (table, query, columns, schema,
connections) is set where the DAG is defined: anyone who may trigger a run could otherwise run
SQL of their choice with the warehouse connection's rights.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from airflow_sfox.onboarding.config import OnboardingConfig
from airflow_sfox.onboarding.model import (
    CHANNELS,
    CHANNELS_BY_ACCOUNT_TYPE,
    REDRIVE_CHOICES,
    STATE_LABELS,
    prerequisite,
)

_DEFAULTS = OnboardingConfig()
#: Sections of the trigger form, in order.
WHO = "Who"
WHAT = "What to send"
SAFETY = "Safety"


def _channel_label(channel: str) -> str:
    """``sms: individual, after email``: who verifies a channel, and after which one."""
    kinds = [kind for kind, channels in CHANNELS_BY_ACCOUNT_TYPE.items() if channel in channels]
    after = sorted({str(p) for kind in kinds if (p := prerequisite(kind, channel)) is not None})
    return f"{channel}: {', '.join(map(str, kinds))}" + (f", after {' and '.join(after)}" if after else "")


def choices(values: tuple[str, ...], labels: dict[str, str]) -> dict[str, Any]:
    """
    The schema of a list param picked from ``values``: the trigger form shows a multi-select of
    ``examples`` labelled by ``values_display``; ``items.enum`` refuses any other value.
    """
    return {
        "items": {"type": "string", "enum": list(values)},
        "uniqueItems": True,
        "examples": list(values),
        "values_display": {value: labels[value] for value in values},
    }


#: Each param's schema and form text, in form order; its default comes from
#: :class:`~airflow_sfox.onboarding.config.OnboardingConfig` or the factory's overrides.
_SPECS: dict[str, dict[str, Any]] = {
    "dry_run": dict(
        type="boolean",
        title="Dry run",
        description="Plan and report who would get which code; write nothing, send nothing. "
        "Note: the form's 'Unpause on trigger' box (ticked by default) unpauses the DAG, and an "
        "unpaused DAG runs for real on its schedule (hourly by default).",
        section=SAFETY,
    ),
    "user_ids": dict(
        type=["null", "array"],
        items={"type": "string"},
        title="Only these user ids",
        description="Onboard only these user_ids of the source (empty: everyone due).",
        section=WHO,
    ),
    "max_users": dict(
        type=["null", "integer"],
        minimum=0,
        title="At most this many users",
        description="Stop planning once this many users have a code due (empty: no limit).",
        section=WHO,
    ),
    "channels": dict(
        type="array",
        minItems=1,
        **choices(tuple(map(str, CHANNELS)), {str(c): _channel_label(c) for c in CHANNELS}),
        title="Verifications to send",
        description="Pick one or more: each is sent to the account types shown, in that order.",
        section=WHAT,
    ),
    "resend_after_hours": dict(
        type="number",
        minimum=0,
        title="Resend after (hours)",
        description="Send a new code when the last one is still unverified after this many hours.",
        section=WHAT,
    ),
    "max_sends": dict(
        type="integer",
        minimum=1,
        title="Most codes per user and channel",
        description="Never send a user more codes than this for one channel, resends included.",
        section=WHAT,
    ),
    "max_tries": dict(
        type="integer",
        minimum=1,
        title="Tries before giving up",
        description=(
            "A user whose request failed or who sFOX did not know (404) is tried again by later "
            "runs; after this many such tries in a row the channel is gave_up until a re-drive."
        ),
        section=WHAT,
    ),
    "retry_wait_hours": dict(
        type="array",
        items={"type": "number", "minimum": 0},
        minItems=1,
        title="Wait before each retry (hours)",
        description="After the 1st, 2nd, ... failure in a row; the last wait applies to later ones.",
        section=WHAT,
    ),
    "redrive": dict(
        type=["null", "array"],
        **choices(REDRIVE_CHOICES, STATE_LABELS),
        title="Re-drive",
        description=(
            "Pick the states whose users are queued again now, whatever their wait or tries "
            "(uncertain: a request whose answer was lost). With 'Only these user ids': only "
            "those. A dry run shows what it would queue."
        ),
        section=WHO,
    ),
    "erase_user_ids": dict(
        type="array",
        items={"type": "string"},
        title="Erase these users",
        description=(
            "A deletion request or a deactivated user: erase their ledger rows, request history "
            "and registration hash, and plan nothing else in this run (a dry run erases nothing). "
            "Remove them from the source first, or a later run onboards them again."
        ),
        section=WHO,
    ),
    "hold_uncertain": dict(
        type="boolean",
        title="Hold requests lost in a crash",
        description=(
            "A user whose request was in flight when its task died may have been sent a code: "
            "off, it is sent again (at least once); on, it is held for review until a re-drive "
            "of uncertain. Either way it is counted as uncertain."
        ),
        section=WHAT,
    ),
    "snapshot_max_age_minutes": dict(
        type="number",
        minimum=0,
        title="Reuse sFOX's user list (minutes)",
        description=(
            "Reuse the warehouse's snapshot of sFOX's user list while it is younger than this, "
            "instead of reading the whole list again (sFOX asks partners to keep such reads rare); "
            "0: read it every run."
        ),
        section=SAFETY,
    ),
    "attempts_retention_days": dict(
        type="integer",
        minimum=1,
        title="Keep request history (days)",
        description="Each plan deletes the per-request history (the attempts table) older than this.",
        section=SAFETY,
    ),
    "chunk_size": dict(
        type="integer",
        minimum=1,
        title="Users per chunk task",
        description="Users sent by one chunk task; a run maps one task per chunk.",
        section=SAFETY,
    ),
    "failure_threshold": dict(
        type="number",
        minimum=0,
        maximum=1,
        title="Failure threshold",
        description=(
            "Fail the run when this share of its own work went wrong: (failed + not registered + "
            "newly rejected users) / (requests planned + newly rejected users). Users rejected by "
            "an earlier run are reported, not counted again; a run that attempts nothing passes; "
            "malformed ids in events are reported, never counted."
        ),
        section=SAFETY,
    ),
}


def onboarding_params(**overrides: Any) -> dict[str, Param]:
    """
    The DAG params, each with a title, a description and a section of the trigger form.

    Defaults are :class:`~airflow_sfox.onboarding.config.OnboardingConfig`'s.

    :param overrides: other defaults, e.g. ``chunk_size=200``.
    """
    unknown = set(overrides) - set(OnboardingConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown onboarding params {sorted(unknown)}")
    d = {**{f: getattr(_DEFAULTS, f) for f in OnboardingConfig.__dataclass_fields__}, **overrides}
    OnboardingConfig(**d)  # the same checks as a run's, at parse time, with no I/O
    return {name: Param(d[name], **spec) for name, spec in _SPECS.items()}


#: The params of the email-verified follow-up DAG: the others choose whom a plan queues.
EVENT_PARAMS = ("dry_run", "user_ids", "hold_uncertain", "chunk_size", "failure_threshold")


def event_params(**overrides: Any) -> dict[str, Param]:
    """
    The params of the follow-up DAG (:func:`~airflow_sfox.onboarding.dag.email_verified_dag`).

    ``user_ids`` there names users to send the sms to as if an event had named them (a run
    triggered by hand, or ``dag.test()``).

    :param overrides: other defaults, e.g. ``chunk_size=100``.
    """
    unknown = set(overrides) - set(EVENT_PARAMS)
    if unknown:
        raise ValueError(f"params of the email-verified DAG are {list(EVENT_PARAMS)}, got {sorted(unknown)}")
    every = onboarding_params(**overrides)
    params = {name: every[name] for name in EVENT_PARAMS}
    params[
        "user_ids"
    ].description = "Send the sms to these user_ids now, as if an email-verified event named them."
    return params
