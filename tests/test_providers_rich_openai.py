"""The OpenAI adapter's rich requests through a real socket, against the fake Chat Completions API
(``tests/fakes/openai.py``): the exact bodies it sends for tools, tool conversations, images,
structured output and the sampling fields, and the ``Completion`` it makes of tool calls (JSON and
streamed), structured answers and every finish reason."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llm_router.content import ImagePart, ResponseFormat, TextPart, ToolCall, ToolSpec
from llm_router.defaults import KIND_CAPABILITIES
from llm_router.providers.base import HttpSettings
from llm_router.providers.openai import OpenAIProvider
from llm_router.providers.openai_props import Props, read_props
from llm_router.providers.openai_request import JSON_LINE, strict_ok
from llm_router.types import (
    Completion,
    CompletionRequest,
    ContentFiltered,
    InvalidOutput,
    InvalidRequest,
    MalformedResponse,
    Message,
    ToolCallOnly,
    Usage,
)

from .fakes import FakeProvider, Step
from .fakes import Usage as WireUsage
from .fakes.openai import IMAGE_ERRORS, _strict_problem
from .providers_rich import complete_collecting

pytestmark = pytest.mark.anyio

MODEL = "gpt-test-1"
USAGE = Usage(input_tokens=12, output_tokens=8)
WEATHER = ToolSpec("get_weather", "The weather in a city", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False,
})
TIME = ToolSpec("get_time", "", {"type": "object", "properties": {}})
ASK = Message(role="user", content="Weather in Paris?")
TOOLS = CompletionRequest(messages=(ASK,), max_tokens=64, tools=(WEATHER, TIME))
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": ["integer", "null"], "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider("openai") as server:
        yield server
    assert not server.server_errors, server.server_errors


def adapter(fake: FakeProvider) -> OpenAIProvider:
    return OpenAIProvider(HttpSettings(name="openai", base_url=fake.base_url, api_key=fake.api_key))


async def complete(fake: FakeProvider, request: CompletionRequest, *, stream: bool = False) -> Completion:
    provider = adapter(fake)
    try:
        result, deltas = await complete_collecting(provider, MODEL, request, stream=stream)
    finally:
        await provider.aclose()
    assert "".join(deltas) == (result.text if stream else "")
    return result


async def sent(fake: FakeProvider, request: CompletionRequest, **reply: Any) -> dict[str, Any]:
    """The body the adapter sent for ``request`` (answered with ``reply``)."""
    fake.reply(**reply)
    await complete(fake, request)
    body = fake.last_request.json
    assert isinstance(body, dict)
    return body


async def refused(fake: FakeProvider, request: CompletionRequest, *, provider: OpenAIProvider | None = None) -> str:
    """The ``InvalidRequest`` raised for ``request`` before anything reached the fake."""
    provider = provider or adapter(fake)
    try:
        with pytest.raises(InvalidRequest) as info:
            await provider.complete(MODEL, request)
    finally:
        await provider.aclose()
    assert fake.requests == []
    return str(info.value)


# -- the plain request stays as it was ----------------------------------------------------------


async def test_a_plain_text_request_body_is_byte_for_byte_what_it_was(fake: FakeProvider) -> None:
    request = CompletionRequest(
        messages=(Message("user", "Hi"), Message("assistant", "Hello."), Message("user", "What is 2+2?")),
        system="Be terse.", max_tokens=64, temperature=0.2,
    )
    await sent(fake, request)
    expected = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
    }
    assert fake.last_request.body == json.dumps(expected, separators=(",", ":")).encode()


async def test_a_plain_answer_has_the_normalised_finish_reason_and_no_tool_calls(fake: FakeProvider) -> None:
    result = await complete(fake, CompletionRequest(messages=(ASK,), max_tokens=8))
    assert (result.finish_reason, result.tool_calls) == ("stop", ())


# -- tools --------------------------------------------------------------------------------------

TOOL_DEFS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                      "parameters": WEATHER.input_schema}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


@pytest.mark.parametrize(("choice", "wire"), [
    ("auto", None),  # OpenAI's default whenever tools are given: not repeated
    ("required", "required"),
    ("none", "none"),
    ("get_time", {"type": "function", "function": {"name": "get_time"}}),
])
async def test_tools_and_each_tool_choice_are_sent_as_openai_defines_them(
    fake: FakeProvider, choice: str, wire: Any
) -> None:
    body = await sent(fake, CompletionRequest(messages=(ASK,), max_tokens=64, tools=(WEATHER, TIME), tool_choice=choice))
    expected: dict[str, Any] = {
        "model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 64,
        "tools": TOOL_DEFS,
    }
    if wire is not None:
        expected["tool_choice"] = wire
    assert body == expected


async def test_a_forced_tool_choice_without_tools_is_refused_before_sending(fake: FakeProvider) -> None:
    assert "tool_choice" in await refused(fake, CompletionRequest(messages=(ASK,), max_tokens=8, tool_choice="required"))


async def test_a_tool_conversation_sends_the_earlier_calls_and_each_result_after_them(fake: FakeProvider) -> None:
    calls = (ToolCall("call_a", "get_weather", {"city": "Paris"}), ToolCall("call_b", "get_time", {}))
    request = CompletionRequest(
        messages=(
            ASK,
            Message("assistant", "", tool_calls=calls),
            Message("tool", '{"temp": 21}', tool_call_id="call_a", name="get_weather"),
            Message("tool", "12:00", tool_call_id="call_b", name="get_time"),
            Message("assistant", "Let me check once more.", tool_calls=(ToolCall("call_c", "get_time", {}),)),
            Message("tool", "12:01", tool_call_id="call_c", name="get_time"),
        ),
        system="Use the tools.", max_tokens=64, tools=(WEATHER, TIME),
    )
    body = await sent(fake, request)
    assert body["messages"] == [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
        {"role": "assistant", "content": "Let me check once more.", "tool_calls": [
            {"id": "call_c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_c", "content": "12:01"},
    ]


async def test_a_tool_result_without_its_call_id_is_refused_before_sending(fake: FakeProvider) -> None:
    request = CompletionRequest(messages=(ASK, Message("tool", "21", name="get_weather")), max_tokens=8, tools=(WEATHER,))
    assert "messages[1]" in await refused(fake, request)


# -- images -------------------------------------------------------------------------------------


def image_turn(*parts: TextPart | ImagePart) -> CompletionRequest:
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    return CompletionRequest(messages=(Message("user", text, parts=parts),), max_tokens=16)


async def test_an_image_by_its_bytes_goes_as_a_data_url_beside_the_text_in_order(fake: FakeProvider) -> None:
    png = ImagePart("image/png", data=PIXEL, size_bytes=70, width=1, height=1)
    body = await sent(fake, image_turn(TextPart("What is this?"), png, TextPart("Be brief.")))
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "text", "text": "Be brief."},
    ]}]


async def test_an_image_by_its_url_goes_as_that_url(fake: FakeProvider) -> None:
    body = await sent(fake, image_turn(ImagePart("image/jpeg", url="https://example.com/cat.jpg"), TextPart("Cat?")))
    assert body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}, {"type": "text", "text": "Cat?"},
    ]


async def test_an_image_url_openai_cannot_fetch_is_refused_before_sending(fake: FakeProvider) -> None:
    assert "http(s)" in await refused(fake, image_turn(ImagePart("image/png", url="ftp://example.com/a.png")))


async def test_an_image_outside_a_user_turn_is_refused_before_sending(fake: FakeProvider) -> None:
    png = ImagePart("image/png", data=PIXEL)
    for turn in (Message("assistant", "", parts=(png,)), Message("tool", "", parts=(png,), tool_call_id="call_a")):
        request = CompletionRequest(messages=(ASK, turn), max_tokens=8)
        assert "image" in await refused(fake, request)


async def test_more_images_than_openai_takes_are_refused_before_sending(fake: FakeProvider) -> None:
    # OpenAI's own API (the check is its documented limit): nothing may be sent, so no server at all.
    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    hosted = OpenAIProvider(HttpSettings(name="openai", base_url="https://api.openai.com/v1", api_key="k",
                                         transport=httpx.MockTransport(never)))
    many = tuple(ImagePart("image/png", data=PIXEL) for _ in range(501))
    assert "501 images" in await refused(fake, image_turn(*many), provider=hosted)


async def test_an_image_openai_refuses_is_an_invalid_request(fake: FakeProvider) -> None:
    fake.fault("status", status=400, code="invalid_image_format", message=IMAGE_ERRORS["invalid_image_format"])
    with pytest.raises(InvalidRequest) as info:
        await complete(fake, image_turn(ImagePart("image/png", data=PIXEL), TextPart("What is it?")))
    assert info.value.status == 400


# -- structured output --------------------------------------------------------------------------


async def test_a_schema_strict_mode_takes_is_sent_strict(fake: FakeProvider) -> None:
    fmt = ResponseFormat("json_schema", PERSON, name="person")
    body = await sent(fake, CompletionRequest(messages=(ASK,), max_tokens=64, response_format=fmt), text='{"name":"A","age":3}')
    assert body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }
    assert body["messages"] == [{"role": "user", "content": "Weather in Paris?"}]  # no JSON line: the schema says it


NOT_STRICT = [
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},  # additionalProperties unsaid
    {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"],
     "additionalProperties": False},  # b optional
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"x": {"type": "integer"}}}},
     "required": ["a"], "additionalProperties": False},  # a nested object open
    {"type": "object", "properties": {"a": {"type": "string", "default": "x"}}, "required": ["a"],
     "additionalProperties": False},  # a keyword strict mode refuses
    {"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}, "required": ["a"],
     "additionalProperties": False},
    {"type": "array", "items": {"type": "string"}},  # not an object at the root
]


@pytest.mark.parametrize("schema", NOT_STRICT, ids=["open", "optional", "nested-open", "default", "allOf", "array-root"])
async def test_a_schema_strict_mode_would_refuse_is_sent_not_strict(fake: FakeProvider, schema: dict[str, Any]) -> None:
    assert _strict_problem(schema, ()) is not None  # what the fake (after OpenAI) refuses under strict
    assert not strict_ok(schema)
    fmt = ResponseFormat("json_schema", schema)
    body = await sent(fake, CompletionRequest(messages=(ASK,), max_tokens=64, response_format=fmt), text="{}")
    assert body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": False},
    }


def test_schemas_strict_mode_takes_are_recognised() -> None:
    nested = {"type": "object", "additionalProperties": False, "required": ["items", "kind"], "properties": {
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 3},
        "kind": {"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}]},
    }, "$defs": {"item": {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"],
                          "additionalProperties": False}}}
    for schema in (PERSON, nested, {"type": "object", "properties": {}, "required": [], "additionalProperties": False}):
        assert strict_ok(schema) and _strict_problem(schema, ()) is None


async def test_json_object_gets_a_system_line_asking_for_json_when_no_text_says_json(fake: FakeProvider) -> None:
    fmt = ResponseFormat("json_object")
    body = await sent(fake, CompletionRequest(messages=(ASK,), max_tokens=64, response_format=fmt), text="{}")
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"] == [{"role": "system", "content": JSON_LINE}, {"role": "user", "content": "Weather in Paris?"}]
    body = await sent(fake, CompletionRequest(messages=(ASK,), system="Be terse.", max_tokens=64, response_format=fmt),
                      text="{}")
    assert body["messages"][0] == {"role": "system", "content": f"Be terse.\n\n{JSON_LINE}"}


async def test_json_object_sends_the_messages_unchanged_when_they_say_json(fake: FakeProvider) -> None:
    ask = Message("user", "Reply as Json: the weather in Paris")
    body = await sent(fake, CompletionRequest(messages=(ask,), max_tokens=64, response_format=ResponseFormat("json_object")),
                      text="{}")
    assert body["messages"] == [{"role": "user", "content": "Reply as Json: the weather in Paris"}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("text", ['{"name": "Ann", "age": 3}', '{"name": "Ann", "age": "three"}', '{"name": "Ann", '],
                         ids=["valid", "schema-violating", "not-json"])
async def test_a_structured_answer_is_the_json_text_as_the_model_wrote_it(fake: FakeProvider, text: str, stream: bool) -> None:
    fake.reply(text=text)
    request = CompletionRequest(messages=(ASK,), max_tokens=64, response_format=ResponseFormat("json_schema", PERSON))
    result = await complete(fake, request, stream=stream)
    assert (result.text, result.finish_reason, result.tool_calls, result.usage) == (text, "stop", (), USAGE)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_refused_structured_answer_is_content_filtered_and_billed(fake: FakeProvider, stream: bool) -> None:
    fake.reply(text="I can't help with that.", flavor="refusal")
    request = CompletionRequest(messages=(ASK,), max_tokens=64, response_format=ResponseFormat("json_schema", PERSON))
    with pytest.raises(ContentFiltered) as info:
        await complete(fake, request, stream=stream)
    assert info.value.usage == USAGE


# -- sampling -----------------------------------------------------------------------------------


async def test_stop_top_p_and_seed_are_sent_in_openai_fields(fake: FakeProvider) -> None:
    request = CompletionRequest(messages=(ASK,), max_tokens=8, stop=("\n\n", "END"), top_p=0.9, seed=42)
    assert await sent(fake, request) == {
        "model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 8,
        "stop": ["\n\n", "END"], "top_p": 0.9, "seed": 42,
    }


async def test_more_stop_sequences_than_openai_takes_are_refused_before_sending(fake: FakeProvider) -> None:
    request = CompletionRequest(messages=(ASK,), max_tokens=8, stop=("a", "b", "c", "d", "e"))
    assert "5 stop sequences" in await refused(fake, request)


# -- tool calls in the answer -------------------------------------------------------------------

STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


@STREAMS
async def test_one_tool_call_is_the_answer_when_tools_were_offered(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call")
    result = await complete(fake, TOOLS, stream=stream)
    assert result.tool_calls == (ToolCall("call_fake000001", "get_weather", {"city": "Paris"}),)
    assert (result.text, result.finish_reason, result.usage) == ("", "tool_calls", USAGE)


@STREAMS
async def test_two_tool_calls_are_both_in_the_answer_in_order(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", text="Checking both.", tool_calls=(("get_weather", {"city": "Oslo"}), ("get_time", {})))
    result = await complete(fake, TOOLS, stream=stream)
    assert result.tool_calls == (
        ToolCall("call_fake000001", "get_weather", {"city": "Oslo"}), ToolCall("call_fake000001_1", "get_time", {}),
    )
    assert (result.text, result.finish_reason) == ("Checking both.", "tool_calls")


@STREAMS
async def test_a_tool_call_sent_without_an_id_gets_one(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call", wire_replace={b'"id":"call_fake000001",': b""})
    result = await complete(fake, TOOLS, stream=stream)
    (call,) = result.tool_calls
    assert call.id.startswith("call_") and call.id != "call_fake000001"
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})


@STREAMS
@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]"], ids=["not-json", "not-an-object"])
async def test_broken_tool_arguments_are_invalid_output_with_the_billed_usage(
    fake: FakeProvider, stream: bool, arguments: str
) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", arguments),), usage=WireUsage(input_tokens=40, output_tokens=9))
    with pytest.raises(InvalidOutput) as info:
        await complete(fake, TOOLS, stream=stream)
    assert info.value.usage == Usage(input_tokens=40, output_tokens=9)
    assert "get_weather" in str(info.value)


@pytest.mark.parametrize("clean_eof", [False, True], ids=["connection-dropped", "no-done-marker"])
async def test_a_stream_cut_inside_a_tool_call_is_malformed(fake: FakeProvider, clean_eof: bool) -> None:
    # The opening piece (id and name) and the first piece of the arguments, then the end.
    fake.fault("cut_stream", text="", tool_calls=(("get_weather", {"city": "Paris"}),), after_chunks=2,
               clean_eof=clean_eof)
    with pytest.raises(MalformedResponse):
        await complete(fake, TOOLS, stream=True)


@STREAMS
async def test_a_tool_call_when_no_tools_were_offered_is_still_tool_call_only(fake: FakeProvider, stream: bool) -> None:
    fake.fault("tool_call")
    with pytest.raises(ToolCallOnly) as info:
        await complete(fake, CompletionRequest(messages=(ASK,), max_tokens=8), stream=stream)
    assert info.value.usage == USAGE


@STREAMS
@pytest.mark.parametrize("offered", [True, False], ids=["tools-offered", "plain"])
@pytest.mark.parametrize(("native", "normalised"), [("stop", "stop"), ("length", "length"), ("eos_token", "stop")])
async def test_finish_reasons_are_normalised(
    fake: FakeProvider, stream: bool, offered: bool, native: str, normalised: str
) -> None:
    fake.queue(Step(finish=native))
    result = await complete(fake, TOOLS if offered else CompletionRequest(messages=(ASK,), max_tokens=8), stream=stream)
    assert (result.finish_reason, result.text) == (normalised, "echo: Weather in Paris?")


@STREAMS
async def test_a_content_filter_finish_is_content_filtered_with_tools_offered_too(fake: FakeProvider, stream: bool) -> None:
    fake.fault("blocked")
    with pytest.raises(ContentFiltered):
        await complete(fake, TOOLS, stream=stream)


# -- what a local llama.cpp server says a model can do ------------------------------------------


async def test_llama_cpp_props_say_what_a_model_takes_and_are_asked_once() -> None:
    async with FakeProvider("openai", llama_cpp=True, api_key=None) as fake:
        fake.props = {"modalities": {"vision": True, "audio": False},
                      "chat_template_caps": {"supports_tools": True, "supports_tool_calls": True}}
        provider = adapter(fake)
        try:
            caps = await provider.capabilities(MODEL)
            assert caps == KIND_CAPABILITIES["openai-local"] | {"vision", "tools"}
            assert await provider.capabilities(MODEL) == caps
            assert await provider.context_window(MODEL) == fake.n_ctx
        finally:
            await provider.aclose()
        assert fake.counts["/props"] == 1


async def test_llama_cpp_without_a_projector_or_tool_template_states_only_the_defaults() -> None:
    async with FakeProvider("openai", llama_cpp=True, api_key=None) as fake:
        provider = adapter(fake)
        try:
            assert await provider.capabilities(MODEL) == KIND_CAPABILITIES["openai-local"]
        finally:
            await provider.aclose()


async def test_a_server_without_props_says_nothing_of_capabilities(fake: FakeProvider) -> None:
    provider = adapter(fake)
    try:
        assert await provider.capabilities(MODEL) is None
        assert await provider.capabilities(MODEL) is None
    finally:
        await provider.aclose()
    assert fake.counts["/props"] == 1


async def test_a_hosted_api_is_never_asked_for_capabilities() -> None:
    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("a hosted API is not asked")

    provider = OpenAIProvider(HttpSettings(name="openai", base_url="https://api.openai.com/v1", api_key="k",
                                           transport=httpx.MockTransport(never)))
    try:
        assert await provider.capabilities("gpt-4o") is None
    finally:
        await provider.aclose()


@STREAMS
async def test_tool_arguments_holding_lone_surrogate_halves_come_back_as_valid_text(
    fake: FakeProvider, stream: bool
) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", '{"city": "Par\\ud83dis"}'),))
    (call,) = (await complete(fake, TOOLS, stream=stream)).tool_calls
    assert call.arguments == {"city": "Par\ufffdis"}
    call.arguments["city"].encode()


def test_a_template_that_renders_tools_but_not_the_calls_back_does_not_take_tools() -> None:
    props = read_props(200, {"chat_template_caps": {"supports_tools": True, "supports_tool_calls": False}})
    assert props.capabilities == KIND_CAPABILITIES["openai-local"]
    assert read_props(200, {"default_generation_settings": {"n_ctx": 8192}}) == Props(200, 8192, None)
    assert read_props(404, None) == Props(404)
