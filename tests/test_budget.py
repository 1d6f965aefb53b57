"""Limits, tiers, periods and reservations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from llm_router.budget import Budget, Clock, parse_scope, tier_of
from llm_router.config import BudgetConfig
from llm_router.ledger import Ledger, RequestRow
from llm_router.types import BudgetExceeded, InvalidInput, usd_to_nusd


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


def make_budget(ledger: Ledger, **config: object) -> Budget:
    return Budget(BudgetConfig.model_validate(config), ledger)


def spend(ledger: Ledger, budget: Budget, amount: str, *, provider: str = "openai", tag: str = "") -> None:
    day = budget.clock.today().isoformat()
    nusd = usd_to_nusd(amount)
    ledger.record(RequestRow(id=f"r{ledger.totals()['requests']}", ts=f"{day}T12:00:00+00:00", day=day, status="ok",
                             provider=provider, model="m", tag=tag, cost_nusd=nusd, cost_usd=amount))


@pytest.mark.parametrize(
    ("fraction", "tier"),
    [(0, "normal"), (0.4999, "normal"), (0.5, "cautious"), (0.8999, "cautious"), (0.9, "restricted"),
     (0.9999, "restricted"), (1.0, "exhausted")],
)
def test_tiers_change_at_fifty_and_ninety_percent(fraction: float, tier: str) -> None:
    assert tier_of(fraction) == tier


def test_a_reservation_holds_money_until_released(ledger: Ledger) -> None:
    budget = make_budget(ledger, daily_usd=1)
    snap = budget.snapshot()
    rid = budget.reserve(snap, provider="openai", amount_nusd=usd_to_nusd("0.6"), request_id="a")
    assert budget.snapshot().states[0].reserved_nusd == usd_to_nusd("0.6")
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(budget.snapshot(), provider="openai", amount_nusd=usd_to_nusd("0.5"), request_id="b")
    assert info.value.limit_name == "global daily" and info.value.reserved_nusd == usd_to_nusd("0.6")
    ledger.release(rid)
    assert budget.reserve(budget.snapshot(), provider="openai", amount_nusd=usd_to_nusd("0.5"), request_id="b")


def test_spend_and_reservations_together_never_pass_the_limit(ledger: Ledger) -> None:
    budget = make_budget(ledger, daily_usd=1)
    spend(ledger, budget, "0.7")
    budget.reserve(budget.snapshot(), provider="openai", amount_nusd=usd_to_nusd("0.3"), request_id="a")
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(budget.snapshot(), provider="openai", amount_nusd=1, request_id="b")
    text = str(info.value)
    assert "$0.7 spent" in text and "$0.3 held" in text and "resets at" in text


def test_the_per_request_limit_refuses_a_dear_call_outright(ledger: Ledger) -> None:
    budget = make_budget(ledger, per_request_usd=0.1)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve(budget.snapshot(), provider="openai", amount_nusd=usd_to_nusd("0.2"), request_id="a")
    assert info.value.limit_name == "global per_request" and info.value.resets_at is None
    assert ledger.reservations_total() == 0


def test_provider_and_tag_limits_apply_only_to_their_scope(ledger: Ledger) -> None:
    budget = make_budget(ledger, providers={"anthropic": {"daily_usd": 1}}, tags={"research": {"monthly_usd": 2}})
    spend(ledger, budget, "1", provider="anthropic")
    with pytest.raises(BudgetExceeded, match="provider:anthropic daily"):
        budget.reserve(budget.snapshot(), provider="anthropic", amount_nusd=1, request_id="a")
    assert budget.reserve(budget.snapshot(), provider="openai", amount_nusd=usd_to_nusd("5"), request_id="b")
    spend(ledger, budget, "2", tag="research")
    with pytest.raises(BudgetExceeded, match="tag:research monthly"):
        budget.reserve(budget.snapshot(tag="research"), provider="openai", amount_nusd=1, request_id="c")
    assert budget.reserve(budget.snapshot(tag="other"), provider="openai", amount_nusd=1, request_id="d")


def test_set_limit_overrides_the_config_and_null_removes_it(ledger: Ledger) -> None:
    budget = make_budget(ledger, daily_usd=5, monthly_usd=50)
    budget.set_limit("global", "daily", Decimal("2"))
    budget.set_limit("global", "monthly", None)
    limits = {(lim.scope, lim.period): lim for lim in budget.limits()}
    assert limits[("global", "daily")].limit_nusd == usd_to_nusd(2) and limits[("global", "daily")].source == "set_budget"
    assert ("global", "monthly") not in limits
    # Another process opening the same file sees the same limits.
    other_ledger = Ledger(ledger.path)
    other = make_budget(other_ledger, daily_usd=5, monthly_usd=50)
    assert {(lim.scope, lim.period, lim.limit_nusd) for lim in other.limits()} == {
        (lim.scope, lim.period, lim.limit_nusd) for lim in budget.limits()}
    other_ledger.close()


@pytest.mark.parametrize(
    ("scope", "period", "limit", "field"),
    [("galaxy", "daily", 1, "scope"), ("tag:", "daily", 1, "scope"), ("global", "weekly", 1, "period"),
     ("tag:x", "per_request", 1, "period"), ("global", "daily", -1, "limit_usd"), ("global", "daily", "ten", "limit_usd"),
     ("global", "daily", Decimal("1e12"), "limit_usd")],
)
def test_bad_limits_name_the_field(ledger: Ledger, scope: str, period: str, limit: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        make_budget(ledger).set_limit(scope, period, limit)
    assert info.value.field == field


def test_days_and_months_begin_in_the_configured_time_zone() -> None:
    clock = Clock("America/New_York")
    assert clock.day_of("2026-11-24T03:00:00+00:00") == "2026-11-23"  # still the 23rd in New York
    first, last, resets = clock.bounds("monthly", date(2026, 2, 14))
    assert (first, last) == ("2026-02-01", "2026-02-28")
    assert resets == "2026-03-01T00:00:00-05:00"
    assert clock.bounds("daily", date(2026, 12, 31))[2] == "2027-01-01T00:00:00-05:00"


def test_parse_scope() -> None:
    assert parse_scope("global") == ("global", None)
    assert parse_scope("provider:openai") == ("provider", "openai")
    assert parse_scope("tag:team:a") == ("tag", "team:a")


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham"])
def test_day_at_matches_the_local_date_across_midnights_and_clock_changes(tz: str) -> None:
    """day_at keeps the day in force and its bounds; walking one clock through a year in both
    directions (DST changes included) must give what a fresh conversion gives, instant by instant."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    clock = Clock(tz)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    instants = [start + timedelta(minutes=17 * k) for k in range(0, 365 * 24 * 60 // 17, 7)]
    for when in instants + instants[::-1]:
        assert clock.day_at(when) == when.astimezone(ZoneInfo(tz)).date().isoformat(), when
    before = datetime.now(ZoneInfo(tz)).date()
    today = clock.today()
    assert Clock(tz).today() in (today, today + timedelta(days=1))  # the local midnight may pass in between
    assert today in (before, before + timedelta(days=1))
