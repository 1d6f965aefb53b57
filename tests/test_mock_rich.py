"""The mock provider answers rich requests: values made valid for a JSON Schema (checked with
jsonschema's Draft 2020-12 validator, as the router checks a real model's answer), tool calls,
structured output, images, stop strings, streaming, and answers a test scripts."""

from __future__ import annotations

import random
import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from llm_router.providers.mock_patterns import from_pattern
from llm_router.providers.mock_values import value_for


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
