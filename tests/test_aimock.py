"""The four real adapters against an independent mock of the provider APIs written by others
(``@copilotkit/aimock``, a JavaScript server, pinned in ``tests/aimock``), so our reading of each
wire format is checked against someone else's, not only against our own fakes.

aimock splits answers into chunks of JavaScript string units, so an emoji's surrogate pair lands
in two chunks as ``"\\ud83d"`` then ``"\\ude00"``: exactly what broke the stdio writer. Its chaos
headers (malformed JSON, dropped connections, 500s, 429s) must each fail one attempt, never more.

Rich answers too: tool calls (two at once, one with the id the fixture gives, non-ASCII arguments
that a JavaScript server splits across stream chunks), arguments that are not JSON, a stream cut
inside a tool call, and JSON for a schema. A fixture for tool calls matches only when the request
offers its tool (aimock's ``toolName``, read from each API's own tool format), and OpenAI's JSON
fixture only when ``response_format`` is sent, so these also show the request carried them in a
form another implementation reads.

Pinned with the other Node peers in ``tests/node`` (``npm ci`` there; ``.ci/run`` does it): skipped
without them, saying so, and required in CI (see ``node_peers``).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import jsonschema
import pytest

from llm_router.content import ResponseFormat, ToolSpec
from llm_router.providers.anthropic import AnthropicProvider
from llm_router.providers.base import HttpSettings
from llm_router.providers.gemini import GeminiProvider
from llm_router.providers.ollama import OllamaProvider
from llm_router.providers.openai import OpenAIProvider
from llm_router.types import (
    Completion,
    CompletionRequest,
    InvalidOutput,
    MalformedResponse,
    Message,
    ProviderError,
    ToolCallOnly,
)

from .node_peers import INVOICE_SCHEMA, NODE_DIR, TOOLS, node, require

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLI = NODE_DIR / "node_modules" / "@copilotkit" / "aimock" / "dist" / "cli.js"
FIXTURES = NODE_DIR / "aimock-fixtures.json"
ADAPTERS: dict[str, tuple[type[Any], str, str]] = {  # kind → (adapter, base path, model)
    "anthropic": (AnthropicProvider, "", "claude-haiku-4-5"),
    "openai": (OpenAIProvider, "/v1", "gpt-4o-mini"),
    "gemini": (GeminiProvider, "", "gemini-2.5-flash"),
    "ollama": (OllamaProvider, "", "llama3.1"),
}
MODES = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
KINDS = pytest.mark.parametrize("kind", list(ADAPTERS))
RICH_PENDING: dict[str, str] = {}
"""Adapters whose rich support is still to come: their rich tests skip, saying so, only while the
adapter shows it (a tool call it cannot take, a fixture that needs what it did not send). Every
adapter has it now."""
OFFERED = tuple(ToolSpec(t["name"], t["description"], t["inputSchema"]) for t in TOOLS)
INVOICE = {"vendor": {"name": "ACME \u00e9t\u00e9 \U0001f600", "country": "FR"},
           "lines": [{"item": "chair", "quantity": 2, "unit_price": 40.5}], "currency": "EUR", "paid": False, "notes": None}
"""What the fixture answers ``invoice`` with."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def aimock() -> Any:
    """One aimock server for the module, on a free port it picks and prints."""
    require("@copilotkit/aimock")
    proc = subprocess.Popen(
        [node(), str(CLI), "-p", "0", "-f", str(FIXTURES), "-c", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:  # a handful of lines, then "listening on http://127.0.0.1:PORT"
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if match:
                url = match.group(1)
                break
        assert url, "aimock did not start"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@asynccontextmanager
async def _adapter(url: str, kind: str, headers: dict[str, str] | None = None) -> AsyncIterator[Any]:
    cls, base_path, _ = ADAPTERS[kind]
    provider = cls(HttpSettings(name=kind, base_url=url + base_path, api_key="mock", timeout_s=5,
                                connect_timeout_s=5, headers=headers or {}))
    try:
        yield provider
    finally:
        await provider.aclose()


async def ask(url: str, kind: str, prompt: str, *, stream: bool, headers: dict[str, str] | None = None,
              **rich: Any) -> Any:
    deltas: list[str] = []

    async def on_text(text: str) -> None:
        text.encode("utf-8")
        deltas.append(text)

    request = CompletionRequest(messages=(Message(role="user", content=prompt),), max_tokens=64, **rich)
    async with _adapter(url, kind, headers) as provider:
        result = await provider.complete(ADAPTERS[kind][2], request, on_text=on_text if stream else None)
    return result, deltas


@KINDS
@MODES
async def test_an_emoji_split_across_chunks_by_a_javascript_server_comes_back_whole(
    aimock: str, kind: str, stream: bool
) -> None:
    result, deltas = await ask(aimock, kind, "emoji", stream=stream)
    assert result.text == "Hi there \U0001f600 from aimock"
    if stream:
        assert "".join(deltas) == result.text and all("\ufffd" not in d for d in deltas)


@KINDS
@MODES
async def test_a_tool_call_from_another_servers_wire_format_is_tool_call_only(
    aimock: str, kind: str, stream: bool
) -> None:
    with pytest.raises(ToolCallOnly) as info:
        await ask(aimock, kind, "weather", stream=stream)
    assert "get_weather" in str(info.value)


@KINDS
@MODES
async def test_a_plain_answer_reads_as_it_does_from_our_own_fakes(aimock: str, kind: str, stream: bool) -> None:
    result, _ = await ask(aimock, kind, "hello", stream=stream)
    assert result.text == "Hello from aimock"
    # aimock counts tokens for OpenAI only; the zeros it sends for the others are no count.
    assert (result.usage is not None) == (kind == "openai")


@KINDS
@MODES
@pytest.mark.parametrize("chaos", ["malformed", "disconnect", "drop", "ratelimit"])
async def test_each_chaos_fault_fails_one_attempt_never_the_process(
    aimock: str, kind: str, stream: bool, chaos: str
) -> None:
    with anyio.fail_after(10):
        with pytest.raises(ProviderError) as info:
            await ask(aimock, kind, "hello", stream=stream, headers={f"x-aimock-chaos-{chaos}": "1"})
    str(info.value).encode("utf-8")


def _pending(kind: str, error: ProviderError) -> None:
    """Skip, saying why, when an adapter whose rich support is still to come shows it is missing."""
    if kind in RICH_PENDING:
        pytest.skip(f"{RICH_PENDING[kind]}: {type(error).__name__}: {error}")


async def ask_with_tools(url: str, kind: str, prompt: str, *, stream: bool) -> Completion:
    try:
        result: Completion = (await ask(url, kind, prompt, stream=stream, tools=OFFERED))[0]
    except (InvalidOutput, MalformedResponse):
        raise
    except ProviderError as error:
        _pending(kind, error)  # a 404 "no fixture matched" is tools not sent; a tool-call-only, tools not read
        raise
    return result


@KINDS
@MODES
async def test_tool_calls_in_another_servers_wire_format_come_back_as_tool_calls(
    aimock: str, kind: str, stream: bool
) -> None:
    result = await ask_with_tools(aimock, kind, "forecast for Zurich", stream=stream)
    assert result.finish_reason == "tool_calls" and result.text == ""
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("get_weather", {"city": "Z\u00fcrich \U0001f600", "unit": "celsius"}),
        ("get_time", {"place": {"city": "Z\u00fcrich", "country": "CH"}, "format": "24h"}),
    ]
    ids = [c.id for c in result.tool_calls]
    assert all(ids) and len(set(ids)) == 2, ids
    if kind != "ollama":  # Ollama's tool calls carry no id on the wire: ours are made
        assert ids[0] == "call_fixture_forecast", "the id the server gave is the one a tool turn answers"
    for call in result.tool_calls:
        jsonschema.Draft202012Validator(next(t.input_schema for t in OFFERED if t.name == call.name)).validate(call.arguments)


@pytest.mark.parametrize("kind", ["openai"])  # the only wire that carries arguments as text (aimock sends {} for the others)
@MODES
async def test_tool_call_arguments_that_are_not_json_are_invalid_output_not_a_crash(
    aimock: str, kind: str, stream: bool
) -> None:
    with pytest.raises(InvalidOutput, match="get_weather with arguments that are not JSON") as info:
        await ask_with_tools(aimock, kind, "garbled", stream=stream)
    assert info.value.usage is not None, "the answer was billed"


@pytest.mark.parametrize("kind", ["anthropic", "openai", "ollama"])  # Gemini streams each call whole, in one chunk
async def test_a_stream_cut_inside_a_tool_call_fails_the_attempt(aimock: str, kind: str) -> None:
    with anyio.fail_after(10):
        with pytest.raises(ProviderError) as info:
            await ask_with_tools(aimock, kind, "cutoff", stream=True)
    assert info.value.retryable, info.value


@KINDS
@MODES
async def test_json_for_a_schema_from_another_server_reads_as_the_json_it_holds(
    aimock: str, kind: str, stream: bool
) -> None:
    fmt = ResponseFormat("json_schema", INVOICE_SCHEMA, "invoice")
    result, deltas = await ask(aimock, kind, "invoice please", stream=stream, response_format=fmt)
    if result.text == "response_format was not sent":  # neither OpenAI's response_format nor Claude's forced tool
        _pending(kind, ProviderError("aimock's fixture for the format did not match", provider=kind))
    assert json.loads(result.text) == INVOICE
    jsonschema.Draft202012Validator(INVOICE_SCHEMA).validate(json.loads(result.text))
    assert result.finish_reason == "stop" and not result.tool_calls
    if stream:
        assert "".join(deltas) == result.text
