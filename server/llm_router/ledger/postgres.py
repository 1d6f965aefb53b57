"""The PostgreSQL ledger, for a team whose servers on several machines share one budget.

Same tables, same columns and the same behaviour as the SQLite ledger (``sqlite.py``); its schema
is the one history in ``schema.py``, rendered for PostgreSQL and applied in order on open.

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

import os
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .. import timings
from ..types import LedgerBusy
from . import statements
from .base import LedgerBase, log
from .dialect import POSTGRES
from .journal import Journal, Taken
from .pg_session import (
    APPLICATION_NAME,
    MIGRATIONS,
    Connecting,
    busy_error,
    default_journal,
    ledger_identity,
    lock_key,
    migrate,
    redact_url,
    unreachable,
)
from .records import (
    HOST,
    LedgerStorageError,
    LedgerUnavailable,
    LimitCheck,
    LimitsMoved,
    Refusal,
    RequestRow,
    SpareRequest,
    check_writer_schema,
)
from .schema import WRITER_SCHEMA_KEY
from .settling import why
from .statements import INSERT_RESERVATION, LIMITS_VERSION, PINNED_OWNER, Connection, RowStatements

if TYPE_CHECKING:
    import psycopg

__all__ = ["APPLICATION_NAME", "MIGRATIONS", "PostgresLedger", "lock_key", "redact_url"]

_lock_key = lock_key  # the name the advisory-lock tests know it by

T = TypeVar("T")

_ROW_SQL = RowStatements(POSTGRES)
_NOW = "extract(epoch from clock_timestamp())::double precision"
_SPENT = {
    "global": "dim = 'day' AND key BETWEEN %(first)s AND %(last)s",
    "provider": "dim = 'provider' AND key = %(name)s AND day BETWEEN %(first)s AND %(last)s",
    "tag": "dim = 'tag' AND key = %(name)s AND day BETWEEN %(first)s AND %(last)s",
}
_HELD = {"global": "", "provider": " AND provider = %(name)s", "tag": " AND tag = %(name)s"}
# The limits version (raised by every set_budget, under the reservations' advisory lock) comes with
# the sums: a reservation reads it in statements it runs anyway.
_LIMITS_VERSION = LIMITS_VERSION
_USAGE_SQL = {
    kind: f"SELECT (SELECT coalesce(sum(cost_nusd), 0) FROM day_totals WHERE {_SPENT[kind]}),"
    f" (SELECT coalesce(sum(amount_nusd), 0) FROM reservations WHERE day BETWEEN %(first)s AND %(last)s{held}"
    f" AND expires_at >= {_NOW}), {_LIMITS_VERSION}, (SELECT value FROM meta WHERE key = 'writer_schema')"
    for kind, held in _HELD.items()
}
"""(spent, held, limits version, writer schema): a newer build raising the writer schema while this
server runs is noticed by the next reservation that reads any sums (see ``_usage``)."""
_INSERT_RESERVATION = POSTGRES.sql(INSERT_RESERVATION)
_INSERT_RESERVATION_IF_LIMITS = (
    f"INSERT INTO reservations ({statements.RESERVATION_VALUES})"
    " SELECT %s, %s, %s::double precision, %s::double precision, %s, %s::integer, %s, %s, %s, %s::bigint, %s,"
    f" %s::double precision WHERE {_LIMITS_VERSION} = %s"
)
"""A hold with no limit to check, made only if the limits version is still the one the caller
built its (empty) checks from: the version then needs no statement of its own."""

PINNED_FOR_S = 10 * 365 * 86400.0
"""How far ahead a pinned hold's expiry is set (never reached in practice)."""


class PostgresLedger(LedgerBase):
    """One connection to a PostgreSQL ledger. Thread-safe; reconnects after a lost connection."""

    dialect = POSTGRES

    def __init__(
        self, url: str, *, connect_timeout_s: float = 10, busy_timeout_s: float = 30,
        journal_path: str | os.PathLike[str] | None = None, idle_in_transaction_s: float | None = None,
    ) -> None:
        """``busy_timeout_s``: the longest any statement waits for a lock (``lock_timeout``): a
        server frozen inside a transaction holds its locks until its connection drops, and must
        not hold every other server with them. ``journal_path``: where rows the database cannot
        take wait, on this machine's disk (default: a file named after the ledger's identity, as
        the database states it, in the platform's state folder: shared by every server on this
        machine that uses this ledger, however its URL is spelled). ``idle_in_transaction_s``:
        how long PostgreSQL lets one of this ledger's sessions sit idle inside a transaction
        before it ends the session (``idle_in_transaction_session_timeout``): our transactions
        never wait on anything between statements, so only a frozen server's session is ended,
        and the locks it held go with it."""
        super().__init__()
        self._lock_timeout_ms = max(int(busy_timeout_s * 1000), 1)
        if idle_in_transaction_s is None:  # read now, not when this was defined: a test may change it
            idle_in_transaction_s = timings.PG_IDLE_IN_TRANSACTION_S
        self._idle_timeout_ms = max(int(idle_in_transaction_s * 1000), 1)
        self._tuned: Any = None
        """The connection ``lock_timeout`` was set on (a new one after a reconnection needs it again)."""
        try:
            import psycopg
        except ImportError:
            raise LedgerUnavailable(
                "a postgresql:// ledger needs psycopg: pip install 'llm-router-mcp[postgres]'"
            ) from None
        self._entry_errors = (psycopg.IntegrityError, psycopg.DataError, psycopg.ProgrammingError, ValueError, TypeError)
        self._storage_errors = (psycopg.OperationalError,)
        self.url = url
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._connecting: Connecting | None = None
        """A connection being made on a thread of its own, which a step with a deadline stopped
        waiting for: the next step waits for it rather than start another."""
        with self._lock:
            try:
                conn = self._connection()
            except psycopg.OperationalError as e:
                raise unreachable(url, e) from None
            try:
                self.schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
                self._reserve_key = lock_key(self.schema, "reserve")
                self.migrations_applied = migrate(conn, self.schema, MIGRATIONS)
                self._writer_schema = statements.meta(conn, POSTGRES, WRITER_SCHEMA_KEY)
                check_writer_schema(self._writer_schema, redact_url(url))
                where = Path(journal_path) if journal_path is not None else default_journal(ledger_identity(conn, self.schema))
            except BaseException:
                conn.close()
                raise
        self.journal = Journal(where)
        if self.journal.pending():  # left by a server on this machine that could not write
            with self._waiting(timings.UPKEEP_WAIT_S):
                try:
                    self.replay_journal()
                except (psycopg.Error, LedgerBusy, LedgerStorageError) as e:
                    log.warning("the ledger's journal %s waits: %s", self.journal.path, why(e))

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one (the caller holds ``_lock``).

        Regression: a reconnection during a call waited the whole ``connect_timeout`` (10 s) for
        a database that accepted the connection and never answered, far past the call's deadline,
        holding the call's answer (and this server's connection) meanwhile. Now a step with a
        deadline (``run_within``, upkeep) waits for a new connection no longer than it has left;
        past that it fails (a paid call's row then goes to the journal, as for a busy ledger),
        while the attempt goes on in the background for the next step to pick up."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        until = getattr(self._wait, "until", None)
        attempt = self._connecting
        if attempt is not None and attempt.failed:  # an old failure says nothing of now: try afresh
            attempt = self._connecting = None
        inherited = attempt is not None
        if attempt is None:
            if until is None:  # no deadline: connect here, bounded by connect_timeout alone
                self._conn = self._connect()
                return self._conn
            attempt = self._connecting = Connecting(self._connect)
        left = None if until is None else max(until - time.monotonic(), 0.0)
        if not attempt.done.wait(left):
            import psycopg

            raise psycopg.errors.ConnectionTimeout(
                f"no connection within the {left:.1f} s this step could wait (a new connection is still being "
                f"tried, for up to {self._connect_timeout_s:g} s)"
            )
        self._connecting = None
        if inherited and attempt.failed:  # begun before this step, and failed while it waited: its own try
            return self._connection()
        self._conn = attempt.result()
        return self._conn

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(
            self.url, autocommit=True, connect_timeout=max(int(self._connect_timeout_s), 1),
            application_name=APPLICATION_NAME,
        )

    def _close(self) -> None:
        with self._lock:
            if self._connecting is not None:
                self._connecting.abandon()
                self._connecting = None
            if self._conn is not None:
                self._conn.close()

    def _call(self, op: Callable[[psycopg.Connection[Any]], T], *, tx: bool = False, retry: bool = True) -> T:
        """Run ``op`` on the connection (in a transaction with ``tx``, which first replays the
        journal if anything waits there). A connection found dead (the server restarted, a
        network blip) is replaced and ``op`` run once more (unless ``retry`` is False): every op
        here is safe to repeat, or knows when its first run went through (``record``).

        Raises:
            LedgerBusy: a lock was not had within ``lock_timeout`` (or the step's own deadline).
            LedgerStorageError: the database cannot be reached, or could not take the step.
        """
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                t0 = time.monotonic()
                conn: psycopg.Connection[Any] | None = None
                try:
                    conn = self._connection()
                    if conn is not self._tuned:
                        conn.execute(
                            "SELECT set_config('lock_timeout', %s, false),"
                            " set_config('idle_in_transaction_session_timeout', %s, false)",
                            (f"{self._lock_timeout_ms}ms", f"{self._idle_timeout_ms}ms"),
                        )
                        self._tuned = conn
                    if not tx:
                        return op(conn)
                    return self._in_transaction(conn, op)
                except psycopg.errors.LockNotAvailable:
                    assert conn is not None
                    raise busy_error(
                        conn, where=f"the PostgreSQL ledger {self.location}", reserve_key=self._reserve_key,
                        schema=self.schema, idle_timeout_ms=self._idle_timeout_ms, waited_s=time.monotonic() - t0,
                    ) from None
                except psycopg.OperationalError as e:
                    if attempt == 1 and retry and conn is not None and conn.broken:
                        log.warning("lost the connection to the PostgreSQL ledger; reconnecting")
                        continue
                    raise self._storage_error(e) from e
            raise AssertionError("unreachable")

    def _storage_error(self, error: Exception) -> LedgerStorageError:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return LedgerStorageError(
            f"the PostgreSQL ledger {self.location} cannot be reached or could not take this step: {reason}. "
            "Nothing was reserved or spent by it; check that the database is up and reachable from this machine, "
            "then try again"
        )

    def _in_transaction(self, conn: psycopg.Connection[Any], op: Callable[[psycopg.Connection[Any]], T]) -> T:
        taken: Taken | None = None
        committed = False
        try:
            with conn.transaction():
                until = getattr(self._wait, "until", None)
                if until is not None:  # the step's deadline comes before the lock timeout
                    ms = max(int((until - time.monotonic()) * 1000), 1)
                    if ms < self._lock_timeout_ms:
                        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{ms}ms",))
                taken = self._replay_in(conn)
                result = op(conn)
            committed = True
            return result
        finally:
            if taken is not None:
                taken.finish(committed)

    def replay_journal(self) -> None:
        self._call(lambda c: None, tx=True)  # a transaction replays the journal as it begins

    def _savepoint(self, c: Connection) -> AbstractContextManager[object]:
        import psycopg

        assert isinstance(c, psycopg.Connection)
        return c.transaction()

    def _connection_lost(self, c: Connection) -> bool:
        return bool(getattr(c, "broken", False))

    # -- budgets --------------------------------------------------------------------------------

    def usage(self, check: LimitCheck) -> tuple[int, int]:
        return self._call(lambda c: self._usage(c, check))[:2]

    def _usage(self, conn: psycopg.Connection[Any], check: LimitCheck) -> tuple[int, int, int]:
        """(spent, reserved, limits version), in one statement."""
        row = conn.execute(
            _USAGE_SQL[check.scope_kind],
            {"first": check.first_day, "last": check.last_day, "name": check.scope_name},
        ).fetchone()
        assert row is not None
        if row[3] != self._writer_schema:  # raised by a newer build since: refused if this one cannot keep it
            check_writer_schema(row[3], self.location)
            self._writer_schema = row[3]
        version = int(row[2])
        if version > self.limits_version_seen:
            self.limits_version_seen = version
        return int(row[0]), int(row[1]), version

    def _first_refusal(
        self, conn: psycopg.Connection[Any], checks: Sequence[LimitCheck], amount_nusd: int
    ) -> tuple[Refusal | None, int | None]:
        """(the first check that would refuse, or None; the limits version, read with the first
        check's sums: None when there are no checks)."""
        version = None
        for check in checks:
            spent, reserved, read = self._usage(conn, check)
            version = read if version is None else version
            if spent + reserved + amount_nusd > check.limit_nusd:
                return Refusal(check, spent, reserved), version
        return None, version

    def reserve(
        self, checks: Sequence[LimitCheck], amount_nusd: int, *, request_id: str, day: str, provider: str, tag: str,
        ttl_s: float, poll: bool = False, limits_version: int | None = None,
    ) -> str | Refusal | LimitsMoved:
        if poll:
            # A refusal needs no lock (spend only grows, so it still holds a moment later): calls
            # waiting for holds to settle poll without queueing behind the reservations being made.
            # One on limits set_budget has replaced is decided again under the lock, on the new ones.
            refusal, seen = self._call(lambda c: self._first_refusal(c, checks, amount_nusd))
            if refusal is not None and (limits_version is None or seen == limits_version):
                return refusal

        def hold(c: psycopg.Connection[Any]) -> str | Refusal | LimitsMoved:
            now = c.execute(f"SELECT pg_advisory_xact_lock(%s)::text, {_NOW}", (self._reserve_key,)).fetchone()[1]  # type: ignore[index]
            statements.reclaim(c, POSTGRES, now, pid=self._pid, dead_pids=False)
            # Read after the lock is held, by statements of their own: set_budget takes the same
            # lock, so these see any limit it set before, and none can be set until this commits.
            refusal, seen = self._first_refusal(c, checks, amount_nusd)
            rid = uuid.uuid4().hex
            expires, hard = self._expiry(now, ttl_s)
            values = (rid, request_id, now, expires, HOST, self._pid, day, provider, tag, amount_nusd, self.owner, hard)
            if limits_version is not None and seen != limits_version:
                if seen is None and c.execute(_INSERT_RESERVATION_IF_LIMITS, (*values, limits_version)).rowcount:
                    return rid  # no limit applied, and none has been set since
                # set_budget changed the limits since the checks were built: nothing is decided on
                # them; the limits in the store go back for the checks to be built anew.
                return LimitsMoved(*self._read_overrides(c))
            if refusal is not None:
                return refusal
            c.execute(_INSERT_RESERVATION, values)
            return rid

        # Repeated after a lost connection, a hold whose commit went through is made twice; the
        # first, never settled, lapses with its lease.
        return self._call(hold, tx=True)

    def release(self, reservation_id: str) -> None:
        self._call(lambda c: c.execute("DELETE FROM reservations WHERE id = %s", (reservation_id,)), tx=True)

    async def _keep_journaled_counted(self, row: RequestRow, holds: Sequence[str]) -> None:
        """The holds of a row gone to the journal are pinned.

        Regression: the journal is on this machine's disk, and only servers here replay it; the
        journaled call's holds were leases that lapsed about ``lease_s`` after its server died,
        and servers on other machines then stopped counting its spend: they granted calls past
        the limit. Now, the database being reachable (only locked, or busy), the holds are pinned
        at once by a statement of their own that waits for none of the locks the row did: they
        never lapse, and only the replay that writes the row removes them. What remains: a
        server cut off from PostgreSQL cannot pin them, and if it dies before it reconnects its
        charge is counted nowhere else until a server on its machine replays its journal."""
        if holds and row.cost_nusd:  # a call that cost nothing has no charge to keep counted
            try:
                await self.run_within(timings.PIN_WAIT_S, self.pin_holds, holds, row)
            except Exception as e:  # the hold stays a lease, as before
                log.warning("could not pin the holds of journaled request %s (%s): they lapse with their "
                            "lease if this server stops before its journal is replayed", row.id, why(e))

    def pin_holds(self, holds: Sequence[str], row: RequestRow) -> int:
        """Make the holds of a call whose row waits in the journal never lapse (a short transaction
        of its own, without the journal's replay, waiting at most the step's deadline for a lock,
        as none of the locks a row waits for are needed: reservations take no table lock). The first,
        the call's own, is made again for the row's cost should it have lapsed already. Returns
        how many were pinned; 0 without a live connection (no reconnection is tried for this)."""

        def pin(c: psycopg.Connection[Any]) -> int:
            with c.transaction():
                until = getattr(self._wait, "until", None)
                if until is not None:
                    ms = max(int((until - time.monotonic()) * 1000), 1)
                    c.execute("SELECT set_config('lock_timeout', %s, true)", (f"{min(ms, self._lock_timeout_ms)}ms",))
                n = c.execute(
                    f"UPDATE reservations SET expires_at = {_NOW} + %s, hard_expires_at = {_NOW} + %s, owner = %s"
                    " WHERE id = ANY(%s)",
                    (PINNED_FOR_S, PINNED_FOR_S, PINNED_OWNER, list(holds)),
                ).rowcount
                if not c.execute("SELECT 1 FROM reservations WHERE id = %s", (holds[0],)).fetchone():
                    now = c.execute(f"SELECT {_NOW}").fetchone()[0]  # type: ignore[index]
                    c.execute(_INSERT_RESERVATION, (holds[0], row.id, now, now + PINNED_FOR_S, HOST, self._pid,
                                                    row.day, row.provider or "", row.tag, row.cost_nusd,
                                                    PINNED_OWNER, now + PINNED_FOR_S))
                    n += 1
                return n

        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                return 0
            return self._call(pin, retry=False)

    def record(self, row: RequestRow, *, reservation_id: str | None = None, spare: SpareRequest | None = None) -> None:
        # No spare holds here: a reservation is one round trip to the server either way.

        def write(c: psycopg.Connection[Any]) -> None:
            if reservation_id is not None and not c.execute(
                "DELETE FROM reservations WHERE id = %s", (reservation_id,)
            ).rowcount:
                statements.late_settle(c, POSTGRES, row, reservation_id)  # its hold was reclaimed meanwhile
            _ROW_SQL.write(c, row)

        with self._lock:
            try:
                self._call(write, tx=True, retry=False)
                return
            except LedgerStorageError:
                if self._conn is None or not self._conn.broken:
                    raise
                log.warning("lost the connection to the PostgreSQL ledger while recording; reconnecting")
            # The commit may have gone through before the connection died: the row's id says.
            if self._call(lambda c: c.execute("SELECT 1 FROM requests WHERE id = %s", (row.id,)).fetchone()):
                return
            self._call(write, tx=True)

    # -- the one connection ----------------------------------------------------------------------

    def _read(self, op: Callable[[Connection], T]) -> T:
        return self._call(op)

    def _write(self, op: Callable[[Connection], T]) -> T:
        return self._call(op, tx=True)

    def _now(self, c: Connection) -> float:
        return float(c.execute(f"SELECT {_NOW}").fetchone()[0])

    def _serialise_holds(self, c: Connection) -> None:
        """set_budget takes the reservations' advisory lock: a reservation racing it is ordered
        with it, and every one after it sees the new version."""
        c.execute("SELECT pg_advisory_xact_lock(%s)", (self._reserve_key,))

    def _long_transaction(self, c: Connection) -> None:
        # Days are worked out here between statements: a long pause, not a frozen server.
        c.execute("SET LOCAL idle_in_transaction_session_timeout = 0")

    def _executemany(self, c: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        import psycopg

        assert isinstance(c, psycopg.Connection)
        with c.cursor() as cur:
            cur.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        def read(c: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with c.cursor(row_factory=dict_row) as cur:
                cur.execute(_placeholders(sql), list(params))
                return list(cur.fetchall())

        return self._call(read)


def _placeholders(sql: str) -> str:
    """``?`` placeholders (as in SQLite) to psycopg's ``%s``; a literal ``%`` is doubled first."""
    return POSTGRES.sql(sql)

