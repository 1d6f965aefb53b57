"""Fault injection with real servers on 127.0.0.1: every fault ends in a fallback or a clean error
within the deadline, with exactly one ledger row listing every attempt, no reservation left, and
a server that keeps serving. Plus circuit breakers and cancellation of an upstream request."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_router.calls import CompleteArgs
from llm_router.engine import Engine
from llm_router.types import AllAttemptsFailed

from .clocks import ManualClock
from .conftest import held_by_calls, settings_for_fakes
from .fakes import FakeProvider, refused_url

pytestmark = pytest.mark.anyio

CHAIN = ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]
DEADLINE_S = 20.0
"""Long enough that the first model's share (12 s) holds a try, a retry and a pause of the machine."""
ANSWER_TIMEOUT_S = 5.0
"""A try's timeout wherever an answer must get through: far beyond a pause of a busy machine."""
HANG_TIMEOUT_S = 0.6
"""The timeout of a provider that hangs: what ends each of its tries."""


def quick(tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch, *,
          timeouts: dict[str, float] | None = None, **kw: Any) -> Engine:
    """An engine on the fakes that retries once, soon. Every provider's try times out after
    ANSWER_TIMEOUT_S, but those ``timeouts`` names (provider name: seconds)."""
    resilience = {"max_retries": 1, "backoff_base_s": 0.05, "backoff_max_s": 0.1, "deadline_s": DEADLINE_S,
                  "retry_after_cap_s": 2} | kw.pop("resilience", {})
    settings = settings_for_fakes(tmp_path, fakes, monkeypatch, timeout_s=ANSWER_TIMEOUT_S, resilience=resilience, **kw)
    if timeouts:
        providers = [p.model_copy(update={"timeout_s": timeouts[p.name]}) if p.name in timeouts else p
                     for p in settings.providers]
        settings = settings.model_copy(update={"providers": providers})
    return Engine(settings)


async def progress(_v: float, _t: float | None, _m: str) -> None:
    return None


def check_books(engine: Engine, calls: int) -> list[dict[str, Any]]:
    rows = engine.ledger.rows(limit=100)
    assert len(rows) == calls, "exactly one ledger row per complete"
    assert held_by_calls(engine) == 0, "no reservation left behind"
    return rows


FAULTS: dict[str, dict[str, Any]] = {
    "429 with Retry-After": {"fault": "status", "status": 429, "retry_after": 0.2},
    "500": {"fault": "status", "status": 500},
    "503": {"fault": "status", "status": 503},
    "529": {"fault": "status", "status": 529},
    "hang": {"fault": "hang"},
    "connection closed": {"fault": "close"},
    "malformed body": {"fault": "malformed"},
    "stream cut midway": {"fault": "cut_stream", "after_chunks": 1},
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_a_fault_on_the_first_provider_falls_back_within_the_deadline(
    name: str, tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = quick(tmp_path, fakes, monkeypatch, timeouts={"anthropic": HANG_TIMEOUT_S} if name == "hang" else None)
    spec = dict(FAULTS[name])
    fakes["anthropic"].fault(spec.pop("fault"), times=None, **spec)
    try:
        t0 = time.monotonic()
        result = await engine.complete(CompleteArgs(prompt="hello", model=CHAIN), progress=progress)
        assert time.monotonic() - t0 < DEADLINE_S
        outcomes = [(a.model, a.outcome) for a in result.attempts]
        # One try and one retry on the sick provider (all these faults are retryable), then the next.
        assert outcomes == [(CHAIN[0], "error"), (CHAIN[0], "error"), (CHAIN[1], "ok")], outcomes
        row = check_books(engine, 1)[0]
        assert [a["outcome"] for a in json.loads(row["attempts"])] == ["error", "error", "ok"]
        assert row["provider"] == "openai" and row["status"] == "ok"
        # ...and the server keeps serving once the provider is well again.
        fakes["anthropic"].clear()
        again = await engine.complete(CompleteArgs(prompt="hello again", model=CHAIN[0]))
        assert again.provider == "anthropic"
        check_books(engine, 2)
    finally:
        await engine.aclose()


async def test_connection_refused_falls_back(tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch) -> None:
    with refused_url() as url:
        engine = quick(tmp_path, fakes, monkeypatch, base_urls={"anthropic": url})
        try:
            result = await engine.complete(CompleteArgs(prompt="hello", model=CHAIN))
            assert [a.error_code for a in result.attempts] == ["connection", "connection", None]
            check_books(engine, 1)
        finally:
            await engine.aclose()


async def test_when_every_provider_fails_the_call_fails_cleanly_listing_every_attempt(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = quick(tmp_path, fakes, monkeypatch)
    fakes["anthropic"].fault("status", status=500, times=None)
    fakes["openai"].fault("malformed", times=None)
    try:
        with pytest.raises(AllAttemptsFailed) as info:
            await engine.complete(CompleteArgs(prompt="hello", model=CHAIN))
        assert [(a.model, a.error_code) for a in info.value.attempts] == [
            (CHAIN[0], "server_error"), (CHAIN[0], "server_error"),
            (CHAIN[1], "malformed_response"), (CHAIN[1], "malformed_response")]
        row = check_books(engine, 1)[0]
        assert row["status"] == "error" and len(json.loads(row["attempts"])) == 4
    finally:
        await engine.aclose()


async def test_hanging_providers_end_at_the_deadline_with_an_error_naming_what_was_tried(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The providers' own timeouts are a minute: the call's 1 s deadline is what ends it."""
    engine = quick(tmp_path, fakes, monkeypatch, timeouts={"anthropic": 60, "openai": 60}, resilience={"deadline_s": 1.0})
    fakes["anthropic"].fault("hang", times=None)
    fakes["openai"].fault("hang", times=None)
    try:
        t0 = time.monotonic()
        with anyio.fail_after(120), pytest.raises(AllAttemptsFailed) as info:
            await engine.complete(CompleteArgs(prompt="hello", model=CHAIN))
        took = time.monotonic() - t0
        # Ended at the deadline: not before it, and long before a provider's own timeout (the
        # upper bound is far wider than a pause of the machine, and far short of the minute).
        assert 1.0 <= took < 30, took
        assert info.value.deadline_hit and "deadline" in str(info.value)
        assert info.value.attempts[0].model == CHAIN[0]
        check_books(engine, 1)
    finally:
        await engine.aclose()


async def test_a_dead_provider_gets_no_requests_while_its_circuit_is_open_and_traffic_returns_after(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch, breaker_clock: ManualClock,
) -> None:
    """The breakers run on the test's clock: the circuit stays open for exactly its cool-down,
    however long a busy machine takes over the calls made meanwhile."""
    engine = quick(tmp_path, fakes, monkeypatch,
                   resilience={"max_retries": 0, "breaker_failures": 3, "breaker_cooldown_s": 30})
    dead = fakes["anthropic"]
    dead.fault("status", status=500, times=None)
    path = "/v1/messages"
    try:
        for _ in range(3):
            result = await engine.complete(CompleteArgs(prompt="q", model=CHAIN))
            assert result.provider == "openai"
        assert dead.counts[path] == 3
        explained = await engine.explain(CompleteArgs(prompt="q", model=CHAIN))
        assert explained.chain == [CHAIN[1]] and explained.excluded[0]["reason"] == "circuit_open"
        for _ in range(5):
            result = await engine.complete(CompleteArgs(prompt="q", model=CHAIN))
            # ...and says so: the forced chain's first model is in the attempts, skipped.
            assert [(a.model, a.outcome, a.error_code) for a in result.attempts][0] == (CHAIN[0], "skipped", "circuit_open")
        assert dead.counts[path] == 3, "an open circuit sends nothing to the dead provider"
        breaker_clock.advance(10)
        providers = {m["model"]: m["health"] for p in engine.providers_status() for m in p["models"]}
        health = providers[CHAIN[0]]
        assert health["circuit"] == "open" and "retry_at_unix" not in health
        assert (health["retry_at"], health["retry_in_s"]) == ("2025-03-14T12:00:30+00:00", 20.0)  # opened at 12:00:00

        dead.clear()  # it recovers
        breaker_clock.advance(19)  # 29 s after it opened
        assert not engine.health.allows(CHAIN[0])[0], "open until the cool-down has passed"
        breaker_clock.advance(1)  # the cool-down has passed: one trial call
        result = await engine.complete(CompleteArgs(prompt="q", model=CHAIN))
        assert result.provider == "anthropic" and dead.counts[path] == 1
        result = await engine.complete(CompleteArgs(prompt="q", model=CHAIN))
        assert result.provider == "anthropic"
        assert engine.health.describe(CHAIN[0])["circuit"] == "closed"
    finally:
        await engine.aclose()


class HangingUpstream:
    """An OpenAI-compatible endpoint that reads a request and never answers, and notices when the
    client closes the connection: proof that an upstream request was aborted."""

    def __init__(self) -> None:
        self.received = threading.Event()
        self.closed_by_client = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            if not head.startswith(b"POST /v1/chat/completions "):  # a side question (the window): none here
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            self.received.set()
            if await reader.read(1) == b"":  # EOF: the client hung up
                self.closed_by_client.set()
            writer.close()

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await server.serve_forever()

        try:
            self._loop.run_until_complete(main())
        except (asyncio.CancelledError, RuntimeError):
            pass
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def __enter__(self) -> HangingUpstream:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        for task in asyncio.all_tasks(self._loop):
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(5)


@pytest.fixture
def hanging() -> Iterator[HangingUpstream]:
    with HangingUpstream() as upstream:
        yield upstream


@pytest.mark.slow
async def test_cancelling_a_call_through_a_real_mcp_client_aborts_the_upstream_request(
    tmp_path: Path, hanging: HangingUpstream
) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    config = tmp_path / "config.toml"
    ledger = tmp_path / "ledger.db"
    config.write_text(
        f'[ledger]\npath = "{ledger}"\n'
        f'[[providers]]\nname = "local"\nkind = "openai"\nbase_url = "http://127.0.0.1:{hanging.port}/v1"\n'
        'models = ["qwen2.5-7b"]\ntimeout_s = 60\n'
        '[providers.prices."qwen2.5-7b"]\ninput_per_mtok = 0.1\noutput_per_mtok = 0.2\n'
        "[budget]\ndaily_usd = 1\n"
    )
    params = StdioServerParameters(command=sys.executable, args=["-m", "llm_router", "serve", "--config", str(config)])
    async with Client(params) as client:
        async with anyio.create_task_group() as tg:
            # A cancellation lets a call already under way finish, unless it asks to be aborted.
            tg.start_soon(client.call_tool, "complete",
                          {"prompt": "take your time", "model": "local:qwen2.5-7b", "on_cancel": "abort"})
            with anyio.fail_after(10):
                while not hanging.received.is_set():
                    await anyio.sleep(0.02)
            db = sqlite3.connect(ledger)
            assert db.execute("SELECT count(*) FROM reservations").fetchone()[0] == 1
            tg.cancel_scope.cancel()
        with anyio.fail_after(10):
            while not hanging.closed_by_client.is_set():
                await anyio.sleep(0.02)
        # The server recorded the cancelled call and released its hold, and keeps serving.
        with anyio.fail_after(10):
            while db.execute("SELECT count(*) FROM requests").fetchone()[0] == 0:
                await anyio.sleep(0.02)
        assert db.execute("SELECT status FROM requests").fetchone()[0] == "cancelled"
        assert db.execute("SELECT count(*) FROM reservations").fetchone()[0] == 0
        explained = await client.call_tool("route_explain", {"prompt": "still there?"})
        assert not explained.is_error
        db.close()
