"""Settling a call whatever the ledger can take: its row written, or kept in the journal.

``settle`` and ``free`` are the one entry point a call's holds are let go through (``Holds``
awaits them); they run the backend's ``record`` and ``release`` on its executor.

A row the ledger cannot take (locked past the busy timeout, a full disk, PostgreSQL unreachable)
goes to the journal with every hold it settles; the holds stay, counting against every limit,
until the next write transaction that can take the row writes it and removes them in one go.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from .. import timings
from ..types import LedgerBusy, SpendNotRecorded, plural, usd_str
from .journal import Entry
from .records import LedgerUnavailable, RequestRow, SpareRequest

if TYPE_CHECKING:
    from .base import LedgerBase

__all__ = ["free", "in_thread", "journal_row", "journaled_note", "settle", "why"]

T = TypeVar("T")
log = logging.getLogger("llm_router.ledger")


async def settle(
    led: LedgerBase, row: RequestRow, *, reservation_id: str | None = None, held: Sequence[str] = (),
    spare: SpareRequest | None = None, wait_s: float | None = None,
) -> str | None:
    """Record a call's row (``record``, waiting at most ``wait_s`` for the write lock), then
    free the holds kept for its billed failed attempts (``held``).

    Regression: a row the ledger could not take (locked past the busy timeout, a full disk,
    PostgreSQL unreachable) was lost with its spend, and its hold lapsed. Now it goes to the
    journal, fsynced, with every hold it settles; the holds stay (they count against every
    limit until the row is written), and the next write transaction that can take the row
    writes it and removes the holds in one go. Returns None when the row is in the ledger,
    else a note for the caller saying where the spend waits.

    Raises:
        SpendNotRecorded: a call that cost money whose row neither the ledger nor its journal
            could take (its holds are kept, and this process keeps the row in memory).
        LedgerUnavailable: the ledger cannot be used at all (its file was replaced), and the
            call cost nothing: there is no spend to keep.

    Regression: a paid answer in flight when the ledger file was moved away or replaced was
    withheld (the caller got "was not recorded") and its spend went nowhere. Its row now goes to
    the journal, which is named after the ledger's path: whichever ledger is next opened there
    writes it at its start. The answer is returned with a note; the next call is refused.
    """
    try:
        await led.run_within(wait_s, led.record, row, reservation_id=reservation_id, spare=spare)
    except LedgerUnavailable as e:
        if not row.cost_nusd:
            raise
        return await journal_row(led, row, (reservation_id, *held), e, unavailable=True)
    except Exception as e:  # whatever the storage said: the answer was paid for, keep its row
        return await journal_row(led, row, (reservation_id, *held), e)
    for hold in held:
        await free(led, hold)
    return None


async def free(led: LedgerBase, reservation_id: str, *, wait_s: float | None = None) -> None:
    """Let a hold go (a call that failed or was cancelled), waiting at most ``wait_s`` for the
    ledger (None: ``timings.RELEASE_WAIT_S``, read now). Never fails the call: a release the
    ledger cannot take now goes to the journal, and the hold counts until it is replayed."""
    try:
        await led.run_within(timings.RELEASE_WAIT_S if wait_s is None else wait_s, led.release, reservation_id)
    except LedgerUnavailable:
        return  # the hold is in a file no one counts any more
    except Exception as e:
        log.warning("could not free hold %s now (%s); it goes to the journal", reservation_id, why(e))
        await in_thread(led.journal.append, Entry("release", (reservation_id,)))


async def journal_row(
    led: LedgerBase, row: RequestRow, holds: Sequence[str | None], error: Exception, *, unavailable: bool = False,
) -> str | None:
    """The row goes to the journal, fsynced, with the holds it settles (which stay, counting
    against every limit, until a write transaction replays it). ``unavailable``: ``error`` is a
    ``LedgerUnavailable`` this server will not write past."""
    try:
        return await _journal_row(led, row, holds, error, unavailable=unavailable)
    finally:
        await led._keep_journaled_counted(row, tuple(h for h in holds if h))


async def _journal_row(
    led: LedgerBase, row: RequestRow, holds: Sequence[str | None], error: Exception, *, unavailable: bool,
) -> str | None:
    entry = Entry("row", tuple(h for h in holds if h), row)
    reason = why(error)
    on_disk = await in_thread(led.journal.append, entry)
    cost = usd_str(row.cost_nusd)
    if on_disk and unavailable:
        log.error("request %s (cost $%s) could not be written to the ledger: written to its journal %s. %s",
                  row.id, cost, led.journal.path, error)
        return (f"{error}. Its spend (${cost}) is in the ledger's journal ({led.journal.path}), which the "
                f"next server to open the ledger at {led.location} writes into it first")
    if on_disk:
        log.warning("the ledger could not take the row of request %s (%s, cost $%s): written to its journal %s",
                    row.id, reason, cost, led.journal.path)
        return (f"the ledger could not take this call's row just now ({reason}): its spend (${cost}) is in the "
                f"ledger's journal ({led.journal.path}), counted against every limit, and is written to the "
                "ledger as soon as it can take it")
    log.error("request %s (cost $%s, status %s) is recorded nowhere on disk: the ledger (%s) and its journal "
              "could not take it", row.id, cost, row.status, reason)
    if not row.cost_nusd:
        return None  # a call that cost nothing: no spend to account for
    what = "was answered and cost" if row.status == "ok" else "was billed"
    raise SpendNotRecorded(
        f"this call {what} ${cost}, but its spend is not recorded: the ledger {led.location} "
        f"could not take its row ({reason}) and neither could its journal ({led.journal.path}). This server "
        "keeps the row and the call's holds in memory and writes them at its next successful write; if it "
        f"stops first, add ${cost} (request {row.id}) to your records by hand. Free disk space or fix the "
        "ledger's storage",
        request_id=row.id, cost_nusd=row.cost_nusd,
    )


def journaled_note(calls: int, nusd: int, path: object) -> str | None:
    """The note of a report, resource or command while ``calls`` rows costing ``nusd`` wait in the
    journal at ``path`` (None when none do)."""
    if not calls:
        return None
    one = calls == 1
    if not nusd:  # refusals (a busy ledger, say): their rows wait, but nothing is held for them
        return (f"{plural(calls, 'call')} that cost nothing {'is' if one else 'are'} waiting in the ledger's journal "
                f"({path}): {'its row is' if one else 'their rows are'} written to the ledger at its next write; "
                "no limit counts anything for them")
    return (f"{plural(calls, 'call')} costing ${usd_str(nusd)}{'' if one else ' in all'} "
            f"{'is' if one else 'are'} waiting in the ledger's journal ({path}): the ledger could not take "
            f"{'its row' if one else 'their rows'} yet, so {'it is' if one else 'they are'} not in these figures; "
            f"{'it is' if one else 'they are'} counted against every limit (as held) and will be written to the "
            "ledger at its next write")


def why(error: BaseException) -> str:
    """What a storage error says, in a few words (no traceback)."""
    if isinstance(error, LedgerBusy):
        holder = f" (held by process {error.holder_pid})" if error.holder_pid is not None else ""
        return f"its write lock{holder} stayed out of reach for the {error.waited_s:.1f} s this call could wait"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking step (a journal append: an fsync) off the event loop, not cancellable."""
    with anyio.CancelScope(shield=True):
        result = await anyio.to_thread.run_sync(lambda: fn(*args))
    return result
