"""A paid answer whose row cannot be written is never lost (issue 14, point 2).

Regression: with the ledger locked past ``busy_timeout_s`` (another process inside ``BEGIN
IMMEDIATE``) or the disk full, the caller got a bare error, no row existed, and the call's hold was
renewed until its time-to-live and then dropped: the spend was gone from every report and every
limit. Now the row goes to an fsynced journal beside the ledger before the caller hears anything;
its holds stay, counted by every process; the journal is replayed (idempotently) by the next write
transaction of any server, and when a ledger opens; the caller gets the answer with a note, or, if
even the journal cannot be written, a structured error with the request id and the cost.

Each test ends with the account: rows plus journal equal what the upstream billed, call for call
(the fake reports the usage; compared by request id), and nothing held once replayed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import ledger_path
from llm_router.engine import Engine
from llm_router.ledger import Journal, Ledger, LimitCheck, Refusal, RequestRow, SpareRequest, settling
from llm_router.ledger.journal import Entry
from llm_router.types import AllAttemptsFailed, LedgerBusy, SpendNotRecorded

from .clocks import ManualClock
from .fakes import FakeProvider, Usage
from .ledger_faults import (
    BILLED_NUSD,
    INPUT_TOKENS,
    MODEL,
    OUTPUT_TOKENS,
    LockHolder,
    account,
    answered_during,
    check_billed,
    gate,
    settings,
    upstream_calls,
    wait_for,
)

pytestmark = pytest.mark.anyio

DAY = "2025-03-14"


def _fake() -> FakeProvider:
    return FakeProvider("openai", models=[MODEL], usage=Usage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS))


def _row(n: int, cost: int) -> RequestRow:
    return RequestRow(id=f"r{n}", ts=f"{DAY}T12:00:00.{n:03d}+00:00", day=DAY, status="ok", provider="p", model="m",
                      input_tokens=1, output_tokens=1, cost_nusd=cost, cost_usd="0")


def _checks(limit: int) -> list[LimitCheck]:
    return [LimitCheck("global daily", "global", None, DAY, DAY, limit)]


# -- a lock held past the busy timeout --------------------------------------------------------------


async def test_a_paid_answer_whose_row_meets_a_lock_held_past_the_busy_timeout_is_journaled_and_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch)
        path = ledger_path(cfg)
        engine = Engine(cfg)
        holder = LockHolder(path)
        answered: list[str] = []
        try:
            g = gate(engine)
            answered.append((await engine.complete(CompleteArgs(prompt="one"))).request_id)

            # The next call is answered (and billed) upstream; then another server takes the
            # write lock and keeps it, past this server's busy timeout.
            result = await answered_during(engine, g, lambda: anyio.to_thread.run_sync(holder.lock), prompt="two")
            answer = result.answer
            answered.append(answer.request_id)  # type: ignore[attr-defined]
            note = answer.notes[-1]  # type: ignore[attr-defined]
            assert "journal" in note and f"{path}.journal" in note and "counted against every limit" in note, note
            assert f"held by process {holder.pid}" in note, note
            print(f"\nsettle with the lock held: the answer came back after {result.took:.2f} s (busy timeout 0.5 s)")

            acc = account(path)
            assert set(acc.rows) == {answered[0]} and set(acc.journaled) == {answered[1]}
            assert acc.holds >= BILLED_NUSD  # its hold stays, for every process to count
            assert engine.ledger.journaled() == (1, BILLED_NUSD)
            other = Ledger(path)  # another process's view: the charge is held against the limit
            try:
                today = engine.budget.clock.today().isoformat()
                spent, reserved = other.usage(LimitCheck("global daily", "global", None, today, today, 10**9))
                assert spent == BILLED_NUSD and reserved >= BILLED_NUSD
            finally:
                other.close()

            # While the lock is held, a new call is refused as busy: no hold, nothing spent.
            holds_before = account(path).holds
            with pytest.raises(LedgerBusy) as busy:
                await engine.complete(CompleteArgs(prompt="three"))
            assert busy.value.request_id and busy.value.holder_pid == holder.pid
            assert account(path).holds == holds_before

            await anyio.to_thread.run_sync(holder.release)
            answered.append((await engine.complete(CompleteArgs(prompt="four"))).request_id)  # replays first
            acc = account(path)
            assert acc.journaled == {} and not Path(f"{path}.journal").exists()
            assert set(acc.rows) == {*answered, busy.value.request_id}
            assert acc.rows[busy.value.request_id]["status"] == "error"  # the busy call: a row, no cost
            assert acc.rows[busy.value.request_id]["cost_nusd"] == 0
            check_billed(acc, answered, upstream_calls(fake))
            replayed = [e["detail"]["request_id"] for e in engine.ledger.events() if e["kind"] == "row_from_journal"]
            assert sorted(replayed) == sorted([answered[1], busy.value.request_id])
        finally:
            holder.close()
            await engine.aclose()
        assert account(path).holds == 0
        print(f"calls answered {len(answered)}, rows {len(account(path).rows)} (one a busy refusal costing $0), "
              f"billed {upstream_calls(fake) * BILLED_NUSD} n$, recorded {account(path).recorded_nusd()} n$")


async def test_a_journaled_charge_counts_against_the_limit_in_another_process_even_after_its_hold_lapsed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    clock = ManualClock()
    writer, other = Ledger(path, busy_timeout_s=0.2, clock=clock), Ledger(path, clock=clock)
    writer.lease_s = other.lease_s = 10
    lock = sqlite3.connect(path, isolation_level=None)
    try:
        rid = writer.reserve(_checks(10_000), 6_000, request_id="r1", day=DAY, provider="p", tag="", ttl_s=30)
        assert isinstance(rid, str)
        lock.execute("BEGIN IMMEDIATE")
        assert await settling.settle(writer, _row(1, 5_000), reservation_id=rid, wait_s=0.2) is not None
        lock.execute("ROLLBACK")
        clock.advance(3600)  # long past the hold's lease and time-to-live: nobody renewed it
        # The other process's reservation transaction replays the journal before it decides: the
        # $5,000 spent counts, so 6,000 more do not fit under 10,000.
        refusal = other.reserve(_checks(10_000), 6_000, request_id="r2", day=DAY, provider="p", tag="", ttl_s=30)
        assert isinstance(refusal, Refusal) and refusal.spent_nusd == 5_000 and refusal.reserved_nusd == 0
        assert other.rows(request_id="r1")[0]["cost_nusd"] == 5_000
        assert other.reservations_total() == 0 and not Path(f"{path}.journal").exists()
        replayed = [e for e in other.events() if e["kind"] == "row_from_journal"]
        assert replayed and replayed[0]["detail"]["request_id"] == "r1"
        assert replayed[0]["detail"]["journaled_by"]["pid"] == os.getpid()
    finally:
        lock.close()
        writer.close()
        other.close()


# -- replay: at start, idempotent, torn lines ---------------------------------------------------------

_DIES_AFTER_JOURNALING = textwrap.dedent(
    """
    import sys, anyio
    from llm_router.ledger import Ledger, LimitCheck, RequestRow, settling
    day = "2025-03-14"
    led = Ledger(sys.argv[1], busy_timeout_s=0.2)
    checks = [LimitCheck("global daily", "global", None, day, day, 10**9)]
    rid = led.reserve(checks, 9_000, request_id="c1", day=day, provider="p", tag="", ttl_s=600)
    print("reserved", flush=True)
    sys.stdin.readline()  # the test takes the write lock now
    row = RequestRow(id="c1", ts=day + "T12:00:00+00:00", day=day, status="ok", provider="p", cost_nusd=7_000,
                     cost_usd="0.000007")
    note = anyio.run(lambda: settling.settle(led, row, reservation_id=rid, wait_s=0.2))
    print("journaled" if note else "written", flush=True)
    sys.stdin.readline()  # killed here
    """
)


async def test_another_server_opening_the_ledger_replays_the_journal_of_one_that_died(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    child = subprocess.Popen([sys.executable, "-c", _DIES_AFTER_JOURNALING, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    lock = sqlite3.connect(path, isolation_level=None)
    try:
        assert child.stdout.readline().strip() == "reserved"
        lock.execute("BEGIN IMMEDIATE")
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "journaled"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        lock.execute("ROLLBACK")
        assert account(path).journaled.keys() == {"c1"} and account(path).holds == 9_000
        fresh = Ledger(path)  # a server starting after the one that journaled died
        try:
            acc = account(path)
            assert acc.rows == {"c1": {"id": "c1", "status": "ok", "input_tokens": 0, "output_tokens": 0,
                                       "cost_nusd": 7_000}}
            assert acc.journaled == {} and acc.holds == 0
            assert fresh.report(DAY, DAY, "day")[0]["cost_nusd"] == 7_000
        finally:
            fresh.close()
    finally:
        lock.close()
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()


def test_a_row_already_written_is_not_written_twice_by_a_replay(tmp_path: Path) -> None:
    """A replay cut short (its commit made, the journal not yet removed) is repeated harmlessly."""
    path = tmp_path / "ledger.db"
    led = Ledger(path)
    try:
        rid = led.reserve(_checks(10**9), 9_000, request_id="r1", day=DAY, provider="p", tag="", ttl_s=60)
        assert isinstance(rid, str)
        led.record(_row(1, 4_000), reservation_id=rid)
        Journal(Path(f"{path}.journal")).append(Entry("row", (rid,), _row(1, 4_000)))
        led.replay_journal()
        assert led.totals()["requests"] == 1 and led.totals()["cost_nusd"] == 4_000
        assert led.report(DAY, DAY, "provider")[0]["cost_nusd"] == 4_000
        assert not Path(f"{path}.journal").exists()
    finally:
        led.close()


def test_a_spare_hold_is_not_taken_over_while_rows_wait_in_the_journal_so_the_reservation_replays_them(
    tmp_path: Path,
) -> None:
    """Taking the spare over writes nothing, so it skipped the replay every write transaction makes
    first: another server's journaled row waited on, call after call, while this one kept taking
    its spare. Now the reservation's own transaction runs (and replays) while anything waits."""
    path = tmp_path / "ledger.db"
    clock = ManualClock()  # the spare stays fresh: no time passes between the lines
    ours, theirs = Ledger(path, clock=clock), Ledger(path, clock=clock)
    try:
        first = ours.reserve(_checks(10**9), 1_000, request_id="c1", day=DAY, provider="p", tag="", ttl_s=60)
        assert isinstance(first, str)
        ours.record(_row(1, 300), reservation_id=first, spare=SpareRequest(_checks(10**9), 2_000, DAY, "p", "", 60))
        kept = ours._spare.rid if ours._spare else None
        assert kept is not None and ours.spare_nusd == 2_000
        # The other server's call was answered; its row could not be written, so it went to the
        # journal with its hold (as ``settle`` does), the hold staying in the file meanwhile.
        hold = theirs.reserve(_checks(10**9), 9_000, request_id="r2", day=DAY, provider="p", tag="", ttl_s=60)
        assert isinstance(hold, str)
        assert theirs.journal.append(Entry("row", (hold,), _row(2, 5_000)))
        assert ours.reservations_total() == 2_000 + 9_000

        second = ours.reserve(_checks(10**9), 1_500, request_id="c3", day=DAY, provider="p", tag="", ttl_s=60)
        assert isinstance(second, str) and second != kept, "the spare was taken over: the journal was not replayed"
        assert not Path(f"{path}.journal").exists()
        assert ours.rows(request_id="r2")[0]["cost_nusd"] == 5_000
        assert ours.reservations_total() == 1_500  # the journaled row's hold and the spare gone, c3's own held
        assert ours.spare_nusd == 0

        # With nothing waiting, the spare is taken over again (no write).
        ours.record(_row(3, 400), reservation_id=second, spare=SpareRequest(_checks(10**9), 2_000, DAY, "p", "", 60))
        again = ours._spare.rid if ours._spare else None
        assert ours.reserve(_checks(10**9), 1_500, request_id="c4", day=DAY, provider="p", tag="", ttl_s=60) == again
    finally:
        theirs.close()
        ours.close()


def test_a_torn_last_journal_line_is_never_applied_and_a_damaged_one_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    journal_file = Path(f"{path}.journal")
    journal = Journal(journal_file)
    journal.append(Entry("row", (), _row(1, 1_000)))
    damaged = Entry("row", (), _row(2, 2_000)).line().replace(b'"cost_nusd":2000', b'"cost_nusd":9999')
    torn = Entry("row", (), _row(3, 3_000)).line()
    with open(journal_file, "ab") as f:
        f.write(damaged + torn[: len(torn) // 2])  # a crash in the middle of the last append
    assert [e.row.id for e in journal.waiting() if e.row] == ["r1"]
    journal.append(Entry("row", (), _row(4, 4_000)))  # starts a line of its own after the torn one
    led = Ledger(path)  # replays at open
    try:
        assert sorted(r["id"] for r in led.rows()) == ["r1", "r4"]
        assert led.totals()["cost_nusd"] == 5_000
        assert not journal_file.exists()
        assert b"9999" in Path(f"{journal_file}.rejected").read_bytes()  # set aside for a person, never applied
    finally:
        led.close()


# -- even the journal cannot be written ---------------------------------------------------------------


async def test_when_even_the_journal_cannot_be_written_the_caller_gets_the_request_id_and_cost_and_the_hold_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch, ledger={"journal_path": str(tmp_path / "no-such-dir" / "j")})
        path = ledger_path(cfg)
        engine = Engine(cfg)
        holder = LockHolder(path)
        try:
            g = gate(engine)
            lost = (await answered_during(engine, g, lambda: anyio.to_thread.run_sync(holder.lock), prompt="one",
                                          catch=SpendNotRecorded)).error
            assert lost is not None
            facts = lost.to_dict()  # type: ignore[attr-defined]
            assert facts["code"] == "spend_not_recorded" and facts["request_id"] and facts["recorded"] is False
            assert facts["cost_usd"] == "0.00018" and "is not recorded" in facts["message"]
            assert account(path).holds >= BILLED_NUSD  # kept, not released
            await anyio.to_thread.run_sync(holder.release)
            # This server kept the row in memory: its next write puts it in the ledger.
            second = await engine.complete(CompleteArgs(prompt="two"))
            acc = account(path)
            check_billed(acc, [facts["request_id"], second.request_id], upstream_calls(fake))
        finally:
            holder.close()
            await engine.aclose()
        assert account(path).holds == 0


# -- failed and cancelled calls go the same way --------------------------------------------------------


async def test_a_failed_call_whose_attempts_were_billed_is_journaled_with_its_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch)
        path = ledger_path(cfg)
        engine = Engine(cfg)
        holder = LockHolder(path)
        try:
            g = gate(engine)
            fake.fault("tool_call")  # an answer that is only a tool call: a failed attempt, billed
            failed = (await answered_during(engine, g, lambda: anyio.to_thread.run_sync(holder.lock), prompt="one",
                                            catch=AllAttemptsFailed)).error
            rid = failed.request_id  # type: ignore[union-attr]
            acc = account(path)
            assert acc.journaled[rid]["status"] == "error" and acc.journaled[rid]["cost_nusd"] == BILLED_NUSD
            assert acc.holds >= BILLED_NUSD  # the billed attempt's hold waits with the row
            await anyio.to_thread.run_sync(holder.release)
            engine.ledger.replay_journal()
            acc = account(path)
            assert acc.rows[rid]["cost_nusd"] == BILLED_NUSD and acc.journaled == {} and acc.holds == 0
            assert acc.recorded_nusd() == upstream_calls(fake) * BILLED_NUSD
        finally:
            holder.close()
            await engine.aclose()


async def test_a_call_cancelled_while_the_ledger_is_locked_leaves_its_row_in_the_journal_and_no_hold_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch)
        path = ledger_path(cfg)
        engine = Engine(cfg)
        holder = LockHolder(path)
        try:
            g = gate(engine)
            g.arm()
            async with anyio.create_task_group() as tg:
                tg.start_soon(engine.complete, CompleteArgs(prompt="one"))
                await wait_for(g.answered, "the upstream's answer")
                await anyio.to_thread.run_sync(holder.lock)
                tg.cancel_scope.cancel()  # the client gave up: the row and the hold go to the journal
            acc = account(path)
            assert [r["status"] for r in acc.journaled.values()] == ["cancelled"] and acc.rows == {}
            assert acc.holds > 0
            await anyio.to_thread.run_sync(holder.release)
            engine.ledger.replay_journal()
            acc = account(path)
            assert [r["status"] for r in acc.rows.values()] == ["cancelled"] and acc.holds == 0
        finally:
            holder.close()
            await engine.aclose()


# -- a full disk: a file size limit (no mount needed), and a 2 MB tmpfs where mounting is allowed ------

_SERVER = textwrap.dedent(
    """
    import json, os, resource, sys, anyio
    from llm_router.calls import CompleteArgs
    from llm_router.config import settings_from_dict
    from llm_router.engine import Engine
    from llm_router.ledger import open_ledger
    sys.path.insert(0, os.environ["TESTS_ROOT"])
    from tests.ledger_faults import gate

    config = json.loads(sys.argv[1])
    settings = settings_from_dict(config, source="test")
    ledger = open_ledger(settings, upkeep=False)
    ledger.db.execute("PRAGMA wal_autocheckpoint=0")  # no checkpoint: every write grows the WAL
    engine = Engine(settings, ledger=ledger)
    filler = config["ledger"]["path"] + ".filler"

    def fill_the_disk(how):
        if how == "fsize":  # a file size limit just at what the ledger's files hold now
            sizes = [os.path.getsize(config["ledger"]["path"] + s) for s in ("", "-wal")]
            resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes), resource.RLIM_INFINITY))
        else:  # the tmpfs filled, but for a few KB: room for a journal line, not for a row
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"x" * 4096):
                    pass
            except OSError:
                pass
            os.close(fd)
            os.truncate(filler, os.path.getsize(filler) - 8192)

    def free_the_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        if os.path.exists(filler):
            os.unlink(filler)

    async def main():
        g = gate(engine)
        for line in sys.stdin:
            cmd = json.loads(line)
            out = {}
            if cmd["op"] == "call":
                if cmd.get("fill"):
                    g.arm()
                async with anyio.create_task_group() as tg:
                    async def call():
                        try:
                            a = await engine.complete(CompleteArgs(prompt=cmd["prompt"]))
                            out.update(ok=True, request_id=a.request_id, cost_usd=a.cost_usd, notes=list(a.notes or ()))
                        except Exception as e:
                            out.update(ok=False, error=e.to_dict() if hasattr(e, "to_dict") else repr(e))
                    tg.start_soon(call)
                    if cmd.get("fill"):
                        await g.answered.wait()
                        fill_the_disk(cmd["fill"])
                        g.open()
            elif cmd["op"] == "free":
                free_the_disk()
            elif cmd["op"] == "replay":
                ledger.replay_journal()
            elif cmd["op"] == "account":
                out = {"journaled": list(ledger.journaled()), "holds": ledger.reservations_total()}
            print(json.dumps(out), flush=True)
        await engine.aclose()

    anyio.run(main)
    """
)


class _Server:
    """An engine in a process of its own, told what to do one JSON line at a time."""

    def __init__(self, config: dict[str, object], prefix: list[str] | None = None) -> None:
        env = {**os.environ, "TESTS_ROOT": str(Path(__file__).resolve().parent.parent)}
        self.proc = subprocess.Popen([*(prefix or []), sys.executable, "-c", _SERVER, json.dumps(config)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **cmd: object) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the server process ended (exit {self.proc.wait(timeout=30)})"
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        return code


def _config(tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, ledger_dir: Path) -> dict[str, object]:
    """The settings of ``ledger_faults.settings`` as a dict, for a server process (the key is in
    the environment it inherits)."""
    cfg = settings(tmp_path, fake, monkeypatch)
    provider = cfg.providers[0]
    return {
        "ledger": {"path": str(ledger_dir / "ledger.db"), "busy_timeout_s": 0.5},
        "providers": [{"name": provider.name, "kind": provider.kind, "base_url": provider.base_url, "models": [MODEL],
                       "api_key_env": provider.api_key_env, "timeout_s": 10,
                       "prices": {MODEL: {"input_per_mtok": 1, "output_per_mtok": 4}}}],
        "resilience": {"max_retries": 0, "deadline_s": 10},
        "budget": {"daily_usd": 1.0},
    }


async def _full_disk_run(server: _Server, fake: FakeProvider, fill: str) -> tuple[list[str], list[dict[str, object]]]:
    """Two calls written, one answered as the disk fills, one tried on the full disk, then space
    freed and one more call (which replays the journal). Returns the answered ids and every result."""
    results = [server.ask(op="call", prompt="one"), server.ask(op="call", prompt="two")]
    results.append(server.ask(op="call", prompt="three", fill=fill))  # answered, then the disk is full
    results.append(server.ask(op="call", prompt="four"))  # its reservation cannot be written
    held = server.ask(op="account")
    server.ask(op="free")
    results.append(server.ask(op="call", prompt="five"))  # the next write replays the journal
    results.append(held)
    return [str(r["request_id"]) for r in results[:-1] if r.get("ok")], results


async def test_a_paid_answer_on_a_disk_full_by_a_file_size_limit_is_journaled_and_written_once_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _fake() as fake:
        server = _Server(_config(tmp_path, fake, monkeypatch, tmp_path))
        try:
            answered, results = await _full_disk_run(server, fake, "fsize")
        finally:
            assert server.close() == 0
        _check_full_disk_run(tmp_path / "ledger.db", fake, answered, results)


def _check_full_disk_run(
    path: Path, fake: FakeProvider, answered: list[str], results: list[dict[str, object]], *, exact: bool = True,
) -> None:
    """``exact``: the next call's hold cannot be written either (a file size limit). On a full
    tmpfs the journal's freed reserve may let it through: then it is answered, and accounted."""
    one, two, three, four, five, held = results
    assert one["ok"] and two["ok"] and three["ok"] and five["ok"], results
    notes = three["notes"]
    assert isinstance(notes, list) and "journal" in notes[-1] and "cannot be written" in notes[-1], notes
    acc = account(path)
    if exact or not four.get("ok"):
        error = four["error"]
        assert isinstance(error, dict) and error["code"] == "ledger_storage_error" and error["request_id"], four
        assert "Nothing was reserved or spent" in str(error["message"])
        assert acc.rows[str(error["request_id"])]["cost_nusd"] == 0  # the refused call: a row, nothing spent
    if exact:
        assert held["journaled"] == [2, BILLED_NUSD], held
    assert int(held["holds"]) >= BILLED_NUSD  # type: ignore[call-overload]  # the journaled call's hold stays
    assert acc.journaled == {} and acc.holds == 0
    check_billed(acc, answered, upstream_calls(fake))
    print(f"\ndisk full: {len(answered)} calls answered, {len(acc.rows)} rows, billed "
          f"{upstream_calls(fake) * BILLED_NUSD} n$, recorded {acc.recorded_nusd()} n$; journaled while full: "
          f"{held['journaled']}")


def _can_mount_tmpfs(where: Path) -> str | None:
    """None when a tmpfs can be mounted in a mount namespace of our own, else why not."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "no unshare(1) to make a mount namespace"
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=2m tmpfs {where}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mounting a tmpfs is not permitted here: {probe.stderr.strip() or probe.returncode}"
    return None


@pytest.mark.slow
async def test_a_paid_answer_on_a_full_two_megabyte_tmpfs_is_journaled_and_written_once_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    disk = tmp_path / "tmpfs"
    disk.mkdir()
    why_not = _can_mount_tmpfs(disk)
    if why_not is not None:
        pytest.skip(why_not)
    # The server runs in a mount namespace of its own, with the ledger on a 2 MB tmpfs mounted there;
    # when it ends, it copies the ledger out (the mount is gone with the namespace) for the account.
    out = tmp_path / "out"
    out.mkdir()
    wrapper = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
               f'mount -t tmpfs -o size=2m tmpfs {disk} && "$0" "$@"; code=$?; '
               f"cp {disk}/ledger.db* {out}/ 2>/dev/null; exit $code"]
    async with _fake() as fake:
        server = _Server(_config(tmp_path, fake, monkeypatch, disk), prefix=wrapper)
        try:
            answered, results = await _full_disk_run(server, fake, "fill")
        finally:
            assert server.close() == 0
        _check_full_disk_run(out / "ledger.db", fake, answered, results, exact=False)


# -- PostgreSQL unreachable at settle --------------------------------------------------------------------


@pytest.mark.postgres
async def test_a_paid_answer_whose_postgresql_ledger_is_unreachable_at_settle_is_journaled_and_written_when_it_answers(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from .ledger_faults import Proxy

    parts = urlsplit(pg_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    journal = tmp_path / "pg.journal"
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch, ledger={"path": None, "url": via_proxy, "journal_path": str(journal)})
        engine = Engine(cfg)
        try:
            g = gate(engine)
            answered = [(await engine.complete(CompleteArgs(prompt="one"))).request_id]
            # The database goes once the call is billed: the connection drops, reconnecting is refused.
            result = await answered_during(engine, g, proxy.cut, prompt="two")
            answer = result.answer
            answered.append(answer.request_id)  # type: ignore[attr-defined]
            note = answer.notes[-1]  # type: ignore[attr-defined]
            assert "journal" in note and str(journal) in note and "cannot be reached" in note, note
            assert engine.ledger.journaled() == (1, BILLED_NUSD)

            proxy.restore()  # it answers again: the next write replays the journal first
            answered.append((await engine.complete(CompleteArgs(prompt="three"))).request_id)
            acc = account(engine.ledger, journal)
            assert acc.journaled == {} and not journal.exists()
            check_billed(acc, answered, upstream_calls(fake))
            print(f"\nPostgreSQL cut at settle: the answer came back in {result.took:.2f} s, journaled; "
                  f"{len(answered)} answered, {len(acc.rows)} rows, billed {upstream_calls(fake) * BILLED_NUSD} n$, "
                  f"recorded {acc.recorded_nusd()} n$")
        finally:
            await engine.aclose()
            proxy.close()
    from llm_router.ledger.postgres import PostgresLedger

    led = PostgresLedger(pg_url, journal_path=journal)
    try:
        assert led.reservations_total() == 0  # nothing held once replayed (the spare let go on close)
    finally:
        led.close()
