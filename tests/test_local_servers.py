"""The engine with the real OpenAI and Ollama adapters against loopback llama.cpp, llama-cpp-python
and Ollama fakes: windows the servers state or report are learnt and let fallbacks through, and
usage a server leaves out of a stream is counted by its own tokenizer and said to be an estimate."""

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


@pytest.fixture
def llama_python() -> Iterator[FakeProvider]:
    """llama-cpp-python's server: no /props or /tokenize, its tokenizer at /extras/tokenize."""
    server = FakeProvider("openai", api_key=None, models=["qwen"], llama_cpp_python=True, n_ctx=2_048)
    server.start()
    yield server
    server.stop()


def engine_for(tmp_path: Path, local: FakeProvider, *, retries: int = 0) -> Engine:
    settings = settings_from_dict({
        "ledger": {"path": str(tmp_path / "ledger.db")},
        "providers": [
            {"name": "local", "kind": "openai", "base_url": local.base_url, "models": ["qwen"], "timeout_s": 5,
             "prices": {"qwen": FREE}},
            {"name": "mock", "kind": "mock", "models": ["backup"], "prices": {"backup": FREE}},
        ],
        "resilience": {"max_retries": retries},
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


async def test_a_stream_too_long_for_llama_cpp_python_fails_once_as_too_long_teaches_the_window_and_falls_back(
    tmp_path: Path, llama_python: FakeProvider,
) -> None:
    """The case seen: a streamed call over llama-cpp-python's window got a 200 stream with no
    event; taken for a cut stream, it was retried twice, the window never learnt, and after
    three such calls the breaker opened for the local model."""
    engine = engine_for(tmp_path, llama_python, retries=2)
    long_prompt = "word " * 3_000
    try:
        result = await engine.complete(CompleteArgs(prompt=long_prompt, model=["local:qwen", "mock:backup"]),
                                       progress=progress)
        assert [(a.model, a.outcome, a.error_code) for a in result.attempts] == [
            ("local:qwen", "error", "context_too_long"), ("mock:backup", "ok", None)], "no retry of a refusal"
        chats = [r.json for r in llama_python.requests if r.path == "/v1/chat/completions"]
        assert [c.get("stream") is True for c in chats] == [True, False], "asked again whole, once, in the same attempt"
        local = engine.catalog.get("local:qwen")
        assert (local.context_window, local.context_known) == (2_048, True)
        assert local.context_source == "reported by the server in an error"
        for _ in range(3):  # the window now rules the model out: it is never asked again, so no breaker opens
            again = await engine.complete(CompleteArgs(prompt=long_prompt, quality="low"), progress=progress)
            assert again.model == "mock:backup" and [a.outcome for a in again.attempts] == ["ok"]
        short = await engine.complete(CompleteArgs(prompt="hi", model="local:qwen"), progress=progress)
        assert short.model == "local:qwen" and short.text
    finally:
        await engine.aclose()


async def test_llama_cpp_python_counts_a_stream_sent_without_usage_with_its_own_tokenizer(
    tmp_path: Path, llama_python: FakeProvider,
) -> None:
    """llama-cpp-python has no /tokenize (404) but POST /extras/tokenize: the estimate was made by
    characters, with a note saying the server offers no tokenizer."""
    engine = engine_for(tmp_path, llama_python)
    try:
        prompt = "How many tokens, by your own count, are in this question?"
        for _ in range(2):
            result = await engine.complete(CompleteArgs(prompt=prompt, model="local:qwen"), progress=progress)
            assert result.usage.estimated and result.usage.estimate_method == "server_tokenizer"
            assert result.usage.input_tokens == len(fake_tokens(prompt)) + 4 + 3
            assert result.usage.output_tokens == len(fake_tokens(result.text))
            assert not any("offers no tokenizer" in note for note in result.notes), result.notes
        paths = [r.path for r in llama_python.requests]
        assert paths.count("/tokenize") == 1, "the endpoint it lacks is asked once, then remembered"
        assert paths.count("/extras/tokenize") == 4, "prompt and answer, for each of the two calls"
    finally:
        await engine.aclose()


async def test_an_estimated_answer_never_counts_more_output_tokens_than_the_call_allowed(
    tmp_path: Path, llama: FakeProvider,
) -> None:
    llama.reply(text="word " * 100)  # a hundred tokens by the server's tokenizer, for a call of max_tokens 40
    engine = engine_for(tmp_path, llama)
    try:
        result = await engine.complete(CompleteArgs(prompt="Say word.", model="local:qwen", max_tokens=40),
                                       progress=progress)
        assert result.usage.estimate_method == "server_tokenizer"
        assert result.usage.output_tokens == 40
        assert engine.ledger.rows()[0]["output_tokens"] == 40
    finally:
        await engine.aclose()
