"""A frozen server inside a write transaction no longer blocks every other server (issue 14, point 6).

Regression: a process SIGSTOPped inside ``BEGIN IMMEDIATE`` made every other server wait
``busy_timeout_s`` (30 s) and then fail with a bare error. Now a call that cannot get the ledger
says so (``LedgerBusy``: who holds the lock, that it is stopped, how long this server has been
unable to write, what to do; retryable, with ``retry_after``), leaves no hold, and waits no longer
than its own deadline; a settle that cannot get the lock by then goes to the journal with the
answer returned. The same holds on PostgreSQL, where a frozen session keeps its locks until its
connection drops (``lock_timeout``). Write transactions never span an await."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import ledger_path
from llm_router.engine import Engine
from llm_router.ledger import LimitCheck, RequestRow, settling
from llm_router.types import LedgerBusy

from .fakes import FakeProvider, Usage
from .ledger_faults import (
    INPUT_TOKENS,
    MODEL,
    OUTPUT_TOKENS,
    LockHolder,
    account,
    check_billed,
    gate,
    settings,
    upstream_calls,
    wait_for,
)

pytestmark = pytest.mark.anyio

DAY = "2025-03-14"
SERVER = Path(__file__).resolve().parent.parent / "server" / "llm_router"


def _fake() -> FakeProvider:
    return FakeProvider("openai", models=[MODEL], usage=Usage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS))


async def _answered_while_frozen(engine: Engine, holder: LockHolder) -> tuple[Any, float]:
    """A call the upstream answers; then the other server enters a write transaction and is
    frozen there (SIGSTOP) before this call's row is written. Returns the answer and how long the
    call took from the moment the writer froze."""
    g = gate(engine)
    g.arm()
    out: dict[str, Any] = {}

    async def call() -> None:
        out["answer"] = await engine.complete(CompleteArgs(prompt="in flight"))
        out["done"] = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await wait_for(g.answered, "the upstream's answer")
        await anyio.to_thread.run_sync(holder.lock)
        await anyio.to_thread.run_sync(holder.stop)
        frozen = time.monotonic()
        g.open()
    return out["answer"], out["done"] - frozen


@pytest.mark.slow
async def test_a_server_frozen_inside_a_write_transaction_costs_other_servers_no_more_than_their_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The default busy timeout (30 s); the call's deadline (2 s) is what bounds its waits.
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch, ledger={"busy_timeout_s": 30}, deadline_s=2)
        path = ledger_path(cfg)
        engine = Engine(cfg)
        holder = LockHolder(path)
        try:
            answered = [(await engine.complete(CompleteArgs(prompt="before"))).request_id]
            answer, settle_s = await _answered_while_frozen(engine, holder)
            answered.append(answer.request_id)
            assert "journal" in answer.notes[-1], answer.notes  # answered; its row waits in the journal

            holds = account(path).holds
            with pytest.raises(LedgerBusy) as busy:
                await engine.complete(CompleteArgs(prompt="while frozen"))
            error = busy.value
            message = str(error)
            assert f"process {holder.pid} on this machine holds its write lock and is stopped" in message, message
            assert f"kill -CONT {holder.pid}" in message and "Nothing was reserved or spent" in message
            facts = error.to_dict()
            assert facts["code"] == "ledger_busy" and facts["retryable"] is True and facts["retry_after_s"] > 0
            assert facts["holder_pid"] == holder.pid and facts["request_id"]
            assert facts["waited_s"] < 15  # the deadline (2 s), far from the 30 s busy timeout
            assert account(path).holds == holds  # no hold was made for it
            print(f"\nfrozen writer: the answered call returned {settle_s:.2f} s after the freeze (deadline 2 s); "
                  f"a new call was refused as busy after waiting {facts['waited_s']:.2f} s (busy timeout 30 s)")

            holder.kill()  # the frozen server dies: its lock goes with it
            answered.append((await engine.complete(CompleteArgs(prompt="after"))).request_id)
            acc = account(path)
            assert acc.journaled == {}
            check_billed(acc, answered, upstream_calls(fake))
            assert acc.rows[error.request_id or ""]["cost_nusd"] == 0
        finally:
            holder.close()
            await engine.aclose()
        assert account(path).holds == 0


@pytest.mark.slow
async def test_a_frozen_writer_that_is_resumed_lets_the_journaled_rows_in_at_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch, deadline_s=2)
        path = ledger_path(cfg)
        engine = Engine(cfg)
        holder = LockHolder(path)
        try:
            answer, _ = await _answered_while_frozen(engine, holder)
            assert set(account(path).journaled) == {answer.request_id}
            holder.resume()
            await anyio.to_thread.run_sync(holder.release)
            engine.ledger.reclaim()  # any write transaction replays the journal first
            acc = account(path)
            assert set(acc.rows) == {answer.request_id} and acc.journaled == {}
            check_billed(acc, [answer.request_id], upstream_calls(fake))
        finally:
            holder.close()
            await engine.aclose()
        assert account(path).holds == 0


async def test_a_busy_ledger_reaches_an_mcp_client_as_a_tool_error_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mcp import Client

    from llm_router.mcp_server import create_server

    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch)
        engine = Engine(cfg)
        holder = LockHolder(ledger_path(cfg))
        try:
            async with Client(create_server(engine)) as client:
                await anyio.to_thread.run_sync(holder.lock)
                result = await client.call_tool("complete", {"prompt": "hello"})
                assert result.is_error and result.structured_content is None
                text = result.content[0].text
                facts = (result.meta or {})["llm-router/error"]
                assert text.startswith("ledger busy: ") and f"(ledger_busy; request {facts['request_id']})" in text
                assert facts["code"] == "ledger_busy" and facts["retryable"] is True
                assert facts["retry_after_s"] == 1.0 and facts["holder_pid"] == holder.pid
                await anyio.to_thread.run_sync(holder.release)
                ok = await client.call_tool("complete", {"prompt": "hello again"})
                assert not ok.is_error
        finally:
            holder.close()
            await engine.aclose()


def _async_functions_opening_transactions(source: str) -> list[str]:
    """Async functions whose body opens a write transaction (``with ..._tx()``, ``with
    ....transaction()``) or runs ``BEGIN``: such a transaction could span an await."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.With | ast.AsyncWith):
                for item in inner.items:
                    call = item.context_expr
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in (
                            "_tx", "transaction"):
                        found.append(node.name)
            if isinstance(inner, ast.Constant) and isinstance(inner.value, str) and "BEGIN" in inner.value:
                found.append(node.name)
    return found


def test_no_write_transaction_spans_an_await() -> None:
    """Every write transaction lives inside one synchronous ledger method: nothing can be awaited
    while the file's (or the database's) write lock is held."""
    scanned = sorted(SERVER.rglob("*.py"))
    # The engine's code lives beside it (holds, attempts, rows, prepare, windows, views, mcp_*): all scanned.
    assert {"engine.py", "holds.py", "attempts.py", "mcp_tools.py", "sqlite.py"} <= {p.name for p in scanned}
    for path in scanned:
        assert _async_functions_opening_transactions(path.read_text(encoding="utf-8")) == [], path
    # The check itself finds what it looks for.
    assert _async_functions_opening_transactions(
        "async def f(led):\n    with led._tx() as c:\n        await g()\n") == ["f"]


# -- PostgreSQL: a session frozen inside a transaction keeps its locks ---------------------------------


@pytest.mark.postgres
async def test_a_postgresql_session_frozen_inside_a_reservation_gets_other_servers_a_busy_error_naming_it(
    pg_url: str, tmp_path: Path,
) -> None:
    import psycopg

    from llm_router.ledger.postgres import PostgresLedger, _lock_key

    led = PostgresLedger(pg_url, busy_timeout_s=0.5, journal_path=tmp_path / "pg.journal")
    frozen = psycopg.connect(pg_url, autocommit=True)
    watchdog: threading.Timer | None = None
    try:
        checks = [LimitCheck("global daily", "global", None, DAY, DAY, 10**9)]
        rid = led.reserve(checks, 9_000, request_id="r1", day=DAY, provider="p", tag="", ttl_s=60)
        assert isinstance(rid, str)
        led.record(RequestRow(id="r0", ts=f"{DAY}T11:00:00+00:00", day=DAY, status="ok", provider="p", model="m",
                              cost_nusd=1_000, cost_usd="0.000001"))
        # Another server, frozen in the middle of its reservation: the advisory lock stays taken,
        # and so do the row locks of a settle it had begun.
        frozen.execute("BEGIN")
        frozen.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(led.schema, "reserve"),))
        frozen.execute("SELECT * FROM rollups FOR UPDATE")
        frozen_pid = frozen.info.backend_pid
        # Should a wait be unbounded, the frozen session is ended after 20 s, so that the test
        # fails on the time waited rather than hanging.
        watchdog = threading.Timer(20, _terminate, (pg_url, frozen_pid))
        watchdog.daemon = True
        watchdog.start()

        t0 = time.monotonic()
        with pytest.raises(LedgerBusy) as busy:
            await led.run_within(5, led.reserve, checks, 9_000, request_id="r2", day=DAY, provider="p", tag="",
                                 ttl_s=60)
        waited = time.monotonic() - t0
        message = str(busy.value)
        assert f"session {frozen_pid} " in message and "idle in transaction" in message, message
        assert f"pg_terminate_backend({frozen_pid})" in message and busy.value.holder_pid == frozen_pid
        assert waited < 15  # the lock timeout (0.5 s), not forever
        assert led.reservations_total() == 9_000  # r1's hold only: none was made for r2

        # A settle that meets the frozen session's row locks goes to the journal.
        row = RequestRow(id="r1", ts=f"{DAY}T12:00:00+00:00", day=DAY, status="ok", provider="p", model="m",
                         cost_nusd=4_000, cost_usd="0.000004")
        note = await settling.settle(led, row, reservation_id=rid, wait_s=5)
        assert note is not None and "journal" in note
        assert led.journaled() == (1, 4_000) and led.reservations_total() == 9_000

        frozen.execute("ROLLBACK")  # the frozen server's connection is dropped (or it resumes)
        led.replay_journal()
        assert led.journaled() == (0, 0) and led.reservations_total() == 0
        assert led.totals()["cost_nusd"] == 5_000
        print(f"\nPostgreSQL, a session frozen holding the locks: a reservation gave up after {waited:.2f} s "
              "(lock_timeout 0.5 s)")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        frozen.close()
        led.close()


def _terminate(url: str, pid: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


# -- PostgreSQL: a reconnection within the call's deadline -------------------------------------------


def _silent_listener(port: int) -> Any:
    """A socket on 127.0.0.1:``port`` that takes connections (the system completes them) and never
    answers: a database host that is up but whose server hangs."""
    import socket

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


@pytest.mark.slow
@pytest.mark.postgres
async def test_a_reconnection_to_a_postgresql_that_never_answers_waits_no_longer_than_the_call_has_left(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: a reconnection during a call waited the whole connect_timeout (10 s) for a
    database that accepted the connection and never answered, whatever the call's deadline."""
    from urllib.parse import urlsplit, urlunsplit

    from llm_router.ledger import LedgerStorageError

    from .ledger_faults import BILLED_NUSD, Proxy, timed

    parts = urlsplit(pg_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    journal = tmp_path / "pg.journal"
    deadline_s = 1.5
    silent = None
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch, deadline_s=deadline_s,
                       ledger={"path": None, "url": via_proxy, "journal_path": str(journal)})
        engine = Engine(cfg)
        try:
            assert engine.ledger._connect_timeout_s == 10  # type: ignore[attr-defined]
            g = gate(engine)
            answered = [(await engine.complete(CompleteArgs(prompt="one"))).request_id]
            g.arm()
            result: dict[str, Any] = {}

            async def second() -> None:
                result["answer"], result["took"] = await timed(lambda: engine.complete(CompleteArgs(prompt="two")))

            async with anyio.create_task_group() as tg:
                tg.start_soon(second)
                await wait_for(g.answered, "the upstream's answer")
                proxy.cut()  # the connection drops; the next one reaches a host that never answers
                silent = _silent_listener(proxy.port)
                g.open()
            answer = result["answer"]
            answered.append(answer.request_id)
            assert result["took"] < deadline_s + 1.5, f"the call took {result['took']:.1f} s (deadline {deadline_s} s)"
            note = answer.notes[-1]
            assert "journal" in note and str(journal) in note and "no connection within" in note, note
            assert engine.ledger.journaled() == (1, BILLED_NUSD)

            # A reservation meanwhile waits no longer than it may either (the connection still
            # being tried in the background, not one more begun).
            day = engine.budget.clock.today().isoformat()
            checks = [LimitCheck("global daily", "global", None, day, day, 10**9)]
            t0 = time.monotonic()
            with pytest.raises(LedgerStorageError, match="no connection within"):
                await engine.ledger.run_within(0.3, engine.ledger.reserve, checks, 1_000, request_id="r", day=day,
                                               provider="openai", tag="", ttl_s=60)
            waited = time.monotonic() - t0
            assert waited < 1.5, waited

            silent.close()  # the database answers again: the next write replays the journal first
            silent = None
            proxy.restore()
            answered.append((await engine.complete(CompleteArgs(prompt="three"))).request_id)
            acc = account(engine.ledger, journal)
            assert acc.journaled == {} and not journal.exists()
            check_billed(acc, answered, upstream_calls(fake))
            print(f"\nPostgreSQL silent at reconnection: the answer came back in {result['took']:.2f} s (deadline "
                  f"{deadline_s} s, connect_timeout 10 s), journaled; a reservation gave up after {waited:.2f} s "
                  f"(0.3 s allowed); {len(answered)} answered, {len(acc.rows)} rows, billed "
                  f"{upstream_calls(fake) * BILLED_NUSD} n$, recorded {acc.recorded_nusd()} n$")
        finally:
            if silent is not None:
                silent.close()
            await engine.aclose()
            proxy.close()
