"""
The warehouse side of onboarding: the source table, the ledger and the run summary.

Everything goes through a common.sql :class:`DbApiHook`, so any Airflow SQL connection works
in principle; SQLite (the embedded default) and PostgreSQL are the tested dialects. The
ledger and run tables are created when missing.

Ledger: one row per (``user_id``, ``channel``) with the state of that verification, one of
:class:`~airflow_sfox.onboarding.model.LedgerState`.
"""

from __future__ import annotations

import re
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_sfox.defaults import LEDGER_TABLE, RUNS_TABLE
from airflow_sfox.onboarding.model import LedgerState

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow.providers.common.sql.hooks.sql import DbApiHook

#: A table or column name given as a parameter: plain or schema-qualified identifiers only.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
#: Longest user_id the ledger stores; longer ones are rejected by validation anyway.
USER_ID_COLUMN_LENGTH = 255
#: Longest reason stored in a run row (why it failed).
REASON_LENGTH = 500


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

    * ``(account_type, channel, state, user_id)``: the funnel is read from this covering index
      alone (the user_id serves the "sms row without an email row" count).
    * ``(state, updated_at, last_error)``: the reasons and the recent failures read only the
      failed, rejected and not_registered rows, newest first.
    """
    table = check_identifier(ledger_table, "ledger_table")
    prefix = f"ix_{table.replace('.', '_')}"
    return [
        f"CREATE INDEX IF NOT EXISTS {prefix}_funnel ON {table} (account_type, channel, state, user_id)",
        f"CREATE INDEX IF NOT EXISTS {prefix}_state ON {table} (state, updated_at, last_error)",
    ]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class Warehouse:
    """
    The onboarding tables in one warehouse connection.

    :param hook: a common.sql hook of the warehouse connection.
    :param ledger_table: name of the ledger table.
    :param runs_table: name of the run summary table.
    """

    def __init__(
        self, hook: DbApiHook, *, ledger_table: str = LEDGER_TABLE, runs_table: str = RUNS_TABLE
    ) -> None:
        self.hook = hook
        self.ledger = check_identifier(ledger_table, "ledger_table")
        self.runs = check_identifier(runs_table, "runs_table")
        self.dialect = "sqlite" if getattr(hook, "conn_type", "") == "sqlite" else "postgres"
        self.ph = hook.placeholder

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
    def connect(self) -> Iterator[Any]:
        """A DB-API connection, closed on exit; the caller commits."""
        with closing(self.hook.get_conn()) as conn:
            if self.dialect == "sqlite":
                # The planner reads the source on one connection while it writes the ledger on
                # another: WAL lets a reader and a writer work at once.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA busy_timeout=30000")
            yield conn

    def stream(self, conn: Any, sql: str, params: Sequence[Any] = (), batch: int = 2000) -> Iterator[tuple]:
        """
        Yield the rows of a query without holding them all in memory.

        PostgreSQL drivers buffer a whole result unless the cursor is a named (server-side)
        one; SQLite cursors stream as they are.
        """
        cursor = conn.cursor(name="sfox_onboarding_source") if self.dialect == "postgres" else conn.cursor()
        try:
            if self.dialect == "postgres":
                cursor.itersize = batch
            cursor.execute(sql, tuple(params))
            while rows := cursor.fetchmany(batch):
                yield from rows
        finally:
            cursor.close()

    def ts(self, value: datetime | None) -> Any:
        """A timestamp as the dialect stores it (ISO text in SQLite)."""
        if value is None or self.dialect != "sqlite":
            return value
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")

    @staticmethod
    def parse_ts(value: Any) -> datetime | None:
        """A stored timestamp back as an aware datetime."""
        if value is None or value == "":
            return None
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

    # --- schema -------------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the ledger and run tables and their indexes when missing."""
        ts = "TEXT" if self.dialect == "sqlite" else "TIMESTAMP WITH TIME ZONE"
        statements = [
            f"""CREATE TABLE IF NOT EXISTS {self.ledger} (
                user_id VARCHAR({USER_ID_COLUMN_LENGTH}) NOT NULL,
                channel VARCHAR(8) NOT NULL,
                account_type VARCHAR(16),
                state VARCHAR(24) NOT NULL,
                sends INTEGER NOT NULL DEFAULT 0,
                attempts INTEGER NOT NULL DEFAULT 0,
                uncertain INTEGER NOT NULL DEFAULT 0,
                last_status INTEGER,
                last_error VARCHAR(255),
                first_request_at {ts},
                last_request_at {ts},
                last_sent_at {ts},
                run_id VARCHAR(250),
                chunk INTEGER,
                updated_at {ts} NOT NULL,
                PRIMARY KEY (user_id, channel)
            )""",
            f"CREATE INDEX IF NOT EXISTS ix_{self.ledger.replace('.', '_')}_run "
            f"ON {self.ledger} (run_id, account_type, chunk, channel, state)",
            *ledger_indexes(self.ledger),
            f"""CREATE TABLE IF NOT EXISTS {self.runs} (
                run_id VARCHAR(250) PRIMARY KEY,
                dag_id VARCHAR(250),
                dry_run INTEGER NOT NULL DEFAULT 0,
                started_at {ts},
                finished_at {ts},
                source_rows INTEGER,
                planned INTEGER,
                rejected INTEGER,
                sent INTEGER,
                already_verified INTEGER,
                not_registered INTEGER,
                failed INTEGER,
                uncertain INTEGER,
                steps INTEGER,
                steps_done INTEGER,
                requests INTEGER,
                rate_limited INTEGER,
                send_seconds REAL,
                requests_per_second REAL,
                status VARCHAR(16),
                reason VARCHAR({REASON_LENGTH}),
                budget_wait_seconds REAL,
                pause_seconds REAL
            )""",
        ]
        with self.connect() as conn:
            cursor = conn.cursor()
            for statement in statements:
                cursor.execute(statement)
            conn.commit()
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Bring a run table made by an earlier version up to date (columns are only ever added)."""
        present = {c.lower() for c in self.columns_of(self.runs)}
        added = {
            "reason": f"VARCHAR({REASON_LENGTH})",
            "budget_wait_seconds": "REAL",
            "pause_seconds": "REAL",
        }
        missing = [(name, kind) for name, kind in added.items() if name not in present]
        if missing:
            with self.connect() as conn:
                for name, kind in missing:
                    conn.cursor().execute(f"ALTER TABLE {self.runs} ADD COLUMN {name} {kind}")
                conn.commit()

    def columns_of(self, from_item: str) -> list[str]:
        """
        The column names of a table or parenthesised query, read without reading a row.

        :param from_item: a table name or ``(SELECT ...)``, as the planner puts it after FROM.
        """
        with self.connect() as conn:
            cursor = conn.cursor()
            try:
                cursor.execute(f"SELECT * FROM {from_item} src WHERE 1 = 0")
                return [str(d[0]) for d in cursor.description or ()]
            finally:
                cursor.close()

    def has_ledger(self) -> bool:
        """Whether the ledger table exists (a dry run must not create it)."""
        try:
            with self.connect() as conn:
                conn.cursor().execute(f"SELECT 1 FROM {self.ledger} WHERE 1 = 0")
        except Exception:  # noqa: BLE001 - each driver raises its own "no such table"
            return False
        return True

    # --- ledger writes ------------------------------------------------------------------------

    def upsert_plan(self, conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """
        Write planned states: ``(user_id, channel, account_type, state, run_id, chunk, last_error)``.

        Counters and request times of existing rows are kept.
        """
        if not rows:
            return
        ph = self.ph
        now = self.ts(utcnow())
        sql = (
            f"INSERT INTO {self.ledger} (user_id, channel, account_type, state, run_id, chunk, "
            f"last_error, updated_at) VALUES ({', '.join([ph] * 8)}) "
            "ON CONFLICT (user_id, channel) DO UPDATE SET account_type = excluded.account_type, "
            "state = excluded.state, run_id = excluded.run_id, chunk = excluded.chunk, "
            "last_error = excluded.last_error, updated_at = excluded.updated_at"
        )
        cursor = conn.cursor()
        cursor.executemany(sql, [(*row, now) for row in rows])

    def record_outcomes(self, conn: Any, outcomes: Sequence[Outcome]) -> None:
        """Write the outcomes of send requests (one UPDATE per outcome, one commit by the caller)."""
        if not outcomes:
            return
        ph = self.ph
        sql = (
            f"UPDATE {self.ledger} SET state = {ph}, sends = sends + {ph}, attempts = attempts + {ph}, "
            f"uncertain = CASE WHEN {ph} = 1 THEN 1 ELSE uncertain END, last_status = {ph}, "
            f"last_error = {ph}, first_request_at = COALESCE(first_request_at, {ph}), "
            f"last_request_at = {ph}, last_sent_at = COALESCE({ph}, last_sent_at), updated_at = {ph} "
            f"WHERE user_id = {ph} AND channel = {ph}"
        )
        params = []
        for o in outcomes:
            at = self.ts(o.requested_at)
            sent = o.state == LedgerState.SENT
            params.append(
                (
                    str(o.state),
                    1 if sent else 0,
                    o.attempts,
                    1 if o.uncertain else 0,
                    o.status,
                    o.error,
                    at,
                    at,
                    at if sent else None,
                    at,
                    o.user_id,
                    str(o.channel),
                )
            )
        conn.cursor().executemany(sql, params)

    # --- ledger reads -------------------------------------------------------------------------

    def queued(self, run_id: str, account_type: str, channel: str, chunks: tuple[int, int]) -> list[str]:
        """The user_ids still queued in a range of chunks of a run, in order."""
        ph = self.ph
        sql = (
            f"SELECT user_id FROM {self.ledger} WHERE run_id = {ph} AND account_type = {ph} "
            f"AND channel = {ph} AND chunk BETWEEN {ph} AND {ph} AND state = {ph} ORDER BY user_id"
        )
        with self.connect() as conn:
            cursor = conn.cursor()
            args = (run_id, str(account_type), str(channel), chunks[0], chunks[1], LedgerState.QUEUED.value)
            cursor.execute(sql, args)
            return [row[0] for row in cursor.fetchall()]

    def run_counts(self, run_id: str) -> dict[tuple[str, str], int]:
        """Ledger rows last touched by a run, counted by (channel, state)."""
        sql = (
            f"SELECT channel, state, COUNT(*) FROM {self.ledger} WHERE run_id = {self.ph} "
            "GROUP BY channel, state"
        )
        with self.connect() as conn:
            cursor = conn.cursor()
            cursor.execute(sql, (run_id,))
            return {(channel, state): int(count) for channel, state, count in cursor.fetchall()}

    def uncertain_count(self, run_id: str) -> int:
        """Rows of a run whose request may have sent a code twice."""
        sql = f"SELECT COUNT(*) FROM {self.ledger} WHERE run_id = {self.ph} AND uncertain = 1"
        with self.connect() as conn:
            cursor = conn.cursor()
            cursor.execute(sql, (run_id,))
            return int(cursor.fetchone()[0])

    def run_row(self, run_id: str) -> dict[str, Any]:
        """The summary row of one run as a dict (empty when missing)."""
        with self.connect() as conn:
            cursor = conn.cursor()
            cursor.execute(f"SELECT * FROM {self.runs} WHERE run_id = {self.ph}", (run_id,))
            row = cursor.fetchone()
            if row is None:
                return {}
            return dict(zip([d[0] for d in cursor.description], row, strict=True))

    def write_run(self, row: dict[str, Any]) -> None:
        """Insert or replace the summary row of one run."""
        row = {key: self.ts(value) if isinstance(value, datetime) else value for key, value in row.items()}
        columns = list(row)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "run_id")
        sql = (
            f"INSERT INTO {self.runs} ({', '.join(columns)}) VALUES ({', '.join([self.ph] * len(columns))}) "
            f"ON CONFLICT (run_id) DO UPDATE SET {updates}"
        )
        with self.connect() as conn:
            conn.cursor().execute(sql, tuple(row.values()))
            conn.commit()


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
    """

    user_id: str
    channel: str
    state: str
    status: int | None
    error: str | None
    attempts: int
    uncertain: bool
    requested_at: datetime
