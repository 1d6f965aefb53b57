"""The Ollama adapter with rich requests, through a real socket against the loopback fake
(``tests/fakes/ollama.py``, written from docs.ollama.com): the exact ``/api/chat`` body it sends for
tools, a tool conversation, images, structured output and the sampling parameters; what it refuses
before sending; and the ``Completion`` it makes of tool calls, broken arguments, cut streams,
structured output and each ``done_reason``."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from llm_router.content import ImagePart, ResponseFormat, TextPart, ToolCall, ToolSpec
from llm_router.providers.base import HttpSettings
from llm_router.providers.ollama import OllamaProvider
from llm_router.types import (
    Completion,
    CompletionRequest,
    InvalidOutput,
    InvalidRequest,
    MalformedResponse,
    Message,
    ProviderError,
    ToolCallOnly,
    Usage,
)

from .fakes import FakeProvider, Step
from .fakes import Usage as WireUsage
from .providers_rich import complete_collecting
from .providers_wire import REQ as PLAIN

pytestmark = pytest.mark.anyio

MODEL = "llama-test:latest"
WIRE = WireUsage(input_tokens=40, output_tokens=9)
USAGE = Usage(input_tokens=40, output_tokens=9)
MODES = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", "The time in a zone", {"type": "object", "properties": {"zone": {"type": "string"}}})
ASK = (Message(role="user", content="Weather in Paris?"),)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("ollama", usage=WIRE) as server:
        yield server
    assert not server.server_errors, server.server_errors


@asynccontextmanager
async def adapter(fake: FakeProvider) -> AsyncIterator[OllamaProvider]:
    provider = OllamaProvider(HttpSettings(name="ollama", base_url=fake.base_url, api_key=None, timeout_s=5))
    try:
        yield provider
    finally:
        await provider.aclose()


async def call(fake: FakeProvider, request: CompletionRequest, *, stream: bool = False) -> tuple[Completion, list[str]]:
    async with adapter(fake) as provider:
        return await complete_collecting(provider, MODEL, request, stream=stream)


async def fails(fake: FakeProvider, request: CompletionRequest, cls: type[ProviderError], *, stream: bool = False) -> Any:
    with pytest.raises(cls) as info:
        await call(fake, request, stream=stream)
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    assert info.value.provider == "ollama" and info.value.model == MODEL
    return info.value


def rich(**fields: Any) -> CompletionRequest:
    return CompletionRequest(**{"messages": ASK, "max_tokens": 32, **fields})


def sent(fake: FakeProvider) -> Any:
    chats = [r for r in fake.requests if r.path == "/api/chat"]
    assert len(chats) == 1, chats
    return chats[0].json


def chats(fake: FakeProvider) -> int:
    return [r.path for r in fake.requests].count("/api/chat")


def calls_of(result: Completion) -> list[tuple[str, dict[str, Any]]]:
    """The calls without their ids, which are new each time; the ids checked apart."""
    ids = [c.id for c in result.tool_calls]
    assert len(set(ids)) == len(ids) and all(i.startswith("call_") for i in ids), ids
    return [(c.name, c.arguments) for c in result.tool_calls]


WEATHER_WIRE = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER.input_schema},
}
TIME_WIRE = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time in a zone", "parameters": TIME.input_schema},
}


# -- what is sent --------------------------------------------------------------------------------


async def test_a_plain_text_request_body_is_byte_for_byte_what_it_was(fake: FakeProvider) -> None:
    await call(fake, PLAIN)
    # What test_providers_wire_ollama pins, compact JSON as the adapter writes it.
    assert fake.last_request.body == (
        b'{"model":"llama-test:latest","messages":[{"role":"system","content":"Be terse."},'
        b'{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."},'
        b'{"role":"user","content":"What is 2+2?"}],"stream":false,"options":{"num_predict":64,"temperature":0.2}}'
    )


@MODES
async def test_tools_offered_with_tool_choice_auto_go_as_ollama_function_definitions(
    fake: FakeProvider, stream: bool
) -> None:
    await call(fake, rich(tools=(WEATHER, TIME), tool_choice="auto"), stream=stream)
    assert sent(fake) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "stream": stream,
        "options": {"num_predict": 32},
        "tools": [WEATHER_WIRE, TIME_WIRE],
    }


async def test_tool_choice_none_sends_no_tools_at_all(fake: FakeProvider) -> None:
    await call(fake, rich(tools=(WEATHER,), tool_choice="none"))
    assert sent(fake) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "stream": False,
        "options": {"num_predict": 32},
    }


@pytest.mark.parametrize("choice", ["required", "get_weather"])
async def test_a_forced_tool_is_refused_before_sending_as_ollama_has_no_tool_choice(
    fake: FakeProvider, choice: str
) -> None:
    err = await fails(fake, rich(tools=(WEATHER,), tool_choice=choice), InvalidRequest)
    assert "tool_choice" in str(err) and err.status is None
    assert chats(fake) == 0


async def test_a_tool_conversation_sends_earlier_calls_and_each_result_with_its_tool_name(fake: FakeProvider) -> None:
    conversation = (
        Message(role="user", content="Weather and time in Paris?"),
        Message(
            role="assistant",
            content="",
            tool_calls=(
                ToolCall("call_a", "get_weather", {"city": "Paris"}),
                ToolCall("call_b", "get_time", {"zone": "Europe/Paris"}),
            ),
        ),
        Message(role="tool", content='{"sky": "clear"}', tool_call_id="call_a", name="get_weather"),
        Message(role="tool", content="14:05", tool_call_id="call_b"),  # named by the call it answers
        Message(role="user", content="Thanks. And tomorrow?"),
    )
    await call(fake, rich(messages=conversation, tools=(WEATHER, TIME), system="Be brief."))
    assert sent(fake) == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather and time in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_time", "arguments": {"zone": "Europe/Paris"}}},
                ],
            },
            {"role": "tool", "content": '{"sky": "clear"}', "tool_name": "get_weather"},
            {"role": "tool", "content": "14:05", "tool_name": "get_time"},
            {"role": "user", "content": "Thanks. And tomorrow?"},
        ],
        "stream": False,
        "options": {"num_predict": 32},
        "tools": [WEATHER_WIRE, TIME_WIRE],
    }


async def test_an_image_by_data_goes_in_the_message_images_with_its_text_as_content(fake: FakeProvider) -> None:
    image = ImagePart("image/png", data=PNG, size_bytes=24)
    turn = Message(role="user", content="What is this?", parts=(TextPart("What is this?"), image))
    await call(fake, rich(messages=(turn,)))
    assert sent(fake) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is this?", "images": [PNG]}],
        "stream": False,
        "options": {"num_predict": 32},
    }


async def test_an_image_by_url_is_refused_before_sending_as_ollama_takes_only_bytes(fake: FakeProvider) -> None:
    image = ImagePart("image/png", url="https://example.invalid/cat.png")
    turn = Message(role="user", content="What is this?", parts=(TextPart("What is this?"), image))
    err = await fails(fake, rich(messages=(turn,)), InvalidRequest)
    assert "URL" in str(err) and chats(fake) == 0


async def test_an_image_ollama_cannot_decode_is_its_400_an_invalid_request(fake: FakeProvider) -> None:
    image = ImagePart("image/png", data="data:image/png;base64," + PNG)  # not bare base64: Go refuses it
    turn = Message(role="user", content="What is this?", parts=(image,))
    err = await fails(fake, rich(messages=(turn,)), InvalidRequest)
    assert err.status == 400 and "illegal base64 data at input byte 4" in str(err)


@MODES
async def test_an_image_the_server_refuses_fails_the_attempt_as_an_invalid_request(
    fake: FakeProvider, stream: bool
) -> None:
    fake.fault("status", status=400, message="illegal base64 data at input byte 0")
    turn = Message(role="user", content="?", parts=(ImagePart("image/png", data=PNG),))
    err = await fails(fake, rich(messages=(turn,)), InvalidRequest, stream=stream)
    assert err.status == 400


@pytest.mark.parametrize(
    ("response_format", "wire"),
    [(ResponseFormat("json_schema", SCHEMA, name="person"), SCHEMA), (ResponseFormat("json_object"), "json")],
    ids=["json_schema", "json_object"],
)
async def test_structured_output_is_ollamas_native_format(
    fake: FakeProvider, response_format: ResponseFormat, wire: Any
) -> None:
    fake.reply(text='{"age": 22}')
    await call(fake, rich(response_format=response_format))
    assert sent(fake) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "stream": False,
        "options": {"num_predict": 32},
        "format": wire,
    }


async def test_stop_top_p_and_seed_go_in_options_where_ollama_has_a_field_for_each(fake: FakeProvider) -> None:
    # Nothing here is refused: Ollama's options carry all three (Modelfile parameters stop, top_p, seed).
    await call(fake, rich(temperature=0.0, stop=("\n\n", "END"), top_p=0.9, seed=7))
    assert sent(fake) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "stream": False,
        "options": {"num_predict": 32, "temperature": 0.0, "top_p": 0.9, "seed": 7, "stop": ["\n\n", "END"]},
    }


# -- what comes back -----------------------------------------------------------------------------


@MODES
async def test_one_tool_call_to_a_request_that_offered_tools_is_the_answer(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}),))
    result, deltas = await call(fake, rich(tools=(WEATHER,)), stream=stream)
    assert calls_of(result) == [("get_weather", {"city": "Paris"})]
    assert (result.text, result.finish_reason, result.usage, result.model) == ("", "tool_calls", USAGE, MODEL)
    assert deltas == []


@MODES
async def test_two_tool_calls_come_back_in_order_each_with_its_own_id(fake: FakeProvider, stream: bool) -> None:
    # Streamed, each call arrives whole in a line of its own: assembled across the lines.
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC"})))
    result, _ = await call(fake, rich(tools=(WEATHER, TIME)), stream=stream)
    assert calls_of(result) == [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC"})]
    assert result.finish_reason == "tool_calls" and result.usage == USAGE


@MODES
async def test_text_before_a_tool_call_is_kept_beside_the_call(fake: FakeProvider, stream: bool) -> None:
    fake.reply(text="Let me check.", tool_calls=(("get_weather", {"city": "Paris"}),))
    result, deltas = await call(fake, rich(tools=(WEATHER,)), stream=stream)
    assert result.text == "Let me check." and calls_of(result) == [("get_weather", {"city": "Paris"})]
    assert result.finish_reason == "tool_calls"
    assert "".join(deltas) == ("Let me check." if stream else "")


async def test_an_id_ollama_sends_for_a_call_is_kept(fake: FakeProvider) -> None:
    # Newer servers send one: it is what the caller's tool turn will name.
    fake.reply(tool_calls=(("get_weather", {"city": "Paris"}),),
               wire_replace={b'{"function":': b'{"id":"call_from_ollama","function":'})
    result, _ = await call(fake, rich(tools=(WEATHER,)))
    assert result.tool_calls == (ToolCall("call_from_ollama", "get_weather", {"city": "Paris"}),)


@MODES
async def test_a_tool_call_to_a_request_that_offered_none_is_still_tool_call_only(
    fake: FakeProvider, stream: bool
) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}),))
    err = await fails(fake, rich(tools=(WEATHER,), tool_choice="none"), ToolCallOnly, stream=stream)
    assert err.usage == USAGE and "get_weather" in str(err)


@MODES
async def test_broken_tool_arguments_are_invalid_output_billed(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", '{"city": "Par'),))
    err = await fails(fake, rich(tools=(WEATHER,)), InvalidOutput, stream=stream)
    assert err.usage == USAGE and "get_weather" in str(err) and err.code == "invalid_output"


async def test_arguments_that_are_no_object_are_invalid_output(fake: FakeProvider) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", "[1, 2]"),))
    err = await fails(fake, rich(tools=(WEATHER,)), InvalidOutput)
    assert "list" in str(err) and err.usage == USAGE


async def test_a_stream_cut_inside_a_tool_call_is_malformed_not_an_answer(fake: FakeProvider) -> None:
    # One text line, then the call's line cut in half as the connection drops.
    fake.queue(Step(fault="cut_stream", chunks=("Checking.",), after_chunks=2,
                    tool_calls=(("get_weather", {"city": "Paris"}),)))
    err = await fails(fake, rich(tools=(WEATHER,)), MalformedResponse, stream=True)
    assert err.retryable


async def test_a_stream_that_ends_after_its_tool_calls_but_before_done_is_malformed(fake: FakeProvider) -> None:
    fake.queue(Step(fault="cut_stream", clean_eof=True, chunks=("Checking.",), after_chunks=3,
                    tool_calls=(("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC"}))))
    err = await fails(fake, rich(tools=(WEATHER, TIME)), MalformedResponse, stream=True)
    assert "done" in str(err) and "2 tool calls" in str(err)


@MODES
@pytest.mark.parametrize(
    "text",
    ['{"age": 22}', '{"age": "twenty-two"}', '{"age": 22', "Sure! Here is the JSON you asked for."],
    ids=["valid", "schema-violating", "not-json", "prose"],
)
async def test_structured_output_is_the_text_the_model_wrote_left_to_the_router_to_judge(
    fake: FakeProvider, stream: bool, text: str
) -> None:
    fake.reply(text=text)
    result, _ = await call(fake, rich(response_format=ResponseFormat("json_schema", SCHEMA)), stream=stream)
    assert (result.text, result.finish_reason, result.tool_calls, result.usage) == (text, "stop", (), USAGE)


@MODES
@pytest.mark.parametrize(
    ("done_reason", "finish"),
    [("stop", "stop"), ("length", "length"), ("load", "stop"), ("something_new", "stop")],
)
async def test_done_reason_is_normalised_for_every_answer(
    fake: FakeProvider, stream: bool, done_reason: str, finish: str
) -> None:
    fake.reply(text="An answer.", finish=done_reason)
    result, _ = await call(fake, PLAIN, stream=stream)
    assert result.finish_reason == finish and result.text == "An answer."


async def test_a_missing_done_reason_is_a_normal_stop(fake: FakeProvider) -> None:
    fake.reply(text="An answer.", wire_replace={b'"done_reason":"stop",': b""})
    result, _ = await call(fake, PLAIN)
    assert result.finish_reason == "stop"
