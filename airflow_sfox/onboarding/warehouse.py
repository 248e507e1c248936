"""
The warehouse side of onboarding: the ledger, the attempts, the snapshot and the run table.

Every statement is built with SQLAlchemy Core on the engine of the connection's common.sql hook
(:meth:`DbApiHook.get_sqlalchemy_engine`), so the SQL text is the dialect's own; what differs
between databases beyond that is in :mod:`airflow_sfox.onboarding.dialects`. The tables are
defined in :mod:`airflow_sfox.onboarding.schema`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from airflow_sfox.defaults import LEDGER_TABLE, RUNS_TABLE, SNAPSHOT_TABLE
from airflow_sfox.onboarding.dialects import conn_id_of, dialect_support, sqlite_pragmas
from airflow_sfox.onboarding.model import Channel, LedgerState, RunRef
from airflow_sfox.onboarding.outcomes import (
    LOST_ERROR,
    Claim,
    attempt_rows,
    lost_rows,
    outcome_params,
    outcome_update,
)
from airflow_sfox.onboarding.schema import (
    SCHEMA_VERSION,
    Timestamp,
    check_identifier,
    check_index_names,
    check_schema_version,
    define_tables,
    events_table,
    of_run,
    parse_ts,
    snapshot_row,
    snapshot_table,
    snapshot_taken_table,
    split_name,
    sql_name,
    utcnow,
    version_table,
)
from airflow_sfox.onboarding.validation import REJECTED_CHANNEL

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.dml import Insert
    from sqlalchemy.sql.elements import ColumnElement

    from airflow_sfox.onboarding.outcomes import Outcome

#: sFOX users per INSERT statement of the snapshot.
SNAPSHOT_BATCH = 5000
#: Rows fetched at a time by streaming reads.
STREAM_BATCH = 2000
#: Snapshots older than this are left by plans that died: the next plan removes them.
SNAPSHOT_MAX_AGE = timedelta(hours=24)


class Warehouse:
    """
    The onboarding tables in one warehouse connection.

    :param hook: a common.sql hook of the warehouse connection.
    :param ledger_table: name of the ledger table (or ``schema.table``).
    :param runs_table: name of the run summary table (or ``schema.table``).
    :param snapshot_table: name of the snapshot of sFOX's users (or ``schema.table``).
    :param schema: the schema holding these tables (MariaDB/MySQL: a database), created when
        missing; ``None``: the connection's default.
    :raises ~airflow_sfox.onboarding.dialects.UnsupportedDialectError: the connection's dialect
        is not in :data:`~airflow_sfox.onboarding.dialects.DIALECTS`.
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
        ledger = split_name(ledger_table, schema, "ledger_table")
        runs = split_name(runs_table, schema, "runs_table")
        snapshot = split_name(snapshot_table, schema, "snapshot_table")
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
        self.support = dialect_support(hook, self.dialect)
        if self.dialect == "sqlite" and {ledger[0], runs[0], snapshot[0]} - {None, "main"}:
            raise ValueError(
                f"warehouse connection {conn_id_of(hook)!r} is SQLite, whose schemas are attached "
                "database files: keep the onboarding tables in the main database (no schema)"
            )
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", sqlite_pragmas)
        self.metadata = sa.MetaData()
        self.ledger_t, self.attempts_t, self.runs_t, self.steps_t, self.snapshot_t = define_tables(
            self.metadata, ledger=ledger, runs=runs, snapshot=snapshot
        )
        self.events_t = events_table(self.metadata, *ledger)
        self.taken_t = snapshot_taken_table(self.metadata, *snapshot)
        self.version_t = version_table(self.metadata, *ledger)
        #: The attempts table's qualified name (``<ledger>_attempts``).
        self.attempts = f"{self.ledger}_attempts"
        check_index_names(self.metadata, ledger_table)
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
        """
        Create the schema, the onboarding tables and their indexes when missing, and record the
        schema version in ``<ledger>_version``.

        :raises ~airflow_sfox.onboarding.schema.SchemaVersionError: the tables record another
            schema version than this release's (checked before anything is created).
        """
        with self.engine.begin() as conn:
            self._check_schema_version(conn)
            schemas = {t.schema for t in self.metadata.tables.values() if t.schema is not None}
            if schemas:
                existing = set(sa.inspect(conn).get_schema_names())
                for name in sorted(schemas - existing):
                    conn.execute(sa.schema.CreateSchema(sql_name(name)))
            self.metadata.create_all(conn, checkfirst=True)
            row = {"id": 1, "version": SCHEMA_VERSION, "written_at": utcnow()}
            conn.execute(self.upsert(self.version_t, ("id",), ()), [row])  # kept when already there

    def _check_schema_version(self, conn: Connection) -> None:
        t = self.version_t
        if not sa.inspect(conn).has_table(t.name, schema=t.schema):
            return
        found = conn.execute(sa.select(t.c.version).where(t.c.id == 1)).scalar()
        if found is not None:
            check_schema_version(f"{self.ledger}_version", int(found))

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
        """
        Whether the ledger table exists (a dry run must not create it).

        :raises ~airflow_sfox.onboarding.schema.SchemaVersionError: it does, beside a record of
            another schema version than this release's.
        """
        with self.connect() as conn:
            if not sa.inspect(conn).has_table(self.ledger_t.name, schema=self.ledger_t.schema):
                return False
            self._check_schema_version(conn)
            return True

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

    def upsert_plan(self, conn: Connection, rows: Sequence[tuple[Any, ...]], *, run: RunRef) -> None:
        """
        Write planned states: ``(user_id, channel, account_type, state, chunk, last_error)``.

        Counters and request times of existing rows are kept.

        :param run: the run that planned them.
        """
        if not rows:
            return
        names = ("user_id", "channel", "account_type", "state", "chunk", "last_error")
        stamp = {**run._asdict(), "updated_at": utcnow()}
        updates = ("account_type", "state", "dag_id", "run_id", "chunk", "last_error", "updated_at")
        statement = self.upsert(self.ledger_t, ("user_id", "channel"), updates)
        conn.execute(statement, [{**dict(zip(names, row, strict=True)), **stamp} for row in rows])

    def record_outcomes(self, conn: Connection, outcomes: Sequence[Outcome], *, run: RunRef) -> None:
        """
        Write the outcomes of send requests, releasing their claims, and append their HTTP
        requests to the attempts table (one UPDATE per outcome; the caller commits). A ``queued``
        outcome is a call refused for the token: its row stays queued, its requests are counted.

        :param run: the run whose chunk step sent them.
        """
        if not outcomes:
            return
        conn.execute(outcome_update(self.ledger_t), [outcome_params(o) for o in outcomes])
        rows = [row for o in outcomes for row in attempt_rows(o, run)]
        if rows:
            conn.execute(sa.insert(self.attempts_t), rows)

    def record_registered(
        self,
        conn: Connection,
        sent: Sequence[Outcome],
        hashes: Mapping[str, str | None],
        *,
        account_type: str,
        run: RunRef,
    ) -> None:
        """
        What registrations leave beside their own outcomes (the caller commits, with them): the
        keyed hash of the fields each sent (``hashes``; ``None`` clears it), and the email row of
        each user sFOX created, ``sent`` at that moment (``sent``: their email outcomes, without
        requests): sFOX emails the first code itself, and the resend cooldown starts there.
        """
        t = self.ledger_t
        if hashes:
            keys = sa.and_(
                t.c.user_id == sa.bindparam("h_user_id", type_=t.c.user_id.type),
                t.c.channel == Channel.REGISTRATION.value,
            )
            statement = sa.update(t).where(keys).values(fields_hmac=sa.bindparam("h_hmac"))
            conn.execute(statement, [{"h_user_id": u, "h_hmac": h} for u, h in hashes.items()])
        if sent:
            state = LedgerState.SENT.value
            self.upsert_plan(
                conn, [(o.user_id, o.channel, account_type, state, None, None) for o in sent], run=run
            )
            conn.execute(outcome_update(t), [outcome_params(o) for o in sent])

    def claim(self, conn: Connection, user_ids: Sequence[str], *, channel: str, run: RunRef) -> None:
        """
        Mark queued users as being sent by a run (the caller commits before their requests go
        out): a try that dies leaves the claims for the next one to find (:meth:`record_lost`).
        """
        self._set_claim(conn, user_ids, channel, run, utcnow())

    def unclaim(self, conn: Connection, user_ids: Sequence[str], *, channel: str) -> None:
        """Release the claims of users whose requests were not sent after all."""
        self._set_claim(conn, user_ids, channel, None, None)

    def _set_claim(
        self, conn: Connection, user_ids: Sequence[str], channel: str, run: RunRef | None, at: datetime | None
    ) -> None:
        if not user_ids:
            return
        t = self.ledger_t
        keys = sa.and_(t.c.channel == str(channel), t.c.user_id.in_(list(user_ids)))
        by, dag = (None, None) if run is None else (run.run_id, run.dag_id)
        conn.execute(sa.update(t).where(keys).values(claimed_by=by, claimed_by_dag=dag, claimed_at=at))

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
            "claimed_by_dag": None,
            "claimed_at": None,
            "updated_at": now,
        }
        if hold:
            values.update(state=LedgerState.HELD.value, last_error=f"held for review: {LOST_ERROR}")
        keys = sa.and_(t.c.channel == str(channel), t.c.user_id.in_([claim.user_id for claim in claims]))
        conn.execute(sa.update(t).where(keys).values(values))
        rows = lost_rows(claims, channel=str(channel), now=now)
        conn.execute(sa.insert(self.attempts_t), rows)

    def erase_users(self, user_ids: Sequence[str]) -> int:
        """
        Erase every record of these users: their ledger rows (every channel, the keyed hash of
        their registration fields with them) and their attempts. Returns the rows deleted.

        :param user_ids: the users (a deletion request, a deactivated user).
        """
        self.create_tables()
        deleted = 0
        with self.connect() as conn:
            for start in range(0, len(user_ids), 1000):
                batch = [str(uid) for uid in user_ids[start : start + 1000]]
                for table in (self.ledger_t, self.attempts_t):
                    deleted += int(
                        conn.execute(sa.delete(table).where(table.c.user_id.in_(batch))).rowcount or 0
                    )
            conn.commit()
        return deleted

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

    def record_events(self, conn: Connection, keys: Sequence[str], *, run: RunRef) -> None:
        """Record the events a run judged (the caller commits, with the rows it queued)."""
        if keys:
            now = utcnow()
            rows = [{"event_key": key, **run._asdict(), "seen_at": now} for key in keys]
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
        run: RunRef,
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
            row.update(snapshot_id=snapshot_id, **run._asdict(), seen_at=seen_at)
            pending.pop(row["user_id"], None)
            pending[row["user_id"]] = row
            written += 1
            if len(pending) >= batch:
                flush()
        flush()
        return written

    def drop_snapshot(self, conn: Connection, snapshot_id: str | None, *, shared_before: datetime) -> None:
        """
        Remove one snapshot (``None``: none), the shared ones taken before ``shared_before``,
        and any older than :data:`SNAPSHOT_MAX_AGE` (plans that died).
        """
        t, taken = self.snapshot_t, self.taken_t
        old = sa.select(taken.c.snapshot_id).where(taken.c.taken_at < shared_before)
        gone = [t.c.seen_at < utcnow() - SNAPSHOT_MAX_AGE, t.c.snapshot_id.in_(old)]
        if snapshot_id is not None:
            gone.append(t.c.snapshot_id == snapshot_id)
        conn.execute(sa.delete(t).where(sa.or_(*gone)))
        conn.execute(sa.delete(taken).where(taken.c.taken_at < shared_before))
        conn.commit()

    def mark_taken(self, conn: Connection, snapshot_id: str, *, run: RunRef, users: int) -> None:
        """Record a complete snapshot as shared (the caller wrote and committed its rows)."""
        row = {"snapshot_id": snapshot_id, **run._asdict(), "taken_at": utcnow(), "users": users}
        conn.execute(sa.insert(self.taken_t), [row])
        conn.commit()

    def fresh_snapshot(self, conn: Connection, max_age: timedelta) -> str | None:
        """The latest shared snapshot taken less than ``max_age`` ago (``None``: none, or no tables yet)."""
        taken = self.taken_t
        if not sa.inspect(conn).has_table(taken.name, schema=taken.schema):
            return None
        latest = (
            sa.select(taken.c.snapshot_id)
            .where(taken.c.taken_at >= utcnow() - max_age)
            .order_by(taken.c.taken_at.desc())
            .limit(1)
        )
        found = conn.execute(latest).scalar()
        return None if found is None else str(found)

    # --- ledger reads -------------------------------------------------------------------------

    def queued(self, run: RunRef, account_type: str, channel: str, chunks: tuple[int, int]) -> list[Claim]:
        """
        The users still queued in a range of chunks of a run, in user_id order, each with the
        claim an earlier try left on it, if any (``run`` ``None``: not claimed).
        """
        t = self.ledger_t
        statement = (
            sa.select(t.c.user_id, t.c.claimed_by_dag, t.c.claimed_by, t.c.claimed_at, t.c.uncertain)
            .where(
                of_run(t, run),
                t.c.account_type == str(account_type),
                t.c.channel == str(channel),
                t.c.chunk.between(chunks[0], chunks[1]),
                t.c.state == LedgerState.QUEUED.value,
            )
            .order_by(t.c.user_id)
        )
        with self.connect() as conn:
            return [
                Claim(str(uid), None if by is None else RunRef(dag, by), parse_ts(at), bool(unsure))
                for uid, dag, by, at, unsure in conn.execute(statement)
            ]

    def run_counts(self, run: RunRef) -> dict[tuple[str, str], int]:
        """Ledger rows last touched by a run, counted by (channel, state)."""
        t = self.ledger_t
        statement = (
            sa.select(t.c.channel, t.c.state, sa.func.count())
            .where(of_run(t, run))
            .group_by(t.c.channel, t.c.state)
        )
        with self.connect() as conn:
            return {(channel, state): int(count) for channel, state, count in conn.execute(statement)}

    def uncertain_count(self, run: RunRef) -> int:
        """Rows of a run whose request may have sent a code twice (not rows it only gave up on)."""
        t = self.ledger_t
        statement = sa.select(sa.func.count()).where(
            of_run(t, run), t.c.uncertain == 1, t.c.state != LedgerState.GAVE_UP.value
        )
        with self.connect() as conn:
            return int(conn.execute(statement).scalar_one())

    def run_row(self, run: RunRef) -> dict[str, Any]:
        """The summary row of one run as a dict (empty when missing)."""
        with self.connect() as conn:
            row = conn.execute(sa.select(self.runs_t).where(of_run(self.runs_t, run))).first()
            return {} if row is None else dict(row._mapping)

    def write_run(self, row: dict[str, Any]) -> None:
        """Insert or update the summary row of one run: the columns given (its ``dag_id`` and ``run_id``)."""
        updates = [c for c in row if c not in RunRef._fields]
        with self.connect() as conn:
            conn.execute(self.upsert(self.runs_t, RunRef._fields, updates), [row])
            conn.commit()

    def forget_steps(self, run: RunRef) -> None:
        """Forget which chunk steps of a run finished: its plan ran again, with chunks of its own."""
        with self.connect() as conn:
            conn.execute(sa.delete(self.steps_t).where(of_run(self.steps_t, run)))
            conn.commit()
