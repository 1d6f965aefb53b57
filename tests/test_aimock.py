"""The four real adapters against an independent mock of the provider APIs written by others
(``@copilotkit/aimock``, a JavaScript server, pinned in ``tests/aimock``), so our reading of each
wire format is checked against someone else's, not only against our own fakes.

aimock splits answers into chunks of JavaScript string units, so an emoji's surrogate pair lands
in two chunks as ``"\\ud83d"`` then ``"\\ude00"``: exactly what broke the stdio writer. Its chaos
headers (malformed JSON, dropped connections, 500s, 429s) must each fail one attempt, never more.

Pinned with the other Node peers in ``tests/node`` (``npm ci`` there; ``.ci/run`` does it): skipped
without them, saying so, and required in CI (see ``node_peers``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from llm_router.providers.anthropic import AnthropicProvider
from llm_router.providers.base import HttpSettings
from llm_router.providers.gemini import GeminiProvider
from llm_router.providers.ollama import OllamaProvider
from llm_router.providers.openai import OpenAIProvider
from llm_router.types import CompletionRequest, Message, ProviderError, ToolCallOnly

from .node_peers import NODE_DIR, node, require

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


async def ask(url: str, kind: str, prompt: str, *, stream: bool, headers: dict[str, str] | None = None) -> Any:
    deltas: list[str] = []

    async def on_text(text: str) -> None:
        text.encode("utf-8")
        deltas.append(text)

    request = CompletionRequest(messages=(Message(role="user", content=prompt),), max_tokens=64)
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
