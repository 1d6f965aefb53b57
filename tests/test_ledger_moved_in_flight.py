"""A SQLite ledger file moved away, replaced or copied over while a paid call is in flight, or
between calls (issue 14, points 2 and 3).

Regressions:
- a paid answer in flight when the file was moved away was withheld (the caller got
  ``LedgerUnavailable: ... was not recorded``) and its spend went nowhere: no row, no journal,
  though the upstream had billed it;
- with the file moved and a new server opening the path, the old connection shared the new
  file's ``-wal`` and ``-shm`` by name; its statements failed with "no such table: reservations",
  which was reported as "a full disk, a file size limit, or a failing disk";
- another ledger copied over the file in place (``cp backup.db ledger.db``: same device and inode)
  went unnoticed: the running server wrote on, and a new server granted from $0 what had already
  been spent.

Now a paid answer's row goes to the journal, which is named after the path (whichever ledger is
next opened there writes it at its start), the caller gets the answer with a note, and the next
call is refused naming the path; the file's identity is checked right after ``BEGIN IMMEDIATE`` as
well as before ``COMMIT``, a failing statement asks whether the file went before it is called a
storage error, and a random ledger id read along with the limits version tells a copy-over apart.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import ledger_path
from llm_router.engine import Engine
from llm_router.ledger import Journal, Ledger, LedgerUnavailable, LimitCheck, RequestRow
from llm_router.types import RouterError, usd_str

from .fakes import FakeProvider, Usage
from .ledger_faults import (
    BILLED_NUSD,
    INPUT_TOKENS,
    MODEL,
    OUTPUT_TOKENS,
    answered_during,
    gate,
    settings,
    upstream_calls,
)

pytestmark = pytest.mark.anyio

DAY = "2025-03-14"


def _moved(path: Path) -> Path:
    return path.with_name(path.name + ".moved")


async def _answer_while(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, new_server: bool) -> None:
    """One call answered, a second billed by the upstream; before its row is written the ledger
    file is moved away (``mv ledger.db ledger.db.moved``, its -wal and -shm left under the name, as
    a plain mv of the one file does), and with ``new_server`` a new server opens the path."""
    async with FakeProvider("openai", models=[MODEL],
                            usage=Usage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)) as fake:
        cfg = settings(tmp_path, fake, monkeypatch)
        path = ledger_path(cfg)
        engine = Engine(cfg)
        try:
            first = await engine.complete(CompleteArgs(prompt="one"))
            def move() -> None:
                os.replace(path, _moved(path))
                if new_server:
                    Ledger(path).close()  # a server started now: a new ledger at $0 under the name

            out = await answered_during(engine, gate(engine), move, prompt="two", catch=RouterError)
            assert out.error is None, f"{type(out.error).__name__}: {out.error}"
            answer = out.answer
            note = " ".join(answer.notes)
            assert str(path) in note and f"{path}.journal" in note and f"${usd_str(BILLED_NUSD)}" in note, note
            assert "nano-dollars" not in note and "full disk" not in note, note
            # Refused from now on, naming the path, before anything is asked of the upstream.
            calls = upstream_calls(fake)
            with pytest.raises(LedgerUnavailable) as refused:
                await engine.complete(CompleteArgs(prompt="three"))
            assert str(path) in str(refused.value) and "Restart the server" in str(refused.value)
            assert upstream_calls(fake) == calls == 2
        finally:
            await engine.aclose()
        # The spend waits in the journal beside the path, with what the upstream billed.
        waiting = Journal(Path(f"{path}.journal")).waiting()
        assert [(e.row.id, e.row.status, e.row.input_tokens, e.row.output_tokens, e.row.cost_nusd)
                for e in waiting if e.row is not None] == [
            (answer.request_id, "ok", INPUT_TOKENS, OUTPUT_TOKENS, BILLED_NUSD)]
        # The next server at the path writes it at its start, once.
        reopened = Ledger(path)
        try:
            assert [r["id"] for r in reopened.rows()] == [answer.request_id]
            assert reopened.totals()["cost_nusd"] == BILLED_NUSD
            assert reopened.journaled() == (0, 0)
        finally:
            reopened.close()
        assert first.request_id != answer.request_id


async def test_a_paid_answer_in_flight_when_the_ledger_file_is_moved_away_is_journaled_and_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _answer_while(tmp_path, monkeypatch, new_server=False)


async def test_a_paid_answer_in_flight_when_a_new_server_opens_the_moved_ledgers_path_is_journaled_not_a_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _answer_while(tmp_path, monkeypatch, new_server=True)


def _row(rid: str, cost: int) -> RequestRow:
    return RequestRow(id=rid, ts=f"{DAY}T12:00:00.000+00:00", day=DAY, status="ok", provider="p", model="m",
                      input_tokens=1, output_tokens=1, cost_nusd=cost, cost_usd="0")


def test_a_statement_failing_on_a_moved_ledgers_shared_wal_is_called_a_moved_file_not_a_full_disk(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    running = Ledger(path)
    try:
        running.record(_row("r0", 1_000))
        os.replace(path, _moved(path))
        Ledger(path).close()
        error = running._storage_error(sqlite3.OperationalError("no such table: reservations"))
        assert isinstance(error, LedgerUnavailable), error
        assert str(path) in str(error) and "full disk" not in str(error)
    finally:
        running.close()


def test_no_statement_runs_on_a_ledger_file_moved_away_once_its_write_lock_is_taken(tmp_path: Path) -> None:
    """The identity is checked right after ``BEGIN IMMEDIATE``, before the journal's replay or the
    step's own statements: with the path reopened by a new server, they would run on the new file's
    -wal and -shm, shared by name."""
    path = tmp_path / "ledger.db"
    running = Ledger(path)
    try:
        running.record(_row("r0", 1_000))
        os.replace(path, _moved(path))
        Ledger(path).close()
        seen: list[str] = []
        running._conn.set_trace_callback(seen.append)
        with pytest.raises(LedgerUnavailable):
            running.record(_row("r1", 1_000))
        running._conn.set_trace_callback(None)
        assert seen == ["BEGIN IMMEDIATE", "ROLLBACK"], seen
    finally:
        running.close()


def test_a_ledger_copied_over_the_file_in_place_is_noticed_before_the_next_reservation(tmp_path: Path) -> None:
    """The reviewer's case: 9000 n$ spent under a 10000 limit, the WAL checkpointed, a fresh ledger
    copied over the file (same inode), a new server starting on it and reserving 9000."""
    path, fresh = tmp_path / "ledger.db", tmp_path / "fresh.db"
    check = LimitCheck("global daily", "global", None, DAY, DAY, 10_000)
    running = Ledger(path)
    try:
        for n in range(3):
            rid = running.reserve([check], 3_000, request_id=f"a{n}", day=DAY, provider="p", tag="", ttl_s=60)
            assert isinstance(rid, str), rid
            running.record(_row(f"a{n}", 3_000), reservation_id=rid)
        running.query("PRAGMA wal_checkpoint(TRUNCATE)")
        Ledger(fresh).close()
        inode = os.stat(path).st_ino
        shutil.copyfile(fresh, path)  # cp fresh.db ledger.db: written in place
        assert os.stat(path).st_ino == inode
        other = Ledger(path)
        try:
            assert isinstance(other.reserve([check], 9_000, request_id="b1", day=DAY, provider="p", tag="", ttl_s=60),
                              str)  # the ledger at the path is the fresh one: its server may grant it
        finally:
            other.close()
        for _ in range(2):  # refused, naming the path, and stays refused
            with pytest.raises(LedgerUnavailable) as refused:
                running.reserve([check], 1, request_id="a9", day=DAY, provider="p", tag="", ttl_s=60)
            message = str(refused.value)
            assert str(path) in message and "copied over it in place" in message, message
        with pytest.raises(LedgerUnavailable):
            running.record(_row("a10", 1))
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 0  # nothing written into it
        finally:
            conn.close()
    finally:
        running.close()
