"""How much of a period's spend is an estimate: calls whose provider reported no usage are summed
apart (``estimated_rollups``), in step with their rows, on both ledger backends, and
``cost_report`` says so without reading rows."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_router.budget import Budget
from llm_router.config import BudgetConfig
from llm_router.ledger import LedgerBase, RequestRow
from llm_router.reports import cost_report

from .backends import Store, execute

pytestmark = pytest.mark.anyio

DAY, NEXT = "2025-03-14", "2025-03-15"
_ids = itertools.count(1)


def row(*, day: str = DAY, provider: str = "local", tag: str = "", cost_nusd: int = 1_000, estimated: bool = False,
        status: str = "ok") -> RequestRow:
    n = next(_ids)
    return RequestRow(id=f"est-{n}", ts=f"{day}T12:00:00.{n % 1000:03d}+00:00", day=day, status=status, tag=tag,
                      provider=provider, model="m", input_tokens=10, output_tokens=5, cost_nusd=cost_nusd,
                      cost_usd="0", cost_estimated=int(estimated))


@pytest.fixture
def ledger(store: Store) -> Iterator[LedgerBase]:
    led = store.open()
    yield led
    led.close()


def fill(led: LedgerBase) -> None:
    for r in (
        row(cost_nusd=1_000),
        row(cost_nusd=2_000, estimated=True),
        row(cost_nusd=3_000, estimated=True, tag="research"),
        row(cost_nusd=4_000, estimated=True, provider="ollama", day=NEXT),
        row(cost_nusd=8_000, provider="ollama"),
    ):
        led.record(r)


def estimated_sums_from_rows(led: LedgerBase) -> list[dict[str, object]]:
    return led.query(
        "SELECT day, provider, model, tag, task_type, count(*) AS requests, sum(cost_nusd) AS cost_nusd FROM requests"
        " WHERE cost_estimated = 1 GROUP BY day, provider, model, tag, task_type ORDER BY day, provider, tag"
    )


def estimated_sums(led: LedgerBase) -> list[dict[str, object]]:
    return [
        {k: (int(v) if k in ("requests", "cost_nusd") else v) for k, v in r.items()}
        for r in led.query("SELECT * FROM estimated_rollups ORDER BY day, provider, tag")
    ]


def test_estimated_calls_are_summed_apart_in_step_with_their_rows(ledger: LedgerBase) -> None:
    fill(ledger)
    assert estimated_sums(ledger) == [
        {**s, "requests": int(s["requests"]), "cost_nusd": int(s["cost_nusd"])}  # type: ignore[call-overload]
        for s in estimated_sums_from_rows(ledger)
    ]
    assert ledger.estimated(DAY, NEXT) == (3, 9_000)
    assert ledger.estimated(DAY, DAY) == (2, 5_000)
    assert ledger.estimated(DAY, NEXT, where={"provider": "ollama"}) == (1, 4_000)
    assert ledger.estimated(DAY, NEXT, where={"tag": "research", "provider": "local"}) == (1, 3_000)
    assert ledger.estimated("2025-01-01", "2025-01-31") == (0, 0)


async def test_cost_report_says_how_much_of_a_periods_spend_is_estimated(ledger: LedgerBase) -> None:
    fill(ledger)
    budget = Budget(BudgetConfig(), ledger)  # type: ignore[arg-type]
    report = await cost_report(ledger, budget, None, period=None, group_by="provider", since=DAY, until=NEXT, where={})
    assert report.totals["cost_usd"] == "0.000018"
    assert (report.totals["estimated_requests"], report.totals["estimated_cost_usd"]) == (3, "0.000009")
    only = await cost_report(ledger, budget, None, period=None, group_by="day", since=DAY, until=NEXT,
                             where={"provider": "local"})
    assert (only.totals["estimated_requests"], only.totals["estimated_cost_usd"]) == (2, "0.000005")


def test_estimated_sums_outlive_the_rows_they_came_from(ledger: LedgerBase) -> None:
    """Like the other per-day sums: pruning raw rows keeps them, so the figure never needs the rows."""
    fill(ledger)
    assert ledger.prune(NEXT) == 4
    assert ledger.estimated(DAY, NEXT) == (3, 9_000)


def test_a_rebuild_of_the_sums_keeps_the_estimated_ones_in_step(ledger: LedgerBase) -> None:
    fill(ledger)
    ledger.rebuild_rollups(lambda ts: NEXT)  # a time zone that files every row on the next day
    assert ledger.estimated(NEXT, NEXT) == (3, 9_000) and ledger.estimated(DAY, DAY) == (0, 0)


def test_a_ledger_from_before_estimated_sums_gets_them_from_its_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_router.ledger import postgres, schema

    before = [name for name, _ in schema.MIGRATIONS].index("010_create_estimated_rollups")
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:before])
        m.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:before])
        old = store.open()
        try:  # rows as the code of the time wrote them: nothing summed apart
            for n, (cost, estimated) in enumerate([(5, 1), (7, 1), (11, 0)]):
                execute(old, "INSERT INTO requests (id, ts, day, status, tag, task_type, provider, model, cost_nusd,"
                        " cost_estimated) VALUES (?, ?, ?, 'ok', '', '', 'local', 'm', ?, ?)",
                        [f"old-{n}", f"{DAY}T12:00:00+00:00", DAY, cost, estimated])
        finally:
            old.close()
    led = store.open()
    try:
        assert led.migrations_applied[:2] == ["010_create_estimated_rollups", "011_record_writer_schema"]
        assert led.estimated(DAY, DAY) == (2, 12)
    finally:
        led.close()


def test_a_row_whose_usage_was_reported_adds_nothing_to_the_estimated_sums(tmp_path: Path) -> None:
    from llm_router.ledger import Ledger

    led = Ledger(tmp_path / "ledger.db")
    try:
        led.record(row(cost_nusd=1_000))
        assert led.query("SELECT count(*) AS n FROM estimated_rollups") == [{"n": 0}]
    finally:
        led.close()
