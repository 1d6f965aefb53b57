"""The Tasks extension (``io.modelcontextprotocol/tasks``, MCP 2026-07-28), on the exact wire: a raw
JSON-RPC client at 2026-07-28 over stdio and over stateless HTTP, against a slow fake provider on
127.0.0.1. A long ``complete`` becomes a task fetched by ``tasks/get``; ``tasks/cancel`` frees its
hold and leaves one row; unknown ids, other tags' ids and an undeclared capability are refused as
the spec says; a client that did not declare the extension gets a plain ``CallToolResult``."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from llm_router.engine import Engine
from llm_router.http_app import Tokens

from .conftest import FAKE_MODELS, held_by_calls, settings_for_fakes
from .fakes import FakeProvider
from .http_server import serve
from .test_stdio import RawPeer

TASKS = "io.modelcontextprotocol/tasks"
VERSION = "2026-07-28"
OPENAI = f"openai:{FAKE_MODELS['openai']}"
SLOW_S = 1.5
WAIT_S = 60.0


def meta(*, tasks: bool = True) -> dict[str, Any]:
    """A 2026-07-28 request's envelope, declaring the extension or not."""
    caps: dict[str, Any] = {"extensions": {TASKS: {}}} if tasks else {}
    return {"io.modelcontextprotocol/protocolVersion": VERSION, "io.modelcontextprotocol/clientCapabilities": caps}


def call_params(arguments: dict[str, Any], *, tasks: bool = True) -> dict[str, Any]:
    return {"name": "complete", "arguments": arguments, "_meta": meta(tasks=tasks)}


def task_params(task_id: str, *, tasks: bool = True, **more: Any) -> dict[str, Any]:
    return {"taskId": task_id, **more, "_meta": meta(tasks=tasks)}


def poll(get: Callable[[], dict[str, Any]], until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """``tasks/get`` every 50 ms (the test's pace, not the server's) until ``until``; every result seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    while True:
        seen.append(get())
        if until(seen[-1]) or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def ledger_rows(path: Path, request_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT status, tag, cost_nusd FROM requests WHERE id = ?", (request_id,)))


# -- stdio ------------------------------------------------------------------------------------


@pytest.fixture
def slow_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    fake = FakeProvider("openai", models=[FAKE_MODELS["openai"]])
    fake.start()
    assert fake.api_key
    monkeypatch.setenv("TEST_OPENAI_KEY", fake.api_key)
    try:
        yield fake
    finally:
        fake.stop()


def config_file(tmp_path: Path, fake: FakeProvider) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[ledger]
path = "{tmp_path / 'ledger.db'}"
[resilience]
max_retries = 0
[[providers]]
name = "openai"
kind = "openai"
base_url = "{fake.base_url}"
models = ["{FAKE_MODELS['openai']}"]
api_key_env = "TEST_OPENAI_KEY"
timeout_s = 30
""")
    return path


class Rpc:
    """Numbered JSON-RPC requests to a raw stdio peer."""

    def __init__(self, peer: RawPeer) -> None:
        self.peer, self.n = peer, 0

    def __call__(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        self.peer.send({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params})
        return self.peer.reply_to(self.n, timeout=WAIT_S)


def test_over_stdio_a_long_call_is_a_task_fetched_by_tasks_get_and_refusals_are_the_specs(
        tmp_path: Path, slow_fake: FakeProvider) -> None:
    slow_fake.reply(chunks=("the long ", "answer"), delay=SLOW_S / 2, chunk_delay=SLOW_S / 2)
    peer = RawPeer(["-m", "llm_router", "serve", "--config", str(config_file(tmp_path, slow_fake))])
    rpc = Rpc(peer)
    try:
        discovered = rpc("server/discover", {"_meta": meta()})["result"]
        assert discovered["capabilities"]["extensions"][TASKS] == {}

        created = rpc("tools/call", call_params({"prompt": "take your time", "model": OPENAI, "tag": "t1"}))["result"]
        assert created["resultType"] == "task" and created["status"] == "working"
        task_id = created["taskId"]
        assert len(task_id) == 32 and created["ttlMs"] == 3_600_000 and created["pollIntervalMs"] > 0
        assert created["createdAt"].endswith("Z") and created["lastUpdatedAt"] >= created["createdAt"]

        seen = poll(lambda: rpc("tasks/get", task_params(task_id))["result"], lambda r: r["status"] != "working")
        assert all(r["resultType"] == "complete" and r["taskId"] == task_id for r in seen)
        said = [r.get("statusMessage") for r in seen]
        assert f"asking {OPENAI} (1/1)" in said, "progress is in statusMessage"
        assert any(m and m.startswith(f"streaming from {OPENAI}: ") for m in said), said
        done = seen[-1]
        assert done["status"] == "completed", done
        result = done["result"]
        assert result["structuredContent"]["request_id"] == task_id  # the task is the call's kept answer
        assert result["structuredContent"]["text"] == "the long answer" and not result.get("isError")
        assert "the long answer" in result["content"][0]["text"]

        # tasks/update with nothing outstanding: acknowledged, ignored
        ack = rpc("tasks/update", task_params(task_id, inputResponses={"x": {"action": "accept"}}))["result"]
        assert ack["resultType"] == "complete" and set(ack) <= {"resultType", "_meta"}

        undeclared = rpc("tasks/get", task_params(task_id, tasks=False))["error"]
        assert undeclared["code"] == -32021
        assert undeclared["data"] == {"requiredCapabilities": {"extensions": {TASKS: {}}}}
        for method in ("tasks/get", "tasks/update", "tasks/cancel"):
            unknown = rpc(method, task_params("0" * 32, **({"inputResponses": {}} if method == "tasks/update" else {})))
            assert unknown["error"]["code"] == -32602, (method, unknown)

        slow_fake.reply(text="plain as ever")
        plain = rpc("tools/call", call_params({"prompt": "quick", "model": OPENAI}, tasks=False))["result"]
        assert plain["resultType"] == "complete" and "taskId" not in plain
        assert plain["structuredContent"]["text"] == "plain as ever"
    finally:
        peer.close()
    assert ledger_rows(tmp_path / "ledger.db", task_id)[0][:2] == ("ok", "t1")
    assert len(ledger_rows(tmp_path / "ledger.db", task_id)) == 1


# -- stateless HTTP ---------------------------------------------------------------------------


ALICE, BOB = "tok-alice-0123456789abcdef", "tok-bob-0123456789abcdef"


class Http:
    """A raw 2026-07-28 client over stateless Streamable HTTP, one bearer token."""

    def __init__(self, client: httpx2.Client, url: str, token: str) -> None:
        self.client, self.url, self.token, self.n = client, url, token, 0

    def __call__(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                   "MCP-Protocol-Version": VERSION, "Mcp-Method": method}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        name = params.get("name") if method == "tools/call" else params.get("taskId")
        if name is not None:
            headers["Mcp-Name"] = name
        body = {"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}
        response = self.client.post(self.url, json=body, headers=headers)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
            return next(m for m in messages if m.get("id") == self.n)
        return response.json()  # type: ignore[no-any-return]


def test_over_stateless_http_tasks_cancel_frees_the_hold_leaves_one_row_and_other_tags_see_nothing(
        tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    fakes["openai"].reply(text="never seen", delay=30)
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch, timeout_s=60))
    try:
        with serve(engine, tokens=Tokens([("alice", ALICE), ("bob", BOB)])) as base, \
                httpx2.Client(timeout=httpx2.Timeout(60)) as client:
            alice, bob = Http(client, f"{base}/mcp", ALICE), Http(client, f"{base}/mcp", BOB)
            created = alice("tools/call", call_params({"prompt": "slow", "model": OPENAI}))["result"]
            assert created["resultType"] == "task"
            task_id = created["taskId"]
            asked = poll(lambda: alice("tasks/get", task_params(task_id))["result"],
                         lambda r: r.get("statusMessage", "").startswith("asking"))
            assert asked[-1]["status"] == "working" and held_by_calls(engine) > 0

            for method in ("tasks/get", "tasks/cancel"):  # another tag's task is as unknown as none
                unknown = bob(method, task_params("0" * 32))["error"]
                refused = bob(method, task_params(task_id))["error"]
                assert refused["code"] == unknown["code"] == -32602
                assert refused["message"].replace(task_id, "ID") == unknown["message"].replace("0" * 32, "ID")
            assert alice("tasks/get", task_params(task_id))["result"]["status"] == "working"

            assert alice("tasks/cancel", task_params(task_id))["result"]["resultType"] == "complete"
            cancelled = poll(lambda: alice("tasks/get", task_params(task_id))["result"],
                             lambda r: r["status"] != "working")[-1]
            assert cancelled["status"] == "cancelled" and "result" not in cancelled
            assert held_by_calls(engine) == 0
            assert alice("tasks/cancel", task_params(task_id))["result"]["resultType"] == "complete"  # again: acked

            undeclared = alice("tasks/cancel", task_params(task_id, tasks=False))["error"]
            assert undeclared["code"] == -32021
            fakes["openai"].clear()
            plain = alice("tools/call", call_params({"prompt": "quick", "model": OPENAI}, tasks=False))["result"]
            assert plain["resultType"] == "complete" and plain["structuredContent"]["text"] == "echo: quick"
    finally:
        anyio.run(engine.aclose)
    assert ledger_rows(tmp_path / "ledger.db", task_id) == [("cancelled", "alice", 0)]


def test_over_stateless_http_a_client_that_drops_the_connection_leaves_the_call_to_finish_or_abort(
        tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """2026-07-28 over HTTP has no notifications/cancelled: a client gives up by closing its
    response stream, which cancels the request. Without the extension declared, as most clients."""
    fakes["openai"].reply(text="finished anyway", delay=SLOW_S)
    fakes["openai"].reply(text="never seen", delay=30)
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch, timeout_s=60))
    try:
        with serve(engine) as base, httpx2.Client(timeout=httpx2.Timeout(60, read=0.3)) as impatient:
            rpc = Http(impatient, f"{base}/mcp", "")
            ids = []
            for on_cancel in ("finish", "abort"):
                with pytest.raises(httpx2.ReadTimeout):
                    rpc("tools/call", call_params({"prompt": "slow", "model": OPENAI, "on_cancel": on_cancel}, tasks=False))
                deadline = time.monotonic() + WAIT_S
                while not ((calls := engine.answers.listing(tag=None)) and len(calls) == len(ids) + 1
                           and calls[0].ended) and time.monotonic() < deadline:
                    time.sleep(0.02)
                ids.append((calls[0].request_id, calls[0].status))
            assert held_by_calls(engine) == 0
    finally:
        anyio.run(engine.aclose)
    (finished, ok), (aborted, cancelled) = ids
    assert (ok, cancelled) == ("ok", "cancelled")
    assert [r[0] for r in ledger_rows(tmp_path / "ledger.db", finished)] == ["ok"]
    assert [r[0] for r in ledger_rows(tmp_path / "ledger.db", aborted)] == ["cancelled"]
