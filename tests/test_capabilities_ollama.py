"""What an Ollama server says a model can do (``POST /api/show``'s ``capabilities``), in the
router's words, through a real socket against the loopback fake: asked once and shared with the
context window, remembered as the window is, and None wherever the server does not say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from llm_router import timings
from llm_router.defaults import KIND_CAPABILITIES
from llm_router.providers import base
from llm_router.providers.base import HttpSettings
from llm_router.providers.ollama import OllamaProvider

from .fakes import FakeProvider

pytestmark = pytest.mark.anyio

DEFAULTS = KIND_CAPABILITIES["ollama"]
MODELS = ["llama-test:latest", "llava:7b", "nomic-embed-text:latest", "qwen3:8b"]
SAID = {
    "llava:7b": ["completion", "vision"],
    "nomic-embed-text": ["embedding"],
    "qwen3:8b": ["completion", "tools", "vision", "thinking"],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def adapter(fake: FakeProvider) -> AsyncIterator[OllamaProvider]:
    provider = OllamaProvider(HttpSettings(name="ollama", base_url=fake.base_url, api_key=None, timeout_s=5))
    try:
        yield provider
    finally:
        await provider.aclose()


def shows(fake: FakeProvider) -> int:
    return [r.path for r in fake.requests].count("/api/show")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("llama-test", DEFAULTS | {"tools"}),  # the fake's default: completion, tools
        ("llava:7b", DEFAULTS | {"vision"}),
        ("qwen3:8b", DEFAULTS | {"tools", "vision"}),  # "thinking" names nothing a request needs
        ("nomic-embed-text", frozenset()),  # no "completion": it cannot chat at all
    ],
)
async def test_a_models_capabilities_are_what_api_show_lists_in_the_routers_words(
    model: str, expected: frozenset[str]
) -> None:
    with FakeProvider("ollama", models=MODELS, show_capabilities=SAID) as fake:
        async with adapter(fake) as provider:
            assert await provider.capabilities(model) == expected
        show = [r for r in fake.requests if r.path == "/api/show"]
        assert [r.json for r in show] == [{"model": model}]


async def test_one_api_show_answer_serves_both_the_window_and_the_capabilities() -> None:
    with FakeProvider("ollama", num_ctx=8192, show_capabilities={"llama-test": ["completion", "vision"]}) as fake:
        async with adapter(fake) as provider:
            assert await provider.context_window("llama-test") == 8192
            assert await provider.capabilities("llama-test") == DEFAULTS | {"vision"}
            assert await provider.capabilities("llama-test") == DEFAULTS | {"vision"}
            assert await provider.context_window("llama-test") == 8192
        assert shows(fake) == 1


async def test_capabilities_asked_first_leave_the_window_nothing_to_ask_of_api_show() -> None:
    with FakeProvider("ollama", default_num_ctx=4096) as fake:
        async with adapter(fake) as provider:
            assert await provider.capabilities("llama-test") == DEFAULTS | {"tools"}
            # No num_ctx in the Modelfile and not loaded: only /api/ps is asked again, later.
            assert await provider.context_window("llama-test") is None
        assert shows(fake) == 1


async def test_a_server_that_lists_no_capabilities_says_nothing() -> None:
    # Ollama before capabilities were reported: /api/show without the field.
    with FakeProvider("ollama") as fake:
        fake.reply(endpoint="side", wire_replace={b'"capabilities":': b'"not_capabilities":'})
        async with adapter(fake) as provider:
            assert await provider.capabilities("llama-test") is None
            assert await provider.capabilities("llama-test") is None
        assert shows(fake) == 1  # an answer, if a silent one: not asked again


async def test_a_model_not_pulled_says_nothing_and_is_asked_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(base, "_clock", lambda: now[0])
    with FakeProvider("ollama") as fake:
        async with adapter(fake) as provider:
            assert await provider.capabilities("not-pulled") is None
            assert await provider.capabilities("not-pulled") is None
            assert shows(fake) == 1
            now[0] += timings.UNKNOWN_RETRY_S + 1
            assert await provider.capabilities("not-pulled") is None
        assert shows(fake) == 2


@pytest.mark.parametrize("status", [500, 503])
async def test_a_failing_api_show_never_fails_the_question(status: int) -> None:
    with FakeProvider("ollama") as fake:
        fake.fault("status", status=status, endpoint="side")
        async with adapter(fake) as provider:
            assert await provider.capabilities("llama-test") is None


async def test_an_api_show_that_is_not_json_says_nothing() -> None:
    with FakeProvider("ollama") as fake:
        fake.fault("html", endpoint="side")
        async with adapter(fake) as provider:
            assert await provider.capabilities("llama-test") is None
