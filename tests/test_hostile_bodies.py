"""Whatever an upstream sends fails one attempt, never the process: a table of hostile bodies and
a property test that mutates real answers at random, both through the four adapters, JSON and
streaming, asserting that only ``ProviderError`` subclasses come out and that any answer that
does come out is valid text with sane usage. No sockets (``httpx.MockTransport``).
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_router import timings
from llm_router.providers import base, wire
from llm_router.providers.anthropic import AnthropicProvider
from llm_router.providers.gemini import GeminiProvider
from llm_router.providers.ollama import OllamaProvider
from llm_router.providers.openai import OpenAIProvider
from llm_router.types import (
    Completion,
    ContextTooLong,
    MalformedResponse,
    ProviderError,
    ToolCallOnly,
    Usage,
)

from .providers_wire import (
    ALL,
    ANTHROPIC_REPLY,
    BASES,
    GEMINI_REPLY,
    KEY,
    MODELS,
    OLLAMA_REPLY,
    OPENAI_REPLY,
    REQ,
    Wire,
    anthropic_stream,
    gemini_stream,
    js,
    make,
    ollama_stream,
    openai_stream,
    sse,
)

pytestmark = pytest.mark.anyio

JSON_REPLIES: dict[type, Any] = {
    AnthropicProvider: ANTHROPIC_REPLY,
    OpenAIProvider: OPENAI_REPLY,
    GeminiProvider: GEMINI_REPLY,
    OllamaProvider: OLLAMA_REPLY,
}
STREAMS: dict[type, Any] = {
    AnthropicProvider: anthropic_stream,
    OpenAIProvider: openai_stream,
    GeminiProvider: gemini_stream,
    OllamaProvider: ollama_stream,
}
STREAM_TYPE = {
    AnthropicProvider: "text/event-stream",
    OpenAIProvider: "text/event-stream",
    GeminiProvider: "text/event-stream",
    OllamaProvider: "application/x-ndjson",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def outcome(cls: type, response: httpx.Response | Exception, *, stream: bool) -> Completion | ProviderError:
    """What the adapter made of ``response``; anything that is not a ``ProviderError`` propagates."""
    provider = make(cls, Wire(response))

    async def on_text(text: str) -> None:
        text.encode("utf-8")

    try:
        return await provider.complete(MODELS[cls], REQ, on_text=on_text if stream else None)
    except ProviderError as err:
        return err
    finally:
        await provider.aclose()


def check_sane(result: Completion | ProviderError) -> None:
    """An answer is valid text with sane usage; an error's text is valid too."""
    if isinstance(result, ProviderError):
        str(result).encode("utf-8")
        (result.body or "").encode("utf-8")
        return
    assert isinstance(result, Completion)
    result.text.encode("utf-8")
    assert isinstance(result.model, str)
    result.model.encode("utf-8")
    assert result.finish_reason is None or isinstance(result.finish_reason, str)
    assert result.response_id is None or isinstance(result.response_id, str)
    if result.usage is not None:
        assert isinstance(result.usage, Usage)
        for n in (result.usage.input_tokens, result.usage.output_tokens, result.usage.cached_tokens):
            assert type(n) is int and 0 <= n <= 2 * wire.MAX_TOKEN_COUNT


def raw(body: bytes, ctype: str | None = "application/json") -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": ctype} if ctype else {})


HOSTILE: dict[str, httpx.Response] = {
    "empty": raw(b""),
    "null": raw(b"null"),
    "a list": raw(b"[1, 2, 3]"),
    "a number": raw(b"42"),
    "a string": raw(b'"hello"'),
    "nested too deep": raw(b"[" * 200_000 + b"]" * 200_000),
    "objects nested too deep": raw(b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    "an HTML page": raw(b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "an HTML page without a content type": raw(b"<html><body><h1>502 Bad Gateway</h1></body></html>", None),
    "binary garbage": raw(bytes(range(256)) * 4, "application/octet-stream"),
    "invalid utf-8 in json": raw(b'{"error": "\xff\xfe"}'),
    "an error object in a 200": raw(b'{"error": {"message": "quota", "code": "not a number"}}'),
    "an error string in a 200": raw(b'{"error": "something broke"}'),
    "infinity everywhere": raw(b'{"choices": Infinity, "content": NaN, "candidates": -Infinity, "message": 1e999}'),
    "a body only of whitespace": raw(b" \n\t\n "),
    "xml": raw(b"<?xml version='1.0'?><error>nope</error>", "application/xml"),
}


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_body_fails_one_attempt_never_the_process(cls: type, stream: bool, name: str) -> None:
    result = await outcome(cls, HOSTILE[name], stream=stream)
    assert isinstance(result, ProviderError), result
    check_sane(result)


def bad_usage(cls: type, value: Any) -> dict[str, Any]:
    """The JSON answer with every usage count replaced by ``value``."""
    reply = copy.deepcopy(JSON_REPLIES[cls])
    counts = reply.get("usage") or reply.get("usageMetadata") or reply
    for key in list(counts):
        if "token" in key.lower() or key.endswith("_count"):
            counts[key] = value
    return reply


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("value", [-5, 10**30, float("inf"), "12 tokens", [3], {"n": 1}, True and 2**63])
async def test_usage_that_cannot_be_a_bill_is_malformed_not_billed(cls: type, value: Any) -> None:
    body = json.dumps(bad_usage(cls, value)).encode()
    result = await outcome(cls, raw(body), stream=False)
    assert isinstance(result, MalformedResponse), result


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_body_over_the_size_limit_is_malformed(
    cls: type, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "MAX_BODY_BYTES", 4096)
    monkeypatch.setattr(wire, "MAX_STREAM_BYTES", 4096)
    if stream:
        good = STREAMS[cls]()
        many = (good * 200) if isinstance(good, list) else good
        response = (
            httpx.Response(200, content=b"".join(json.dumps(x).encode() + b"\n" for x in many),
                           headers={"content-type": STREAM_TYPE[cls]})
            if cls is OllamaProvider else sse(many)
        )
    else:
        reply = copy.deepcopy(JSON_REPLIES[cls])
        reply["padding"] = "x" * 10_000
        response = js(reply)
    result = await outcome(cls, response, stream=stream)
    assert isinstance(result, MalformedResponse) and "limit" in str(result), result


@pytest.mark.parametrize("cls", ALL)
async def test_a_body_over_the_size_limit_without_a_length_is_cut_off_while_read(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "MAX_BODY_BYTES", 4096)
    read: list[int] = []

    class Chunked(httpx.AsyncByteStream):  # no Content-Length: the limit must hold while reading
        async def __aiter__(self) -> Any:
            for i in range(1000):
                read.append(i)
                yield b"[" if i == 0 else b"1," * 512

    response = httpx.Response(200, headers={"content-type": "application/json"}, stream=Chunked())
    result = await outcome(cls, response, stream=False)
    assert isinstance(result, MalformedResponse) and "limit" in str(result), result
    assert len(read) < 10  # stopped at the limit, not after the whole body


@pytest.mark.parametrize("cls", ALL)
async def test_one_endless_stream_line_is_malformed_before_it_fills_memory(
    cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "MAX_LINE_BYTES", 1024)

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield b"data: " if cls is not OllamaProvider else b""
            for _ in range(10_000):  # 10 MB without a newline, if nothing stopped it
                yield b"a" * 1024

    response = httpx.Response(200, headers={"content-type": STREAM_TYPE[cls]}, stream=Endless())
    result = await outcome(cls, response, stream=True)
    assert isinstance(result, MalformedResponse) and "line" in str(result), result


@pytest.mark.parametrize("cls", [c for c in ALL if c is not OllamaProvider])
async def test_an_html_page_without_a_content_type_is_named_not_a_cut_stream(cls: type) -> None:
    page = b"<html><head><title>Proxy error</title></head><body>upstream down</body></html>\n"
    result = await outcome(cls, raw(page, None), stream=True)
    assert isinstance(result, MalformedResponse)
    assert "not an event stream" in str(result) and "Proxy error" in str(result)
    assert "ended before" not in str(result)


TOOL_JSON: dict[type, Any] = {
    AnthropicProvider: {
        **ANTHROPIC_REPLY, "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}],
    },
    OpenAIProvider: {
        **OPENAI_REPLY,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}}],
    },
    GeminiProvider: {
        **GEMINI_REPLY,
        "candidates": [{"index": 0, "finishReason": "STOP",
                        "content": {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}]}}],
    },
    OllamaProvider: {
        **OLLAMA_REPLY,
        "message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "lookup", "arguments": {}}}]},
    },
}


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream-asked"])
async def test_a_tool_call_only_json_answer_is_tool_call_only_even_to_a_stream_request(cls: type, stream: bool) -> None:
    result = await outcome(cls, js(TOOL_JSON[cls]), stream=stream)
    assert isinstance(result, ToolCallOnly), result
    assert "lookup" in str(result) and result.usage is not None


async def test_llama_cpp_states_n_ctx_even_when_its_message_says_no_number() -> None:
    body = {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                      "type": "exceed_context_size_error", "n_prompt_tokens": 9000, "n_ctx": 8192}}
    result = await outcome(OpenAIProvider, js(body, 400), stream=False)
    assert isinstance(result, ContextTooLong) and result.context_window == 8192


@pytest.mark.parametrize(
    ("cls", "message", "window"),
    [
        (AnthropicProvider, "input length and `max_tokens` exceed context limit: 178959 + 64000 > 200000, "
                            "decrease input length or `max_tokens` and try again", 200000),
        (OpenAIProvider, "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
                         "(4000 in the messages, 1000 in the completion).", 4096),  # vLLM
        (OpenAIProvider, "The input (140000 tokens) is longer than the model's context length (131072 tokens).", 131072),
    ],
)
async def test_other_wordings_of_a_context_error_keep_their_window(cls: type, message: str, window: int) -> None:
    body = ({"type": "error", "error": {"type": "invalid_request_error", "message": message}}
            if cls is AnthropicProvider else {"error": {"message": message, "type": "invalid_request_error"}})
    result = await outcome(cls, js(body, 400), stream=False)
    assert isinstance(result, ContextTooLong) and result.context_window == window


async def test_vllm_states_its_window_in_its_model_list_when_there_is_no_props() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/props":
            return httpx.Response(404, text="Not Found")
        if request.url.path == "/v1/models":
            return js({"object": "list", "data": [{"id": "qwen", "object": "model", "max_model_len": 32768}]})
        return httpx.Response(500)

    provider = OpenAIProvider(base.HttpSettings(name="vllm", base_url="http://gpu-box:8000/v1", api_key=None,
                                                transport=httpx.MockTransport(handler)))
    try:
        assert await provider.context_window("qwen") == 32768
        assert await provider.context_window("other") is None
    finally:
        await provider.aclose()


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("offset", [185, 190, 195, 199])
async def test_a_key_echoed_across_the_quoting_cut_never_shows_half_of_itself(
    cls: type, stream: bool, offset: int
) -> None:
    """Bodies are quoted by their first 200 characters; a key that straddled the cut was redacted
    only if it fitted whole, so its first half went out in the error."""
    body = ("<" + "x" * (offset - 1) + KEY + " echoed back>").encode()
    for response in (raw(body, "text/plain"), raw(body, "text/html"), raw(b"data: " + body + b"\n\n", None)):
        result = await outcome(cls, response, stream=stream)
        assert isinstance(result, ProviderError)
        assert KEY[:8] not in str(result) and KEY[:8] not in (result.body or ""), str(result)


@pytest.mark.parametrize("header", ["inf", "nan", "-1", "1e999", "Wed, 99 Foo 2024 99:99:99 GMT", "99999999999"])
async def test_a_retry_after_header_of_any_kind_never_raises(header: str) -> None:
    response = js({"error": {"message": "slow down"}}, 429, headers={"retry-after": header})
    result = await outcome(OpenAIProvider, response, stream=False)
    assert isinstance(result, ProviderError)
    assert result.retry_after is None or 0 <= result.retry_after <= timings.RETRY_AFTER_CAP_S


# -- a property: real answers with any one part replaced by anything ----------------------------

_TEXTS = st.text(alphabet=st.sampled_from(["a", " ", "\U0001f600", "\ud83d", "\ude00", "\x00", "é"]), max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True) | _TEXTS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXTS, children, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutated(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    value = copy.deepcopy(value)
    holder = value
    for step in path[:-1]:
        holder = holder[step]
    if delete and isinstance(holder, dict):
        del holder[path[-1]]
    else:
        holder[path[-1]] = new
    return value


def _response(cls: type, answer: Any, *, stream: bool) -> httpx.Response:
    if not stream:
        return httpx.Response(200, content=json.dumps(answer).encode(), headers={"content-type": "application/json"})
    if cls is OllamaProvider:
        body = b"".join(json.dumps(line).encode() + b"\n" for line in answer)
        return httpx.Response(200, content=body, headers={"content-type": "application/x-ndjson"})
    out = b""
    for event, data in answer:
        if event:
            out += f"event: {event}\n".encode()
        out += b"data: " + (data.encode() if isinstance(data, str) else json.dumps(data).encode()) + b"\n\n"
    return httpx.Response(200, content=out, headers={"content-type": "text/event-stream"})


@pytest.mark.slow
@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(data=st.data())
def test_any_part_of_a_real_answer_replaced_by_anything_fails_at_most_one_attempt(
    cls: type, stream: bool, data: st.DataObject
) -> None:
    template = STREAMS[cls]() if stream else JSON_REPLIES[cls]
    path = data.draw(st.sampled_from(_paths(template)), label="path")
    new = data.draw(_JSON, label="value")
    delete = data.draw(st.booleans(), label="delete")
    answer = _mutated(template, path, new, delete)
    if stream and not isinstance(answer, list):
        answer = [answer] if cls is OllamaProvider else [(None, answer)]
    if stream and cls is not OllamaProvider:
        answer = [a if isinstance(a, tuple) and len(a) == 2 and (a[0] is None or isinstance(a[0], str)) else (None, a)
                  for a in answer]
    try:
        response = _response(cls, answer, stream=stream)
    except (TypeError, ValueError):
        return  # not expressible on the wire
    result = asyncio.run(outcome(cls, response, stream=stream))
    check_sane(result)


assert set(BASES) == set(JSON_REPLIES)
