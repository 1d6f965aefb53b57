"""ledger/: reports, rebuilt rollups and retention. Each runs against both backends where both apply
(``backends.py``); rows and checks come from ``ledger_rows.py``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llm_router.ledger import GROUPINGS, Ledger, LedgerBase
from llm_router.ledger import base as ledger_base

from .backends import execute
from .ledger_rows import (
    assert_in_step,
    daily,
    day_totals,
    day_totals_from,
    rollup_table,
    rollups_from_rows,
    row,
)

# -- reports ------------------------------------------------------------------------------------


@pytest.fixture
def filled(ledger: LedgerBase) -> Ledger:
    ledger.record(
        row(
            day="2025-03-13",
            provider="anthropic",
            model="claude-haiku-4-5",
            tag="alice",
            task_type="summarize",
            cost_nusd=1_000,
            input_tokens=10,
            output_tokens=1,
            reference_cost_nusd=3_000,
        )
    )
    ledger.record(
        row(
            day="2025-03-14",
            provider="anthropic",
            model="claude-sonnet-4-5",
            tag="bob",
            task_type="code_generation",
            cost_nusd=5_000,
            input_tokens=20,
            output_tokens=2,
            cached_tokens=5,
            reference_cost_nusd=5_000,
        )
    )
    ledger.record(
        row(
            day="2025-03-14",
            provider="openai",
            model="gpt-4o-mini",
            tag="alice",
            task_type="summarize",
            cost_nusd=300,
            input_tokens=30,
            output_tokens=3,
        )
    )
    ledger.record(
        row(
            day="2025-03-14",
            provider="openai",
            model="gpt-4o-mini",
            tag="alice",
            task_type="summarize",
            status="error",
            cost_nusd=0,
            input_tokens=0,
            output_tokens=0,
        )
    )
    ledger.record(
        row(
            day="2025-03-15",
            provider="ollama",
            model="llama3.1",
            tag="",
            task_type="",
            cost_nusd=0,
            input_tokens=40,
            output_tokens=4,
        )
    )
    ledger.record(
        row(day="2025-03-16", provider="openai", model="gpt-4o", cost_nusd=99_999)
    )  # outside the period
    return ledger


def _r(key: str, requests: int, errors: int, i: int, o: int, c: int, cost: int, ref: int) -> dict[str, Any]:
    return {
        "key": key,
        "requests": requests,
        "errors": errors,
        "input_tokens": i,
        "output_tokens": o,
        "cached_tokens": c,
        "cost_nusd": cost,
        "reference_cost_nusd": ref,
    }


REPORTS = {
    "provider": [
        _r("anthropic", 2, 0, 30, 3, 5, 6_000, 8_000),
        _r("openai", 2, 1, 30, 3, 0, 300, 0),
        _r("ollama", 1, 0, 40, 4, 0, 0, 0),
    ],
    "model": [
        _r("claude-sonnet-4-5", 1, 0, 20, 2, 5, 5_000, 5_000),
        _r("claude-haiku-4-5", 1, 0, 10, 1, 0, 1_000, 3_000),
        _r("gpt-4o-mini", 2, 1, 30, 3, 0, 300, 0),
        _r("llama3.1", 1, 0, 40, 4, 0, 0, 0),
    ],
    "task_type": [
        _r("code_generation", 1, 0, 20, 2, 5, 5_000, 5_000),
        _r("summarize", 3, 1, 40, 4, 0, 1_300, 3_000),
        _r("", 1, 0, 40, 4, 0, 0, 0),
    ],
    "tag": [
        _r("bob", 1, 0, 20, 2, 5, 5_000, 5_000),
        _r("alice", 3, 1, 40, 4, 0, 1_300, 3_000),
        _r("", 1, 0, 40, 4, 0, 0, 0),
    ],
    "day": [
        _r("2025-03-14", 3, 1, 50, 5, 5, 5_300, 5_000),
        _r("2025-03-13", 1, 0, 10, 1, 0, 1_000, 3_000),
        _r("2025-03-15", 1, 0, 40, 4, 0, 0, 0),
    ],
}


@pytest.mark.parametrize("group_by", GROUPINGS)
def test_report_groups_spend_by_each_grouping_dearest_first(filled: LedgerBase, group_by: str) -> None:
    assert filled.report("2025-03-13", "2025-03-15", group_by) == REPORTS[group_by]


def test_report_filters_combine(filled: LedgerBase) -> None:
    assert filled.report("2025-03-13", "2025-03-15", "day", where={"tag": "alice", "provider": "openai"}) == [
        _r("2025-03-14", 2, 1, 30, 3, 0, 300, 0)
    ]


def test_report_of_an_empty_period_is_empty(filled: LedgerBase) -> None:
    assert filled.report("2024-01-01", "2024-12-31", "provider") == []


def test_rows_come_newest_first_and_filter_by_day(filled: LedgerBase) -> None:
    days = [r["day"] for r in filled.rows()]

    assert days == sorted(days, reverse=True)
    assert {r["day"] for r in filled.rows(day="2025-03-14")} == {"2025-03-14"}
    assert len(filled.rows(limit=2)) == 2


# -- rebuilding rollups -------------------------------------------------------------------------


def test_rebuild_rollups_rederives_them_from_the_rows(filled: LedgerBase) -> None:
    expected = rollup_table(filled)
    execute(filled, "UPDATE rollups SET cost_nusd = cost_nusd * 7, requests = 0")
    execute(filled, "DELETE FROM rollups WHERE provider = 'ollama'")
    execute(filled, "UPDATE day_totals SET cost_nusd = 1")

    filled.rebuild_rollups(lambda ts: ts[:10])

    assert rollup_table(filled) == expected
    assert_in_step(filled)
    assert [e["kind"] for e in filled.events()] == ["rollups_rebuilt"]


def test_rebuild_rollups_refiles_rows_under_a_new_day(ledger: LedgerBase) -> None:
    """After a time-zone change: 23:30 UTC is the next day in Tokyo."""
    ledger.record(row(day="2025-03-14", ts="2025-03-14T23:30:00.000+00:00", cost_nusd=10))
    ledger.record(row(day="2025-03-14", ts="2025-03-14T08:00:00.000+00:00", cost_nusd=20))

    def tokyo_day(ts: str) -> str:
        return (datetime.fromisoformat(ts) + timedelta(hours=9)).date().isoformat()

    ledger.rebuild_rollups(tokyo_day)

    assert sorted(r["day"] for r in ledger.rows()) == ["2025-03-14", "2025-03-15"]
    assert_in_step(ledger)
    assert ledger.usage(daily(0, day="2025-03-15")) == (10, 0)


# -- retention ----------------------------------------------------------------------------------


@pytest.fixture
def three_days(ledger: LedgerBase) -> LedgerBase:
    for day, cost in (("2025-03-12", 100), ("2025-03-12", 200), ("2025-03-13", 400), ("2025-03-14", 800)):
        ledger.record(row(day=day, ts=f"{day}T12:00:00.000+00:00", cost_nusd=cost, tag=f"t{cost}"))
    return ledger


def test_pruning_deletes_old_rows_and_keeps_their_rollups_so_reports_still_work(three_days: LedgerBase) -> None:
    before = {g: three_days.report("2025-03-01", "2025-03-31", g) for g in GROUPINGS}
    rollups, totals = rollup_table(three_days), day_totals(three_days)

    assert three_days.prune("2025-03-13") == 2

    assert sorted(r["day"] for r in three_days.rows()) == ["2025-03-13", "2025-03-14"]
    assert three_days.totals()["cost_nusd"] == 1_200
    assert (rollup_table(three_days), day_totals(three_days)) == (rollups, totals)
    assert {g: three_days.report("2025-03-01", "2025-03-31", g) for g in GROUPINGS} == before
    assert three_days.usage(daily(0, day="2025-03-12")) == (300, 0)
    assert three_days.meta("pruned_before") == "2025-03-13"
    assert [e["detail"] for e in three_days.events() if e["kind"] == "rows_pruned"] == [
        {"before_day": "2025-03-13", "rows": 2}
    ]
    assert three_days.prune("2025-03-13") == 0
    assert len([e for e in three_days.events() if e["kind"] == "rows_pruned"]) == 1


def test_pruning_goes_in_batches_until_nothing_old_is_left(
    three_days: LedgerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_base, "PRUNE_BATCH", 1)

    assert three_days.prune("2025-03-14") == 3
    assert [r["day"] for r in three_days.rows()] == ["2025-03-14"]


def test_an_earlier_prune_does_not_move_the_pruned_horizon_back(three_days: LedgerBase) -> None:
    three_days.prune("2025-03-14")
    three_days.prune("2025-03-13")

    assert three_days.meta("pruned_before") == "2025-03-14"


def test_rebuilding_after_a_prune_keeps_the_rollups_of_pruned_days(three_days: LedgerBase) -> None:
    three_days.prune("2025-03-13")
    kept = [r for r in rollup_table(three_days) if r["day"] < "2025-03-13"]

    three_days.rebuild_rollups(lambda ts: ts[:10])

    assert [r for r in rollup_table(three_days) if r["day"] < "2025-03-13"] == kept
    assert sum(r["cost_nusd"] for r in rollup_table(three_days)) == 1_500
    assert [r for r in rollup_table(three_days) if r["day"] >= "2025-03-13"] == rollups_from_rows(three_days)
    assert day_totals(three_days) == day_totals_from(rollup_table(three_days))


def test_upkeep_prunes_rows_past_retain_days_counted_back_from_today(three_days: LedgerBase) -> None:
    three_days.start_upkeep(
        lease_s=60, interval_s=3600, retain_days=1, today=lambda: datetime(2025, 3, 14, tzinfo=UTC).date()
    )

    assert sorted(r["day"] for r in three_days.rows()) == ["2025-03-13", "2025-03-14"]
    assert three_days.report("2025-03-12", "2025-03-12", "day")[0]["cost_nusd"] == 300


def test_tidy_without_retention_keeps_every_row(three_days: LedgerBase) -> None:
    assert three_days.tidy() == {"reclaimed": 0}
    assert three_days.totals()["requests"] == 4
