"""The suite gives the same verdict on every run and every machine, however busy."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from llm_router.ledger import Ledger, LimitCheck, RequestRow, SpareRequest

from .clocks import ManualClock, seeded_ids
from .conftest import held_by_calls


def test_property_tests_try_the_same_examples_on_every_run_and_never_fail_for_being_slow() -> None:
    """Regression: a property test without settings of its own drew new random examples on each
    run, kept failures in a local example database, and could fail its too-slow health check on a
    loaded machine (conftest's profile now applies to all of them)."""
    current = hypothesis_settings()
    assert current.derandomize is True
    assert current.deadline is None
    assert current.database is None
    assert HealthCheck.too_slow in current.suppress_health_check


def test_a_ledger_on_a_manual_clock_and_seeded_ids_does_the_same_thing_twice(tmp_path: Path) -> None:
    """What the ledger tests rely on: the same steps give the same ids and the same expiry times."""

    def run(name: str) -> list[tuple[str, float]]:
        clock = ManualClock()
        led = Ledger(tmp_path / f"{name}.db", clock=clock, new_id=seeded_ids(3))
        try:
            check = LimitCheck("global daily", "global", None, "2025-03-14", "2025-03-14", 10_000)
            for amount in (100, 200, 300):
                clock.advance(0.5)
                led.reserve([check], amount, request_id=f"r{amount}", day="2025-03-14", provider="p", tag="",
                            ttl_s=60)
            return [(r["id"], r["expires_at"]) for r in led.query("SELECT id, expires_at FROM reservations ORDER BY created_at")]
        finally:
            led.close()

    first = run("a")
    assert first == run("b")
    assert [expires for _, expires in first] == [ManualClock().now + 60 + 0.5 * k for k in (1, 2, 3)]


def test_held_by_calls_never_counts_a_spare_that_upkeep_lets_go_between_its_reads(tmp_path: Path) -> None:
    """Regression: the total and the spare were read one after the other, so an idle spare let go
    by the upkeep thread in between was counted as a hold some call had left behind."""
    check = LimitCheck("global daily", "global", None, "2025-03-14", "2025-03-14", 100_000)
    led = Ledger(tmp_path / "l.db")
    try:
        led.record(RequestRow(id="r1", ts="2025-03-14T12:00:00+00:00", day="2025-03-14", status="ok", provider="p",
                              model="m", cost_nusd=0, cost_usd="0"),
                   spare=SpareRequest([check], 2_000, "2025-03-14", "p", "", 900))
        assert led.spare_nusd == 2_000
        total = led.reservations_total
        upkeep = threading.Thread(target=led.drop_spare)

        def total_then_upkeeps_turn() -> Any:
            n = total()
            upkeep.start()  # upkeep wakes right now, between the two reads
            upkeep.join(0.5)  # it gets the lock at once, unless the reads hold it
            return n

        led.reservations_total = total_then_upkeeps_turn  # type: ignore[method-assign]
        assert held_by_calls(SimpleNamespace(ledger=led)) == 0  # type: ignore[arg-type]
        upkeep.join(30)
        assert led.spare_nusd == 0 and total() == 0  # ...and then it did let the spare go
    finally:
        led.close()
