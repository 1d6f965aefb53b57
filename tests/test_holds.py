"""The reservations component, ``Holds``, driven as the engine drives it (awaited)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from llm_router.budget import Budget
from llm_router.config import BudgetConfig
from llm_router.holds import Holds
from llm_router.ledger import Ledger
from llm_router.ledger.records import LimitsMoved
from llm_router.types import LedgerBusy


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


def _holds(ledger: Ledger) -> Holds:
    return Holds(ledger, Budget(BudgetConfig.model_validate({"daily_usd": 10}), ledger))


def test_a_hold_is_granted_and_settles_nothing_when_freed(ledger: Ledger) -> None:
    holds = _holds(ledger)

    async def main() -> None:
        snap = await holds.snapshot(tag="t", wait_s=1.0)
        rid = await holds.reserve(snap, provider="openai", amount_nusd=1_000, request_id="r1", ttl_s=60, wait_s=1.0)
        assert ledger.reservations_total() == 1_000
        await holds.free(rid)
        assert ledger.reservations_total() == 0

    anyio.run(main)


def test_limits_that_keep_moving_end_a_hold_as_busy_without_freezing_the_event_loop(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: when another process changed the limits before every attempt, ``Holds.reserve``
    asked again without end, and on SQLite (whose step runs on the event loop when the connection is
    free) no other task ran and no cancellation reached it: the call spun."""
    holds = _holds(ledger)
    asked = 0

    def moved(*_args: Any, limits_version: int | None = None, **_kwargs: Any) -> LimitsMoved:
        nonlocal asked
        asked += 1
        return LimitsMoved((limits_version or 0) + 1, {})  # a set_budget committed just before each attempt

    async def main() -> int:
        snap = await holds.snapshot(tag="t", wait_s=1.0)
        monkeypatch.setattr(ledger, "reserve", moved)
        ticks = 0
        done = anyio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            try:
                with anyio.fail_after(10), pytest.raises(LedgerBusy) as info:
                    await holds.reserve(snap, provider="openai", amount_nusd=1_000, request_id="r1", ttl_s=60,
                                        wait_s=5.0)
            finally:
                done.set()
        assert "limits" in str(info.value) and "Nothing was reserved" in str(info.value)
        return ticks

    ticks = anyio.run(main)
    assert 1 < asked <= 10
    assert ticks >= asked - 1  # the event loop ran between attempts
    assert ledger.reservations_total() == 0
