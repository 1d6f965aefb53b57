"""ledger/: small things of both backends (meta values, the executor, the folder, a cut connection).
The rest is grouped by behaviour in ``test_ledger_*.py``; rows and checks come from ``ledger_rows.py``."""


from __future__ import annotations

from pathlib import Path

import pytest

from llm_router.ledger import Ledger, LedgerBase

from .ledger_rows import (
    assert_in_step,
    daily,
    reserve,
    row,
)

# -- small things -------------------------------------------------------------------------------


def test_meta_values_are_stored_and_replaced(ledger: LedgerBase) -> None:
    assert ledger.meta("timezone") is None

    ledger.set_meta("timezone", "UTC")
    ledger.set_meta("timezone", "Asia/Tokyo")

    assert ledger.meta("timezone") == "Asia/Tokyo"


@pytest.mark.anyio
async def test_run_calls_a_ledger_method_on_a_worker_thread(ledger: LedgerBase) -> None:
    rid = await ledger.run(reserve, ledger, [daily(100)], 10)

    assert isinstance(rid, str)
    assert await ledger.run(ledger.reservations_total) == 10


@pytest.mark.anyio
async def test_a_ledger_call_on_the_thread_runs_and_returns_even_when_its_caller_is_cancelled(
    ledger: LedgerBase,
) -> None:
    """The engine relies on it: a reservation asked for is handed back (to be settled or
    released), a row asked for is written, whatever cancels the call meanwhile."""
    import anyio

    got: list[object] = []
    with anyio.CancelScope() as scope:
        scope.cancel()  # already cancelled when the call is made
        got.append(await LedgerBase.run(ledger, reserve, ledger, [daily(100)], 10))  # the thread path
        await anyio.sleep(0)  # the cancellation lands here, after the result came back
        got.append("not reached")

    assert scope.cancelled_caught
    assert len(got) == 1 and isinstance(got[0], str)
    assert ledger.reservations_total() == 10


def test_ledger_creates_the_folder_it_lives_in(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "a" / "b" / "ledger.db")
    led.close()

    assert (tmp_path / "a" / "b" / "ledger.db").is_file()


@pytest.mark.postgres
def test_a_postgres_ledger_carries_on_after_its_connection_is_cut(pg_url: str) -> None:
    """The database restarted, or a network blip: the next call reconnects instead of failing."""
    import psycopg

    from llm_router.ledger.postgres import PostgresLedger

    led = PostgresLedger(pg_url)

    def cut() -> None:
        backend = led.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (backend,))

    try:
        led.record(row(cost_nusd=100))
        cut()
        assert led.usage(daily(0)) == (100, 0)
        cut()
        led.record(row(cost_nusd=200))
        cut()
        rid = reserve(led, [daily(1_000)], 300)
        assert isinstance(rid, str)
        assert led.usage(daily(0)) == (300, 300)
        assert_in_step(led)
    finally:
        led.close()
