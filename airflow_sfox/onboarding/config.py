"""
What a run of onboarding reads and how: the source (set where the DAG is defined) and the run's
configuration (from its params; a run's conf may never name SQL or tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.onboarding.model import CHANNELS, REDRIVE_CHOICES
from airflow_sfox.onboarding.registration import Registration
from airflow_sfox.onboarding.schema import check_identifier

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The source's logical columns (``OnboardingSource.columns`` maps them to the source's names).
SOURCE_COLUMNS = ("user_id", "account_type", "email", "phone_number")


@dataclass(frozen=True)
class OnboardingSource:
    """
    Where the users come from: set where the DAG is defined, never by a run's conf.

    :param table: table (or ``schema.table``) holding the users.
    :param query: a SELECT to read instead of ``table`` (the DAG author's SQL, run as is).
    :param columns: source column for each of ``user_id``, ``account_type``, ``email``,
        ``phone_number`` when they are named differently, e.g. ``{"user_id": "customer_id"}``.
    :param registration: register the users sFOX does not know yet, from these columns, before
        their email step (``None``: only users someone else registered get codes).
    """

    table: str = "sfox_users"
    query: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    registration: Registration | None = None

    def __post_init__(self) -> None:
        check_identifier(self.table, "source table")
        if self.query is not None and not self.query.strip():
            raise ValueError("source query is empty: give a SELECT, or None to read the table")
        for logical, column in self.columns.items():
            if logical not in SOURCE_COLUMNS:
                raise ValueError(f"source columns: unknown key {logical!r}; expected one of {SOURCE_COLUMNS}")
            check_identifier(column, f"source columns[{logical!r}]")
        if self.registration is not None and not isinstance(self.registration, Registration):
            raise ValueError(
                f"source registration must be a Registration, got {type(self.registration).__name__}"
            )

    def column(self, logical: str) -> str:
        """The source column of a logical column."""
        return self.columns.get(logical, logical)

    def sql(self) -> str:
        """The FROM item of the source."""
        return f"({self.query})" if self.query else self.table

    def check_registration_columns(self, found: set[str]) -> None:
        """
        Refuse a source without a column of its registration fields.

        :param found: the source's column names, lower case.
        :raises ValueError: naming each missing column, its field, and how to map it.
        """
        mapped = self.registration.columns() if self.registration is not None else {}
        absent = {path: column for path, column in mapped.items() if column.lower() not in found}
        if absent:
            shown = ", ".join(f"{column!r} (field {path})" for path, column in absent.items())
            raise ValueError(
                f"the source {self.sql()[:80]} has no column {shown} for registration; it has "
                f"{sorted(found)}. Map them with Registration(fields={{...}}), or drop a field the "
                "source does not have with None."
            )

    def registration_columns(self) -> dict[str, str]:
        """The query alias (``r_<n>``) and source column of each registration field (none: not opted in)."""
        if self.registration is None:
            return {}
        return {f"r_{n}": column for n, column in enumerate(self.registration.columns().values())}

    def subquery(self) -> sa.Subquery:
        """
        The source as a subquery of its logical columns (:data:`SOURCE_COLUMNS`), then its
        registration fields' columns under their aliases (:meth:`registration_columns`).
        """
        fields = self.registration_columns()
        cols = ", ".join(
            [f"src.{self.column(c)} AS {c}" for c in SOURCE_COLUMNS]
            + [f"src.{column} AS {alias}" for alias, column in fields.items()]
        )
        query = sa.text(f"SELECT {cols} FROM {self.sql()} src")  # noqa: S608 - checked identifiers
        return query.columns(*(sa.column(c) for c in (*SOURCE_COLUMNS, *fields))).subquery("s")


#: Run conf keys that name SQL or tables: refused, since whoever may trigger the DAG could
#: then run SQL of their choice with the warehouse connection's rights.
SOURCE_CONF_KEYS = ("source_table", "source_query", "columns", "source", "schema", "registration")


@dataclass
class OnboardingConfig:
    """
    The operational settings of one onboarding run (the DAG's params).

    :param channels: which verifications to send.
    :param user_ids: only these users (``None``: everyone).
    :param max_users: at most this many users get a request in this run.
    :param chunk_size: users per chunk.
    :param max_chunks: most chunk descriptors (mapped task instances) per run; larger plans
        give each descriptor several chunks.
    :param resend_after_hours: resend a code still unverified after this long.
    :param max_sends: never send more codes than this per user and channel.
    :param max_tries: tries in a row ending failed or not registered before a channel is
        ``gave_up``.
    :param retry_wait_hours: the wait after the 1st, 2nd, ... failure in a row before the next
        try (the last applies to later ones).
    :param redrive: queue these at once, whatever their wait or tries: ``failed``, ``gave_up``,
        ``not_registered``, ``uncertain`` (with ``user_ids``: only those users).
    :param hold_uncertain: a user whose request was in flight when its task died is ``held``
        for review (until a re-drive of ``uncertain``) instead of sent again.
    :param attempts_retention_days: attempts older than this are pruned by each plan.
    :param failure_threshold: the run fails when failed plus rejected exceed this share.
    :param dry_run: plan and report, write and send nothing.
    :param erase_user_ids: erase every record of these users (their ledger rows, with the keyed
        hash of their registration fields, and their attempts), for a deletion request or a
        deactivated user, and plan nothing else. Remove them from the source first, or a later
        run plans them again.
    :param snapshot_max_age_minutes: reuse the warehouse's shared snapshot of sFOX's user list
        while it is younger than this, instead of reading the list again (0: read it every plan;
        see :mod:`airflow_sfox.onboarding.snapshots`).
    """

    channels: list[str] = field(default_factory=lambda: [str(c) for c in CHANNELS])
    user_ids: list[str] | None = None
    max_users: int | None = None
    chunk_size: int = 500
    max_chunks: int = 256
    resend_after_hours: float = 48.0
    max_sends: int = 3
    max_tries: int = 4
    retry_wait_hours: list[float] = field(default_factory=lambda: [1.0, 4.0, 24.0])
    redrive: list[str] = field(default_factory=list)
    hold_uncertain: bool = False
    attempts_retention_days: int = 90
    failure_threshold: float = 0.05
    dry_run: bool = False
    erase_user_ids: list[str] = field(default_factory=list)
    snapshot_max_age_minutes: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.channels) - set(CHANNELS)
        if unknown or not self.channels:
            raise ValueError(
                f"channels must be a non-empty subset of {[str(c) for c in CHANNELS]}, got {self.channels!r}"
            )
        for name in ("chunk_size", "max_chunks", "max_sends", "max_tries", "attempts_retention_days"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_users is not None and self.max_users < 0:
            raise ValueError(f"max_users must be >= 0, got {self.max_users!r}")
        if not self.retry_wait_hours or any(float(h) < 0 for h in self.retry_wait_hours):
            raise ValueError(
                f"retry_wait_hours must be a non-empty list of hours >= 0, got {self.retry_wait_hours!r}"
            )
        unknown_redrive = set(self.redrive) - set(REDRIVE_CHOICES)
        if unknown_redrive:
            raise ValueError(
                f"redrive must be a subset of {list(REDRIVE_CHOICES)}, got {sorted(unknown_redrive)}"
            )
        if self.snapshot_max_age_minutes < 0:
            raise ValueError(f"snapshot_max_age_minutes must be >= 0, got {self.snapshot_max_age_minutes!r}")
        if self.resend_after_hours < 0:
            raise ValueError(f"resend_after_hours must be >= 0, got {self.resend_after_hours!r}")
        if not 0 <= self.failure_threshold <= 1:
            raise ValueError(f"failure_threshold must be between 0 and 1, got {self.failure_threshold!r}")
        if self.user_ids is not None:
            self.user_ids = [str(u) for u in self.user_ids]
        self.erase_user_ids = [str(u) for u in self.erase_user_ids or ()]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OnboardingConfig:
        """Build from DAG params, ignoring params that are not settings of the run."""
        names = set(cls.__dataclass_fields__)
        values = {key: value for key, value in params.items() if key in names}
        for key in ("user_ids", "max_users"):
            if values.get(key) in ("", [], None):
                values[key] = None
        if values.get("redrive") is None:
            values.pop("redrive", None)
        return cls(**values)

    @classmethod
    def check_conf(cls, conf: Mapping[str, Any] | None) -> None:
        """
        Refuse a run conf that names the source or a key that is no setting of the run.

        A typo such as ``dryrun`` would otherwise be ignored, and the run would send codes.

        :param conf: the DAG run's conf (``dag_run.conf``).
        """
        for key in conf or {}:
            if key in SOURCE_CONF_KEYS:
                raise ValueError(
                    f"run conf key {key!r} is refused: the source (table, query, columns) is set "
                    "where the DAG is defined (onboarding_dag(source=...)), not by a run"
                )
            if key not in cls.__dataclass_fields__:
                raise ValueError(
                    f"run conf key {key!r} is not a param of this DAG; "
                    f"expected some of {sorted(cls.__dataclass_fields__)}"
                )
