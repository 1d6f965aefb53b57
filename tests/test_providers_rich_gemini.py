"""The Gemini adapter's rich requests through a real socket, against the fake Gemini API: the exact
body it sends for tools, tool turns, images, structured output and the sampling fields, and the
``Completion`` it makes of tool calls, structured output and every finish reason."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from llm_router.content import ImagePart, ResponseFormat, TextPart, ToolCall, ToolSpec
from llm_router.providers.base import HttpSettings
from llm_router.providers.gemini import GeminiProvider
from llm_router.providers.gemini_request import SKIP_SIGNATURE
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

from .fakes import FakeProvider, Step
from .fakes import Usage as WireUsage
from .fakes.dialect import TOOL_ARGS
from .fakes.gemini import BAD_IMAGE_MESSAGE
from .providers_rich import complete_collecting
from .providers_wire import CutStream, Wire, js, make, run

pytestmark = pytest.mark.anyio

MODEL = "gemini-test-1"
WIRE_USAGE = WireUsage(input_tokens=100, output_tokens=20, cached_tokens=30)
USAGE = Usage(input_tokens=130, output_tokens=20, cached_tokens=30)
ASK = (Message(role="user", content="Weather in Paris?"),)
ASKED = {"role": "user", "parts": [{"text": "Weather in Paris?"}]}
WEATHER = ToolSpec(
    "get_weather",
    "The weather now in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "A city name"}, "unit": {"enum": ["C", "F"]}},
        "required": ["city"],
        "additionalProperties": False,
        "$schema": "https://json-schema.org/draft/2020-12/schema",
    },
)
WEATHER_DECLARED = {
    "name": "get_weather",
    "description": "The weather now in a city.",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING", "description": "A city name"},
            "unit": {"type": "STRING", "enum": ["C", "F"]},
        },
        "required": ["city"],
    },
}
CLOCK = ToolSpec("get_time", "The time now.", {"type": "object", "properties": {}})
CLOCK_DECLARED = {"name": "get_time", "description": "The time now."}  # no parameters for no properties
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c63f8ffff3f0005fe02fea7d6a4ad0000000049454e44ae426082"
    )
).decode()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider("gemini", usage=WIRE_USAGE) as server:
        yield server
    assert not server.server_errors, server.server_errors


@pytest.fixture
async def gemini(fake: FakeProvider) -> AsyncIterator[GeminiProvider]:
    provider = GeminiProvider(HttpSettings(name="gemini-test", base_url=fake.base_url, api_key=fake.api_key))
    try:
        yield provider
    finally:
        await provider.aclose()


def ask(**fields: Any) -> CompletionRequest:
    return CompletionRequest(**{"messages": ASK, "max_tokens": 64, **fields})


async def complete(provider: GeminiProvider, request: CompletionRequest, *, stream: bool = False) -> Completion:
    result, deltas = await complete_collecting(provider, MODEL, request, stream=stream)
    if stream:
        assert "".join(deltas) == result.text
    return result


async def refused(provider: GeminiProvider, request: CompletionRequest, fake: FakeProvider) -> str:
    """The request is refused before anything is sent; the message says why."""
    with pytest.raises(InvalidRequest) as info:
        await complete(provider, request)
    assert fake.requests == []
    assert info.value.provider == "gemini-test" and info.value.model == MODEL
    return str(info.value)


def sent(fake: FakeProvider) -> Any:
    return fake.last_request.json


# -- what is sent ---------------------------------------------------------------------------------


async def test_a_plain_text_request_body_is_byte_for_byte_what_it_was(fake: FakeProvider, gemini: GeminiProvider) -> None:
    request = CompletionRequest(
        messages=(
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello."),
            Message(role="user", content="What is 2+2?"),
        ),
        system="Be terse.",
        max_tokens=64,
        temperature=0.2,
    )
    await complete(gemini, request)
    # What tests/test_providers_wire_gemini.py pins, in the same key order and separators.
    expected = {
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello."}]},
            {"role": "user", "parts": [{"text": "What is 2+2?"}]},
        ],
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.2},
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
    }
    assert fake.last_request.body == json.dumps(expected, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", None),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        ("get_weather", {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}),
    ],
)
async def test_tools_and_each_tool_choice_are_sent_as_function_declarations_and_calling_config(
    fake: FakeProvider, gemini: GeminiProvider, choice: str, config: Any
) -> None:
    await complete(gemini, ask(tools=(WEATHER, CLOCK), tool_choice=choice))
    expected: dict[str, Any] = {
        "contents": [ASKED],
        "generationConfig": {"maxOutputTokens": 64},
        "tools": [{"functionDeclarations": [WEATHER_DECLARED, CLOCK_DECLARED]}],
    }
    if config is not None:
        expected["toolConfig"] = config
    assert sent(fake) == expected


async def test_a_forced_tool_choice_without_tools_is_refused(fake: FakeProvider, gemini: GeminiProvider) -> None:
    assert "tool_choice 'required' without any tools" in await refused(gemini, ask(tool_choice="required"), fake)


async def test_a_tool_conversation_sends_calls_as_model_turns_and_results_as_one_user_turn(
    fake: FakeProvider, gemini: GeminiProvider
) -> None:
    made_here = "call_" + "ab" * 12  # an id made for a call Gemini sent without one
    request = ask(
        tools=(WEATHER,),
        messages=(
            *ASK,
            Message(
                role="assistant",
                content="Let me look.",
                tool_calls=(
                    ToolCall(made_here, "get_weather", {"city": "Paris"}),
                    ToolCall("fc-7", "get_weather", {"city": "Lyon"}),
                ),
            ),
            Message(role="tool", content='{"temp": 21, "sky": "clear"}', tool_call_id=made_here, name="get_weather"),
            Message(role="tool", content="19 and raining", tool_call_id="fc-7"),  # the name found from its call
            Message(role="user", content="And tomorrow?"),
        ),
    )
    await complete(gemini, request)
    assert sent(fake)["contents"] == [
        ASKED,
        {
            "role": "model",
            "parts": [
                {"text": "Let me look."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SKIP_SIGNATURE},
                {"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}, "id": "fc-7"}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21, "sky": "clear"}}},
                {"functionResponse": {"name": "get_weather", "response": {"result": "19 and raining"}, "id": "fc-7"}},
            ],
        },
        {"role": "user", "parts": [{"text": "And tomorrow?"}]},
    ]


async def test_an_assistant_turn_of_calls_only_sends_no_empty_text(fake: FakeProvider, gemini: GeminiProvider) -> None:
    request = ask(
        tools=(CLOCK,),
        messages=(
            *ASK,
            Message(role="assistant", content="", tool_calls=(ToolCall("t1", "get_time"),)),
            Message(role="tool", content="[1, 2]", tool_call_id="t1", name="get_time"),  # JSON, but no object
        ),
    )
    await complete(gemini, request)
    assert sent(fake)["contents"][1:] == [
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_time", "args": {}, "id": "t1"}, "thoughtSignature": SKIP_SIGNATURE}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_time", "response": {"result": "[1, 2]"}, "id": "t1"}}]},
    ]


async def test_a_tool_turn_naming_no_tool_and_answering_no_known_call_is_refused(
    fake: FakeProvider, gemini: GeminiProvider
) -> None:
    request = ask(messages=(*ASK, Message(role="tool", content="21", tool_call_id="nowhere")))
    assert "names no tool" in await refused(gemini, request, fake)


async def test_an_image_by_data_is_sent_as_inline_data_in_its_place(fake: FakeProvider, gemini: GeminiProvider) -> None:
    image = ImagePart("image/png", data=PNG, size_bytes=70)
    turn = Message(role="user", content="What is this? And this?",
                   parts=(TextPart("What is this?"), image, TextPart(" And this?")))
    await complete(gemini, ask(messages=(turn,)))
    assert sent(fake) == {
        "contents": [{"role": "user", "parts": [
            {"text": "What is this?"},
            {"inlineData": {"mimeType": "image/png", "data": PNG}},
            {"text": " And this?"},
        ]}],
        "generationConfig": {"maxOutputTokens": 64},
    }


async def test_an_image_by_url_is_sent_as_file_data(fake: FakeProvider, gemini: GeminiProvider) -> None:
    turn = Message(role="user", content="What is this?",
                   parts=(TextPart("What is this?"), ImagePart("image/png", url="https://example.com/a.png")))
    fake.reply(text="A cat.")
    assert (await complete(gemini, ask(messages=(turn,)))).text == "A cat."
    assert sent(fake)["contents"][0]["parts"] == [
        {"text": "What is this?"}, {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png"}},
    ]


@pytest.mark.parametrize("image", [ImagePart("image/*", url="https://example.com/a"),
                                   ImagePart("image/png", url="http://example.com/a.png")], ids=["no-type", "http"])
async def test_an_image_by_url_of_no_known_type_or_not_https_is_refused(
    fake: FakeProvider, gemini: GeminiProvider, image: ImagePart
) -> None:
    turn = Message(role="user", content="", parts=(image,))
    assert "image by" in await refused(gemini, ask(messages=(turn,)), fake)


async def test_a_gif_is_refused_before_sending(fake: FakeProvider, gemini: GeminiProvider) -> None:
    gif = ImagePart("image/gif", data=base64.b64encode(b"GIF89a\x01\x00\x01\x00").decode(), size_bytes=10)
    message = await refused(gemini, ask(messages=(Message(role="user", content="", parts=(gif,)),)), fake)
    assert "image/gif" in message and "image/png" in message


async def test_an_image_gemini_cannot_read_is_its_documented_400(fake: FakeProvider, gemini: GeminiProvider) -> None:
    fake.queue(Step(fault="status", status=400, message=BAD_IMAGE_MESSAGE))
    image = ImagePart("image/png", data=PNG, size_bytes=70)
    with pytest.raises(InvalidRequest) as info:
        await complete(gemini, ask(messages=(Message(role="user", content="", parts=(image,)),)))
    assert info.value.status == 400 and "Unable to process input image" in str(info.value)


async def test_a_json_schema_is_sent_as_a_converted_response_schema(fake: FakeProvider, gemini: GeminiProvider) -> None:
    schema = {
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                            "additionalProperties": False}},
        "type": "object",
        "properties": {
            "where": {"$ref": "#/$defs/Place"},
            "note": {"type": ["string", "null"]},
            "kind": {"const": "forecast"},
        },
        "required": ["where", "kind"],
        "additionalProperties": False,
    }
    fake.reply(text='{"where": {"city": "Paris"}, "note": null, "kind": "forecast"}')
    result = await complete(gemini, ask(response_format=ResponseFormat("json_schema", schema)))
    assert sent(fake)["generationConfig"] == {
        "maxOutputTokens": 64,
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {
                "where": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
                "note": {"type": "STRING", "nullable": True},
                "kind": {"type": "STRING", "enum": ["forecast"]},
            },
            "propertyOrdering": ["where", "note", "kind"],
            "required": ["where", "kind"],
        },
    }
    assert result.text == '{"where": {"city": "Paris"}, "note": null, "kind": "forecast"}'
    assert (result.finish_reason, result.tool_calls, result.usage) == ("stop", (), USAGE)


async def test_json_object_is_sent_as_the_response_mime_type_alone(fake: FakeProvider, gemini: GeminiProvider) -> None:
    await complete(gemini, ask(response_format=ResponseFormat("json_object")))
    assert sent(fake)["generationConfig"] == {"maxOutputTokens": 64, "responseMimeType": "application/json"}


async def test_a_recursive_schema_is_refused_naming_where_it_recurses(fake: FakeProvider, gemini: GeminiProvider) -> None:
    schema = {"$defs": {"Node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
              "$ref": "#/$defs/Node"}
    message = await refused(gemini, ask(response_format=ResponseFormat("json_schema", schema)), fake)
    assert "#/$defs/Node/properties/kids/items/$ref" in message and "recursive" in message


async def test_stop_top_p_and_seed_are_sent_as_gemini_names_them(fake: FakeProvider, gemini: GeminiProvider) -> None:
    await complete(gemini, ask(stop=("END", "\n\n"), top_p=0.9, seed=7, temperature=0.3))
    assert sent(fake) == {
        "contents": [ASKED],
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.3, "stopSequences": ["END", "\n\n"],
                             "topP": 0.9, "seed": 7},
    }


async def test_more_than_five_stop_sequences_are_refused(fake: FakeProvider, gemini: GeminiProvider) -> None:
    assert "6 stop sequences (at most 5)" in await refused(gemini, ask(stop=tuple("abcdef")), fake)


# -- what is made of the answer ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_one_tool_call_is_the_answer_when_tools_were_offered(
    fake: FakeProvider, gemini: GeminiProvider, stream: bool
) -> None:
    fake.fault("tool_call", tool_name="get_weather")
    result = await complete(gemini, ask(tools=(WEATHER,)), stream=stream)
    (call,) = result.tool_calls
    assert (call.name, call.arguments, call.id.startswith("call_")) == ("get_weather", TOOL_ARGS, True)
    assert (result.text, result.finish_reason, result.usage, result.model) == ("", "tool_calls", USAGE, MODEL)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_two_tool_calls_after_some_text_are_all_kept_in_order(
    fake: FakeProvider, gemini: GeminiProvider, stream: bool
) -> None:
    fake.fault("tool_call", text="Checking both.", chunks=("Checking ", "both."),
               tool_calls=(("get_weather", {"city": "Paris"}), ("get_time", {})))
    result = await complete(gemini, ask(tools=(WEATHER, CLOCK)), stream=stream)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert len({c.id for c in result.tool_calls}) == 2
    assert (result.text, result.finish_reason, result.usage) == ("Checking both.", "tool_calls", USAGE)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_broken_tool_arguments_are_invalid_output_billed(
    fake: FakeProvider, gemini: GeminiProvider, stream: bool
) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", '{"city": "Par'),))
    with pytest.raises(InvalidOutput) as info:
        await complete(gemini, ask(tools=(WEATHER,)), stream=stream)
    assert info.value.usage == USAGE
    assert "MALFORMED_FUNCTION_CALL" in str(info.value) and '{"city": "Par' in str(info.value)


async def test_a_stream_of_tool_calls_ending_before_its_finish_reason_is_malformed(
    fake: FakeProvider, gemini: GeminiProvider
) -> None:
    # Both calls arrive, then the stream ends cleanly without the chunk holding the finishReason.
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}), ("get_time", {})),
               wire_replace={b'"finishReason":"STOP"': b'"index":0'})
    with pytest.raises(MalformedResponse) as info:
        await complete(gemini, ask(tools=(WEATHER, CLOCK)), stream=True)
    assert "finishReason" in str(info.value)


async def test_a_stream_cut_inside_a_tool_call_is_malformed() -> None:
    first = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}, "index": 0}]}
    second = b'data: {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_ti'
    body = b"data: " + json.dumps(first).encode() + b"\r\n\r\n" + second
    wire = Wire(httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=CutStream(body)))
    provider = make(GeminiProvider, wire)
    with pytest.raises(MalformedResponse):
        await run(provider, ask(tools=(WEATHER, CLOCK)), stream=True)


async def test_call_ids_gemini_sends_are_kept() -> None:
    reply = {
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"id": "fc-1", "name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "get_time"}},
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13},
        "modelVersion": "gemini-x-001",
    }
    result, _ = await run(make(GeminiProvider, Wire(js(reply))), ask(tools=(WEATHER, CLOCK)))
    first, second = result.tool_calls
    assert first == ToolCall("fc-1", "get_weather", {"city": "Paris"})
    assert (second.name, second.arguments, second.id.startswith("call_")) == ("get_time", {}, True)
    assert (result.finish_reason, result.usage) == ("tool_calls", Usage(input_tokens=9, output_tokens=4))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_tool_call_with_no_tools_offered_is_still_a_tool_call_only_failure(
    fake: FakeProvider, gemini: GeminiProvider, stream: bool
) -> None:
    fake.fault("tool_call", tool_name="get_weather")
    with pytest.raises(ToolCallOnly) as info:
        await complete(gemini, ask(), stream=stream)
    assert info.value.usage == USAGE and "get_weather" in str(info.value)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("text", "valid"),
    [('{"city": "Paris"}', True), ('{"city": "Par', False), ('{"town": 3}', True)],
    ids=["valid", "not-json", "schema-violating"],
)
async def test_structured_output_is_the_json_text_as_written_left_to_the_router_to_judge(
    fake: FakeProvider, gemini: GeminiProvider, stream: bool, text: str, valid: bool
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fake.reply(text=text, chunks=(text[:5], text[5:]))
    result = await complete(gemini, ask(response_format=ResponseFormat("json_schema", schema)), stream=stream)
    assert (result.text, result.finish_reason, result.usage) == (text, "stop", USAGE)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("native", "normalised"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("FINISH_REASON_UNSPECIFIED", "stop")],
)
async def test_finish_reasons_are_normalised(
    fake: FakeProvider, gemini: GeminiProvider, stream: bool, native: str, normalised: str
) -> None:
    fake.reply(text="Four.", finish=native)
    result = await complete(gemini, ask(), stream=stream)
    assert (result.text, result.finish_reason) == ("Four.", normalised)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_answer_stopped_for_another_reason_is_a_failed_attempt_not_a_normal_end(
    fake: FakeProvider, gemini: GeminiProvider, stream: bool
) -> None:
    fake.reply(text="Four and", finish="OTHER")
    with pytest.raises(MalformedResponse) as info:
        await complete(gemini, ask(), stream=stream)
    assert "OTHER" in str(info.value) and info.value.usage == USAGE


@pytest.mark.parametrize(
    "native", ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"]
)
async def test_a_withheld_answer_stays_content_filtered(fake: FakeProvider, gemini: GeminiProvider, native: str) -> None:
    fake.reply(text="", finish=native)
    with pytest.raises(ContentFiltered) as info:
        await complete(gemini, ask(tools=(WEATHER,)))
    assert native in str(info.value) and info.value.usage == USAGE


async def test_a_rich_answer_never_fails_the_process_whatever_the_call_holds(
    fake: FakeProvider, gemini: GeminiProvider
) -> None:
    # A functionCall whose arguments are a list: the model's mistake, billed.
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}),),
               wire_replace={b'"args":{"city":"Paris"}': b'"args":["Paris"]'})
    with pytest.raises(ProviderError) as info:
        await complete(gemini, ask(tools=(WEATHER,)))
    assert type(info.value) is InvalidOutput and info.value.usage == USAGE


async def test_tool_arguments_holding_lone_surrogates_come_out_valid_text(
    fake: FakeProvider, gemini: GeminiProvider
) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Par\ud83dis"}),))
    result = await complete(gemini, ask(tools=(WEATHER,)))
    assert result.tool_calls[0].arguments == {"city": "Par\ufffdis"}
    result.tool_calls[0].arguments["city"].encode("utf-8")


# -- structured output beside tools (Gemini 2.x refuses function calling with JSON mode) ----------

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CITY_PARAMS = {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_tools_and_a_schema_declare_the_format_as_a_function_whose_call_is_the_json_answer(
    fake: FakeProvider, gemini: GeminiProvider, stream: bool
) -> None:
    fake.fault("tool_call", tool_calls=(("place", {"city": "Paris"}),))
    request = ask(tools=(WEATHER,), response_format=ResponseFormat("json_schema", CITY, name="place"))
    result = await complete(gemini, request, stream=stream)
    assert (json.loads(result.text), result.tool_calls, result.finish_reason) == ({"city": "Paris"}, (), "stop")
    body = sent(fake)
    declared = body["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declared] == ["get_weather", "place"] and declared[1]["parameters"] == CITY_PARAMS
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert "responseMimeType" not in body["generationConfig"] and "responseSchema" not in body["generationConfig"]


async def test_beside_tools_a_call_of_the_caller_s_tool_is_the_tool_call(fake: FakeProvider, gemini: GeminiProvider) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}),))
    request = ask(tools=(WEATHER,), response_format=ResponseFormat("json_schema", CITY, name="place"))
    result = await complete(gemini, request)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert result.finish_reason == "tool_calls"


async def test_a_format_whose_top_is_no_object_is_wrapped_in_a_value_argument(
    fake: FakeProvider, gemini: GeminiProvider
) -> None:
    fake.fault("tool_call", tool_calls=(("response", {"value": ["a", "b"]}),))
    schema = {"type": "array", "items": {"type": "string"}}
    result = await complete(gemini, ask(tools=(WEATHER,), response_format=ResponseFormat("json_schema", schema)))
    assert json.loads(result.text) == ["a", "b"]
    params = sent(fake)["tools"][0]["functionDeclarations"][1]["parameters"]
    assert params == {"type": "OBJECT", "properties": {"value": {"type": "ARRAY", "items": {"type": "STRING"}}},
                      "required": ["value"]}


async def test_with_tool_choice_none_only_the_format_is_sent(fake: FakeProvider, gemini: GeminiProvider) -> None:
    fake.reply(text='{"city": "Paris"}')
    request = ask(tools=(WEATHER,), tool_choice="none", response_format=ResponseFormat("json_schema", CITY))
    assert (await complete(gemini, request)).text == '{"city": "Paris"}'
    body = sent(fake)
    assert "tools" not in body and "toolConfig" not in body
    assert body["generationConfig"]["responseSchema"] == CITY_PARAMS


@pytest.mark.parametrize("choice", ["required", "get_weather"])
async def test_with_a_forced_tool_only_the_tools_are_sent(fake: FakeProvider, gemini: GeminiProvider, choice: str) -> None:
    fake.fault("tool_call", tool_calls=(("get_weather", {"city": "Paris"}),))
    request = ask(tools=(WEATHER,), tool_choice=choice, response_format=ResponseFormat("json_schema", CITY))
    assert [c.name for c in (await complete(gemini, request)).tool_calls] == ["get_weather"]
    body = sent(fake)
    assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == ["get_weather"]
    assert "responseMimeType" not in body["generationConfig"]


async def test_a_json_object_format_beside_tools_is_refused(fake: FakeProvider, gemini: GeminiProvider) -> None:
    assert "json_object" in await refused(gemini, ask(tools=(WEATHER,), response_format=ResponseFormat("json_object")), fake)


# -- schemas Gemini refuses --------------------------------------------------------------------------


async def test_a_schema_of_no_safe_conversion_is_sent_as_json_mode_only(fake: FakeProvider, gemini: GeminiProvider) -> None:
    fake.reply(text='{"meta": {"a": "b"}}')
    schema = {"type": "object", "properties": {"meta": {"type": "object", "additionalProperties": {"type": "string"}}},
              "required": ["meta"]}
    await complete(gemini, ask(response_format=ResponseFormat("json_schema", schema)))
    assert sent(fake)["generationConfig"] == {"maxOutputTokens": 64, "responseMimeType": "application/json"}


async def test_a_tool_taking_a_required_free_form_object_is_refused_naming_where(
    fake: FakeProvider, gemini: GeminiProvider
) -> None:
    tool = ToolSpec("tag", "Tag it.", {"type": "object", "properties": {"meta": {"type": "object"}}, "required": ["meta"]})
    assert "#/properties/meta" in await refused(gemini, ask(tools=(tool,)), fake)
