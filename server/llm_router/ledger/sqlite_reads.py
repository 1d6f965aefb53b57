"""The SQLite ledger's reads of spend, holds and the limits version: each comes with the file's
writer schema and ledger id, so a reservation notices a newer build or another file at no extra
statement. One statement per scope kind, so each is prepared once and reused."""

from __future__ import annotations

from .records import ScopeKind
from .statements import LIMITS_VERSION

__all__ = ["LAPSES_AND_LIMITS", "READ_LIMITS_VERSION", "USAGE_SQL", "WHICH_LEDGER"]

# Read along with it (two look-ups by key): the writer schema, which a newer build may raise while
# this server runs, and the ledger's id, which changes when another ledger is copied over the file
# in place (same device and inode). See ``Ledger._saw_meta``.
WHICH_LEDGER = "(SELECT value FROM meta WHERE key = 'writer_schema'), (SELECT value FROM meta WHERE key = 'ledger_id')"
READ_LIMITS_VERSION = f"SELECT {LIMITS_VERSION}, {WHICH_LEDGER}"
LAPSES_AND_LIMITS = f"SELECT (SELECT min(expires_at) FROM reservations), {LIMITS_VERSION}, {WHICH_LEDGER}"
# Spend comes from the day
# totals (a few rows a day). Holds past their expiry are not counted: their process stopped
# renewing them, and the next write transaction reclaims them. The third column is the limits version,
# the last two the writer schema and the ledger's id.
USAGE_SQL: dict[ScopeKind, str] = {
    "global": "SELECT (SELECT coalesce(sum(cost_nusd), 0) FROM day_totals WHERE dim = 'day' AND key BETWEEN ?1 AND ?2),"
    " (SELECT coalesce(sum(amount_nusd), 0) FROM reservations WHERE day BETWEEN ?1 AND ?2 AND expires_at >= ?3)",
    "provider": "SELECT (SELECT coalesce(sum(cost_nusd), 0) FROM day_totals WHERE dim = 'provider' AND key = ?4"
    " AND day BETWEEN ?1 AND ?2),"
    " (SELECT coalesce(sum(amount_nusd), 0) FROM reservations WHERE provider = ?4 AND day BETWEEN ?1 AND ?2"
    " AND expires_at >= ?3)",
    "tag": "SELECT (SELECT coalesce(sum(cost_nusd), 0) FROM day_totals WHERE dim = 'tag' AND key = ?4"
    " AND day BETWEEN ?1 AND ?2),"
    " (SELECT coalesce(sum(amount_nusd), 0) FROM reservations WHERE tag = ?4 AND day BETWEEN ?1 AND ?2"
    " AND expires_at >= ?3)",
}
USAGE_SQL = {kind: f"{sql}, {LIMITS_VERSION}, {WHICH_LEDGER}" for kind, sql in USAGE_SQL.items()}
