"""Mixed versions on one ledger: the ledger records the schema its writers must keep, and a build
refuses a ledger newer than it understands (naming both versions) instead of writing rows the
newer servers' budgets would miss. Seen: an older build wrote rows that never reached a table the
newer one kept, and the newer server could not see that spend ($0.0096 against a $0.005 limit)."""

from __future__ import annotations

import pytest

from llm_router.ledger import LedgerUnavailable, LimitCheck, RequestRow, records
from llm_router.ledger.records import WRITER_SCHEMA
from llm_router.ledger.schema import RAISE_WRITER_SCHEMA, WRITER_SCHEMA_KEY

from .backends import Store, execute

DAY = "2025-03-14"
CHECKS = [LimitCheck("global daily", "global", None, DAY, DAY, 10_000_000)]


def test_a_new_ledger_records_the_schema_its_writers_must_keep(store: Store) -> None:
    led = store.open()
    try:
        assert led.meta(WRITER_SCHEMA_KEY) == str(WRITER_SCHEMA) == "3"
    finally:
        led.close()


def test_a_build_of_writer_schema_2_refuses_a_ledger_whose_writers_keep_the_limits_version_and_journal(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the writer schema stayed 2 when set_budget began raising the limits version
    (which every reservation checks) and writers began replaying the journal, so a build from
    before both opened this ledger without complaint: lowering the limit to $0 there, it left 383
    reservations granted after set_budget returned in a server of this build."""
    store.open().close()
    monkeypatch.setattr(records, "WRITER_SCHEMA", 2)  # what such a build knows
    with pytest.raises(LedgerUnavailable) as caught:
        store.open()
    message = str(caught.value)
    assert "its writers must keep schema 3" in message and "knows schema 2 only" in message, message


def test_a_running_server_refuses_to_reserve_once_a_newer_build_raises_the_writer_schema(store: Store) -> None:
    """Read along with the figures a reservation reads anyway (SQLite: whenever another connection
    has written), never with a statement of its own."""
    running = store.open()
    try:
        assert isinstance(running.reserve(CHECKS, 1_000, request_id="r1", day=DAY, provider="p", tag="", ttl_s=60),
                          str)
        newer = store.open()
        try:
            execute(newer, RAISE_WRITER_SCHEMA.format(n=WRITER_SCHEMA + 1))
        finally:
            newer.close()
        for _ in range(2):  # and stays refused
            with pytest.raises(LedgerUnavailable) as caught:
                running.reserve(CHECKS, 1_000, request_id="r2", day=DAY, provider="p", tag="", ttl_s=60)
            assert f"its writers must keep schema {WRITER_SCHEMA + 1}" in str(caught.value)
            assert f"knows schema {WRITER_SCHEMA} only" in str(caught.value)
        with pytest.raises(LedgerUnavailable):
            running.usages(CHECKS)  # routing's read, too
        assert running.reservations_total() == 1_000  # nothing was reserved by the refused calls
    finally:
        running.close()


def test_a_ledger_a_newer_build_raised_is_refused_naming_both_versions(store: Store) -> None:
    led = store.open()
    try:
        execute(led, RAISE_WRITER_SCHEMA.format(n=WRITER_SCHEMA + 1))
        execute(led, "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                ["012_something_newer_servers_keep", "2027-01-01T00:00:00+00:00"])
    finally:
        led.close()
    with pytest.raises(LedgerUnavailable) as caught:
        store.open()
    message = str(caught.value)
    assert f"its writers must keep schema {WRITER_SCHEMA + 1}" in message
    assert f"knows schema {WRITER_SCHEMA} only" in message and "Upgrade this server" in message


def test_a_migration_this_build_does_not_know_that_changes_nothing_writers_keep_is_no_obstacle(store: Store) -> None:
    """An added index, say: the writer schema stays, and this build writes on."""
    led = store.open()
    try:
        execute(led, "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                ["012_an_index_for_reports", "2027-01-01T00:00:00+00:00"])
    finally:
        led.close()
    led = store.open()
    try:
        led.record(RequestRow(id="r1", ts="2025-03-14T12:00:00.000+00:00", day="2025-03-14", status="ok", tag="",
                              provider="p", model="m", input_tokens=1, output_tokens=1, cost_nusd=5, cost_usd="0"))
        assert [r["id"] for r in led.rows()] == ["r1"]
    finally:
        led.close()


def test_the_writer_schema_is_only_ever_raised(store: Store) -> None:
    """Two builds opening the same ledger: the older one's migration never lowers what the newer set."""
    led = store.open()
    try:
        execute(led, RAISE_WRITER_SCHEMA.format(n=7))
        execute(led, RAISE_WRITER_SCHEMA.format(n=WRITER_SCHEMA))
        assert led.meta(WRITER_SCHEMA_KEY) == "7"
    finally:
        led.close()
