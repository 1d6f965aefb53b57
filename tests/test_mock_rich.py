"""The mock provider answers rich requests: values made valid for a JSON Schema (checked with
jsonschema's Draft 2020-12 validator, as the router checks a real model's answer), tool calls,
structured output, images, stop strings, streaming, and answers a test scripts."""

from __future__ import annotations

import json
import random
import re
from collections import deque
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from llm_router.content import FINISH_REASONS, ImagePart, ResponseFormat, TextPart, ToolCall, ToolSpec
from llm_router.providers.mock import IMAGE_TOKENS, MockProvider, Scripted
from llm_router.providers.mock_patterns import from_pattern
from llm_router.providers.mock_values import value_for
from llm_router.types import Completion, CompletionRequest, InvalidRequest, Message, ServerError, Usage

pytestmark = pytest.mark.anyio


def assert_valid(schema: Any, *values: Any) -> None:
    """Each value passes ``schema`` under Draft 2020-12 (the schema itself checked first)."""
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for value in values:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
        assert not errors, (errors, value)


# --- pydantic-generated schemas ------------------------------------------------------------------


class Colour(StrEnum):
    red = "red"
    green = "green"


class Address(BaseModel):
    street: str = Field(min_length=3, max_length=40)
    postcode: str = Field(pattern=r"^[0-9]{5}(-[0-9]{4})?$")
    country: Literal["FR", "DE", "US"] = "FR"


class LineItem(BaseModel):
    sku: Annotated[str, Field(pattern=r"^[A-Z]{3}-\d{3,6}$")]
    quantity: int = Field(ge=1, le=99)
    unit_price: float = Field(gt=0, le=1000, multiple_of=0.01)
    discount: float | None = Field(default=None, ge=0, lt=1)


class Invoice(BaseModel):
    id: UUID
    issued: date
    sent_at: datetime | None = None
    email: str = Field(json_schema_extra={"format": "email"})
    colour: Colour
    billing: Address
    shipping: Address | None = None
    items: list[LineItem] = Field(min_length=1, max_length=5)
    tags: set[str] = Field(default_factory=set, max_length=3)
    notes: dict[str, int] = Field(default_factory=dict)
    pair: tuple[int, str]


class Node(BaseModel):
    label: str
    children: list[Node] = []
    parent: Node | None = None


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    others: list[Cat | Dog] = Field(default_factory=list)


class Extraction(BaseModel):
    """What an agent asks a cheap model for: fields pulled out of a text."""

    title: str
    authors: list[str] = Field(min_length=1)
    year: int | None = Field(default=None, ge=1900, le=2100)
    keywords: list[Annotated[str, Field(max_length=20)]] = Field(default_factory=list, max_length=8)
    confidence: Annotated[float, Field(ge=0, le=1)]


PYDANTIC_MODELS: list[type[BaseModel]] = [Invoice, Node, Pet, Extraction, Address, LineItem]


@pytest.mark.parametrize("model", PYDANTIC_MODELS, ids=lambda m: m.__name__)
def test_values_made_for_pydantic_schemas_pass_their_validation(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    values = [value_for(schema, random.Random(seed)) for seed in range(30)]
    assert_valid(schema, *values)
    for value in values:
        model.model_validate(value)


def test_a_recursive_schema_gives_a_small_finite_value() -> None:
    value = value_for(Node.model_json_schema(), random.Random(3))

    def size(node: dict[str, Any]) -> int:
        kids = [*node.get("children", []), *([node["parent"]] if node.get("parent") else [])]
        return 1 + sum(size(k) for k in kids)

    assert size(value) < 60


# --- hand-written schemas: each keyword the generator honours -------------------------------------

SCHEMAS: list[dict[str, Any]] = [
    {},
    {"type": "null"},
    {"type": ["null", "integer"]},
    {"const": {"fixed": [1, 2]}},
    {"enum": ["a", 2, None]},
    {"type": "string", "enum": [1, "one"]},
    {"type": "string", "minLength": 30},
    {"type": "string", "maxLength": 2},
    {"type": "string", "minLength": 7, "maxLength": 7},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uuid", "maxLength": 10},
    {"type": "string", "pattern": "^(cat|dog)s?$"},
    {"type": "integer", "minimum": -5, "maximum": -3},
    {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 12},
    {"type": "integer", "multipleOf": 7, "minimum": 100},
    {"type": "integer", "multipleOf": 1.5},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001},
    {"type": "number", "multipleOf": 0.1, "minimum": 0.25, "maximum": 0.75},
    {"type": "number", "maximum": -1e6},
    {"type": "boolean"},
    {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
    {"type": "array", "items": {"enum": ["x", "y", "z"]}, "uniqueItems": True, "minItems": 3},
    {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
    {"type": "array", "contains": {"type": "integer", "minimum": 5}, "minContains": 2},
    {"type": "array", "maxItems": 0},
    {"type": "object", "additionalProperties": False, "properties": {"a": {"type": "string"}}},
    {"type": "object", "minProperties": 3, "additionalProperties": {"type": "integer"}},
    {"type": "object", "maxProperties": 1, "properties": {"a": {}, "b": {}, "c": {}}, "required": ["b"]},
    {"type": "object", "required": ["x-1"], "patternProperties": {"^x-": {"type": "integer"}}},
    {"anyOf": [{"type": "string", "format": "email"}, {"type": "integer"}]},
    {"oneOf": [{"type": "object", "properties": {"k": {"const": "a"}}, "required": ["k"]},
               {"type": "object", "properties": {"k": {"const": "b"}}, "required": ["k"]}]},
    {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]},
               {"properties": {"a": {"minimum": 50}, "b": {"type": "string"}}, "required": ["b"]}]},
    {"$defs": {"pos": {"type": "integer", "minimum": 1}}, "type": "array", "items": {"$ref": "#/$defs/pos"}},
    {"definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"type": "string", "minLength": 4}}, "$ref": "#/definitions/a"},
    {"$defs": {"list": {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/$defs/list"}, {"type": "null"}]}},
                        "required": ["next"]}}, "$ref": "#/$defs/list"},
    {"$defs": {"tree": {"type": "array", "items": {"$ref": "#/$defs/tree"}}}, "$ref": "#/$defs/tree"},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date"}, "ip": {"type": "string", "format": "ipv4"},
                                      "host": {"type": "string", "format": "hostname"}, "site": {"type": "string", "format": "uri"}},
     "required": ["when", "ip", "host", "site"]},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: str(s)[:60])
def test_values_made_for_each_keyword_pass_validation(schema: dict[str, Any]) -> None:
    assert_valid(schema, *(value_for(schema, random.Random(seed)) for seed in range(25)))


def test_formats_are_plausible_strings_of_their_kind() -> None:
    rng = random.Random(0)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", value_for({"type": "string", "format": "date"}, rng))
    assert "@" in value_for({"type": "string", "format": "email"}, rng)
    UUID(value_for({"type": "string", "format": "uuid"}, rng))
    datetime.fromisoformat(value_for({"type": "string", "format": "date-time"}, rng))


def test_the_same_seed_gives_the_same_value_and_another_seed_may_differ() -> None:
    schema = Invoice.model_json_schema()
    assert value_for(schema, random.Random(7)) == value_for(schema, random.Random(7))
    assert len({repr(value_for(schema, random.Random(s))) for s in range(5)}) > 1


@pytest.mark.parametrize(
    "pattern",
    [r"^[A-Z]{2}\d{4}$", r"^\w+@\w+\.(com|org)$", r"^(?:\+33|0)[1-9](\d{2}){4}$", r"abc", r"^[^0-9]{3,}$",
     r"^(a|b)\1$", r"^\s*\S+$", r"^#[0-9a-fA-F]{6}$", r"^[a-z]+(-[a-z]+)*$"],
)
def test_strings_made_for_a_pattern_match_it(pattern: str) -> None:
    for seed in range(20):
        text = from_pattern(pattern, random.Random(seed), 0, None)
        assert text is not None and re.search(pattern, text), text


def test_a_pattern_the_bounds_rule_out_gives_no_string_rather_than_a_wrong_one() -> None:
    assert from_pattern(r"^a{5}$", random.Random(0), 0, 3) is None
    assert from_pattern(r"(unclosed", random.Random(0), 0, None) is None


# --- property tests over simple schemas ---------------------------------------------------------

_bound = st.integers(min_value=-1000, max_value=1000)


@st.composite
def _string_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    low = draw(st.none() | st.integers(0, 40))
    high = draw(st.none() | st.integers(low or 0, 60))
    if low is not None:
        schema["minLength"] = low
    if high is not None:
        schema["maxLength"] = high
    if draw(st.booleans()):
        schema["format"] = draw(st.sampled_from(["date", "email", "uuid", "uri", "ipv6", "time", "duration"]))
    return schema


@st.composite
def _number_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": draw(st.sampled_from(["integer", "number"]))}
    low, high = sorted([draw(_bound), draw(_bound)])
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high + 2
    if draw(st.booleans()):
        schema["multipleOf"] = draw(st.sampled_from([1, 2, 5, 0.5, 0.25, 3]))
    return schema


_leaves = (_string_schemas() | _number_schemas() | st.just({"type": "boolean"}) | st.just({"type": "null"})
           | st.lists(st.integers(0, 5) | st.text(max_size=3), min_size=1, max_size=4, unique=True).map(lambda e: {"enum": e}))


def _containers(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    arrays = st.builds(
        lambda items, low, extra: {"type": "array", "items": items, "minItems": low, "maxItems": low + extra},
        children, st.integers(0, 3), st.integers(0, 3),
    )
    objects = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), children, max_size=4).flatmap(
        lambda props: st.builds(
            lambda required, closed: {"type": "object", "properties": props, "required": required,
                                      "additionalProperties": not closed},
            st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([]),
            st.booleans(),
        )
    )
    unions = st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches})
    return arrays | objects | unions


@settings(max_examples=50)
@given(st.recursive(_leaves, _containers, max_leaves=12), st.integers(0, 2**32))
def test_values_made_for_any_simple_schema_pass_validation(schema: dict[str, Any], seed: int) -> None:
    assert_valid(schema, value_for(schema, random.Random(seed)))


# --- the provider's answers -----------------------------------------------------------------------

WEATHER = ToolSpec("get_weather", "The weather in a city", {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 2}, "unit": {"enum": ["celsius", "fahrenheit"]},
                   "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "unit"], "additionalProperties": False,
})
SEARCH = ToolSpec("search", "Search the web", Extraction.model_json_schema())
PNG = ImagePart("image/png", data="iVBORw0KGgo=", size_bytes=812, width=64, height=48)
JPEG = ImagePart("image/jpeg", url="https://example.com/cat.jpg")


def ask(text: str = "hello", **fields: Any) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", text),), **{"max_tokens": 400, **fields})


async def run(request: CompletionRequest, provider: MockProvider | None = None, model: str = "m") -> tuple[Completion, list[str]]:
    """The answer and, asked again as a stream by a fresh provider, the pieces it streamed."""
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    done = await (provider or MockProvider("openai")).complete(model, request)
    streamed = await MockProvider("openai").complete(model, request, on_text=on_text)
    assert streamed == done or provider is not None
    return done, pieces


def assert_call_is_valid(completion: Completion, tool: ToolSpec) -> ToolCall:
    assert completion.finish_reason == "tool_calls" and completion.text == ""
    (call,) = completion.tool_calls
    assert call.name == tool.name and re.fullmatch(r"call_[0-9a-f]{24}", call.id)
    assert_valid(tool.input_schema, call.arguments)
    return call


async def test_a_plain_text_answer_is_the_one_the_mock_always_gave() -> None:
    """The text, usage and stream of a plain request, as before rich requests were answered."""
    done, pieces = await run(CompletionRequest(messages=(Message("user", "hello"),), max_tokens=50, system="be brief"))

    assert done == Completion(
        text="[mock openai:m] a key first key key key the them then reply answer them of uncertain on the uncertain "
             "facts short each short with answer clear note a reply the and then what each gives the facts the the "
             "the with supports first clear the supports part remains note with remains key",
        model="m", usage=Usage(input_tokens=8, output_tokens=50), finish_reason="length", response_id=None,
    )
    assert "".join(pieces) == done.text and len(pieces) == len(done.text.split(" "))


@pytest.mark.parametrize("choice", ["required", "get_weather"])
async def test_a_forced_tool_is_called_with_arguments_valid_for_its_schema(choice: str) -> None:
    done, pieces = await run(ask("plan my trip", tools=(WEATHER, SEARCH), tool_choice=choice))

    assert_call_is_valid(done, WEATHER)
    assert pieces == []  # a tool call comes whole, nothing streams


async def test_required_calls_the_tool_the_user_names_and_a_named_choice_that_tool() -> None:
    done, _ = await run(ask("please search for it", tools=(WEATHER, SEARCH), tool_choice="required"))
    assert_call_is_valid(done, SEARCH)
    done, _ = await run(ask("please search for it", tools=(WEATHER, SEARCH), tool_choice="get_weather"))
    assert_call_is_valid(done, WEATHER)


async def test_auto_calls_a_tool_the_last_user_turn_mentions_and_otherwise_answers_in_text() -> None:
    called, _ = await run(ask("What does GET_WEATHER say for Lyon?", tools=(WEATHER, SEARCH)))
    assert_call_is_valid(called, WEATHER)

    for text in ("what is the weather like?", "research this", "get_weather_now"):
        done, pieces = await run(ask(text, tools=(WEATHER, SEARCH)))
        assert done.tool_calls == () and done.finish_reason == "stop" and done.text.startswith("[mock openai:m]")
        assert "".join(pieces) == done.text


async def test_none_answers_in_text_even_when_a_tool_is_named() -> None:
    done, _ = await run(ask("call get_weather", tools=(WEATHER,), tool_choice="none"))
    assert done.tool_calls == () and done.text


async def test_after_a_tool_turn_the_answer_is_text_that_quotes_the_result() -> None:
    first, _ = await run(ask("get_weather in Lyon", tools=(WEATHER,)))
    (call,) = first.tool_calls
    request = CompletionRequest(
        messages=(Message("user", "get_weather in Lyon"), Message("assistant", "", tool_calls=(call,)),
                  Message("tool", '{"temp": 21, "sky": "clear"}', tool_call_id=call.id, name="get_weather")),
        max_tokens=400, tools=(WEATHER,),
    )
    done, _ = await run(request)

    assert done.tool_calls == () and done.finish_reason == "stop"
    assert 'the tool get_weather returned: {"temp": 21, "sky": "clear"}' in done.text


async def test_a_named_choice_that_is_not_offered_is_refused_before_answering() -> None:
    with pytest.raises(InvalidRequest, match="'lookup'.*get_weather"):
        await MockProvider("openai").complete("m", ask(tools=(WEATHER,), tool_choice="lookup"))


async def test_tool_call_ids_come_from_the_request_the_same_each_time_and_differ_between_requests() -> None:
    a, _ = await run(ask("get_weather in Lyon", tools=(WEATHER,)))
    b, _ = await run(ask("get_weather in Lyon", tools=(WEATHER,)))
    c, _ = await run(ask("get_weather in Nice", tools=(WEATHER,)))
    assert a == b and a.tool_calls[0].id != c.tool_calls[0].id


@pytest.mark.parametrize("model", PYDANTIC_MODELS, ids=lambda m: m.__name__)
async def test_structured_output_is_json_valid_for_the_schema_and_streams_in_pieces(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    done, pieces = await run(ask("extract", max_tokens=4000, response_format=ResponseFormat("json_schema", schema)))

    assert done.finish_reason == "stop" and done.tool_calls == ()
    assert_valid(schema, json.loads(done.text))
    assert "".join(pieces) == done.text and (len(pieces) > 1 or len(done.text) <= 16)


async def test_json_object_is_a_small_object_that_says_which_images_it_saw() -> None:
    message = Message("user", "describe", parts=(TextPart("describe"), PNG))
    done, _ = await run(CompletionRequest(messages=(message,), max_tokens=400, response_format=ResponseFormat("json_object")))

    value = json.loads(done.text)
    assert isinstance(value, dict) and value["answer"] and "saw 1 image" in value["seen"]


async def test_structured_output_past_max_tokens_is_cut_and_ends_with_length() -> None:
    schema = Invoice.model_json_schema()
    done, pieces = await run(ask("extract", max_tokens=10, response_format=ResponseFormat("json_schema", schema)))

    assert done.finish_reason == "length" and len(done.text) == 40
    assert done.usage is not None and done.usage.output_tokens == 10
    assert "".join(pieces) == done.text


async def test_the_answer_says_how_many_images_it_saw_and_counts_each_in_its_usage() -> None:
    text_only = Message("user", "compare these")
    with_images = Message("user", "compare these", parts=(TextPart("compare "), PNG, TextPart("these"), JPEG))
    plain, _ = await run(CompletionRequest(messages=(text_only,), max_tokens=400))
    seen, _ = await run(CompletionRequest(messages=(with_images,), max_tokens=400))

    assert "(saw 2 images: image/png 64x48 812 bytes, image/jpeg by URL)" in seen.text
    assert seen.usage is not None and plain.usage is not None
    assert seen.usage.input_tokens == plain.usage.input_tokens + 2 * IMAGE_TOKENS == plain.usage.input_tokens + 170


async def test_tools_and_schemas_offered_count_as_input_tokens() -> None:
    plain, _ = await run(ask("hi"))
    offered, _ = await run(ask("hi", tools=(WEATHER, SEARCH)))
    assert plain.usage is not None and offered.usage is not None
    assert offered.usage.input_tokens > plain.usage.input_tokens + 100


@pytest.mark.parametrize("fields", [{}, {"tools": (WEATHER,)}, {"response_format": ResponseFormat("json_object")}],
                         ids=["plain", "rich text", "json"])
async def test_the_answer_ends_before_the_first_stop_string_it_holds(fields: dict[str, Any]) -> None:
    whole, _ = await run(ask("tell me", **fields))
    stop = whole.text.split(" ")[4]
    done, pieces = await run(ask("tell me", stop=("never there", stop), **fields))

    assert done.text == whole.text[:whole.text.index(stop)] and stop not in done.text
    assert done.finish_reason == "stop" and "".join(pieces) == done.text
    assert done.usage is not None and done.usage.output_tokens == max(1, (len(done.text) + 3) // 4)


async def test_stop_strings_that_never_occur_change_nothing() -> None:
    whole, _ = await run(ask("tell me"))
    done, _ = await run(ask("tell me", stop=("zzz",), top_p=0.5))
    assert done == whole


async def test_a_seed_changes_the_words_and_the_same_seed_gives_the_same_answer() -> None:
    unseeded, _ = await run(ask("tell me"))
    one, _ = await run(ask("tell me", seed=1))
    again, _ = await run(ask("tell me", seed=1))
    two, _ = await run(ask("tell me", seed=2))
    assert one == again and len({unseeded.text, one.text, two.text}) == 3


@pytest.mark.parametrize("max_tokens", [1, 3, 20, 400])
async def test_every_finish_reason_is_one_the_router_knows(max_tokens: int) -> None:
    provider = MockProvider("openai")
    for fields in ({}, {"tools": (WEATHER,), "tool_choice": "required"}, {"stop": ("the",)},
                   {"response_format": ResponseFormat("json_schema", Invoice.model_json_schema())}):
        done = await provider.complete("m", ask("go", **{**fields, "max_tokens": max_tokens}))
        assert done.finish_reason in FINISH_REASONS


# --- scripted outcomes ----------------------------------------------------------------------------


async def test_scripted_answers_come_in_order_with_errors_and_then_the_mock_answers_again() -> None:
    provider = MockProvider("openai")
    given_answer = Completion(text="as scripted", model="other-model", usage=Usage(3, 4), finish_reason="content_filter")
    provider.fail_next(ServerError("boom", provider="openai", status=500))
    provider.answer_next('{"name": ', given_answer)
    provider.fail_next(None)
    request = ask("extract", response_format=ResponseFormat("json_object"))

    with pytest.raises(ServerError) as info:
        await provider.complete("m", request)
    invalid = await provider.complete("m", request)
    kept = await provider.complete("m", request)
    own = await provider.complete("m", request)

    assert info.value.model == "m"
    assert invalid.text == '{"name": ' and invalid.model == "m" and invalid.finish_reason == "stop"
    assert kept is given_answer
    assert json.loads(own.text)["answer"] and provider.calls == 4 and provider.script == deque()


async def test_a_scripted_answer_counts_usage_as_given_or_as_the_mock_counts() -> None:
    provider = MockProvider("openai")
    provider.answer_next(Scripted("twelve chars", usage=Usage(100, 7)), Scripted("twelve chars", usage=None),
                         Scripted("twelve chars"))
    given_usage = await provider.complete("m", ask("hello"))
    none = await provider.complete("m", ask("hello"))
    counted = await provider.complete("m", ask("hello"))
    own = await provider.complete("m", ask("hello"))

    assert given_usage.usage == Usage(100, 7) and none.usage is None
    assert own.usage is not None and counted.usage == Usage(own.usage.input_tokens, 3)


async def test_a_scripted_tool_call_gets_an_id_from_the_request_and_finishes_with_tool_calls() -> None:
    provider = MockProvider("openai")
    kept = ToolCall("call_given", "search", {"q": "x"})
    provider.answer_next(Scripted(tool_calls=(("get_weather", {"city": 1}), kept)),
                         Scripted(tool_calls=(("get_weather", {"city": 1}),), finish="length"))
    request = ask("go", tools=(WEATHER, SEARCH))
    done = await provider.complete("m", request)
    cut = await provider.complete("m", request)

    assert done.finish_reason == "tool_calls" and done.text == ""
    assert re.fullmatch(r"call_[0-9a-f]{24}", done.tool_calls[0].id) and done.tool_calls[1] is kept
    assert done.tool_calls[0].arguments == {"city": 1}  # as scripted, even when it breaks the schema
    assert cut.finish_reason == "length"


async def test_a_scripted_answer_streams_its_text() -> None:
    provider = MockProvider("openai")
    provider.answer_next("one two three")
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    done = await provider.complete("m", ask(), on_text=on_text)
    assert pieces == ["one", " two", " three"] and done.text == "one two three"


async def test_the_provider_keeps_the_last_request_it_was_asked() -> None:
    provider = MockProvider("openai")
    request = ask("get_weather", tools=(WEATHER,))
    await provider.complete("m", request)
    assert provider.last_request is request


_KEYWORDS = ["type", "properties", "required", "items", "prefixItems", "enum", "const", "anyOf", "oneOf", "allOf",
             "$ref", "minimum", "maximum", "exclusiveMinimum", "multipleOf", "minLength", "maxLength", "pattern",
             "format", "minItems", "maxItems", "uniqueItems", "contains", "additionalProperties", "minProperties", "$defs"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["string", "integer", "object", "array", "#", "#/$defs/a", "^(a|b)*$", "(", "date", ".{2000}"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYWORDS + ["a", "b"]), inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(_KEYWORDS), _json_values, max_size=6), st.integers(0, 2**32))
def test_any_schema_at_all_gives_a_value_without_raising(schema: dict[str, Any], seed: int) -> None:
    json.dumps(value_for(schema, random.Random(seed)))


@pytest.mark.parametrize("schema", [
    {"type": "array", "minItems": 10**9, "items": {"type": "array", "minItems": 10**9}},
    {"type": "string", "minLength": 10**12},
    {"type": "object", "minProperties": 10**9},
    {"type": "string", "pattern": "^((a{1000}){1000}){1000}$"},
    {"type": "string", "pattern": "^(){1000000000}$"},
    {"type": "number", "minimum": 1e308, "maximum": float("inf")},
])
def test_a_schema_asking_for_a_huge_value_is_answered_quickly_with_a_bounded_one(schema: dict[str, Any]) -> None:
    assert len(json.dumps(value_for(schema, random.Random(0)))) < 1_000_000


@given(st.text(alphabet="ab()[]{}|*+?^$\\.-,019dws:=!<>P", max_size=14), st.integers(0, 99))
def test_any_pattern_at_all_gives_a_matching_string_or_none(pattern: str, seed: int) -> None:
    text = from_pattern(pattern, random.Random(seed), 0, None)
    assert text is None or re.search(pattern, text)
