"""
The onboarding tables: their names, column types, indexes and schema version, in one place.

Tables (created by :meth:`~airflow_sfox.onboarding.warehouse.Warehouse.create_tables` when
missing, with their indexes, optionally in a schema of their own):

* ledger: one row per (``user_id``, ``channel``) with the state of that verification, one of
  :class:`~airflow_sfox.onboarding.model.LedgerState`;
* attempts, ``<ledger>_attempts``: append-only, one row per HTTP request the engine made to
  sFOX (its time, status, outcome, whether it may have sent a code unseen; no email or phone),
  pruned after the ``attempts_retention_days`` param; the ledger's counters add up from it;
* events, ``<ledger>_events``: the asset events a run of events judged;
* version, ``<ledger>_version``: one row, the :data:`SCHEMA_VERSION` of the tables beside it;
* runs: one row per run, keyed by (``dag_id``, ``run_id``); beside it, ``<runs>_steps``: one
  row per chunk step that finished (a step retried or cleared after it finished is counted once);
* snapshot: sFOX's users as one plan read them (account type, status, which channels are still
  required; never an email or a phone), keyed by a snapshot id and removed when the plan ends,
  or kept as the warehouse's shared one, recorded in ``<snapshot>_taken``
  (:mod:`~airflow_sfox.onboarding.snapshots`).

Every record of a run names it by (``dag_id``, ``run_id``) (a
:class:`~airflow_sfox.onboarding.model.RunRef`): Airflow's run ids are unique within a DAG only,
and two DAGs on one warehouse share its ledger.

``user_id`` is compared as exact text everywhere: the integer 777 and the text ``'777'`` are one
user; ``'ABC'`` and ``'abc'``, ``'abc'`` and ``'abc '`` are different users on every database
(MariaDB/MySQL columns and comparisons use a binary NO PAD collation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.sql.elements import quoted_name
from sqlalchemy.types import TypeDecorator

from airflow_sfox.defaults import LEDGER_TABLE
from airflow_sfox.onboarding.dialects import exact_collation, is_mysql
from airflow_sfox.onboarding.model import CHANNELS, LEDGER_CHANNELS, RunRef

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

#: The layout of the onboarding tables, recorded in ``<ledger>_version``. A release that changes
#: a table raises it and ships the upgrade step from the version before.
SCHEMA_VERSION = 1
#: A table or column name given as a parameter: plain or schema-qualified identifiers only.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
#: Longest user_id the ledger stores; longer ones are rejected by validation anyway.
USER_ID_COLUMN_LENGTH = 255
#: Longest dag_id or run_id (Airflow's own limit for both).
RUN_KEY_LENGTH = 250
#: Longest reason stored in a run row (why it failed).
REASON_LENGTH = 500
#: Longest identifier PostgreSQL keeps (MariaDB/MySQL: 64).
MAX_IDENTIFIER_LENGTH = 63
#: The width of a ``channel`` column: the longest channel of the ledger.
CHANNEL_LENGTH = max(len(channel.value) for channel in LEDGER_CHANNELS)
#: A keyed hash (HMAC-SHA256, hex) of the registration fields last sent (see registration.py).
FIELDS_HMAC_LENGTH = 64


def check_identifier(name: str, what: str) -> str:
    """
    Refuse anything but a (schema-qualified) SQL identifier, since it is put into SQL text.

    :param name: the table or column name.
    :param what: what it names, for the error message.
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{what} must be a SQL identifier like my_table or schema.my_table, got {name!r}")
    return name


def ledger_indexes(ledger_table: str = LEDGER_TABLE) -> list[str]:
    """
    The indexes the UI page needs on the ledger, as ``CREATE INDEX IF NOT EXISTS`` statements.

    :meth:`Warehouse.create_tables` creates the same indexes (same names and columns) on every
    supported database; this text is for a DBA who creates them by hand.

    * ``(account_type, channel, state, user_id)``: the funnel is read from this covering index
      alone (the user_id serves the "sms row without an email row" count).
    * ``(state, updated_at, last_error)``: the reasons and the recent failures read only the
      failed, rejected, not_registered and gave_up rows, newest first.
    """
    table = check_identifier(ledger_table, "ledger_table")
    prefix = _index_prefix(table)
    return [
        f"CREATE INDEX IF NOT EXISTS {prefix}_funnel ON {table} ({', '.join(_FUNNEL_INDEX)})",
        f"CREATE INDEX IF NOT EXISTS {prefix}_state ON {table} ({', '.join(_STATE_INDEX)})",
    ]


_FUNNEL_INDEX = ("account_type", "channel", "state", "user_id")
_STATE_INDEX = ("state", "updated_at", "last_error")
#: The sender's reads: the queued users of one run's chunks. ``run_id`` first, as in the run
#: table's key: the page's run view, given a run id alone, finds its DAGs through it too.
_RUN_INDEX = ("run_id", "dag_id", "account_type", "chunk", "channel", "state")
#: The attempts table's reads: one user's timeline, one run's outcomes, and the retention prune.
_ATTEMPT_INDEXES = {
    "user": ("user_id", "channel", "attempted_at"),
    "run": ("run_id", "dag_id", "outcome"),
    "time": ("attempted_at",),
}


def _index_prefix(table: str) -> str:
    return f"ix_{table.replace('.', '_')}"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def parse_ts(value: Any) -> datetime | None:
    """A stored timestamp back as an aware datetime (naive values are UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class Timestamp(TypeDecorator[datetime]):
    """
    An aware UTC timestamp: ``TIMESTAMP WITH TIME ZONE`` (PostgreSQL), ``DATETIME(6)`` holding UTC
    (MariaDB/MySQL), ISO 8601 text (SQLite, which has no timestamp type).
    Reads back as an aware datetime on every database.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(40))
        if is_mysql(dialect):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        parsed = parse_ts(value)
        if parsed is None:
            return None
        parsed = parsed.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return parsed.isoformat(timespec="microseconds")
        if is_mysql(dialect):
            return parsed.replace(tzinfo=None)
        return parsed

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return parse_ts(value)


class UserId(TypeDecorator[str]):
    """A user_id column: ``VARCHAR(255)``, compared as exact text (binary NO PAD on MariaDB/MySQL)."""

    impl = sa.String(USER_ID_COLUMN_LENGTH)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if is_mysql(dialect):
            return dialect.type_descriptor(
                mysql.VARCHAR(USER_ID_COLUMN_LENGTH, charset="utf8mb4", collation=exact_collation(dialect))
            )
        return dialect.type_descriptor(sa.String(USER_ID_COLUMN_LENGTH))


class SchemaVersionError(RuntimeError):
    """The onboarding tables record a schema version other than this release's."""


def check_schema_version(table: str, found: int) -> None:
    """
    Refuse tables whose recorded schema version is not :data:`SCHEMA_VERSION`.

    :param table: the qualified name of the version table, for the error message.
    :param found: the version it records.
    :raises SchemaVersionError: the versions differ; nothing is changed.
    """
    if found == SCHEMA_VERSION:
        return
    if found > SCHEMA_VERSION:
        todo = f"upgrade airflow-provider-sfox to the release that made them (schema version {found})"
    else:
        todo = f"upgrade them from version {found} to {SCHEMA_VERSION} with the steps in the changelog"
    raise SchemaVersionError(
        f"the onboarding tables record schema version {found} in {table}, but this release of "
        f"airflow-provider-sfox uses schema version {SCHEMA_VERSION}: {todo}, or point the DAG at "
        "tables of their own (ledger_table, runs_table). Nothing was changed."
    )


def split_name(name: str, schema: str | None, what: str) -> tuple[str | None, str]:
    """``schema.table`` or ``table`` (+ the ``schema`` setting) -> (schema, table)."""
    check_identifier(name, what)
    table_schema, _, table = name.rpartition(".")
    if table_schema and schema and table_schema != schema:
        raise ValueError(
            f"{what} {name!r} names schema {table_schema!r}, but the warehouse schema is {schema!r}"
        )
    return (table_schema or schema or None), table


def check_index_names(metadata: sa.MetaData, ledger_table: str) -> None:
    """Refuse a ledger name whose index names would be cut off or refused by the database."""
    longest = max((str(ix.name) for t in metadata.tables.values() for ix in t.indexes), key=len)
    if len(longest) > MAX_IDENTIFIER_LENGTH:
        raise ValueError(
            f"ledger_table {ledger_table!r} is too long: its index {longest!r} would pass the "
            f"{MAX_IDENTIFIER_LENGTH} characters databases allow; use a name "
            f"{len(longest) - MAX_IDENTIFIER_LENGTH} characters shorter"
        )


def sql_name(name: str) -> quoted_name:
    """An identifier rendered as written (unquoted: the database folds its case as it always did)."""
    return quoted_name(name, False)


def define_tables(
    metadata: sa.MetaData,
    *,
    ledger: tuple[str | None, str],
    runs: tuple[str | None, str],
    snapshot: tuple[str | None, str],
) -> tuple[sa.Table, sa.Table, sa.Table, sa.Table, sa.Table]:
    """
    The ledger, attempts, run, run-step and snapshot tables with their indexes, in ``metadata``.

    :param ledger: the ledger's (schema, name); the attempts table is named after it.
    :param runs: the run table's (schema, name); the run-step table is named after it.
    :param snapshot: the snapshot's (schema, name).
    """
    return (
        ledger_table(metadata, *ledger),
        attempts_table(metadata, *ledger),
        runs_table(metadata, *runs),
        steps_table(metadata, *runs),
        snapshot_table(metadata, *snapshot),
    )


def run_columns(*, primary_key: bool = False) -> tuple[sa.Column[str], sa.Column[str]]:
    """
    The ``run_id`` and ``dag_id`` columns that name a run (a
    :class:`~airflow_sfox.onboarding.model.RunRef`) in a table.

    :param primary_key: they are (the start of) the table's primary key: ``run_id`` first, so
        that a run asked for by its id alone (the page's run view) is found through the key too.
    """
    return (
        sa.Column("run_id", sa.String(RUN_KEY_LENGTH), primary_key=primary_key),
        sa.Column("dag_id", sa.String(RUN_KEY_LENGTH), primary_key=primary_key),
    )


def of_run(table: sa.Table, run: RunRef) -> sa.ColumnElement[bool]:
    """The rows of ``table`` that name ``run`` (its :func:`run_columns`)."""
    return sa.and_(table.c.dag_id == run.dag_id, table.c.run_id == run.run_id)


def ledger_table(metadata: sa.MetaData, schema: str | None, name: str) -> sa.Table:
    """The ledger: one row per (user_id, channel), with the indexes the sender and the page read."""
    prefix = _index_prefix(name if schema is None else f"{schema}.{name}")
    return sa.Table(
        sql_name(name),
        metadata,
        sa.Column("user_id", UserId(), primary_key=True),
        sa.Column("channel", sa.String(CHANNEL_LENGTH), primary_key=True),
        sa.Column("account_type", sa.String(16)),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("sends", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("uncertain", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.String(255)),
        sa.Column("first_request_at", Timestamp()),
        sa.Column("last_request_at", Timestamp()),
        sa.Column("last_sent_at", Timestamp()),
        # The run that planned the row (and its chunk in that run).
        *run_columns(),
        sa.Column("chunk", sa.Integer),
        sa.Column("updated_at", Timestamp(), nullable=False),
        # Tries in a row that ended failed or not registered: the wait before the next, when to give up.
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        # The run whose chunk step is sending this row's request, and since when (see Warehouse.claim).
        sa.Column("claimed_by", sa.String(RUN_KEY_LENGTH)),
        sa.Column("claimed_by_dag", sa.String(RUN_KEY_LENGTH)),
        sa.Column("claimed_at", Timestamp()),
        # Registration rows only: the keyed hash of the fields last sent (never the fields).
        sa.Column("fields_hmac", sa.String(FIELDS_HMAC_LENGTH)),
        sa.Index(f"{prefix}_run", *_RUN_INDEX),
        sa.Index(f"{prefix}_funnel", *_FUNNEL_INDEX),
        sa.Index(f"{prefix}_state", *_STATE_INDEX),
        schema=schema,
        mysql_charset="utf8mb4",
    )


def runs_table(metadata: sa.MetaData, schema: str | None, name: str) -> sa.Table:
    """The run table: one row per run, its figures and its status."""
    return sa.Table(
        sql_name(name),
        metadata,
        *run_columns(primary_key=True),
        sa.Column("dry_run", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", Timestamp()),
        sa.Column("finished_at", Timestamp()),
        *(
            sa.Column(figure, sa.Integer)
            for figure in (
                "source_rows",
                "planned",
                "rejected",
                "sent",
                "already_verified",
                "not_registered",
                "failed",
                "uncertain",
                "steps",
                "steps_done",
                "requests",
                "rate_limited",
            )
        ),
        sa.Column("send_seconds", sa.Double()),
        sa.Column("requests_per_second", sa.Double()),
        sa.Column("status", sa.String(16)),
        sa.Column("reason", sa.String(REASON_LENGTH)),
        sa.Column("budget_wait_seconds", sa.Float()),
        sa.Column("pause_seconds", sa.Float()),
        # Source rows beyond the first of a user_id (the rejected users count each id once).
        sa.Column("duplicate_rows", sa.Integer),
        # Ids in a run's events that are no user id: reported, never counted against the run.
        sa.Column("malformed_ids", sa.Integer),
        # Users sFOX registered for the run (their email code went out with it).
        sa.Column("registered", sa.Integer),
        schema=schema,
        mysql_charset="utf8mb4",
    )


def steps_table(metadata: sa.MetaData, schema: str | None, runs_name: str) -> sa.Table:
    """``<runs>_steps``: one row per chunk step that finished."""
    return sa.Table(
        sql_name(f"{runs_name}_steps"),
        metadata,
        *run_columns(primary_key=True),
        sa.Column("step", sa.String(250), primary_key=True),
        sa.Column("finished_at", Timestamp(), nullable=False),
        schema=schema,
        mysql_charset="utf8mb4",
    )


def attempts_table(metadata: sa.MetaData, schema: str | None, ledger_name: str) -> sa.Table:
    """
    ``<ledger>_attempts``: one row per HTTP request of the engine, never updated.

    ``attempt`` numbers the requests of one call (1, then the hook's retries); ``outcome`` is an
    :class:`~airflow_sfox.onboarding.model.AttemptOutcome`; ``uncertain`` = the request may have
    reached sFOX without its answer reaching us.
    """
    name = f"{ledger_name}_attempts"
    prefix = _index_prefix(ledger_name if schema is None else f"{schema}.{ledger_name}") + "_at"
    return sa.Table(
        sql_name(name),
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("user_id", UserId(), nullable=False),
        sa.Column("channel", sa.String(CHANNEL_LENGTH), nullable=False),
        *run_columns(),
        sa.Column("attempted_at", Timestamp(), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("uncertain", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.String(255)),
        *(sa.Index(f"{prefix}_{key}", *columns) for key, columns in _ATTEMPT_INDEXES.items()),
        schema=schema,
        mysql_charset="utf8mb4",
    )


def events_table(metadata: sa.MetaData, schema: str | None, ledger_name: str) -> sa.Table:
    """
    ``<ledger>_events``: the asset events a run of events judged, one row per event key
    (:func:`~airflow_sfox.onboarding.events.event_key`), so that a later run handed the same
    event skips it; pruned after the ``attempts_retention_days`` param.
    """
    return sa.Table(
        sql_name(f"{ledger_name}_events"),
        metadata,
        sa.Column("event_key", sa.String(64), primary_key=True),
        *run_columns(),
        sa.Column("seen_at", Timestamp(), nullable=False),
        schema=schema,
        mysql_charset="utf8mb4",
    )


def snapshot_table(
    metadata: sa.MetaData, schema: str | None, name: str, *, temporary: bool = False
) -> sa.Table:
    """
    The snapshot of sFOX's users: one row per (snapshot_id, user_id); no email, no phone.

    ``<channel>_required`` is sFOX's ``requirements.<channel>``: ``False`` = verified,
    ``True`` = still required, NULL = not reported.

    :param temporary: a temporary table of the connection (a dry run writes no table).
    """
    return sa.Table(
        sql_name(name),
        metadata,
        sa.Column("snapshot_id", sa.String(32), primary_key=True),
        sa.Column("user_id", UserId(), primary_key=True),
        *run_columns(),
        sa.Column("account_type", sa.String(16)),
        sa.Column("status", sa.String(32)),
        *(sa.Column(f"{channel}_required", sa.Boolean(create_constraint=False)) for channel in CHANNELS),
        sa.Column("seen_at", Timestamp(), nullable=False),
        schema=None if temporary else schema,
        prefixes=["TEMPORARY"] if temporary else [],
        mysql_charset="utf8mb4",
    )


def snapshot_taken_table(metadata: sa.MetaData, schema: str | None, snapshot_name: str) -> sa.Table:
    """
    ``<snapshot>_taken``: one row per shared snapshot, written once it is complete (a plan that
    dies half-way leaves none): the plans, the follow-up runs and the watcher of one warehouse
    reuse the latest while it is younger than their ``snapshot_max_age``.
    """
    return sa.Table(
        sql_name(f"{snapshot_name}_taken"),
        metadata,
        sa.Column("snapshot_id", sa.String(32), primary_key=True),
        *run_columns(),
        sa.Column("taken_at", Timestamp(), nullable=False),
        sa.Column("users", sa.Integer, nullable=False),
        schema=schema,
        mysql_charset="utf8mb4",
    )


def version_table(metadata: sa.MetaData, schema: str | None, ledger_name: str) -> sa.Table:
    """``<ledger>_version``: one row (``id`` 1), the :data:`SCHEMA_VERSION` the tables were made with."""
    return sa.Table(
        sql_name(f"{ledger_name}_version"),
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("written_at", Timestamp(), nullable=False),
        schema=schema,
        mysql_charset="utf8mb4",
    )


def snapshot_row(user: Mapping[str, Any]) -> dict[str, Any] | None:
    """
    One sFOX user object as a snapshot row (``None`` without a user_id), read tolerantly.

    A channel counts as verified when ``requirements.<channel> is False`` or the user's
    ``status`` is ``VERIFIED``; anything else in ``requirements`` is "not reported".
    """
    user_id = user.get("user_id")
    if user_id is None:
        return None
    requirements = user.get("requirements")
    status = user.get("status")
    row: dict[str, Any] = {
        "user_id": str(user_id),
        "account_type": str(user["account_type"])[:16] if user.get("account_type") is not None else None,
        "status": str(status)[:32] if status is not None else None,
    }
    for channel in CHANNELS:
        required = requirements.get(channel.value) if isinstance(requirements, Mapping) else None
        row[f"{channel}_required"] = required if isinstance(required, bool) else None
    return row


def snapshot_verified(status: Any, required: Any) -> bool:
    """Whether a snapshot row reports a channel verified (see :func:`snapshot_row`)."""
    return required is False or str(status or "").upper() == "VERIFIED"
