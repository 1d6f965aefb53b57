"""What every ledger backend shares: the records it stores, and the upkeep a running server does.

A backend (``sqlite.Ledger``, ``postgres.PostgresLedger``) keeps request rows, per-day rollups,
reservations, budget overrides and events, with the same public methods and the same meaning.
Its methods are synchronous; ``run`` calls them on a worker thread, one at a time per ledger.

Reservations are leases when ``start_upkeep`` runs: each lives ``lease_s`` and the process that
holds it renews it while it runs, up to the call's own time-to-live. A server that dies (killed,
crashed, frozen) stops renewing, so its holds lapse within about ``lease_s`` wherever it ran, and
are reclaimed (logged in ``events``) by whichever server next reserves or tidies up.

A SQLite ledger keeps one *spare* hold between calls for a busy server (``sqlite_spare.py``);
PostgreSQL keeps none. The statements both run are in ``statements.py``, settling whatever the
ledger can take in ``settling.py``, the background upkeep in ``upkeep.py``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from .. import timings
from ..types import LedgerBusy
from . import replay, statements, upkeep
from .dialect import Dialect
from .executor import Executor
from .records import (
    DIMENSIONS,
    GROUPINGS,
    HOST,
    ROW_COLUMNS,
    SUM_COLUMNS,
    WRITER_SCHEMA,
    LedgerStorageError,
    LedgerUnavailable,
    LimitCheck,
    LimitsMoved,
    Overrides,
    RatedRequest,
    RatingRow,
    Refusal,
    RequestRow,
    ScopeKind,
    SpareRequest,
    alive,
    check_grouping,
    check_writer_schema,
    now_iso,
)
from .settling import journaled_note, why
from .statements import DAY_TOTALS_FROM_ROLLUPS, PRUNE_BATCH, Connection

if TYPE_CHECKING:
    from .journal import Journal, Taken

__all__ = [  # the records and statements' names too, where callers have long found them
    "DAY_TOTALS_FROM_ROLLUPS",
    "DIMENSIONS",
    "GROUPINGS",
    "HOST",
    "PRUNE_BATCH",
    "ROW_COLUMNS",
    "SUM_COLUMNS",
    "WRITER_SCHEMA",
    "LedgerBase",
    "LedgerStorageError",
    "LedgerUnavailable",
    "ScopeKind",
    "alive",
    "check_grouping",
    "check_writer_schema",
    "now_iso",
    "LimitCheck",
    "LimitsMoved",
    "Overrides",
    "Refusal",
    "RequestRow",
    "SpareRequest",
    "journaled_note",
]

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("llm_router.ledger")


class ConnectionLock(Protocol):
    """What serialises the use of a backend's one connection (a re-entrant lock)."""

    def __enter__(self) -> object: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /,
    ) -> object: ...


class LedgerBase(ABC):
    """The interface every backend implements, and the upkeep they share."""

    migrations_applied: list[str]
    _lock: ConnectionLock

    journal: Journal
    """Rows (and releases) this ledger could not take yet, replayed by its next write (``journal.py``)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._executor = Executor(self._busy_here)
        self._limiter = self._executor.limiter
        self._wait = self._executor.wait
        """``until``: the monotonic time by which the step running on this thread must have the
        write lock (None: the backend's own timeout). Set by ``run_within`` and upkeep."""
        self._pid = os.getpid()
        self.owner = uuid.uuid4().hex
        """Identifies this open ledger in the reservations it makes (renewed while it is open)."""
        self.lease_s: float | None = None
        self.retain_days: int | None = None
        self._today: Callable[[], date] = lambda: datetime.now(UTC).date()
        self._upkeep: threading.Thread | None = None
        self._stop = threading.Event()

    # -- plumbing -------------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ledger method on the ledger's executor (a worker thread; SQLite runs it inline when
        its connection is free, see ``executor``). Not cancellable: once asked for, the method
        runs and its result reaches the caller (a reservation made is always returned, to be
        settled or released; a row to record is always written). A cancellation takes effect
        at the caller's next checkpoint."""
        return await self._on_thread(None, fn, args, kwargs)

    async def run_within(self, wait_s: float | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``run``, waiting at most ``wait_s`` (None: the backend's own timeout) for this ledger's
        connection and for another process's write lock: a call's deadline bounds its waits.

        Raises:
            LedgerBusy: the wait ran out before ``fn`` could write anything.
        """
        return await self._on_thread(wait_s, fn, args, kwargs)

    async def _on_thread(self, wait_s: float | None, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        return await self._executor.on_thread(wait_s, fn, args, kwargs)

    def _busy_here(self, waited_s: float) -> LedgerBusy:
        """The error of a step that waited its whole time for this server's own connection."""
        return LedgerBusy(
            f"ledger busy: this server's connection to the ledger {self.location} stayed in use by its other "
            f"ledger work (waiting for another process's write lock) for the whole {waited_s:.1f} s this step "
            "could wait. Nothing was reserved or spent; try again in a few seconds",
            retry_after=2.0, waited_s=waited_s,
        )

    def _waiting(self, seconds: float) -> AbstractContextManager[None]:
        """On this thread, wait at most ``seconds`` for each write lock (upkeep's own steps)."""
        return self._executor.waiting(seconds)

    async def _keep_journaled_counted(self, row: RequestRow, holds: Sequence[str]) -> None:
        """After a row went to the journal: what this backend does so its holds keep counting
        everywhere until the row is written (SQLite: nothing; the journal is beside the file)."""
        return None

    def journaled(
        self, *, where: dict[str, str] | None = None, first_day: str | None = None, last_day: str | None = None,
    ) -> tuple[int, int]:
        """(calls, nano-dollars) whose rows wait in the journal, not yet in the ledger's figures
        (their holds are: they count against every limit as reserved); only those ``where`` and the
        days select (``Journal.rows``). When nothing waits this costs one ``os.access``, no read."""
        return self.journal.summary(where=where, first_day=first_day, last_day=last_day)

    def replay_journal(self) -> None:
        """Write what waits in the journal now, if the ledger can take it (a write transaction
        replays the journal before anything else)."""
        return None

    _entry_errors: tuple[type[BaseException], ...] = (ValueError, TypeError)
    """What a journal entry that would fail every replay raises (it is set aside)."""
    _storage_errors: tuple[type[BaseException], ...] = ()
    """What a replay the storage cannot take yet raises (the disk still full, say)."""

    @abstractmethod
    def _savepoint(self, c: Connection) -> AbstractContextManager[object]:
        """A savepoint: rolled back to (and the error raised on) when its block raises."""

    def _connection_lost(self, c: Connection) -> bool:
        return False

    def _journal_applied(self) -> None:
        """After a replay's statements ran (before the transaction commits)."""
        return None

    def _replay_in(self, c: Connection) -> Taken | None:
        """Inside a write transaction, before its own statements: apply what waits in the journal
        (``replay.replay_in``)."""
        return replay.replay_in(self, c)

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the ledger lives, fit to show a person (no password)."""

    def close(self) -> None:
        self.stop_upkeep()
        with self._waiting(timings.UPKEEP_WAIT_S):
            try:
                self.drop_spare()
            except Exception:  # a spare left behind lapses with its lease, like any hold
                log.warning("could not let the spare hold go on close", exc_info=True)
            if self.journal.pending():
                try:
                    self.replay_journal()
                except Exception as e:
                    log.warning("the ledger's journal could not be replayed on close (%s); the next server to "
                                "write to the ledger replays it", why(e))
        self.journal.flush_backlog()
        self._close()

    @abstractmethod
    def _close(self) -> None: ...

    def _expiry(self, now: float, ttl_s: float) -> tuple[float, float]:
        """(expires_at, hard_expires_at) of a reservation made now: a lease while upkeep renews it,
        never past the call's own time-to-live."""
        hard = now + ttl_s
        if self.lease_s is None:
            return hard, hard
        return min(hard, now + self.lease_s), hard

    # -- budgets --------------------------------------------------------------------------------

    @abstractmethod
    def usage(self, check: LimitCheck) -> tuple[int, int]:
        """(spent, reserved) in nano-dollars for a limit's scope and period. Lapsed holds do not count."""

    def usages(self, checks: Sequence[LimitCheck], *, stale_ok_s: float = 0.0) -> list[tuple[int, int]]:
        """``usage`` of several limits, read at one moment. ``stale_ok_s``: figures that old will
        do (another process's latest commits may be missed for that long); routing passes it, a
        reservation never relies on it."""
        return [self.usage(check) for check in checks]

    def limit_figures(self, checks: Sequence[LimitCheck]) -> list[tuple[int, int, tuple[int, int]]]:
        """(spent, reserved, reclaims) of each limit: what a budget's states show (``reclaims``)."""
        return [(*self.usage(check), self.reclaims(check)) for check in checks]

    @abstractmethod
    def reserve(
        self, checks: Sequence[LimitCheck], amount_nusd: int, *, request_id: str, day: str, provider: str, tag: str,
        ttl_s: float, poll: bool = False, limits_version: int | None = None,
    ) -> str | Refusal | LimitsMoved:
        """Atomically: if ``amount_nusd`` fits under every check (with what is spent and held by
        every process sharing the ledger), hold it and return the reservation id; otherwise hold
        nothing and return the first refusal. ``poll``: the caller is waiting for holds to settle
        and asks again; a refusal is then read without the write lock, so waiting calls do not
        queue behind every other process's writes. ``limits_version``: the version ``checks`` were
        built from; when a ``set_budget`` has raised it since, nothing is decided on them and the
        limits in the store are returned (``LimitsMoved``) for the caller to build the checks anew
        (None: ``checks`` are taken as they are)."""

    @abstractmethod
    def release(self, reservation_id: str) -> None:
        """Free a hold (a call that failed or was cancelled). Releasing twice is harmless."""

    @abstractmethod
    def record(self, row: RequestRow, *, reservation_id: str | None = None, spare: SpareRequest | None = None) -> None:
        """Write a request row, its rollup and the release of its reservation in one transaction.
        ``spare``: in the same transaction, keep that much on hold for this process's next call
        if every check allows it and no spare is kept yet (a backend may ignore it)."""

    @property
    def spare_nusd(self) -> int:
        """The spare hold kept for the next call (0 when none)."""
        return 0

    def drop_spare(self, *, idle_s: float = 0.0) -> None:
        """Let the spare hold go (only if it has gone unused for ``idle_s``)."""
        return None

    # -- the one connection ----------------------------------------------------------------------

    dialect: Dialect
    """How this backend spells what the shared statements (``statements.py``) cannot say alike."""

    @abstractmethod
    def _read(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` on the connection, outside any write transaction."""

    @abstractmethod
    def _write(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` in one write transaction (which first replays the journal)."""

    @abstractmethod
    def _now(self, c: Connection) -> float:
        """The time holds are dated by (unix seconds): SQLite's clock, PostgreSQL's server's."""

    def _serialise_holds(self, c: Connection) -> None:
        """Inside a write transaction: order it with every reservation (SQLite's write lock already does)."""
        return None

    def reclaim(self, *, dead_pids: bool = True) -> int:
        """Free holds that lapsed, or (same machine) whose process is gone. Each is logged in events."""
        return self._write(lambda c: statements.reclaim(c, self.dialect, self._now(c), pid=self._pid,
                                                         dead_pids=dead_pids))

    def renew(self) -> int:
        """Extend this ledger's own live holds by another lease. Returns how many."""
        lease = self.lease_s
        if lease is None:
            return 0
        return self._write(lambda c: statements.renew(c, self.dialect, self._now(c), lease_s=lease, owner=self.owner))

    limits_version_seen: int = 0
    """The newest limits version this ledger has read from the store, by the way (in statements it
    runs anyway): a hint that lets routing pick up another process's ``set_budget`` at once. The
    reservation does not rely on it: it checks the version itself."""

    def budget_overrides(self) -> Overrides:
        return self.budget_overrides_at()[1]

    def budget_overrides_at(self) -> tuple[int, Overrides]:
        """(limits version, limits set with ``set_budget``), read at one moment (one statement)."""
        return self._read(self._read_overrides)

    def _read_overrides(self, c: Connection) -> tuple[int, Overrides]:
        version, overrides = statements.read_overrides(c)
        self._saw_limits(version)
        return version, overrides

    def _saw_limits(self, version: int) -> None:
        """Note the limits version just read from the store."""
        if version > self.limits_version_seen:
            self.limits_version_seen = version

    def set_budget(self, scope: str, period: str, limit_nusd: int | None) -> None:
        """Store a limit (None removes it) and raise the limits version in the same transaction,
        ordered with every reservation: one made after this returns is checked against it (see
        ``LimitsMoved``)."""

        def write(c: Connection) -> int:
            self._serialise_holds(c)
            return statements.set_budget(c, self.dialect, scope, period, limit_nusd)

        self._saw_limits(self._write(write))

    def reservations_total(self) -> int:
        return self._read(statements.reservations_total)

    # -- reading --------------------------------------------------------------------------------

    def report(
        self, first_day: str, last_day: str, group_by: str, *, where: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Sums per group over the rollups for days in [first_day, last_day], dearest first."""
        return self._read(lambda c: statements.report(c, self.dialect, first_day, last_day, group_by, where))

    def estimated(self, first_day: str, last_day: str, *, where: dict[str, str] | None = None) -> tuple[int, int]:
        """(calls, nano-dollars) of spend in [first_day, last_day] whose usage was estimated (the
        provider reported none). Read from ``estimated_rollups``, which holds only such calls' per-day
        sums: a few rows a day at most, however many rows the ledger has."""
        return self._read(lambda c: statements.estimated(c, self.dialect, first_day, last_day, where))

    def rows(
        self, *, day: str | None = None, limit: int = 50, request_id: str | None = None, tag: str | None = None,
    ) -> list[dict[str, Any]]:
        """Raw request rows, newest first (ties by insertion order: the dialect's row key). The
        filters are in the query, so a tag's newest rows come however many other tags' are newer."""
        where = {k: v for k, v in (("tag", tag), ("day", day), ("id", request_id)) if v is not None}
        sql = "SELECT * FROM requests" + (" WHERE " + " AND ".join(f"{k} = ?" for k in where) if where else "")
        return self.query(sql + f" ORDER BY ts DESC, {self.dialect.row_key} DESC LIMIT ?", [*where.values(), limit])

    # -- ratings (``rate`` and the judge) ---------------------------------------------------------

    def rated_request(self, request_id: str) -> RatedRequest | None:
        """What a rating needs of request ``request_id``: its tag, task type, model and status
        (None: no such request in the ledger)."""
        return self._read(lambda c: statements.rated_request(c, self.dialect, request_id))

    def put_rating(self, row: RatingRow) -> RatingRow | None:
        """Store ``row``, replacing the request's earlier rating of the same source; return the
        one replaced (None when it is the first), read in the same transaction."""
        return self._write(lambda c: statements.put_rating(c, self.dialect, row))

    def ratings(self, *, since_ts: str | None = None, limit: int = 200_000) -> list[RatingRow]:
        """Ratings oldest first (those from ``since_ts`` on, when given), at most ``limit`` of the
        newest: what the quality estimates are rebuilt from when a server starts.

        Raises:
            InvalidInput: ``limit`` below 0.
        """
        return self._read(lambda c: statements.ratings(c, self.dialect, since_ts, limit))

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """What the ledger itself did (reclaims, prunes, rebuilds), newest first."""
        return self._read(functools.partial(statements.events, d=self.dialect, limit=limit))

    def totals(self) -> dict[str, int]:
        """Sums over the raw rows (the truth), for checks against the rollups."""
        return self._read(statements.totals)

    def rebuild_rollups(self, day_of: Callable[[str], str]) -> None:
        """Recompute ``day`` of every row (after a time-zone change) and the rollups from the rows.
        Days whose rows were pruned keep their rollups: there is nothing left to recompute them from."""

        def rebuild(c: Connection) -> None:
            self._long_transaction(c)
            statements.rebuild_rollups(c, self.dialect, day_of, functools.partial(self._executemany, c))

        self._write(rebuild)

    def _long_transaction(self, c: Connection) -> None:
        """Inside a write transaction that works between its statements (a rebuild): say it is not frozen."""
        return None

    @abstractmethod
    def _executemany(self, c: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None: ...

    def meta(self, key: str) -> str | None:
        return self._read(lambda c: statements.meta(c, self.dialect, key))

    def set_meta(self, key: str, value: str) -> None:
        self._write(lambda c: statements.set_meta(c, self.dialect, key, value))

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one read statement (``?`` placeholders) and return its rows as dicts."""

    def prune(self, before_day: str) -> int:
        """Delete raw rows of days before ``before_day``, keeping their rollups, a batch per
        transaction (reservations never queue long behind it). Returns rows deleted."""
        deleted = 0
        while True:
            n = self._write(functools.partial(statements.prune_batch, d=self.dialect, before_day=before_day,
                                              deleted_before=deleted))
            deleted += n
            if n < PRUNE_BATCH:
                return deleted

    def reclaimed(self, since_ts: str) -> list[dict[str, Any]]:
        """Holds reclaimed since ``since_ts`` (ISO UTC), oldest first: what each held and why."""
        return self._read(lambda c: statements.reclaimed(c, self.dialect, since_ts))

    def reclaims(self, check: LimitCheck) -> tuple[int, int]:
        """(how many, nano-dollars) of holds reclaimed in a limit's scope and period: calls whose
        server died or froze mid-call. Reclaims are rare, so this reads their events directly."""
        since = (date.fromisoformat(check.first_day) - timedelta(days=1)).isoformat()  # ts is UTC, days local
        count = amount = 0
        for r in self.reclaimed(since):
            if not check.first_day <= r.get("day", "") <= check.last_day:
                continue
            if check.scope_kind != "global" and r.get(check.scope_kind) != check.scope_name:
                continue
            count += 1
            amount += int(r.get("amount_nusd") or 0)
        return count, amount

    # -- upkeep ---------------------------------------------------------------------------------

    def tidy(self) -> dict[str, int]:
        """One round of upkeep: reclaim dead or lapsed holds, and prune rows past retention."""
        done = {"reclaimed": self.reclaim()}
        if self.retain_days is not None:
            cutoff = (self._today() - timedelta(days=self.retain_days)).isoformat()
            done["pruned"] = self.prune(cutoff)
        return done

    def start_upkeep(
        self, *, lease_s: float, interval_s: float, retain_days: int | None = None,
        today: Callable[[], date] | None = None,
    ) -> None:
        """Make reservations leases renewed by a background thread, tidy up now and then every
        ``interval_s``. For long-running servers; tests and one-shot commands need not call it."""
        self.lease_s = lease_s
        self.retain_days = retain_days
        if today is not None:
            self._today = today
        self.tidy()
        renew_every = max(min(lease_s / 4, interval_s), 0.05)
        self._upkeep = threading.Thread(
            target=upkeep.loop, args=(self, renew_every, interval_s), name="ledger-upkeep", daemon=True
        )
        self._upkeep.start()

    def stop_upkeep(self) -> None:
        self._stop.set()
        if self._upkeep is not None and self._upkeep is not threading.current_thread():
            self._upkeep.join(timeout=30)
        self._upkeep = None

    def _checkpoint(self) -> None:
        """Backends with a write-ahead log flush it here, off the request path."""
        return None



