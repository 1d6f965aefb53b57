"""What the two backends' SQL differs in, and nothing else: the statements themselves are written
once (``statements.py``), with ``?`` placeholders, in SQL both SQLite and PostgreSQL take.

Upserts name the old value by its table (``rollups.requests + excluded.requests``), which both
accept; casts are spelled ``CAST(x AS BIGINT)``; a conditional count is a ``CASE`` sum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["POSTGRES", "SQLITE", "Dialect"]

_QMARK = re.compile(r"\?")


@dataclass(frozen=True, slots=True)
class Dialect:
    """One backend's spelling of the few things the shared statements cannot say alike."""

    name: str
    mark: str
    """The driver's placeholder (``?`` written in a statement becomes this)."""
    collate: str
    """Appended to an ``ORDER BY`` of text: ties ordered by code point on both backends."""
    row_key: str
    """The column that tells rows apart in insertion order: it breaks ties between rows of the
    same millisecond (newest last), and names the rows a prune deletes."""
    greatest: str
    least: str
    lock_rows: str
    """Appended to a ``SELECT`` of holds about to be reclaimed: two servers tidying at once each
    reclaim (and log) a hold once, never twice (SQLite's write lock already ensures it)."""
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, text: str) -> str:
        """``text`` with ``?`` placeholders in this driver's (a literal ``%`` doubled for psycopg)."""
        out = self._cache.get(text)
        if out is None:
            out = text if self.mark == "?" else _QMARK.sub(self.mark, text.replace("%", "%%"))
            self._cache[text] = out
        return out


SQLITE = Dialect(name="sqlite", mark="?", collate="", row_key="rowid", greatest="max", least="min", lock_rows="")
POSTGRES = Dialect(
    name="postgres", mark="%s", collate=' COLLATE "C"', row_key="id", greatest="greatest", least="least",
    lock_rows=" FOR UPDATE SKIP LOCKED",
)
