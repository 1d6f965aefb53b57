"""A fallback keeps the request's meaning: one rich request walks a chain of all four wire formats
(real adapters, each against its loopback fake over a socket), and each provider is sent the
schema, the tools or the image in its own form. The caller gets the first valid answer; every
attempt, and what each was billed, is in the result and the ledger, whose sums equal what the
upstreams reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import settings_from_dict
from llm_router.engine import Engine
from llm_router.types import Usage, usd_str

from .conftest import FAKE_MODELS, held_by_calls
from .fakes import FakeProvider
from .fakes import Usage as WireUsage
from .pngs import png

pytestmark = pytest.mark.anyio

ORDER = ("anthropic", "openai", "gemini", "ollama")
CHAIN = [f"{kind}:{FAKE_MODELS[kind]}" for kind in ORDER]
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "rating": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 5}, {"type": "null"}]},
    },
    "required": ["title", "tags", "rating"],
    "additionalProperties": False,
}
WEATHER = {"name": "get_weather", "description": "Current weather for a city",
           "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


IMAGE = png()


def engine_for(tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The real adapters on the fakes. The OpenAI fake listens on 127.0.0.1, so it would count as a
    local server (tools and vision only as its /props says): the config says it has them, as a
    user would for a local gateway to OpenAI. Ollama's fake says its model has vision and tools."""
    fakes["ollama"].show_capabilities = {FAKE_MODELS["ollama"]: ["completion", "tools", "vision"]}
    providers = []
    for kind in ORDER:
        fake = fakes[kind]
        entry: dict[str, Any] = {"name": kind, "kind": kind, "base_url": fake.base_url, "models": [FAKE_MODELS[kind]],
                                 "timeout_s": 5}
        if fake.api_key:
            monkeypatch.setenv(f"TEST_{kind.upper()}_KEY", fake.api_key)
            entry["api_key_env"] = f"TEST_{kind.upper()}_KEY"
        if kind == "openai":
            entry["model_overrides"] = {FAKE_MODELS[kind]: {"capabilities": {"tools": True, "tool_choice": True, "vision": True}}}
        providers.append(entry)
    settings = settings_from_dict({"ledger": {"path": str(tmp_path / "ledger.db")}, "providers": providers,
                                   "resilience": {"max_retries": 0}, "routing": {"max_attempts": 4}}, source="test")
    return Engine(settings)


def wire_usage(n: int) -> WireUsage:
    return WireUsage(input_tokens=100 + n, output_tokens=20 + n)


def ours(kind: str, wire: WireUsage) -> Usage:
    return Usage(wire.input_tokens, wire.output_tokens)


def body(fake: FakeProvider) -> Any:
    (request,) = [r for r in fake.requests if r.method == "POST" and not r.path.startswith("/api/show")]
    return request.json


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_schema_walks_all_four_wire_formats_until_an_answer_matches_it(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """Each model but the last answers JSON that breaks the schema (or none at all); each is sent
    the schema natively; the last one's valid answer is the result, and every answer is billed."""
    engine = engine_for(tmp_path, fakes, monkeypatch)
    wrong = ['{"title": "Dune", "tags": "scifi", "rating": 5}', "Here you go: Dune, scifi, 5/5",
             '{"title": "Dune", "tags": [], "rating": 9}']
    for n, (kind, text) in enumerate(zip(ORDER, wrong, strict=False)):
        fakes[kind].reply(text=text, usage=wire_usage(n))
    fakes["ollama"].reply(text='{"title": "Dune", "tags": ["scifi"], "rating": 5}', usage=wire_usage(3))
    try:
        async def progress(_v: float, _t: float | None, _m: str) -> None:
            return None

        result = await engine.complete(CompleteArgs.model_validate({
            "prompt": "Describe the book Dune.", "model": CHAIN,
            "response_format": {"type": "json_schema", "name": "book", "schema": SCHEMA}}),
            progress=progress if stream else None)
        assert result.model == CHAIN[3] and result.json_ == {"title": "Dune", "tags": ["scifi"], "rating": 5}
        assert [(a.model, a.error_code) for a in result.attempts] == [
            (CHAIN[0], "invalid_output"), (CHAIN[1], "invalid_output"), (CHAIN[2], "invalid_output"), (CHAIN[3], None)]
        assert "$.tags" in (result.attempts[0].error or "") and "not JSON" in (result.attempts[1].error or "")
        assert "$.rating" in (result.attempts[2].error or "")

        # Each provider was asked for the schema in its own way.
        anthropic = body(fakes["anthropic"])
        assert anthropic["tool_choice"] == {"type": "tool", "name": "book"}
        assert anthropic["tools"][0]["input_schema"] == SCHEMA
        openai = body(fakes["openai"])
        assert openai["response_format"]["type"] == "json_schema"
        assert openai["response_format"]["json_schema"]["schema"]["required"] == ["title", "tags", "rating"]
        gemini = body(fakes["gemini"])["generationConfig"]
        assert gemini["responseMimeType"] == "application/json"
        assert gemini["responseSchema"]["properties"]["rating"].get("nullable") is True
        assert "additionalProperties" not in json.dumps(gemini["responseSchema"])
        assert body(fakes["ollama"])["format"] == SCHEMA

        # Every answer billed: the row's cost is what the four upstreams' usage costs.
        billed = [ours(k, wire_usage(n)) for n, k in enumerate(ORDER)]
        costs = [engine.catalog.get(ref).cost_nusd(u) or 0 for ref, u in zip(CHAIN, billed, strict=True)]
        (row,) = engine.ledger.rows()
        assert row["cost_nusd"] == sum(costs) and row["status"] == "ok"
        assert row["input_tokens"] == sum(u.input_tokens for u in billed)
        assert [a.cost_usd for a in result.attempts] == [usd_str(c) for c in costs]
        assert result.cost_usd == usd_str(sum(costs))
        assert held_by_calls(engine) == 0
    finally:
        await engine.aclose()


async def test_tools_and_an_image_walk_all_four_wire_formats(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three providers fail (500); each was sent the tools and the image in its own shape; the
    fourth answers with a tool call, which comes back with its arguments."""
    engine = engine_for(tmp_path, fakes, monkeypatch)
    for kind in ORDER[:3]:
        fakes[kind].fault("status", status=500)
    fakes["ollama"].fault("tool_call", tool_calls=(("get_weather", {"city": "Oslo"}),), usage=wire_usage(0))
    try:
        result = await engine.complete(CompleteArgs.model_validate({
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather where this photo was taken?"},
                                                      {"type": "image", "data": IMAGE, "mimeType": "image/png"}]}],
            "tools": [WEATHER], "model": CHAIN}))
        assert result.finish_reason == "tool_calls"
        assert [(c.name, c.arguments) for c in result.tool_calls or ()] == [("get_weather", {"city": "Oslo"})]
        assert [a.error_code for a in result.attempts] == ["server_error", "server_error", "server_error", None]

        anthropic = body(fakes["anthropic"])
        assert anthropic["tools"] == [{"name": "get_weather", "description": "Current weather for a city",
                                       "input_schema": WEATHER["inputSchema"]}]
        blocks = anthropic["messages"][0]["content"]
        assert {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}} in blocks
        openai = body(fakes["openai"])
        assert openai["tools"][0] == {"type": "function", "function": {"name": "get_weather", "description": WEATHER["description"],
                                                                       "parameters": WEATHER["inputSchema"]}}
        assert {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}"}} in openai["messages"][-1]["content"]
        gemini = body(fakes["gemini"])
        assert gemini["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        assert {"inlineData": {"mimeType": "image/png", "data": IMAGE}} in gemini["contents"][-1]["parts"]
        ollama = body(fakes["ollama"])
        assert ollama["tools"][0]["function"]["name"] == "get_weather"
        assert ollama["messages"][-1]["images"] == [IMAGE]
    finally:
        await engine.aclose()


async def test_a_tool_conversation_is_carried_to_each_wire_format(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The assistant's earlier call and the tool's result, in each provider's shape."""
    engine = engine_for(tmp_path, fakes, monkeypatch)
    for kind in ORDER[:3]:
        fakes[kind].fault("status", status=500)
    fakes["ollama"].reply(text="It is snowing in Oslo.", usage=wire_usage(1))
    try:
        result = await engine.complete(CompleteArgs.model_validate({"messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "tool_calls": [{"id": "call_7", "name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"role": "tool", "tool_call_id": "call_7", "content": "-3 C, snow"}], "tools": [WEATHER], "model": CHAIN}))
        assert result.text == "It is snowing in Oslo." and result.finish_reason == "stop"

        anthropic = body(fakes["anthropic"])["messages"]
        assert anthropic[1]["content"] == [{"type": "tool_use", "id": "call_7", "name": "get_weather", "input": {"city": "Oslo"}}]
        assert anthropic[2]["role"] == "user"
        assert anthropic[2]["content"][0]["type"] == "tool_result" and anthropic[2]["content"][0]["tool_use_id"] == "call_7"
        openai = body(fakes["openai"])["messages"]
        assert openai[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'} or \
            json.loads(openai[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
        assert openai[2] == {"role": "tool", "tool_call_id": "call_7", "content": "-3 C, snow"}
        gemini = body(fakes["gemini"])["contents"]
        assert gemini[1]["role"] == "model" and gemini[1]["parts"][0]["functionCall"]["name"] == "get_weather"
        assert gemini[2]["parts"][0]["functionResponse"]["name"] == "get_weather"
        ollama = body(fakes["ollama"])["messages"]
        assert ollama[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
        assert ollama[2]["role"] == "tool" and ollama[2]["tool_name"] == "get_weather"
    finally:
        await engine.aclose()
