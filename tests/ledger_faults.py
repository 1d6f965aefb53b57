"""Helpers for the ledger fault tests (``test_spend_never_lost.py``, ``test_ledger_busy.py``): a real
second process holding a ledger's write lock, an engine whose upstream answer waits at a gate (so
a fault can be set up after the call was billed and before its row is written), and the account
of every call: rows in the file plus entries in its journal, compared with what the upstream
billed."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from llm_router.calls import CompleteArgs
from llm_router.config import Settings, settings_from_dict
from llm_router.ledger import Journal, LedgerBase
from llm_router.types import usd_to_nusd

MODEL = "gpt-4o-mini"
INPUT_TOKENS, OUTPUT_TOKENS = 100, 20
PRICES = {"input_per_mtok": 1, "output_per_mtok": 4}
BILLED_NUSD = usd_to_nusd(Decimal(INPUT_TOKENS * 1 + OUTPUT_TOKENS * 4) / 1_000_000)
"""What the upstream bills for one answer (its reported usage at the configured prices)."""


def settings(tmp_path: Path, fake: Any, monkeypatch: Any, *, ledger: dict[str, Any] | None = None,
             deadline_s: float = 10.0, daily_usd: float = 1.0) -> Settings:
    """One OpenAI-compatible provider (the real adapter) on ``fake``, priced, on a SQLite ledger in
    ``tmp_path`` (``ledger`` merged into ``[ledger]``)."""
    monkeypatch.setenv("TEST_FAULTS_OPENAI_KEY", fake.api_key)
    data = {
        "ledger": {"path": str(tmp_path / "ledger.db"), "busy_timeout_s": 0.5, **(ledger or {})},
        "providers": [{"name": "openai", "kind": "openai", "base_url": fake.base_url, "models": [MODEL],
                       "api_key_env": "TEST_FAULTS_OPENAI_KEY", "timeout_s": 10, "prices": {MODEL: PRICES}}],
        "resilience": {"max_retries": 0, "deadline_s": deadline_s},
        "budget": {"daily_usd": daily_usd},
    }
    return settings_from_dict(data, source="test")


class Gate:
    """Wraps a provider. Once ``arm``-ed, the next answer, after the upstream has sent it (and
    billed it), waits until ``open``: ``answered`` is set when it is waiting."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.answered = anyio.Event()
        self.go = anyio.Event()
        self.armed = False

    def arm(self) -> None:
        self.answered, self.go, self.armed = anyio.Event(), anyio.Event(), True

    async def complete(self, model: str, request: Any, on_text: Any = None) -> Any:
        try:
            return await self.inner.complete(model, request, on_text=on_text)
        finally:  # an answer, or a failure the upstream billed (a tool call only, say)
            if self.armed:
                self.armed = False
                self.answered.set()
                await self.go.wait()

    def open(self) -> None:
        self.go.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def gate(engine: Any) -> Gate:
    """Put a gate in front of the engine's provider."""
    g = engine.providers["openai"] = Gate(engine.providers["openai"])
    return g


@dataclass
class Outcome:
    """How one call went: its answer or the error it raised, and how long it took."""

    answer: Any = None
    error: BaseException | None = None
    took: float = 0.0


async def answered_during(
    engine: Any, g: Gate, fault: Callable[[], Any], *, prompt: str = "in flight",
    catch: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> Outcome:
    """One ``complete`` whose answer, once the upstream has sent (and billed) it, waits while
    ``fault()`` (sync or async) breaks the ledger, then goes on to be settled. An error of a type
    in ``catch`` is kept in the outcome; any other is raised."""
    g.arm()
    out = Outcome()

    async def call() -> None:
        t0 = time.monotonic()
        try:
            out.answer = await engine.complete(CompleteArgs(prompt=prompt))
        except catch as e:
            out.error = e
        out.took = time.monotonic() - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await wait_for(g.answered, "the upstream's answer")
        done = fault()
        if inspect.isawaitable(done):
            await done
        g.open()
    return out


_HOLDER = textwrap.dedent(
    """
    import sys
    from llm_router.ledger import Ledger
    led = Ledger(sys.argv[1])
    print("ready", flush=True)
    tx = None
    for line in sys.stdin:
        word = line.strip()
        if word == "lock":  # a server inside one of its write transactions
            tx = led._tx()
            tx.__enter__()
            print("locked", flush=True)
        elif word == "release":
            tx.__exit__(None, None, None)
            print("released", flush=True)
    """
)


class LockHolder:
    """Another server process on the same ledger file, which enters a write transaction (``BEGIN
    IMMEDIATE``) on command and stays in it; it can be frozen there with SIGSTOP."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self._expect("ready")

    def _say(self, word: str, answer: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        self._expect(answer)

    def _expect(self, answer: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == answer, f"the lock holder said {line!r}, not {answer!r}"

    def lock(self) -> None:
        self._say("lock", "locked")

    def release(self) -> None:
        self._say("release", "released")

    def stop(self) -> None:
        """SIGSTOP, and wait until the system shows it stopped."""
        os.kill(self.pid, signal.SIGSTOP)
        wait_until(lambda: process_state(self.pid) == "T", "the lock holder to be stopped")

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return None


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def wait_for(event: anyio.Event, what: str, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        await event.wait()


@dataclass
class Account:
    """Every call the ledger knows of: its rows in the file and its entries in the journal."""

    rows: dict[str, dict[str, Any]]
    journaled: dict[str, dict[str, Any]]
    holds: int
    """Nano-dollars held in ``reservations`` (every process's holds, spares included)."""

    @property
    def both(self) -> dict[str, dict[str, Any]]:
        return {**self.journaled, **self.rows}

    def recorded_nusd(self) -> int:
        return sum(r["cost_nusd"] for r in self.both.values())


_ROWS = "SELECT id, status, input_tokens, output_tokens, cost_nusd FROM requests"


def account(path: Path | LedgerBase, journal: Path | None = None) -> Account:
    """A SQLite file read by a connection of its own (another process's view), or a ledger's own
    reads (PostgreSQL), and the journal as a file (default: beside the SQLite file)."""
    if isinstance(path, LedgerBase):
        rows = {r["id"]: {k: (int(v) if k.endswith(("tokens", "nusd")) else v) for k, v in r.items()}
                for r in path.query(_ROWS)}
        holds = path.reservations_total()
    else:
        conn = sqlite3.connect(path)
        try:
            conn.row_factory = sqlite3.Row
            rows = {r["id"]: dict(r) for r in conn.execute(_ROWS)}
            holds = conn.execute("SELECT coalesce(sum(amount_nusd), 0) FROM reservations").fetchone()[0]
        finally:
            conn.close()
    assert journal is not None or not isinstance(path, LedgerBase)
    entries = Journal(journal or Path(f"{path}.journal")).waiting()
    journaled = {e.row.id: {"id": e.row.id, "status": e.row.status, "input_tokens": e.row.input_tokens,
                            "output_tokens": e.row.output_tokens, "cost_nusd": e.row.cost_nusd}
                 for e in entries if e.row is not None}
    return Account(rows, journaled, int(holds))


def check_billed(acc: Account, answered: list[str], upstream_calls: int) -> None:
    """Rows plus journal equal what the upstream billed, call for call: each answered call is there
    (by request id) with the upstream's usage and its cost, and nothing else was charged."""
    both = acc.both
    for rid in answered:
        assert rid in both, f"answered call {rid} is neither in the ledger nor in its journal"
        r = both[rid]
        assert (r["status"], r["input_tokens"], r["output_tokens"], r["cost_nusd"]) == (
            "ok", INPUT_TOKENS, OUTPUT_TOKENS, BILLED_NUSD), r
    assert len(answered) == upstream_calls
    assert acc.recorded_nusd() == upstream_calls * BILLED_NUSD


def upstream_calls(fake: Any) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    t0 = time.monotonic()
    result = await fn()
    return result, time.monotonic() - t0


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


class Proxy:
    """A TCP relay on 127.0.0.1 in front of a server (PostgreSQL): ``cut`` drops every connection
    and stops listening, so the server is unreachable (connections refused); ``restore`` listens
    again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept(): a plain close would leave it listening
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def close(self) -> None:
        self.cut()
