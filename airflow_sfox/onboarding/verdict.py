"""
Judging a run: what its outcomes come to against the failure threshold, an outage or a refused
token, and the outcome table its summary logs. Nothing here writes: :mod:`.runs` writes the
run row from what this decides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_sfox.onboarding.counts import due_counts
from airflow_sfox.onboarding.model import FAILED_STATES, LedgerState, RunRef, RunStatus

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_sfox.onboarding.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailureShare:
    """
    The failure threshold's measure of one run's own work::

        (failed + not registered + newly rejected) / (requests planned + newly rejected)

    A user rejected by an earlier run and unchanged since is reported, not counted again; a run
    that attempts nothing cannot fail the threshold.
    """

    failed: int
    new_rejected: int
    attempted: int
    known_rejected: int = 0

    @classmethod
    def of(cls, counts: Mapping[str, Any], *, failed: int) -> FailureShare:
        """From the plan's counts and the run's failed outcomes."""
        attempted = sum(due_counts(counts).values())
        return cls(
            failed=failed,
            new_rejected=int(counts.get("rejected_new", 0)),
            attempted=attempted,
            known_rejected=int(counts.get("rejected_known", 0)),
        )

    @property
    def share(self) -> float:
        judged = self.attempted + self.new_rejected
        return (self.failed + self.new_rejected) / judged if judged else 0.0

    def __str__(self) -> str:
        return (
            f"({self.failed} failed or not registered + {self.new_rejected} newly rejected) / "
            f"({self.attempted} requests planned + {self.new_rejected} newly rejected) = {self.share:.1%}"
        )


#: Services whose outage interrupts a run (see ``ChunkStopped``); ``token``: sFOX refused it.
OUTAGE_SERVICES = ("sfox", "rate budget", "warehouse")


@dataclass(frozen=True)
class Verdict:
    """What a run came to: its status, and why when it is not a success (``problem``)."""

    status: RunStatus
    problem: str | None
    judged: FailureShare
    failed: int


def outcome_table(
    warehouse: Warehouse, run: RunRef, counts: Mapping[str, Any], *, dry_run: bool
) -> dict[tuple[str, str], int]:
    """(channel, outcome) -> users: the ledger's rows of the run, or what a dry run would send."""
    if dry_run:
        table = {
            (str(channel), f"would send ({kind})"): n for (kind, channel), n in due_counts(counts).items()
        }
    else:
        table = warehouse.run_counts(run)
    table = {key: value for key, value in table.items() if key[1] != LedgerState.REJECTED}
    if int(counts["rejected"]):
        table[("-", "rejected")] = int(counts["rejected"])
    return table


def judge(
    table: Mapping[tuple[str, str], int],
    counts: Mapping[str, Any],
    threshold: float,
    *,
    run: Mapping[str, Any],
    stops: Sequence[Mapping[str, Any]],
) -> Verdict:
    """The run's status and problem: an outage, a refused token, unsent work, or the threshold."""
    failed = sum(v for (_, state), v in table.items() if state in FAILED_STATES)
    unsent = sum(v for (_, state), v in table.items() if state == LedgerState.QUEUED)
    unfinished = int(run.get("steps") or 0) - int(run.get("steps_done") or 0)
    judged = FailureShare.of(counts, failed=failed)
    outage = next((stop for stop in stops if stop.get("service") in OUTAGE_SERVICES), None)
    refused = next((stop for stop in stops if stop.get("service") == "token"), None)
    left = f"{unsent} users left queued; they are sent by the next run"
    if outage is not None:
        return Verdict(RunStatus.INTERRUPTED, f"{outage['down']} — {left}", judged, failed)
    if refused is not None:
        return Verdict(RunStatus.AUTH_FAILED, f"sFOX refused the token — {left}", judged, failed)
    if unsent or unfinished:
        problem = f"{unfinished} chunk steps did not finish and {unsent} planned requests were not sent"
        return Verdict(RunStatus.INCOMPLETE, problem, judged, failed)
    if judged.share > threshold:
        problem = f"{judged}, over the failure threshold of {threshold:.1%}"
        return Verdict(RunStatus.FAILED, problem, judged, failed)
    return Verdict(RunStatus.SUCCESS, None, judged, failed)


def log_table(table: Mapping[tuple[str, str], int], *, dry_run: bool) -> None:
    rows = sorted(table.items())
    width = max([len(state) for (_, state), _ in rows] + [7])
    name = max([len(channel) for (channel, _), _ in rows] + [7])
    lines = [f"{'channel':<{name}} {'outcome':<{width}} {'count':>8}", "-" * (width + name + 10)]
    lines += [f"{channel:<{name}} {state:<{width}} {count:>8}" for (channel, state), count in rows]
    # A trailing newline keeps the logger's own suffix off the table's last row.
    log.info("sFOX onboarding %s:\n%s\n", "dry run" if dry_run else "summary", "\n".join(lines))


def summary_of(
    counts: Mapping[str, Any],
    table: Mapping[tuple[str, str], int],
    verdict: Verdict,
    *,
    run: RunRef,
    dry_run: bool,
) -> dict[str, Any]:
    """The run's summary (its XCom and the notifiers' ``sfox_summary``): counts only, no personal data."""
    return {
        "run_id": run.run_id,
        "dag_id": run.dag_id,
        "dry_run": dry_run,
        "source_rows": int(counts["source_rows"]),
        "rejected": int(counts["rejected"]),
        "duplicate_rows": int(counts.get("duplicate_rows") or 0),
        "malformed_ids": int(counts.get("malformed_ids") or 0),
        "failed": verdict.failed,
        "status": verdict.status.value,
        "outcomes": {f"{channel}:{state}": v for (channel, state), v in sorted(table.items())},
        "rejected_reasons": dict(counts.get("rejected_reasons") or {}),
        "problem": verdict.problem,
    }


def log_share(judged: FailureShare, threshold: float) -> None:
    """The threshold's formula with the run's figures, on one line."""
    known = judged.known_rejected
    log.info(
        "Failure share of this run's work: %s (threshold %.1f%%)%s",
        judged,
        threshold * 100,
        f"; {known} users rejected by earlier runs are reported, not judged again" if known else "",
    )
