"""The Anthropic adapter with rich requests, through a real socket against the fake Messages API:
the exact bodies it sends for tools, tool conversations, images, structured output and the
sampling fields (and what it refuses before sending), and the ``Completion`` it makes of tool
calls, structured output and every stop reason, JSON and streamed."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from llm_router.content import ImagePart, ResponseFormat, TextPart, ToolCall, ToolSpec
from llm_router.providers.anthropic import AnthropicProvider
from llm_router.providers.anthropic_request import MAX_IMAGE_BYTES
from llm_router.providers.base import HttpSettings
from llm_router.types import (
    Completion,
    CompletionRequest,
    ContentFiltered,
    InvalidOutput,
    InvalidRequest,
    MalformedResponse,
    Message,
    ProviderError,
    ToolCallOnly,
    Usage,
)

from .fakes import FakeProvider
from .fakes import Usage as WireUsage
from .fakes.anthropic import BAD_IMAGE
from .providers_rich import complete_collecting

pytestmark = pytest.mark.anyio

MODEL = "claude-test-1"
WIRE_USAGE = WireUsage(input_tokens=100, output_tokens=20, cached_tokens=30, cache_write_tokens=5)
USAGE = Usage(input_tokens=135, output_tokens=20, cached_tokens=30, cache_write_tokens=5)
WEATHER = ToolSpec(
    "get_weather", "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", "", {"type": "object", "properties": {}})
WIRE_WEATHER = {"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER.input_schema}
WIRE_TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
ASK = (Message("user", "Weather in Paris?"),)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
"""A 1x1 PNG, as base64."""
JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAP//////////////////////////////////////////////////////////2wBDAf//////////////////////////////////////////////////////////wAARCAABAAEDASIAAhEBAxEB/8QAFAABAAAAAAAAAAAAAAAAAAAAA//EABQQAQAAAAAAAAAAAAAAAAAAAAD/xAAUAQEAAAAAAAAAAAAAAAAAAAAA/8QAFBEBAAAAAAAAAAAAAAAAAAAAAP/aAAwDAQACEQMRAD8AP//Z"
"""A 1x1 JPEG, as base64."""
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("anthropic", usage=WIRE_USAGE) as server:
        yield server
    assert not server.server_errors, server.server_errors


@asynccontextmanager
async def adapter(fake: FakeProvider) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(
        HttpSettings(name="anthropic", base_url=fake.base_url, api_key=fake.api_key, timeout_s=5, connect_timeout_s=5)
    )
    try:
        yield provider
    finally:
        await provider.aclose()


async def ask(fake: FakeProvider, request: CompletionRequest, *, stream: bool = False) -> tuple[Completion, list[str]]:
    async with adapter(fake) as provider:
        return await complete_collecting(provider, MODEL, request, stream=stream)


async def fails(fake: FakeProvider, request: CompletionRequest, cls: type[ProviderError], *,
                stream: bool = False) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await ask(fake, request, stream=stream)
    assert type(info.value) is cls, f"expected {cls.__name__}, got {type(info.value).__name__}: {info.value}"
    return info.value


def request(**fields: Any) -> CompletionRequest:
    return CompletionRequest(**{"messages": ASK, "max_tokens": 50, **fields})


def sent(fake: FakeProvider) -> Any:
    body = fake.last_request.json
    assert isinstance(body, dict)
    return body


# -- the plain text request is untouched ---------------------------------------------------------


async def test_a_plain_text_request_goes_out_byte_for_byte_as_before(fake: FakeProvider) -> None:
    # The body the wire tests pin (test_anthropic_request_is_as_documented), as compact JSON.
    plain = CompletionRequest(
        messages=(Message("user", "Hi"), Message("assistant", "Hello."), Message("user", "What is 2+2?")),
        system="Be terse.", max_tokens=64, temperature=0.2,
    )
    result, _ = await ask(fake, plain)
    assert fake.last_request.body == (
        b'{"model":"claude-test-1","max_tokens":64,"messages":[{"role":"user","content":"Hi"},'
        b'{"role":"assistant","content":"Hello."},{"role":"user","content":"What is 2+2?"}],'
        b'"system":"Be terse.","temperature":0.2}'
    )
    assert result.finish_reason == "stop" and result.tool_calls == ()


# -- tools and tool_choice -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", None),  # the API's default: left out
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("get_time", {"type": "tool", "name": "get_time"}),
    ],
)
async def test_tools_and_each_tool_choice_are_sent_as_the_api_documents(
    fake: FakeProvider, choice: str, wire: dict[str, Any] | None
) -> None:
    await ask(fake, request(tools=(WEATHER, TIME), tool_choice=choice))
    expected: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WIRE_WEATHER, WIRE_TIME],
    }
    if wire is not None:
        expected["tool_choice"] = wire
    assert sent(fake) == expected


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"tools": (WEATHER,), "tool_choice": "get_time"}, "not among the tools offered"),
        ({"tool_choice": "required"}, "no tools were offered"),
        ({"tools": (ToolSpec("files.read", "", {"type": "object"}),)}, "tool name"),
    ],
    ids=["unknown-tool", "forced-without-tools", "bad-name"],
)
async def test_a_tool_choice_or_name_the_api_cannot_take_is_refused_before_sending(
    fake: FakeProvider, fields: dict[str, Any], said: str
) -> None:
    err = await fails(fake, request(**fields), InvalidRequest)
    assert said in str(err)
    assert fake.requests == []


async def test_a_tool_conversation_puts_consecutive_results_in_one_user_turn_after_the_calls(
    fake: FakeProvider,
) -> None:
    conversation = (
        Message("user", "Weather and time in Paris?"),
        Message("assistant", "Let me look.", tool_calls=(
            ToolCall("toolu_01", "get_weather", {"city": "Paris"}), ToolCall("toolu_02", "get_time", {}),
        )),
        Message("tool", "18C and sunny", tool_call_id="toolu_01", name="get_weather"),
        Message("tool", "14:05", tool_call_id="toolu_02", name="get_time"),
        Message("user", "And tomorrow?"),
    )
    result, _ = await ask(fake, request(messages=conversation, tools=(WEATHER, TIME)))
    assert sent(fake)["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C and sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_02", "content": "14:05"},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ]
    assert result.text.startswith("echo:")  # the fake accepted the conversation


async def test_an_empty_user_turn_after_tool_results_adds_no_empty_text_block(fake: FakeProvider) -> None:
    conversation = (
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(ToolCall("toolu_01", "get_weather", {"city": "Oslo"}),)),
        Message("tool", "cold", tool_call_id="toolu_01", name="get_weather"),
        Message("user", ""),
    )
    await ask(fake, request(messages=conversation, tools=(WEATHER,)))
    assert sent(fake)["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "cold"}]},
    ]


async def test_a_call_id_the_api_would_refuse_becomes_one_stable_id_for_the_call_and_its_result(
    fake: FakeProvider,
) -> None:
    # Ids some other providers make (Kimi's "functions.name:index") hold characters Anthropic refuses.
    conversation = (
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(ToolCall("functions.get_weather:0", "get_weather", {"city": "Oslo"}),)),
        Message("tool", "cold", tool_call_id="functions.get_weather:0", name="get_weather"),
    )
    await ask(fake, request(messages=conversation, tools=(WEATHER,)))
    assistant, results = sent(fake)["messages"][1:]
    (use,) = assistant["content"]
    (answer,) = results["content"]
    assert use["id"] == answer["tool_use_id"] and use["id"].startswith("toolu_")
    assert assistant["content"] == [{"type": "tool_use", "id": use["id"], "name": "get_weather", "input": {"city": "Oslo"}}]


async def test_a_tool_conversation_continues_without_tools_offered(fake: FakeProvider) -> None:
    # The API takes tool results without tool definitions (since its 2025-02-27 release).
    conversation = (
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(ToolCall("toolu_01", "get_weather", {"city": "Oslo"}),)),
        Message("tool", "", tool_call_id="toolu_01", name="get_weather"),
    )
    result, _ = await ask(fake, request(messages=conversation))
    assert "tools" not in sent(fake)
    assert sent(fake)["messages"][2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01"}]}
    assert result.tool_calls == ()


# -- images --------------------------------------------------------------------------------------


def png(**kw: Any) -> ImagePart:
    return ImagePart("image/png", data=PNG, size_bytes=68, width=1, height=1, **kw)


def png_of(width: int, height: int, padding: int = 0) -> str:
    """A PNG's signature and IHDR saying ``width`` x ``height``, then ``padding`` bytes, as base64."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * (4 + padding)
    return base64.b64encode(raw).decode()


def sized(width: int, height: int, padding: int = 0) -> ImagePart:
    data = png_of(width, height, padding)
    return ImagePart("image/png", data=data, size_bytes=len(base64.b64decode(data)), width=width, height=height)


async def test_an_image_under_5_mb_decoded_but_over_it_as_base64_is_refused_before_sending(fake: FakeProvider) -> None:
    # The API counts the base64 text: 4.5 MB of image is over 6 MB of it, and answered with a 400.
    image = sized(1000, 1000, padding=4_500_000)
    assert image.size_bytes < MAX_IMAGE_BYTES < len(image.data or "")
    err = await fails(fake, request(messages=(Message("user", "x", parts=(TextPart("x"), image)),)), InvalidRequest)
    assert f"{len(image.data or '')} bytes as base64" in str(err) and "5 MB" in str(err) and fake.requests == []


async def test_an_image_of_just_under_5_mb_as_base64_is_sent_and_the_api_takes_it(fake: FakeProvider) -> None:
    image = sized(1000, 1000, padding=MAX_IMAGE_BYTES * 3 // 4 - 40)
    assert len(image.data or "") <= MAX_IMAGE_BYTES
    result, _ = await ask(fake, request(messages=(Message("user", "x", parts=(TextPart("x"), image)),)))
    assert result.text and sent(fake)["messages"][0]["content"][1]["source"]["data"] == image.data


async def test_more_than_100_images_in_a_request_are_refused_before_sending(fake: FakeProvider) -> None:
    turns = (Message("user", "x", parts=(png(),) * 60), Message("assistant", "ok"),
             Message("user", "y", parts=(png(),) * 41))
    err = await fails(fake, request(messages=turns), InvalidRequest)
    assert "101 images" in str(err) and "at most 100" in str(err) and fake.requests == []


async def test_100_images_in_a_request_are_sent(fake: FakeProvider) -> None:
    await ask(fake, request(messages=(Message("user", "x", parts=(png(),) * 100),)))
    assert len(sent(fake)["messages"][0]["content"]) == 100


async def test_past_20_images_one_wider_than_2000_pixels_is_refused_before_sending(fake: FakeProvider) -> None:
    turn = Message("user", "x", parts=(*(png(),) * 20, sized(2001, 10)))
    err = await fails(fake, request(messages=(turn,)), InvalidRequest)
    assert "2001x10 pixels" in str(err) and "at most 2000 a side when a request holds more than 20 images" in str(err)
    assert fake.requests == []


async def test_with_20_images_or_fewer_an_image_up_to_8000_pixels_a_side_is_sent(fake: FakeProvider) -> None:
    await ask(fake, request(messages=(Message("user", "x", parts=(*(png(),) * 19, sized(8000, 10))),)))
    assert len(sent(fake)["messages"][0]["content"]) == 20


async def test_an_image_by_its_bytes_is_a_base64_source_in_order_with_the_text(fake: FakeProvider) -> None:
    turn = Message("user", "What is this? And this?", parts=(
        TextPart("What is this?"), png(), TextPart("And this?"), ImagePart("image/jpeg", data=JPEG, size_bytes=125),
    ))
    await ask(fake, request(messages=(turn,)))
    assert sent(fake)["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "And this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG}},
    ]}]


async def test_an_image_by_url_is_a_url_source_the_api_fetches(fake: FakeProvider) -> None:
    turn = Message("user", "Describe it.", parts=(
        TextPart("Describe it."), ImagePart("image/png", url="https://example.com/cat.png"),
    ))
    await ask(fake, request(messages=(turn,)))
    assert sent(fake)["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


async def test_an_image_a_tool_returned_goes_inside_its_tool_result(fake: FakeProvider) -> None:
    conversation = (
        Message("user", "Screenshot?"),
        Message("assistant", "", tool_calls=(ToolCall("toolu_01", "get_time", {}),)),
        Message("tool", "here", parts=(TextPart("here"), png()), tool_call_id="toolu_01", name="get_time"),
    )
    await ask(fake, request(messages=conversation, tools=(TIME,)))
    assert sent(fake)["messages"][2] == {"role": "user", "content": [{
        "type": "tool_result", "tool_use_id": "toolu_01", "content": [
            {"type": "text", "text": "here"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ],
    }]}


@pytest.mark.parametrize(
    ("turn", "said"),
    [
        (Message("assistant", "x", parts=(TextPart("x"), png())), "assistant turn"),
        (Message("user", "x", parts=(ImagePart("image/png", data=png_of(10, 10, 4_000_000), size_bytes=68),)),
         "bytes as base64"),
        (Message("user", "x", parts=(ImagePart("image/png", data=PNG, size_bytes=68, width=9000, height=10),)), "pixels"),
        (Message("user", "x", parts=(ImagePart("image/bmp", data=PNG, size_bytes=68),)), "image/bmp"),
    ],
    ids=["assistant-image", "over-5MB", "over-8000px", "bmp"],
)
async def test_an_image_the_api_cannot_take_is_refused_before_sending(
    fake: FakeProvider, turn: Message, said: str
) -> None:
    err = await fails(fake, request(messages=(Message("user", "hi"), turn) if turn.role == "assistant" else (turn,)),
                      InvalidRequest)
    assert said in str(err) and fake.requests == []


async def test_an_image_the_api_cannot_read_is_an_invalid_request(fake: FakeProvider) -> None:
    fake.fault("status", status=400, message=BAD_IMAGE)
    err = await fails(fake, request(messages=(Message("user", "x", parts=(png(),)),)), InvalidRequest)
    assert err.status == 400 and BAD_IMAGE in str(err)
    # Bytes that are not the type they claim, checked by the fake as the API checks them.
    lying = ImagePart("image/png", data=JPEG, size_bytes=125)
    err = await fails(fake, request(messages=(Message("user", "x", parts=(lying,)),)), InvalidRequest)
    assert "appears to be a image/jpeg image" in str(err)


# -- structured output ---------------------------------------------------------------------------


FORMAT_TOOL_DESCRIPTION = "Give your answer as this tool's input, a JSON value matching its input schema."


@pytest.mark.parametrize(
    ("fmt", "tool"),
    [
        (ResponseFormat("json_schema", SCHEMA, name="person"),
         {"name": "person", "description": FORMAT_TOOL_DESCRIPTION, "input_schema": SCHEMA}),
        (ResponseFormat("json_object"),
         {"name": "response", "description": FORMAT_TOOL_DESCRIPTION, "input_schema": {"type": "object"}}),
    ],
    ids=["json_schema", "json_object"],
)
async def test_structured_output_forces_one_tool_whose_input_schema_is_the_schema(
    fake: FakeProvider, fmt: ResponseFormat, tool: dict[str, Any]
) -> None:
    await ask(fake, request(response_format=fmt))
    assert sent(fake) == {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": tool["name"]},
    }


@STREAM
async def test_structured_output_is_the_forced_calls_input_as_json_text(fake: FakeProvider, stream: bool) -> None:
    fake.reply(chunks=('{"name": "Ada', '", "age": 36', "}"))
    result, deltas = await ask(fake, request(response_format=ResponseFormat("json_schema", SCHEMA, name="person")),
                               stream=stream)
    assert json.loads(result.text) == {"name": "Ada", "age": 36}
    assert result.tool_calls == () and result.finish_reason == "stop"
    assert result.usage == USAGE and result.model == MODEL
    if stream:  # the input's pieces are the answer's text, as they come
        assert deltas == ['{"name": "Ada', '", "age": 36', "}"] and result.text == "".join(deltas)


@STREAM
@pytest.mark.parametrize("text", ['{"name": "Ada", "age": "old"}', '{"name": "Ada", '], ids=["violating", "not-json"])
async def test_structured_output_is_passed_on_unjudged_for_the_router_to_validate(
    fake: FakeProvider, stream: bool, text: str
) -> None:
    fake.reply(text=text)
    result, _ = await ask(fake, request(response_format=ResponseFormat("json_schema", SCHEMA)), stream=stream)
    assert result.text == text
    assert result.tool_calls == () and result.usage == USAGE


@STREAM
async def test_structured_output_written_as_text_instead_of_the_forced_call_is_passed_on_as_text(
    fake: FakeProvider, stream: bool
) -> None:
    fake.reply(chunks=('{"name": ', '"Ada"}'), tool_calls=(), finish="stop")  # text only, no call
    result, deltas = await ask(fake, request(response_format=ResponseFormat("json_object")), stream=stream)
    assert result.text == '{"name": "Ada"}' and result.finish_reason == "stop"
    assert deltas == (['{"name": "Ada"}'] if stream else [])


async def test_structured_output_cut_inside_the_forced_call_is_malformed(fake: FakeProvider) -> None:
    fake.fault("cut_stream", text='{"name": "Ada", "age": 36}', after_chunks=2)
    await fails(fake, request(response_format=ResponseFormat("json_object")), MalformedResponse, stream=True)


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"tools": (WEATHER,), "response_format": ResponseFormat("json_object", name="get_weather")}, "like one of the tools"),
        ({"response_format": ResponseFormat("json_schema", SCHEMA, name="a.b")}, "response_format name"),
    ],
    ids=["with-tools", "bad-name"],
)
async def test_structured_output_the_api_cannot_force_is_refused_before_sending(
    fake: FakeProvider, fields: dict[str, Any], said: str
) -> None:
    err = await fails(fake, request(**fields), InvalidRequest)
    assert said in str(err) and fake.requests == []


LIST = {"type": "array", "items": {"$ref": "#/$defs/person"}, "$defs": {"person": SCHEMA}}


async def test_structured_output_beside_tools_offers_the_formats_tool_among_them_and_any_must_be_called(
    fake: FakeProvider,
) -> None:
    await ask(fake, request(tools=(WEATHER,), response_format=ResponseFormat("json_schema", SCHEMA, name="person")))
    body = sent(fake)
    assert [t["name"] for t in body["tools"]] == ["get_weather", "person"]
    # Exactly one call: the format's or one of the caller's, never both in one turn.
    assert body["tools"][1]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(("choice", "tools", "forced"), [("none", ["person"], {"type": "tool", "name": "person"}),
                                                         ("required", ["get_weather"], {"type": "any"})])
async def test_structured_output_beside_tools_follows_the_tool_choice(
    fake: FakeProvider, choice: str, tools: list[str], forced: dict[str, Any]
) -> None:
    await ask(fake, request(tools=(WEATHER,), tool_choice=choice,
                            response_format=ResponseFormat("json_schema", SCHEMA, name="person")))
    body = sent(fake)
    assert [t["name"] for t in body["tools"]] == tools and body["tool_choice"] == forced


@STREAM
async def test_beside_tools_a_call_of_the_formats_tool_is_the_json_answer(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", tool_calls=(("person", {"name": "Ada", "age": 36}),))
    result, _ = await ask(fake, request(tools=(WEATHER,), response_format=ResponseFormat("json_schema", SCHEMA, name="person")),
                          stream=stream)
    assert json.loads(result.text) == {"name": "Ada", "age": 36}
    assert result.tool_calls == () and result.finish_reason == "stop"


@STREAM
async def test_beside_tools_a_call_of_the_callers_tool_is_the_answer(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}),))
    result, _ = await ask(fake, request(tools=(WEATHER,), response_format=ResponseFormat("json_schema", SCHEMA, name="person")),
                          stream=stream)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert result.finish_reason == "tool_calls"


async def test_streamed_beside_tools_the_formats_input_is_held_and_given_whole_when_it_is_the_answer(
    fake: FakeProvider,
) -> None:
    fake.fault("tool_call", tool_calls=(("person", {"name": "Ada", "age": 36}),))
    result, deltas = await ask(
        fake, request(tools=(WEATHER,), response_format=ResponseFormat("json_schema", SCHEMA, name="person")), stream=True
    )
    assert json.loads(result.text) == {"name": "Ada", "age": 36} and deltas == [result.text]


async def test_streamed_beside_tools_a_call_of_the_callers_tool_too_leaves_nothing_of_the_format_streamed(
    fake: FakeProvider,
) -> None:
    # Should the model call both in one turn anyway, the caller's call is the answer, and no piece
    # of the format's input may have gone to on_text as if it were.
    fake.fault("tool_call", tool_calls=(("person", {"name": "Ada", "age": 36}), ("get_weather", {"city": "Paris"})))
    result, deltas = await ask(
        fake, request(tools=(WEATHER,), response_format=ResponseFormat("json_schema", SCHEMA, name="person")), stream=True
    )
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert deltas == [] and result.text == "" and result.finish_reason == "tool_calls"


async def test_a_schema_whose_top_is_no_object_is_wrapped_in_one_with_its_defs_at_the_root(fake: FakeProvider) -> None:
    await ask(fake, request(response_format=ResponseFormat("json_schema", LIST, name="people")))
    (tool,) = sent(fake)["tools"]
    assert tool["input_schema"] == {
        "type": "object",
        "properties": {"value": {"type": "array", "items": {"$ref": "#/$defs/person"}}},
        "required": ["value"],
        "$defs": {"person": SCHEMA},
    }
    assert sent(fake)["tool_choice"] == {"type": "tool", "name": "people"}


@STREAM
async def test_a_wrapped_answer_is_unwrapped(fake: FakeProvider, stream: bool) -> None:
    fake.reply(chunks=('{"value": [{"name": "Ada", ', '"age": 36}]}'))
    result, deltas = await ask(fake, request(response_format=ResponseFormat("json_schema", LIST)), stream=stream)
    assert json.loads(result.text) == [{"name": "Ada", "age": 36}] and result.finish_reason == "stop"
    assert deltas == ([result.text] if stream else [])


@STREAM
@pytest.mark.parametrize("text", ['[{"name": "Ada"}]', '{"value": [{"name": '], ids=["unwrapped", "not-json"])
async def test_a_wrapped_answer_without_its_wrapper_is_passed_on_as_it_came(
    fake: FakeProvider, stream: bool, text: str
) -> None:
    fake.reply(text=text)
    result, _ = await ask(fake, request(response_format=ResponseFormat("json_schema", {"anyOf": [LIST]})), stream=stream)
    assert result.text == text


async def test_a_schema_without_a_top_level_type_is_sent_as_an_object_schema(fake: FakeProvider) -> None:
    untyped = {"properties": {"name": {"type": "string"}}}
    await ask(fake, request(response_format=ResponseFormat("json_schema", untyped)))
    assert sent(fake)["tools"][0]["input_schema"] == {"type": "object", **untyped}


# -- stop, top_p, seed ---------------------------------------------------------------------------


async def test_stop_and_top_p_are_stop_sequences_and_top_p(fake: FakeProvider) -> None:
    await ask(fake, request(stop=("\n\n", "END"), top_p=0.9))
    assert sent(fake) == {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "top_p": 0.9,
        "stop_sequences": ["\n\n", "END"],
    }


async def test_temperature_and_top_p_together_are_refused_before_sending_claude_4_5_takes_only_one(
    fake: FakeProvider,
) -> None:
    err = await fails(fake, request(top_p=0.9, temperature=0.3), InvalidRequest)
    assert "temperature and top_p" in str(err) and "give one" in str(err) and fake.requests == []


async def test_a_seed_is_refused_before_sending_the_api_has_no_field_for_it(fake: FakeProvider) -> None:
    err = await fails(fake, request(seed=7), InvalidRequest)
    assert "seed" in str(err) and fake.requests == []


# -- tool calls in the answer --------------------------------------------------------------------


@STREAM
async def test_one_tool_call_is_the_answer_when_tools_were_offered(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", text="Let me look.", tool_calls=(("get_weather", {"city": "Paris"}),))
    result, deltas = await ask(fake, request(tools=(WEATHER,)), stream=stream)
    assert result.tool_calls == (ToolCall("toolu_fake000001", "get_weather", {"city": "Paris"}),)
    assert result.finish_reason == "tool_calls" and result.text == "Let me look." and result.usage == USAGE
    assert result.response_id == "msg_fake000001"
    assert "".join(deltas) == ("Let me look." if stream else "")


@STREAM
async def test_two_tool_calls_come_back_in_order(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris", "days": [1, 2]}), ("get_time", {})))
    result, _ = await ask(fake, request(tools=(WEATHER, TIME), tool_choice="required"), stream=stream)
    assert result.tool_calls == (
        ToolCall("toolu_fake000001", "get_weather", {"city": "Paris", "days": [1, 2]}),
        ToolCall("toolu_fake000001_1", "get_time", {}),
    )
    assert result.text == "" and result.finish_reason == "tool_calls"


@STREAM
async def test_broken_tool_arguments_are_invalid_output_and_billed(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", '{"city": "Par'),))
    err = await fails(fake, request(tools=(WEATHER,)), InvalidOutput, stream=stream)
    assert err.usage == USAGE and "get_weather" in str(err)


async def test_broken_arguments_that_echo_the_key_are_quoted_without_it(fake: FakeProvider) -> None:
    assert fake.api_key
    fake.fault("tool_call", tool_calls=(("get_weather", '{"echo": "' + fake.api_key + '"'),))
    err = await fails(fake, request(tools=(WEATHER,)), InvalidOutput)
    assert fake.api_key not in str(err) and "not JSON" in str(err)


async def test_a_tool_call_without_an_id_gets_one(fake: FakeProvider) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Rome"}),),
               wire_replace={b'"toolu_fake000001"': b"null"})
    result, _ = await ask(fake, request(tools=(WEATHER,)))
    (call,) = result.tool_calls
    assert call.id.startswith("call_") and call.arguments == {"city": "Rome"}


async def test_tool_arguments_holding_lone_surrogates_come_back_as_valid_text(fake: FakeProvider) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "@@"}),), wire_replace={b"@@": b"\\ud83d"})
    result, _ = await ask(fake, request(tools=(WEATHER,)))
    assert result.tool_calls[0].arguments == {"city": "\ufffd"}


@pytest.mark.parametrize("after", [1, 2, 3], ids=["at-block-start", "after-empty-piece", "inside-arguments"])
async def test_a_stream_cut_inside_a_tool_call_is_malformed(fake: FakeProvider, after: int) -> None:
    fake.fault("cut_stream", text="", tool_calls=(("get_weather", {"city": "Paris"}),), after_chunks=after)
    await fails(fake, request(tools=(WEATHER,)), MalformedResponse, stream=True)


async def test_a_stream_that_ends_cleanly_before_message_stop_inside_a_tool_call_is_malformed(
    fake: FakeProvider,
) -> None:
    fake.fault("cut_stream", text="", tool_calls=(("get_weather", {"city": "Paris"}),), after_chunks=3, clean_eof=True)
    err = await fails(fake, request(tools=(WEATHER,)), MalformedResponse, stream=True)
    assert "message_stop" in str(err)


@STREAM
async def test_a_tool_call_when_no_tools_were_offered_is_still_tool_call_only(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}),))
    err = await fails(fake, request(), ToolCallOnly, stream=stream)
    assert err.usage == USAGE


# -- finish reasons ------------------------------------------------------------------------------


@STREAM
@pytest.mark.parametrize(
    ("native", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("pause_turn", "stop"),
     ("model_context_window_exceeded", "length"), ("something_new", "stop")],
)
async def test_every_stop_reason_is_normalised(fake: FakeProvider, stream: bool, native: str, finish: str) -> None:
    fake.reply(text="Hello.", finish=native)
    result, _ = await ask(fake, request(), stream=stream)
    assert result.finish_reason == finish and result.text == "Hello."


@STREAM
async def test_a_refusal_stays_content_filtered_with_tools_offered(fake: FakeProvider, stream: bool) -> None:
    fake.fault("blocked")
    err = await fails(fake, request(tools=(WEATHER,)), ContentFiltered, stream=stream)
    assert err.usage == USAGE


@STREAM
async def test_a_forced_call_cut_at_max_tokens_is_length(fake: FakeProvider, stream: bool) -> None:
    fake.reply(text='{"name": "Ada"', finish="length")
    result, _ = await ask(fake, request(response_format=ResponseFormat("json_object")), stream=stream)
    assert result.finish_reason == "length" and result.text.startswith('{"name": "Ada"')
