"""
The figures of the onboarding page, read from the ledger, the attempts table and the run table.

Every query is built with SQLAlchemy Core on the warehouse's own table objects
(:class:`~airflow_sfox.onboarding.warehouse.Warehouse`: ``ledger_t``, ``attempts_t``,
``runs_t``), so the page names no column the tables do not define and writes no SQL text.

Every figure is aggregated by the database: a handful of ``GROUP BY`` queries whose result has
a few dozen rows, whatever the size of the ledger. With the indexes of
:data:`LEDGER_INDEXES` a million-row ledger is summarised in a few hundred milliseconds
(SQLite) and the result holds no personal data: user ids, states, counts and the engine's
short reasons, never an email address or a phone number (the ledger has none).

The figures can be narrowed to one DAG (``dag_id``): its runs, and the ledger rows those runs
touched last (the ledger is shared by every DAG writing to the warehouse; a row records the
run that touched it last, the run table the DAG of each run).

The user lookup and the run view are in :mod:`airflow_sfox.plugins.lookups`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.defaults import DEFAULT_WAREHOUSE_CONN_ID, LEDGER_TABLE, RUNS_TABLE
from airflow_sfox.onboarding.model import (
    ACCOUNT_TYPES,
    CHANNELS,
    DONE_STATES,
    STATE_LABELS,
    VERIFIED_STATES,
    AttemptOutcome,
    Channel,
    LedgerState,
    channels_for,
)
from airflow_sfox.onboarding.schema import USER_ID_COLUMN_LENGTH, check_identifier, ledger_indexes, utcnow
from airflow_sfox.onboarding.warehouse import Warehouse

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.elements import ColumnElement

log = logging.getLogger(__name__)

# The model's vocabulary as plain text: these go to the driver as query parameters and to
# the page as JSON keys.


def _values(states: Iterable[LedgerState]) -> tuple[str, ...]:
    return tuple(sorted(state.value for state in states))


#: Ledger states that mean "the code went out or was not needed": the step is passed.
REQUESTED_STATES = _values(DONE_STATES)
#: Ledger states that mean "sFOX reports the channel verified".
VERIFIED = _values(VERIFIED_STATES)
#: States counted beside the funnel, and how the page marks a non-zero count of each.
SIDE_TONES: dict[LedgerState, str] = {
    LedgerState.QUEUED: "",
    LedgerState.REJECTED: "bad",
    LedgerState.FAILED: "bad",
    LedgerState.NOT_REGISTERED: "warn",
    LedgerState.GAVE_UP: "bad",
    LedgerState.HELD: "warn",
    LedgerState.WAITING: "",
}
SIDE_STATES = tuple(state.value for state in SIDE_TONES)
#: Order of the account types on the page; other values follow, ``None`` (rejected rows) last.
ACCOUNT_TYPE_ORDER = tuple(kind.value for kind in ACCOUNT_TYPES)
#: States listed as recent failures.
FAILURE_STATES = (LedgerState.FAILED.value, LedgerState.NOT_REGISTERED.value, LedgerState.GAVE_UP.value)
#: States whose ``last_error`` is counted as a reason.
REASON_STATES = (LedgerState.REJECTED.value, LedgerState.FAILED.value, LedgerState.GAVE_UP.value)
#: Attempt outcomes whose ``error`` is counted as a run's failure reason: every request that
#: neither sent a code nor found the channel verified.
FAILURE_OUTCOMES = tuple(
    sorted(o.value for o in AttemptOutcome if o not in (AttemptOutcome.SENT, AttemptOutcome.ALREADY_VERIFIED))
)
#: Longest user_id, run_id or dag_id the lookups accept (the ledger's user_id column holds 255).
MAX_KEY_LENGTH = USER_ID_COLUMN_LENGTH
#: Columns the page leaves out: the key a lookup is made by, and the engine's bookkeeping.
HIDDEN_COLUMNS = frozenset(
    {"id", "user_id", "chunk", "claimed_by", "claimed_by_dag", "claimed_at", "fields_hmac"}
)
#: The 0/1 columns, shown as booleans.
FLAG_COLUMNS = ("uncertain", "dry_run")
#: Every ledger state with its label and tone: the page writes states with these, not its own copy.
STATES: list[dict[str, str]] = [
    {"state": state.value, "label": STATE_LABELS[state.value], "tone": SIDE_TONES.get(state, "")}
    for state in LedgerState
]


#: The statements for the default ledger table name.
LEDGER_INDEXES = ledger_indexes()


@dataclass(frozen=True)
class DashboardSettings:
    """
    Where the page reads from and how much it shows.

    :param conn_id: the warehouse connection (any Airflow SQL connection).
    :param ledger_table: name of the ledger table.
    :param runs_table: name of the run table.
    :param runs: how many of the last runs to show.
    :param failures: how many recent failures to show (and a run's held rows).
    :param reasons: how many reasons to show (the summary's, and each list of a run's).
    :param timeline: how many of a user's newest attempts the lookup shows.
    """

    conn_id: str = DEFAULT_WAREHOUSE_CONN_ID
    ledger_table: str = LEDGER_TABLE
    runs_table: str = RUNS_TABLE
    runs: int = 15
    failures: int = 25
    reasons: int = 10
    timeline: int = 200

    def __post_init__(self) -> None:
        check_identifier(self.ledger_table, "ledger_table")
        check_identifier(self.runs_table, "runs_table")
        for name in ("runs", "failures", "reasons", "timeline"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 500:
                raise ValueError(f"{name} must be an integer from 1 to 500, got {value!r}")


def as_int(value: Any) -> int:
    return int(value or 0)


class NotFound(LookupError):
    """The user or run of a lookup is in none of the tables (the message says which)."""


class AmbiguousRun(LookupError):
    """A run_id without its dag_id names runs of several DAGs (run_ids are unique within a DAG only)."""


def check_key(value: str, name: str) -> str:
    """
    A user_id, run_id or dag_id to look up, as given: exact text, any characters but NUL.

    :param value: the text.
    :param name: ``user_id``, ``run_id`` or ``dag_id``, for the message.
    :raises ValueError: empty, longer than :data:`MAX_KEY_LENGTH` or holding a NUL character.
    """
    if not value:
        raise ValueError(f"{name} is required")
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_KEY_LENGTH} characters, got {len(value)}")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain a NUL character")
    return value


def record(row: Any) -> dict[str, Any]:
    """One row as a JSON-ready dict: timestamps as ISO 8601 UTC, 0/1 flags as booleans."""
    record = dict(row._mapping)
    for key, value in record.items():
        if isinstance(value, datetime):
            record[key] = value.astimezone(timezone.utc).isoformat()
    for key in FLAG_COLUMNS:
        if key in record:
            record[key] = bool(record[key])
    return record


def _sort_key(account_type: str | None) -> tuple[int, str]:
    if account_type in ACCOUNT_TYPE_ORDER:
        return (0, f"{ACCOUNT_TYPE_ORDER.index(account_type):03d}")
    return (2, "") if account_type is None else (1, account_type)


def shown_columns(table: sa.Table, present: Iterable[str]) -> list[sa.Column[Any]]:
    """
    The columns of a table the page shows: those the table object defines and the database's
    table has (``present``, its column names), but the hidden ones.
    """
    have = {name.lower() for name in present}
    return [column for column in table.c if column.name in have and column.name not in HIDDEN_COLUMNS]


@dataclass(frozen=True)
class Scope:
    """
    Which rows a figure counts: all (``dag_id`` is ``None``) or those one DAG's runs touched last.

    :param dag_id: the DAG.
    :param exact: how a column is compared to it (:meth:`Dashboard.exact`).
    """

    dag_id: str | None = None
    exact: Callable[[sa.ColumnElement[Any], str], ColumnElement[bool]] | None = None

    def of(self, table: sa.FromClause) -> list[ColumnElement[bool]]:
        """The conditions on a table's ``dag_id`` column (none: every row)."""
        if self.dag_id is None or self.exact is None:
            return []
        return [self.exact(table.c.dag_id, self.dag_id)]


class Dashboard:
    """
    Reads the page's figures from one warehouse.

    :param warehouse: the warehouse, with its ledger and run table names.
    :param settings: how much to show.
    """

    def __init__(self, warehouse: Warehouse, settings: DashboardSettings) -> None:
        self.warehouse = warehouse
        self.settings = settings

    def exact(self, column: sa.ColumnElement[Any], value: str) -> ColumnElement[bool]:
        """
        ``column = value`` as exact text. The plain comparison finds the rows through an index;
        the exact one (:meth:`Warehouse.text_key`) drops those only a collation takes for equal:
        MariaDB/MySQL compare run_id and dag_id columns blind to case and trailing spaces.
        """
        return sa.and_(column == value, self.warehouse.text_key(column) == value)

    def tables(self, conn: Connection) -> dict[str, set[str]]:
        """The column names of each onboarding table that exists, by table name."""
        inspector = sa.inspect(conn)
        w = self.warehouse
        return {
            t.name: {c["name"].lower() for c in inspector.get_columns(t.name, schema=t.schema)}
            for t in (w.ledger_t, w.attempts_t, w.runs_t)
            if inspector.has_table(t.name, schema=t.schema)
        }

    def scope(self, dag_id: str | None) -> Scope:
        """The rows of one DAG's runs (``dag_id``), or of all (``None``)."""
        return Scope(dag_id, self.exact)

    def summary(self, dag_id: str | None = None) -> dict[str, Any]:
        """
        All the figures of the page as one JSON-ready dict.

        :param dag_id: only this DAG's runs, and the ledger rows they touched last.
        """
        started = time.perf_counter()
        w = self.warehouse
        result: dict[str, Any] = {
            "ledger_table": w.ledger,
            "runs_table": w.runs,
            "generated_at": utcnow().isoformat(),
            "dag_id": dag_id,
            "dags": [],
            "channels": [channel.value for channel in CHANNELS],
            "states": STATES,
            "side_states": list(SIDE_STATES),
            "ledger_missing": False,
            "funnel": [],
            "totals": _empty_counts(None),
            "runs": [],
            "reasons": [],
            "recent_failures": [],
        }
        with w.connect() as conn:
            found = self.tables(conn)
            scope = self.scope(dag_id)
            if w.ledger_t.name not in found:
                result["ledger_missing"] = True
            else:
                result["funnel"] = self.funnel(conn, scope)
                result["reasons"] = self.reasons(conn, scope.of(w.ledger_t))
                result["recent_failures"] = self.recent_failures(conn, scope)
                result["totals"] = _totals(result["funnel"])
            if w.runs_t.name in found:
                result["runs"] = self.runs(conn, found[w.runs_t.name], dag_id)
                result["dags"] = self.dags(conn)
            conn.rollback()  # read only: end the transaction PostgreSQL opened
        result["query_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    def funnel(self, conn: Connection, scope: Scope = Scope()) -> list[dict[str, Any]]:
        """Users per step of the funnel, one dict per account type."""
        t = self.warehouse.ledger_t
        groups = conn.execute(
            sa.select(t.c.account_type, t.c.channel, t.c.state, sa.func.count())
            .where(*scope.of(t))
            .group_by(t.c.account_type, t.c.channel, t.c.state)
        ).all()
        counts: dict[str | None, dict[tuple[str, str], int]] = {}
        for account_type, channel, state, count in groups:
            counts.setdefault(account_type, {})[(channel, state)] = as_int(count)
        later = self._later_channel_users(conn, scope)
        rows = []
        for account_type in sorted(counts, key=_sort_key):
            by_state = counts[account_type]
            # A row of an unknown account type (a rejected row) shows every channel.
            due = channels_for(account_type or "") or CHANNELS
            row = _empty_counts(account_type)
            row["channels"] = [channel.value for channel in due]
            row["seen"] = _total(by_state, CHANNELS[0], None) + later.get(account_type, 0)
            for channel in CHANNELS:
                ok = channel in due
                row[f"{channel}_requested"] = _total(by_state, channel, REQUESTED_STATES) if ok else None
                row[f"{channel}_verified"] = _total(by_state, channel, VERIFIED) if ok else None
            row["verified"] = _total(by_state, due[-1], VERIFIED)
            registered = _total(by_state, Channel.REGISTRATION, (LedgerState.REGISTERED.value,))
            # A step of DAGs that register users only (None: this account type never registered).
            registering = any(channel == Channel.REGISTRATION for channel, _ in by_state)
            row["registered"] = registered if registering else None
            for state in SIDE_STATES:
                row[state] = _total(by_state, None, (state,))
            rows.append(row)
        return rows

    def _later_channel_users(self, conn: Connection, scope: Scope) -> dict[str | None, int]:
        """
        Users by account type whose first row is of a later channel: a user has a row per
        channel planned for it, so users = rows of the first channel + rows of each later
        channel without a row of an earlier one (read from the covering funnel index).
        """
        t = self.warehouse.ledger_t
        row, earlier = t.alias("r"), t.alias("e")
        users: dict[str | None, int] = {}
        # A registration row counts a user only until it has a verification row (its email, sent
        # by sFOX with the registration): last in this order.
        order = (*CHANNELS, Channel.REGISTRATION)
        for position, channel in enumerate(order[1:], start=1):
            before = [c.value for c in order[:position]]
            has_earlier = (
                sa.select(sa.literal(1))
                .where(earlier.c.user_id == row.c.user_id, earlier.c.channel.in_(before))
                .exists()
            )
            counted = conn.execute(
                sa.select(row.c.account_type, sa.func.count())
                .where(row.c.channel == channel.value, ~has_earlier, *scope.of(row))
                .group_by(row.c.account_type)
            ).all()
            for account_type, count in counted:
                users[account_type] = users.get(account_type, 0) + as_int(count)
        return users

    def reasons(self, conn: Connection, where: Sequence[ColumnElement[bool]] = ()) -> list[dict[str, Any]]:
        """
        The most frequent ``last_error`` of rejected, failed and gave up rows.

        :param where: only the rows that meet these conditions (one run's, one DAG's).
        """
        t = self.warehouse.ledger_t
        n = sa.func.count().label("n")
        rows = conn.execute(
            sa.select(t.c.state, t.c.last_error, n)
            .where(*where, t.c.state.in_(REASON_STATES))
            .group_by(t.c.state, t.c.last_error)
            .order_by(n.desc(), t.c.state, t.c.last_error)
            .limit(self.settings.reasons)
        ).all()
        return reason_rows("state", rows)

    def recent_failures(self, conn: Connection, scope: Scope = Scope()) -> list[dict[str, Any]]:
        """The newest failed, not_registered and gave_up rows, by user_id (no personal data)."""
        t = self.warehouse.ledger_t
        limit = self.settings.failures
        columns = (
            t.c.user_id,
            t.c.channel,
            t.c.account_type,
            t.c.state,
            t.c.last_status,
            t.c.last_error.label("reason"),
            t.c.attempts,
            t.c.last_request_at,
            t.c.updated_at,
            t.c.dag_id,
            t.c.run_id,
        )
        items: list[dict[str, Any]] = []
        # One query per state: each reads the (state, updated_at) index backwards and stops.
        for state in FAILURE_STATES:
            rows = conn.execute(
                sa.select(*columns)
                .where(t.c.state == state, *scope.of(t))
                .order_by(t.c.updated_at.desc())
                .limit(limit)
            ).all()
            items += [record(row) for row in rows]
        for item in items:
            item["attempts"] = as_int(item["attempts"])
        items.sort(key=lambda item: item["updated_at"] or "", reverse=True)
        return items[:limit]

    def runs(
        self, conn: Connection, present: Iterable[str], dag_id: str | None = None
    ) -> list[dict[str, Any]]:
        """
        The last runs, newest first, from the run table.

        :param present: the run table's column names in the database.
        :param dag_id: only this DAG's runs.
        """
        r = self.warehouse.runs_t
        rows = conn.execute(
            sa.select(*shown_columns(r, present))
            .where(*([self.exact(r.c.dag_id, dag_id)] if dag_id is not None else []))
            .order_by(
                sa.case((r.c.started_at.is_(None), 1), else_=0),
                r.c.started_at.desc(),
                r.c.run_id.desc(),
                r.c.dag_id,
            )
            .limit(self.settings.runs)
        ).all()
        return [run_record(row) for row in rows]

    def dags(self, conn: Connection) -> list[str]:
        """The DAGs the run table has runs of (the page's DAG filter)."""
        r = self.warehouse.runs_t
        found = conn.execute(sa.select(r.c.dag_id).where(r.c.dag_id.is_not(None)).distinct()).scalars()
        return sorted(found)


def run_record(row: Any) -> dict[str, Any]:
    """One row of the run table as the page shows it (with its duration)."""
    run = record(row)
    started, finished = Warehouse.parse_ts(run.get("started_at")), Warehouse.parse_ts(run.get("finished_at"))
    run["duration_seconds"] = round((finished - started).total_seconds(), 1) if started and finished else None
    for key in ("send_seconds", "requests_per_second"):
        run[key] = None if run.get(key) is None else round(float(run[key]), 2)
    return run


def reason_rows(kind: str, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """``(state or outcome, reason, count)`` rows as the page lists reasons."""
    return [
        {kind: what, "reason": reason or "(no reason recorded)", "count": as_int(n)}
        for what, reason, n in rows
    ]


def _total(by_state: dict[tuple[str, str], int], channel: str | None, states: Sequence[str] | None) -> int:
    """Rows of one channel (``None``: any) in any of ``states`` (``None``: any)."""
    return sum(
        n for (c, s), n in by_state.items() if (states is None or s in states) and channel in (None, c)
    )


def _empty_counts(account_type: str | None) -> dict[str, Any]:
    steps = {f"{channel}_{step}": 0 for channel in CHANNELS for step in ("requested", "verified")}
    return {
        "account_type": account_type,
        "seen": 0,
        "registered": None,
        **steps,
        "verified": 0,
        **dict.fromkeys(SIDE_STATES, 0),
    }


def _totals(funnel: list[dict[str, Any]]) -> dict[str, Any]:
    totals = _empty_counts(None)
    for row in funnel:
        for key, value in row.items():
            if key in totals and key != "account_type" and value is not None:
                totals[key] = (totals[key] or 0) + value
    return totals
