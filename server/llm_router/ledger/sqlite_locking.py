"""How one SQLite connection is shared and its writes serialised: the connection's lock (which also
sets how long SQLite waits for another process's write lock), the ``BEGIN IMMEDIATE`` transaction
every write runs in, and who holds the file's write lock when a step waited for it in vain.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import timings
from ..types import LedgerBusy

if TYPE_CHECKING:
    from .journal import Taken
    from .sqlite import Ledger

__all__ = ["BusyLock", "Transaction", "busy_error", "use_wal"]


class BusyLock:
    """The connection's re-entrant lock, which also sets how long SQLite waits for another
    process's write lock: briefly while a call runs inline on the event loop (a busy file sends it
    to the worker thread rather than stall every other request), until the step's own deadline
    when it has one (``LedgerBase.run_within``, upkeep), else the full busy timeout. The setting
    changes only when the wait wanted does, not on every call."""

    def __init__(
        self, conn: sqlite3.Connection, *, full_ms: int, wait: threading.local, busy: Callable[[float], LedgerBusy],
    ) -> None:
        self._rlock = threading.RLock()
        self._conn = conn
        self._full_ms = full_ms
        self._ms = full_ms
        """What the connection's busy timeout is now (the ledger sets the full one at open)."""
        self._wait = wait
        self._busy = busy
        self._inline = False

    @property
    def inline(self) -> bool:
        """Held by a call running inline (which waits only briefly and is then retried on the thread)."""
        return self._inline

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        until = getattr(self._wait, "until", None) if blocking and timeout < 0 else None
        if until is None:
            if not self._rlock.acquire(blocking, timeout):
                return False
            want = self._full_ms
        else:
            left = until - time.monotonic()
            if not self._rlock.acquire(True, max(left, 0.0)):
                raise self._busy(max(left, 0.0))
            want = min(self._full_ms, max(int((until - time.monotonic()) * 1000), 0))
        if not self._inline and want != self._ms:
            try:
                self._conn.execute(f"PRAGMA busy_timeout={want}")
            except BaseException:
                self._rlock.release()
                raise
            self._ms = want
        return True

    def release(self) -> None:
        self._rlock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self._rlock.release()

    def acquire_brief(self) -> bool:
        """Take the lock for an inline call, without waiting for it."""
        if not self._rlock.acquire(blocking=False):
            return False
        self._inline = True
        if self._ms != timings.INLINE_BUSY_MS:
            try:
                self._conn.execute(f"PRAGMA busy_timeout={timings.INLINE_BUSY_MS}")
            except BaseException:
                self._inline = False
                self._rlock.release()
                raise
            self._ms = timings.INLINE_BUSY_MS
        return True

    def release_brief(self) -> None:
        self._inline = False
        self._rlock.release()


class Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error), holding the thread lock.

    Just after ``BEGIN`` it checks the file's identity, then replays the journal, if anything waits
    there (``Ledger._replay_in``); the identity is checked again just before ``COMMIT`` (when either
    check raises, it rolls back). A
    ``BEGIN`` that finds the write lock held past the wait allowed raises ``LedgerBusy`` (inline,
    the plain busy error, for ``run`` to retry on the worker thread). Nothing in here awaits: a
    write transaction never spans anything but its own statements."""

    __slots__ = ("_led", "_conn", "_lock", "_taken")

    def __init__(self, led: Ledger) -> None:
        self._led = led
        self._conn = led._conn
        self._lock = led._lock
        self._taken: Taken | None = None

    def __enter__(self) -> sqlite3.Connection:
        lock = self._lock
        lock.acquire()
        led = self._led
        try:
            t0 = time.monotonic()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorcode", None) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise led._storage_error(e) from e
                gone = led._file_gone()
                if gone is not None:  # the lock waited for may be another file's
                    raise gone from None
                if lock.inline:
                    raise
                raise led._busy(time.monotonic() - t0) from None
            if led._unwritable_since is not None:
                led._unwritable_since = None
            try:
                # Before any statement: with the file moved or replaced, this connection may share
                # another file's -wal and -shm by name (and read its pages as its own).
                led._check_file()
                self._taken = led._replay_in(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except BaseException:
            lock.release()
            raise
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        committed = False
        try:
            if exc_type is None:
                try:
                    self._led._check_file()
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            try:
                self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
            except sqlite3.OperationalError as e:
                # A COMMIT the disk could not take (SQLITE_FULL, an I/O error): never leave the
                # connection inside the failed transaction, or every later BEGIN would fail.
                if self._conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                raise self._led._storage_error(e) from e
            committed = exc_type is None
        finally:
            try:
                if self._taken is not None:
                    self._led._replayed(self._taken, committed)
            finally:
                self._lock.release()
        if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) not in (
            sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
        ):  # a statement the disk could not take: said plainly
            raise self._led._storage_error(exc) from exc


def busy_error(path: Path, stat_path: str, own_pid: int, waited_s: float, stuck_s: float) -> LedgerBusy:
    """The error of a step that could not have the file's write lock in time: who holds it (the
    system says on Linux), whether that process is stopped, and for how long this server has
    been unable to write (``stuck_s``)."""
    pid = write_lock_holder(stat_path)
    stopped = pid is not None and process_state(pid) in ("T", "t")
    if pid is None:
        who = "another process holds its write lock"
    elif pid == own_pid:
        who = f"this server itself (process {pid}) holds its write lock on another connection"
    else:
        who = f"process {pid} on this machine holds its write lock" + (
            " and is stopped (paused with SIGSTOP or Ctrl-Z, or held in a debugger)" if stopped else "")
    message = (f"ledger busy: {who}, and this server has not been able to write to the ledger {path} for "
               f"{stuck_s:.1f} s (this step waited {waited_s:.1f} s). Nothing was reserved or spent by it. "
               "Try again in a few seconds")
    if pid is not None and pid != own_pid:
        message += (f"; if it lasts, resume that process (kill -CONT {pid}) or stop it (kill {pid})" if stopped
                    else f"; if it lasts, see what process {pid} is doing (a transaction left open?) or stop it")
    elif pid is None:
        message += f"; if it lasts, look for a process that keeps the file in a transaction (fuser {path})"
    return LedgerBusy(message, retry_after=5.0 if stopped else 1.0, waited_s=waited_s, holder_pid=pid, stuck_s=stuck_s)


def write_lock_holder(db_path: str) -> int | None:
    """The process holding the write lock of a SQLite file in WAL mode, as Linux's ``/proc/locks``
    says: SQLite takes it as a POSIX lock on byte 120 of the ``-shm`` file. None elsewhere, or when
    no process holds it now. Read only when a write has waited in vain: nothing on the hot path."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        st = os.stat(db_path + "-shm")
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()  # "1: POSIX  ADVISORY  WRITE 14187 fe:00:2154642 120 120" (waiters have "->")
        if len(parts) >= 8 and parts[1] == "POSIX" and parts[3] == "WRITE" and parts[5] == inode and parts[6] == "120":
            try:
                return int(parts[4])
            except ValueError:
                return None
    return None


def process_state(pid: int) -> str | None:
    """A process's state letter from ``/proc/PID/stat`` (``T``: stopped), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    after = text.rpartition(")")[2].split()
    return after[0] if after else None


def use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switch the file to WAL. Regression: several processes opening a new file at once failed
    with 'database is locked', because SQLite does not wait (busy timeout) for the exclusive lock
    this switch needs; so wait here, and only switch a file that is not in WAL already."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            busy = getattr(e, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
