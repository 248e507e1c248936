"""
The shapes a plan hands on: its chunk descriptors and its count keys of codes due.

A plan's XCom carries chunk descriptors (:class:`ChunkDescriptor`, built only by
:func:`chunk_descriptor`) and counts; the codes due are counted under ``due_<account type>_<channel>``
keys, built by :func:`due_key` and read back by :func:`due_counts`. Planner, event runs, run
summary, metrics and the DAG factory use these instead of spelling the shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict, cast

from airflow_sfox.onboarding.model import ACCOUNT_TYPES, LEDGER_CHANNELS, AccountType, Channel

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: The prefix of the count keys of codes due.
DUE_PREFIX = "due_"


class ChunkDescriptor(TypedDict):
    """
    One mapped chunk task's work: a range of chunks of one account type, as the plan queued it.

    One ``int`` field per :data:`~airflow_sfox.onboarding.model.LEDGER_CHANNELS` value holds the
    requests due on that channel: registrations, codes (a step with none is skipped, saying why).
    """

    account_type: str
    #: first and last chunk number (``chunk`` of the ledger rows), inclusive
    chunks: list[int]
    #: ``"<account type> <first user>-<last user>"``, users numbered from 1 in the plan's order
    label: str
    users: int
    hold_uncertain: bool
    registration: int
    email: int
    sms: int


def chunk_descriptor(
    account_type: str,
    *,
    chunks: tuple[int, int],
    first_user: int,
    users: int,
    due: Mapping[str, int],
    hold_uncertain: bool,
) -> ChunkDescriptor:
    """
    The descriptor of a range of chunks.

    :param account_type: the account type of every user in it.
    :param chunks: first and last chunk number, inclusive.
    :param first_user: the position of its first user among the account type's due users (from 1).
    :param users: how many users it holds.
    :param due: codes due per channel (missing: none).
    :param hold_uncertain: the run's ``hold_uncertain`` param.
    """
    kind = AccountType(account_type)
    descriptor: dict[str, Any] = {
        "account_type": kind.value,
        "chunks": [chunks[0], chunks[1]],
        "label": f"{kind} {first_user}-{first_user + users - 1}",
        "users": users,
        "hold_uncertain": hold_uncertain,
        **{channel.value: int(due.get(channel.value, 0)) for channel in LEDGER_CHANNELS},
    }
    return cast("ChunkDescriptor", descriptor)  # one int field per channel, as declared


def plan_result(counts: dict[str, Any], chunks: list[ChunkDescriptor]) -> dict[str, Any]:
    """
    What a plan task returns: its counts, every chunk, and each account type's chunks (what its
    mapped group maps over).
    """
    return {
        "counts": counts,
        "chunks": chunks,
        **{
            kind.value: [chunk for chunk in chunks if chunk["account_type"] == kind] for kind in ACCOUNT_TYPES
        },
    }


def codes_due(chunks: Iterable[Mapping[str, Any]], channel: str) -> int:
    """The codes due on one channel over these chunk descriptors."""
    return sum(int(chunk.get(str(channel)) or 0) for chunk in chunks)


def due_key(account_type: str, channel: str) -> str:
    """The count key of the codes due to one account type on one channel: ``due_individual_sms``."""
    return f"{DUE_PREFIX}{AccountType(account_type)}_{Channel(channel)}"


def parse_due_key(key: str) -> tuple[AccountType, Channel] | None:
    """The (account type, channel) of a count key of codes due; ``None`` for any other key."""
    if not key.startswith(DUE_PREFIX):
        return None
    kind, _, channel = key.removeprefix(DUE_PREFIX).rpartition("_")
    try:
        return AccountType(kind), Channel(channel)
    except ValueError:
        return None


def due_counts(counts: Mapping[str, Any]) -> dict[tuple[AccountType, Channel], int]:
    """The codes due in a plan's counts, by (account type, channel), in the model's order, zeros left out."""
    found: dict[tuple[AccountType, Channel], int] = {}
    for key, value in counts.items():
        parsed = parse_due_key(key)
        if parsed is not None and int(value):
            found[parsed] = int(value)
    return {
        (kind, channel): found[(kind, channel)]
        for kind in ACCOUNT_TYPES
        for channel in LEDGER_CHANNELS
        if (kind, channel) in found
    }
