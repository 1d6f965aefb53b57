"""Spend and holds per limit as a SQLite ledger last read them, kept exact by its own writes."""

from __future__ import annotations

import math
import sqlite3

from .. import timings

__all__ = ["UsageCache"]


class UsageCache:
    """Spend and holds per limit, as last read from the file, kept exact by this process's own
    writes and dropped whenever another connection commits (``PRAGMA data_version`` changes) or it
    is a second old. Each call reads every limit twice (routing, then the reservation): without
    this, four queries per call; with it, one pragma."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str | None, str, str], list[int]] = {}
        self.version: int | None = None
        self.limits_version: int | None = None
        """The limits version in the file as of ``version`` (None: not read since another
        connection wrote). Kept when the sums are dropped for age: only another writer changes it."""
        self.filled_at = 0.0
        self.synced_at = -math.inf
        self.lapses_at = math.inf
        """When the first hold this process added lapses (its lease, unless renewed)."""

    def sync(self, conn: sqlite3.Connection, now: float, *, fresh_within: float = 0.0) -> None:
        """Drop the sums if another connection committed, they are a second old, or one of this
        process's holds may have lapsed. ``fresh_within``: skip asking the file when it was asked
        that recently."""
        if now - self.synced_at < fresh_within and now - self.filled_at <= timings.USAGE_CACHE_MAX_AGE_S and now < self.lapses_at:
            return
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        self.synced_at = now
        if version != self.version:
            self.limits_version = None
        if version != self.version or now - self.filled_at > timings.USAGE_CACHE_MAX_AGE_S or now >= self.lapses_at:
            self.clear()
            self.version = version
            self.filled_at = now

    def clear(self) -> None:
        self.sums.clear()
        self.lapses_at = math.inf

    def add(self, day: str, provider: str, tag: str, *, spent: int = 0, reserved: int = 0) -> None:
        """Apply one of this process's writes: ``spent`` and ``reserved`` added on ``day`` to the
        global scope, ``provider`` and ``tag``."""
        for (kind, name, first, last), sums in self.sums.items():
            if first <= day <= last and (
                kind == "global" or (kind == "provider" and name == provider) or (kind == "tag" and name == tag)
            ):
                sums[0] += spent
                sums[1] += reserved
