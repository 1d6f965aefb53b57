"""PostgreSQL: a journaled charge is never lost to another server, and a busy error names the right
session (issue 14, points 2 and 6, on PostgreSQL).

Regressions:
- the default journal was named after the URL's text: a server spelling it otherwise (localhost
  for 127.0.0.1) never replayed a journal left by one that died; now it is named after what the
  database says the ledger is (the id in its ``meta``, its database and schema);
- a journaled call's holds were leases: they lapsed about ``lease_s`` after its server died, and
  servers on other machines (another journal) then stopped counting the spend and overspent the
  limit; now they are pinned while the row waits, and only its replay removes them;
- ``ledger_busy`` named the oldest idle-in-transaction session of the whole database (often an
  unrelated application's) and told the operator to end it; now only a session holding a lock a
  ledger step waits for is named;
- a ledger session frozen inside a transaction kept its locks until its connection dropped; now
  PostgreSQL ends it after ``idle_in_transaction_session_timeout``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from llm_router.ledger import LimitCheck, Refusal, RequestRow, settling
from llm_router.types import LedgerBusy

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

DAY = "2025-03-14"
LIMIT = 10_000


def _checks() -> list[LimitCheck]:
    return [LimitCheck("global daily", "global", None, DAY, DAY, LIMIT)]


def _row(rid: str, cost: int) -> RequestRow:
    return RequestRow(id=rid, ts=f"{DAY}T12:00:00+00:00", day=DAY, status="ok", provider="p", model="m",
                      cost_nusd=cost, cost_usd="0")


def _spelled_otherwise(url: str) -> str:
    """The same database by another spelling of its URL: localhost for 127.0.0.1 (or the other way
    round), and a connection parameter more."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    other = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}.get(host, host)
    netloc = parts.netloc.replace(f"@{host}", f"@{other}") if "@" in parts.netloc else parts.netloc.replace(host, other)
    return urlunsplit(parts._replace(netloc=netloc, query=f"{parts.query}&connect_timeout=9"))


@contextmanager
def _table_locked(url: str, table: str) -> Iterator[None]:
    """Another session holding ``table`` so that no row can be written to it (a frozen writer, say)."""
    import psycopg

    lock = psycopg.connect(url, autocommit=False)
    try:
        lock.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        yield
    finally:
        lock.rollback()
        lock.close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


class _Frozen:
    """A ledger whose session stopped inside a write transaction, holding the locks ``hold`` took:
    its thread waits (with the connection idle in the transaction) until ``resume``."""

    def __init__(self, led: Any, hold: Callable[[Any], None]) -> None:
        self.inside = threading.Event()
        self._go = threading.Event()
        self.pid: int | None = None
        self.error: BaseException | None = None

        def op(c: Any) -> None:
            hold(c)
            if self.pid is None:
                self.pid = c.info.backend_pid
            self.inside.set()
            self._go.wait(30)

        def run() -> None:
            try:
                led._call(op, tx=True)
            except BaseException as e:  # a connection ended under it, say
                self.error = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self.inside.wait(30), "the frozen ledger never got inside its transaction"

    def resume(self) -> None:
        self._go.set()
        self._thread.join(30)


# -- the journal, keyed on the ledger's identity ---------------------------------------------------------


async def test_a_postgresql_journal_is_replayed_by_a_server_that_spells_the_url_otherwise(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llm_router.ledger.postgres import PostgresLedger

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    a = PostgresLedger(pg_url, busy_timeout_s=0.3)
    b = None
    try:
        rid = a.reserve(_checks(), 6_000, request_id="a1", day=DAY, provider="p", tag="", ttl_s=600)
        assert isinstance(rid, str)
        with _table_locked(pg_url, "requests"):
            note = await settling.settle(a, _row("a1", 5_000), reservation_id=rid, wait_s=0.3)
        assert note is not None and str(a.journal.path) in note
        assert a.journal.path.parent == tmp_path / "state" / "llm-router"
        # A dies here, its row in its journal. B, on the same machine, spells the URL otherwise.
        other = _spelled_otherwise(pg_url)
        assert other != pg_url
        b = PostgresLedger(other)
        assert b.journal.path == a.journal.path
        # Opening, B replayed the journal: the row is in the ledger, the hold gone with it.
        assert b.totals()["cost_nusd"] == 5_000 and b.reservations_total() == 0
        assert not a.journal.pending()
        refusal = b.reserve(_checks(), 6_000, request_id="b1", day=DAY, provider="p", tag="", ttl_s=600)
        assert isinstance(refusal, Refusal) and refusal.spent_nusd == 5_000
    finally:
        a.close()
        if b is not None:
            b.close()


def test_two_postgresql_ledgers_in_one_database_keep_journals_of_their_own(
    pg_url: str, pg_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uuid

    import psycopg

    from llm_router.ledger.postgres import PostgresLedger

    from .backends import with_search_path

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        one, two = PostgresLedger(pg_url), PostgresLedger(with_search_path(pg_server_url, schema))
        again = PostgresLedger(pg_url)
        try:
            assert one.journal.path != two.journal.path
            assert again.journal.path == one.journal.path  # the id in meta is made once
            assert one.meta("ledger_id") != two.meta("ledger_id")
        finally:
            for led in (one, two, again):
                led.close()
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- the journaled charge, pinned --------------------------------------------------------------------------


async def test_a_journaled_charge_stays_counted_by_a_server_on_another_machine_after_its_hold_would_have_lapsed(
    pg_url: str, tmp_path: Path,
) -> None:
    from llm_router.ledger.postgres import PostgresLedger

    # A's hold is a lease of a millisecond: nobody renews it once A is gone.
    a = PostgresLedger(pg_url, busy_timeout_s=0.3, journal_path=tmp_path / "a.journal")
    a.lease_s = 0.001
    b = PostgresLedger(pg_url, journal_path=tmp_path / "b.journal")  # another machine: another journal
    try:
        rid = a.reserve(_checks(), 6_000, request_id="a1", day=DAY, provider="p", tag="", ttl_s=600)
        assert isinstance(rid, str)
        with _table_locked(pg_url, "requests"):
            note = await settling.settle(a, _row("a1", 5_000), reservation_id=rid, wait_s=0.3)
        assert note is not None and a.journaled() == (1, 5_000)
        # A dies, its row in a journal B never reads. Even a server on A's machine with a journal
        # of its own, finding A's process gone, leaves the hold: it waits for A's journal.
        from .backends import execute

        execute(b, "UPDATE reservations SET pid = ? WHERE id = ?", [_dead_pid(), rid])
        b.reclaim()
        assert b.reservations_total() == 6_000
        got = b.reserve(_checks(), 6_000, request_id="b1", day=DAY, provider="p", tag="", ttl_s=600)
        assert isinstance(got, Refusal) and got.reserved_nusd == 6_000, got
        # A restarts and replays its journal: the row is written and the pinned hold goes with it.
        restarted = PostgresLedger(pg_url, journal_path=tmp_path / "a.journal")
        try:
            assert restarted.totals()["cost_nusd"] == 5_000 and restarted.reservations_total() == 0
            assert b.usage(_checks()[0]) == (5_000, 0)
        finally:
            restarted.close()
    finally:
        a.close()
        b.close()


async def test_a_journaled_charge_whose_hold_had_already_lapsed_and_gone_is_held_again_for_its_cost(
    pg_url: str, tmp_path: Path,
) -> None:
    from llm_router.ledger.postgres import PostgresLedger

    a = PostgresLedger(pg_url, busy_timeout_s=0.3, journal_path=tmp_path / "a.journal")
    a.lease_s = 0.001
    b = PostgresLedger(pg_url, journal_path=tmp_path / "b.journal")
    try:
        rid = a.reserve(_checks(), 6_000, request_id="a1", day=DAY, provider="p", tag="", ttl_s=600)
        assert isinstance(rid, str)
        with _table_locked(pg_url, "requests"):
            assert b.reclaim() == 1  # A's lease lapsed (A stalled): B tidies its hold away
            note = await settling.settle(a, _row("a1", 5_000), reservation_id=rid, wait_s=0.3)
        assert note is not None and b.reservations_total() == 5_000  # the call's cost, held again
        got = b.reserve(_checks(), 6_000, request_id="b1", day=DAY, provider="p", tag="", ttl_s=600)
        assert isinstance(got, Refusal) and got.reserved_nusd == 5_000, got
        a.replay_journal()
        assert b.usage(_checks()[0]) == (5_000, 0)
    finally:
        a.close()
        b.close()


# -- ledger_busy names the session that holds the lock ------------------------------------------------------


async def test_a_postgresql_busy_error_names_the_session_holding_the_ledgers_lock_not_an_unrelated_one(
    pg_url: str, pg_server_url: str, tmp_path: Path,
) -> None:
    import psycopg

    from llm_router.ledger.postgres import PostgresLedger

    led = PostgresLedger(pg_url, busy_timeout_s=0.5, journal_path=tmp_path / "led.journal")
    frozen_led = PostgresLedger(pg_url, journal_path=tmp_path / "frozen.journal")
    # Older transactions than the frozen server's, idle, harmless: another application's, and a
    # report reading the ledger's tables (a plain read's lock, which no write waits for).
    unrelated = psycopg.connect(pg_server_url, application_name="someone-elses-report")
    reader = psycopg.connect(pg_url, application_name="a-reader")
    frozen: _Frozen | None = None
    try:
        unrelated.execute("SELECT 1")
        reader.execute("SELECT count(*) FROM reservations")
        reader.execute("SELECT count(*) FROM day_totals")
        frozen = _Frozen(frozen_led, lambda c: c.execute("SELECT pg_advisory_xact_lock(%s)", (led._reserve_key,)))
        with pytest.raises(LedgerBusy) as busy:
            await led.run_within(5, led.reserve, _checks(), 10, request_id="r", day=DAY, provider="p", tag="",
                                 ttl_s=60)
        message = str(busy.value)
        assert busy.value.holder_pid == frozen.pid, message
        assert f"session {frozen.pid} (llm-router, " in message and "idle in transaction" in message, message
        assert f"pg_terminate_backend({frozen.pid})" in message
        assert "PostgreSQL ends it once it has been idle in its transaction for 10 s" in message
        for other in (unrelated, reader):
            assert str(other.info.backend_pid) not in message, message
        frozen.resume()

        # A writer frozen holding row locks of the ledger's totals: a settle waits for those.
        frozen = _Frozen(frozen_led, lambda c: c.execute(
            "INSERT INTO day_totals (dim, key, day, cost_nusd) VALUES ('day', %s, %s, 1)", (DAY, DAY)))
        with pytest.raises(LedgerBusy) as busy:
            await led.run_within(5, led.record, _row("w1", 7))
        assert busy.value.holder_pid == frozen.pid, str(busy.value)
    finally:
        if frozen is not None:
            frozen.resume()
        unrelated.close()
        reader.close()
        led.close()
        frozen_led.close()


async def test_a_ledger_session_frozen_inside_a_transaction_is_ended_by_postgresql_and_its_locks_freed(
    pg_url: str, tmp_path: Path,
) -> None:
    import psycopg

    from llm_router.ledger.postgres import PostgresLedger

    frozen_led = PostgresLedger(pg_url, idle_in_transaction_s=0.5, journal_path=tmp_path / "frozen.journal")
    other = PostgresLedger(pg_url, busy_timeout_s=15, journal_path=tmp_path / "other.journal")
    frozen = _Frozen(frozen_led, lambda c: c.execute("SELECT pg_advisory_xact_lock(%s)", (other._reserve_key,)))
    try:
        with psycopg.connect(pg_url, autocommit=True) as watch:
            app = watch.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                                (frozen.pid,)).fetchone()
        assert app == ("llm-router",)
        t0 = time.monotonic()
        rid = other.reserve(_checks(), 10, request_id="r", day=DAY, provider="p", tag="", ttl_s=60)
        waited = time.monotonic() - t0
        assert isinstance(rid, str) and waited < 10, waited  # not the whole lock timeout (15 s)
        print(f"\na ledger session frozen inside a reservation was ended by PostgreSQL; the next reservation "
              f"waited {waited:.2f} s for its lock")
    finally:
        frozen.resume()
        frozen_led.close()
        other.close()
