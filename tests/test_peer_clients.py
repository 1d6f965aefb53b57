"""The TypeScript MCP SDK 1.x client (what most desktop clients embed; ``tests/node/sdk_client.mjs``)
drives the server over stdio and over Streamable HTTP with a bearer token: every tool with valid
and invalid arguments, and the protocol's edges. It validates structured content against each
tool's output schema, even on an error result: an error that carried ``{"error": ...}`` there made
it throw -32602 and the user never saw "budget ... would be exceeded". Each message must arrive.

Rich calls go through the same client in the same run: structured output for a real schema,
tool calls and the conversation that answers them, an image, all three at once, and a wrong rich
argument refused naming its field. What comes back is checked as the caller would use it: the
``json`` against the schema and each call's ``arguments`` against its tool's ``inputSchema``
(with ``jsonschema``, not by the server's word)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .node_peers import (
    INVOICE_SCHEMA,
    PNG_B64,
    TOKEN,
    TOOLS,
    demo_server_command,
    http_server,
    image_turn,
    require,
    run_json,
    tiny_png,
)

ASK = {"prompt": "Summarise the plot of Hamlet in two lines.", "quality": "low", "tag": "peer"}
Steps = list[dict[str, Any]]


def _from(step: int, *path: str | int) -> dict[str, Any]:
    """What step ``step`` gave back at ``path``, filled in by the client (``sdk_client.mjs``)."""
    return {"$from": [step, *path]}


def _answer(step: int, result: str) -> list[dict[str, Any]]:
    """The turns that go on after step ``step`` asked for a tool: its assistant turn with the
    tool calls ``complete`` returned (no content: the answer's text was empty, which a turn's
    content may not be), and the tool's result for its first call."""
    return [{"role": "assistant", "tool_calls": _from(step, "structuredContent", "tool_calls")},
            {"role": "tool", "tool_call_id": _from(step, "structuredContent", "tool_calls", 0, "id"), "content": result}]


def _valid(value: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema).validate(value)


def _json_answer(got: dict[str, Any], _: Steps) -> None:
    answer = got["structuredContent"]
    _valid(answer["json"], INVOICE_SCHEMA)
    assert json.loads(answer["text"]) == answer["json"], "json is the parsed text"
    assert answer["finish_reason"] == "stop" and "tool_calls" not in answer


def _tool_calls(got: dict[str, Any], name: str) -> None:
    answer = got["structuredContent"]
    assert answer["finish_reason"] == "tool_calls", answer
    calls = answer["tool_calls"]
    assert [c["name"] for c in calls] == [name]
    schemas = {t["name"]: t["inputSchema"] for t in TOOLS}
    for call in calls:
        assert sorted(call) == ["arguments", "id", "name"] and isinstance(call["id"], str) and call["id"]
        _valid(call["arguments"], schemas[call["name"]])


def _tool_result_read(result: str) -> Callable[[dict[str, Any], Steps], None]:
    def check(got: dict[str, Any], _: Steps) -> None:
        answer = got["structuredContent"]
        assert answer["finish_reason"] == "stop" and "tool_calls" not in answer, answer
        assert f"(the tool get_weather returned: {result})" in answer["text"], "the tool turn reached the model"
    return check


def _image_seen(got: dict[str, Any], _: Steps) -> None:
    answer = got["structuredContent"]
    assert f"(saw 1 image: image/png 3x2 {len(tiny_png())} bytes)" in answer["text"], answer["text"]
    assert answer["finish_reason"] == "stop"
    assert answer["usage"]["input_tokens"] > 85, "the image is counted in the input"


def _explained(got: dict[str, Any], _: Steps) -> None:
    explained = got["structuredContent"]
    assert explained["needs"] == ["json_schema", "vision"]
    capable = {c["model"]: set(c["capabilities"]) for c in explained["candidates"]}
    assert explained["chain"] and all({"json_schema", "vision"} <= capable[m] for m in explained["chain"])
    assert "capabilities (json_schema, vision)" in got["text"]


def _rated(got: dict[str, Any], steps: Steps) -> None:
    rating, estimate = got["structuredContent"]["rating"], got["structuredContent"]["estimate"]
    assert rating["request_id"] == steps[1]["structuredContent"]["request_id"] and rating["score"] == 4
    assert estimate["model"] == steps[1]["structuredContent"]["model"] and estimate["ratings"] == 1


def _adaptive_explained(got: dict[str, Any], _: Steps) -> None:
    explained = got["structuredContent"]
    assert explained["strategy"] == "adaptive" and explained["adaptive"]["mode"] in ("exploit", "explore", "balanced")
    assert explained["quality_auto"]["verdict"] == explained["quality"]


WEATHER = "What is the weather in Paris? Ask get_weather."
RECEIPT = "Extract this receipt as the schema says; look up the local time with get_time first."
FORMAT = {"type": "json_schema", "schema": INVOICE_SCHEMA, "name": "invoice"}
RICH_AT = 3
"""Where the rich steps start in ``PLAN`` (their ``$from`` references count from it)."""
RICH: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"tool": "complete", "arguments": {"prompt": "Extract: ACME SARL, France, 2 chairs at 40 EUR, not paid.",
                                        "response_format": FORMAT}}, {"ok": True, "check": _json_answer}),
    ({"tool": "complete", "arguments": {"prompt": WEATHER, "tools": TOOLS, "tool_choice": "required"}},
     {"ok": True, "check": lambda got, _: _tool_calls(got, "get_weather")}),
    ({"tool": "complete", "arguments": {"messages": [{"role": "user", "content": WEATHER}, *_answer(RICH_AT + 1, "18 °C, sunny")],
                                        "tools": TOOLS}}, {"ok": True, "check": _tool_result_read("18 °C, sunny")}),
    ({"tool": "complete", "arguments": {"messages": [image_turn("What is in this picture?")]}},
     {"ok": True, "check": _image_seen}),
    ({"tool": "complete", "arguments": {"messages": [image_turn(RECEIPT)], "tools": TOOLS,
                                        "tool_choice": {"name": "get_time"}, "response_format": FORMAT}},
     {"ok": True, "check": lambda got, _: _tool_calls(got, "get_time")}),
    ({"tool": "complete", "arguments": {"messages": [image_turn(RECEIPT), *_answer(RICH_AT + 4, "14:05")],
                                        "tools": TOOLS, "response_format": FORMAT}}, {"ok": True, "check": _json_answer}),
    ({"tool": "route_explain", "arguments": {"messages": [image_turn("What is in this picture?")], "response_format": FORMAT}},
     {"ok": True, "check": _explained}),
]

# (step, what must come back): "ok" / an error result whose text starts with a message / a JSON-RPC error code.
PLAN: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"tool": "route_explain", "arguments": ASK}, {"ok": True}),
    ({"tool": "complete", "arguments": ASK}, {"ok": True}),
    ({"tool": "cost_report", "arguments": {"period": "today", "group_by": "tag"}}, {"ok": True}),
    *RICH,
    ({"tool": "rate", "arguments": {"request_id": _from(1, "structuredContent", "request_id"), "score": 4,
                                    "comment": "right, and short"}}, {"ok": True, "check": _rated}),
    # The dashboard's result is checked against its output schema by the client, like every other.
    ({"tool": "dashboard", "arguments": {"period": "today"}}, {"ok": True}),
    ({"tool": "dashboard", "arguments": {"period": "fortnight"}}, {"error": "period: 'fortnight' is not allowed", "field": "period"}),
    ({"tool": "route_explain", "arguments": {**ASK, "strategy": "adaptive", "quality": "auto"}},
     {"ok": True, "check": _adaptive_explained}),
    ({"tool": "rate", "arguments": {"request_id": _from(1, "structuredContent", "request_id"), "score": 9}},
     {"error": "score: ", "field": "score"}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "max_token": 50}},
     {"error": "max_token: is not an argument of complete; did you mean 'max_tokens'?", "field": "max_token"}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "max_cost": 0.01}},
     {"error": "max_cost: is not an argument of complete; did you mean 'max_cost_usd'?", "field": "max_cost"}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "quality": "hgih"}},
     {"error": "quality: 'hgih' is not allowed (allowed: low, medium, high, critical, auto)", "field": "quality"}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "model": "anthropic:claude-haiku-9"}}, {"error": "model: ", "field": "model"}),
    ({"tool": "route_explain", "arguments": {"prompt": ""}}, {"error": "prompt: is empty", "field": "prompt"}),
    ({"tool": "route_explain", "arguments": {"prompt": "hi", "tool_choice": "required"}},
     {"error": "tool_choice: is given without tools", "field": "tool_choice"}),
    ({"tool": "complete", "arguments": {"prompt": "hi", "response_format": {"type": "json_schema", "schema": {"type": "nonsense"}}}},
     {"error": "response_format.schema: is not a valid JSON Schema", "field": "response_format.schema"}),
    ({"tool": "complete", "arguments": {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image", "data": PNG_B64, "mimeType": "image/jpg"}]}]}},
     {"error": "messages[0].content[1].mimeType: ", "field": "messages[0].content[1].mimeType"}),
    ({"tool": "complete", "arguments": {"messages": [{"role": "user", "content": "hi"},
                                                     {"role": "tool", "tool_call_id": "call_none", "content": "42"}]}},
     {"error": "messages[1].tool_call_id: 'call_none' is no call an earlier assistant turn made", "field": "messages[1].tool_call_id"}),
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


def check(steps: Steps) -> None:
    assert len(steps) == len(PLAN)
    assert PLAN[RICH_AT:RICH_AT + len(RICH)] == RICH
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
            if "check" in want:
                want["check"](got, steps)
            continue
        assert got["isError"] and got["structuredContent"] is None, (where, got)
        assert got["text"].startswith(want["error"]), (where, got["text"])
        error = got["meta"]["llm-router/error"]
        assert error["code"] == want.get("code", "invalid_input"), (where, error)
        if "field" in want:
            assert error["field"] == want["field"], (where, error)
        tail = f"({error['code']}; request {error['request_id']})" if "request_id" in error else f"({error['code']})"
        assert got["text"].endswith(tail), (where, got["text"])
    at = next(i for i, (_, want) in enumerate(PLAN) if want.get("code") == "budget_exceeded")
    refusal = steps[at]["meta"]["llm-router/error"]
    assert refusal["request_id"] and refusal["limit"] == "global daily", "the budget refusal names its call and limit"


@pytest.mark.slow
def test_the_typescript_sdk_client_reads_every_answer_and_every_error_over_stdio(tmp_path: Path) -> None:
    require("@modelcontextprotocol/sdk")
    out = run_json(["sdk_client.mjs", "stdio", *demo_server_command(tmp_path / "ledger.db")],
                   stdin=json.dumps({"steps": [step for step, _ in PLAN]}))
    assert out["server"]["name"] == "llm-router"
    assert sorted(out["tools"]) == ["complete", "cost_report", "dashboard", "rate", "route_explain", "set_budget"]
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
