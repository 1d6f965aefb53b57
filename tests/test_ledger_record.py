"""ledger/: request rows and their sums: a settle writes the row, its rollups and day totals in one
transaction; strings stored verbatim. Each runs against both backends where both apply
(``backends.py``); rows and checks come from ``ledger_rows.py``."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llm_router.ledger import LedgerBase

from .backends import integrity_errors, tables
from .ledger_rows import (
    DAY,
    TABLES,
    assert_in_step,
    daily,
    reserve,
    row,
)

# -- request rows and rollups -------------------------------------------------------------------


def test_record_keeps_rollups_in_step_with_requests(ledger: LedgerBase) -> None:
    providers = [
        ("anthropic", "claude-haiku-4-5"),
        ("openai", "gpt-4o-mini"),
        ("ollama", "llama3.1"),
        (None, None),
    ]
    tags = ["", "alice", "team:billing"]
    days = ["2025-03-13", "2025-03-14", "2025-03-15"]
    for i in range(120):
        provider, model = providers[i % 4]
        ledger.record(
            row(
                day=days[i % 3],
                provider=provider,
                model=model,
                tag=tags[i % 5 % 3],
                task_type=["", "summarize", "code_generation"][i % 7 % 3],
                status="ok" if i % 6 else "error",
                cost_nusd=i * 1_337,
                input_tokens=i * 10,
                output_tokens=i,
                cached_tokens=i % 4,
                reference_cost_nusd=i * 2_000 if i % 2 else None,
            )
        )

    assert_in_step(ledger)
    totals = ledger.totals()
    assert totals == {
        "requests": 120,
        "cost_nusd": sum(i * 1_337 for i in range(120)),
        "input_tokens": sum(i * 10 for i in range(120)),
        "output_tokens": sum(range(120)),
    }
    report = ledger.report(days[0], days[-1], "day")
    assert sum(r["cost_nusd"] for r in report) == totals["cost_nusd"]
    assert sum(r["requests"] for r in report) == 120


def test_record_stores_the_row_as_given(ledger: LedgerBase) -> None:
    r = row(tag="t", task_type="summarize", cost_nusd=42, reference_cost_nusd=99)
    r.prices = json.dumps({"input": "1", "source": "genai-prices"})
    r.attempts = json.dumps([{"model": "anthropic:claude-haiku-4-5", "outcome": "ok"}])
    r.prompt_hash = "ab" * 32
    r.latency_ms = 321
    r.strategy = "balanced"
    ledger.record(r)

    stored = ledger.rows(request_id=r.id)

    expected = dataclasses.asdict(r)
    assert stored == [expected]


def test_record_settles_its_reservation_in_the_same_transaction(ledger: LedgerBase) -> None:
    rid = reserve(ledger, [daily(10_000)], 5_000)
    assert isinstance(rid, str)
    assert ledger.usage(daily(10_000)) == (0, 5_000)

    ledger.record(row(cost_nusd=1_234), reservation_id=rid)

    assert ledger.usage(daily(10_000)) == (1_234, 0)
    assert ledger.reservations_total() == 0


def test_a_row_that_cannot_be_stored_leaves_rollups_and_reservations_untouched(ledger: LedgerBase) -> None:
    rid = reserve(ledger, [daily(10_000)], 5_000)
    assert isinstance(rid, str)
    first = row(cost_nusd=100)
    ledger.record(first)

    with pytest.raises(integrity_errors()):
        ledger.record(first, reservation_id=rid)  # same id twice

    assert ledger.usage(daily(10_000)) == (100, 5_000)
    assert_in_step(ledger)


# -- hostile strings ----------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE requests; --",
    "quote \" and ' and `backtick`",
    "Robert'); DELETE FROM rollups WHERE ('1'='1",
    "% _ wildcards * ?",
    "ünïcødé 🚀 中文 עברית",
    "line\nbreak\ttab",
    "  padded  ",
]


@pytest.mark.parametrize("nasty", HOSTILE)
def test_hostile_strings_are_stored_verbatim_and_filter_exactly(ledger: LedgerBase, nasty: str) -> None:
    ledger.record(row(tag=nasty, model=nasty, provider=nasty, task_type=nasty, cost_nusd=111))
    ledger.record(row(tag="plain", cost_nusd=222))
    ledger.record(row(tag=nasty.upper() + "x", cost_nusd=444))

    stored = ledger.rows(day=DAY)
    by_tag = ledger.report(DAY, DAY, "tag", where={"tag": nasty})
    by_model = ledger.report(DAY, DAY, "model", where={"provider": nasty, "task_type": nasty})

    assert tables(ledger) == TABLES
    assert [
        (r["tag"], r["model"], r["provider"], r["task_type"]) for r in stored if r["cost_nusd"] == 111
    ] == [(nasty, nasty, nasty, nasty)]
    assert [(r["key"], r["cost_nusd"]) for r in by_tag] == [(nasty, 111)]
    assert [(r["key"], r["cost_nusd"]) for r in by_model] == [(nasty, 111)]
    assert ledger.usage(daily(0, kind="tag", name=nasty)) == (111, 0)
    assert ledger.usage(daily(0, kind="provider", name=nasty)) == (111, 0)
    assert_in_step(ledger)


def test_report_refuses_to_group_or_filter_by_anything_but_the_known_columns(ledger: LedgerBase) -> None:
    with pytest.raises(ValueError, match="group_by"):
        ledger.report(DAY, DAY, "tag; DROP TABLE requests")
    with pytest.raises(ValueError, match="cannot filter"):
        ledger.report(DAY, DAY, "tag", where={"1=1 OR tag": "x"})


def test_a_tags_newest_rows_are_found_however_many_other_tags_rows_are_newer(ledger: LedgerBase) -> None:
    """``rows(tag=...)`` filters in the query (a member's view of the ledger): the limit applies to
    the tag's own rows, newest first, ties of the same millisecond in insertion order."""
    same_ms = f"{DAY}T12:00:00.000+00:00"
    stored = [row(tag="alice", ts=same_ms), row(tag="alice", ts=same_ms)]
    for r in stored:
        ledger.record(r)
    for _ in range(5):
        ledger.record(row(tag="bob", ts=f"{DAY}T13:00:00.000+00:00"))
    newest = ledger.rows(tag="alice", limit=2)
    assert [r["id"] for r in newest] == [stored[1].id, stored[0].id]
    assert [r["id"] for r in ledger.rows(tag="alice", day=DAY, limit=1)] == [stored[1].id]
    assert ledger.rows(tag="alice", day="2025-03-15") == []
    assert {r["tag"] for r in ledger.rows(limit=5)} == {"bob"}
