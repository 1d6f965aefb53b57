"""The TypeScript MCP SDK 1.x client (what most desktop clients embed; ``tests/node/sdk_client.mjs``)
drives the server over stdio and over Streamable HTTP with a bearer token: every tool with valid
and invalid arguments, and the protocol's edges. It validates structured content against each
tool's output schema, even on an error result: an error that carried ``{"error": ...}`` there made
it throw -32602 and the user never saw "budget ... would be exceeded". Each message must arrive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .node_peers import TOKEN, demo_server_command, http_server, require, run_json

ASK = {"prompt": "Summarise the plot of Hamlet in two lines.", "quality": "low", "tag": "peer"}

# (step, what must come back): "ok" / an error result whose text starts with a message / a JSON-RPC error code.
PLAN: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"tool": "route_explain", "arguments": ASK}, {"ok": True}),
    ({"tool": "complete", "arguments": ASK}, {"ok": True}),
    ({"tool": "cost_report", "arguments": {"period": "today", "group_by": "tag"}}, {"ok": True}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "max_token": 50}},
     {"error": "max_token: is not an argument of complete; did you mean 'max_tokens'?", "field": "max_token"}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "max_cost": 0.01}},
     {"error": "max_cost: is not an argument of complete; did you mean 'max_cost_usd'?", "field": "max_cost"}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "quality": "hgih"}},
     {"error": "quality: 'hgih' is not allowed (allowed: low, medium, high, critical)", "field": "quality"}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "model": "anthropic:claude-haiku-9"}}, {"error": "model: ", "field": "model"}),
    ({"tool": "route_explain", "arguments": {"prompt": ""}}, {"error": "prompt: is empty", "field": "prompt"}),
    ({"tool": "route_explain", "arguments": {"prompt": "hi", "tools": []}},
     {"error": "tools: is not an argument of route_explain (allowed: prompt, messages, ", "field": "tools"}),
    ({"tool": "cost_report", "arguments": {"period": "fortnight"}}, {"error": "period: 'fortnight' is not allowed", "field": "period"}),
    ({"tool": "cost_report", "arguments": {"since": "2026-02-01", "until": "2026-01-01"}}, {"error": "until: ", "field": "until"}),
    ({"tool": "set_budget", "arguments": {"scope": "planet:mars", "period": "daily", "limit_usd": 1}},
     {"error": "scope: ", "field": "scope"}),
    ({"tool": "set_budget", "arguments": {"scope": "global", "period": "daily", "limit_usd": -1}},
     {"error": "limit_usd: -1 is too small", "field": "limit_usd"}),
    ({"tool": "set_budget", "arguments": {"scope": "global", "period": "daily", "limit_usd": 0}}, {"ok": True}),
    ({"tool": "complete", "arguments": {"prompt": "hello", "model": "openai:gpt-4o"}},
     {"error": "budget global daily of $0 would be exceeded", "code": "budget_exceeded"}),
    ({"tool": "compelte", "arguments": {"prompt": "hi"}}, {"rpc_error": -32602, "says": "Unknown tool: 'compelte'"}),
    ({"read": "llm-router://providers"}, {"ok": True}),
    ({"read": "llm-router://nothing"}, {"rpc_error": -32002, "says": "no such resource"}),
    ({"read": "llm-router://ledger/20260101"}, {"rpc_error": -32602, "says": "date: '20260101' is not a date"}),
]


def check(steps: list[dict[str, Any]]) -> None:
    assert len(steps) == len(PLAN)
    for (step, want), got in zip(PLAN, steps, strict=True):
        where = json.dumps(step)
        if "rpc_error" in want:
            assert got["outcome"] == "threw" and got["code"] == want["rpc_error"], (where, got)
            assert want["says"] in got["message"], (where, got)
            continue
        assert got["outcome"] == "result", (where, got)  # the client did not throw: the user sees the text
        if want.get("ok"):
            assert not got.get("isError"), (where, got)
            assert got["text"], where
            continue
        assert got["isError"] and got["structuredContent"] is None, (where, got)
        assert got["text"].startswith(want["error"]), (where, got["text"])
        error = got["meta"]["llm-router/error"]
        assert error["code"] == want.get("code", "invalid_input"), (where, error)
        if "field" in want:
            assert error["field"] == want["field"], (where, error)
        tail = f"({error['code']}; request {error['request_id']})" if "request_id" in error else f"({error['code']})"
        assert got["text"].endswith(tail), (where, got["text"])
    refusal = steps[len(PLAN) - 5]["meta"]["llm-router/error"]
    assert refusal["request_id"] and refusal["limit"] == "global daily", "the budget refusal names its call and limit"


@pytest.mark.slow
def test_the_typescript_sdk_client_reads_every_answer_and_every_error_over_stdio(tmp_path: Path) -> None:
    require("@modelcontextprotocol/sdk")
    out = run_json(["sdk_client.mjs", "stdio", *demo_server_command(tmp_path / "ledger.db")],
                   stdin=json.dumps({"steps": [step for step, _ in PLAN]}))
    assert out["server"]["name"] == "llm-router"
    assert sorted(out["tools"]) == ["complete", "cost_report", "route_explain", "set_budget"]
    assert "prompts" not in out["capabilities"]
    check(out["steps"])


@pytest.mark.slow
def test_the_typescript_sdk_client_reads_every_answer_and_every_error_over_http_with_a_token(tmp_path: Path) -> None:
    require("@modelcontextprotocol/sdk")
    with http_server(tmp_path / "ledger.db") as url:
        out = run_json(["sdk_client.mjs", "http", url, TOKEN], stdin=json.dumps({"steps": [step for step, _ in PLAN]}))
    check(out["steps"])
    assert "billed to 'ci'" in out["steps"][1]["text"], "the token's tag is billed, and the answer says so"


def test_a_peer_that_is_not_installed_is_skipped_saying_what_to_run_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LLM_ROUTER_REQUIRE_NODE", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no-such-peer is not installed: run `npm ci` in .*tests/node"):
        require("no-such-peer")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        require("no-such-peer")
