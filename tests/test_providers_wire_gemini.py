"""The Gemini adapter on the wire, with ``httpx.MockTransport`` (no sockets): its request bodies
snapshotted whole, and its replies, streamed and not, read as its documentation writes them
(see ``providers_wire.py``)."""

from __future__ import annotations

import pytest

from llm_router.providers.gemini import GeminiProvider
from llm_router.types import (
    ContentFiltered,
    MalformedResponse,
    Usage,
)

from .providers_wire import (
    BARE,
    GEMINI_REPLY,
    KEY,
    Wire,
    fails,
    gemini_stream,
    js,
    make,
    run,
    sse,
)

pytestmark = pytest.mark.anyio


async def test_gemini_request_is_as_documented() -> None:
    wire = Wire(js(GEMINI_REPLY))
    await run(make(GeminiProvider, wire))
    request = wire.requests[0]
    assert (
        str(request.url) == "https://generativelanguage.googleapis.com/v1beta/models/gemini-x:generateContent"
    )
    assert request.headers["x-goog-api-key"] == KEY
    assert KEY not in str(request.url)
    assert wire.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello."}]},
            {"role": "user", "parts": [{"text": "What is 2+2?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.2},
    }


async def test_gemini_stream_request_uses_sse_endpoint() -> None:
    wire = Wire(sse(gemini_stream()))
    await run(make(GeminiProvider, wire), BARE, stream=True, model="models/gemini-x")
    request = wire.requests[0]
    assert request.url.path == "/v1beta/models/gemini-x:streamGenerateContent"
    assert request.url.params["alt"] == "sse"
    assert wire.body == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "generationConfig": {"maxOutputTokens": 5},
    }


async def test_gemini_json_reply_counts_thinking_as_output() -> None:
    result, _ = await run(make(GeminiProvider, Wire(js(GEMINI_REPLY))))
    assert (result.text, result.model, result.finish_reason, result.response_id) == (
        "Four.",
        "gemini-x-001",
        "stop",
        "resp-1",
    )
    assert result.usage == Usage(input_tokens=1200, output_tokens=45, cached_tokens=1024)


async def test_gemini_stream_reply_takes_last_usage() -> None:
    result, deltas = await run(make(GeminiProvider, Wire(sse(gemini_stream()))), stream=True)
    assert deltas == ["Fo", "ur."]
    assert (result.text, result.model, result.finish_reason, result.response_id) == (
        "Four.",
        "gemini-x-001",
        "stop",
        "resp-2",
    )
    assert result.usage == Usage(input_tokens=20, output_tokens=3)


async def test_gemini_missing_usage_is_none() -> None:
    reply = {k: v for k, v in GEMINI_REPLY.items() if k != "usageMetadata"}
    result, _ = await run(make(GeminiProvider, Wire(js(reply))))
    assert result.usage is None


async def test_gemini_stream_without_finish_reason_is_malformed() -> None:
    err = await fails(
        make(GeminiProvider, Wire(sse(gemini_stream(final=False)))), MalformedResponse, stream=True
    )
    assert "finishReason" in str(err)


async def test_gemini_blocked_prompt_and_safety_finish() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
    }
    err = await fails(make(GeminiProvider, Wire(js(blocked))), ContentFiltered)
    assert "SAFETY" in str(err)
    await fails(make(GeminiProvider, Wire(sse([(None, blocked)]))), ContentFiltered, stream=True)
    candidate = {**GEMINI_REPLY["candidates"][0], "finishReason": "SAFETY"}  # type: ignore[index]
    await fails(make(GeminiProvider, Wire(js({**GEMINI_REPLY, "candidates": [candidate]}))), ContentFiltered)


async def test_gemini_no_candidates_is_malformed() -> None:
    await fails(make(GeminiProvider, Wire(js({"modelVersion": "gemini-x-001"}))), MalformedResponse)
