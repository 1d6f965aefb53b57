"""The OpenAI adapter on the wire, with ``httpx.MockTransport`` (no sockets): its request bodies
snapshotted whole, and its replies, streamed and not, read as its documentation writes them
(see ``providers_wire.py``)."""

from __future__ import annotations

import pytest

from llm_router.providers.openai import OpenAIProvider
from llm_router.types import (
    ContentFiltered,
    MalformedResponse,
    ServerError,
    Usage,
)

from .providers_wire import (
    BARE,
    KEY,
    OPENAI_REPLY,
    Wire,
    fails,
    js,
    make,
    openai_stream,
    run,
    sse,
)

pytestmark = pytest.mark.anyio


async def test_openai_request_is_as_documented() -> None:
    wire = Wire(js(OPENAI_REPLY))
    await run(make(OpenAIProvider, wire))
    request = wire.requests[0]
    assert str(request.url) == "https://api.openai.com/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert wire.body == {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "max_completion_tokens": 64,  # OpenAI deprecated max_tokens; newer models reject it
        "temperature": 0.2,
    }


async def test_openai_compatible_keyless_server_gets_no_auth_and_max_tokens() -> None:
    wire = Wire(sse(openai_stream()))
    await run(make(OpenAIProvider, wire, key=None, base="http://127.0.0.1:8000/v1/"), BARE, stream=True)
    request = wire.requests[0]
    assert str(request.url) == "http://127.0.0.1:8000/v1/chat/completions"
    assert "authorization" not in request.headers
    assert wire.body == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_openai_json_reply_with_cached_tokens() -> None:
    result, _ = await run(make(OpenAIProvider, Wire(js(OPENAI_REPLY))))
    assert (result.text, result.model, result.finish_reason, result.response_id) == (
        "Four.",
        "gpt-x-2025-01-01",
        "stop",
        "chatcmpl-1",
    )
    assert result.usage == Usage(input_tokens=2006, output_tokens=300, cached_tokens=1920)


async def test_openai_stream_reply_with_usage_chunk() -> None:
    result, deltas = await run(make(OpenAIProvider, Wire(sse(openai_stream()))), stream=True)
    assert deltas == ["Fo", "ur."]
    assert (result.text, result.model, result.finish_reason, result.response_id) == (
        "Four.",
        "gpt-x-2025-01-01",
        "stop",
        "chatcmpl-2",
    )
    assert result.usage == Usage(input_tokens=50, output_tokens=4, cached_tokens=32)


async def test_openai_missing_usage_is_none() -> None:
    reply = {k: v for k, v in OPENAI_REPLY.items() if k != "usage"}
    result, _ = await run(make(OpenAIProvider, Wire(js(reply))))
    assert result.usage is None
    result, _ = await run(make(OpenAIProvider, Wire(sse(openai_stream(usage=False)))), stream=True)
    assert result.usage is None


async def test_openai_stream_without_done_is_malformed() -> None:
    err = await fails(
        make(OpenAIProvider, Wire(sse(openai_stream(done=False)))), MalformedResponse, stream=True
    )
    assert "[DONE]" in str(err)


async def test_openai_content_filter_finish_reason() -> None:
    choice = {**OPENAI_REPLY["choices"][0], "finish_reason": "content_filter"}  # type: ignore[index]
    await fails(make(OpenAIProvider, Wire(js({**OPENAI_REPLY, "choices": [choice]}))), ContentFiltered)
    await fails(
        make(OpenAIProvider, Wire(sse(openai_stream(finish="content_filter")))), ContentFiltered, stream=True
    )


async def test_openai_error_chunk_mid_stream() -> None:
    events = openai_stream()[:2] + [
        (
            None,
            {
                "error": {
                    "message": "The server had an error",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        )
    ]
    await fails(make(OpenAIProvider, Wire(sse(events))), ServerError, stream=True)
