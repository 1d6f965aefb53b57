"""The Ollama adapter on the wire, with ``httpx.MockTransport`` (no sockets): its request bodies
snapshotted whole, and its replies, streamed and not, read as its documentation writes them
(see ``providers_wire.py``)."""

from __future__ import annotations

import pytest

from llm_router.providers.ollama import OllamaProvider
from llm_router.types import (
    MalformedResponse,
    ServerError,
    Usage,
)

from .providers_wire import (
    BARE,
    KEY,
    OLLAMA_REPLY,
    Wire,
    fails,
    js,
    make,
    ndjson,
    ollama_stream,
    run,
)

pytestmark = pytest.mark.anyio


async def test_ollama_request_is_as_documented() -> None:
    wire = Wire(js(OLLAMA_REPLY))
    await run(make(OllamaProvider, wire, key=None))
    request = wire.requests[0]
    assert str(request.url) == "http://127.0.0.1:11434/api/chat"
    assert "authorization" not in request.headers
    assert wire.body == {
        "model": "llama3",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "stream": False,  # /api/chat streams unless told not to
        "options": {"num_predict": 64, "temperature": 0.2},
    }


async def test_ollama_stream_request_and_reply() -> None:
    wire = Wire(ndjson(ollama_stream()))
    result, deltas = await run(make(OllamaProvider, wire, key=None), BARE, stream=True)
    assert wire.body == {
        "model": "llama3",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "options": {"num_predict": 5},
    }
    assert deltas == ["Fo", "ur."]
    assert (result.text, result.model, result.finish_reason, result.response_id) == (
        "Four.",
        "llama3:latest",
        "stop",
        None,
    )
    assert result.usage == Usage(input_tokens=26, output_tokens=4)


async def test_ollama_json_reply() -> None:
    result, _ = await run(make(OllamaProvider, Wire(js(OLLAMA_REPLY)), key=None))
    assert (result.text, result.model, result.finish_reason) == ("Four.", "llama3:latest", "stop")
    assert result.usage == Usage(input_tokens=26, output_tokens=4)


async def test_ollama_missing_counts_give_no_usage() -> None:
    reply = {k: v for k, v in OLLAMA_REPLY.items() if k != "prompt_eval_count"}
    result, _ = await run(make(OllamaProvider, Wire(js(reply)), key=None))
    assert result.usage is None


async def test_ollama_stream_without_done_is_malformed() -> None:
    err = await fails(
        make(OllamaProvider, Wire(ndjson(ollama_stream(done=False))), key=None),
        MalformedResponse,
        stream=True,
    )
    assert "done" in str(err)


async def test_ollama_error_line_mid_stream() -> None:
    lines = ollama_stream()[:1] + [{"error": "an error was encountered while running the model"}]
    err = await fails(make(OllamaProvider, Wire(ndjson(lines)), key=None), ServerError, stream=True)
    assert "running the model" in str(err)


async def test_ollama_bearer_key_when_configured() -> None:
    wire = Wire(js(OLLAMA_REPLY))
    await run(make(OllamaProvider, wire))
    assert wire.requests[0].headers["authorization"] == f"Bearer {KEY}"
