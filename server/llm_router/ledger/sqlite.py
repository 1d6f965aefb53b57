"""The SQLite ledger: request rows, per-day rollups, reservations and budget overrides, in one file.

Every write that must be atomic is one ``BEGIN IMMEDIATE`` transaction, so several server
processes can share the file: check-and-reserve (sums of spend and of reservations compared with
each limit, then the insert), and settle (the reservation deleted, the row inserted, the rollup
updated). Methods here are synchronous; ``run`` calls them on a worker thread, one at a time.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import sqlite_utils

from .schema import migrate

__all__ = ["LimitCheck", "Refusal", "RequestRow", "Ledger", "GROUPINGS"]

P = ParamSpec("P")
T = TypeVar("T")

ScopeKind = Literal["global", "provider", "tag"]
GROUPINGS = ("provider", "model", "task_type", "tag", "day")


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One limit to hold: spend in [first_day, last_day] for a scope must stay within limit_nusd."""

    name: str
    scope_kind: ScopeKind
    scope_name: str | None
    first_day: str
    last_day: str
    limit_nusd: int
    resets_at: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused: the first limit it would break, with the figures."""

    check: LimitCheck
    spent_nusd: int
    reserved_nusd: int


@dataclass(slots=True)
class RequestRow:
    id: str
    ts: str
    day: str
    status: str
    tag: str = ""
    task_type: str = ""
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_nusd: int = 0
    cost_usd: str = "0"
    cost_estimated: int = 0
    prices: str | None = None
    reference_cost_nusd: int | None = None
    latency_ms: int = 0
    attempts: str = "[]"
    error_code: str | None = None
    error: str | None = None
    prompt_hash: str | None = None
    prompt: str | None = None
    strategy: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_ROW_COLUMNS = [f for f in RequestRow.__dataclass_fields__ if f != "extra"]
_INSERT_ROW = f"INSERT INTO requests ({', '.join(_ROW_COLUMNS)}) VALUES ({', '.join('?' * len(_ROW_COLUMNS))})"
_UPSERT_ROLLUP = """
INSERT INTO rollups (day, provider, model, tag, task_type, requests, errors, input_tokens, output_tokens,
                     cached_tokens, cost_nusd, reference_cost_nusd)
VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, provider, model, tag, task_type) DO UPDATE SET
  requests = requests + 1,
  errors = errors + excluded.errors,
  input_tokens = input_tokens + excluded.input_tokens,
  output_tokens = output_tokens + excluded.output_tokens,
  cached_tokens = cached_tokens + excluded.cached_tokens,
  cost_nusd = cost_nusd + excluded.cost_nusd,
  reference_cost_nusd = reference_cost_nusd + excluded.reference_cost_nusd
"""
# One statement per scope kind, so each is prepared once and reused.
_USAGE_SQL: dict[ScopeKind, str] = {
    "global": "SELECT (SELECT coalesce(sum(cost_nusd), 0) FROM rollups WHERE day BETWEEN ?1 AND ?2),"
    " (SELECT coalesce(sum(amount_nusd), 0) FROM reservations WHERE day BETWEEN ?1 AND ?2)",
    "provider": "SELECT (SELECT coalesce(sum(cost_nusd), 0) FROM rollups WHERE provider = ?3 AND day BETWEEN ?1 AND ?2),"
    " (SELECT coalesce(sum(amount_nusd), 0) FROM reservations WHERE provider = ?3 AND day BETWEEN ?1 AND ?2)",
    "tag": "SELECT (SELECT coalesce(sum(cost_nusd), 0) FROM rollups WHERE tag = ?3 AND day BETWEEN ?1 AND ?2),"
    " (SELECT coalesce(sum(amount_nusd), 0) FROM reservations WHERE tag = ?3 AND day BETWEEN ?1 AND ?2)",
}
_HOST = socket.gethostname()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Ledger:
    """One open ledger file. Thread-safe; all writes serialised on one connection."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30, cached_statements=256
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self.db = sqlite_utils.Database(self._conn)
        self.migrations_applied = migrate(self.db)
        self._pid = os.getpid()

    # -- plumbing -------------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ledger method on a worker thread. Not cancellable midway: a reservation made
        is always returned to the caller, who must then settle or release it."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._limiter)

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- budgets --------------------------------------------------------------------------------

    def usage(self, check: LimitCheck) -> tuple[int, int]:
        """(spent, reserved) in nano-dollars for a limit's scope and period."""
        with self._lock:
            return self._usage(check)

    def _usage(self, check: LimitCheck) -> tuple[int, int]:
        row = self._conn.execute(
            _USAGE_SQL[check.scope_kind], (check.first_day, check.last_day, check.scope_name)
            if check.scope_kind != "global"
            else (check.first_day, check.last_day),
        ).fetchone()
        return int(row[0]), int(row[1])

    def reserve(
        self,
        checks: Sequence[LimitCheck],
        amount_nusd: int,
        *,
        request_id: str,
        day: str,
        provider: str,
        tag: str,
        ttl_s: float,
    ) -> str | Refusal:
        """Atomically: if ``amount_nusd`` fits under every check, hold it and return the
        reservation id; otherwise hold nothing and return the first refusal."""
        now = time.time()
        with self._tx() as c:
            self._reclaim(c, now, dead_pids=False)
            for check in checks:
                spent, reserved = self._usage(check)
                if spent + reserved + amount_nusd > check.limit_nusd:
                    return Refusal(check, spent, reserved)
            rid = uuid.uuid4().hex
            c.execute(
                "INSERT INTO reservations (id, request_id, created_at, expires_at, host, pid, day, provider, tag,"
                " amount_nusd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rid, request_id, now, now + ttl_s, _HOST, self._pid, day, provider, tag, amount_nusd),
            )
            return rid

    def release(self, reservation_id: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    def record(self, row: RequestRow, *, reservation_id: str | None = None) -> None:
        """Write a request row (and release its reservation) in one transaction, rollups included."""
        values = [getattr(row, f) for f in _ROW_COLUMNS]
        with self._tx() as c:
            if reservation_id is not None:
                c.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            c.execute(_INSERT_ROW, values)
            c.execute(
                _UPSERT_ROLLUP,
                (
                    row.day,
                    row.provider or "",
                    row.model or "",
                    row.tag,
                    row.task_type,
                    0 if row.status == "ok" else 1,
                    row.input_tokens,
                    row.output_tokens,
                    row.cached_tokens,
                    row.cost_nusd,
                    row.reference_cost_nusd or 0,
                ),
            )

    def reclaim(self, *, dead_pids: bool = True) -> int:
        """Free reservations that expired, or (same host) whose process is gone. Logged as events."""
        with self._tx() as c:
            return self._reclaim(c, time.time(), dead_pids=dead_pids)

    def _reclaim(self, c: sqlite3.Connection, now: float, *, dead_pids: bool) -> int:
        doomed = c.execute(
            "SELECT id, request_id, pid, host, amount_nusd FROM reservations WHERE expires_at < ?", (now,)
        ).fetchall()
        if dead_pids:
            # Only the unexpired ones: an expired reservation of a dead process is already doomed.
            for row in c.execute(
                "SELECT id, request_id, pid, host, amount_nusd FROM reservations"
                " WHERE host = ? AND pid != ? AND expires_at >= ?",
                (_HOST, self._pid, now),
            ).fetchall():
                if not _alive(row[2]):
                    doomed.append(row)
        for rid, request_id, pid, host, amount in doomed:
            c.execute("DELETE FROM reservations WHERE id = ?", (rid,))
            c.execute(
                "INSERT INTO events (ts, kind, detail) VALUES (?, 'reservation_reclaimed', ?)",
                (
                    _now_iso(),
                    json.dumps(
                        {"reservation": rid, "request_id": request_id, "pid": pid, "host": host, "amount_nusd": amount}
                    ),
                ),
            )
        return len(doomed)

    def budget_overrides(self) -> dict[tuple[str, str], int | None]:
        with self._lock:
            rows = self._conn.execute("SELECT scope, period, limit_nusd FROM budgets").fetchall()
        return {(s, p): n for s, p, n in rows}

    def set_budget(self, scope: str, period: str, limit_nusd: int | None) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO budgets (scope, period, limit_nusd, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (scope, period) DO UPDATE SET limit_nusd = excluded.limit_nusd,"
                " updated_at = excluded.updated_at",
                (scope, period, limit_nusd, _now_iso()),
            )

    def reservations_total(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(sum(amount_nusd), 0) FROM reservations").fetchone()[0])

    # -- reading --------------------------------------------------------------------------------

    def report(
        self, first_day: str, last_day: str, group_by: str, *, where: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Sums per group over the rollups for days in [first_day, last_day]."""
        if group_by not in GROUPINGS:
            raise ValueError(f"group_by must be one of {GROUPINGS}")
        clauses = ["day BETWEEN ? AND ?"]
        params: list[Any] = [first_day, last_day]
        for column, value in (where or {}).items():
            if column not in GROUPINGS:
                raise ValueError(f"cannot filter on {column!r}")
            clauses.append(f"{column} = ?")
            params.append(value)
        sql = (
            f"SELECT {group_by} AS key, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens),"
            f" sum(cached_tokens), sum(cost_nusd), sum(reference_cost_nusd) FROM rollups"
            f" WHERE {' AND '.join(clauses)} GROUP BY {group_by} ORDER BY sum(cost_nusd) DESC, key"
        )
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        names = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost_nusd", "reference_cost_nusd")
        return [{"key": r[0], **{n: int(v or 0) for n, v in zip(names, r[1:], strict=True)}} for r in rows]

    def rows(self, *, day: str | None = None, limit: int = 50, request_id: str | None = None) -> list[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if day is not None:
            clauses.append("day = ?")
            params.append(day)
        if request_id is not None:
            clauses.append("id = ?")
            params.append(request_id)
        sql = "SELECT * FROM requests" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        sql += " ORDER BY ts DESC, rowid DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            cur = self._conn.execute(sql, params)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT ts, kind, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"ts": t, "kind": k, "detail": json.loads(d)} for t, k, d in rows]

    def totals(self) -> dict[str, int]:
        """Sums over the raw rows (the truth), for checks against the rollups."""
        with self._lock:
            r = self._conn.execute(
                "SELECT count(*), coalesce(sum(cost_nusd), 0), coalesce(sum(input_tokens), 0),"
                " coalesce(sum(output_tokens), 0) FROM requests"
            ).fetchone()
        return {"requests": r[0], "cost_nusd": r[1], "input_tokens": r[2], "output_tokens": r[3]}

    def rebuild_rollups(self, day_of: Callable[[str], str]) -> None:
        """Recompute ``day`` of every row (after a time-zone change) and the rollups from the rows."""
        with self._tx() as c:
            for rid, ts in c.execute("SELECT id, ts FROM requests").fetchall():
                c.execute("UPDATE requests SET day = ? WHERE id = ?", (day_of(ts), rid))
            c.execute("DELETE FROM rollups")
            c.execute(
                "INSERT INTO rollups (day, provider, model, tag, task_type, requests, errors, input_tokens,"
                " output_tokens, cached_tokens, cost_nusd, reference_cost_nusd)"
                " SELECT day, coalesce(provider, ''), coalesce(model, ''), tag, task_type, count(*),"
                " sum(status != 'ok'), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_nusd),"
                " sum(coalesce(reference_cost_nusd, 0)) FROM requests"
                " GROUP BY day, coalesce(provider, ''), coalesce(model, ''), tag, task_type"
            )
            c.execute(
                "INSERT INTO events (ts, kind, detail) VALUES (?, 'rollups_rebuilt', '{}')", (_now_iso(),)
            )

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error), holding the thread lock."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        # There os.kill(pid, 0) does not probe: it terminates the process. Expiry reclaims instead.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def row_asdict(row: RequestRow) -> dict[str, Any]:
    return asdict(row)
