"""The ledger's statements, written once for both backends: each function runs on an open
connection (inside the backend's transaction when it writes) in the backend's ``Dialect``.

Only what differs stays in ``sqlite.py`` and ``postgres.py``: connecting, how a reservation is
serialised (SQLite's write lock, PostgreSQL's advisory lock), and the sums each reads for a
reservation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..types import InvalidInput
from .dialect import Dialect
from .records import (
    DIMENSIONS,
    GROUPINGS,
    HOST,
    ROW_COLUMNS,
    SUM_COLUMNS,
    Overrides,
    RatedRequest,
    RatingRow,
    RequestRow,
    alive,
    check_grouping,
    now_iso,
)

if TYPE_CHECKING:
    from .journal import Entry

__all__ = [
    "DAY_TOTALS_FROM_ROLLUPS", "INSERT_RESERVATION", "LIMITS_VERSION", "PRUNE_BATCH", "REFILE_ROLLUPS",
    "RESERVATION_COLUMNS", "Connection", "RowStatements", "estimated", "events", "late_settle", "meta", "prune_batch",
    "put_rating", "rated_request", "ratings", "read_overrides", "rebuild_rollups", "reclaim", "reclaimed", "renew",
    "report", "reservations_total", "set_budget", "set_meta", "totals",
]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


class Connection(Protocol):
    """What the statements need of a driver's connection (``sqlite3`` and ``psycopg`` alike)."""

    def execute(self, sql: Any, params: Any = ..., /) -> Cursor: ...


PRUNE_BATCH = 5_000
"""Rows deleted per transaction when pruning: short enough that reservations never queue long."""

_SUMS = ", ".join(f"sum({c})" for c in SUM_COLUMNS)
_KEY = "day, provider, model, tag, task_type"


def _added(table: str, columns: Iterable[str]) -> str:
    """An upsert's update: each column's new value added to the one already there."""
    return ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)


DAY_TOTALS_FROM_ROLLUPS = "INSERT INTO day_totals (dim, key, day, " + ", ".join(SUM_COLUMNS) + ")\n" + "\nUNION ALL ".join(
    f"SELECT '{dim}', {dim}, day, {_SUMS} FROM rollups GROUP BY {dim}, day" if dim != "day"
    else f"SELECT 'day', day, day, {_SUMS} FROM rollups GROUP BY day"
    for dim in DIMENSIONS
)
"""Derives every day total from the rollups."""
INSERT_ROW = f"INSERT INTO requests ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
UPSERT_ROLLUP = (
    f"INSERT INTO rollups ({_KEY}, {', '.join(SUM_COLUMNS)}) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)"
    f" ON CONFLICT ({_KEY}) DO UPDATE SET {_added('rollups', SUM_COLUMNS)}"
)
UPSERT_DAY_TOTALS = (
    f"INSERT INTO day_totals (dim, key, day, {', '.join(SUM_COLUMNS)}) VALUES "
    + ", ".join(["(?, ?, ?, 1, " + ", ".join("?" * 6) + ")"] * len(DIMENSIONS))
    + f" ON CONFLICT (dim, key, day) DO UPDATE SET {_added('day_totals', SUM_COLUMNS)}"
)
"""Adds one request row to its day totals (one per dimension) in one round trip."""
UPSERT_ESTIMATED = (
    f"INSERT INTO estimated_rollups ({_KEY}, requests, cost_nusd) VALUES (?, ?, ?, ?, ?, 1, ?)"
    f" ON CONFLICT ({_KEY}) DO UPDATE SET {_added('estimated_rollups', ('requests', 'cost_nusd'))}"
)
"""Adds one row whose usage was estimated to ``estimated_rollups`` (run only for such rows)."""
_ROW_KEY = "day, coalesce(provider, ''), coalesce(model, ''), tag, task_type"
REFILE_ROLLUPS = (
    f"INSERT INTO rollups ({_KEY}, {', '.join(SUM_COLUMNS)})"
    f" SELECT {_ROW_KEY}, count(*), sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), sum(input_tokens),"
    " sum(output_tokens), sum(cached_tokens), sum(cost_nusd), sum(coalesce(reference_cost_nusd, 0))"
    f" FROM requests GROUP BY {_ROW_KEY} ON CONFLICT ({_KEY}) DO UPDATE SET {_added('rollups', SUM_COLUMNS)}"
)
"""Derives the rollups from the rows, adding to what is there (after a rebuild emptied the days the rows cover)."""
REFILE_ESTIMATED = (
    f"INSERT INTO estimated_rollups ({_KEY}, requests, cost_nusd)"
    f" SELECT {_ROW_KEY}, count(*), sum(cost_nusd) FROM requests WHERE cost_estimated = 1 GROUP BY {_ROW_KEY}"
    f" ON CONFLICT ({_KEY}) DO UPDATE SET {_added('estimated_rollups', ('requests', 'cost_nusd'))}"
)
"""Derives ``estimated_rollups`` from the rows whose usage was estimated, adding to what is there."""

LIMITS_VERSION = "coalesce((SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'limits_version'), 0)"
"""The limits version: raised by every set_budget in the transaction that writes the limit. Read
along with statements a reservation runs anyway, never alone on the way of a call."""
_READ_OVERRIDES = f"SELECT NULL, NULL, {LIMITS_VERSION} UNION ALL SELECT scope, period, limit_nusd FROM budgets"
_RAISE_LIMITS_VERSION = (
    "INSERT INTO meta (key, value) VALUES ('limits_version', '1') ON CONFLICT (key) DO UPDATE"
    " SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT) RETURNING CAST(value AS BIGINT)"
)
RESERVATION_VALUES = "id, request_id, created_at, expires_at, host, pid, day, provider, tag, amount_nusd, owner, hard_expires_at"
INSERT_RESERVATION = f"INSERT INTO reservations ({RESERVATION_VALUES}) VALUES ({', '.join('?' * 12)})"
RESERVATION_COLUMNS = "id, request_id, pid, host, amount_nusd, day, provider, tag"
PINNED_OWNER = "journaled"
"""The ``owner`` of a hold whose call's row waits in a journal (PostgreSQL pins them: see
``PostgresLedger.pin_holds``): no upkeep renews it, it never lapses, and only the replay of that
journal (which writes the row) removes it."""


@dataclass(frozen=True, slots=True)
class RowStatements:
    """The statements that write one request row and keep its sums in step, in one backend's
    placeholders: the same for a settle and for a row replayed from the journal."""

    dialect: Dialect

    def write(self, c: Connection, row: RequestRow) -> None:
        sql = self.dialect.sql
        c.execute(sql(INSERT_ROW), row.values())
        c.execute(sql(UPSERT_ROLLUP), row.rollup_values())
        c.execute(sql(UPSERT_DAY_TOTALS), row.totals_values())
        if row.cost_estimated:
            c.execute(sql(UPSERT_ESTIMATED), row.estimated_values())

    def apply_journal_entry(self, c: Connection, entry: Entry) -> None:
        """Inside a write transaction: one journal entry's holds removed, and its row (unless one
        with its id is already written) with its sums and a ``row_from_journal`` event."""
        sql, row = self.dialect.sql, entry.row
        written = row is not None and c.execute(sql("SELECT 1 FROM requests WHERE id = ?"), (row.id,)).fetchone() is not None
        first_gone = False
        for i, hold in enumerate(entry.holds):
            if c.execute(sql("DELETE FROM reservations WHERE id = ?"), (hold,)).rowcount == 0 and i == 0:
                first_gone = True
        if row is None or written:
            return
        if first_gone:  # its hold lapsed before the row could be written: said, as for a late settle
            late_settle(c, self.dialect, row, entry.holds[0])
        self.write(c, row)
        _event(c, self.dialect, "row_from_journal", {
            "request_id": row.id, "cost_nusd": row.cost_nusd, "status": row.status,
            "journaled_by": {"pid": entry.pid, "host": entry.host}, "journaled_at": entry.at,
        })


def _event(c: Connection, d: Dialect, kind: str, detail: dict[str, Any]) -> None:
    c.execute(d.sql("INSERT INTO events (ts, kind, detail) VALUES (?, ?, ?)"), (now_iso(), kind, json.dumps(detail)))


def late_settle(c: Connection, d: Dialect, row: RequestRow, reservation_id: str) -> None:
    """Its hold was reclaimed while the call ran (the process was frozen past its lease): the
    spend is recorded all the same, and the operator can see why a limit may be passed."""
    _event(c, d, "settled_after_reclaim", {"reservation": reservation_id, "request_id": row.id, "cost_nusd": row.cost_nusd})


def meta(c: Connection, d: Dialect, key: str) -> str | None:
    row = c.execute(d.sql("SELECT value FROM meta WHERE key = ?"), (key,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def set_meta(c: Connection, d: Dialect, key: str, value: str) -> None:
    c.execute(
        d.sql("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
        (key, value),
    )


def events(c: Connection, d: Dialect, limit: int) -> list[dict[str, Any]]:
    rows = c.execute(d.sql("SELECT ts, kind, detail FROM events ORDER BY id DESC LIMIT ?"), (limit,)).fetchall()
    return [{"ts": t, "kind": k, "detail": json.loads(detail)} for t, k, detail in rows]


def totals(c: Connection) -> dict[str, int]:
    r = c.execute(
        "SELECT count(*), coalesce(sum(cost_nusd), 0), coalesce(sum(input_tokens), 0),"
        " coalesce(sum(output_tokens), 0) FROM requests"
    ).fetchone()
    return {"requests": int(r[0]), "cost_nusd": int(r[1]), "input_tokens": int(r[2]), "output_tokens": int(r[3])}


def reservations_total(c: Connection) -> int:
    return int(c.execute("SELECT coalesce(sum(amount_nusd), 0) FROM reservations").fetchone()[0])


def report(
    c: Connection, d: Dialect, first_day: str, last_day: str, group_by: str, where: dict[str, str] | None,
) -> list[dict[str, Any]]:
    """Sums per group for days in [first_day, last_day], dearest first (ties by code point).
    Unfiltered, it reads the day totals (one dimension at a time, a few rows a day); filtered, the
    per-day rollups. Values are always parameters; column names come from ``GROUPINGS`` only."""
    check_grouping(group_by, where)
    if not where:
        sql = (f"SELECT key, {_SUMS} FROM day_totals WHERE dim = ? AND day BETWEEN ? AND ?"
               f" GROUP BY key ORDER BY sum(cost_nusd) DESC, key{d.collate}")
        params: list[Any] = [group_by, first_day, last_day]
    else:
        assert group_by in GROUPINGS
        clauses = ["day BETWEEN ? AND ?", *(f"{column} = ?" for column in where)]
        sql = (f"SELECT {group_by} AS key, {_SUMS} FROM rollups WHERE {' AND '.join(clauses)}"
               f" GROUP BY {group_by} ORDER BY sum(cost_nusd) DESC, {group_by}{d.collate}")
        params = [first_day, last_day, *where.values()]
    rows = c.execute(d.sql(sql), params).fetchall()
    return [{"key": r[0], **{n: int(v or 0) for n, v in zip(SUM_COLUMNS, r[1:], strict=True)}} for r in rows]


def estimated(
    c: Connection, d: Dialect, first_day: str, last_day: str, where: dict[str, str] | None,
) -> tuple[int, int]:
    """(calls, nano-dollars) of estimated spend in [first_day, last_day], from ``estimated_rollups``."""
    check_grouping("day", where)
    clauses = ["day BETWEEN ? AND ?", *(f"{column} = ?" for column in where or {})]
    r = c.execute(d.sql("SELECT coalesce(sum(requests), 0), coalesce(sum(cost_nusd), 0) FROM estimated_rollups"
                        f" WHERE {' AND '.join(clauses)}"), [first_day, last_day, *(where or {}).values()]).fetchone()
    return int(r[0]), int(r[1])


def reclaimed(c: Connection, d: Dialect, since_ts: str) -> list[dict[str, Any]]:
    """Holds reclaimed since ``since_ts`` (ISO UTC), oldest first: what each held and why."""
    rows = c.execute(d.sql("SELECT ts, detail FROM events WHERE kind = 'reservation_reclaimed' AND ts >= ?"
                           " ORDER BY id"), (since_ts,)).fetchall()
    return [{"ts": ts, **json.loads(detail)} for ts, detail in rows]


def read_overrides(c: Connection) -> tuple[int, Overrides]:
    """(limits version, limits set with ``set_budget``), read at one moment (one statement)."""
    version, overrides = 0, {}
    for scope, period, value in c.execute(_READ_OVERRIDES).fetchall():
        if scope is None:
            version = int(value)
        else:
            overrides[(scope, period)] = None if value is None else int(value)
    return version, overrides


def set_budget(c: Connection, d: Dialect, scope: str, period: str, limit_nusd: int | None) -> int:
    """Store a limit (None removes it) and raise the limits version; returns the new version. The
    caller's transaction must be ordered with every reservation."""
    c.execute(
        d.sql("INSERT INTO budgets (scope, period, limit_nusd, updated_at) VALUES (?, ?, ?, ?)"
              " ON CONFLICT (scope, period) DO UPDATE SET limit_nusd = excluded.limit_nusd, updated_at = excluded.updated_at"),
        (scope, period, limit_nusd, now_iso()),
    )
    return int(c.execute(_RAISE_LIMITS_VERSION).fetchone()[0])


def reclaim(c: Connection, d: Dialect, now: float, *, pid: int, dead_pids: bool) -> int:
    """Free holds that lapsed by ``now``, or (with ``dead_pids``) whose process on this machine is
    gone; each is logged in events. A pinned hold waits for its journal."""
    sql = d.sql
    doomed = [
        (*r, "expired")
        for r in c.execute(
            sql(f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE expires_at < ?{d.lock_rows}"), (now,)
        ).fetchall()
    ]
    if dead_pids:
        # Only the unexpired ones: an expired reservation of a dead process is already doomed.
        for r in c.execute(
            sql(f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE host = ? AND pid <> ? AND expires_at >= ?"
                f" AND (owner IS NULL OR owner <> ?){d.lock_rows}"),
            (HOST, pid, now, PINNED_OWNER),
        ).fetchall():
            if not alive(r[2]):
                doomed.append((*r, "process_gone"))
    for rid, request_id, holder, host, amount, day, provider, tag, reason in doomed:
        c.execute(sql("DELETE FROM reservations WHERE id = ?"), (rid,))
        _event(c, d, "reservation_reclaimed", {
            "reservation": rid, "request_id": request_id, "pid": holder, "host": host, "amount_nusd": amount,
            "day": day, "provider": provider, "tag": tag, "reason": reason,
        })
    return len(doomed)


def renew(c: Connection, d: Dialect, now: float, *, lease_s: float, owner: str) -> int:
    """Extend ``owner``'s live holds by another lease, never past their own time-to-live."""
    return c.execute(
        d.sql(f"UPDATE reservations SET expires_at = {d.least}(coalesce(hard_expires_at, expires_at), ?)"
              " WHERE owner = ? AND expires_at >= ?"),
        (now + lease_s, owner, now),
    ).rowcount


def rebuild_rollups(
    c: Connection, d: Dialect, day_of: Callable[[str], str],
    executemany: Callable[[str, Sequence[tuple[str, str]]], object],
) -> None:
    """Recompute ``day`` of every row and the sums from the rows. Days whose rows were pruned keep
    their rollups: there is nothing left to recompute them from. Ratings are no sums and stay as they are."""
    sql = d.sql
    pruned_before = meta(c, d, "pruned_before")
    executemany(sql("UPDATE requests SET day = ? WHERE id = ?"),
                [(day_of(ts), rid) for rid, ts in c.execute("SELECT id, ts FROM requests").fetchall()])
    if pruned_before is None:
        c.execute("DELETE FROM rollups")
        c.execute("DELETE FROM estimated_rollups")
    else:
        c.execute(sql("DELETE FROM rollups WHERE day >= ?"), (pruned_before,))
        c.execute(sql("DELETE FROM estimated_rollups WHERE day >= ?"), (pruned_before,))
    c.execute(REFILE_ROLLUPS)
    c.execute(REFILE_ESTIMATED)
    c.execute("DELETE FROM day_totals")
    c.execute(DAY_TOTALS_FROM_ROLLUPS)
    _event(c, d, "rollups_rebuilt", {"kept_before": pruned_before} if pruned_before else {})


def prune_batch(c: Connection, d: Dialect, before_day: str, deleted_before: int) -> int:
    """Delete up to ``PRUNE_BATCH`` raw rows of days before ``before_day`` (their rollups stay).
    The last batch (fewer rows) notes how far rows were pruned and logs the prune, in its own
    transaction. Returns rows deleted.

    Only ``requests`` rows go: ratings are never pruned (``retain_days`` neither). They are small,
    carry what they need of their request, and the quality estimates are made from all of them."""
    sql = d.sql
    n = c.execute(
        sql(f"DELETE FROM requests WHERE {d.row_key} IN (SELECT {d.row_key} FROM requests WHERE day < ? LIMIT ?)"),
        (before_day, PRUNE_BATCH),
    ).rowcount
    if n < PRUNE_BATCH:
        c.execute(
            sql("INSERT INTO meta (key, value) VALUES ('pruned_before', ?)"
                f" ON CONFLICT (key) DO UPDATE SET value = {d.greatest}(meta.value, excluded.value)"),
            (before_day,),
        )
        if deleted_before + n:
            _event(c, d, "rows_pruned", {"before_day": before_day, "rows": deleted_before + n})
    return n


# -- ratings --------------------------------------------------------------------------------------

_RATING_COLUMNS = ", ".join(RatingRow.__dataclass_fields__)
_RATING_VALUES = ", ".join("?" * len(RatingRow.__dataclass_fields__))
_RATING_KEY = "WHERE request_id = ? AND source = ?"
_LOCK_RATING = f"UPDATE ratings SET source = source {_RATING_KEY} RETURNING {_RATING_COLUMNS}"
"""The rating there now, locked until the transaction ends (a no-op update: its values are the old ones)."""
_FIRST_RATING = f"INSERT INTO ratings ({_RATING_COLUMNS}) VALUES ({_RATING_VALUES}) ON CONFLICT (request_id, source) DO NOTHING"
_REPLACE_RATING = (
    f"INSERT INTO ratings ({_RATING_COLUMNS}) VALUES ({_RATING_VALUES}) ON CONFLICT (request_id, source) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in RatingRow.__dataclass_fields__ if c not in ("request_id", "source"))
)


def _rating(values: Sequence[Any]) -> RatingRow:
    request_id, source, ts, tag, model, task_type, score, comment, criteria, rater = values
    return RatingRow(request_id, source, ts, tag, model, task_type, float(score), comment, criteria, rater)


def rated_request(c: Connection, d: Dialect, request_id: str) -> RatedRequest | None:
    r = c.execute(d.sql("SELECT id, tag, task_type, provider, model, status FROM requests WHERE id = ?"),
                  (request_id,)).fetchone()
    return None if r is None else RatedRequest(*r)


def put_rating(c: Connection, d: Dialect, row: RatingRow) -> RatingRow | None:
    """Inside a write transaction: store ``row`` in place of the request's rating of the same source,
    and return the one it replaced (None: the first). The old one is read locked, so the one
    returned is the one replaced even when two servers rate the same request at once; when none
    was there and another's first insert wins the race, its row is the one replaced."""
    values = tuple(getattr(row, c) for c in RatingRow.__dataclass_fields__)
    for _ in range(2):
        old = c.execute(d.sql(_LOCK_RATING), (row.request_id, row.source)).fetchall()
        if old:
            c.execute(d.sql(_REPLACE_RATING), values)
            return _rating(old[0])
        if c.execute(d.sql(_FIRST_RATING), values).rowcount == 1:
            return None
    raise AssertionError(f"rating of {row.request_id!r} by {row.source!r} neither found nor inserted")


def ratings(c: Connection, d: Dialect, since_ts: str | None, limit: int) -> list[RatingRow]:
    """The newest ``limit`` ratings (from ``since_ts`` on, when given), oldest first; ties by key.

    Raises:
        InvalidInput: ``limit`` below 0.
    """
    if limit < 0:
        raise InvalidInput("limit", f"must not be negative, got {limit}", allowed="0 or more")
    where, params = ("WHERE ts >= ?", [since_ts]) if since_ts is not None else ("", [])
    key = [f"{column}{d.collate}" for column in ("ts", "request_id", "source")]
    newest = f"SELECT {_RATING_COLUMNS} FROM ratings {where} ORDER BY {' DESC, '.join(key)} DESC LIMIT ?"
    rows = c.execute(d.sql(f"SELECT * FROM ({newest}) AS newest ORDER BY {', '.join(key)}"), [*params, limit]).fetchall()
    return [_rating(r) for r in rows]
