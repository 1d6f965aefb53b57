"""The suite gives the same verdict on every run and every machine, however busy."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from llm_router.ledger import Ledger, LimitCheck

from .clocks import ManualClock, seeded_ids


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
