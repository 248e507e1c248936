"""
The user lookup and the run view of the onboarding page: one user or one run, read through the
tables' keys and indexes.

The ledger's primary key ``(user_id, channel)`` and its ``(run_id, dag_id, ...)`` index, the
attempts table's ``(user_id, channel, attempted_at)`` and ``(run_id, dag_id, outcome)`` indexes,
the run table's primary key ``(run_id, dag_id)`` (``benchmarks/REPORT.md``, section 6: a
million attempts rows cost about what ten thousand do).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_sfox.onboarding.model import LEDGER_CHANNELS, LedgerState, channels_for, prerequisite
from airflow_sfox.plugins.dashboard import (
    FAILURE_OUTCOMES,
    VERIFIED,
    AmbiguousRun,
    Dashboard,
    NotFound,
    as_int,
    check_key,
    reason_rows,
    record,
    run_record,
    shown_columns,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.elements import ColumnElement


class Lookups(Dashboard):
    """The page's figures (:class:`Dashboard`), one user's rows and one run's view."""

    def _tables_of_lookup(self, conn: Connection) -> dict[str, set[str]]:
        """
        :meth:`tables`, for a lookup.

        :raises NotFound: there is no ledger yet.
        """
        found = self.tables(conn)
        if self.warehouse.ledger_t.name not in found:
            raise NotFound(
                f"No onboarding ledger yet ({self.warehouse.ledger}): the onboarding DAG creates it "
                "on its first run"
            )
        return found

    def user(self, user_id: str) -> dict[str, Any]:
        """
        One user's ledger rows, one per channel due for its account type (a channel not planned
        yet says which channel it waits for), and attempts timeline, newest first, at most
        ``settings.timeline`` attempts (``attempts_total`` counts them all).

        :param user_id: compared as exact text (``'abc'``, ``'abc '`` and ``'ABC'`` are three users).
        :raises NotFound: neither the ledger nor the attempts table knows the user.
        """
        started = time.perf_counter()
        check_key(user_id, "user_id")
        w = self.warehouse
        ledger, attempts_t = w.ledger_t, w.attempts_t
        with w.connect() as conn:
            found = self._tables_of_lookup(conn)
            rows = conn.execute(
                sa.select(*shown_columns(ledger, found[ledger.name]))
                .where(ledger.c.user_id == user_id)
                .order_by(ledger.c.channel)
            ).all()
            attempts: Sequence[Any] = []
            total = 0
            if attempts_t.name in found:
                mine = attempts_t.c.user_id == user_id
                total = as_int(conn.execute(sa.select(sa.func.count()).where(mine)).scalar())
                attempts = conn.execute(
                    sa.select(*shown_columns(attempts_t, found[attempts_t.name]))
                    .where(mine)
                    .order_by(attempts_t.c.attempted_at.desc(), attempts_t.c.id.desc())
                    .limit(self.settings.timeline)
                ).all()
            conn.rollback()  # read only: end the transaction PostgreSQL opened
        if not rows and not total:
            raise NotFound(f"Unknown user_id {user_id!r}: no ledger row and no attempt has it")
        records = [record(row) for row in rows]
        return {
            "user_id": user_id,
            "account_type": _account_type(records),
            "ledger": due_channels(records),
            "attempts": [record(row) for row in attempts],
            "attempts_total": total,
            "attempts_limit": int(self.settings.timeline),
            "query_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def run(self, run_id: str, dag_id: str | None = None) -> dict[str, Any]:
        """
        One run: its row of the run table, its attempts counted by channel and outcome, the
        ledger rows it touched last counted by channel and state, its held rows and its top
        failure reasons (``settings.reasons`` of each: attempts' errors and ledger rows' last errors).

        :param dag_id: the run's DAG (run_ids are unique within a DAG only): its run row must
            name this DAG. ``None``: the one DAG that has a run ``run_id``.
        :raises NotFound: no table knows the run (or the run table has no such run of the DAG).
        :raises AmbiguousRun: ``dag_id`` is ``None`` and runs of several DAGs have this run_id.
        """
        started = time.perf_counter()
        check_key(run_id, "run_id")
        w = self.warehouse
        ledger, runs = w.ledger_t, w.runs_t
        with w.connect() as conn:
            found = self._tables_of_lookup(conn)
            dag = dag_id if dag_id is not None else self._dag_of(conn, found, run_id)
            rows: Sequence[Any] = []
            if runs.name in found and dag is not None:
                rows = conn.execute(
                    sa.select(*shown_columns(runs, found[runs.name])).where(*self._of_run(runs, dag, run_id))
                ).all()
            if dag_id is not None and not rows:
                raise NotFound(f"DAG {dag_id!r} has no onboarding run {run_id!r} in the run table")
            of_run = self._of_run(ledger, dag, run_id)
            states = conn.execute(
                sa.select(ledger.c.channel, ledger.c.state, sa.func.count())
                .where(*of_run)
                .group_by(ledger.c.channel, ledger.c.state)
                .order_by(ledger.c.channel, ledger.c.state)
            ).all()
            held = self._held(conn, of_run)
            ledger_reasons = self.reasons(conn, of_run)
            outcomes, attempt_reasons = (
                self._run_attempts(conn, self._of_run(w.attempts_t, dag, run_id))
                if w.attempts_t.name in found
                else ([], [])
            )
            conn.rollback()  # read only: end the transaction PostgreSQL opened
        if not (rows or states or outcomes):
            raise NotFound(f"Unknown run_id {run_id!r}: the run table, the ledger and the attempts have none")
        return {
            "run_id": run_id,
            "dag_id": dag,
            "run": run_record(rows[0]) if rows else None,
            "outcomes": [
                {"channel": c, "outcome": o, "count": as_int(n), "uncertain": as_int(u)}
                for c, o, n, u in outcomes
            ],
            "ledger": [{"channel": c, "state": state, "count": as_int(n)} for c, state, n in states],
            "held": held,
            "attempt_reasons": reason_rows("outcome", attempt_reasons),
            "ledger_reasons": ledger_reasons,
            "query_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def _of_run(self, table: sa.Table, dag_id: str | None, run_id: str) -> list[ColumnElement[bool]]:
        """The rows of ``table`` that name the run (none when its DAG is unknown: no table has it)."""
        if dag_id is None:
            return [sa.false()]
        return [self.exact(table.c.dag_id, dag_id), self.exact(table.c.run_id, run_id)]

    def _dag_of(self, conn: Connection, found: dict[str, set[str]], run_id: str) -> str | None:
        """
        The DAG of a run asked for by its run_id alone: the one DAG that has a run of that id in
        the run table (read through its key), else in the ledger, else in the attempts (read only
        for a run the run table lacks; ``None``: no table has it).

        :raises AmbiguousRun: several DAGs have a run of that id.
        """
        w = self.warehouse
        for table in (w.runs_t, w.ledger_t, w.attempts_t):
            if table.name not in found:
                continue
            query = sa.select(table.c.dag_id).where(self.exact(table.c.run_id, run_id)).distinct().limit(2)
            dags = [str(dag) for dag in conn.execute(query).scalars() if dag is not None]
            if len(dags) > 1:
                raise AmbiguousRun(
                    f"run_id {run_id!r} names runs of several DAGs ({', '.join(sorted(dags))}, ...): "
                    "give its dag_id too"
                )
            if dags:
                return dags[0]
        return None

    def _held(self, conn: Connection, of_run: Sequence[ColumnElement[bool]]) -> list[dict[str, Any]]:
        """A run's rows held for review (``settings.failures`` of them), by user_id."""
        t = self.warehouse.ledger_t
        rows = conn.execute(
            sa.select(
                t.c.user_id, t.c.channel, t.c.account_type, t.c.last_error.label("reason"), t.c.updated_at
            )
            .where(*of_run, t.c.state == LedgerState.HELD.value)
            .order_by(t.c.user_id, t.c.channel)
            .limit(self.settings.failures)
        ).all()
        return [record(row) for row in rows]

    def _run_attempts(
        self, conn: Connection, of_run: Sequence[ColumnElement[bool]]
    ) -> tuple[Sequence[Any], Sequence[Any]]:
        """A run's attempts by (channel, outcome), and its most frequent errors of failed requests."""
        t = self.warehouse.attempts_t
        outcomes = conn.execute(
            sa.select(t.c.channel, t.c.outcome, sa.func.count(), sa.func.sum(t.c.uncertain))
            .where(*of_run)
            .group_by(t.c.channel, t.c.outcome)
            .order_by(t.c.channel, t.c.outcome)
        ).all()
        n = sa.func.count().label("n")
        reasons = conn.execute(
            sa.select(t.c.outcome, t.c.error, n)
            .where(*of_run, t.c.outcome.in_(FAILURE_OUTCOMES))
            .group_by(t.c.outcome, t.c.error)
            .order_by(n.desc(), t.c.outcome, t.c.error)
            .limit(self.settings.reasons)
        ).all()
        return outcomes, reasons


def _account_type(records: Sequence[dict[str, Any]]) -> str | None:
    """The account type a user's ledger rows agree on (``None``: none, or they disagree)."""
    kinds = {record["account_type"] for record in records}
    return kinds.pop() if len(kinds) == 1 else None


def due_channels(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    A user's ledger rows, and a stand-in (``state`` ``None``) for each channel its account type
    verifies that has no row yet, with the channel it waits for (``waits_for``: the one before
    it, not verified yet; ``None``: nothing to wait for, the next run plans it). In channel order.
    """
    account_type = _account_type(records)
    by_channel = {record["channel"]: {**record, "waits_for": None} for record in records}
    for channel in channels_for(account_type or ""):
        if channel.value in by_channel:
            continue
        before = prerequisite(account_type or "", channel)
        waits = before is not None and by_channel.get(before.value, {}).get("state") not in VERIFIED
        by_channel[channel.value] = {
            "channel": channel.value,
            "account_type": account_type,
            "state": None,
            "waits_for": before.value if before is not None and waits else None,
        }
    order = [channel.value for channel in LEDGER_CHANNELS]  # a registration row first
    return sorted(
        by_channel.values(), key=lambda r: order.index(r["channel"]) if r["channel"] in order else len(order)
    )
