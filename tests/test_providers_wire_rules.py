"""What holds on the wire for every provider adapter, with ``httpx.MockTransport`` (no sockets):
HTTP errors mapped to the error vocabulary, transport failures, malformed bodies and cut streams,
the key never shown, and probes that never raise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from llm_router.providers.anthropic import AnthropicProvider
from llm_router.providers.gemini import GeminiProvider
from llm_router.providers.ollama import OllamaProvider
from llm_router.providers.openai import OpenAIProvider
from llm_router.types import (
    AuthError,
    ConnectionFailed,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    MalformedResponse,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)

from .providers_wire import (
    ALL,
    KEY,
    MODELS,
    REQ,
    CutStream,
    Wire,
    anthropic_error,
    anthropic_stream,
    fails,
    gemini_error,
    gemini_stream,
    js,
    make,
    ndjson,
    ollama_stream,
    openai_error,
    openai_stream,
    run,
    sse,
)

pytestmark = pytest.mark.anyio


# -- Error mapping, all providers --------------------------------------------------------------


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


# -- Transport failures, malformed bodies, cut streams, key redaction: all providers -----------


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


# -- probe() -----------------------------------------------------------------------------------


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
