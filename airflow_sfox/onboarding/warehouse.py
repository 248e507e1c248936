"""
The warehouse side of onboarding: the source table, the ledger, the snapshot and the run table.

Every statement is built with SQLAlchemy Core on the engine of the connection's common.sql hook
(:meth:`DbApiHook.get_sqlalchemy_engine`), so the SQL text is the dialect's own. What differs
between databases beyond that is in one table, :data:`DIALECTS`: the dialect's upsert and the
cast that turns a ``user_id`` into exact text. A dialect not in it is refused with an error
naming the connection, never guessed at. SQLite (the embedded default), PostgreSQL and
MariaDB/MySQL are the tested ones.

Tables (created when missing, with their indexes, optionally in a schema of their own):

* ledger: one row per (``user_id``, ``channel``) with the state of that verification, one of
  :class:`~airflow_sfox.onboarding.model.LedgerState`;
* attempts, ``<ledger>_attempts``: append-only, one row per HTTP request the engine made to
  sFOX (its time, status, outcome, whether it may have sent a code unseen; no email or phone),
  pruned after the ``attempts_retention_days`` param; the ledger's counters add up from it;
* runs: one row per run; beside it, ``<runs>_steps``: one row per chunk step that finished
  (a step retried or cleared after it finished is counted once);
* snapshot: sFOX's users as one plan read them (account type, status, which channels are still
  required; never an email or a phone), keyed by a snapshot id and removed when the plan ends.

``user_id`` is compared as exact text everywhere: the integer 777 and the text ``'777'`` are one
user; ``'ABC'`` and ``'abc'``, ``'abc'`` and ``'abc '`` are different users on every database
(MariaDB/MySQL columns and comparisons use a binary NO PAD collation).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import quoted_name
from sqlalchemy.types import TypeDecorator

from airflow_sfox.defaults import LEDGER_TABLE, RUNS_TABLE, SNAPSHOT_TABLE
from airflow_sfox.onboarding.model import CHANNELS, DONE_STATES, FAILED_STATES, AttemptOutcome, LedgerState
from airflow_sfox.onboarding.validation import REJECTED_CHANNEL

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from sqlalchemy.engine import Connection, Dialect, Engine
    from sqlalchemy.sql.dml import Insert
    from sqlalchemy.sql.elements import ColumnElement

    from airflow_sfox.hooks.sfox import Attempt

#: A table or column name given as a parameter: plain or schema-qualified identifiers only.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
#: Longest user_id the ledger stores; longer ones are rejected by validation anyway.
USER_ID_COLUMN_LENGTH = 255
#: Longest reason stored in a run row (why it failed).
REASON_LENGTH = 500
#: sFOX users per INSERT statement of the snapshot.
SNAPSHOT_BATCH = 5000
#: Rows fetched at a time by streaming reads.
STREAM_BATCH = 2000
#: Snapshots older than this are left by plans that died: the next plan removes them.
SNAPSHOT_MAX_AGE = timedelta(hours=24)


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
#: The sender's reads: the queued users of one run's chunks.
_RUN_INDEX = ("run_id", "account_type", "chunk", "channel", "state")
#: The attempts table's reads: one user's timeline, one run's outcomes, and the retention prune.
_ATTEMPT_INDEXES = {
    "user": ("user_id", "channel", "attempted_at"),
    "run": ("run_id", "outcome"),
    "time": ("attempted_at",),
}
#: Why a claimed request has no recorded answer.
LOST_ERROR = "in flight when its task died: the request may have reached sFOX"


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


def _is_mysql(dialect: Dialect) -> bool:
    return dialect.name in ("mysql", "mariadb")


def exact_collation(dialect: Dialect) -> str:
    """MariaDB/MySQL: the binary collation without trailing-space padding ('abc' != 'abc ')."""
    return "utf8mb4_nopad_bin" if getattr(dialect, "is_mariadb", False) else "utf8mb4_0900_bin"


class Timestamp(TypeDecorator[datetime]):
    """
    An aware UTC timestamp: ``TIMESTAMP WITH TIME ZONE`` (PostgreSQL), ``DATETIME(6)`` holding UTC
    (MariaDB/MySQL), ISO 8601 text (SQLite, which has no timestamp type; as earlier versions
    stored it). Reads back as an aware datetime on every database.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(40))
        if _is_mysql(dialect):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        parsed = parse_ts(value)
        if parsed is None:
            return None
        parsed = parsed.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return parsed.isoformat(timespec="microseconds")
        if _is_mysql(dialect):
            return parsed.replace(tzinfo=None)
        return parsed

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return parse_ts(value)


class UserId(TypeDecorator[str]):
    """A user_id column: ``VARCHAR(255)``, compared as exact text (binary NO PAD on MariaDB/MySQL)."""

    impl = sa.String(USER_ID_COLUMN_LENGTH)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if _is_mysql(dialect):
            return dialect.type_descriptor(
                mysql.VARCHAR(USER_ID_COLUMN_LENGTH, charset="utf8mb4", collation=exact_collation(dialect))
            )
        return dialect.type_descriptor(sa.String(USER_ID_COLUMN_LENGTH))


# --- the dialect table --------------------------------------------------------------------------


def _on_conflict(stmt: Any, keys: Sequence[str], updates: Sequence[str]) -> Insert:
    """PostgreSQL and SQLite: ``INSERT ... ON CONFLICT (keys) DO UPDATE SET c = excluded.c``."""
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in updates})


def _on_duplicate_key(stmt: Any, keys: Sequence[str], updates: Sequence[str]) -> Insert:
    """MariaDB/MySQL: ``INSERT ... ON DUPLICATE KEY UPDATE c = VALUES(c)``."""
    column = updates[0] if updates else keys[0]
    return stmt.on_duplicate_key_update(
        {c: stmt.inserted[c] for c in updates} or {column: stmt.table.c[column]}
    )


def _text_cast(expr: Any, dialect: Dialect) -> ColumnElement[str]:
    """SQLite, PostgreSQL: ``CAST(x AS TEXT)``; both compare text exactly (binary / deterministic)."""
    return sa.cast(expr, sa.Text())


def _mysql_text_cast(expr: Any, dialect: Dialect) -> ColumnElement[str]:
    """MariaDB/MySQL: ``CAST(x AS CHAR CHARACTER SET utf8mb4) COLLATE <binary NO PAD>``."""
    return sa.cast(expr, mysql.CHAR(charset="utf8mb4")).collate(exact_collation(dialect))


@dataclass(frozen=True)
class DialectSupport:
    """
    What the onboarding engine needs of a SQLAlchemy dialect beyond portable Core.

    :param insert: the dialect's own ``insert()`` construct (it carries the upsert clause).
    :param upsert: ``(insert, key columns, columns to update) -> upsert statement``.
    :param text_key: ``(expression, dialect) -> the expression as exact text``: how user_ids of
        any source column type are compared, sorted and de-duplicated.
    """

    insert: Callable[[Any], Any]
    upsert: Callable[[Any, Sequence[str], Sequence[str]], Insert]
    text_key: Callable[[Any, Dialect], ColumnElement[str]]


#: SQLAlchemy dialect name -> how to serve it. Another database needs an entry here.
DIALECTS: dict[str, DialectSupport] = {
    "sqlite": DialectSupport(sqlite.insert, _on_conflict, _text_cast),
    "postgresql": DialectSupport(postgresql.insert, _on_conflict, _text_cast),
    "mysql": DialectSupport(mysql.insert, _on_duplicate_key, _mysql_text_cast),
    "mariadb": DialectSupport(mysql.insert, _on_duplicate_key, _mysql_text_cast),
}


def _split(name: str, schema: str | None, what: str) -> tuple[str | None, str]:
    """``schema.table`` or ``table`` (+ the ``schema`` setting) -> (schema, table)."""
    check_identifier(name, what)
    table_schema, _, table = name.rpartition(".")
    if table_schema and schema and table_schema != schema:
        raise ValueError(
            f"{what} {name!r} names schema {table_schema!r}, but the warehouse schema is {schema!r}"
        )
    return (table_schema or schema or None), table


#: Longest identifier PostgreSQL keeps (MariaDB/MySQL: 64).
MAX_IDENTIFIER_LENGTH = 63


def _check_index_names(metadata: sa.MetaData, ledger_table: str) -> None:
    """Refuse a ledger name whose index names would be cut off or refused by the database."""
    longest = max((str(ix.name) for t in metadata.tables.values() for ix in t.indexes), key=len)
    if len(longest) > MAX_IDENTIFIER_LENGTH:
        raise ValueError(
            f"ledger_table {ledger_table!r} is too long: its index {longest!r} would pass the "
            f"{MAX_IDENTIFIER_LENGTH} characters databases allow; use a name "
            f"{len(longest) - MAX_IDENTIFIER_LENGTH} characters shorter"
        )


def _name(name: str) -> quoted_name:
    """An identifier rendered as written (unquoted: the database folds its case as it always did)."""
    return quoted_name(name, False)


def define_tables(
    metadata: sa.MetaData,
    *,
    ledger: tuple[str | None, str],
    runs: tuple[str | None, str],
    snapshot: tuple[str | None, str],
) -> tuple[sa.Table, sa.Table, sa.Table, sa.Table, sa.Table]:
    """The ledger, attempts, run, run-step and snapshot tables with their indexes, in ``metadata``."""
    ledger_schema, ledger_name = ledger
    prefix = _index_prefix(ledger_name if ledger_schema is None else f"{ledger_schema}.{ledger_name}")
    ledger_t = sa.Table(
        _name(ledger_name),
        metadata,
        sa.Column("user_id", UserId(), primary_key=True),
        sa.Column("channel", sa.String(8), primary_key=True),
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
        sa.Column("run_id", sa.String(250)),
        sa.Column("chunk", sa.Integer),
        sa.Column("updated_at", Timestamp(), nullable=False),
        *newer_ledger_columns(),
        sa.Index(f"{prefix}_run", *_RUN_INDEX),
        sa.Index(f"{prefix}_funnel", *_FUNNEL_INDEX),
        sa.Index(f"{prefix}_state", *_STATE_INDEX),
        schema=ledger_schema,
        mysql_charset="utf8mb4",
    )
    runs_t = sa.Table(
        _name(runs[1]),
        metadata,
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("dag_id", sa.String(250)),
        sa.Column("dry_run", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", Timestamp()),
        sa.Column("finished_at", Timestamp()),
        *(
            sa.Column(name, sa.Integer)
            for name in (
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
        *newer_run_columns(),
        schema=runs[0],
        mysql_charset="utf8mb4",
    )
    steps_t = sa.Table(
        _name(f"{runs[1]}_steps"),
        metadata,
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("step", sa.String(250), primary_key=True),
        sa.Column("finished_at", Timestamp(), nullable=False),
        schema=runs[0],
        mysql_charset="utf8mb4",
    )
    return ledger_t, attempts_table(metadata, *ledger), runs_t, steps_t, snapshot_table(metadata, *snapshot)


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
        _name(name),
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("user_id", UserId(), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("run_id", sa.String(250)),
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
        _name(f"{ledger_name}_events"),
        metadata,
        sa.Column("event_key", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(250)),
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
        _name(name),
        metadata,
        sa.Column("snapshot_id", sa.String(32), primary_key=True),
        sa.Column("user_id", UserId(), primary_key=True),
        sa.Column("run_id", sa.String(250)),
        sa.Column("account_type", sa.String(16)),
        sa.Column("status", sa.String(32)),
        *(sa.Column(f"{channel}_required", sa.Boolean(create_constraint=False)) for channel in CHANNELS),
        sa.Column("seen_at", Timestamp(), nullable=False),
        schema=None if temporary else schema,
        prefixes=["TEMPORARY"] if temporary else [],
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


class UnsupportedDialectError(ValueError):
    """The warehouse connection's SQLAlchemy dialect has no entry in :data:`DIALECTS`."""


def _conn_id(hook: Any) -> str:
    """The connection id of a hook, for error messages."""
    return str(getattr(hook, str(getattr(hook, "conn_name_attr", "")), None) or type(hook).__name__)


class Warehouse:
    """
    The onboarding tables in one warehouse connection.

    :param hook: a common.sql hook of the warehouse connection.
    :param ledger_table: name of the ledger table (or ``schema.table``).
    :param runs_table: name of the run summary table (or ``schema.table``).
    :param snapshot_table: name of the snapshot of sFOX's users (or ``schema.table``).
    :param schema: the schema holding these tables (MariaDB/MySQL: a database), created when
        missing; ``None``: the connection's default.
    :raises UnsupportedDialectError: the connection's dialect is not in :data:`DIALECTS`.
    """

    def __init__(
        self,
        hook: DbApiHook,
        *,
        ledger_table: str = LEDGER_TABLE,
        runs_table: str = RUNS_TABLE,
        snapshot_table: str = SNAPSHOT_TABLE,
        schema: str | None = None,
    ) -> None:
        self.hook = hook
        if schema is not None and (not schema or "." in check_identifier(schema, "warehouse schema")):
            raise ValueError(f"warehouse schema must be a plain SQL identifier, got {schema!r}")
        self.schema = schema
        ledger = _split(ledger_table, schema, "ledger_table")
        runs = _split(runs_table, schema, "runs_table")
        snapshot = _split(snapshot_table, schema, "snapshot_table")
        #: Qualified names, as put into raw SQL text (the page's queries) and shown on the page.
        self.ledger = ".".join(p for p in ledger if p)
        self.runs = ".".join(p for p in runs if p)
        self.snapshot = ".".join(p for p in snapshot if p)
        # No pool: a connection per use, closed after it (as the DB-API path did). Errors do
        # not repeat statement parameters (user ids, and whatever a source row held).
        self.engine: Engine = hook.get_sqlalchemy_engine(
            engine_kwargs={"poolclass": NullPool, "hide_parameters": True}
        )
        self.dialect = self.engine.dialect.name
        support = DIALECTS.get(self.dialect)
        if support is None:
            raise UnsupportedDialectError(
                f"warehouse connection {_conn_id(hook)!r} uses the SQLAlchemy dialect {self.dialect!r}, "
                "which the sFOX onboarding engine cannot serve: it needs an upsert (INSERT ... ON "
                "CONFLICT or ON DUPLICATE KEY UPDATE) and a cast of user_ids to exact text, registered "
                f"in airflow_sfox.onboarding.warehouse.DIALECTS. Supported: {', '.join(sorted(DIALECTS))}."
            )
        if self.dialect == "sqlite" and {ledger[0], runs[0], snapshot[0]} - {None, "main"}:
            raise ValueError(
                f"warehouse connection {_conn_id(hook)!r} is SQLite, whose schemas are attached "
                "database files: keep the onboarding tables in the main database (no schema)"
            )
        self.support = support
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.metadata = sa.MetaData()
        self.ledger_t, self.attempts_t, self.runs_t, self.steps_t, self.snapshot_t = define_tables(
            self.metadata, ledger=ledger, runs=runs, snapshot=snapshot
        )
        self.events_t = events_table(self.metadata, *ledger)
        #: The attempts table's qualified name (``<ledger>_attempts``).
        self.attempts = f"{self.ledger}_attempts"
        _check_index_names(self.metadata, ledger_table)
        #: The DB-API placeholder of the driver, for raw SQL through ``conn.exec_driver_sql``.
        self.ph = "?" if self.engine.dialect.paramstyle in ("qmark", "numeric") else "%s"

    @classmethod
    def from_conn_id(cls, conn_id: str, **kwargs: Any) -> Warehouse:
        """Build from an Airflow connection id (any connection whose hook is a DbApiHook)."""
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        from airflow_sfox._compat import BaseHook

        hook = BaseHook.get_connection(conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise TypeError(f"Connection {conn_id!r} is not a SQL connection ({type(hook).__name__})")
        return cls(hook, **kwargs)

    # --- connections --------------------------------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """
        A SQLAlchemy connection of its own (no pool), closed on exit; the caller commits.

        Raw SQL goes through ``conn.exec_driver_sql(sql, params)`` with :attr:`ph` placeholders.
        """
        with self.engine.connect() as conn:
            yield conn

    def stream(self, conn: Connection, statement: Any, batch: int = STREAM_BATCH) -> Iterator[sa.Row[Any]]:
        """Yield the rows of a query without holding them all (a server-side cursor where there is one)."""
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(statement)
        try:
            yield from result
        finally:
            result.close()

    def ts(self, value: datetime | None) -> Any:
        """A timestamp as the dialect stores it (ISO text in SQLite, naive UTC in MariaDB/MySQL)."""
        return Timestamp().process_bind_param(value, self.engine.dialect)

    parse_ts = staticmethod(parse_ts)

    def text_key(self, expr: Any) -> ColumnElement[str]:
        """``expr`` as exact text in this dialect: how user_ids are compared and de-duplicated."""
        return self.support.text_key(expr, self.engine.dialect)

    def upsert(self, table: sa.Table, keys: Sequence[str], updates: Sequence[str]) -> Insert:
        """An insert of ``table`` that updates ``updates`` of the row already holding ``keys``."""
        return self.support.upsert(self.support.insert(table), keys, updates)

    # --- schema -------------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the schema, the onboarding tables and their indexes when missing."""
        with self.engine.begin() as conn:
            schemas = {t.schema for t in self.metadata.tables.values() if t.schema is not None}
            if schemas:
                existing = set(sa.inspect(conn).get_schema_names())
                for name in sorted(schemas - existing):
                    conn.execute(sa.schema.CreateSchema(_name(name)))
            self.metadata.create_all(conn, checkfirst=True)
            # Tables made by an earlier version: the indexes and run columns they lack.
            inspector = sa.inspect(conn)
            for table in self.metadata.tables.values():
                have = {ix["name"] for ix in inspector.get_indexes(table.name, schema=table.schema)}
                for index in table.indexes:
                    if index.name not in have:
                        index.create(conn)
            newer = (
                (self.runs_t, self.runs, newer_run_columns()),
                (self.ledger_t, self.ledger, newer_ledger_columns()),
            )
            for table, qualified, columns in newer:
                have = {c["name"].lower() for c in inspector.get_columns(table.name, schema=table.schema)}
                for column in columns:
                    if column.name not in have:
                        ddl = sa.schema.CreateColumn(table.c[column.name]).compile(dialect=conn.dialect)
                        conn.exec_driver_sql(f"ALTER TABLE {qualified} ADD COLUMN {ddl}")
                        if column.name == "failures":  # a failed row of an earlier version: one try
                            failed = [state.value for state in FAILED_STATES]
                            t = self.ledger_t
                            conn.execute(sa.update(t).where(t.c.state.in_(failed)).values(failures=1))

    def columns_of(self, from_item: str) -> list[str]:
        """
        The column names of a table or parenthesised query, read without reading a row.

        :param from_item: a table name or ``(SELECT ...)``, as the planner puts it after FROM.
        """
        with self.connect() as conn:
            result = conn.exec_driver_sql(f"SELECT * FROM {from_item} src WHERE 1 = 0")
            try:
                return [str(name) for name in result.keys()]  # noqa: SIM118 - a Result is no dict
            finally:
                result.close()

    def has_ledger(self) -> bool:
        """Whether the ledger table exists (a dry run must not create it)."""
        with self.connect() as conn:
            return bool(sa.inspect(conn).has_table(self.ledger_t.name, schema=self.ledger_t.schema))

    def ledger_lacks(self) -> frozenset[str]:
        """The newer ledger columns an existing ledger of an earlier version lacks."""
        t = self.ledger_t
        with self.connect() as conn:
            have = {c["name"].lower() for c in sa.inspect(conn).get_columns(t.name, schema=t.schema)}
        return frozenset(c.name for c in newer_ledger_columns() if c.name not in have)

    # --- ledger writes ------------------------------------------------------------------------

    def rejected_already(self, conn: Connection, user_ids: Sequence[str]) -> set[str]:
        """Which of these ledger keys an earlier run already recorded as ``rejected``."""
        if not user_ids:
            return set()
        t = self.ledger_t
        statement = sa.select(t.c.user_id).where(
            t.c.channel == REJECTED_CHANNEL.value,
            t.c.state == LedgerState.REJECTED.value,
            t.c.user_id.in_(list(user_ids)),
        )
        return {str(uid) for uid in conn.execute(statement).scalars()}

    def upsert_plan(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """
        Write planned states: ``(user_id, channel, account_type, state, run_id, chunk, last_error)``.

        Counters and request times of existing rows are kept.
        """
        if not rows:
            return
        names = ("user_id", "channel", "account_type", "state", "run_id", "chunk", "last_error")
        now = utcnow()
        updates = ("account_type", "state", "run_id", "chunk", "last_error", "updated_at")
        statement = self.upsert(self.ledger_t, ("user_id", "channel"), updates)
        conn.execute(statement, [{**dict(zip(names, row, strict=True)), "updated_at": now} for row in rows])

    def record_outcomes(self, conn: Connection, outcomes: Sequence[Outcome], *, run_id: str) -> None:
        """
        Write the outcomes of send requests, releasing their claims, and append their HTTP
        requests to the attempts table (one UPDATE per outcome; the caller commits). A ``queued``
        outcome is a call refused for the token: its row stays queued, its requests are counted.

        :param run_id: the run whose chunk step sent them.
        """
        if not outcomes:
            return
        t = self.ledger_t
        p = sa.bindparam
        statement = (
            sa.update(t)
            .where(t.c.user_id == p("o_user_id", type_=UserId()), t.c.channel == p("o_channel"))
            .values(
                state=p("o_state"),
                sends=t.c.sends + p("o_sent", type_=sa.Integer),
                attempts=t.c.attempts + p("o_attempts", type_=sa.Integer),
                uncertain=sa.case((p("o_uncertain", type_=sa.Integer) == 1, 1), else_=t.c.uncertain),
                failures=sa.case(
                    (p("o_failed", type_=sa.Integer) == 1, t.c.failures + 1),
                    (p("o_done", type_=sa.Integer) == 1, 0),
                    else_=t.c.failures,
                ),
                last_status=p("o_status", type_=sa.Integer),
                last_error=p("o_error"),
                first_request_at=sa.func.coalesce(t.c.first_request_at, p("o_at", type_=Timestamp())),
                last_request_at=p("o_at2", type_=Timestamp()),
                last_sent_at=sa.func.coalesce(p("o_sent_at", type_=Timestamp()), t.c.last_sent_at),
                updated_at=p("o_at3", type_=Timestamp()),
                claimed_by=None,
                claimed_at=None,
            )
        )
        params = []
        for o in outcomes:
            sent = o.state == LedgerState.SENT
            at = o.requested_at
            params.append(
                {
                    "o_user_id": o.user_id,
                    "o_channel": str(o.channel),
                    "o_state": str(o.state),
                    "o_sent": 1 if sent else 0,
                    "o_attempts": o.attempts,
                    "o_uncertain": 1 if o.uncertain else 0,
                    "o_failed": 1 if o.state in FAILED_STATES else 0,
                    "o_done": 1 if o.state in DONE_STATES else 0,
                    "o_status": o.status,
                    "o_error": o.error,
                    "o_at": at,
                    "o_at2": at,
                    "o_sent_at": at if sent else None,
                    "o_at3": at,
                }
            )
        conn.execute(statement, params)
        rows = [row for o in outcomes for row in _attempt_rows(o, run_id)]
        if rows:
            conn.execute(sa.insert(self.attempts_t), rows)

    def claim(self, conn: Connection, user_ids: Sequence[str], *, channel: str, run_id: str) -> None:
        """
        Mark queued users as being sent by a run (the caller commits before their requests go
        out): a try that dies leaves the claims for the next one to find (:meth:`record_lost`).
        """
        self._set_claim(conn, user_ids, channel, run_id, utcnow())

    def unclaim(self, conn: Connection, user_ids: Sequence[str], *, channel: str) -> None:
        """Release the claims of users whose requests were not sent after all."""
        self._set_claim(conn, user_ids, channel, None, None)

    def _set_claim(
        self, conn: Connection, user_ids: Sequence[str], channel: str, run_id: str | None, at: datetime | None
    ) -> None:
        if not user_ids:
            return
        t = self.ledger_t
        keys = sa.and_(t.c.channel == str(channel), t.c.user_id.in_(list(user_ids)))
        conn.execute(sa.update(t).where(keys).values(claimed_by=run_id, claimed_at=at))

    def record_lost(self, conn: Connection, claims: Sequence[Claim], *, channel: str, hold: bool) -> None:
        """
        Record claims a dead try left: each is an attempt that may have sent a code (``lost``,
        uncertain), and its ledger row is marked uncertain; with ``hold`` the row is ``held`` for
        review instead of staying queued (the caller commits).
        """
        if not claims:
            return
        t = self.ledger_t
        now = utcnow()
        values: dict[str, Any] = {
            "attempts": t.c.attempts + 1,
            "uncertain": 1,
            "claimed_by": None,
            "claimed_at": None,
            "updated_at": now,
        }
        if hold:
            values.update(state=LedgerState.HELD.value, last_error=f"held for review: {LOST_ERROR}")
        keys = sa.and_(t.c.channel == str(channel), t.c.user_id.in_([claim.user_id for claim in claims]))
        conn.execute(sa.update(t).where(keys).values(values))
        rows = [
            {
                "user_id": claim.user_id,
                "channel": str(channel),
                "run_id": claim.run_id,
                "attempted_at": claim.at or now,
                "attempt": 1,
                "status": None,
                "outcome": AttemptOutcome.LOST.value,
                "uncertain": 1,
                "error": LOST_ERROR,
            }
            for claim in claims
        ]
        conn.execute(sa.insert(self.attempts_t), rows)

    def prune_attempts(self, *, older_than: datetime) -> int:
        """Delete attempts made before ``older_than`` (the retention param); returns how many."""
        t = self.attempts_t
        with self.connect() as conn:
            deleted = conn.execute(sa.delete(t).where(t.c.attempted_at < older_than)).rowcount
            conn.commit()
        return int(deleted or 0)

    # --- events -------------------------------------------------------------------------------

    def seen_events(self, conn: Connection, keys: Sequence[str]) -> set[str]:
        """Which of these event keys an earlier run judged (none while the table is missing: a dry run)."""
        t = self.events_t
        if not keys or not sa.inspect(conn).has_table(t.name, schema=t.schema):
            return set()
        found: set[str] = set()
        for start in range(0, len(keys), 1000):
            batch = list(keys[start : start + 1000])
            found.update(
                str(k)
                for k in conn.execute(sa.select(t.c.event_key).where(t.c.event_key.in_(batch))).scalars()
            )
        return found

    def record_events(self, conn: Connection, keys: Sequence[str], *, run_id: str) -> None:
        """Record the events a run judged (the caller commits, with the rows it queued)."""
        if keys:
            now = utcnow()
            rows = [{"event_key": key, "run_id": run_id, "seen_at": now} for key in keys]
            conn.execute(self.upsert(self.events_t, ("event_key",), ()), rows)

    def prune_events(self, *, older_than: datetime) -> None:
        """Forget events judged before ``older_than``: Airflow hands no run an event that old."""
        t = self.events_t
        with self.connect() as conn:
            conn.execute(sa.delete(t).where(t.c.seen_at < older_than))
            conn.commit()

    # --- snapshot -----------------------------------------------------------------------------

    def temporary_snapshot(self, conn: Connection) -> sa.Table:
        """A snapshot table of this connection only, gone when it closes (for dry runs)."""
        table = snapshot_table(sa.MetaData(), None, self.snapshot_t.name, temporary=True)
        table.create(conn)
        return table

    def write_snapshot(
        self,
        conn: Connection,
        users: Iterable[Mapping[str, Any]],
        *,
        snapshot_id: str,
        run_id: str,
        table: sa.Table | None = None,
        batch: int = SNAPSHOT_BATCH,
        commit: bool = True,
    ) -> int:
        """
        Write sFOX's users into the snapshot, ``batch`` rows per INSERT, committed per batch.

        A user listed twice keeps its last entry. Returns the users written.

        :param users: sFOX user objects, streamed (never held all at once).
        """
        table = self.snapshot_t if table is None else table
        updates = [c.name for c in table.columns if c.name not in ("snapshot_id", "user_id")]
        statement = self.upsert(table, ("snapshot_id", "user_id"), updates)
        seen_at = utcnow()
        written = 0
        pending: dict[str, dict[str, Any]] = {}

        def flush() -> None:
            if pending:
                conn.execute(statement, list(pending.values()))
                if commit:
                    conn.commit()
                pending.clear()

        for user in users:
            row = snapshot_row(user) if isinstance(user, Mapping) else None
            if row is None:
                continue
            row.update(snapshot_id=snapshot_id, run_id=run_id, seen_at=seen_at)
            pending.pop(row["user_id"], None)
            pending[row["user_id"]] = row
            written += 1
            if len(pending) >= batch:
                flush()
        flush()
        return written

    def drop_snapshot(self, conn: Connection, snapshot_id: str) -> None:
        """Remove one snapshot, and those older than :data:`SNAPSHOT_MAX_AGE` (plans that died)."""
        t = self.snapshot_t
        conn.execute(
            sa.delete(t).where(
                sa.or_(t.c.snapshot_id == snapshot_id, t.c.seen_at < utcnow() - SNAPSHOT_MAX_AGE)
            )
        )
        conn.commit()

    # --- ledger reads -------------------------------------------------------------------------

    def queued(self, run_id: str, account_type: str, channel: str, chunks: tuple[int, int]) -> list[Claim]:
        """
        The users still queued in a range of chunks of a run, in user_id order, each with the
        claim an earlier try left on it, if any (``run_id`` ``None``: not claimed).
        """
        t = self.ledger_t
        statement = (
            sa.select(t.c.user_id, t.c.claimed_by, t.c.claimed_at)
            .where(
                t.c.run_id == run_id,
                t.c.account_type == str(account_type),
                t.c.channel == str(channel),
                t.c.chunk.between(chunks[0], chunks[1]),
                t.c.state == LedgerState.QUEUED.value,
            )
            .order_by(t.c.user_id)
        )
        with self.connect() as conn:
            return [Claim(str(uid), by, parse_ts(at)) for uid, by, at in conn.execute(statement)]

    def run_counts(self, run_id: str) -> dict[tuple[str, str], int]:
        """Ledger rows last touched by a run, counted by (channel, state)."""
        t = self.ledger_t
        statement = (
            sa.select(t.c.channel, t.c.state, sa.func.count())
            .where(t.c.run_id == run_id)
            .group_by(t.c.channel, t.c.state)
        )
        with self.connect() as conn:
            return {(channel, state): int(count) for channel, state, count in conn.execute(statement)}

    def uncertain_count(self, run_id: str) -> int:
        """Rows of a run whose request may have sent a code twice (not rows it only gave up on)."""
        t = self.ledger_t
        statement = sa.select(sa.func.count()).where(
            t.c.run_id == run_id, t.c.uncertain == 1, t.c.state != LedgerState.GAVE_UP.value
        )
        with self.connect() as conn:
            return int(conn.execute(statement).scalar_one())

    def run_row(self, run_id: str) -> dict[str, Any]:
        """The summary row of one run as a dict (empty when missing)."""
        with self.connect() as conn:
            row = conn.execute(sa.select(self.runs_t).where(self.runs_t.c.run_id == run_id)).first()
            return {} if row is None else dict(row._mapping)

    def write_run(self, row: dict[str, Any]) -> None:
        """Insert or update the summary row of one run (only the columns given)."""
        updates = [c for c in row if c != "run_id"]
        with self.connect() as conn:
            conn.execute(self.upsert(self.runs_t, ("run_id",), updates), [row])
            conn.commit()

    def forget_steps(self, run_id: str) -> None:
        """Forget which chunk steps of a run finished: its plan ran again, with chunks of its own."""
        with self.connect() as conn:
            conn.execute(sa.delete(self.steps_t).where(self.steps_t.c.run_id == run_id))
            conn.commit()

    def add_chunk_figures(
        self,
        run_id: str,
        *,
        step: str,
        requests: int,
        rate_limited: int,
        seconds: float,
        done: bool,
        budget_wait_seconds: float = 0.0,
        pause_seconds: float = 0.0,
    ) -> None:
        """
        Add one try of a chunk step's request figures to the run row; if the step finished, mark
        it done (once: a retry or a clear of a finished step does not count it again).

        :param step: the step's key in its run (its channel and chunk).
        :param budget_wait_seconds: thread-seconds waiting for the shared rate budget.
        :param pause_seconds: thread-seconds in 429 pauses.
        """
        t, steps = self.runs_t, self.steps_t
        with self.connect() as conn:
            if done:
                row = {"run_id": run_id, "step": step, "finished_at": utcnow()}
                conn.execute(self.upsert(steps, ("run_id", "step"), ["finished_at"]), [row])
            steps_done = (
                sa.select(sa.func.count())
                .select_from(steps)
                .where(steps.c.run_id == run_id)
                .scalar_subquery()
            )
            statement = (
                sa.update(t)
                .where(t.c.run_id == run_id)
                .values(
                    requests=t.c.requests + requests,
                    rate_limited=t.c.rate_limited + rate_limited,
                    send_seconds=t.c.send_seconds + seconds,
                    steps_done=steps_done,
                    budget_wait_seconds=sa.func.coalesce(t.c.budget_wait_seconds, 0) + budget_wait_seconds,
                    pause_seconds=sa.func.coalesce(t.c.pause_seconds, 0) + pause_seconds,
                )
            )
            conn.execute(statement)
            conn.commit()


def newer_ledger_columns() -> list[sa.Column[Any]]:
    """Ledger columns added after the first version: added to older tables by create_tables."""
    return [
        # Tries in a row that ended failed or not registered: the wait before the next, when to give up.
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        # The run whose chunk step is sending this row's request, and since when (see Warehouse.claim).
        sa.Column("claimed_by", sa.String(250)),
        sa.Column("claimed_at", Timestamp()),
    ]


def newer_run_columns() -> list[sa.Column[Any]]:
    """Run-table columns added after the first version: added to older tables by create_tables."""
    return [
        sa.Column("reason", sa.String(REASON_LENGTH)),
        sa.Column("budget_wait_seconds", sa.Float()),
        sa.Column("pause_seconds", sa.Float()),
        # Source rows beyond the first of a user_id (the rejected users count each id once).
        sa.Column("duplicate_rows", sa.Integer),
        # Ids in a run's events that are no user id: reported, never counted against the run.
        sa.Column("malformed_ids", sa.Integer),
    ]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """The planner reads on one connection while it writes on another: WAL lets both work at once."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


@dataclass(frozen=True)
class Outcome:
    """
    The result of one send request, as the ledger records it.

    :param user_id: the user.
    :param channel: ``email`` or ``sms``.
    :param state: the new ledger state.
    :param status: the HTTP status of the last answer (``None``: no answer).
    :param error: a short reason, no personal data.
    :param attempts: HTTP requests made.
    :param uncertain: a code may have been sent without our knowing.
    :param requested_at: when the request started.
    :param trail: each HTTP request of the call (the hook's records), for the attempts table.
    """

    user_id: str
    channel: str
    state: str
    status: int | None
    error: str | None
    attempts: int
    uncertain: bool
    requested_at: datetime
    trail: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class Claim:
    """
    A queued user as a chunk step reads it, with the claim a try that died left on it.

    :param user_id: the user.
    :param run_id: the run whose try claimed it (``None``: not claimed).
    :param at: when it was claimed.
    """

    user_id: str
    run_id: str | None = None
    at: datetime | None = None


def _final(outcome: Outcome) -> str:
    """The attempts-table outcome of a call's last request."""
    if outcome.state != LedgerState.QUEUED:
        return str(outcome.state)
    # Still queued: the token was refused, or sFOX was down (the call is tried again).
    return AttemptOutcome.REFUSED.value if outcome.status in (401, 403) else AttemptOutcome.RETRIED.value


def _attempt_rows(outcome: Outcome, run_id: str) -> list[dict[str, Any]]:
    """The attempts-table rows of one outcome: its last request has the outcome, earlier ones were retried."""
    last = len(outcome.trail)
    return [
        {
            "user_id": outcome.user_id,
            "channel": str(outcome.channel),
            "run_id": run_id,
            "attempted_at": attempt.at,
            "attempt": number,
            "status": attempt.status,
            "outcome": _final(outcome) if number == last else AttemptOutcome.RETRIED.value,
            "uncertain": 1 if attempt.uncertain else 0,
            "error": attempt.error and attempt.error[:255],
        }
        for number, attempt in enumerate(outcome.trail, start=1)
    ]
