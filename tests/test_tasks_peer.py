"""The Tasks extension through a requester written by others: the TypeScript SDK 2.x client
(``@modelcontextprotocol/client``) at 2026-07-28 over stateless HTTP, with the extension's own
requester library (``@modelcontextprotocol/ext-tasks``), which declares the extension, takes the
``CreateTaskResult``, polls ``tasks/get`` and sends ``tasks/cancel`` by itself
(``tests/node/tasks_client.mjs``), against a slow streaming fake provider on 127.0.0.1."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_router.engine import Engine

from .conftest import FAKE_MODELS, held_by_calls, settings_for_fakes
from .http_server import serve
from .node_peers import require, run_json

OPENAI = f"openai:{FAKE_MODELS['openai']}"


@pytest.mark.slow
def test_the_ext_tasks_requester_completes_a_long_call_as_a_task_and_cancels_another(
        tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    require("@modelcontextprotocol/client", "@modelcontextprotocol/ext-tasks")
    fakes["openai"].reply(chunks=("the long ", "answer"), delay=0.7, chunk_delay=0.7)
    fakes["openai"].reply(text="never seen", delay=30)
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch, timeout_s=60))
    plan = {"steps": [
        {"tool": "complete", "arguments": {"prompt": "take your time", "model": OPENAI, "tag": "tasks"}},
        {"tool": "complete", "arguments": {"prompt": "stop me", "model": OPENAI}, "cancelWhen": "asking"},
    ]}
    try:
        with serve(engine) as base:
            out = run_json(["tasks_client.mjs", f"{base}/mcp"], stdin=json.dumps(plan))
            held = held_by_calls(engine)
    finally:
        anyio.run(engine.aclose)
    assert out["era"] == "modern" and out["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"] == {}
    done, cancelled = out["steps"]

    assert (done["outcome"], done["kind"], done["status"]) == ("settled", "task", "completed"), done
    assert done["result"]["structuredContent"]["text"] == "the long answer"
    assert done["result"]["structuredContent"]["request_id"] == done["taskId"]
    said = [s["statusMessage"] for s in done["seen"]]
    assert f"asking {OPENAI} (1/1)" in said and any((m or "").startswith("streaming from") for m in said), said

    assert (cancelled["outcome"], cancelled["kind"], cancelled["status"]) == ("settled", "task", "cancelled"), cancelled
    assert held == 0
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        rows = dict(db.execute("SELECT id, status FROM requests"))
    assert rows == {done["taskId"]: "ok", cancelled["taskId"]: "cancelled"}
