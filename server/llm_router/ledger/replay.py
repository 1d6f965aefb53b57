"""The journal replayed inside a write transaction, before the transaction's own statements.

A row (or release) the ledger could not take waits in its journal (``settling``); the next write
transaction of any server that opens the ledger applies it first (``replay_in``, called by each backend's write transaction),
so what the journal holds reaches the ledger in the same commit as that transaction's own work.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import statements
from .statements import Connection

if TYPE_CHECKING:
    from .base import LedgerBase
    from .journal import Taken

__all__ = ["replay_in"]

log = logging.getLogger("llm_router.ledger")


def replay_in(led: LedgerBase, c: Connection) -> Taken | None:
    """Inside a write transaction, before its own statements: apply what waits in the journal
    (the one check on the hot path is ``journal.pending``: a flag, else one ``stat``). Returns
    what was taken, to be finished once the transaction commits or rolls back. An entry that
    would fail every replay is set aside; a replay the storage cannot take yet is rolled back
    alone: the caller's own step may succeed where it fails."""
    journal = led.journal
    if not journal.pending():
        return None
    taken = journal.take()
    if taken is None:
        return None
    rows = statements.RowStatements(led.dialect)
    try:
        with led._savepoint(c):
            for entry in taken.entries:
                try:
                    with led._savepoint(c):
                        rows.apply_journal_entry(c, entry)
                except led._entry_errors as e:  # this entry would fail every replay: set it aside
                    taken.reject(entry, f"{type(e).__name__}: {e}")
    except led._storage_errors as e:
        taken.finish(False)
        if led._connection_lost(c):
            raise
        log.warning("the ledger's journal %s could not be replayed yet: %s", journal.path, e)
        return None
    except BaseException:
        taken.finish(False)
        raise
    led._journal_applied()
    return taken
