"""The TypeScript SDK 1.x client (what most desktop clients embed) with a tool timeout shorter than
the model's answer, against a slow fake provider on 127.0.0.1, over stdio and over HTTP (the
handshake era, with sessions): it gives up on the call (sending ``notifications/cancelled``), then
finds the answer in ``llm-router://answers`` without ever having seen its request id; the ledger
(a real SQLite file) has one ``ok`` row for it with the provider's cost. With ``on_cancel: "abort"``
the call is cancelled as before."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_router.engine import Engine
from llm_router.types import Usage

from .conftest import FAKE_MODELS, held_by_calls, settings_for_fakes
from .fakes import FakeProvider
from .http_server import serve
from .node_peers import require, run_json
from .test_tasks import config_file

OPENAI = f"openai:{FAKE_MODELS['openai']}"
TIMEOUT_MS = 300
SLOW_S = 2.0


def plan() -> dict[str, Any]:
    return {"steps": [
        {"tool": "complete", "arguments": {"prompt": "take your time", "model": OPENAI, "tag": "desk"},
         "timeout": TIMEOUT_MS},
        {"read": "llm-router://answers", "until": '"status": "ok"', "within": 60_000},
        {"tool": "complete", "arguments": {"prompt": "stop if I go", "model": OPENAI, "on_cancel": "abort"},
         "timeout": TIMEOUT_MS},
        {"read": "llm-router://answers", "until": '"status": "cancelled"', "within": 60_000},
    ]}


def rows(ledger: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(ledger) as db:
        return {r[0]: r[1:] for r in db.execute("SELECT id, status, tag, cost_nusd, output_tokens FROM requests")}


def check(out: dict[str, Any], ledger: Path, cost_nusd: int) -> None:
    gave_up, found, aborted, listed = out["steps"]
    assert gave_up["outcome"] == "threw" and "timed out" in gave_up["message"].lower(), gave_up
    assert aborted["outcome"] == "threw", aborted
    kept = json.loads(found["text"])["answers"]
    assert [a["status"] for a in kept] == ["ok"], kept
    answered = kept[0]
    assert answered["model"] == OPENAI and answered["first_line"] == "the slow answer"
    after = {a["status"]: a for a in json.loads(listed["text"])["answers"]}  # newest first
    assert set(after) == {"ok", "cancelled"}
    assert rows(ledger) == {
        answered["request_id"]: ("ok", "desk", cost_nusd, 8),
        after["cancelled"]["request_id"]: ("cancelled", "", 0, 0),
    }


@pytest.fixture
def slow_fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeProvider("openai", models=[FAKE_MODELS["openai"]])
    fake.start()
    assert fake.api_key
    monkeypatch.setenv("TEST_OPENAI_KEY", fake.api_key)
    fake.reply(text="the slow answer", delay=SLOW_S)
    fake.reply(text="never seen", delay=30)
    try:
        yield fake
    finally:
        fake.stop()


def cost(tmp_path: Path, fakes: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    engine = Engine(settings_for_fakes(tmp_path / "price", fakes, monkeypatch))
    try:
        return engine.catalog.entries[OPENAI].cost_nusd(Usage(input_tokens=12, output_tokens=8)) or 0
    finally:
        anyio.run(engine.aclose)


@pytest.mark.slow
def test_the_typescript_sdk_client_that_times_out_over_stdio_finds_its_answer_kept_and_billed_once(
        tmp_path: Path, slow_fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    require("@modelcontextprotocol/sdk")
    # The SDK hands a child a minimal environment: the fake's key goes in through env(1).
    command = ["/usr/bin/env", f"TEST_OPENAI_KEY={slow_fake.api_key}", sys.executable, "-m", "llm_router", "serve",
               "--config", str(config_file(tmp_path, slow_fake))]
    out = run_json(["sdk_client.mjs", "stdio", *command], stdin=json.dumps(plan()))
    (tmp_path / "price").mkdir()
    check(out, tmp_path / "ledger.db", cost(tmp_path, {"openai": slow_fake}, monkeypatch))


@pytest.mark.slow
def test_the_typescript_sdk_client_that_times_out_over_http_finds_its_answer_kept_and_frees_the_aborted_hold(
        tmp_path: Path, slow_fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    require("@modelcontextprotocol/sdk")
    engine = Engine(settings_for_fakes(tmp_path, {"openai": slow_fake}, monkeypatch, timeout_s=60))
    try:
        with serve(engine) as base:
            out = run_json(["sdk_client.mjs", "http", f"{base}/mcp"], stdin=json.dumps(plan()))
            assert held_by_calls(engine) == 0
            expected = engine.catalog.entries[OPENAI].cost_nusd(Usage(input_tokens=12, output_tokens=8)) or 0
    finally:
        anyio.run(engine.aclose)
    check(out, tmp_path / "ledger.db", expected)
