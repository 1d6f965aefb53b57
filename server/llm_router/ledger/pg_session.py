"""A PostgreSQL ledger's session: connecting (on a thread of its own, so a step can stop waiting),
its schema's migrations, the advisory-lock keys, the ledger's identity and its journal's place on
this machine's disk, and naming the session that holds a lock a step waited for in vain.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..types import LedgerBusy
from .ddl import create_table
from .dialect import POSTGRES
from .records import LedgerUnavailable
from .schema import LEDGER_ID_KEY, MIGRATIONS_TABLE, Statements, render
from .statements import meta

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "APPLICATION_NAME", "MIGRATIONS", "Connecting", "busy_error", "default_journal", "ledger_identity", "lock_key",
    "migrate", "redact_url", "unreachable",
]


MIGRATIONS: list[tuple[str, Statements]] = render(POSTGRES)
"""The schema's history (``schema.py``) as the PostgreSQL ledger runs it."""


def unreachable(url: str, error: Exception) -> LedgerUnavailable:
    """What a server is told when the ledger's database does not take its connection."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return LedgerUnavailable(
        f"cannot reach the PostgreSQL ledger at {redact_url(url)}: {reason}. Check that the server"
        " is up and the URL ($LLM_ROUTER_DB_URL or [ledger] url); give a password in PGPASSWORD"
        " or ~/.pgpass"
    )


def redact_url(url: str) -> str:
    """The URL without its password, to show in messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


APPLICATION_NAME = "llm-router"
"""The ``application_name`` of the ledger's sessions, as ``pg_stat_activity`` shows them."""
_LOCK_HOLDER = """
SELECT a.pid, coalesce(a.application_name, ''), host(a.client_addr),
       extract(epoch from clock_timestamp() - a.xact_start)::float8, a.state
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND a.pid IN (
    SELECT l.pid FROM pg_locks l
    WHERE l.granted AND (
        (l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND l.classid = 0 AND l.objid = %(key)s::bigint::oid AND l.objsubid = 1)
        OR (l.locktype = 'relation' AND l.mode <> 'AccessShareLock' AND l.relation IN (
            SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s))))
ORDER BY coalesce(a.state LIKE 'idle in transaction%%', false) DESC, a.xact_start NULLS LAST
LIMIT 1
"""
"""The session holding a lock the ledger's steps wait for: the reservations' advisory lock
(``pg_advisory_xact_lock`` of a key below 2^32: classid 0, objid the key, objsubid 1), or any lock
but ``AccessShareLock`` (a plain read's, which no write of ours waits for) on a table of the
ledger's schema (row locks come with a table lock: a writer's RowExclusiveLock)."""


def lock_key(schema: str, purpose: str) -> int:
    """A 32-bit advisory-lock key per schema, so two ledgers in one database do not queue on each other."""
    return zlib.crc32(f"llm-router:{schema}:{purpose}".encode())


def migrate(conn: psycopg.Connection[Any], schema: str, migrations: Sequence[tuple[str, Statements]]) -> list[str]:
    """Apply what is missing of ``migrations`` (name, statements), in one transaction, under an
    advisory lock: several servers may open a new ledger at the same moment, and only one of them
    must migrate it."""
    if _has_migrations_table(conn) and _pending(conn, migrations) == []:
        return []
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema, "migrate"),))
        conn.execute(create_table(MIGRATIONS_TABLE, POSTGRES, if_not_exists=True).encode())
        for name, statements in _pending(conn, migrations):
            for sql in statements:
                conn.execute(sql.encode())
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)",
                         (name, datetime.now(UTC).isoformat()))
            applied.append(name)
    return applied


def _has_migrations_table(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _pending(
    conn: psycopg.Connection[Any], migrations: Sequence[tuple[str, Statements]],
) -> list[tuple[str, Statements]]:
    done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
    return [(name, sql) for name, sql in migrations if name not in done]


def busy_error(
conn: psycopg.Connection[Any], *, where: str, reserve_key: int, schema: str, idle_timeout_ms: int, waited_s: float,
) -> LedgerBusy:
    """The error of a step that did not get its lock in time, naming the session that holds a
    lock such a step waits for (``where``: the ledger, as a person is told it): the reservations' advisory lock, or a write lock on one of the
    ledger's tables (a frozen server holds its locks until its connection drops). Of those,
    one idle inside its transaction (frozen) comes first, then the oldest transaction.

    Regression: the session named was the oldest idle in transaction anywhere in the
    database, often an unrelated application's harmless one, and the operator was told to
    end it with pg_terminate_backend."""
    import psycopg

    holder = None
    with contextlib.suppress(psycopg.Error):
        holder = conn.execute(_LOCK_HOLDER, {"key": reserve_key, "schema": schema}).fetchone()
    if holder is None:
        return LedgerBusy(
            f"ledger busy: a lock in {where} was held by another session for the whole {waited_s:.1f} s this "
            "step could wait. Nothing was reserved or spent by it; try again in a few seconds",
            retry_after=1.0, waited_s=waited_s,
        )
    pid, app, addr, age, state = holder
    frozen = (state or "").startswith("idle in transaction")
    since = f" for {age:.0f} s" if age is not None else ""
    local = "a local socket" if state else "an address not shown"  # hidden: another role's session
    ends = (f"; PostgreSQL ends it once it has been idle in its transaction for {idle_timeout_ms / 1000:g} s"
            if frozen and app == APPLICATION_NAME else "")
    return LedgerBusy(
        f"ledger busy: session {pid} ({app or 'no application name'}, from {addr or local}) has kept a "
        f"transaction open in {where}{since} ({state or 'state not shown'}), holding a lock this step waited "
        f"{waited_s:.1f} s for: a server frozen mid-transaction (stopped, or its machine asleep) keeps "
        f"its locks until its connection drops{ends}. Nothing was reserved or spent by this step. Try again in a "
        f"few seconds; if it lasts, resume that server or end its session (SELECT pg_terminate_backend({pid}))",
        retry_after=5.0, waited_s=waited_s, holder_pid=int(pid), stuck_s=None if age is None else float(age),
    )


class Connecting:
    """One connection attempt on a thread of its own, so that a step can stop waiting for it (a
    database that accepts connections and never answers holds ``connect`` for its whole
    timeout). Its outcome waits for whoever comes next; abandoned, it closes what it made."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self._mutex = threading.Lock()
        self._conn: Any = None
        self._error: BaseException | None = None
        self._abandoned = False
        threading.Thread(target=self._run, args=(connect,), name="ledger-connect", daemon=True).start()

    def _run(self, connect: Callable[[], Any]) -> None:
        try:
            conn, error = connect(), None
        except BaseException as e:  # handed to the step that picks it up
            conn, error = None, e
        with self._mutex:
            self._conn, self._error = conn, error
            abandoned = self._abandoned
            self.done.set()
        if abandoned and conn is not None:
            conn.close()

    @property
    def failed(self) -> bool:
        return self.done.is_set() and self._error is not None

    def result(self) -> Any:
        """The connection made (once ``done``), or the error that stopped it."""
        if self._error is not None:
            raise self._error
        return self._conn

    def abandon(self) -> None:
        """No one will take the outcome (the ledger closes): close what was or will be made."""
        with self._mutex:
            self._abandoned = True
            conn = self._conn if self.done.is_set() else None
        if conn is not None:
            conn.close()


def ledger_identity(conn: psycopg.Connection[Any], schema: str) -> str:
    """What the database says this ledger is: the id in its ``meta`` (made by the first server
    to open it), its database and its schema. Every server reaching it, from any machine and
    by any spelling of the URL (localhost or 127.0.0.1, a DNS name, a socket), reads the same.

    Regression: the default journal was named after the URL's text, so a server spelling it
    otherwise never replayed a journal left by one that died, and overspent the limit."""
    ledger_id = meta(conn, POSTGRES, LEDGER_ID_KEY)
    if ledger_id is None:
        conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                     (LEDGER_ID_KEY, uuid.uuid4().hex))
        ledger_id = meta(conn, POSTGRES, LEDGER_ID_KEY)
    database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    return f"{ledger_id}|{database}|{schema}"



def default_journal(identity: str) -> Path:
    """A journal on this machine's disk for one PostgreSQL ledger (``ledger_identity``):
    the servers here that share the ledger share the file."""
    import platformdirs

    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    folder = Path(platformdirs.user_state_dir("llm-router"))
    with contextlib.suppress(OSError):  # said when a row first needs the journal
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"postgres-{key}.journal"
