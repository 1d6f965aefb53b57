"""Which file a SQLite ledger has open, and when it must stop writing to it: the file at its path
moved, deleted or replaced (another inode, or another ledger copied over it in place), or a newer
build raising the writer schema. From then on every write refuses, and a paid call's row goes to
the journal named after the path, which the ledger next opened there writes first.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from .records import LedgerStorageError, LedgerUnavailable, check_writer_schema

if TYPE_CHECKING:
    from .sqlite_spare import Spare
    from .usage_cache import UsageCache

__all__ = ["FileIdentity"]

log = logging.getLogger("llm_router.ledger")


class FileIdentity:
    """The file's part of ``sqlite.Ledger`` (which it is mixed into: the names below are its)."""

    path: Path
    _stat_path: str
    _identity: tuple[int, int] | None
    _gone: LedgerUnavailable | None
    _writer_schema: str | None
    _ledger_id: str | None
    _own_holds: dict[str, tuple[int, str, str, str]]
    _spare: Spare | None
    _usage_cache: UsageCache

    if TYPE_CHECKING:
        def _saw_limits(self, version: int) -> None: ...

    def _storage_error(self, error: sqlite3.OperationalError) -> LedgerStorageError | LedgerUnavailable:
        """What a statement's failure means. Regression: with the file moved away and a new server
        started at its path, this connection shared the new file's ``-wal`` and ``-shm`` by name and
        its statements failed ("no such table: reservations"), which was then called a full disk.
        So the file's identity is asked first (only ever on a failure)."""
        gone = self._file_gone()
        if gone is not None:
            return gone
        return LedgerStorageError(
            f"the ledger {self.path} cannot be written: {error} (a full disk, a file size limit, or a failing "
            f"disk). Nothing was reserved or spent by this step; free some space where it lives (df {self.path.parent}) "
            "and try again"
        )

    def _file_gone(self) -> LedgerUnavailable | None:
        """Why the file now at ``path`` is not the one this ledger has open (None: it is).

        Regression: a ledger file deleted, moved away or replaced while servers ran was written on
        by the server that had it open (its connection follows the inode, not the name) while a
        second server started a fresh ledger at $0 under the name, so spend doubled past the
        limit and the first server's rows vanished with the unlinked file. One ``stat`` of the
        name, compared with the device and inode seen at open, tells them apart (about 2 µs, run
        just before every write transaction commits: twice per call, some 2-4 % of one)."""
        if self._gone is not None or self._identity is None:
            return self._gone
        try:
            st = os.stat(self._stat_path)
        except FileNotFoundError:
            what = "is no longer there (deleted, or moved away)"
        except OSError as e:
            what = f"can no longer be looked up ({e.strerror or e})"
        else:
            if (st.st_dev, st.st_ino) == self._identity:
                return None
            what = "was replaced by another file"
        return self._went(what)

    def _went(self, what: str) -> LedgerUnavailable:
        """Note that the file at ``path`` is not the one open (``what`` happened to it): from now
        on every write refuses with the error returned."""
        if self._gone is not None:
            return self._gone
        return self._write_no_more(LedgerUnavailable(
            f"the ledger file {self.path} {what} while this server had it open: its spend would go to a file "
            "no other server sees, so it makes no more calls. Restart the server so it opens the file now at "
            f"{self.path} (if the ledger was deleted or moved by mistake, put it back first: a server that finds "
            "no file there starts a new ledger at $0)"
        ))

    def _write_no_more(self, error: LedgerUnavailable) -> LedgerUnavailable:
        """From now on every write refuses with ``error`` (the first such error stays)."""
        if self._gone is not None:
            return self._gone
        self._gone = error
        # Its holds (and spare) are in a file no one counts, or one this server may no longer write
        # to (the newer servers reclaim them once their lease lapses): there is nothing to release.
        self._own_holds.clear()
        self._spare = None
        self._usage_cache.clear()
        log.error("%s", self._gone)
        return self._gone

    def _check_file(self) -> None:
        """Raises:
            LedgerUnavailable: the file at ``path`` is not the one open (see ``_file_gone``)."""
        gone = self._file_gone()
        if gone is not None:
            raise gone

    def _saw_meta(self, limits_version: int, writer_schema: str | None, ledger_id: str | None) -> None:
        """``_saw_limits``, once the writer schema and the ledger's id read with the limits version
        (whenever another connection has written) are found to be those of the ledger opened.

        Regression: a ledger copied over the file in place (``cp backup.db ledger.db``: same device
        and inode) was not noticed, and a server started on it granted from $0 what the running one
        had already spent; and a newer build raising the writer schema while this one ran went
        unseen until restart.

        Raises:
            LedgerUnavailable: another ledger is at ``path`` (every call refuses from now on), or
                its writers must keep a schema newer than this build knows."""
        if ledger_id != self._ledger_id:
            raise self._went("was replaced: another ledger was copied over it in place")
        if writer_schema != self._writer_schema:
            try:
                check_writer_schema(writer_schema, str(self.path))
            except LedgerUnavailable as e:
                raise self._write_no_more(e) from None  # no more writes of this build's kind: the journal waits too
            self._writer_schema = writer_schema
        self._saw_limits(int(limits_version))
