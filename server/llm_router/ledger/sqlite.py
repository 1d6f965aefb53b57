"""The SQLite ledger: request rows, per-day rollups, reservations and budget overrides, in one file.

Every write that must be atomic is one ``BEGIN IMMEDIATE`` transaction (the file's write lock,
waited for up to ``busy_timeout_s``), so several server processes on one machine can share the
file and see each other's spend at once: check-and-reserve (sums of spend and of live holds
compared with each limit, then the insert), settle (the reservation deleted, the row inserted,
the rollup updated) and release.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from .. import timings
from ..types import LedgerBusy, usd_str
from . import statements
from .base import LedgerBase, log
from .dialect import SQLITE
from .journal import Journal, Taken
from .records import (
    GROUPINGS,
    HOST,
    LedgerUnavailable,
    LimitCheck,
    LimitsMoved,
    Refusal,
    RequestRow,
    SpareRequest,
    check_writer_schema,
)
from .schema import LEDGER_ID_KEY, WRITER_SCHEMA_KEY, migrate_connection
from .settling import why
from .sqlite_file import FileIdentity
from .sqlite_locking import BusyLock, Transaction, busy_error, use_wal
from .sqlite_reads import LAPSES_AND_LIMITS, READ_LIMITS_VERSION, USAGE_SQL
from .sqlite_spare import Spare, SpareHolds
from .statements import INSERT_RESERVATION, Connection, RowStatements
from .usage_cache import UsageCache

__all__ = ["GROUPINGS", "Ledger", "LimitCheck", "Refusal", "RequestRow"]

_ROW_SQL = RowStatements(SQLITE)
_INSERT_RESERVATION = SQLITE.sql(INSERT_RESERVATION)
P = ParamSpec("P")
T = TypeVar("T")


def _random_id() -> str:
    return os.urandom(16).hex()


class Ledger(FileIdentity, SpareHolds, LedgerBase):
    """One open ledger file. Thread-safe; all statements serialised on one connection."""

    dialect = SQLITE
    _lock: BusyLock
    _entry_errors = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError,
                     ValueError, TypeError)
    _storage_errors = (sqlite3.Error,)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = _random_id,
        journal_path: str | os.PathLike[str] | None = None,
    ) -> None:
        """``clock`` (unix seconds) dates holds, their lapse, a spare's idleness and the usage
        cache's age; ``new_id`` names each reservation. Tests pass their own to run the same steps
        whatever the machine's speed. ``journal_path``: where rows the file cannot take wait
        (default: beside it, ``ledger.db.journal``, where every server sharing the file finds it)."""
        super().__init__()
        memory = str(path) == ":memory:"
        self.journal = Journal(None if memory else Path(journal_path or f"{path}.journal"))
        self._unwritable_since: float | None = None
        """Monotonic time since when this server has found the file's write lock out of reach
        (None: its last write transaction began)."""
        self._clock = clock
        self._new_id = new_id
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s, cached_statements=256
        )
        self._lock = BusyLock(self._conn, full_ms=int(busy_timeout_s * 1000), wait=self._wait, busy=self._busy_here)
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._usage_cache = UsageCache()
        self._next_lapse = -math.inf
        self._lapse_version: int | None = None
        """No hold in the file lapses before ``_next_lapse``, as long as no other connection has
        written since (``PRAGMA data_version`` still ``_lapse_version``): until then a reservation
        need not look for lapsed holds to reclaim."""
        self._own_holds: dict[str, tuple[int, str, str, str]] = {}
        """This process's live holds: id -> (amount, day, provider, tag), to keep the cache exact."""
        self._spare: Spare | None = None
        self._identity: tuple[int, int] | None = None
        """(device, inode) of the file at open (None in memory): see ``_check_file``."""
        self._gone: LedgerUnavailable | None = None
        """Set once the file at ``path`` is found not to be the one open, or its writer schema newer
        than this build's: every write refuses."""
        self._stat_path = os.path.abspath(path)
        self._writer_schema: str | None = None
        self._ledger_id: str | None = None
        """The writer schema and id (``schema.name_the_ledger``) of the ledger opened: see ``_saw_meta``."""
        try:
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            use_wal(self._conn, busy_timeout_s)
            self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
            self._conn.execute("PRAGMA foreign_keys=ON")
            self.migrations_applied = migrate_connection(self._conn)
            self._writer_schema = statements.meta(self._conn, SQLITE, WRITER_SCHEMA_KEY)
            check_writer_schema(self._writer_schema, str(self.path))
            self._ledger_id = statements.meta(self._conn, SQLITE, LEDGER_ID_KEY)
            if str(path) != ":memory:":
                st = os.stat(self._stat_path)
                self._identity = (st.st_dev, st.st_ino)
        except BaseException:
            self._conn.close()
            raise
        self.journal.keep_room()
        if self.journal.pending():  # left by a server that could not write (and may have died since)
            with self._waiting(timings.UPKEEP_WAIT_S):
                try:
                    self.replay_journal()
                except (sqlite3.Error, LedgerBusy) as e:
                    log.warning("the ledger's journal %s waits: %s", self.journal.path, why(e))

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def db(self) -> Any:
        """The file as a ``sqlite_utils.Database``, for tools and tests (imported on first use)."""
        import sqlite_utils

        return sqlite_utils.Database(self._conn)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ledger method; right here on the event loop when nothing else is using the
        connection (most calls: a worker-thread round trip costs more than the SQL), else on the
        worker thread. Inline, a write lock held by another process is waited for only briefly:
        SQLite then refuses before anything is written, and the call goes to the thread, which
        waits as long as the busy timeout allows."""
        return await self.run_within(None, fn, *args, **kwargs)

    async def run_within(self, wait_s: float | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``run``, the wait on the worker thread bounded by ``wait_s`` (see ``LedgerBase.run_within``)."""
        lock = self._lock
        if self._limiter.borrowed_tokens == 0 and lock.acquire_brief():
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorcode", None) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
            finally:
                lock.release_brief()
        return await self._on_thread(wait_s, fn, args, kwargs)

    def start_upkeep(self, **kwargs: Any) -> None:
        # With upkeep running, the WAL is checkpointed by its thread, not by whichever request
        # happens to cross SQLite's threshold (a checkpoint ends in an fsync: a 15-20 ms stall).
        with self._lock:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
        super().start_upkeep(**kwargs)

    def _checkpoint(self) -> None:
        if self._file_gone() is not None:  # connecting by name would open (or create) another file
            return
        if self._checkpoint_conn is None:
            self._checkpoint_conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _tx(self) -> Transaction:
        return Transaction(self)

    def _busy(self, waited_s: float) -> LedgerBusy:
        """The error of a step that could not have the file's write lock in time (``busy_error``)."""
        now = time.monotonic()
        if self._unwritable_since is None or self._unwritable_since > now - waited_s:
            self._unwritable_since = now - waited_s
        return busy_error(self.path, self._stat_path, self._pid, waited_s, now - self._unwritable_since)

    def replay_journal(self) -> None:
        with self._lock:
            if self._file_gone() is not None:  # never into a file no other server sees
                return
            with self._tx():
                pass  # beginning the transaction replays the journal

    @contextlib.contextmanager
    def _savepoint(self, c: Connection) -> Iterator[None]:
        c.execute("SAVEPOINT replay")
        try:
            yield
        except BaseException:
            c.execute("ROLLBACK TO replay")
            c.execute("RELEASE replay")
            raise
        c.execute("RELEASE replay")

    def _journal_applied(self) -> None:
        self._usage_cache.clear()

    def _replayed(self, taken: Taken, committed: bool) -> None:
        taken.finish(committed)
        if committed:
            for entry in taken.entries:
                for hold in entry.holds:
                    self._own_holds.pop(hold, None)
        else:
            self._usage_cache.clear()

    def _close(self) -> None:
        with self._lock:
            if self._checkpoint_conn is not None:
                self._checkpoint_conn.close()
                self._checkpoint_conn = None
            self._conn.close()

    # -- budgets --------------------------------------------------------------------------------

    def usage(self, check: LimitCheck) -> tuple[int, int]:
        return self.usages([check])[0]

    def usages(self, checks: Sequence[LimitCheck], *, stale_ok_s: float = 0.0) -> list[tuple[int, int]]:
        if self._gone is not None:  # routing learns only what a write found (no stat here)
            raise self._gone
        with self._lock:
            now = self._clock()
            try:
                self._usage_cache.sync(self._conn, now, fresh_within=stale_ok_s)
                return [self._usage(check, now) for check in checks]
            except sqlite3.DatabaseError:
                gone = self._file_gone()  # another file's tables seen through its -wal, say
                if gone is not None:
                    raise gone from None
                raise

    def _usage(self, check: LimitCheck, now: float) -> tuple[int, int]:
        key = (check.scope_kind, check.scope_name, check.first_day, check.last_day)
        sums = self._usage_cache.sums.get(key)
        if sums is None:
            params: tuple[Any, ...] = (check.first_day, check.last_day, now)
            if check.scope_kind != "global":
                params += (check.scope_name,)
            row = self._conn.execute(USAGE_SQL[check.scope_kind], params).fetchone()
            self._saw_meta(row[2], row[3], row[4])
            sums = self._usage_cache.sums[key] = [int(row[0]), int(row[1])]
        return sums[0], sums[1]

    def _saw_limits(self, version: int) -> None:
        """Note the limits version just read from the file (valid until another connection writes)."""
        self._usage_cache.limits_version = version
        super()._saw_limits(version)

    def _limits_version(self, conn: sqlite3.Connection) -> int:
        """The limits version in the file, just after a ``sync``: as last read, unless another
        connection has written since (then read now: only when no sums were read to carry it)."""
        known = self._usage_cache.limits_version
        if known is None:
            version, writer_schema, ledger_id = conn.execute(READ_LIMITS_VERSION).fetchone()
            self._saw_meta(version, writer_schema, ledger_id)
            known = int(version)
        return known

    def _first_refusal(self, checks: Sequence[LimitCheck], amount_nusd: int, now: float) -> Refusal | None:
        for fresh in (False, True):
            if fresh:  # a refusal is only ever given on figures read from the file just now
                self._usage_cache.clear()
            refusal = None
            for check in checks:
                spent, reserved = self._usage(check, now)
                if spent + reserved + amount_nusd > check.limit_nusd:
                    refusal = Refusal(check, spent, reserved)
                    break
            if refusal is None:
                return None
        return refusal

    def reserve(
        self, checks: Sequence[LimitCheck], amount_nusd: int, *, request_id: str, day: str, provider: str, tag: str,
        ttl_s: float, poll: bool = False, limits_version: int | None = None,
    ) -> str | Refusal | LimitsMoved:
        cache = self._usage_cache
        version = limits_version
        with self._lock:
            if self._gone is not None:
                raise self._gone
            rid = self._take_spare(checks, amount_nusd, day=day, provider=provider, tag=tag, ttl_s=ttl_s, version=version)
            if rid is not None:
                return rid
            if poll:
                # Spend only grows, so a refusal read a moment ago still holds; a fit is re-checked
                # under the write lock below. (A first try skips this: it would read twice.) A
                # refusal on limits set_budget has replaced is decided again below, on the new ones.
                now = self._clock()
                cache.sync(self._conn, now)
                refusal = self._first_refusal(checks, amount_nusd, now)
                if refusal is not None and (version is None or self._limits_version(self._conn) == version):
                    return refusal
            with self._tx() as c:
                now = self._clock()
                cache.sync(c, now)
                if self._spare is not None:  # not fit for this call: let it go, it must not stand in the way
                    self._delete_spare(c)
                if now >= self._next_lapse or cache.version != self._lapse_version or cache.limits_version is None:
                    # Another connection wrote (or a hold may have lapsed): the limits version is
                    # read with the next lapse, in the one statement this needs anyway.
                    if statements.reclaim(c, SQLITE, now, pid=self._pid, dead_pids=False):
                        cache.clear()
                    first, in_file, writer_schema, ledger_id = c.execute(LAPSES_AND_LIMITS).fetchone()
                    self._saw_meta(in_file, writer_schema, ledger_id)
                    self._next_lapse = math.inf if first is None else first
                    self._lapse_version = cache.version
                if version is not None and cache.limits_version != version:
                    # set_budget changed the limits since this call's checks were built: nothing is
                    # decided on them. The limits in the file, read under this write lock (no
                    # set_budget can commit meanwhile), go back for the checks to be built anew.
                    return LimitsMoved(*self._read_overrides(c))
                refusal = self._first_refusal(checks, amount_nusd, now)
                if refusal is not None:
                    return refusal
                rid = self._new_id()
                expires, hard = self._expiry(now, ttl_s)
                c.execute(_INSERT_RESERVATION, (rid, request_id, now, expires, HOST, self._pid, day, provider, tag,
                                                amount_nusd, self.owner, hard))
            # Committed: the cache learns of the hold.
            self._own_holds[rid] = (amount_nusd, day, provider, tag)
            cache.add(day, provider, tag, reserved=amount_nusd)
            cache.lapses_at = min(cache.lapses_at, expires)
            self._next_lapse = min(self._next_lapse, expires)
            return rid

    def _forget_hold(self, reservation_id: str, deleted: bool) -> None:
        """After a committed delete of a reservation: take its amount out of the cached holds."""
        hold = self._own_holds.pop(reservation_id, None)
        if deleted:
            if hold is None:
                self._usage_cache.clear()
            else:
                amount, day, provider, tag = hold
                self._usage_cache.add(day, provider, tag, reserved=-amount)

    def release(self, reservation_id: str) -> None:
        with self._lock:
            if self._file_gone() is not None:  # the hold is in the old file, which no one counts
                self._own_holds.pop(reservation_id, None)
                return
            with self._tx() as c:
                deleted = c.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,)).rowcount > 0
            self._forget_hold(reservation_id, deleted)

    def record(self, row: RequestRow, *, reservation_id: str | None = None, spare: SpareRequest | None = None) -> None:
        cache = self._usage_cache
        with self._lock:
            kept: Spare | None = None
            try:
                with self._tx() as c:
                    now = self._clock()
                    want = spare if self._spare is None else None
                    if want is not None:
                        cache.sync(c, now)  # figures as of this transaction's start
                    # The cache learns of each write as it is made (and is dropped below should the
                    # transaction roll back).
                    if reservation_id is not None:
                        if want is not None and reservation_id in self._own_holds:
                            # The call's hold itself becomes the spare: one statement, not two.
                            kept = self._hold_becomes_spare(c, reservation_id, want, now)
                            gone = kept is None
                        else:
                            gone = c.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,)).rowcount == 0
                            self._forget_hold(reservation_id, not gone)
                        if gone:
                            statements.late_settle(c, SQLITE, row, reservation_id)
                    _ROW_SQL.write(c, row)
                    cache.add(row.day, row.provider or "", row.tag, spent=row.cost_nusd)
                    if want is not None:
                        if kept is None:
                            kept = self._keep_spare(c, want, now)
                        elif not self._spare_fits(c, want, 0, now):  # over a limit, or on replaced ones: let it go
                            self._spare = kept
                            self._delete_spare(c)
                            kept = None
            except LedgerUnavailable as e:
                cache.clear()
                if kept is not None:
                    self._own_holds.pop(kept.rid, None)
                if e is not self._gone:
                    raise
                # An answer in flight when the file went: its row was rolled back, not left in the
                # unlinked file. A paid one says which call and what it cost (``settle`` puts its
                # row in the journal, which the ledger next opened at the path writes).
                message = str(e)
                if row.cost_nusd:
                    message += (f". This call's row (request {row.id}, cost ${usd_str(row.cost_nusd)}) was not "
                                "written to the ledger")
                lost = LedgerUnavailable(message)
                lost.request_id = row.id
                raise lost from None
            except BaseException:
                cache.clear()
                if kept is not None:
                    self._own_holds.pop(kept.rid, None)
                raise
            if kept is not None:
                self._spare = kept

    # -- the one connection ----------------------------------------------------------------------

    def _read(self, op: Callable[[Connection], T]) -> T:
        with self._lock:
            return op(self._conn)

    def _write(self, op: Callable[[Connection], T]) -> T:
        with self._tx() as c:
            return op(c)

    def _now(self, c: Connection) -> float:
        return self._clock()

    def _executemany(self, c: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, rows)

    def reclaim(self, *, dead_pids: bool = True) -> int:
        with self._lock:
            if self._file_gone() is not None:
                return 0
            n = super().reclaim(dead_pids=dead_pids)
            if n:
                self._usage_cache.clear()
            return n

    def renew(self) -> int:
        if self._file_gone() is not None:
            return 0
        return super().renew()

    def set_budget(self, scope: str, period: str, limit_nusd: int | None) -> None:
        """The limit and a raised limits version, in one write transaction: every reservation after
        it sees the new version and checks against the new limit (see ``LimitsMoved``). This server's
        spare hold goes with the limits it was kept under: held on, it would count against the new
        ones as though a call were in flight (other servers let theirs go at their next call, or
        within ``timings.SPARE_IDLE_S``, and never take one over on the old limits)."""
        with self._lock:
            spare = self._spare
            with self._tx() as c:
                version = statements.set_budget(c, SQLITE, scope, period, limit_nusd)
                dropped = spare is not None and c.execute(
                    "DELETE FROM reservations WHERE id = ?", (spare.rid,)
                ).rowcount > 0
            self._saw_limits(version)
            if spare is not None:
                self._spare = None
                self._forget_hold(spare.rid, dropped)

    # -- reading --------------------------------------------------------------------------------

    def rebuild_rollups(self, day_of: Callable[[str], str]) -> None:
        super().rebuild_rollups(day_of)
        self._usage_cache.clear()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql, list(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


