"""ledger/: leases and reclaim: holds of a server that stopped renewing lapse and are reclaimed, and
logged. Each runs against both backends where both apply (``backends.py``); rows and checks come
from ``ledger_rows.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from llm_router.ledger import LedgerBase, Refusal
from llm_router.ledger import base as ledger_base
from llm_router.ledger import records as ledger_records

from .backends import Store, execute
from .ledger_rows import (
    DAY,
    daily,
    reserve,
    row,
)

# -- reclaiming ---------------------------------------------------------------------------------


def reclaim_events(led: LedgerBase) -> list[dict[str, Any]]:
    return [
        {"kind": e["kind"], **{k: v for k, v in e["detail"].items() if k != "reservation"}}
        for e in led.events()
        if e["kind"] == "reservation_reclaimed"
    ]


def reclaimed(request_id: str, pid: int, amount: int, reason: str, host: str = ledger_base.HOST) -> dict[str, Any]:
    return {
        "kind": "reservation_reclaimed",
        "request_id": request_id,
        "pid": pid,
        "host": host,
        "amount_nusd": amount,
        "day": DAY,
        "provider": "anthropic",
        "tag": "",
        "reason": reason,
    }


def test_expired_reservations_are_reclaimed_and_logged(ledger: LedgerBase) -> None:
    live = reserve(ledger, [], 100, request_id="live")
    expired = reserve(ledger, [], 2_000, request_id="stuck", ttl_s=-1)  # expired the moment it was made
    assert isinstance(live, str) and isinstance(expired, str)

    assert ledger.reclaim() == 1

    assert ledger.reservations_total() == 100
    assert reclaim_events(ledger) == [reclaimed("stuck", os.getpid(), 2_000, "expired")]
    assert ledger.reclaim() == 0


def test_expired_reservations_stop_counting_against_limits_and_are_logged_when_reserving(
    ledger: LedgerBase,
) -> None:
    """Regression: reserve() dropped expired reservations without a trace in events."""
    assert isinstance(reserve(ledger, [daily(1_000)], 1_000, request_id="stuck", ttl_s=-1), str)

    assert ledger.usage(daily(1_000)) == (0, 0)
    assert isinstance(reserve(ledger, [daily(1_000)], 1_000, request_id="next"), str)

    assert [e["request_id"] for e in reclaim_events(ledger)] == ["stuck"]


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def fake_reservation(led: LedgerBase, *, pid: int, host: str, amount: int = 500, expires_in: float = 900) -> None:
    now = datetime.now(UTC).timestamp()
    execute(
        led,
        "INSERT INTO reservations (id, request_id, created_at, expires_at, host, pid, day, provider, tag, amount_nusd)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [f"fake-{pid}-{host}-{expires_in}", f"from-{pid}", now, now + expires_in, host, pid, DAY, "anthropic", "",
         amount],
    )


def test_reservation_of_a_dead_process_on_this_host_is_reclaimed(ledger: LedgerBase, dead_pid: int) -> None:
    fake_reservation(ledger, pid=dead_pid, host=ledger_base.HOST, amount=500)
    fake_reservation(ledger, pid=dead_pid, host="another-machine", amount=70)  # can't tell: left alone
    fake_reservation(ledger, pid=os.getppid(), host=ledger_base.HOST, amount=3)  # alive
    mine = reserve(ledger, [], 1)  # this process: alive
    assert isinstance(mine, str)

    assert ledger.reclaim() == 1

    assert ledger.reservations_total() == 70 + 3 + 1
    assert reclaim_events(ledger) == [reclaimed(f"from-{dead_pid}", dead_pid, 500, "process_gone")]


def test_reclaim_without_dead_pids_only_frees_expired_reservations(ledger: LedgerBase, dead_pid: int) -> None:
    fake_reservation(ledger, pid=dead_pid, host=ledger_base.HOST)

    assert ledger.reclaim(dead_pids=False) == 0
    assert ledger.reservations_total() == 500


def test_expired_reservation_of_a_dead_process_is_reclaimed_once(ledger: LedgerBase, dead_pid: int) -> None:
    """Regression: it matched both the expired and the dead-process query and was counted twice."""
    fake_reservation(ledger, pid=dead_pid, host=ledger_base.HOST, expires_in=-60)

    assert ledger.reclaim() == 1
    assert len(reclaim_events(ledger)) == 1


def test_reclaim_never_signals_processes_on_windows(
    ledger: LedgerBase, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: on Windows os.kill(pid, 0) terminates the process instead of probing it."""
    fake_reservation(ledger, pid=dead_pid, host=ledger_base.HOST)
    signalled: list[int] = []
    monkeypatch.setattr(ledger_records.sys, "platform", "win32")
    monkeypatch.setattr(ledger_records.os, "kill", lambda pid, sig: signalled.append(pid))

    assert ledger.reclaim() == 0
    assert signalled == []


def test_reclaimed_lists_what_each_reclaimed_hold_was_for(ledger: LedgerBase, dead_pid: int) -> None:
    before = ledger_base.now_iso()
    fake_reservation(ledger, pid=dead_pid, host=ledger_base.HOST, amount=500)
    ledger.reclaim()

    assert [{k: r[k] for k in ("request_id", "amount_nusd", "reason", "day", "provider")}
            for r in ledger.reclaimed(before)] == [
        {"request_id": f"from-{dead_pid}", "amount_nusd": 500, "reason": "process_gone", "day": DAY,
         "provider": "anthropic"}
    ]
    assert ledger.reclaimed("2999-01-01") == []


# -- leases -------------------------------------------------------------------------------------


def expiry(led: LedgerBase, rid: str) -> tuple[float, float]:
    r = led.query("SELECT expires_at, hard_expires_at FROM reservations WHERE id = ?", [rid])[0]
    return r["expires_at"], r["hard_expires_at"]


def test_with_upkeep_a_reservation_is_a_lease_renewed_up_to_its_time_to_live(ledger: LedgerBase) -> None:
    ledger.start_upkeep(lease_s=60, interval_s=3600)
    t0 = time.time()
    rid = reserve(ledger, [], 10, ttl_s=900)
    assert isinstance(rid, str)
    expires, hard = expiry(ledger, rid)
    assert expires - t0 == pytest.approx(60, abs=5)
    assert hard - t0 == pytest.approx(900, abs=5)

    execute(ledger, "UPDATE reservations SET expires_at = expires_at - 50 WHERE id = ?", [rid])
    assert ledger.renew() == 1
    assert expiry(ledger, rid)[0] == pytest.approx(time.time() + 60, abs=5)

    short = reserve(ledger, [], 10, ttl_s=20)  # the call's own time-to-live is shorter than a lease
    assert isinstance(short, str)
    ledger.renew()
    assert expiry(ledger, short)[0] == pytest.approx(expiry(ledger, short)[1])


@pytest.mark.slow
def test_holds_of_a_ledger_that_stopped_renewing_lapse_and_are_reclaimed_by_another(store: Store) -> None:
    """A server killed mid-call on another machine: nobody can see its process, but its lease lapses.

    The lease is three seconds: until it lapses the hold must still count, and with a shorter one
    a paused or busy machine could take that long between making the hold and the check that it
    blocks. (Leases are dated by the PostgreSQL server's clock, so no test clock can stand in.)"""
    dead, other = store.open(), store.open()
    try:
        dead.start_upkeep(lease_s=3.0, interval_s=3600)
        rid = reserve(dead, [daily(1_000)], 1_000, request_id="in-flight")
        assert isinstance(rid, str)
        dead.stop_upkeep()  # no more renewals, as if the process had died
        assert isinstance(reserve(other, [daily(1_000)], 1, request_id="blocked"), Refusal)

        deadline = time.monotonic() + 10
        while other.usage(daily(1_000)) != (0, 0):
            assert time.monotonic() < deadline, "the lapsed lease still counts"
            time.sleep(0.05)
        assert isinstance(reserve(other, [daily(1_000)], 1_000, request_id="next"), str)

        assert [(e["request_id"], e["reason"]) for e in reclaim_events(other)] == [("in-flight", "expired")]
    finally:
        dead.close()
        other.close()


def test_a_hold_another_process_took_after_ours_is_reclaimed_once_it_lapses(store: Store) -> None:
    """A reservation skips looking for lapsed holds while none can have lapsed; a hold written by
    another process since (here: one that lapses before ours) must end that, or it would linger."""
    ours, theirs = store.open(), store.open()
    try:
        assert isinstance(reserve(ours, [daily(10_000)], 10, request_id="long", ttl_s=900), str)
        assert isinstance(reserve(theirs, [daily(10_000)], 20, request_id="short", ttl_s=0.05), str)
        time.sleep(0.1)

        assert isinstance(reserve(ours, [daily(10_000)], 30, request_id="next"), str)

        assert [(e["request_id"], e["reason"]) for e in reclaim_events(ours)] == [("short", "expired")]
        assert ours.reservations_total() == 40
    finally:
        ours.close()
        theirs.close()


def test_upkeep_keeps_renewing_while_the_ledger_is_open(store: Store) -> None:
    """Renewed every quarter lease. With a short lease, a paused or busy machine keeping the upkeep
    thread waiting that long would let the hold lapse before the final check; with a 3 s lease
    the thread has to miss four renewals in a row (over two seconds)."""
    led = store.open()
    try:
        led.start_upkeep(lease_s=3.0, interval_s=3600)
        rid = reserve(led, [], 10)
        assert isinstance(rid, str)
        first = expiry(led, rid)[0]
        deadline = time.monotonic() + 20
        while expiry(led, rid)[0] < first + 1.0:  # renewed twice or more since it was made
            assert time.monotonic() < deadline, "the lease was not renewed"
            time.sleep(0.05)
        assert led.reclaim() == 0
    finally:
        led.close()


def test_settling_a_hold_that_was_reclaimed_still_records_the_spend_and_says_so(ledger: LedgerBase) -> None:
    rid = reserve(ledger, [], 5_000, ttl_s=-1)
    assert isinstance(rid, str)
    ledger.reclaim()

    ledger.record(row(cost_nusd=1_234), reservation_id=rid)

    assert ledger.usage(daily(0)) == (1_234, 0)
    late = [e["detail"] for e in ledger.events() if e["kind"] == "settled_after_reclaim"]
    assert [(d["reservation"], d["cost_nusd"]) for d in late] == [(rid, 1_234)]
