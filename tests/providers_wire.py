"""What the provider wire tests share: a scripted ``httpx.MockTransport`` (no sockets), the request
every test sends, and each provider's replies written from its documentation.

The tests are ``test_providers_wire_<dialect>.py`` (one provider's request and reply formats each)
and ``test_providers_wire_rules.py`` (what holds on every adapter: error mapping, transport
failures, malformed bodies, key redaction, probes).
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
    Completion,
    CompletionRequest,
    Message,
    ProviderError,
)

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


# -- Anthropic: replies as its documentation shows them ----------------------------------------


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


def anthropic_error(etype: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_1"}


# -- OpenAI: replies as its documentation shows them -------------------------------------------


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


def openai_error(
    message: str, etype: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


# -- Gemini: replies as its documentation shows them -------------------------------------------


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


def gemini_error(code: int, status: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


# -- Ollama: replies as its documentation shows them -------------------------------------------


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
