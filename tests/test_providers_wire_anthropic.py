"""The Anthropic adapter on the wire, with ``httpx.MockTransport`` (no sockets): its request bodies
snapshotted whole, and its replies, streamed and not, read as its documentation writes them
(see ``providers_wire.py``)."""

from __future__ import annotations

import pytest

from llm_router.providers.anthropic import AnthropicProvider
from llm_router.types import (
    ContentFiltered,
    MalformedResponse,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Usage,
)

from .providers_wire import (
    ANTHROPIC_REPLY,
    BARE,
    KEY,
    Wire,
    anthropic_stream,
    fails,
    js,
    make,
    run,
    sse,
)

pytestmark = pytest.mark.anyio


async def test_anthropic_request_is_as_documented() -> None:
    wire = Wire(js(ANTHROPIC_REPLY))
    await run(make(AnthropicProvider, wire))
    request = wire.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert wire.body == {
        "model": "claude-x",
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "system": "Be terse.",
        "temperature": 0.2,
    }


async def test_anthropic_optional_fields_left_out_and_stream_flag() -> None:
    wire = Wire(sse(anthropic_stream()))
    await run(make(AnthropicProvider, wire), BARE, stream=True)
    assert wire.body == {
        "model": "claude-x",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }


async def test_anthropic_json_reply_counts_cache_tokens_as_input() -> None:
    result, _ = await run(make(AnthropicProvider, Wire(js(ANTHROPIC_REPLY))))
    assert result.text == "Four."
    assert result.model == "claude-x-20250101"
    assert result.finish_reason == "stop"  # end_turn, in the router's words
    assert result.response_id == "msg_01"
    assert result.usage == Usage(
        input_tokens=130, output_tokens=3, cached_tokens=100, cache_write_tokens=20
    )


async def test_anthropic_stream_reply() -> None:
    result, deltas = await run(make(AnthropicProvider, Wire(sse(anthropic_stream()))), stream=True)
    assert deltas == ["Fo", "ur."]
    assert result.text == "Four."
    assert result.model == "claude-x-20250101"
    assert result.response_id == "msg_02"
    assert result.finish_reason == "stop"  # end_turn, in the router's words
    # message_delta's output count is cumulative: it replaces message_start's, it is not added.
    assert result.usage == Usage(
        input_tokens=130, output_tokens=7, cached_tokens=100, cache_write_tokens=20
    )


async def test_anthropic_missing_usage_is_none() -> None:
    reply = {k: v for k, v in ANTHROPIC_REPLY.items() if k != "usage"}
    result, _ = await run(make(AnthropicProvider, Wire(js(reply))))
    assert result.usage is None
    result, _ = await run(make(AnthropicProvider, Wire(sse(anthropic_stream(usage=False)))), stream=True)
    assert result.usage is None


async def test_anthropic_stream_without_message_stop_is_malformed() -> None:
    err = await fails(
        make(AnthropicProvider, Wire(sse(anthropic_stream(stop=False)))), MalformedResponse, stream=True
    )
    assert "message_stop" in str(err)


@pytest.mark.parametrize(
    ("etype", "cls", "status"),
    [
        ("overloaded_error", Overloaded, 529),
        ("rate_limit_error", RateLimited, 429),
        ("api_error", ServerError, 500),
    ],
)
async def test_anthropic_error_event_in_stream(etype: str, cls: type[ProviderError], status: int) -> None:
    events = anthropic_stream()[:4] + [
        ("error", {"type": "error", "error": {"type": etype, "message": "Overloaded"}})
    ]
    err = await fails(make(AnthropicProvider, Wire(sse(events))), cls, stream=True)
    assert err.status == status


async def test_anthropic_refusal_is_content_filtered() -> None:
    reply = {**ANTHROPIC_REPLY, "stop_reason": "refusal"}
    await fails(make(AnthropicProvider, Wire(js(reply))), ContentFiltered)
    events = anthropic_stream()
    events[6] = (
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {"output_tokens": 2}},
    )
    await fails(make(AnthropicProvider, Wire(sse(events))), ContentFiltered, stream=True)
