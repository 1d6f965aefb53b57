"""Inside one server, a call's waits for the ledger are bounded by its own deadline (issue 14, point 6).

Regression: with another process frozen (SIGSTOP) inside a write transaction, a call with a 12 s
deadline waited in its settle on this server's only ledger connection, and a second call with
``deadline_s=2`` waited behind it: its routing read went through ``ledger.run``, which waits for
the connection without end, and it failed after 13.6 s. Now routing's read, the reservation and
the settle each wait no longer than the call has left, and the call ends with a ``ledger_busy``
error that says why. Upkeep, meanwhile, says once that it cannot write (and once when it can
again), not every second."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest

from llm_router import timings
from llm_router.calls import CompleteArgs
from llm_router.config import ledger_path
from llm_router.engine import Engine
from llm_router.types import LedgerBusy, RouterError

from .fakes import FakeProvider, Usage
from .ledger_faults import INPUT_TOKENS, MODEL, OUTPUT_TOKENS, LockHolder, settings, wait_until

pytestmark = pytest.mark.anyio


def _fake() -> FakeProvider:
    return FakeProvider("openai", models=[MODEL], usage=Usage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS))


@pytest.mark.slow
async def test_a_short_deadline_call_waiting_behind_this_servers_own_frozen_settle_fails_within_its_deadline(
    tmp_path: Any, monkeypatch: Any,
) -> None:
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch, deadline_s=12.0, ledger={"busy_timeout_s": 30})
        engine = Engine(cfg)
        holder = LockHolder(ledger_path(cfg))
        out: dict[str, Any] = {}
        long_waiting = anyio.Event()
        try:
            await engine.complete(CompleteArgs(prompt="warm"))
            await anyio.to_thread.run_sync(holder.lock)
            await anyio.to_thread.run_sync(holder.stop)

            async def long_call() -> None:
                t = time.monotonic()
                out["long"] = await engine.complete(CompleteArgs(prompt="long")), time.monotonic() - t

            async def short_call() -> None:
                # Starts once the long call's settle holds this server's connection, waiting for the lock.
                with anyio.fail_after(10):
                    while engine.ledger._limiter.borrowed_tokens == 0:
                        await anyio.sleep(0.01)
                long_waiting.set()
                t = time.monotonic()
                try:
                    await engine.complete(CompleteArgs(prompt="short", deadline_s=2))
                    out["short"] = None, time.monotonic() - t
                except RouterError as e:
                    out["short"] = e, time.monotonic() - t

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                tg.start_soon(short_call)
        finally:
            holder.resume()
            holder.close()
            await engine.aclose()
        assert long_waiting.is_set()
        error, took = out["short"]
        assert isinstance(error, LedgerBusy), out
        assert took < 3.0, f"the 2 s call waited {took:.1f} s behind this server's other call"
        assert error.request_id, "the refusal carries the call's request id"
        assert "ledger busy" in str(error) and "Nothing was reserved or spent" in str(error)
        answer, _ = out["long"]
        assert answer.text and any("journal" in n for n in answer.notes), answer.notes


async def test_a_route_explanation_or_call_waiting_behind_this_servers_own_busy_connection_ends_within_the_deadline(
    tmp_path: Any, monkeypatch: Any,
) -> None:
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch, deadline_s=0.5)
        engine = Engine(cfg)
        led = engine.ledger
        other_work = object()
        done = anyio.Event()
        out: dict[str, Any] = {}

        async def other_ledger_work() -> None:
            """Keeps this server's connection (as a step waiting for a frozen writer would) until
            the steps below are done, or 5 s: a wait without end then shows as a late answer."""
            try:
                with anyio.move_on_after(5):
                    await done.wait()
            finally:
                led._limiter.release_on_behalf_of(other_work)

        async def steps() -> None:
            for name, step in (("explain", engine.explain), ("complete", engine.complete)):
                t = time.monotonic()
                try:
                    await step(CompleteArgs(prompt="hello"))
                    out[name] = None, time.monotonic() - t
                except LedgerBusy as e:
                    out[name] = e, time.monotonic() - t
            done.set()

        try:
            await led._limiter.acquire_on_behalf_of(other_work)
            async with anyio.create_task_group() as tg:
                tg.start_soon(other_ledger_work)
                tg.start_soon(steps)
            for name in ("explain", "complete"):
                error, took = out[name]
                assert isinstance(error, LedgerBusy), f"{name} waited {took:.1f} s and did not say the ledger was busy"
                assert took < 2.0, f"{name} waited {took:.1f} s on a 0.5 s deadline"
                assert "this server's connection" in str(error)
            refused = out["complete"][0]
            assert refused.request_id
            # The refused call still has its one row: journaled at once, written at the next write.
            assert (await engine.complete(CompleteArgs(prompt="hello"))).text
            rows = await led.run(led.rows, request_id=refused.request_id)
            assert [(r["status"], r["error_code"], r["cost_nusd"]) for r in rows] == [("error", "ledger_busy", 0)]
        finally:
            await engine.aclose()


def test_upkeep_says_once_that_the_ledger_is_busy_and_once_when_it_is_not(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, monkeypatch: Any,
) -> None:
    from llm_router.ledger import Ledger

    monkeypatch.setattr(timings, "UPKEEP_WAIT_S", 0.05)
    led = Ledger(tmp_path / "ledger.db", busy_timeout_s=0.05)
    holder = LockHolder(tmp_path / "ledger.db")
    rounds = {"n": 0}
    renew = led.renew

    def counted() -> int:
        rounds["n"] += 1
        return renew()

    led.renew = counted  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="llm_router.ledger")
    try:
        led.start_upkeep(lease_s=0.2, interval_s=0.05)
        holder.lock()
        seen = rounds["n"]
        wait_until(lambda: rounds["n"] >= seen + 8, "eight rounds of upkeep against the held lock")
        busy = [r for r in caplog.records if "upkeep" in r.getMessage()]
        assert len(busy) == 1, [r.getMessage() for r in busy]
        assert busy[0].levelno == logging.WARNING and "write lock" in busy[0].getMessage()
        holder.release()
        seen = rounds["n"]
        wait_until(lambda: rounds["n"] >= seen + 3, "three rounds of upkeep after the lock is let go")
        said = [r.getMessage() for r in caplog.records if "upkeep" in r.getMessage()]
        assert len(said) == 2, said
        assert "can write" in said[1]
    finally:
        led.close()
        holder.close()

