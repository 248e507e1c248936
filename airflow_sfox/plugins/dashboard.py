"""
The figures of the onboarding page, read from the ledger, the attempts table and the run table.

Every figure is aggregated by the database: a handful of ``GROUP BY`` queries whose result has
a few dozen rows, whatever the size of the ledger. With the indexes of
:data:`LEDGER_INDEXES` a million-row ledger is summarised in a few hundred milliseconds
(SQLite) and the result holds no personal data: user ids, states, counts and the engine's
short reasons, never an email address or a phone number (the ledger has none).

The user lookup (:meth:`Dashboard.user`) and the run view (:meth:`Dashboard.run`) read one
user or one run through the tables' keys and indexes: the ledger's primary key
``(user_id, channel)`` and its ``run_id`` index, the attempts table's ``(user_id, channel,
attempted_at)`` and ``(run_id, outcome)`` indexes, the run table's primary key
(``benchmarks/REPORT.md``, section 6: a million attempts rows cost about what ten thousand do).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.defaults import DEFAULT_WAREHOUSE_CONN_ID
from airflow_sfox.onboarding.model import (
    ACCOUNT_TYPES,
    CHANNELS,
    DONE_STATES,
    VERIFIED_STATES,
    AttemptOutcome,
    LedgerState,
    channels_for,
)
from airflow_sfox.onboarding.warehouse import (
    LEDGER_TABLE,
    RUNS_TABLE,
    USER_ID_COLUMN_LENGTH,
    Warehouse,
    check_identifier,
    ledger_indexes,
    newer_run_columns,
    utcnow,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

# The model's vocabulary as plain text: these go to the driver as query parameters and to
# the page as JSON keys.


def _values(states: Iterable[LedgerState]) -> tuple[str, ...]:
    return tuple(sorted(state.value for state in states))


#: Ledger states that mean "the code went out or was not needed": the step is passed.
REQUESTED_STATES = _values(DONE_STATES)
#: Ledger states that mean "sFOX reports the channel verified".
VERIFIED = _values(VERIFIED_STATES)
#: States counted beside the funnel.
SIDE_STATES = tuple(
    s.value
    for s in (
        LedgerState.QUEUED,
        LedgerState.REJECTED,
        LedgerState.FAILED,
        LedgerState.NOT_REGISTERED,
        LedgerState.GAVE_UP,
        LedgerState.HELD,
    )
)
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
#: Longest user_id or run_id the lookups accept (the ledger's user_id column holds 255).
MAX_KEY_LENGTH = USER_ID_COLUMN_LENGTH
#: The run table's columns the page shows (newer ones are added when the table has them).
RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "dag_id",
    "dry_run",
    "started_at",
    "finished_at",
    "source_rows",
    "planned",
    "rejected",
    "sent",
    "already_verified",
    "not_registered",
    "failed",
    "uncertain",
    "requests",
    "rate_limited",
    "send_seconds",
    "requests_per_second",
    "status",
)
#: A user's ledger columns the lookup shows (``failures``: when the ledger has it).
USER_LEDGER_COLUMNS: tuple[str, ...] = (
    "channel",
    "account_type",
    "state",
    "sends",
    "attempts",
    "uncertain",
    "last_status",
    "last_error",
    "first_request_at",
    "last_request_at",
    "last_sent_at",
    "updated_at",
    "run_id",
)
#: A timeline entry's columns of the attempts table.
ATTEMPT_COLUMNS: tuple[str, ...] = (
    "attempted_at",
    "channel",
    "run_id",
    "attempt",
    "status",
    "outcome",
    "uncertain",
    "error",
)
#: Columns of these tables that hold a timestamp (returned as ISO 8601 UTC text).
_TIMESTAMPS = frozenset(
    (
        "started_at",
        "finished_at",
        "first_request_at",
        "last_request_at",
        "last_sent_at",
        "updated_at",
        "attempted_at",
    )
)


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
    :param failures: how many recent failures to show.
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


def _iso(value: Any) -> str | None:
    """A stored timestamp as ISO 8601 text in UTC (``None`` stays ``None``)."""
    parsed = Warehouse.parse_ts(value)
    return parsed.isoformat() if parsed else None


def _int(value: Any) -> int:
    return int(value or 0)


class NotFound(LookupError):
    """The user or run of a lookup is in none of the tables (the message says which)."""


def check_key(value: str, name: str) -> str:
    """
    A user_id or run_id to look up, as given: exact text, any characters but NUL.

    :param value: the text.
    :param name: ``user_id`` or ``run_id``, for the message.
    :raises ValueError: empty, longer than :data:`MAX_KEY_LENGTH` or holding a NUL character.
    """
    if not value:
        raise ValueError(f"{name} is required")
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_KEY_LENGTH} characters, got {len(value)}")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain a NUL character")
    return value


def _record(columns: Sequence[str], row: Sequence[Any], flags: Sequence[str] = ()) -> dict[str, Any]:
    """
    One row as a JSON-ready dict: timestamps as ISO 8601 UTC.

    :param flags: the 0/1 columns, returned as booleans.
    """
    record = dict(zip(columns, row, strict=True))
    for key in _TIMESTAMPS.intersection(record):
        record[key] = _iso(record[key])
    for key in flags:
        record[key] = bool(record[key])
    return record


def _sort_key(account_type: str | None) -> tuple[int, str]:
    if account_type in ACCOUNT_TYPE_ORDER:
        return (0, f"{ACCOUNT_TYPE_ORDER.index(account_type):03d}")
    return (2, "") if account_type is None else (1, account_type)


class Dashboard:
    """
    Reads the page's figures from one warehouse.

    :param warehouse: the warehouse, with its ledger and run table names.
    :param settings: how much to show.
    """

    def __init__(self, warehouse: Warehouse, settings: DashboardSettings) -> None:
        self.warehouse = warehouse
        self.settings = settings

    def _query(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Raw SQL with the driver's placeholders on a connection of ``Warehouse.connect()``."""
        return [tuple(row) for row in conn.exec_driver_sql(sql, tuple(params)).fetchall()]

    def _in(self, values: Sequence[str]) -> str:
        return ", ".join([self.warehouse.ph] * len(values))

    def summary(self) -> dict[str, Any]:
        """All the figures of the page as one JSON-ready dict."""
        started = time.perf_counter()
        result: dict[str, Any] = {
            "ledger_table": self.warehouse.ledger,
            "runs_table": self.warehouse.runs,
            "generated_at": utcnow().isoformat(),
            "ledger_missing": False,
            "funnel": [],
            "totals": _empty_counts(None),
            "runs": [],
            "reasons": [],
            "recent_failures": [],
        }
        if not self.warehouse.has_ledger():
            result["ledger_missing"] = True
        else:
            with self.warehouse.connect() as conn:
                result["funnel"] = self.funnel(conn)
                result["reasons"] = self.reasons(conn)
                result["recent_failures"] = self.recent_failures(conn)
                result["runs"] = self.runs(conn)
                conn.rollback()  # read only: end the transaction PostgreSQL opened
            result["totals"] = _totals(result["funnel"])
        result["query_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    def funnel(self, conn: Any) -> list[dict[str, Any]]:
        """Users per step of the funnel, one dict per account type."""
        ledger = self.warehouse.ledger
        groups = self._query(
            conn,
            f"SELECT account_type, channel, state, COUNT(*) FROM {ledger} "  # noqa: S608
            "GROUP BY account_type, channel, state",
        )
        # A user has an email row, an sms row or both: seen = email rows + sms rows without one.
        sms_only = self._query(
            conn,
            f"SELECT s.account_type, COUNT(*) FROM {ledger} s WHERE s.channel = 'sms' "  # noqa: S608
            f"AND NOT EXISTS (SELECT 1 FROM {ledger} e WHERE e.user_id = s.user_id "
            "AND e.channel = 'email') GROUP BY s.account_type",
        )
        counts: dict[str | None, dict[tuple[str, str], int]] = {}
        for account_type, channel, state, count in groups:
            counts.setdefault(account_type, {})[(channel, state)] = _int(count)
        extra_users = {account_type: _int(count) for account_type, count in sms_only}
        rows = []
        for account_type in sorted(counts, key=_sort_key):
            by_state = counts[account_type]
            # A row of an unknown account type (a rejected row) shows every channel.
            channels = channels_for(account_type or "") or CHANNELS
            row = _empty_counts(account_type)
            row["channels"] = [channel.value for channel in channels]
            row["seen"] = sum(n for (c, _), n in by_state.items() if c == "email") + extra_users.get(
                account_type, 0
            )
            row["email_requested"] = _total(by_state, "email", REQUESTED_STATES)
            row["email_verified"] = _total(by_state, "email", VERIFIED)
            if "sms" in channels:
                row["sms_requested"] = _total(by_state, "sms", REQUESTED_STATES)
                row["sms_verified"] = _total(by_state, "sms", VERIFIED)
            else:
                row["sms_requested"] = None
                row["sms_verified"] = None
            row["verified"] = _total(by_state, channels[-1], VERIFIED)
            for state in SIDE_STATES:
                row[state] = _total(by_state, None, (state,))
            rows.append(row)
        return rows

    def reasons(self, conn: Any, run_id: str | None = None) -> list[dict[str, Any]]:
        """
        The most frequent ``last_error`` of rejected, failed and gave up rows.

        :param run_id: only the rows this run touched last (read through the ledger's run index).
        """
        of_run, params = self._run_is(conn, run_id) if run_id is not None else ("", ())
        rows = self._query(
            conn,
            f"SELECT state, last_error, COUNT(*) AS n FROM {self.warehouse.ledger} "  # noqa: S608
            f"WHERE {of_run + ' AND ' if of_run else ''}state IN ({self._in(REASON_STATES)}) "
            "GROUP BY state, last_error ORDER BY n DESC, state, last_error "
            f"LIMIT {int(self.settings.reasons)}",
            params + REASON_STATES,
        )
        return _reasons("state", rows)

    def recent_failures(self, conn: Any) -> list[dict[str, Any]]:
        """The newest failed, not_registered and gave_up rows, by user_id (no personal data)."""
        limit = int(self.settings.failures)
        rows: list[tuple[Any, ...]] = []
        # One query per state: each reads the (state, updated_at) index backwards and stops.
        for state in FAILURE_STATES:
            rows += self._query(
                conn,
                "SELECT user_id, channel, account_type, state, last_status, last_error, attempts, "  # noqa: S608
                f"last_request_at, updated_at, run_id FROM {self.warehouse.ledger} "
                f"WHERE state = {self.warehouse.ph} ORDER BY updated_at DESC LIMIT {limit}",
                (state,),
            )
        items = [
            {
                "user_id": user_id,
                "channel": channel,
                "account_type": account_type,
                "state": state,
                "last_status": last_status,
                "reason": last_error,
                "attempts": _int(attempts),
                "last_request_at": _iso(last_request_at),
                "updated_at": _iso(updated_at),
                "run_id": run_id,
            }
            for (
                user_id,
                channel,
                account_type,
                state,
                last_status,
                last_error,
                attempts,
                last_request_at,
                updated_at,
                run_id,
            ) in rows
        ]
        items.sort(key=lambda item: item["updated_at"] or "", reverse=True)
        return items[:limit]

    def runs(self, conn: Any) -> list[dict[str, Any]]:
        """The last runs, newest first, from the run table (empty when it is missing)."""
        columns = _run_columns(self.warehouse.columns_of(self.warehouse.runs))
        rows = self._query(
            conn,
            f"SELECT {', '.join(columns)} FROM {self.warehouse.runs} "  # noqa: S608
            "ORDER BY CASE WHEN started_at IS NULL THEN 1 ELSE 0 END, started_at DESC, run_id DESC "
            f"LIMIT {int(self.settings.runs)}",
        )
        return [_run(columns, row) for row in rows]

    # --- one user, one run ---------------------------------------------------------------------

    def _run_is(self, conn: Any, run_id: str) -> tuple[str, tuple[str, str]]:
        """
        ``run_id = <run_id>`` as exact text, and its parameters. The plain comparison finds the
        rows through an index; the exact one (:meth:`Warehouse.text_key`) drops those only a
        collation takes for equal: MariaDB/MySQL compare run_id columns blind to case and
        trailing spaces (user_id columns are exact on every database already).

        :param conn: the connection (its dialect knows the server: MariaDB or MySQL).
        """
        exact = self.warehouse.text_key(sa.literal_column("run_id")).compile(dialect=conn.dialect)
        return f"run_id = {self.warehouse.ph} AND {exact} = {self.warehouse.ph}", (run_id, run_id)

    def _columns(self, conn: Any, *tables: sa.Table) -> dict[str, set[str]]:
        """
        The columns of each of these tables that exists, by table name (one connection: a new
        one costs more than these catalog reads on a server database).

        :raises NotFound: there is no ledger yet.
        """
        inspector = sa.inspect(conn)
        found = {
            t.name: {c["name"].lower() for c in inspector.get_columns(t.name, schema=t.schema)}
            for t in tables
            if inspector.has_table(t.name, schema=t.schema)
        }
        if self.warehouse.ledger_t.name not in found:
            raise NotFound(
                f"No onboarding ledger yet ({self.warehouse.ledger}): the onboarding DAG creates it "
                "on its first run"
            )
        return found

    def user(self, user_id: str) -> dict[str, Any]:
        """
        One user's ledger rows (one per channel) and attempts timeline, newest first, at most
        ``settings.timeline`` attempts (``attempts_total`` counts them all).

        :param user_id: compared as exact text (``'abc'``, ``'abc '`` and ``'ABC'`` are three users).
        :raises NotFound: neither the ledger nor the attempts table knows the user.
        """
        started = time.perf_counter()
        key = (check_key(user_id, "user_id"),)
        w = self.warehouse
        with w.connect() as conn:
            found = self._columns(conn, w.ledger_t, w.attempts_t)
            # ``failures`` came with a later version: an older ledger gets it on its next run.
            columns = USER_LEDGER_COLUMNS + (("failures",) if "failures" in found[w.ledger_t.name] else ())
            ledger = self._query(
                conn,
                f"SELECT {', '.join(columns)} FROM {self.warehouse.ledger} "  # noqa: S608
                f"WHERE user_id = {self.warehouse.ph} ORDER BY channel",
                key,
            )
            attempts: list[tuple[Any, ...]] = []
            total = 0
            if w.attempts_t.name in found:
                where = f"FROM {self.warehouse.attempts} WHERE user_id = {self.warehouse.ph}"
                total = _int(self._query(conn, f"SELECT COUNT(*) {where}", key)[0][0])
                attempts = self._query(
                    conn,
                    f"SELECT {', '.join(ATTEMPT_COLUMNS)} {where} "
                    f"ORDER BY attempted_at DESC, id DESC LIMIT {int(self.settings.timeline)}",
                    key,
                )
            conn.rollback()  # read only: end the transaction PostgreSQL opened
        if not ledger and not total:
            raise NotFound(f"Unknown user_id {user_id!r}: no ledger row and no attempt has it")
        return {
            "user_id": user_id,
            "ledger": [_record(columns, row, flags=("uncertain",)) for row in ledger],
            "attempts": [_record(ATTEMPT_COLUMNS, row, flags=("uncertain",)) for row in attempts],
            "attempts_total": total,
            "attempts_limit": int(self.settings.timeline),
            "query_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def run(self, run_id: str) -> dict[str, Any]:
        """
        One run: its row of the run table, its attempts counted by channel and outcome, the
        ledger rows it touched last counted by channel and state, and its top failure reasons
        (``settings.reasons`` of each: attempts' errors and ledger rows' last errors).

        :raises NotFound: no table knows the run.
        """
        started = time.perf_counter()
        check_key(run_id, "run_id")
        w = self.warehouse
        with w.connect() as conn:
            of_run, key = self._run_is(conn, run_id)
            found = self._columns(conn, w.ledger_t, w.attempts_t, w.runs_t)
            run_columns = _run_columns(found.get(w.runs_t.name, ()))
            rows = (
                self._query(
                    conn,
                    f"SELECT {', '.join(run_columns)} FROM {w.runs} WHERE {of_run}",  # noqa: S608
                    key,
                )
                if w.runs_t.name in found
                else []
            )
            states = self._query(
                conn,
                f"SELECT channel, state, COUNT(*) FROM {w.ledger} WHERE {of_run} "  # noqa: S608
                "GROUP BY channel, state ORDER BY channel, state",
                key,
            )
            ledger_reasons = self.reasons(conn, run_id)
            outcomes, attempt_reasons = (
                self._run_attempts(conn, of_run, key) if w.attempts_t.name in found else ([], [])
            )
            conn.rollback()  # read only: end the transaction PostgreSQL opened
        if not (rows or states or outcomes):
            raise NotFound(f"Unknown run_id {run_id!r}: the run table, the ledger and the attempts have none")
        return {
            "run_id": run_id,
            "run": _run(run_columns, rows[0]) if rows else None,
            "outcomes": [
                {"channel": c, "outcome": o, "count": _int(n), "uncertain": _int(u)}
                for c, o, n, u in outcomes
            ],
            "ledger": [{"channel": c, "state": state, "count": _int(n)} for c, state, n in states],
            "attempt_reasons": _reasons("outcome", attempt_reasons),
            "ledger_reasons": ledger_reasons,
            "query_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def _run_attempts(
        self, conn: Any, of_run: str, key: tuple[str, ...]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """A run's attempts by (channel, outcome), and its most frequent errors of failed requests."""
        attempts = self.warehouse.attempts
        outcomes = self._query(
            conn,
            f"SELECT channel, outcome, COUNT(*), SUM(uncertain) FROM {attempts} "  # noqa: S608
            f"WHERE {of_run} GROUP BY channel, outcome ORDER BY channel, outcome",
            key,
        )
        reasons = self._query(
            conn,
            f"SELECT outcome, error, COUNT(*) AS n FROM {attempts} WHERE {of_run} "  # noqa: S608
            f"AND outcome IN ({self._in(FAILURE_OUTCOMES)}) GROUP BY outcome, error "
            f"ORDER BY n DESC, outcome, error LIMIT {int(self.settings.reasons)}",
            key + FAILURE_OUTCOMES,
        )
        return outcomes, reasons


def _run_columns(present: Iterable[str]) -> tuple[str, ...]:
    """:data:`RUN_COLUMNS`, and the newer ones a run table made by an earlier version may lack."""
    have = {c.lower() for c in present}
    return RUN_COLUMNS + tuple(c.name for c in newer_run_columns() if c.name in have)


def _run(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """One row of the run table as the page shows it (with its duration)."""
    run = _record(columns, row, flags=("dry_run",))
    for newer in newer_run_columns():
        run.setdefault(newer.name, None)
    started, finished = Warehouse.parse_ts(run["started_at"]), Warehouse.parse_ts(run["finished_at"])
    run["duration_seconds"] = round((finished - started).total_seconds(), 1) if started and finished else None
    for key in ("send_seconds", "requests_per_second"):
        run[key] = None if run[key] is None else round(float(run[key]), 2)
    return run


def _reasons(kind: str, rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """``(state or outcome, reason, count)`` rows as the page lists reasons."""
    return [
        {kind: what, "reason": reason or "(no reason recorded)", "count": _int(n)} for what, reason, n in rows
    ]


def _total(by_state: dict[tuple[str, str], int], channel: str | None, states: Sequence[str]) -> int:
    """Rows of one channel (``None``: any) in any of ``states``."""
    return sum(n for (c, s), n in by_state.items() if s in states and channel in (None, c))


def _empty_counts(account_type: str | None) -> dict[str, Any]:
    return {
        "account_type": account_type,
        "seen": 0,
        "email_requested": 0,
        "email_verified": 0,
        "sms_requested": 0,
        "sms_verified": 0,
        "verified": 0,
        **dict.fromkeys(SIDE_STATES, 0),
    }


def _totals(funnel: list[dict[str, Any]]) -> dict[str, Any]:
    totals = _empty_counts(None)
    for row in funnel:
        for key, value in row.items():
            if key in totals and key != "account_type" and value is not None:
                totals[key] += value
    return totals


class TTLCache:
    """
    Remembers the last summary for a few seconds, so many open pages cost one set of queries.

    :param seconds: how long a summary is served again; 0 turns the cache off.
    :param clock: the monotonic clock (tests replace it).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Any, tuple[float, dict[str, Any]]] = {}

    def get(self, key: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The cached value of ``key``, or ``compute()`` (one computation at a time)."""
        if self.seconds <= 0:
            return compute()
        with self._lock:
            entry = self._entries.get(key)
            if entry and self.clock() < entry[0]:
                return entry[1]
            value = compute()
            self._entries = {key: (self.clock() + self.seconds, value)}
            return value
