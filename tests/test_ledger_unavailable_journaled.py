"""A paid row the ledger cannot take because it became unavailable goes to the journal, on both
backends.

Regression: on PostgreSQL this path failed with a TypeError (its own copy of the journaling step
took no ``unavailable`` argument), so the paid answer's spend was neither written nor journaled.
There is one journaling step for both backends now; this holds it to its word on each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_router.ledger import Ledger, LedgerBase, LedgerUnavailable, settling

from .backends import BACKENDS
from .ledger_rows import row


def _open(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> LedgerBase:
    journal = tmp_path / "ledger.journal"
    if kind == "sqlite":
        return Ledger(tmp_path / "ledger.db", journal_path=journal)
    from llm_router.ledger.postgres import PostgresLedger

    return PostgresLedger(request.getfixturevalue("pg_url"), journal_path=journal)


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_paid_row_the_ledger_cannot_take_because_it_became_unavailable_is_journaled(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    led = _open(kind, tmp_path, request)
    paid = row(cost_nusd=5_000)

    def gone(*_args: Any, **_kwargs: Any) -> None:
        raise LedgerUnavailable(f"the ledger {led.location} is no longer the one this server opened")

    async def settle() -> str | None:
        return await settling.settle(led, paid, wait_s=1.0)

    try:
        led.record = gone  # type: ignore[method-assign]
        note = anyio.run(settle)
        assert note is not None and "journal" in note and "0.000005" in note
        assert led.journal.summary() == (1, 5_000)
    finally:
        del led.record  # the class's own again: closing replays the journal into the ledger
        led.close()
    again = _open(kind, tmp_path, request)
    try:
        assert [r["id"] for r in again.rows(limit=5)] == [paid.id]
        assert again.journal.summary() == (0, 0)
    finally:
        again.close()
