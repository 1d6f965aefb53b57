"""The four adapters through a real socket, against the fake provider servers in ``tests/fakes``.

Each fake speaks its provider's documented wire format on 127.0.0.1, so these tests cover what
``MockTransport`` cannot: real HTTP/1.1 framing, chunked streams, dropped connections, timeouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from llm_router.providers.anthropic import AnthropicProvider
from llm_router.providers.base import HttpSettings
from llm_router.providers.gemini import GeminiProvider
from llm_router.providers.ollama import OllamaProvider
from llm_router.providers.openai import OpenAIProvider
from llm_router.types import (
    AuthError,
    CompletionRequest,
    ConnectionFailed,
    ContentFiltered,
    MalformedResponse,
    Message,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
    Usage,
)

from .fakes import FakeProvider, refused_url
from .fakes import Usage as WireUsage

pytestmark = pytest.mark.anyio

ADAPTERS: dict[str, type[Any]] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "gemini": GeminiProvider,
    "ollama": OllamaProvider,
}
KINDS = list(ADAPTERS)
KEYED = ["anthropic", "openai", "gemini"]  # the fakes of a local Ollama take no key
WIRE_USAGE = WireUsage(input_tokens=100, output_tokens=20, cached_tokens=30, cache_write_tokens=5)
# What each adapter must make of WIRE_USAGE, normalised so that input counts cached tokens too.
EXPECTED_USAGE = {
    "anthropic": Usage(input_tokens=135, output_tokens=20, cached_tokens=30, cache_write_tokens=5),
    "openai": Usage(input_tokens=130, output_tokens=20, cached_tokens=30),
    "gemini": Usage(input_tokens=130, output_tokens=20, cached_tokens=30),
    "ollama": Usage(input_tokens=100, output_tokens=20),  # Ollama has no prompt cache
}
REQ = CompletionRequest(
    messages=(Message(role="user", content="Say hello"),), system="Be brief.", max_tokens=32, temperature=0.5
)
MODEL = {
    "anthropic": "claude-test-1",
    "openai": "gpt-test-1",
    "gemini": "gemini-test-1",
    "ollama": "llama-test:latest",
}
OVERLOAD_STATUS = {"anthropic": 529, "openai": 503, "gemini": 503, "ollama": 503}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=KINDS)
def fake(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    with FakeProvider(request.param, usage=WIRE_USAGE) as server:
        yield server
    assert not server.server_errors, server.server_errors


@asynccontextmanager
async def adapter(
    fake: FakeProvider, *, key: str | None | bool = True, base_url: str | None = None, timeout_s: float = 5.0
) -> AsyncIterator[Any]:
    settings = HttpSettings(
        name=f"{fake.kind}-test",
        base_url=base_url or fake.base_url,
        api_key=fake.api_key if key is True else (key or None),
        timeout_s=timeout_s,
        connect_timeout_s=timeout_s,
    )
    provider = ADAPTERS[fake.kind](settings)
    try:
        yield provider
    finally:
        await provider.aclose()


async def call(provider: Any, kind: str, *, stream: bool) -> tuple[Any, list[str]]:
    deltas: list[str] = []

    async def on_text(text: str) -> None:
        deltas.append(text)

    result = await provider.complete(MODEL[kind], REQ, on_text=on_text if stream else None)
    return result, deltas


async def fails(fake: FakeProvider, cls: type[ProviderError], *, stream: bool, **kw: Any) -> ProviderError:
    async with adapter(fake, **kw) as provider:
        with pytest.raises(ProviderError) as info:
            await call(provider, fake.kind, stream=stream)
    err = info.value
    assert type(err) is cls, f"expected {cls.__name__}, got {type(err).__name__}: {err}"
    if fake.api_key:
        assert fake.api_key not in str(err) and fake.api_key not in (err.body or "")
    return err


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_reply_with_exact_usage(fake: FakeProvider, stream: bool) -> None:
    fake.reply(chunks=("Hel", "lo, ", "world"))
    async with adapter(fake) as provider:
        result, deltas = await call(provider, fake.kind, stream=stream)
    assert result.text == "Hello, world"
    assert deltas == (["Hel", "lo, ", "world"] if stream else [])
    assert result.model == MODEL[fake.kind]
    assert result.usage == EXPECTED_USAGE[fake.kind]
    assert result.finish_reason == "stop"
    assert fake.last_request.method == "POST"


async def test_requests_reuse_one_client(fake: FakeProvider) -> None:
    async with adapter(fake) as provider:
        for stream in (False, True, False):
            result, _ = await call(provider, fake.kind, stream=stream)
            assert result.text == "echo: Say hello"
        assert (await provider.probe()).ok
    assert len(fake.requests) == 4


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_no_usage_reported_gives_none(fake: FakeProvider, stream: bool) -> None:
    fake.fault("no_usage")
    async with adapter(fake) as provider:
        result, _ = await call(provider, fake.kind, stream=stream)
    assert result.text == "echo: Say hello"
    assert result.usage is None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_429_with_retry_after(fake: FakeProvider, stream: bool) -> None:
    fake.fault("status", status=429, retry_after=2)
    err = await fails(fake, RateLimited, stream=stream)
    assert err.status == 429
    assert err.retry_after == 2.0
    assert err.retryable


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_overloaded(fake: FakeProvider, stream: bool) -> None:
    fake.fault("status", status=OVERLOAD_STATUS[fake.kind])
    err = await fails(fake, Overloaded, stream=stream)
    assert err.status == OVERLOAD_STATUS[fake.kind]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_server_error(fake: FakeProvider, stream: bool) -> None:
    fake.fault("status", status=500)
    await fails(fake, ServerError, stream=stream)


@pytest.mark.parametrize("fake", KEYED, indirect=True)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_wrong_key_is_auth_error_and_never_shown(fake: FakeProvider, stream: bool) -> None:
    wrong = "sk-WRONG-KEY-0123456789"
    async with adapter(fake, key=wrong) as provider:
        with pytest.raises(AuthError) as info:
            await call(provider, fake.kind, stream=stream)
        probe = await provider.probe()
    assert wrong not in str(info.value) and wrong not in (info.value.body or "")
    assert not probe.ok and wrong not in probe.detail


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_cut_body_is_malformed(fake: FakeProvider, stream: bool) -> None:
    fake.fault("cut_stream", chunks=("one ", "two ", "three"), after_chunks=1)
    await fails(fake, MalformedResponse, stream=stream)


async def test_stream_ending_cleanly_before_its_end_marker_is_malformed(fake: FakeProvider) -> None:
    fake.fault("cut_stream", chunks=("one ", "two ", "three"), after_chunks=2, clean_eof=True)
    err = await fails(fake, MalformedResponse, stream=True)
    assert "ended before" in str(err)


@pytest.mark.parametrize(
    ("stream", "shape"),
    [(False, "not_json"), (False, "missing_fields"), (True, "not_json")],
    ids=["json-not-json", "json-missing-fields", "stream-bad-frame"],
)
async def test_malformed_body(fake: FakeProvider, stream: bool, shape: str) -> None:
    fake.fault("malformed", malformed=shape)
    await fails(fake, MalformedResponse, stream=stream)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_connection_closed_without_answer(fake: FakeProvider, stream: bool) -> None:
    fake.fault("close")
    await fails(fake, MalformedResponse, stream=stream)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_stalled_answer_times_out(fake: FakeProvider, stream: bool) -> None:
    fake.fault("stall", chunks=("one ", "two"), after_chunks=1)
    await fails(fake, Timeout, stream=stream, timeout_s=0.15)


@pytest.mark.parametrize("fake", ["anthropic", "ollama"], indirect=True)  # the others document none
async def test_in_stream_error_event(fake: FakeProvider) -> None:
    fake.fault("stream_error", chunks=("one ", "two"), after_chunks=1)
    err = await fails(fake, Overloaded if fake.kind == "anthropic" else ServerError, stream=True)
    if fake.kind == "anthropic":
        assert err.status == 529  # the error event's type, not the stream's 200


@pytest.mark.parametrize("fake", KEYED, indirect=True)  # Ollama documents no safety block
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_safety_block_is_content_filtered(fake: FakeProvider, stream: bool) -> None:
    fake.fault("blocked")
    await fails(fake, ContentFiltered, stream=stream)


async def test_probe_lists_models(fake: FakeProvider) -> None:
    async with adapter(fake) as provider:
        result = await provider.probe()
    assert result.ok, result.detail
    assert result.models == (MODEL[fake.kind],)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_connection_refused(fake: FakeProvider, stream: bool) -> None:
    with refused_url(fake.base_path) as url:
        await fails(fake, ConnectionFailed, stream=stream, base_url=url)
        async with adapter(fake, base_url=url) as provider:
            probe = await provider.probe()
    assert not probe.ok
    assert "could not reach" in probe.detail
