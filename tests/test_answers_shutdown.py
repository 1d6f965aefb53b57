"""A call its client still waits for when the HTTP server is told to stop (SIGTERM) ends before
the process does: finished, billed, one ledger row, no hold left.

Regression: uvicorn raises the signal again once it has shut down, which ended the process before
``Engine.aclose``; its graceful shutdown cancels the open request, which (``on_cancel: "finish"``)
leaves the call to finish in the background, and nothing waited for it: no row, a hold left
behind, and the provider's spend lost."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from .fakes import FakeProvider
from .test_tasks import OPENAI, config_file, slow_fake  # noqa: F401 - slow_fake is a fixture

pytestmark = pytest.mark.slow

VERSION = "2026-07-28"


def test_sigterm_lets_a_call_in_flight_finish_and_record_its_row(tmp_path: Path, slow_fake: FakeProvider) -> None:  # noqa: F811
    slow_fake.reply(text="the slow answer", delay=3.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_router", "serve", "--config", str(config_file(tmp_path, slow_fake)),
         "--transport", "http", "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            if "MCP at " in line:
                url = line.split("MCP at ", 1)[1].split(";")[0]
                break
        assert url, "the server said where it listens"
        drain = threading.Thread(target=lambda: [None for _ in proc.stderr or ()], daemon=True)
        drain.start()
        meta = {"io.modelcontextprotocol/protocolVersion": VERSION, "io.modelcontextprotocol/clientCapabilities": {}}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "complete", "arguments": {"prompt": "take your time", "model": OPENAI}, "_meta": meta}}
        headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": VERSION,
                   "Mcp-Method": "tools/call", "Mcp-Name": "complete"}

        def call() -> None:
            # The server may go away under the request: what this test is about.
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url, content=json.dumps(body), headers={**headers, "Content-Type": "application/json"},
                           timeout=60)

        client = threading.Thread(target=call, daemon=True)
        client.start()
        deadline = time.monotonic() + 30
        while not slow_fake.requests and time.monotonic() < deadline:  # the model has been asked
            time.sleep(0.02)
        assert slow_fake.requests, "the model was asked"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        drain.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        rows = list(db.execute("SELECT status, cost_nusd FROM requests"))
        held = list(db.execute("SELECT * FROM reservations"))
    assert len(rows) == 1 and rows[0][0] == "ok" and rows[0][1] > 0, rows
    assert held == []
