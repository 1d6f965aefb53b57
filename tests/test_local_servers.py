"""The engine with the real OpenAI and Ollama adapters against loopback llama.cpp and Ollama fakes:
windows the servers state or report are learnt and let fallbacks through, and usage a server
leaves out of a stream is counted by its own tokenizer and said to be an estimate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import settings_from_dict
from llm_router.engine import Engine

from .fakes import FakeProvider
from .fakes.side_endpoints import fake_tokens

pytestmark = pytest.mark.anyio

FREE = {"input_per_mtok": 0, "output_per_mtok": 0}


@pytest.fixture
def llama() -> Iterator[FakeProvider]:
    server = FakeProvider("openai", api_key=None, models=["qwen"], llama_cpp=True, n_ctx=2_048)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def plain_openai() -> Iterator[FakeProvider]:
    """An OpenAI-compatible server that is not llama.cpp: no /props, no /tokenize."""
    server = FakeProvider("openai", api_key=None, models=["qwen"])
    server.start()
    yield server
    server.stop()


def engine_for(tmp_path: Path, local: FakeProvider) -> Engine:
    settings = settings_from_dict({
        "ledger": {"path": str(tmp_path / "ledger.db")},
        "providers": [
            {"name": "local", "kind": "openai", "base_url": local.base_url, "models": ["qwen"], "timeout_s": 5,
             "prices": {"qwen": FREE}},
            {"name": "mock", "kind": "mock", "models": ["backup"], "prices": {"backup": FREE}},
        ],
        "resilience": {"max_retries": 0},
    }, source="test")
    return Engine(settings)


async def progress(_value: float, _total: float | None, _message: str) -> None:
    return None


async def test_a_local_window_stated_in_an_error_is_remembered_and_the_fallback_still_answers(
    tmp_path: Path, plain_openai: FakeProvider,
) -> None:
    """The case seen: the catalog assumed 128,000; the server said 2,048; the mock fallback (its
    window only assumed) was then skipped as "no larger than one that was too small"."""
    plain_openai.fault("context", window=2_048, flavor="llama.cpp")
    engine = engine_for(tmp_path, plain_openai)
    try:
        result = await engine.complete(CompleteArgs(prompt="a long prompt", model=["local:qwen", "mock:backup"]))
        assert [(a.model, a.outcome, a.error_code) for a in result.attempts] == [
            ("local:qwen", "error", "context_too_long"), ("mock:backup", "ok", None)]
        local = engine.catalog.get("local:qwen")
        assert (local.context_window, local.context_source) == (2_048, "reported by the server in an error")
    finally:
        await engine.aclose()


async def test_llama_cpp_is_asked_its_window_once_and_its_tokenizer_counts_a_stream_sent_without_usage(
    tmp_path: Path, llama: FakeProvider,
) -> None:
    engine = engine_for(tmp_path, llama)
    try:
        explained = await engine.explain(CompleteArgs(prompt="hi", model="local:qwen"))
        assert explained.candidates[0]["context_window"] == 2_048
        assert explained.candidates[0]["context_source"] == "reported by the server"

        prompt = "How many tokens, by your own count, are in this question?"
        result = await engine.complete(CompleteArgs(prompt=prompt, model="local:qwen"), progress=progress)
        assert result.usage.estimated and result.usage.estimate_method == "server_tokenizer"
        assert result.usage.input_tokens == len(fake_tokens(prompt)) + 4 + 3
        assert result.usage.output_tokens == len(fake_tokens(result.text))
        assert any("estimated" in note for note in result.notes)
        assert engine.ledger.rows()[0]["cost_estimated"] == 1
        assert llama.counts["/props"] == 1
    finally:
        await engine.aclose()


async def test_ollama_reports_the_window_it_runs_a_model_with(tmp_path: Path) -> None:
    ollama = FakeProvider("ollama", models=["llama3.2"], num_ctx=8_192)
    ollama.start()
    try:
        settings = settings_from_dict({
            "ledger": {"path": str(tmp_path / "ledger.db")},
            "providers": [{"name": "ollama", "kind": "ollama", "base_url": ollama.base_url, "models": ["llama3.2"]}],
        }, source="test")
        engine = Engine(settings)
        try:
            explained: Any = await engine.explain(CompleteArgs(prompt="hi", model="ollama:llama3.2"))
            assert explained.candidates[0]["context_window"] == 8_192
        finally:
            await engine.aclose()
    finally:
        ollama.stop()
