"""Upstreams that send what no documentation promises, through the four real adapters against the
loopback fakes: broken Unicode, tool calls, JSON where a stream was asked, HTML, context errors
that state a window, and the side questions asked of local servers (llama.cpp, Ollama).

Each test is named after what broke: whatever an upstream sends fails one attempt, never the
process, and text reaches MCP valid.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from llm_router import timings
from llm_router.providers import base
from llm_router.providers.anthropic import AnthropicProvider
from llm_router.providers.base import HttpSettings
from llm_router.providers.gemini import GeminiProvider
from llm_router.providers.ollama import OllamaProvider
from llm_router.providers.openai import OpenAIProvider
from llm_router.types import (
    CompletionRequest,
    ContextTooLong,
    MalformedResponse,
    Message,
    ProviderError,
    ServerError,
    ToolCallOnly,
    Usage,
)

from .fakes import FakeProvider
from .fakes import Usage as WireUsage
from .fakes.side_endpoints import fake_tokens

pytestmark = pytest.mark.anyio

ADAPTERS: dict[str, type[Any]] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "gemini": GeminiProvider,
    "ollama": OllamaProvider,
}
KINDS = list(ADAPTERS)
MODEL = {"anthropic": "claude-test-1", "openai": "gpt-test-1", "gemini": "gemini-test-1", "ollama": "llama-test:latest"}
WIRE = WireUsage(input_tokens=40, output_tokens=9)
# What each adapter makes of WIRE (no cache involved, so all four agree).
USAGE = Usage(input_tokens=40, output_tokens=9)
REQ = CompletionRequest(messages=(Message(role="user", content="Say hello"),), max_tokens=32)
MODES = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=KINDS)
def fake(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    with FakeProvider(request.param, usage=WIRE) as server:
        yield server
    assert not server.server_errors, server.server_errors


@asynccontextmanager
async def adapter(fake: FakeProvider, *, base_url: str | None = None) -> AsyncIterator[Any]:
    settings = HttpSettings(
        name=fake.kind, base_url=base_url or fake.base_url, api_key=fake.api_key, timeout_s=5, connect_timeout_s=5
    )
    provider = ADAPTERS[fake.kind](settings)
    try:
        yield provider
    finally:
        await provider.aclose()


async def call(fake: FakeProvider, *, stream: bool, request: CompletionRequest = REQ) -> tuple[Any, list[str]]:
    deltas: list[str] = []

    async def on_text(text: str) -> None:
        text.encode("utf-8")  # what the stdio writer does with every piece: it must never raise
        deltas.append(text)

    async with adapter(fake) as provider:
        result = await provider.complete(MODEL[fake.kind], request, on_text=on_text if stream else None)
    return result, deltas


async def fails(fake: FakeProvider, *, stream: bool) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await call(fake, stream=stream)
    str(info.value).encode("utf-8")
    return info.value


def valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- point 4: text is valid Unicode before it leaves the adapter --------------------------------


@MODES
async def test_a_lone_surrogate_from_any_provider_never_reaches_the_client(fake: FakeProvider, stream: bool) -> None:
    fake.fault("lone_surrogate")  # "half \ud83d and \ude00 end", the halves at chunk ends when streamed
    result, deltas = await call(fake, stream=stream)
    assert result.text == "half \ufffd and \ufffd end"
    assert valid(result.text) and all(valid(d) for d in deltas)
    assert "".join(deltas) == (result.text if stream else "")
    assert result.usage == USAGE


@MODES
async def test_a_surrogate_pair_split_across_stream_chunks_comes_back_as_the_emoji(
    fake: FakeProvider, stream: bool
) -> None:
    fake.fault("split_surrogate")  # streamed as "smile \ud83d" then "\ude00 done", as JavaScript servers do
    result, deltas = await call(fake, stream=stream)
    assert result.text == "smile \U0001f600 done"
    if stream:
        assert deltas == ["smile ", "\U0001f600 done"]  # the high half waited for its pair


async def test_a_high_surrogate_ending_the_stream_is_replaced_not_lost(fake: FakeProvider) -> None:
    fake.reply(chunks=("end \ud83d",))
    result, deltas = await call(fake, stream=True)
    assert result.text == "end \ufffd" == "".join(deltas)


@MODES
async def test_bytes_that_are_not_utf8_in_an_answer_are_replaced_not_fatal(fake: FakeProvider, stream: bool) -> None:
    # A raw 0xff byte, and a surrogate half encoded as UTF-8 bytes (CESU-8), in the body as sent.
    fake.reply(text="bad @1 and @2 bytes", chunks=("bad @1", " and @2", " bytes"),
               wire_replace={b"@1": b"\xff", b"@2": b"\xed\xa0\xbd"})
    result, deltas = await call(fake, stream=stream)
    assert valid(result.text) and all(valid(d) for d in deltas)
    assert result.text.startswith("bad \ufffd") and result.text.endswith(" bytes")


@MODES
async def test_a_model_name_and_an_error_quoted_from_upstream_are_valid_text(fake: FakeProvider, stream: bool) -> None:
    fake.reply(wire_replace={MODEL[fake.kind].encode(): b"m\\ud83d"})  # the name the answer gives, escaped
    result, _ = await call(fake, stream=stream)
    assert result.model == "m\ufffd"

    fake.fault("status", status=500, message="broke \ud83d here")
    err = await fails(fake, stream=stream)
    assert type(err) is ServerError
    assert "broke \ufffd here" in str(err) and valid(err.body or "")


@MODES
async def test_a_prompt_holding_a_lone_surrogate_is_sent_escaped_not_an_encoder_crash(
    fake: FakeProvider, stream: bool
) -> None:
    request = CompletionRequest(messages=(Message(role="user", content="half \ud83d"),), max_tokens=8)
    result, _ = await call(fake, stream=stream, request=request)
    assert b"\\ud83d" in fake.last_request.body  # escaped in the JSON, as a JavaScript client sends it
    assert valid(result.text)


# -- point 9: a tool call is no answer; JSON to a stream request is understood --------------------


@MODES
async def test_an_answer_that_is_only_a_tool_call_is_a_billed_tool_call_only_failure(
    fake: FakeProvider, stream: bool
) -> None:
    fake.fault("tool_call", tool_name="get_weather")
    err = await fails(fake, stream=stream)
    assert type(err) is ToolCallOnly and err.code == "tool_call_only"
    assert err.usage == USAGE  # the provider billed it
    assert "get_weather" in str(err) and err.fallback_ok and not err.retryable


@pytest.mark.parametrize("fake", ["anthropic", "openai"], indirect=True)
@MODES
async def test_a_preamble_before_a_tool_call_is_still_no_answer(fake: FakeProvider, stream: bool) -> None:
    # "Let me check." then the call, with stop_reason tool_use / finish_reason tool_calls.
    fake.fault("tool_call", text="Let me check.")
    err = await fails(fake, stream=stream)
    assert type(err) is ToolCallOnly and err.usage == USAGE


@MODES
async def test_a_plain_json_answer_to_a_stream_request_is_read_as_the_answer(fake: FakeProvider, stream: bool) -> None:
    fake.fault("json_to_stream", text="whole answer")
    result, deltas = await call(fake, stream=stream)
    assert result.text == "whole answer" and result.usage == USAGE
    assert deltas == (["whole answer"] if stream else [])
    if stream and fake.kind != "gemini":  # Gemini asks for a stream by its path
        assert fake.last_request.json["stream"] is True


async def test_an_openai_stream_that_ends_before_any_event_is_asked_again_whole_within_the_same_call() -> None:
    """A 200 event stream with no event at all was a "cut stream" (malformed, retried in vain):
    asked again without streaming, the same call gets the answer, and progress sees its text."""
    with FakeProvider("openai", usage=WIRE) as fake:
        fake.fault("empty_stream", text="the whole answer")
        fake.reply(text="the whole answer")
        result, deltas = await call(fake, stream=True)
        assert (result.text, result.usage) == ("the whole answer", USAGE)
        assert deltas == ["the whole answer"], "the text reaches progress once, in one piece"
        first, again = [r.json for r in fake.requests]
        assert first["stream"] is True and "stream" not in again and "stream_options" not in again
        assert {k: v for k, v in first.items() if not k.startswith("stream")} == again


async def test_llama_cpp_python_refusing_a_stream_over_its_window_with_an_empty_stream_states_the_window() -> None:
    """What llama-cpp-python sends a stream request over its window: 200, then an event stream that
    ends at once. The request asked again without streaming gets its real 400, window and all."""
    big = CompletionRequest(messages=(Message(role="user", content="word " * 300),), max_tokens=8)
    with FakeProvider("openai", api_key=None, llama_cpp_python=True, n_ctx=256) as fake:
        with pytest.raises(ContextTooLong) as info:
            await call(fake, stream=True, request=big)
        assert info.value.context_window == 256 and info.value.status == 400
        assert [bool(r.json.get("stream")) for r in fake.requests] == [True, False]


LLAMA_PYTHON_TOO_LONG = (
    b'{"error":{"message":"This model\'s maximum context length is 2048 tokens. However, you requested 3051 tokens '
    b'(3031 in the messages, 20 in the completion). Please reduce the length of the messages or completion.",'
    b'"type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}'
)


async def _read_request(stream: Any, buffer: bytearray) -> dict[str, Any] | None:
    """One HTTP/1.1 request's JSON body from ``stream`` (None at the end of the connection)."""
    while b"\r\n\r\n" not in buffer:
        try:
            buffer += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    buffer[:] = rest
    while len(buffer) < length:
        buffer += await stream.receive()
    body = bytes(buffer[:length])
    del buffer[:length]
    return json.loads(body)


async def test_the_question_asked_again_after_an_empty_stream_never_goes_out_on_the_connection_being_closed() -> None:
    """Seen with llama-cpp-python under uvicorn: the empty stream ends with a keep-alive chunk, then
    the server closes that connection (the exception behind it); the request asked again whole on
    the pooled connection was lost as a read error. Here the server takes whatever comes next on
    that connection for lost, every time: only a new connection gets the real 400."""
    lost: list[dict[str, Any]] = []

    async def serve(stream: Any) -> None:
        async with stream:
            buffer = bytearray()
            body = await _read_request(stream, buffer)
            if body is None:
                return
            if body.get("stream"):
                await stream.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                                  b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n")
                again = await _read_request(stream, buffer)  # reused: closed unanswered
                if again is not None:
                    lost.append(again)
                return
            await stream.send(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: "
                              + str(len(LLAMA_PYTHON_TOO_LONG)).encode() + b"\r\n\r\n" + LLAMA_PYTHON_TOO_LONG)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    settings = HttpSettings(name="llama", base_url=f"http://127.0.0.1:{port}/v1", api_key=None, timeout_s=5)
    provider = OpenAIProvider(settings)

    async def on_text(text: str) -> None:
        raise AssertionError(f"no text was sent, yet {text!r} reached progress")

    try:
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            with anyio.fail_after(10), pytest.raises(ContextTooLong) as info:
                await provider.complete("smollm2", REQ, on_text=on_text)
            tg.cancel_scope.cancel()
    finally:
        await provider.aclose()
    assert info.value.context_window == 2048
    assert lost == [], "the question went out on the connection the server was closing"


async def test_an_openai_stream_cut_after_its_first_event_is_still_a_cut_stream_not_asked_again() -> None:
    with FakeProvider("openai", usage=WIRE) as fake:
        fake.fault("cut_stream", after_chunks=0, clean_eof=True)  # the role chunk, then a clean end
        err = await fails(fake, stream=True)
        assert type(err) is MalformedResponse and "ended before [DONE]" in str(err)
        assert len(fake.requests) == 1


@MODES
async def test_an_html_page_with_status_200_is_named_not_a_cut_stream(fake: FakeProvider, stream: bool) -> None:
    fake.fault("html")
    err = await fails(fake, stream=stream)
    assert type(err) is MalformedResponse
    if stream:
        assert "text/html" in str(err) and "ended before" not in str(err)
    else:
        assert "not JSON" in str(err)
    assert "Sign in to the network" in str(err)


# -- point 7 (adapter half): a window stated in a context error is kept ----------------------------


@pytest.mark.parametrize(
    ("kind", "flavor", "window"),
    [
        ("openai", "openai", 8192),  # "maximum context length is 8192 tokens"
        ("openai", "llama.cpp", 2048),  # exceed_context_size_error with n_ctx
        ("openai", "llama.cpp-old", None),  # "the request exceeds the available context size": no number
        ("anthropic", None, 200000),  # "prompt is too long: 200100 tokens > 200000 maximum"
        ("gemini", None, 1048576),  # "... exceeds the maximum number of tokens allowed (1048576)"
        ("ollama", None, None),  # "prompt too long; exceeded max context length by 100 tokens"
    ],
)
@MODES
async def test_a_context_error_keeps_the_window_the_provider_states(
    kind: str, flavor: str | None, window: int | None, stream: bool
) -> None:
    with FakeProvider(kind, usage=WIRE) as fake:
        fake.fault("context", window=window or 4096, flavor=flavor)
        err = await fails(fake, stream=stream)
    assert type(err) is ContextTooLong and err.status == 400
    assert err.context_window == window


# -- the side questions asked of local servers ----------------------------------------------------


async def test_llama_cpp_states_the_window_it_runs_and_is_asked_once_per_model() -> None:
    with FakeProvider("openai", api_key=None, llama_cpp=True, n_ctx=2048) as fake:
        async with adapter(fake) as provider:
            windows = [await provider.context_window("gpt-test-1") for _ in range(3)]
            async with anyio.create_task_group() as tg:  # concurrent askers share one question
                for _ in range(5):
                    tg.start_soon(provider.context_window, "other-model")
        assert windows == [2048, 2048, 2048]
        props = [r for r in fake.requests if r.path == "/props"]
        assert len(props) == 2 and props[0].query == {"model": "gpt-test-1", "autoload": "false"}


async def test_a_server_without_props_is_asked_once_and_remembered_as_unknown() -> None:
    with FakeProvider("openai", api_key=None) as fake:  # an OpenAI-compatible server that is not llama.cpp
        async with adapter(fake) as provider:
            assert await provider.context_window("gpt-test-1") is None
            assert await provider.context_window("gpt-test-1") is None
            assert await provider.count_tokens("gpt-test-1", "hello") is None
            assert await provider.count_tokens("gpt-test-1", "hello again") is None
        paths = [r.path for r in fake.requests]
        assert paths.count("/props") == 1 and paths.count("/tokenize") == 1
        assert paths.count("/extras/tokenize") == 1, "neither tokenizer: both asked once, then neither again"
        assert paths.count("/v1/models") == 1  # vLLM's max_model_len is looked for once too


async def test_a_passing_failure_to_say_the_window_is_asked_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(base, "_clock", lambda: now[0])
    with FakeProvider("openai", api_key=None, llama_cpp=True, n_ctx=3000) as fake:
        fake.fault("status", status=503, endpoint="side")  # llama.cpp answers 503 while the model loads
        async with adapter(fake) as provider:
            assert await provider.context_window("gpt-test-1") is None
            now[0] += timings.UNKNOWN_RETRY_S - 1
            assert await provider.context_window("gpt-test-1") is None  # not asked again yet
            assert [r.path for r in fake.requests].count("/props") == 1
            now[0] += 2
            assert await provider.context_window("gpt-test-1") == 3000
            now[0] += 10 * timings.UNKNOWN_RETRY_S
            assert await provider.context_window("gpt-test-1") == 3000  # a stated window holds for good
        assert [r.path for r in fake.requests].count("/props") == 2


async def test_a_side_question_that_hangs_gives_up_quickly_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timings, "PROBE_TIMEOUT_S", 0.2)
    with FakeProvider("openai", api_key=None, llama_cpp=True) as fake:
        fake.fault("hang", endpoint="side", times=2)
        async with adapter(fake) as provider:
            # Each is given up after the 0.2 s set here; the default 3 s would take 6 s for the
            # two, past this bound however fast the machine, while a pause of it stays within.
            with anyio.fail_after(5):
                assert await provider.context_window("gpt-test-1") is None
                assert await provider.count_tokens("gpt-test-1", "hi") is None


async def test_llama_cpp_counts_tokens_with_its_own_tokenizer() -> None:
    text = "Four score and seven years ago, our fathers brought forth."
    with FakeProvider("openai", api_key=None, llama_cpp=True) as fake:
        async with adapter(fake) as provider:
            assert await provider.count_tokens("gpt-test-1", text) == len(fake_tokens(text))
        sent = [r for r in fake.requests if r.path == "/tokenize"][0].json
    assert sent == {"content": text, "add_special": False, "with_pieces": False, "model": "gpt-test-1"}


async def test_llama_cpp_python_counts_tokens_with_its_extras_tokenizer_though_it_has_no_tokenize() -> None:
    """llama-cpp-python answers /tokenize with 404 and counts at /extras/tokenize: the estimate
    was made by characters, saying the server offers no tokenizer."""
    text = "Four score and seven years ago, our fathers brought forth."
    with FakeProvider("openai", api_key=None, llama_cpp_python=True) as fake:
        async with adapter(fake) as provider:
            assert await provider.count_tokens("gpt-test-1", text) == len(fake_tokens(text))
            assert await provider.count_tokens("gpt-test-1", "and again") == 2
        paths = [r.path for r in fake.requests]
        assert paths == ["/tokenize", "/extras/tokenize", "/extras/tokenize"], "the one it has is remembered"
        assert fake.requests[1].json == {"input": text, "model": "gpt-test-1"}


async def test_a_tokenize_that_refuses_llama_cpp_s_body_as_malformed_is_not_asked_again() -> None:
    """A FastAPI server's 422 (a /tokenize that wants another body) will not change by asking again."""
    with FakeProvider("openai", api_key=None, llama_cpp=True) as fake:
        fake.fault("status", status=422, endpoint="side")
        async with adapter(fake) as provider:
            assert await provider.count_tokens("gpt-test-1", "hello") is None
            assert await provider.count_tokens("gpt-test-1", "hello again") is None
        assert [r.path for r in fake.requests] == ["/tokenize", "/extras/tokenize"]


async def test_a_tokenizer_busy_loading_is_asked_again_next_time() -> None:
    with FakeProvider("openai", api_key=None, llama_cpp_python=True) as fake:
        fake.fault("status", status=503, endpoint="side")  # still loading the model
        async with adapter(fake) as provider:
            assert await provider.count_tokens("gpt-test-1", "hello") is None
            assert await provider.count_tokens("gpt-test-1", "hello") == 1
        assert [r.path for r in fake.requests] == ["/tokenize", "/extras/tokenize", "/extras/tokenize"]


async def test_a_hosted_api_is_never_asked_for_props_or_tokenize() -> None:
    with FakeProvider("openai") as fake:
        # The loopback fake stands in for api.openai.com: only the host name decides.
        settings = HttpSettings(name="openai", base_url="https://api.openai.com/v1", api_key="sk-x")
        provider = OpenAIProvider(settings)
        try:
            assert await provider.context_window("gpt-4o") is None
            assert await provider.count_tokens("gpt-4o", "hello") is None
        finally:
            await provider.aclose()
    assert fake.requests == []


async def test_llama_cpp_streams_without_usage_give_none_not_zeros() -> None:
    with FakeProvider("openai", api_key=None, llama_cpp=True, usage=WIRE) as fake:
        result, deltas = await call(fake, stream=True)
        assert result.usage is None and deltas  # llama.cpp sends no usage chunk, even when asked
        assert fake.last_request.json["stream_options"] == {"include_usage": True}
        result, _ = await call(fake, stream=False)
        assert result.usage == USAGE


@MODES
async def test_usage_of_all_zeros_is_no_usage_not_a_free_call(fake: FakeProvider, stream: bool) -> None:
    fake.reply(usage=WireUsage(input_tokens=0, output_tokens=0))
    result, _ = await call(fake, stream=stream)
    assert result.usage is None and result.text


async def test_llama_cpp_refusing_a_prompt_over_its_window_states_it() -> None:
    big = CompletionRequest(messages=(Message(role="user", content="word " * 300),), max_tokens=8)
    with FakeProvider("openai", api_key=None, llama_cpp=True, n_ctx=256) as fake, pytest.raises(ContextTooLong) as info:
        await call(fake, stream=False, request=big)
    assert info.value.context_window == 256


async def test_ollama_reports_the_context_of_the_loaded_model() -> None:
    with FakeProvider("ollama", default_num_ctx=4096) as fake:
        async with adapter(fake) as provider:
            # Not loaded and no num_ctx in its Modelfile: the server's default applies, unsaid yet.
            assert await provider.context_window("llama-test") is None
        await call(fake, stream=False)  # now loaded
        async with adapter(fake) as provider:
            assert await provider.context_window("llama-test") == 4096  # /api/ps, the :latest tag added
        show = [r for r in fake.requests if r.path == "/api/show"][0]
        assert show.json == {"model": "llama-test"}


async def test_ollama_reports_the_modelfile_num_ctx_before_the_model_is_loaded() -> None:
    with FakeProvider("ollama", num_ctx=2048, context_length=131072) as fake:
        async with adapter(fake) as provider:
            assert await provider.context_window("llama-test:latest") == 2048  # not the trained 131072
            assert await provider.context_window("llama-test:latest") == 2048
        assert [r.path for r in fake.requests].count("/api/show") == 1


async def test_ollama_for_a_model_not_pulled_says_nothing_and_asks_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(base, "_clock", lambda: now[0])
    with FakeProvider("ollama") as fake:
        async with adapter(fake) as provider:
            assert await provider.context_window("not-pulled") is None
            assert await provider.count_tokens("not-pulled", "x") is None  # Ollama has no tokenizer endpoint
            now[0] += timings.UNKNOWN_RETRY_S + 1
            assert await provider.context_window("not-pulled") is None
        assert [r.path for r in fake.requests].count("/api/show") == 2
