"""A tool's arguments: the input schema it publishes, and validation that speaks the router's words.

The tools validate their arguments with the pydantic models in ``calls`` (``extra="forbid"``, so
the published schema says ``additionalProperties: false`` and an unknown argument is refused, not
silently dropped). A validation failure becomes an ``InvalidInput`` naming the field and what it
may be, in the same form as the engine's own errors::

    quality: 'hgih' is not allowed (allowed: low, medium, high, critical, auto)
    max_token: is not an argument of complete; did you mean 'max_tokens'?

never pydantic's text. The "allowed" part is worked out once per field from the published schema
itself, so the message and the schema cannot disagree.

Clients such as Claude Desktop send lists and objects as JSON text; a string given for an
argument that is not plain text is read as JSON when it holds a list, an object, true, false or
null (the rule the SDK applies). Free text (``FREE_TEXT``) is always taken as given: a prompt that
happens to be a JSON array is a prompt.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from .calls import DATE_PATTERN
from .types import InvalidInput

__all__ = ["FREE_TEXT", "ToolArguments"]

FREE_TEXT = frozenset({"prompt", "system", "tag", "task_type"})
"""Arguments that are text to pass on as given, whatever it looks like."""

M = TypeVar("M", bound=BaseModel)

_JSON_TEXT_HEADS = frozenset("[{")
_JSON_TEXT_WORDS = frozenset({"true", "false", "null"})
_SHOWN_CHARS = 60


def _show(value: Any) -> str:
    """A caller's value as an error message quotes it: short, on one line, never the whole of it."""
    if isinstance(value, str):
        text = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
        return repr(text)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _expectation(schema: Mapping[str, Any], defs: Mapping[str, Any], *, nullable_said: bool) -> str:
    """What a JSON schema accepts, in words ("an integer from 1 to 1000000", "low, medium, high")."""
    if "$ref" in schema:
        return _expectation(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, nullable_said=nullable_said)
    if "anyOf" in schema:
        members = [m for m in schema["anyOf"] if m.get("type") != "null"]
        words = " or ".join(_expectation(m, defs, nullable_said=nullable_said) for m in members)
        if nullable_said and len(members) < len(schema["anyOf"]):
            words += ", or null"
        return words
    if "enum" in schema:
        return ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        noun = "an integer" if kind == "integer" else "a number"
        low, high = schema.get("minimum"), schema.get("maximum")
        above = schema.get("exclusiveMinimum")
        if low is not None and high is not None:
            return f"{noun} from {_number(low)} to {_number(high)}"
        if above is not None and high is not None:
            return f"{noun} above {_number(above)}, at most {_number(high)}"
        if low is not None:
            return f"{noun} >= {_number(low)}"
        if high is not None:
            return f"{noun} <= {_number(high)}"
        return noun
    if kind == "string":
        if schema.get("pattern") == DATE_PATTERN:
            return "a date, YYYY-MM-DD"
        if schema.get("minLength") == 1:
            return "a non-empty string"
        if "maxLength" in schema:
            return f"a string of at most {schema['maxLength']} characters"
        return "a string"
    if kind == "array":
        return "a list of " + _plural(_expectation(schema.get("items", {}), defs, nullable_said=False))
    if kind == "object":
        names = list(schema.get("properties", {}))
        return "an object with " + ", ".join(names) if names else "an object"
    if kind == "boolean":
        return "true or false"
    return "a value of the documented type"


def _plural(words: str) -> str:
    for single, many in (("an object with ", "objects with "), ("a string", "strings"), ("an integer", "integers"),
                         ("a number", "numbers")):
        if words.startswith(single):
            return many + words[len(single):]
    return words


def _is_union(annotation: Any) -> bool:
    """A field that takes one of several non-null shapes (``str | list[str]``): pydantic then tags
    each member's error with the member's name, which is no field path."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_union(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return sum(arg is not type(None) for arg in typing.get_args(annotation)) > 1
    return False


class ToolArguments(Generic[M]):
    """One tool's arguments: ``schema`` is its published ``inputSchema``; ``parse`` validates a call's
    arguments into the model, or raises ``InvalidInput``. Everything about the fields is worked out
    here, once; a call pays for one pydantic validation and nothing else."""

    def __init__(self, tool: str, model: type[M], *, allowed: Mapping[str, str] | None = None) -> None:
        self.tool = tool
        self.model = model
        self.schema: dict[str, Any] = model.model_json_schema()
        self.schema.pop("description", None)  # the model's docstring is for this code's readers
        self.schema["title"] = f"{tool}Arguments"
        self.names: tuple[str, ...] = tuple(model.model_fields)
        defs = self.schema.get("$defs", {})
        required = set(self.schema.get("required", ()))
        self._allowed: dict[tuple[str, ...], str] = {}
        for name, prop in self.schema["properties"].items():
            self._allowed[(name,)] = _expectation(prop, defs, nullable_said=name in required)
            # Fields of nested objects (a message's role and content), keyed with "*" for the index.
            items = prop.get("items") or next((m.get("items") for m in prop.get("anyOf", ()) if "items" in m), None)
            if items and "$ref" in items:
                nested = defs[items["$ref"].rsplit("/", 1)[-1]]
                for sub, sub_prop in nested.get("properties", {}).items():
                    self._allowed[(name, "*", sub)] = _expectation(sub_prop, defs, nullable_said=False)
                self._allowed[(name, "*")] = _expectation(nested, defs, nullable_said=False)
        for name, words in (allowed or {}).items():  # a nested field as "messages.*.content"
            self._allowed[tuple(name.split("."))] = words
        self._unions = frozenset(n for n, f in model.model_fields.items() if _is_union(f.annotation))
        self._json_text = frozenset(n for n, f in model.model_fields.items() if n not in FREE_TEXT and f.annotation is not str)

    def parse(self, arguments: Mapping[str, Any] | None) -> M:
        """The call's arguments as the tool's model.

        Raises:
            InvalidInput: naming the first wrong argument (unknown ones first) and what it may be.
        """
        data = dict(arguments) if arguments else {}
        for name, value in data.items():
            if isinstance(value, str) and name in self._json_text:
                data[name] = self._from_json_text(value)
        try:
            return self.model.model_validate(data)
        except ValidationError as e:
            raise self._explain(e, data) from None

    @staticmethod
    def _from_json_text(value: str) -> Any:
        text = value.strip()
        if not text or (text[0] not in _JSON_TEXT_HEADS and text not in _JSON_TEXT_WORDS):
            return value
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            return value
        return value if isinstance(parsed, str | int | float) and not isinstance(parsed, bool) else parsed

    def _explain(self, error: ValidationError, data: Mapping[str, Any]) -> InvalidInput:
        problems = sorted(error.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
        first = self._one(problems[0], data)
        others = sorted({self._path(p)[0] for p in problems[1:]} - {first.field})
        if others:
            more = f"; more to fix: {', '.join(others)}"
            return InvalidInput(first.field, first.problem + more, allowed=first.allowed)
        return first

    def _path(self, problem: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
        """The field as a caller names it ("messages[2].role") and its key in ``_allowed``."""
        loc = problem["loc"]
        if not loc:
            return "arguments", ()
        head = str(loc[0])
        if head in self._unions:
            return head, (head,)
        shown, key = head, [head]
        for part in loc[1:]:
            if isinstance(part, int):
                shown += f"[{part}]"
                key.append("*")
            else:
                shown += f".{part}"
                key.append(str(part))
        return shown, tuple(key)

    def _one(self, problem: Mapping[str, Any], data: Mapping[str, Any]) -> InvalidInput:
        field, key = self._path(problem)
        kind = problem["type"]
        value = data.get(field, problem.get("input")) if len(key) == 1 else problem.get("input")
        allowed = self._allowed.get(key)
        if kind == "extra_forbidden":
            return self._unknown(field, key)
        if kind == "missing":
            return InvalidInput(field, "is required", allowed=allowed)
        if kind == "string_unicode":
            return InvalidInput(field, "holds a lone UTF-16 surrogate (half of a character), which is not text",
                                allowed="valid Unicode text")
        if len(key) == 1 and key[0] in self._unions:
            return InvalidInput(field, f"{_show(value)} is not valid", allowed=allowed)
        if kind == "string_type" and allowed == "a string":
            allowed = None  # "42 is not a string" says it all
        return InvalidInput(field, _problem(kind, value), allowed=allowed)

    def _unknown(self, field: str, key: tuple[str, ...]) -> InvalidInput:
        if len(key) == 1:
            names: list[str] = list(self.names)
            where = f"an argument of {self.tool}"
        else:
            parent = self._allowed.get(key[:-1], "")
            names = parent.removeprefix("an object with ").split(", ") if parent.startswith("an object with ") else []
            where = "a field here"
        close = difflib.get_close_matches(key[-1], names, n=1, cutoff=0.6)
        if close:
            return InvalidInput(field, f"is not {where}; did you mean {close[0]!r}?")
        return InvalidInput(field, f"is not {where}", allowed=", ".join(names) or None)


def _problem(kind: str, value: Any) -> str:
    """What is wrong with a value, from pydantic's error type (its message text is never used)."""
    shown = _show(value)
    if kind in ("literal_error", "enum"):
        return f"{shown} is not allowed"
    if kind in ("greater_than", "greater_than_equal"):
        return f"{shown} is too small"
    if kind in ("less_than", "less_than_equal"):
        return f"{shown} is too large"
    if kind == "string_too_short":
        return "is empty"
    if kind == "string_too_long":
        return f"is too long ({len(value)} characters)" if isinstance(value, str) else "is too long"
    if kind in ("too_long", "too_short"):
        return f"has too {'many' if kind == 'too_long' else 'few'} items"
    if kind == "string_pattern_mismatch":
        return f"{shown} is not in the expected form"
    if kind == "string_type":
        return f"{shown} is not a string"
    if kind in ("int_type", "int_parsing", "int_from_float", "int_parsing_size"):
        return f"{shown} is not a whole number"
    if kind in ("float_type", "float_parsing", "decimal_type", "decimal_parsing", "finite_number",
                "decimal_max_digits", "decimal_max_places", "decimal_whole_digits"):
        return f"{shown} is not a finite number" if kind == "finite_number" else f"{shown} is not a number"
    if kind in ("list_type", "tuple_type", "iterable_type"):
        return f"{shown} is not a list"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{shown} is not an object"
    if kind in ("bool_type", "bool_parsing"):
        return f"{shown} is not true or false"
    return f"{shown} is not valid"
