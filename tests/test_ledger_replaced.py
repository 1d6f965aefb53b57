"""A SQLite ledger file deleted, replaced or moved away while servers run. The server that had it
open kept writing to the unlinked file (its connection follows the inode, not the name) while a
second server started a fresh ledger at $0 under the name: spend doubled past the limit and the
first server's rows were missing from the file on disk. Now the running ledger compares the name's
device and inode with the ones it opened before every write commits (and before it takes over its
spare hold), and refuses, naming the path, what happened and what to do."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import ledger_path
from llm_router.engine import Engine
from llm_router.ledger import Ledger, LedgerUnavailable, LimitCheck, RequestRow, SpareRequest

from .conftest import make_settings

DAY = "2025-03-14"
CHECKS = [LimitCheck("global daily", "global", None, DAY, DAY, 10_000_000)]


def _row(n: int, cost: int = 1_000) -> RequestRow:
    return RequestRow(id=f"r{n}", ts=f"{DAY}T12:00:00.{n:03d}+00:00", day=DAY, status="ok", provider="p",
                      model="m", input_tokens=1, output_tokens=1, cost_nusd=cost, cost_usd="0")


def _reserve(led: Ledger, n: int) -> str:
    rid = led.reserve(CHECKS, 5_000, request_id=f"r{n}", day=DAY, provider="p", tag="", ttl_s=60)
    assert isinstance(rid, str), rid
    return rid


def _call(led: Ledger, n: int, cost: int = 1_000) -> None:
    led.record(_row(n, cost), reservation_id=_reserve(led, n))


def _on_disk(path: Path) -> tuple[int, int, int]:
    """(rows, their cost, holds) in the file now at ``path``, read by a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        rows, cost = conn.execute("SELECT count(*), coalesce(sum(cost_nusd), 0) FROM requests").fetchone()
        holds = conn.execute("SELECT count(*) FROM reservations").fetchone()[0]
    finally:
        conn.close()
    return rows, cost, holds


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


def _replace(path: Path, new: Path) -> None:
    """Put the ledger ``new`` in place of ``path``. Its old write-ahead log and shared-memory files go
    too: left under the name, SQLite would read the running server's frames as part of the new file."""
    _remove(path)
    os.replace(new, path)


def _refused(led: Ledger, n: int, path: Path, what: str) -> None:
    with pytest.raises(LedgerUnavailable) as e:
        led.reserve(CHECKS, 5_000, request_id=f"r{n}", day=DAY, provider="p", tag="", ttl_s=60)
    message = str(e.value)
    assert str(path) in message and what in message and "Restart the server" in message, message


def test_a_ledger_whose_file_was_deleted_under_it_refuses_the_next_reservation_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    first, other = Ledger(path), Ledger(path)
    for n in range(3):
        _call(first, n)
    _call(other, 3)
    assert _on_disk(path) == (4, 4_000, 0)
    _remove(path)
    _refused(first, 20, path, "is no longer there (deleted, or moved away)")
    fresh = Ledger(path)  # a server started after the deletion: a new ledger at $0
    _call(fresh, 10, cost=7_000)
    _refused(other, 20, path, "was replaced by another file")
    for led in (first, other):
        with pytest.raises(LedgerUnavailable):
            led.record(_row(21))
        led.release("no-such-hold")  # a failed call's release after the swap is harmless
    assert _on_disk(path) == (1, 7_000, 0)
    first.close(), other.close(), fresh.close()


def test_a_ledger_whose_file_was_replaced_by_a_fresh_ledger_refuses_and_leaves_no_hold(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    running = Ledger(path)
    for n in range(5):
        _call(running, n)
    # The spare hold it keeps for its next call must not stand in for a reservation either.
    running.record(_row(5), reservation_id=_reserve(running, 5),
                   spare=SpareRequest(CHECKS, 5_000, DAY, "p", "", 60))
    assert running.spare_nusd == 5_000
    replacement = Ledger(tmp_path / "new.db")
    _call(replacement, 100, cost=9_000)
    replacement.close()
    _replace(path, tmp_path / "new.db")
    _refused(running, 6, path, "was replaced by another file")
    _refused(running, 7, path, "was replaced by another file")  # and stays refused
    assert _on_disk(path) == (1, 9_000, 0)
    with pytest.raises(LedgerUnavailable):
        running.set_budget("global", "daily", 1)
    reopened = Ledger(path)
    assert reopened.budget_overrides() == {}
    reopened.close()
    running.close()


def test_a_ledger_whose_file_was_moved_away_refuses_and_the_moved_file_keeps_what_it_recorded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    running = Ledger(path)
    for n in range(4):
        _call(running, n, cost=2_000)
    (tmp_path / "old").mkdir()
    for suffix in ("", "-wal", "-shm"):  # mv ledger.db* old/
        os.rename(f"{path}{suffix}", tmp_path / "old" / f"ledger.db{suffix}")
    _refused(running, 5, path, "is no longer there (deleted, or moved away)")
    assert not path.exists()  # nothing was created under the name
    running.close()
    assert _on_disk(tmp_path / "old" / "ledger.db") == (4, 8_000, 0)


def test_an_answer_in_flight_when_the_file_is_replaced_is_not_recorded_in_the_unlinked_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    running = Ledger(path)
    _call(running, 0)
    hold = _reserve(running, 1)  # the call is with the provider now
    Ledger(tmp_path / "new.db").close()
    _replace(path, tmp_path / "new.db")
    with pytest.raises(LedgerUnavailable) as e:
        running.record(_row(1, cost=3_000), reservation_id=hold)
    assert e.value.request_id == "r1"
    message = str(e.value)
    assert str(path) in message and "request r1, cost $0.000003)" in message and "not written" in message, message
    # Rolled back in the old file too (its connection still reads it): not silently kept there.
    assert running.query("SELECT id FROM requests") == [{"id": "r0"}]
    assert _on_disk(path) == (0, 0, 0)
    running.close()


def test_a_renewing_server_stops_renewing_holds_in_a_file_that_was_deleted(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    running = Ledger(path)
    running.lease_s = 30
    _reserve(running, 0)
    assert running.renew() == 1
    _remove(path)
    assert running.renew() == 0
    assert running.reclaim() == 0
    running._checkpoint()
    assert not path.exists()  # no fresh file made under the name by the upkeep
    running.close()


_CHILD = textwrap.dedent(
    """
    import sys
    from llm_router.ledger import Ledger, LedgerUnavailable, LimitCheck, RequestRow
    day = "2025-03-14"
    checks = [LimitCheck("global daily", "global", None, day, day, 10_000_000)]
    led = Ledger(sys.argv[1])
    for line in sys.stdin:
        n = int(line)
        try:
            rid = led.reserve(checks, 5_000, request_id=f"c{n}", day=day, provider="p", tag="", ttl_s=60)
            led.record(RequestRow(id=f"c{n}", ts=f"{day}T13:00:00.{n:03d}+00:00", day=day, status="ok",
                                  provider="p", cost_nusd=1_000, cost_usd="0"), reservation_id=rid)
            print("ok", flush=True)
        except LedgerUnavailable as e:
            print("refused", e, flush=True)
    """
)


def test_a_second_process_notices_the_ledger_was_replaced_before_its_next_reservation(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        for n in range(3):
            child.stdin.write(f"{n}\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok"
        assert _on_disk(path)[:2] == (3, 3_000)
        _remove(path)
        fresh = Ledger(path)  # the second server, starting on the now empty path
        _call(fresh, 50, cost=4_000)
        child.stdin.write("3\n")
        child.stdin.flush()
        answer = child.stdout.readline().strip()
        assert answer.startswith("refused") and str(path) in answer and "was replaced by another file" in answer, answer
        child.stdin.close()
        assert child.wait(timeout=30) == 0
        assert _on_disk(path) == (1, 4_000, 0)
        fresh.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        if not child.stdin.closed:
            child.stdin.close()


@pytest.mark.anyio
async def test_a_call_after_the_ledger_was_replaced_is_refused_with_the_path_and_costs_nothing(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    path = ledger_path(settings)
    engine = Engine(settings)
    try:
        first = await engine.complete(CompleteArgs(prompt="hello"))
        assert first.request_id
        before = _on_disk(path)
        assert before[0] == 1
        Ledger(tmp_path / "new.db").close()
        _replace(path, tmp_path / "new.db")
        with pytest.raises(LedgerUnavailable) as e:
            await engine.complete(CompleteArgs(prompt="hello again"))
        assert str(path) in str(e.value) and "was not recorded" not in str(e.value)  # it cost nothing
        assert e.value.request_id
        assert _on_disk(path) == (0, 0, 0)
    finally:
        await engine.aclose()
