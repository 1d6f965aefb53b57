"""Spend the ledger could not take yet: a small append-only, fsynced file beside it.

Regression: a paid answer whose row could not be written (the SQLite file locked past
``busy_timeout_s`` by another process, the disk full, PostgreSQL unreachable) was lost: the caller
got a bare error, no row existed, and the call's hold lapsed, so its spend was gone from every
report and every limit. Now such a row is appended here, and fsynced, before the caller hears
anything; its holds stay in the ledger (counted against every limit) until the row is written,
and the journal is replayed into the ledger inside the next write transaction that can take it
(any server's: every write transaction looks for a journal first) and when a ledger opens.

One entry a line, ``<crc32 of the JSON, 8 hex digits> <JSON>``: a line whose checksum does not
match, or the last line without its newline (a write torn by a crash or a full disk), is never
applied. Entries are idempotent: a row whose id is already in ``requests`` is not written again,
and deleting a hold twice is harmless, so a replay cut short (a crash after the commit, before the
file is removed) does no harm when repeated.

Several processes share the file: each append and each replay holds ``flock`` on it (appends take
microseconds, plus an fsync); a replay removes the file only after its transaction committed, and
an appender that finds the file it locked was removed meanwhile writes to a new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import timings
from .records import HOST, RequestRow

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - no flock: one process per journal on Windows
    fcntl = None

__all__ = ["Entry", "Journal", "Taken"]

log = logging.getLogger("llm_router.ledger")

RESERVE_BYTES = 64 * 1024
"""Room kept for the journal on a disk that fills up: a file of this size beside it
(``<journal>.reserve``), deleted when an append finds the disk full, made again after a replay.
SQLite uses up the last free bytes of a full disk before it fails, so without it the row that
could not be written could not be journaled either. About 70 entries."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One journaled change: a call's row with the holds it settles (``kind`` "row"), or holds to
    let go of (``kind`` "release": a call that failed or was refused, costing nothing)."""

    kind: Literal["row", "release"]
    holds: tuple[str, ...]
    row: RequestRow | None = None
    at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    host: str = HOST

    @property
    def cost_nusd(self) -> int:
        return self.row.cost_nusd if self.row is not None else 0

    def line(self) -> bytes:
        data: dict[str, Any] = {"v": 1, "kind": self.kind, "holds": list(self.holds), "at": self.at,
                                "pid": self.pid, "host": self.host}
        if self.row is not None:
            data["row"] = {name: getattr(self.row, name) for name in self.row.__dataclass_fields__ if name != "extra"}
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return b"%08x %s\n" % (zlib.crc32(body), body)

    @classmethod
    def parse(cls, line: bytes) -> Entry | None:
        """The entry a complete line holds, or None when the line is torn or damaged."""
        head, sep, body = line.partition(b" ")
        if not sep or len(head) != 8:
            return None
        try:
            if int(head, 16) != zlib.crc32(body):
                return None
            data = json.loads(body)
            row = data.get("row")
            fields = RequestRow.__dataclass_fields__
            return cls(
                kind=data["kind"], holds=tuple(str(h) for h in data.get("holds") or ()),
                row=None if row is None else RequestRow(**{k: v for k, v in row.items() if k in fields}),
                at=float(data.get("at", 0)), pid=int(data.get("pid", 0)), host=str(data.get("host", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(slots=True)
class Taken:
    """Entries read for one write transaction to apply; ``finish`` after its commit or rollback."""

    journal: Journal
    entries: list[Entry]
    _fd: int | None
    _backlog: list[Entry]
    _rejected: list[tuple[bytes, str]] = field(default_factory=list)

    def reject(self, entry: Entry, why: str) -> None:
        """An entry the ledger refuses (it would fail every replay): set aside, once the
        transaction commits, in ``<journal>.rejected`` for a person to look at."""
        self._rejected.append((entry.line().rstrip(b"\n"), why))

    def finish(self, committed: bool) -> None:
        """Committed: the entries are in the ledger, so the file goes and the backlog is emptied of
        them. Rolled back: everything stays for a later transaction."""
        try:
            if committed:
                for raw, why in self._rejected:
                    self.journal._reject(raw, why)
                self.journal._forget(self)
        finally:
            if self._fd is not None:
                os.close(self._fd)  # lets go of the lock
                self._fd = None
            self.journal._replaying.release()


class Journal:
    """The journal of one ledger (``path``), and the entries this process could not even append to
    it (kept in memory, replayed by this process's next write; lost if it stops first).

    ``pending`` is the one check a write transaction makes: a flag in memory when this process has
    something waiting, else one ``stat`` of the file (another process may have journaled)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._path_s = None if path is None else os.fspath(path)
        self._backlog: list[Entry] = []
        self._mutex = threading.Lock()
        self._replaying = threading.Lock()
        """One replay at a time in this process (the ledger's own lock already ensures it; this
        keeps a journal shared by two ledgers in one process, as tests open them, consistent)."""
        self._reserve_s = None if path is None else f"{self._path_s}.reserve"

    def keep_room(self) -> None:
        """Make the reserve file if it is missing (when a ledger opens, and after a replay)."""
        if self._reserve_s is None or os.path.exists(self._reserve_s):
            return
        try:
            fd = os.open(self._reserve_s, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return
        try:
            os.write(fd, b"\0" * RESERVE_BYTES)
        except OSError:  # no room for it now: made at a later replay
            os.close(fd)
            os.unlink(self._reserve_s)
            return
        os.close(fd)

    def __repr__(self) -> str:
        return f"Journal({self._path_s!r})"

    # -- the hot path ---------------------------------------------------------------------------

    def pending(self) -> bool:
        # os.access raises nothing for a missing file: 0.7 µs, where a failing os.stat costs 1.9.
        # (An empty file left by an append that failed is taken, found empty and removed.)
        return bool(self._backlog) or (self._path_s is not None and os.access(self._path_s, os.F_OK))

    # -- writing ----------------------------------------------------------------------------------

    def append(self, entry: Entry) -> bool:
        """Add an entry. True: it is in the file, fsynced. False: the file could not take it (the
        disk full, no file for an in-memory ledger), so only this process holds it, in memory."""
        if self._path_s is not None:
            try:
                try:
                    self._write(entry.line())
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._give_up_room():
                        raise
                    self._write(entry.line())  # into the room the reserve file kept
                return True
            except OSError as e:
                log.error("could not write to the ledger's journal %s (%s): request %s kept in memory only",
                          self._path_s, e.strerror or e, entry.row.id if entry.row else "-")
        with self._mutex:
            self._backlog.append(entry)
        return False

    def _give_up_room(self) -> bool:
        assert self._reserve_s is not None
        try:
            os.unlink(self._reserve_s)
        except OSError:
            return False
        log.warning("the disk holding the ledger's journal %s is full: its reserve of %d KB was freed for it",
                    self._path_s, RESERVE_BYTES // 1024)
        return True

    def flush_backlog(self) -> None:
        """Move the entries kept in memory to the file, if it can take them now (upkeep, close)."""
        if not self._backlog or self._path_s is None:
            return
        with self._mutex:
            backlog = list(self._backlog)
        try:
            self._write(b"".join(e.line() for e in backlog))
        except OSError as e:
            log.warning("the ledger's journal %s still cannot be written (%s): %d entries kept in memory",
                        self._path_s, e.strerror or e, len(backlog))
            return
        with self._mutex:  # a replay may have taken some meanwhile: both are harmless (idempotent)
            moved = {id(e) for e in backlog}
            self._backlog = [e for e in self._backlog if id(e) not in moved]

    def _write(self, data: bytes) -> None:
        assert self._path_s is not None
        deadline = time.monotonic() + timings.JOURNAL_APPEND_WAIT_S
        while True:
            fd = os.open(self._path_s, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                if not _lock(fd, deadline):
                    raise OSError(0, f"another process holds the journal for more than {timings.JOURNAL_APPEND_WAIT_S:g} s")
                st = os.fstat(fd)
                try:
                    same = os.stat(self._path_s).st_ino == st.st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # a replay removed it while this waited: write to the new one
                    continue
                size = st.st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # after a torn line, start a line of our own
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)  # never leave half an entry behind
                    raise
                if size == 0:
                    _fsync_dir(self._path_s)  # the file's name is durable too
                return
            finally:
                os.close(fd)

    # -- replaying ----------------------------------------------------------------------------------

    def take(self) -> Taken | None:
        """Lock the journal and read what is pending, for the caller's write transaction to apply
        (then ``Taken.finish``). None when there is nothing, or when the file stays locked by
        another process and this one has nothing in memory (the caller leaves it to a later
        transaction)."""
        if not self._replaying.acquire(timeout=timings.JOURNAL_REPLAY_WAIT_S):
            return None
        fd: int | None = None
        try:
            fd = self._open_locked()
            lines = _read_all(fd).split(b"\n") if fd is not None else []
            with self._mutex:
                backlog = list(self._backlog)
            if fd is None and not backlog:
                self._replaying.release()
                return None
            taken = Taken(self, [], fd, backlog)
            torn = lines.pop() if lines else b""  # what follows the last newline: b"" unless torn
            if torn:
                log.warning("ignoring a torn last line (%d bytes) in the ledger's journal %s", len(torn), self._path_s)
            for raw in lines:
                if not raw:
                    continue
                entry = Entry.parse(raw)
                if entry is None:
                    taken._rejected.append((raw, "its checksum does not match"))
                    continue
                taken.entries.append(entry)
            taken.entries += backlog
            return taken
        except BaseException:
            if fd is not None:
                os.close(fd)
            self._replaying.release()
            raise

    def _open_locked(self) -> int | None:
        """The journal file, open and locked (None: there is none, or it stayed locked)."""
        if self._path_s is None:
            return None
        deadline = time.monotonic() + timings.JOURNAL_REPLAY_WAIT_S
        while True:
            try:
                fd = os.open(self._path_s, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                return None
            try:
                if not _lock(fd, deadline):
                    os.close(fd)
                    return None
                try:
                    same = os.stat(self._path_s).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:  # and stays so: only a replay, holding this lock, removes it
                return fd
            os.close(fd)  # replayed and removed while this waited: look again

    def _forget(self, taken: Taken) -> None:
        if taken._fd is not None and self._path_s is not None:
            try:
                os.unlink(self._path_s)
                _fsync_dir(self._path_s)
            except FileNotFoundError:
                pass
        if taken._backlog:
            with self._mutex:
                done = {id(e) for e in taken._backlog}
                self._backlog = [e for e in self._backlog if id(e) not in done]
        self.keep_room()

    def _reject(self, raw: bytes, why: str) -> None:
        where = f"{self._path_s}.rejected" if self._path_s is not None else None
        log.error("the ledger refused a journal entry (%s)%s: %s", why, f"; kept in {where}" if where else "",
                  raw[:300].decode(errors="replace"))
        if where is None:
            return
        try:
            with open(where, "ab") as f:
                f.write(raw + b"\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            log.error("could not keep the refused entry in %s: %s", where, e)

    # -- reading ----------------------------------------------------------------------------------

    def waiting(self) -> list[Entry]:
        """What is pending now (file and memory), without taking it: for reports."""
        if not self.pending():
            return []
        entries: list[Entry] = []
        if self._path_s is not None:
            try:
                with open(self._path_s, "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
            lines = data.split(b"\n")
            lines.pop()
            entries = [e for e in map(Entry.parse, lines) if e is not None]
        with self._mutex:
            return entries + list(self._backlog)

    def rows(
        self, *, where: Mapping[str, str] | None = None, first_day: str | None = None, last_day: str | None = None,
    ) -> list[RequestRow]:
        """The rows waiting (each once, oldest first), only those whose columns equal ``where``'s
        values (provider, model, task_type, tag, day: a missing provider or model counts as "", as
        in the rollups) and whose day is in [``first_day``, ``last_day``]: what a report or a
        member's view may count. No file is read when nothing is pending."""
        seen: set[str] = set()
        out: list[RequestRow] = []
        for e in self.waiting():
            row = e.row
            if row is None or row.id in seen:
                continue  # an entry appended twice (a backlog moved while a replay took it) counts once
            seen.add(row.id)
            if (first_day is not None and row.day < first_day) or (last_day is not None and row.day > last_day):
                continue
            if where and any((getattr(row, column, None) or "") != value for column, value in where.items()):
                continue
            out.append(row)
        return out

    def summary(
        self, *, where: Mapping[str, str] | None = None, first_day: str | None = None, last_day: str | None = None,
    ) -> tuple[int, int]:
        """(rows waiting, their cost in nano-dollars), filtered as ``rows`` filters them."""
        rows = self.rows(where=where, first_day=first_day, last_day=last_day)
        return len(rows), sum(r.cost_nusd for r in rows)


def _lock(fd: int, deadline: float) -> bool:
    """``flock`` the file, waiting until ``deadline`` (monotonic) at most."""
    if sys.platform == "win32":
        return True
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _fsync_dir(path: str) -> None:
    if sys.platform == "win32":  # pragma: no cover
        return
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe(entries: Sequence[Entry]) -> str:
    """'3 answered calls costing $0.0012' for a note."""
    from ..types import plural, usd_str

    rows = [e for e in entries if e.row is not None]
    return f"{plural(len(rows), 'call')} costing ${usd_str(sum(e.cost_nusd for e in rows))}"
