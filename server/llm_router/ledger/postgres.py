"""The PostgreSQL ledger, for a team whose servers on several machines share one budget.

Same tables, same columns and the same behaviour as the SQLite ledger (``sqlite.py``); schema
changes are the numbered plain-SQL files in ``pg_migrations/``, applied in order on open.

How a reservation stays atomic across machines: check-and-reserve runs in one transaction that
first takes a transaction-scoped advisory lock (``pg_advisory_xact_lock``), so reservations are
made one at a time against one limit, whichever machine asks. The check reads aggregates over a
range of days (a predicate, not rows): row locks cannot stop a concurrent insert from slipping in
beside it, and SERIALIZABLE would, but under contention for one limit most of the racing
transactions would abort and have to be retried. The advisory lock is a short queue instead, held
for a few statements, released at commit or rollback, and by the server if the client dies.
Settle and release need no lock: each is one transaction that only ever lowers what is held.
Times (reservation expiry and leases) come from the database server's clock, so machines whose
clocks disagree still agree on when a hold lapses.
"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from . import base
from .base import (
    DAY_TOTALS_FROM_ROLLUPS,
    HOST,
    ROW_COLUMNS,
    LedgerBase,
    LedgerUnavailable,
    LimitCheck,
    Refusal,
    RequestRow,
    SpareRequest,
    now_iso,
    reclaim_detail,
    report_query,
    report_rows,
    add_to_rollup,
    check_writer_schema,
    estimated_from_rows,
    upsert_day_totals,
    upsert_estimated,
)
from .schema import WRITER_SCHEMA_KEY

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "PostgresLedger", "redact_url"]

T = TypeVar("T")

_INSERT_ROW = f"INSERT INTO requests ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join(['%s'] * len(ROW_COLUMNS))})"
_UPSERT_ROLLUP = """
INSERT INTO rollups (day, provider, model, tag, task_type, requests, errors, input_tokens, output_tokens,
                     cached_tokens, cost_nusd, reference_cost_nusd)
VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s)
""" + add_to_rollup("rollups.")
_UPSERT_DAY_TOTALS = upsert_day_totals("%s", "day_totals.")
_UPSERT_ESTIMATED = upsert_estimated("%s", "estimated_rollups.")
_REFILE_ESTIMATED = estimated_from_rows("estimated_rollups.")
_NOW = "extract(epoch from clock_timestamp())::double precision"
_SPENT = {
    "global": "dim = 'day' AND key BETWEEN %(first)s AND %(last)s",
    "provider": "dim = 'provider' AND key = %(name)s AND day BETWEEN %(first)s AND %(last)s",
    "tag": "dim = 'tag' AND key = %(name)s AND day BETWEEN %(first)s AND %(last)s",
}
_HELD = {"global": "", "provider": " AND provider = %(name)s", "tag": " AND tag = %(name)s"}
_USAGE_SQL = {
    kind: f"SELECT (SELECT coalesce(sum(cost_nusd), 0) FROM day_totals WHERE {_SPENT[kind]}),"
    f" (SELECT coalesce(sum(amount_nusd), 0) FROM reservations WHERE day BETWEEN %(first)s AND %(last)s{held}"
    f" AND expires_at >= {_NOW})"
    for kind, held in _HELD.items()
}
_RESERVATION_COLUMNS = "id, request_id, pid, host, amount_nusd, day, provider, tag"
_REFILE_ROLLUPS = """
INSERT INTO rollups (day, provider, model, tag, task_type, requests, errors, input_tokens, output_tokens,
                     cached_tokens, cost_nusd, reference_cost_nusd)
SELECT day, coalesce(provider, ''), coalesce(model, ''), tag, task_type, count(*),
       count(*) FILTER (WHERE status <> 'ok'), sum(input_tokens), sum(output_tokens), sum(cached_tokens),
       sum(cost_nusd), sum(coalesce(reference_cost_nusd, 0))
FROM requests GROUP BY day, coalesce(provider, ''), coalesce(model, ''), tag, task_type
""" + add_to_rollup("rollups.")


def _load_migrations() -> list[tuple[str, str]]:
    folder = resources.files(__package__).joinpath("pg_migrations")
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


MIGRATIONS: list[tuple[str, str]] = _load_migrations()


def redact_url(url: str) -> str:
    """The URL without its password, to show in messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _lock_key(schema: str, purpose: str) -> int:
    """A 32-bit advisory-lock key per schema, so two ledgers in one database do not queue on each other."""
    return zlib.crc32(f"llm-router:{schema}:{purpose}".encode())


class PostgresLedger(LedgerBase):
    """One connection to a PostgreSQL ledger. Thread-safe; reconnects after a lost connection."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise LedgerUnavailable(
                "a postgresql:// ledger needs psycopg: pip install 'llm-router-mcp[postgres]'"
            ) from None
        self.url = url
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        with self._lock:
            try:
                conn = self._connection()
            except psycopg.OperationalError as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise LedgerUnavailable(
                    f"cannot reach the PostgreSQL ledger at {redact_url(url)}: {reason}. Check that the server"
                    " is up and the URL ($LLM_ROUTER_DB_URL or [ledger] url); give a password in PGPASSWORD"
                    " or ~/.pgpass"
                ) from None
            try:
                self.schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
                self._reserve_key = _lock_key(self.schema, "reserve")
                self.migrations_applied = self._migrate(conn)
                check_writer_schema(self._meta(conn, WRITER_SCHEMA_KEY), redact_url(url))
            except BaseException:
                conn.close()
                raise

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def _connection(self) -> psycopg.Connection[Any]:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(int(self._connect_timeout_s), 1),
                application_name="llm-router",
            )
        return self._conn

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def _migrate(self, conn: psycopg.Connection[Any]) -> list[str]:
        """Apply what is missing, in one transaction, under an advisory lock: several servers may
        open a new ledger at the same moment, and only one of them must migrate it."""
        if self._pending(conn, probe=True) == []:
            return []
        applied: list[str] = []
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.schema, "migrate"),))
            conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name text PRIMARY KEY, applied_at text)")
            for name, sql in self._pending(conn):
                conn.execute(sql.encode())
                conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)",
                             (name, datetime.now(UTC).isoformat()))
                applied.append(name)
        return applied

    @staticmethod
    def _pending(conn: psycopg.Connection[Any], *, probe: bool = False) -> list[tuple[str, str]] | None:
        if probe and conn.execute("SELECT to_regclass('_migrations')").fetchone()[0] is None:  # type: ignore[index]
            return None
        done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
        return [(name, sql) for name, sql in MIGRATIONS if name not in done]

    def _call(self, op: Callable[[psycopg.Connection[Any]], T], *, tx: bool = False) -> T:
        """Run ``op`` on the connection (in a transaction with ``tx``). A connection found dead
        (the server restarted, a network blip) is replaced and ``op`` run once more: every op
        here is safe to repeat, or knows when its first run went through (``record``)."""
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    if not tx:
                        return op(conn)
                    with conn.transaction():
                        return op(conn)
                except psycopg.OperationalError:
                    if attempt == 2 or not conn.broken:
                        raise
                    base.log.warning("lost the connection to the PostgreSQL ledger; reconnecting")
            raise AssertionError("unreachable")

    # -- budgets --------------------------------------------------------------------------------

    def usage(self, check: LimitCheck) -> tuple[int, int]:
        return self._call(lambda c: self._usage(c, check))

    @staticmethod
    def _usage(conn: psycopg.Connection[Any], check: LimitCheck) -> tuple[int, int]:
        row = conn.execute(
            _USAGE_SQL[check.scope_kind],
            {"first": check.first_day, "last": check.last_day, "name": check.scope_name},
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def _first_refusal(
        self, conn: psycopg.Connection[Any], checks: Sequence[LimitCheck], amount_nusd: int
    ) -> Refusal | None:
        for check in checks:
            spent, reserved = self._usage(conn, check)
            if spent + reserved + amount_nusd > check.limit_nusd:
                return Refusal(check, spent, reserved)
        return None

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
        poll: bool = False,
    ) -> str | Refusal:
        if poll:
            # A refusal needs no lock (spend only grows, so it still holds a moment later): calls
            # waiting for holds to settle poll without queueing behind the reservations being made.
            refusal = self._call(lambda c: self._first_refusal(c, checks, amount_nusd))
            if refusal is not None:
                return refusal

        def hold(c: psycopg.Connection[Any]) -> str | Refusal:
            now = c.execute(f"SELECT pg_advisory_xact_lock(%s)::text, {_NOW}", (self._reserve_key,)).fetchone()[1]  # type: ignore[index]
            self._reclaim(c, now, dead_pids=False)
            refusal = self._first_refusal(c, checks, amount_nusd)
            if refusal is not None:
                return refusal
            rid = uuid.uuid4().hex
            expires, hard = self._expiry(now, ttl_s)
            c.execute(
                "INSERT INTO reservations (id, request_id, created_at, expires_at, host, pid, day, provider, tag,"
                " amount_nusd, owner, hard_expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (rid, request_id, now, expires, HOST, self._pid, day, provider, tag, amount_nusd, self.owner, hard),
            )
            return rid

        # Repeated after a lost connection, a hold whose commit went through is made twice; the
        # first, never settled, lapses with its lease.
        return self._call(hold, tx=True)

    def release(self, reservation_id: str) -> None:
        self._call(lambda c: c.execute("DELETE FROM reservations WHERE id = %s", (reservation_id,)), tx=True)

    def record(self, row: RequestRow, *, reservation_id: str | None = None, spare: SpareRequest | None = None) -> None:
        # No spare holds here: a reservation is one round trip to the server either way.
        import psycopg

        def write(c: psycopg.Connection[Any]) -> None:
            gone = reservation_id is not None and c.execute(
                "DELETE FROM reservations WHERE id = %s", (reservation_id,)
            ).rowcount == 0
            if gone:
                # Its hold was reclaimed while the call ran: record the spend, and say so.
                c.execute(
                    "INSERT INTO events (ts, kind, detail) VALUES (%s, 'settled_after_reclaim', %s)",
                    (now_iso(), json.dumps({"reservation": reservation_id, "request_id": row.id,
                                            "cost_nusd": row.cost_nusd})),
                )
            c.execute(_INSERT_ROW, row.values())
            c.execute(_UPSERT_ROLLUP, row.rollup_values())
            c.execute(_UPSERT_DAY_TOTALS, row.totals_values())
            if row.cost_estimated:
                c.execute(_UPSERT_ESTIMATED, row.estimated_values())

        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    write(conn)
                return
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
                base.log.warning("lost the connection to the PostgreSQL ledger while recording; reconnecting")
            # The commit may have gone through before the connection died: the row's id says.
            if self._call(lambda c: c.execute("SELECT 1 FROM requests WHERE id = %s", (row.id,)).fetchone()):
                return
            self._call(write, tx=True)

    def reclaim(self, *, dead_pids: bool = True) -> int:
        def free(c: psycopg.Connection[Any]) -> int:
            now = c.execute(f"SELECT {_NOW}").fetchone()[0]  # type: ignore[index]
            return self._reclaim(c, now, dead_pids=dead_pids)

        return self._call(free, tx=True)

    def _reclaim(self, c: psycopg.Connection[Any], now: float, *, dead_pids: bool) -> int:
        # SKIP LOCKED: two servers tidying at once each reclaim (and log) a hold once, never twice.
        doomed = [
            (*r, "expired")
            for r in c.execute(
                f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE expires_at < %s FOR UPDATE SKIP LOCKED", (now,)
            ).fetchall()
        ]
        if dead_pids:
            for r in c.execute(
                f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE host = %s AND pid <> %s AND expires_at >= %s"
                " FOR UPDATE SKIP LOCKED",
                (HOST, self._pid, now),
            ).fetchall():
                if not base.alive(r[2]):
                    doomed.append((*r, "process_gone"))
        for rid, request_id, pid, host, amount, day, provider, tag, reason in doomed:
            c.execute("DELETE FROM reservations WHERE id = %s", (rid,))
            c.execute(
                "INSERT INTO events (ts, kind, detail) VALUES (%s, 'reservation_reclaimed', %s)",
                (now_iso(), reclaim_detail(rid, request_id, pid, host, amount, day, provider, tag, reason)),
            )
        return len(doomed)

    def renew(self) -> int:
        lease = self.lease_s
        if lease is None:
            return 0
        return self._call(
            lambda c: c.execute(
                f"UPDATE reservations SET expires_at = least(coalesce(hard_expires_at, expires_at), {_NOW} + %s)"
                f" WHERE owner = %s AND expires_at >= {_NOW}",
                (lease, self.owner),
            ).rowcount,
            tx=True,
        )

    def budget_overrides(self) -> dict[tuple[str, str], int | None]:
        rows = self._call(lambda c: c.execute("SELECT scope, period, limit_nusd FROM budgets").fetchall())
        return {(s, p): n for s, p, n in rows}

    def set_budget(self, scope: str, period: str, limit_nusd: int | None) -> None:
        self._call(
            lambda c: c.execute(
                "INSERT INTO budgets (scope, period, limit_nusd, updated_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (scope, period) DO UPDATE SET limit_nusd = excluded.limit_nusd,"
                " updated_at = excluded.updated_at",
                (scope, period, limit_nusd, now_iso()),
            ),
            tx=True,
        )

    def reservations_total(self) -> int:
        row = self._call(lambda c: c.execute("SELECT coalesce(sum(amount_nusd), 0) FROM reservations").fetchone())
        return int(row[0])  # type: ignore[index]

    # -- reading --------------------------------------------------------------------------------

    def report(
        self, first_day: str, last_day: str, group_by: str, *, where: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        # COLLATE "C": ties ordered by code point, as SQLite orders them.
        sql, params = report_query(group_by, first_day, last_day, where, mark="%s", collate=' COLLATE "C"')
        return report_rows(self._call(lambda c: c.execute(sql, params).fetchall()))

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._call(
            lambda c: c.execute("SELECT ts, kind, detail FROM events ORDER BY id DESC LIMIT %s", (limit,)).fetchall()
        )
        return [{"ts": t, "kind": k, "detail": json.loads(d)} for t, k, d in rows]

    def totals(self) -> dict[str, int]:
        r = self._call(
            lambda c: c.execute(
                "SELECT count(*), coalesce(sum(cost_nusd), 0), coalesce(sum(input_tokens), 0),"
                " coalesce(sum(output_tokens), 0) FROM requests"
            ).fetchone()
        )
        assert r is not None
        return {"requests": int(r[0]), "cost_nusd": int(r[1]), "input_tokens": int(r[2]), "output_tokens": int(r[3])}

    def rebuild_rollups(self, day_of: Callable[[str], str]) -> None:
        def rebuild(c: psycopg.Connection[Any]) -> None:
            pruned_before = self._meta(c, "pruned_before")
            with c.cursor() as cur:
                cur.executemany(
                    "UPDATE requests SET day = %s WHERE id = %s",
                    [(day_of(ts), rid) for rid, ts in c.execute("SELECT id, ts FROM requests").fetchall()],
                )
            if pruned_before is None:
                c.execute("DELETE FROM rollups")
                c.execute("DELETE FROM estimated_rollups")
            else:
                c.execute("DELETE FROM rollups WHERE day >= %s", (pruned_before,))
                c.execute("DELETE FROM estimated_rollups WHERE day >= %s", (pruned_before,))
            c.execute(_REFILE_ROLLUPS)
            c.execute(_REFILE_ESTIMATED)
            c.execute("DELETE FROM day_totals")
            c.execute(DAY_TOTALS_FROM_ROLLUPS)
            c.execute("INSERT INTO events (ts, kind, detail) VALUES (%s, 'rollups_rebuilt', %s)",
                      (now_iso(), json.dumps({"kept_before": pruned_before} if pruned_before else {})))

        self._call(rebuild, tx=True)

    def prune(self, before_day: str) -> int:
        def batch(c: psycopg.Connection[Any]) -> int:
            return c.execute(
                "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE day < %s LIMIT %s)",
                (before_day, base.PRUNE_BATCH),
            ).rowcount

        def done(c: psycopg.Connection[Any], deleted: int) -> None:
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('pruned_before', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = greatest(meta.value, excluded.value)",
                (before_day,),
            )
            if deleted:
                c.execute(
                    "INSERT INTO events (ts, kind, detail) VALUES (%s, 'rows_pruned', %s)",
                    (now_iso(), json.dumps({"before_day": before_day, "rows": deleted})),
                )

        deleted = 0
        while True:
            n = self._call(batch, tx=True)
            deleted += n
            if n < base.PRUNE_BATCH:
                self._call(lambda c, total=deleted: done(c, total), tx=True)
                return deleted

    def meta(self, key: str) -> str | None:
        return self._call(lambda c: self._meta(c, key))

    @staticmethod
    def _meta(c: psycopg.Connection[Any], key: str) -> str | None:
        row = c.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._call(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            ),
            tx=True,
        )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        def read(c: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with c.cursor(row_factory=dict_row) as cur:
                cur.execute(_placeholders(sql), list(params))
                return list(cur.fetchall())

        return self._call(read)


_QMARK = re.compile(r"\?")


def _placeholders(sql: str) -> str:
    """``?`` placeholders (as in SQLite) to psycopg's ``%s``; a literal ``%`` is doubled first."""
    return _QMARK.sub("%s", sql.replace("%", "%%"))
