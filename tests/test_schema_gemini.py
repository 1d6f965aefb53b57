"""JSON Schema converted to the Schema object Gemini accepts (``providers/gemini_schema.py``), on
many shapes: hand-written ones, and pydantic's with ``$defs``, ``Optional`` fields, enums and
literals. Every converted schema must also pass the fake Gemini API's check of ``Schema`` fields."""

from __future__ import annotations

import enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from llm_router.providers.gemini_schema import NoSafeSchema, UnsendableSchema, parameters, response_schema

from .fakes.gemini import _schema_problem


def converted(schema: dict[str, Any]) -> dict[str, Any]:
    out = response_schema(schema)
    assert _schema_problem(out, "generation_config.response_schema") is None, out
    return out


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, {"type": "STRING"}),
        ({"type": "integer", "minimum": 1, "maximum": 9}, {"type": "INTEGER", "minimum": 1, "maximum": 9}),
        ({"type": "number", "exclusiveMinimum": 0}, {"type": "NUMBER", "minimum": 0}),
        ({"type": "boolean", "description": "yes?"}, {"type": "BOOLEAN", "description": "yes?"}),
        ({"type": "null"}, {"type": "NULL"}),
        ({"type": ["string", "null"]}, {"type": "STRING", "nullable": True}),
        ({"type": ["null", "integer"], "minimum": 0}, {"type": "INTEGER", "minimum": 0, "nullable": True}),
        ({"type": ["string", "integer"]}, {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}),
        ({"const": "yes"}, {"type": "STRING", "enum": ["yes"]}),
        ({"const": 3}, {"type": "INTEGER"}),  # Gemini's enum is strings only: the value left to the router
        ({"enum": ["a", "b", None]}, {"type": "STRING", "enum": ["a", "b"], "nullable": True}),
        ({"enum": [1, 2]}, {"type": "INTEGER"}),
        ({"type": "string", "format": "date-time"}, {"type": "STRING", "format": "date-time"}),
        ({"type": "string", "format": "email"}, {"type": "STRING"}),
        ({"type": "integer", "format": "int64"}, {"type": "INTEGER", "format": "int64"}),
        ({"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
         {"type": "STRING", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"}),
        ({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3, "uniqueItems": True},
         {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1, "maxItems": 3}),
        ({}, {"type": "STRING"}),
        ({"items": {"type": "string"}}, {"type": "ARRAY", "items": {"type": "STRING"}}),
        ({"examples": ["x"], "$comment": "c", "type": "string", "not": {"const": "y"}}, {"type": "STRING"}),
    ],
)
def test_each_keyword_becomes_gemini_s_or_is_left_out(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    assert converted(schema) == expected


def test_an_object_keeps_its_property_order_and_only_required_names_it_has() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "title": "Reading",
        "properties": {"zeta": {"type": "string"}, "alpha": {"type": "number"}},
        "required": ["zeta", "ghost"],
        "additionalProperties": False,
        "minProperties": 1,
    }
    assert converted(schema) == {
        "type": "OBJECT",
        "title": "Reading",
        "properties": {"zeta": {"type": "STRING"}, "alpha": {"type": "NUMBER"}},
        "propertyOrdering": ["zeta", "alpha"],
        "required": ["zeta"],
        "minProperties": 1,
    }


def test_tool_parameters_get_no_property_ordering_and_none_for_no_properties() -> None:
    schema = {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "string"}}}
    assert parameters(schema) == {"type": "OBJECT", "properties": {"b": {"type": "STRING"}, "a": {"type": "STRING"}}}
    assert parameters({"type": "object", "properties": {}, "additionalProperties": False}) is None
    assert parameters({"type": "object"}) is None


def test_refs_are_inlined_with_their_siblings_laid_over() -> None:
    schema = {
        "definitions": {"Id": {"type": "string", "description": "an id"}},
        "$defs": {"Pair": {"type": "array", "items": {"$ref": "#/definitions/Id"}}},
        "type": "object",
        "properties": {
            "one": {"$ref": "#/definitions/Id", "description": "the first"},
            "two": {"$ref": "#/$defs/Pair"},
            "esc": {"$ref": "#/properties/one~1two"},
            "one/two": {"type": "boolean"},
        },
    }
    out = converted(schema)["properties"]
    assert out["one"] == {"type": "STRING", "description": "the first"}
    assert out["two"] == {"type": "ARRAY", "items": {"type": "STRING", "description": "an id"}}
    assert out["esc"] == {"type": "BOOLEAN"}


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"},
         "#/$defs/N/properties/next/$ref"),
        ({"type": "object", "properties": {"self": {"$ref": "#"}}}, "#/properties/self/$ref"),
        ({"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"items": {"$ref": "#/$defs/A"}}}, "$ref": "#/$defs/A"},
         "#/$defs/B/items/$ref"),
    ],
    ids=["self", "root", "mutual"],
)
def test_a_recursive_ref_is_refused_naming_where(schema: dict[str, Any], where: str) -> None:
    with pytest.raises(UnsendableSchema) as info:
        response_schema(schema)
    assert where in str(info.value) and "recursive" in str(info.value)


@pytest.mark.parametrize(
    ("ref", "problem"),
    [("#/$defs/Missing", "points to nothing"), ("other.json#/X", "only references inside the schema")],
)
def test_a_ref_that_cannot_be_inlined_is_refused(ref: str, problem: str) -> None:
    with pytest.raises(UnsendableSchema) as info:
        response_schema({"type": "object", "properties": {"x": {"$ref": ref}}})
    assert problem in str(info.value) and "#/properties/x/$ref" in str(info.value)


def test_a_schema_that_explodes_once_inlined_is_refused() -> None:
    defs: dict[str, Any] = {"L0": {"type": "string"}}
    for i in range(1, 16):  # each level refers twice to the one below: 2**15 leaves inlined
        defs[f"L{i}"] = {"type": "array", "items": {"anyOf": [{"$ref": f"#/$defs/L{i - 1}"}] * 2}}
    with pytest.raises(UnsendableSchema) as info:
        response_schema({"$defs": defs, "$ref": "#/$defs/L15"})
    assert "once its $refs are inlined" in str(info.value)


def test_any_of_with_null_is_nullable_and_one_of_is_any_of() -> None:
    assert converted({"anyOf": [{"type": "string"}, {"type": "null"}]}) == {"type": "STRING", "nullable": True}
    assert converted({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}], "description": "d"}) == {
        "anyOf": [{"type": "STRING", "nullable": True}, {"type": "INTEGER", "nullable": True}],
        "description": "d",
    }


def test_all_of_is_merged() -> None:
    schema = {"allOf": [
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
    ]}
    assert converted(schema) == {
        "type": "OBJECT",
        "properties": {"a": {"type": "STRING"}, "b": {"type": "INTEGER"}},
        "required": ["a", "b"],
        "propertyOrdering": ["a", "b"],
    }


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    postcode: str | None = None


class Person(BaseModel):
    name: str = Field(description="Full name")
    age: int | None = Field(default=None, ge=0)
    favourite: Color
    mood: Literal["calm", "busy"] = "calm"
    home: Address
    previous: list[Address] = []
    work: Address | None = None
    tags: dict[str, str] = {}


def test_a_pydantic_model_with_defs_optionals_enums_and_literals_converts() -> None:
    address = {
        "type": "OBJECT",
        "title": "Address",
        "properties": {
            "street": {"type": "STRING", "title": "Street"},
            "postcode": {"type": "STRING", "title": "Postcode", "default": None, "nullable": True},
        },
        "propertyOrdering": ["street", "postcode"],
        "required": ["street"],
    }
    assert converted(Person.model_json_schema()) == {
        "type": "OBJECT",
        "title": "Person",
        "properties": {
            "name": {"type": "STRING", "title": "Name", "description": "Full name"},
            "age": {"type": "INTEGER", "minimum": 0, "title": "Age", "default": None, "nullable": True},
            "favourite": {"type": "STRING", "enum": ["red", "blue"], "title": "Color"},
            "mood": {"type": "STRING", "enum": ["calm", "busy"], "title": "Mood", "default": "calm"},
            "home": address,
            "previous": {"type": "ARRAY", "items": address, "title": "Previous", "default": []},
            "work": {**address, "default": None, "nullable": True},
        },  # tags, a free-form dict, is optional: left out (Gemini refuses an object of no properties)
        "propertyOrdering": ["name", "age", "favourite", "mood", "home", "previous", "work"],
        "required": ["name", "favourite", "home"],
    }


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


def test_a_recursive_pydantic_model_is_refused_naming_where() -> None:
    with pytest.raises(UnsendableSchema) as info:
        response_schema(Tree.model_json_schema())
    assert "#/$defs/Tree/properties/children/items/$ref '#/$defs/Tree'" in str(info.value)


def test_a_schema_nested_too_deep_is_refused_not_a_crash() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(UnsendableSchema):
        response_schema(schema)


def test_the_original_schema_is_never_changed() -> None:
    schema = Person.model_json_schema()
    before = repr(schema)
    response_schema(schema)
    parameters(schema)
    assert repr(schema) == before


# Shapes Gemini refuses (400) though each keyword is its own: narrowed where every answer to the
# narrowed schema is valid for the original, else no safe conversion (NoSafeSchema, naming where).


def test_an_array_without_items_gets_string_items_gemini_takes() -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array"}}, "required": ["tags"]}
    assert converted(schema)["properties"]["tags"] == {"type": "ARRAY", "items": {"type": "STRING"}}
    assert parameters(schema) == {"type": "OBJECT", "properties": {"tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
                                  "required": ["tags"]}


def test_an_untyped_property_becomes_a_string_gemini_takes() -> None:
    schema = {"type": "object", "properties": {"x": {}, "y": True, "z": {"description": "any"}}}
    assert converted(schema)["properties"] == {
        "x": {"type": "STRING"}, "y": {"type": "STRING"}, "z": {"type": "STRING", "description": "any"},
    }


def test_an_untyped_branch_of_an_any_of_becomes_a_string() -> None:
    assert converted({"anyOf": [{"type": "integer"}, {}]}) == {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]}


def test_a_ref_s_description_does_not_bring_a_type_over_its_target() -> None:
    schema = {"$defs": {"N": {"type": "integer"}}, "$ref": "#/$defs/N", "description": "count"}
    assert converted(schema) == {"type": "INTEGER", "description": "count"}


def test_a_required_free_form_object_has_no_safe_conversion_naming_where() -> None:
    schema = {"type": "object", "properties": {"meta": {"type": "object", "additionalProperties": {"type": "string"}}},
              "required": ["meta"]}
    with pytest.raises(NoSafeSchema) as info:
        response_schema(schema)
    assert info.value.path == "#/properties/meta"
    with pytest.raises(NoSafeSchema):
        parameters(schema)


def test_an_optional_free_form_object_is_left_out() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "meta": {"type": "object"}}}
    assert converted(schema) == {"type": "OBJECT", "properties": {"name": {"type": "STRING"}}}


def test_a_top_level_free_form_object_has_no_safe_conversion_as_a_response_schema() -> None:
    with pytest.raises(NoSafeSchema) as info:
        response_schema({"type": "object", "additionalProperties": True})
    assert info.value.path == "#"


def test_a_tool_taking_a_free_form_object_sends_no_parameters() -> None:
    assert parameters({"type": "object", "additionalProperties": True}) is None


def test_a_tuple_has_no_safe_conversion() -> None:
    with pytest.raises(NoSafeSchema) as info:
        response_schema({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]})
    assert "prefixItems" in str(info.value)


@pytest.mark.parametrize("schema", [{"not": {"type": "string"}}, {"enum": [1, "a"]}, {"const": {"a": 1}}])
def test_an_untyped_schema_constraining_its_values_has_no_safe_conversion(schema: dict[str, Any]) -> None:
    with pytest.raises(NoSafeSchema):
        response_schema({"type": "object", "properties": {"v": schema}, "required": ["v"]})


def test_several_types_give_an_array_branch_items_and_leave_out_an_object_branch_of_no_properties() -> None:
    assert converted({"type": ["object", "array", "string"]}) == {
        "anyOf": [{"type": "ARRAY", "items": {"type": "STRING"}}, {"type": "STRING"}],
    }
    with pytest.raises(NoSafeSchema):
        response_schema({"type": ["object", "null"]})
