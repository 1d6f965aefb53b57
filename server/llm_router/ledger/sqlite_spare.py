"""The spare hold of a SQLite ledger, in one place: what it is, when it is kept, taken over and let go.

A busy server keeps one *spare* hold between calls: the transaction that records a call may also
hold that call's worst case again (``SpareRequest``, made by ``Budget.spare_for`` only while every
limit on it is in the normal tier), and the next call that fits within it takes it over instead of
opening a transaction of its own. A spare is a hold like any other (counted by every process,
shown as reserved); it is let go within ``timings.SPARE_IDLE_S`` of going unused, when a call
does not fit it, when ``set_budget`` changes the limits it was kept under, and when the ledger
closes. PostgreSQL keeps none: a reservation there is one round trip either way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import timings
from .dialect import SQLITE
from .records import HOST, LimitCheck, SpareRequest
from .statements import INSERT_RESERVATION

if TYPE_CHECKING:
    from .journal import Journal
    from .records import LedgerUnavailable
    from .sqlite_locking import BusyLock, Transaction
    from .usage_cache import UsageCache

__all__ = ["Spare", "SpareHolds"]

_INSERT_RESERVATION = SQLITE.sql(INSERT_RESERVATION)


@dataclass(frozen=True, slots=True)
class Spare:
    """A hold this process keeps for its next call (``request_id`` NULL in the file)."""

    rid: str
    amount: int
    day: str
    provider: str
    tag: str
    hard_expires: float
    made_at: float


class SpareHolds:
    """The spare's part of ``sqlite.Ledger`` (which it is mixed into: the names below are its)."""

    _spare: Spare | None
    _clock: Callable[[], float]
    _conn: sqlite3.Connection
    _usage_cache: UsageCache
    _own_holds: dict[str, tuple[int, str, str, str]]
    _next_lapse: float
    _new_id: Callable[[], str]
    _pid: int
    owner: str
    journal: Journal
    _lock: BusyLock

    if TYPE_CHECKING:
        def _usage(self, check: LimitCheck, now: float) -> tuple[int, int]: ...
        def _limits_version(self, conn: sqlite3.Connection) -> int: ...
        def _check_file(self) -> None: ...
        def _forget_hold(self, reservation_id: str, deleted: bool) -> None: ...
        def _expiry(self, now: float, ttl_s: float) -> tuple[float, float]: ...
        def _tx(self) -> Transaction: ...
        def _file_gone(self) -> LedgerUnavailable | None: ...

    def _take_spare(
        self, checks: Sequence[LimitCheck], amount_nusd: int, *, day: str, provider: str, tag: str, ttl_s: float,
        version: int | None = None,
    ) -> str | None:
        """The spare hold's id, when it can stand for this call's reservation: same day, provider
        and tag, at least as large, fresh, long-lived enough, nothing waiting in the journal (whose
        replay only a write transaction makes), and every check (read from the file
        as of now, and built from the limits ``version`` now in the file) would have granted this
        call's own hold in its place."""
        spare = self._spare
        if spare is None or (spare.day, spare.provider, spare.tag) != (day, provider, tag) or spare.amount < amount_nusd:
            return None
        now = self._clock()
        if now - spare.made_at > timings.SPARE_IDLE_S or spare.hard_expires - now < ttl_s - timings.SPARE_IDLE_S:
            return None
        if self.journal.pending():
            # Taking the spare over writes nothing, so it would skip the replay every write
            # transaction makes first: rows waiting there would wait on. The reservation's own
            # transaction replays them (and lets the spare go).
            return None
        self._usage_cache.sync(self._conn, now)
        if not self._room_for(checks, amount_nusd - spare.amount, now):  # the spare counted as given back
            return None
        if version is not None and self._limits_version(self._conn) != version:
            return None  # set_budget changed the limits: the reservation decides, on checks built anew
        # Taking it over writes nothing, so no commit checks the file: check it here. (The
        # reservation's own transaction checks it just before it commits.)
        self._check_file()
        self._spare = None
        return spare.rid

    def _room_for(self, checks: Sequence[LimitCheck], amount_nusd: int, now: float) -> bool:
        return all(sum(self._usage(check, now)) + amount_nusd <= check.limit_nusd for check in checks)

    def _hold_becomes_spare(self, c: sqlite3.Connection, rid: str, want: SpareRequest, now: float) -> Spare | None:
        """Turn a call's hold into the spare (None when the hold is no longer in the file)."""
        expires, hard = self._expiry(now, want.ttl_s)
        found = c.execute(
            "UPDATE reservations SET request_id = NULL, created_at = ?, expires_at = ?, hard_expires_at = ?, day = ?,"
            " provider = ?, tag = ?, amount_nusd = ? WHERE id = ?",
            (now, expires, hard, want.day, want.provider, want.tag, want.amount_nusd, rid),
        ).rowcount > 0
        self._forget_hold(rid, found)
        if not found:
            return None
        return self._note_spare(rid, want, now, expires, hard)

    def _note_spare(self, rid: str, want: SpareRequest, now: float, expires: float, hard: float) -> Spare:
        self._own_holds[rid] = (want.amount_nusd, want.day, want.provider, want.tag)
        self._usage_cache.add(want.day, want.provider, want.tag, reserved=want.amount_nusd)
        self._usage_cache.lapses_at = min(self._usage_cache.lapses_at, expires)
        self._next_lapse = min(self._next_lapse, expires)
        return Spare(rid, want.amount_nusd, want.day, want.provider, want.tag, hard, now)

    def _spare_fits(self, c: sqlite3.Connection, want: SpareRequest, amount_nusd: int, now: float) -> bool:
        """Whether ``want``'s checks have room for ``amount_nusd`` more and are still those of the
        limits in the file (a spare kept on limits set_budget replaced would be held against the
        new ones as though a call were in flight)."""
        if not self._room_for(want.checks, amount_nusd, now):
            return False
        return want.limits_version is None or self._limits_version(c) == want.limits_version

    def _keep_spare(self, c: sqlite3.Connection, want: SpareRequest, now: float) -> Spare | None:
        """Inside a write transaction whose own writes the cache already knows: hold ``want`` for
        the next call if every check has room for it."""
        if not self._spare_fits(c, want, want.amount_nusd, now):
            return None
        rid = self._new_id()
        expires, hard = self._expiry(now, want.ttl_s)
        c.execute(_INSERT_RESERVATION, (rid, None, now, expires, HOST, self._pid, want.day, want.provider, want.tag,
                                        want.amount_nusd, self.owner, hard))
        return self._note_spare(rid, want, now, expires, hard)

    def _delete_spare(self, c: sqlite3.Connection) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            deleted = c.execute("DELETE FROM reservations WHERE id = ?", (spare.rid,)).rowcount > 0
            self._forget_hold(spare.rid, deleted)

    @property
    def spare_nusd(self) -> int:
        spare = self._spare
        return 0 if spare is None else spare.amount

    def drop_spare(self, *, idle_s: float = 0.0) -> None:
        with self._lock:
            spare = self._spare
            if spare is None or self._clock() - spare.made_at < idle_s or self._file_gone() is not None:
                return
            try:
                with self._tx() as c:
                    self._delete_spare(c)
            except BaseException:
                self._usage_cache.clear()
                raise
