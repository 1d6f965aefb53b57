"""Every timing knob of the server in one place: how long things wait, poll and live.

The modules read them as ``timings.NAME`` when they run, so a test can change one with
``monkeypatch.setattr(timings, "NAME", ...)``. Limits a user sets are in ``config.py``; these are
the ones that are not worth a setting.
"""
# -- Fallback (resilience.py) ---------------------------------------------------------------------

FALLBACK_RESERVE_S = 8.0
"""Time each later model in a chain keeps for itself while an earlier one is tried (or an equal
share of what remains, when that is less): see ``model_window``. The one default of the setting
``[resilience] fallback_reserve_s`` (which is what the engine passes), and of ``model_window`` when
it is given no reserve."""

# -- Provider side questions (providers/base.py) --------------------------------------------------

RETRY_AFTER_CAP_S = 120.0
PROBE_TIMEOUT_S = 3.0
"""A side question to a local server (its window, a token count) never holds a call up longer."""
UNKNOWN_RETRY_S = 60.0
"""A side question that found no answer for a passing reason is asked again after this long."""

# -- A call (engine.py) ---------------------------------------------------------------------------

PROGRESS_INTERVAL_S = 0.1
HOLD_POLL_S = 0.05
SETTLE_MIN_WAIT_S = 0.1
"""The least a row waits for the ledger's write lock, even at the deadline (ordinary contention
between servers takes milliseconds); past that wait it goes to the journal, never lost."""
WINDOW_ASK_S = 0.25
"""How long a routing decision waits for servers to say the windows we only assume; one that has
not said by then (busy, down, or it cannot say) keeps its assumed window and is asked again later."""
WINDOW_REASK_S = (60.0, 3600.0)
"""When a server that did not say its window is asked again: after a minute, then twice as long
each time, up to an hour (an adapter that knows it cannot say answers from memory)."""

# -- Usage estimates (estimates.py) ---------------------------------------------------------------

COUNT_TOKENS_S = 1.0
"""How long an estimate waits for a server's tokenizer before counting characters instead."""

# -- PostgreSQL ledger (ledger/postgres.py) -------------------------------------------------------

PG_IDLE_IN_TRANSACTION_S = 10.0
"""How long one of the ledger's sessions may sit idle inside a transaction before PostgreSQL ends
it (a server frozen mid-transaction: stopped, or its machine asleep), freeing its locks."""
PIN_WAIT_S = 0.5
"""How long pinning a journaled call's holds waits for a lock: the call's own wait is over."""

# -- Ledger holds and upkeep (ledger/base.py) -----------------------------------------------------

SPARE_IDLE_S = 2.0
"""A spare hold unused for this long is let go (and is no longer taken over by a call)."""
UPKEEP_WAIT_S = 1.0
"""How long upkeep (renewals, tidying, letting a spare go) waits for another process's write lock:
it tries again next round, and meanwhile it would hold this server's connection from its calls."""
RELEASE_WAIT_S = 1.0
"""How long freeing a hold waits for the write lock before the release goes to the journal (the
hold then counts a little longer, until the next write replays it: never less than it should)."""

# -- SQLite ledger (ledger/sqlite.py) -------------------------------------------------------------

INLINE_BUSY_MS = 5
USAGE_CACHE_MAX_AGE_S = 1.0
"""How long usage sums read from the file are reused while no other process writes to it."""

# -- Ledger journal (ledger/journal.py) -----------------------------------------------------------

JOURNAL_APPEND_WAIT_S = 5.0
"""How long an append waits for another process's append or replay to let go of the file."""
JOURNAL_REPLAY_WAIT_S = 0.2
"""How long a write transaction waits for the file before it leaves the replay to a later one (it
holds the ledger's write lock meanwhile, so this stays short)."""

# -- Budget figures (budget.py) -------------------------------------------------------------------

OVERRIDE_REFRESH_S = 1.0
"""How often the limits set with ``set_budget`` are read again regardless. Every ``set_budget``
raises the ledger's limits version, which a reservation checks in its own transaction (rebuilding
its checks when it has moved) and routing notices as it reads the figures: so a limit set by this
build takes effect at once. This catches a limit written without raising it (an older build, a
hand edit of the ledger)."""
ROUTING_STALENESS_S = 0.05
"""How old the spend figures routing reads may be: another process's commit may be missed for this
long. The reservation always reads them fresh, under the write lock, so this never lets a limit
be passed."""
