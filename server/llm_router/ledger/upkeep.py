"""What a running server's ledger does in the background: renew its holds, let an idle spare
go, replay the journal, reclaim dead processes' holds and prune old rows."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .. import timings
from ..types import LedgerBusy
from .settling import why

if TYPE_CHECKING:
    from .base import LedgerBase

__all__ = ["loop"]

log = logging.getLogger("llm_router.ledger")


def loop(led: LedgerBase, renew_every: float, interval_s: float) -> None:
    """Until the ledger stops its upkeep: let an idle spare go, and every ``renew_every`` flush
    the write-ahead log, the journal's backlog and renew this ledger's holds; every
    ``interval_s`` tidy up (reclaim, prune)."""
    last_renew = last_tidy = time.monotonic()
    failing_since: float | None = None
    """Since when upkeep's steps have failed (None: the last one that wrote succeeded). What
    fails is said once, and once more when upkeep writes again: a writer frozen for an hour
    used to put a warning in the log every second."""
    while not led._stop.wait(min(renew_every, timings.SPARE_IDLE_S)):
        # Each step waits briefly for another process's write lock: it holds this server's
        # connection meanwhile, and tries again next round anyway.
        wrote = False
        try:
            with led._waiting(timings.UPKEEP_WAIT_S):
                led.drop_spare(idle_s=timings.SPARE_IDLE_S)
                if time.monotonic() - last_renew >= renew_every * 0.99:
                    last_renew = time.monotonic()
                    led._checkpoint()
                    led.journal.flush_backlog()
                    led.renew()  # its transaction replays the journal first
                    wrote = True
                if time.monotonic() - last_tidy >= interval_s:
                    last_tidy = time.monotonic()
                    led.tidy()
                    wrote = True
        except Exception as e:
            if failing_since is None:
                failing_since = time.monotonic()
                if isinstance(e, LedgerBusy):
                    log.warning("ledger upkeep cannot write: %s. It tries again every %.1f s and says so when "
                                "it can write again", e, renew_every)
                else:
                    log.warning("ledger upkeep failed; it tries again every %.1f s and says so when it can "
                                "write again", renew_every, exc_info=True)
            else:
                log.debug("ledger upkeep still cannot write: %s", why(e))
            continue
        if wrote and failing_since is not None:
            log.warning("ledger upkeep can write again, after %.1f s (holds renewed, journal replayed)",
                        time.monotonic() - failing_since)
            failing_since = None
