"""Wire-level tests of the four provider adapters, with ``httpx.MockTransport`` (no sockets).

Request bodies are snapshotted whole; replies are written from each provider's documentation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import pytest

from llm_router.providers.anthropic import AnthropicProvider
from llm_router.providers.base import HttpSettings
from llm_router.providers.gemini import GeminiProvider
from llm_router.providers.ollama import OllamaProvider
from llm_router.providers.openai import OpenAIProvider
from llm_router.types import (
    AuthError,
    Completion,
    CompletionRequest,
    ConnectionFailed,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    MalformedResponse,
    Message,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
    Usage,
)

pytestmark = pytest.mark.anyio

KEY = "sk-FAKE-KEY-7a1c9e0b55d3"
REQ = CompletionRequest(
    messages=(
        Message(role="user", content="Hi"),
        Message(role="assistant", content="Hello."),
        Message(role="user", content="What is 2+2?"),
    ),
    system="Be terse.",
    max_tokens=64,
    temperature=0.2,
)
BARE = CompletionRequest(messages=(Message(role="user", content="Hi"),), max_tokens=5)

Handler = Callable[[httpx.Request], httpx.Response]
BASES = {
    AnthropicProvider: "https://api.anthropic.com",
    OpenAIProvider: "https://api.openai.com/v1",
    GeminiProvider: "https://generativelanguage.googleapis.com",
    OllamaProvider: "http://127.0.0.1:11434",
}
MODELS = {
    AnthropicProvider: "claude-x",
    OpenAIProvider: "gpt-x",
    GeminiProvider: "gemini-x",
    OllamaProvider: "llama3",
}
ALL = list(BASES)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Wire:
    """A scripted fake network: records requests, answers with ``replies`` in order."""

    def __init__(self, *replies: httpx.Response | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    @property
    def body(self) -> Any:
        return json.loads(self.requests[-1].content)


def make(cls: type, wire: Wire, *, key: str | None = KEY, base: str | None = None) -> Any:
    settings = HttpSettings(
        name=cls.kind, base_url=base or BASES[cls], api_key=key, transport=httpx.MockTransport(wire)
    )
    return cls(settings)


def js(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def sse(events: Iterable[tuple[str | None, Any]]) -> httpx.Response:
    out = b""
    for event, data in events:
        if event:
            out += f"event: {event}\n".encode()
        out += b"data: " + (data.encode() if isinstance(data, str) else json.dumps(data).encode()) + b"\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=out)


def ndjson(lines: Iterable[Any]) -> httpx.Response:
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, content=content)


class CutStream(httpx.AsyncByteStream):
    """Sends some bytes, then the connection drops before the body is complete."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


async def run(
    provider: Any, request: CompletionRequest = REQ, *, stream: bool = False, model: str | None = None
) -> tuple[Completion, list[str]]:
    """Complete once; with ``stream`` collect the deltas handed to ``on_text``."""
    deltas: list[str] = []

    async def on_text(text: str) -> None:
        deltas.append(text)

    try:
        result = await provider.complete(
            model or MODELS[type(provider)], request, on_text=on_text if stream else None
        )
    finally:
        await provider.aclose()
    return result, deltas


async def fails(provider: Any, cls: type[ProviderError], *, stream: bool = False) -> ProviderError:
    with pytest.raises(cls) as info:
        await run(provider, stream=stream)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert err.provider == provider.name
    return err


# ---------------------------------------------------------------------------------------------
# Anthropic
# ---------------------------------------------------------------------------------------------

ANTHROPIC_REPLY = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-x-20250101",
    "content": [{"type": "text", "text": "Four"}, {"type": "text", "text": "."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
        "output_tokens": 3,
    },
}


def anthropic_stream(*, stop: bool = True, usage: bool = True) -> list[tuple[str, Any]]:
    start_usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
        "output_tokens": 1,
    }
    events: list[tuple[str, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_02",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-x-20250101",
                    "stop_reason": None,
                    "stop_sequence": None,
                    **({"usage": start_usage} if usage else {}),
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Fo"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ur."}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                **({"usage": {"output_tokens": 7}} if usage else {}),
            },
        ),
    ]
    if stop:
        events.append(("message_stop", {"type": "message_stop"}))
    return events


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
    assert result.finish_reason == "end_turn"
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
    assert result.finish_reason == "end_turn"
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


def anthropic_error(etype: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_1"}


# ---------------------------------------------------------------------------------------------
# OpenAI
# ---------------------------------------------------------------------------------------------

OPENAI_REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-x-2025-01-01",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Four.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


def openai_chunk(choices: list[Any], usage: Any = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-x-2025-01-01",
        "choices": choices,
        "usage": usage,
    }


def openai_stream(*, done: bool = True, usage: bool = True, finish: str = "stop") -> list[tuple[None, Any]]:
    events: list[tuple[None, Any]] = [
        (
            None,
            openai_chunk(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            ),
        ),
        (None, openai_chunk([{"index": 0, "delta": {"content": "Fo"}, "finish_reason": None}])),
        (None, openai_chunk([{"index": 0, "delta": {"content": "ur."}, "finish_reason": None}])),
        (None, openai_chunk([{"index": 0, "delta": {}, "finish_reason": finish}])),
    ]
    if usage:
        events.append(
            (
                None,
                openai_chunk(
                    [],
                    {
                        "prompt_tokens": 50,
                        "completion_tokens": 4,
                        "total_tokens": 54,
                        "prompt_tokens_details": {"cached_tokens": 32},
                    },
                ),
            )
        )
    if done:
        events.append((None, "[DONE]"))
    return events


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


def openai_error(
    message: str, etype: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


# ---------------------------------------------------------------------------------------------
# Gemini
# ---------------------------------------------------------------------------------------------

GEMINI_REPLY = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Fo"}, {"text": "ur."}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 1200,
        "candidatesTokenCount": 5,
        "thoughtsTokenCount": 40,
        "cachedContentTokenCount": 1024,
        "totalTokenCount": 1245,
    },
    "modelVersion": "gemini-x-001",
    "responseId": "resp-1",
}


def gemini_stream(*, final: bool = True) -> list[tuple[None, Any]]:
    def chunk(text: str, finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        body: dict[str, Any] = {
            "candidates": [candidate],
            "modelVersion": "gemini-x-001",
            "responseId": "resp-2",
        }
        if usage:
            body["usageMetadata"] = usage
        return body

    events = [(None, chunk("Fo", usage={"promptTokenCount": 20, "totalTokenCount": 20}))]
    if final:
        events.append(
            (
                None,
                chunk(
                    "ur.", "STOP", {"promptTokenCount": 20, "candidatesTokenCount": 3, "totalTokenCount": 23}
                ),
            )
        )
    return events


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
        "STOP",
        "resp-1",
    )
    assert result.usage == Usage(input_tokens=1200, output_tokens=45, cached_tokens=1024)


async def test_gemini_stream_reply_takes_last_usage() -> None:
    result, deltas = await run(make(GeminiProvider, Wire(sse(gemini_stream()))), stream=True)
    assert deltas == ["Fo", "ur."]
    assert (result.text, result.model, result.finish_reason, result.response_id) == (
        "Four.",
        "gemini-x-001",
        "STOP",
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


def gemini_error(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


# ---------------------------------------------------------------------------------------------
# Ollama
# ---------------------------------------------------------------------------------------------

OLLAMA_REPLY = {
    "model": "llama3:latest",
    "created_at": "2025-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": "Four."},
    "done": True,
    "done_reason": "stop",
    "total_duration": 1,
    "prompt_eval_count": 26,
    "eval_count": 4,
}


def ollama_stream(*, done: bool = True) -> list[Any]:
    lines: list[Any] = [
        {
            "model": "llama3:latest",
            "created_at": "t",
            "message": {"role": "assistant", "content": "Fo"},
            "done": False,
        },
        {
            "model": "llama3:latest",
            "created_at": "t",
            "message": {"role": "assistant", "content": "ur."},
            "done": False,
        },
    ]
    if done:
        lines.append({**OLLAMA_REPLY, "message": {"role": "assistant", "content": ""}})
    return lines


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


# ---------------------------------------------------------------------------------------------
# Error mapping, all providers
# ---------------------------------------------------------------------------------------------

ERROR_CASES: list[tuple[type, int, Any, dict[str, str], type[ProviderError], float | None]] = [
    (AnthropicProvider, 500, anthropic_error("overloaded_error", "Overloaded"), {}, Overloaded, None),
    (AnthropicProvider, 529, anthropic_error("overloaded_error", "Overloaded"), {}, Overloaded, None),
    (
        AnthropicProvider,
        429,
        anthropic_error("rate_limit_error", "slow down"),
        {"retry-after": "7"},
        RateLimited,
        7.0,
    ),
    (
        AnthropicProvider,
        401,
        anthropic_error("authentication_error", "invalid x-api-key"),
        {},
        AuthError,
        None,
    ),
    (AnthropicProvider, 402, anthropic_error("billing_error", "credit balance too low"), {}, AuthError, None),
    (
        AnthropicProvider,
        400,
        anthropic_error("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
        {},
        ContextTooLong,
        None,
    ),
    (
        AnthropicProvider,
        413,
        anthropic_error("request_too_large", "Request exceeds the maximum size"),
        {},
        ContextTooLong,
        None,
    ),
    (
        AnthropicProvider,
        400,
        anthropic_error("invalid_request_error", "max_tokens: Field required"),
        {},
        InvalidRequest,
        None,
    ),
    (AnthropicProvider, 404, anthropic_error("not_found_error", "model: claude-x"), {}, InvalidRequest, None),
    (AnthropicProvider, 500, anthropic_error("api_error", "Internal server error"), {}, ServerError, None),
    (
        OpenAIProvider,
        400,
        openai_error("This model's maximum context length is 128000 tokens.", code="context_length_exceeded"),
        {},
        ContextTooLong,
        None,
    ),
    (
        OpenAIProvider,
        400,
        openai_error("Your request was rejected by the safety system.", code="content_policy_violation"),
        {},
        ContentFiltered,
        None,
    ),
    (
        OpenAIProvider,
        429,
        openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
        {"retry-after-ms": "1500"},
        RateLimited,
        1.5,
    ),
    (
        OpenAIProvider,
        429,
        openai_error("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
        {},
        AuthError,
        None,
    ),
    (
        OpenAIProvider,
        401,
        openai_error("Incorrect API key provided", code="invalid_api_key"),
        {},
        AuthError,
        None,
    ),
    (
        OpenAIProvider,
        404,
        openai_error("The model `gpt-x` does not exist", code="model_not_found"),
        {},
        InvalidRequest,
        None,
    ),
    (
        OpenAIProvider,
        503,
        openai_error("The engine is currently overloaded", "server_error"),
        {},
        Overloaded,
        None,
    ),
    (OpenAIProvider, 500, openai_error("The server had an error", "server_error"), {}, ServerError, None),
    (
        GeminiProvider,
        400,
        gemini_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ],
        ),
        {},
        AuthError,
        None,
    ),
    (
        GeminiProvider,
        403,
        gemini_error(403, "PERMISSION_DENIED", "The caller does not have permission"),
        {},
        AuthError,
        None,
    ),
    (
        GeminiProvider,
        429,
        gemini_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded",
            [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        ),
        {},
        RateLimited,
        37.0,
    ),
    (
        GeminiProvider,
        429,
        gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"),
        {"retry-after": "3"},
        RateLimited,
        3.0,
    ),
    (GeminiProvider, 503, gemini_error(503, "UNAVAILABLE", "The model is overloaded."), {}, Overloaded, None),
    (
        GeminiProvider,
        400,
        gemini_error(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        ),
        {},
        ContextTooLong,
        None,
    ),
    (
        GeminiProvider,
        404,
        gemini_error(404, "NOT_FOUND", "models/gemini-x is not found"),
        {},
        InvalidRequest,
        None,
    ),
    (
        GeminiProvider,
        500,
        gemini_error(500, "INTERNAL", "An internal error has occurred."),
        {},
        ServerError,
        None,
    ),
    (
        OllamaProvider,
        404,
        {"error": "model 'llama3' not found, try pulling it first"},
        {},
        InvalidRequest,
        None,
    ),
    (OllamaProvider, 400, {"error": "invalid request"}, {}, InvalidRequest, None),
    (OllamaProvider, 429, {"error": "too many requests"}, {"retry-after": "2"}, RateLimited, 2.0),
    (OllamaProvider, 500, {"error": "model requires more system memory"}, {}, ServerError, None),
    (OllamaProvider, 502, {"error": "bad gateway"}, {}, ServerError, None),
]


@pytest.mark.parametrize(
    ("cls", "status", "body", "headers", "expected", "retry_after"),
    ERROR_CASES,
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_http_errors_map_to_classes(
    cls: type,
    status: int,
    body: Any,
    headers: dict[str, str],
    expected: type[ProviderError],
    retry_after: float | None,
    stream: bool,
) -> None:
    err = await fails(make(cls, Wire(js(body, status, headers))), expected, stream=stream)
    assert err.status == status
    assert err.retry_after == retry_after
    assert err.body and str(status) in str(err)
    message = body["error"] if isinstance(body["error"], str) else body["error"]["message"]
    assert message[:20] in str(err)


# ---------------------------------------------------------------------------------------------
# Transport failures, malformed bodies, cut streams, key redaction: all providers
# ---------------------------------------------------------------------------------------------

GOOD_STREAMS: dict[type, Callable[[], httpx.Response]] = {
    AnthropicProvider: lambda: sse(anthropic_stream()),
    OpenAIProvider: lambda: sse(openai_stream()),
    GeminiProvider: lambda: sse(gemini_stream()),
    OllamaProvider: lambda: ndjson(ollama_stream()),
}


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), ConnectionFailed),
        (httpx.ConnectTimeout("timed out"), Timeout),
        (httpx.ReadTimeout("timed out"), Timeout),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), MalformedResponse),
    ],
    ids=["refused", "connect-timeout", "read-timeout", "closed"],
)
async def test_transport_failures(
    cls: type, stream: bool, exc: Exception, expected: type[ProviderError]
) -> None:
    await fails(make(cls, Wire(exc)), expected, stream=stream)


@pytest.mark.parametrize("cls", ALL)
async def test_stream_cut_mid_body_is_malformed(cls: type) -> None:
    good = GOOD_STREAMS[cls]()
    whole = good.content
    cut = httpx.Response(
        200, headers={"content-type": good.headers["content-type"]}, stream=CutStream(whole[: len(whole) // 2])
    )
    err = await fails(make(cls, Wire(cut)), MalformedResponse, stream=True)
    assert "mid-response" in str(err)


@pytest.mark.parametrize("cls", ALL)
async def test_stream_ending_early_without_error_is_malformed(cls: type) -> None:
    whole = GOOD_STREAMS[cls]().content
    lines = whole.splitlines(keepends=True)
    truncated = httpx.Response(200, content=b"".join(lines[: len(lines) // 2]).rsplit(b"\n", 1)[0] + b"\n\n")
    err = await fails(make(cls, Wire(truncated)), MalformedResponse, stream=True)
    assert "ended before" in str(err)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_body_that_is_not_json_is_malformed_and_redacted(cls: type, stream: bool) -> None:
    junk = f"<html>proxy error for key {KEY}</html>"
    body = f"data: {junk}\n\n" if stream and cls is not OllamaProvider else junk
    err = await fails(make(cls, Wire(httpx.Response(200, text=body))), MalformedResponse, stream=stream)
    assert "not JSON" in str(err)
    assert "'<html>proxy error for key [redacted]</html>'" in str(err)  # quoted as text, not bytes
    assert KEY not in str(err) and KEY not in (err.body or "")


MISSING_FIELDS: dict[type, Any] = {
    AnthropicProvider: {"id": "msg_1", "type": "message"},
    OpenAIProvider: {"id": "chatcmpl-1", "object": "chat.completion", "choices": []},
    GeminiProvider: {"candidates": "not a list"},
    OllamaProvider: {"model": "llama3", "done": True},
}


@pytest.mark.parametrize("cls", ALL)
async def test_json_without_required_fields_is_malformed(cls: type) -> None:
    err = await fails(make(cls, Wire(js(MISSING_FIELDS[cls]))), MalformedResponse)
    assert cls.kind in str(err)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("status", [400, 401, 429, 500, 529])
async def test_key_never_appears_in_errors(cls: type, status: int) -> None:
    """Some servers echo what they were sent; the key must still never reach an error."""
    body = {
        "error": {"message": f"bad key {KEY}", "type": "authentication_error", "code": status, "status": "X"}
    }
    if cls is OllamaProvider:
        body = {"error": f"bad key {KEY}"}
    for stream in (False, True):
        with pytest.raises(ProviderError) as info:
            await run(make(cls, Wire(js(body, status))), stream=stream)
        err = info.value
        assert KEY not in str(err)
        assert KEY not in (err.body or "")
        assert KEY not in repr(err.to_dict())
        assert "[redacted]" in str(err) + (err.body or "")


# ---------------------------------------------------------------------------------------------
# probe()
# ---------------------------------------------------------------------------------------------

MODEL_LISTS: dict[type, tuple[str, Any]] = {
    AnthropicProvider: (
        "/v1/models",
        {
            "data": [{"type": "model", "id": "claude-x"}, {"type": "model", "id": "claude-y"}],
            "has_more": False,
        },
    ),
    OpenAIProvider: (
        "/v1/models",
        {
            "object": "list",
            "data": [{"id": "claude-x", "object": "model"}, {"id": "claude-y", "object": "model"}],
        },
    ),
    GeminiProvider: (
        "/v1beta/models",
        {"models": [{"name": "models/claude-x"}, {"name": "models/claude-y"}]},
    ),
    OllamaProvider: (
        "/api/tags",
        {"models": [{"name": "claude-x", "model": "claude-x"}, {"name": "claude-y", "model": "claude-y"}]},
    ),
}


@pytest.mark.parametrize("cls", ALL)
async def test_probe_lists_models(cls: type) -> None:
    path, body = MODEL_LISTS[cls]
    wire = Wire(js(body))
    provider = make(cls, wire)
    result = await provider.probe()
    await provider.aclose()
    assert result.ok, result.detail
    assert result.models == ("claude-x", "claude-y")
    assert result.latency_ms >= 0
    assert wire.requests[0].method == "GET"
    assert wire.requests[0].url.path == path


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(
    "reply",
    [
        js({"error": {"message": f"invalid key {KEY}"}}, 401),
        httpx.ConnectError("refused"),
        httpx.Response(200, text=f"not json {KEY}"),
        js({"unexpected": True}),
    ],
    ids=["401", "refused", "not-json", "wrong-shape"],
)
async def test_probe_never_raises(cls: type, reply: httpx.Response | Exception) -> None:
    provider = make(cls, Wire(reply))
    result = await provider.probe()
    await provider.aclose()
    assert not result.ok
    assert result.detail and KEY not in result.detail
    assert result.models == ()


@pytest.mark.parametrize("cls", ALL)
async def test_one_pooled_client_closed_by_aclose(cls: type) -> None:
    wire = Wire(GOOD_STREAMS[cls]())
    provider = make(cls, wire)
    client = provider._client
    assert provider.name == cls.kind and provider.kind == cls.kind
    await provider.complete(MODELS[cls], REQ, on_text=_ignore)
    await provider.probe()
    assert provider._client is client
    await provider.aclose()
    assert client.is_closed


async def _ignore(_text: str) -> None:
    return None
