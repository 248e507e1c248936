"""The params of the onboarding DAG: its trigger form in the UI and ``dags trigger -c``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from airflow_sfox.onboarding.planner import CHANNELS, OnboardingConfig

_DEFAULTS = OnboardingConfig()


def onboarding_params(**overrides: Any) -> dict[str, Param]:
    """
    The DAG params, with a UI form field each; defaults are :class:`OnboardingConfig`'s.

    :param overrides: other defaults, e.g. ``source_table="customers"``.
    """
    d = {**{f: getattr(_DEFAULTS, f) for f in OnboardingConfig.__dataclass_fields__}, **overrides}
    return {
        "dry_run": Param(
            d["dry_run"], type="boolean", description="Plan and report; write and send nothing."
        ),
        "user_ids": Param(
            d["user_ids"],
            type=["null", "array"],
            items={"type": "string"},
            description="Only these user_ids (empty: everyone in the source).",
        ),
        "max_users": Param(
            d["max_users"],
            type=["null", "integer"],
            minimum=0,
            description="At most this many users get a code.",
        ),
        "channels": Param(
            d["channels"],
            type="array",
            items={"type": "string", "enum": list(CHANNELS)},
            description="Which verifications to send.",
        ),
        "chunk_size": Param(d["chunk_size"], type="integer", minimum=1, description="Users per chunk task."),
        "resend_after_hours": Param(
            d["resend_after_hours"],
            type="number",
            minimum=0,
            description="Resend a code that is still unverified after this many hours.",
        ),
        "max_sends": Param(
            d["max_sends"],
            type="integer",
            minimum=1,
            description="Never send more codes per user and channel.",
        ),
        "failure_threshold": Param(
            d["failure_threshold"],
            type="number",
            minimum=0,
            maximum=1,
            description="Fail the run when failed plus rejected rows exceed this share of the source.",
        ),
        "source_table": Param(
            d["source_table"], type="string", description="Table (or schema.table) of users."
        ),
        "source_query": Param(
            d["source_query"],
            type=["null", "string"],
            description="A SELECT to read instead of source_table.",
        ),
        "columns": Param(
            d["columns"],
            type="object",
            description='Source column names when they differ, e.g. {"user_id": "customer_id"}.',
        ),
    }
