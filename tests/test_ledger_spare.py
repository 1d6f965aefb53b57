"""ledger/: the SQLite ledger's spare hold, usage cache and inline executor. Each runs against both
backends where both apply (``backends.py``); rows and checks come from ``ledger_rows.py``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from llm_router import timings
from llm_router.ledger import Ledger, Refusal, SpareRequest

from .clocks import ManualClock
from .ledger_rows import (
    DAY,
    daily,
    reserve,
    row,
)

# -- the spare hold kept between calls (SQLite) --------------------------------------------------


def spare(amount: int, limit: int = 100_000, **kw: Any) -> SpareRequest:
    args: dict[str, Any] = {"day": DAY, "provider": "anthropic", "tag": "", "ttl_s": 900}
    return SpareRequest([daily(limit)], amount, **(args | kw))


def test_a_settled_call_keeps_a_spare_that_the_next_call_takes_over_without_writing(ledger_file: Path) -> None:
    """(On the test's clock: a pause past the spare's idle time between two lines would let it go.)"""
    import sqlite3

    led = Ledger(ledger_file, clock=ManualClock())
    watcher = sqlite3.connect(ledger_file)  # data_version changes for it whenever another connection commits
    try:
        first = reserve(led, [daily(100_000)], 1_000)
        assert isinstance(first, str)
        led.record(row(cost_nusd=300), reservation_id=first, spare=spare(2_000))
        assert led.spare_nusd == 2_000 and led.reservations_total() == 2_000
        assert led.usage(daily(100_000)) == (300, 2_000)  # a hold like any other

        version = watcher.execute("PRAGMA data_version").fetchone()[0]
        second = reserve(led, [daily(100_000)], 1_500, request_id="second")
        assert watcher.execute("PRAGMA data_version").fetchone()[0] == version, "taken over: nothing written"
        assert isinstance(second, str) and led.spare_nusd == 0 and led.reservations_total() == 2_000

        led.record(row(cost_nusd=400), reservation_id=second)
        assert led.reservations_total() == 0 and led.usage(daily(100_000)) == (700, 0)
    finally:
        watcher.close()
        led.close()


def test_a_spare_is_taken_over_only_where_the_calls_own_hold_would_have_been_granted(ledger_file: Path) -> None:
    clock = ManualClock()
    ours, theirs = Ledger(ledger_file, clock=clock), Ledger(ledger_file, clock=clock)
    try:
        ours.record(row(cost_nusd=0), spare=spare(4_000, limit=10_000))
        assert ours.spare_nusd == 4_000
        kept = ours._spare.rid if ours._spare else None
        theirs.record(row(cost_nusd=5_000))  # spent 5,000: the call's own 2,000 would fit
        assert reserve(ours, [daily(10_000)], 2_000, request_id="fits") == kept
        ours.record(row(cost_nusd=1_000), reservation_id=kept, spare=spare(4_000, limit=10_000))
        assert ours.spare_nusd == 4_000  # 6,000 spent + 4,000 kept: just room for it

        theirs.record(row(cost_nusd=2_500))  # spent 8,500: the call's own 2,000 would not fit
        refusal = reserve(ours, [daily(10_000)], 2_000, request_id="too much")
        assert refusal == Refusal(daily(10_000), spent_nusd=8_500, reserved_nusd=0)
        assert ours.spare_nusd == 0 and ours.reservations_total() == 0, "the spare went, not to the call"
    finally:
        ours.close()
        theirs.close()


def test_a_spare_that_does_not_suit_the_next_call_is_let_go_in_its_reservation(sqlite_ledger: Ledger) -> None:
    sqlite_ledger.record(row(), spare=spare(2_000))
    other = reserve(sqlite_ledger, [daily(100_000)], 500, provider="openai")
    bigger = reserve(sqlite_ledger, [daily(100_000)], 3_000)

    assert isinstance(other, str) and isinstance(bigger, str)
    assert sqlite_ledger.spare_nusd == 0 and sqlite_ledger.reservations_total() == 3_500


def test_no_spare_is_kept_where_a_limit_has_no_room_for_it(sqlite_ledger: Ledger) -> None:
    sqlite_ledger.record(row(cost_nusd=9_000), spare=spare(2_000, limit=10_000))
    assert sqlite_ledger.spare_nusd == 0 and sqlite_ledger.reservations_total() == 0

    # The same when the settling call's own hold would have become the spare.
    rid = reserve(sqlite_ledger, [daily(20_000)], 1_000)
    assert isinstance(rid, str)
    sqlite_ledger.record(row(cost_nusd=9_000), reservation_id=rid, spare=spare(3_000, limit=20_000))
    assert sqlite_ledger.spare_nusd == 0 and sqlite_ledger.reservations_total() == 0
    assert sqlite_ledger.usage(daily(20_000)) == (18_000, 0)


def test_an_unused_spare_is_let_go_by_upkeep_and_on_close(ledger_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idleness is judged on the ledger's clock, here the test's: the spare cannot look idle before
    the test says so, however long a paused machine takes between two steps."""
    monkeypatch.setattr(timings, "SPARE_IDLE_S", 0.2)  # upkeep looks every 0.2 s
    clock = ManualClock()
    led = Ledger(ledger_file, clock=clock)
    try:
        led.start_upkeep(lease_s=60, interval_s=3600)
        led.record(row(), spare=spare(2_000))
        assert led.spare_nusd == 2_000
        clock.advance(0.3)  # idle for longer than SPARE_IDLE_S
        deadline = time.monotonic() + 10
        while led.reservations_total():
            assert time.monotonic() < deadline, "the idle spare is still held"
            time.sleep(0.05)
        assert led.spare_nusd == 0
        assert isinstance(reserve(led, [daily(100_000)], 100), str)  # too old to be taken over: a hold of its own
    finally:
        led.close()

    led = Ledger(ledger_file)
    led.record(row(), spare=spare(2_000))
    led.close()
    again = Ledger(ledger_file)
    try:
        assert again.query("SELECT count(*) AS n FROM reservations WHERE request_id IS NULL") == [{"n": 0}]
    finally:
        again.close()


def test_a_refusal_is_never_given_on_cached_figures(sqlite_ledger: Ledger) -> None:
    """Cached sums only ever say yes: a refusal is re-read from the file before it is given."""
    assert sqlite_ledger.usage(daily(10_000)) == (0, 0)
    for sums in sqlite_ledger._usage_cache.sums.values():  # the cache gone wrong, as if a hold were counted twice
        sums[1] += 9_999

    assert isinstance(reserve(sqlite_ledger, [daily(10_000)], 6_000), str)
    assert sqlite_ledger.usage(daily(10_000)) == (0, 6_000)


def test_routing_may_read_slightly_stale_figures_but_a_reservation_never_does(ledger_file: Path) -> None:
    """Routing asks for figures at most stale_ok_s old (one pragma less per call); another
    process's spend may then be missed by routing, never by the reservation that enforces, and by
    routing only while what was read is younger than the cache's age.

    Regression: on the machine's clock, a pause of a second between two lines made the figures
    'allowed to be stale' fresh, and the test failed; it now runs on its own clock."""
    clock = ManualClock()
    a, b = Ledger(ledger_file, clock=clock), Ledger(ledger_file, clock=clock)
    try:
        assert a.usages([daily(10_000)], stale_ok_s=60) == [(0, 0)]
        b.record(row(cost_nusd=7_000))

        assert a.usages([daily(10_000)], stale_ok_s=60) == [(0, 0)]  # allowed to be stale
        assert a.usages([daily(10_000)]) == [(7_000, 0)]  # asked fresh: sees it
        assert a.usages([daily(10_000)], stale_ok_s=60) == [(7_000, 0)]
        b.record(row(cost_nusd=2_000))
        assert a.usages([daily(10_000)], stale_ok_s=60) == [(7_000, 0)]
        refusal = reserve(a, [daily(10_000)], 2_000)
        assert refusal == Refusal(daily(10_000), spent_nusd=9_000, reserved_nusd=0)

        b.record(row(cost_nusd=500))
        assert a.usages([daily(10_000)], stale_ok_s=60) == [(9_000, 0)]
        clock.advance(timings.USAGE_CACHE_MAX_AGE_S + 0.01)  # what routing read has grown too old
        assert a.usages([daily(10_000)], stale_ok_s=60) == [(9_500, 0)]
    finally:
        a.close()
        b.close()


def _busy_timeout(led: Ledger) -> int:
    with led._lock:
        return int(led._conn.execute("PRAGMA busy_timeout").fetchone()[0])


@pytest.mark.anyio
async def test_inline_calls_wait_briefly_for_the_write_lock_and_everything_else_fully(ledger_file: Path) -> None:
    """Run on the event loop, a ledger call must not stall it behind another process's write lock
    (it goes to the worker thread instead); the worker thread and upkeep wait the full timeout."""
    import anyio.to_thread

    led = Ledger(ledger_file, busy_timeout_s=7)
    try:
        assert await led.run(lambda: int(led._conn.execute("PRAGMA busy_timeout").fetchone()[0])) == 5
        assert await anyio.to_thread.run_sync(_busy_timeout, led) == 7_000
        assert await led.run(lambda: int(led._conn.execute("PRAGMA busy_timeout").fetchone()[0])) == 5
        assert _busy_timeout(led) == 7_000
    finally:
        led.close()


@pytest.mark.anyio
async def test_a_ledger_call_that_meets_a_busy_file_inline_is_retried_on_the_thread(ledger_file: Path) -> None:
    import sqlite3

    """Another process holds the write lock until the call has gone to the worker thread (not for
    a fixed 0.3 s, which a busy machine could spend before the inline try and so never test it)."""
    led = Ledger(ledger_file, busy_timeout_s=10)
    other = sqlite3.connect(ledger_file, isolation_level=None, check_same_thread=False)
    moved = threading.Event()

    def commit_once_the_call_is_on_the_thread() -> None:
        deadline = time.monotonic() + 10
        while led._limiter.borrowed_tokens == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        if led._limiter.borrowed_tokens:
            moved.set()
        other.execute("COMMIT")

    committer = threading.Thread(target=commit_once_the_call_is_on_the_thread)
    try:
        other.execute("BEGIN IMMEDIATE")
        committer.start()
        rid = await led.run(reserve, led, [daily(10_000)], 1_000)

        assert isinstance(rid, str)
        assert moved.is_set(), "the inline try met the busy file and the call went to the worker thread"
        assert led.usage(daily(10_000)) == (0, 1_000)
    finally:
        committer.join(30)
        led.close()
        other.close()
