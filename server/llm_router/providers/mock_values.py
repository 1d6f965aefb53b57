"""Values valid for a JSON Schema, made up deterministically: what the mock provider answers
structured output and tool calls with.

``value_for(schema, rng)`` walks the schema and builds a value its keywords allow, drawing every
choice from ``rng`` (seeded by the mock from the request, so the same request gets the same
value). It covers what structured-output and tool schemas use, pydantic's included:

- ``type`` (one or a list: the first that is not ``null``), or inferred from the keywords present;
- ``const``, ``enum`` (a member of the right type);
- objects: ``properties``, ``required``, ``additionalProperties``, ``patternProperties``,
  ``minProperties``/``maxProperties``;
- arrays: ``items``, ``prefixItems``, ``minItems``/``maxItems``, ``uniqueItems``, ``contains``;
- strings: ``minLength``/``maxLength``, ``pattern`` (generated from the regular expression),
  ``format`` (date, date-time, time, email, uuid, uri, hostname, ipv4, ipv6, duration and a few
  more: plausible strings);
- numbers: ``minimum``/``maximum``, ``exclusiveMinimum``/``exclusiveMaximum`` (numbers, or the
  draft-4 booleans), ``multipleOf``;
- ``anyOf``/``oneOf`` (the first branch), ``allOf`` (merged), ``$ref`` into the same document
  (``#``, ``#/$defs/...``, ``#/definitions/...``), recursive ones included: past a few levels only
  what is required is made.

Not honoured: ``not``, ``if``/``then``/``else``, ``dependentRequired``/``dependentSchemas``,
``propertyNames``, remote ``$ref``s, and a ``oneOf`` whose first branch's value also matches a
later one. The router validates what the mock answers, as it does any model's answer: a schema
beyond this list makes an ``invalid_output`` attempt, which is what a real model could do too.
"""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from collections.abc import Callable
from fractions import Fraction
from typing import Any, TypeGuard
from urllib.parse import unquote

from .mock_patterns import from_pattern

__all__ = ["WORDS", "value_for"]

WORDS = ["the", "answer", "considers", "each", "part", "of", "the", "question", "and", "gives", "a", "short", "clear", "reply", "with", "the", "key", "facts", "first", "then", "the", "reasoning", "that", "supports", "them", "and", "a", "brief", "note", "on", "what", "remains", "uncertain"]
"""The mock's vocabulary: its text answers and the strings of its structured ones."""

_REF_DEPTH = 2
"""``$ref``s followed before only required properties (and no optional items) are made."""
_NEST_DEPTH = 12
"""Nesting past which only required properties are made, whatever the ``$ref``s."""
_GIVE_UP_DEPTH = 48
"""A schema that requires nesting this deep has no finite value worth making: ``null`` there."""
_MOST_VALUES = 20_000
"""Values made for one schema at most (every string, number and container counts one): a schema
that asks for more (a thousand items of a thousand items) gets ``null`` past it, an answer made
in bounded time that the router's validation then refuses, rather than a stalled call."""
_LONGEST = 10_000
"""Characters, items or properties made at most for a ``min`` bound larger than this."""
_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}
_MERGED_MIN = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
_MERGED_MAX = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")


def value_for(schema: Any, rng: random.Random) -> Any:
    """A JSON value (dicts, lists, str, int, float, bool, None) valid for ``schema``, as far as
    the keywords above go. Never raises, whatever ``schema`` holds: past what it can make
    (a schema nested beyond Python's recursion, or asking for more than ``_MOST_VALUES``) the
    value is simply not valid."""
    try:
        return _Maker(schema, rng).make(schema, 0, 0)
    except RecursionError:
        return None


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _is_type(value: Any, name: str) -> bool:
    """Whether a JSON value is of a JSON Schema type (booleans are not numbers there)."""
    if name == "integer":
        return type(value) is int or (type(value) is float and value.is_integer())
    if name == "number":
        return type(value) in (int, float)
    expected = _TYPES.get(name)
    return expected is not None and type(value) is expected


def _members(schema: dict[str, Any]) -> list[Any]:
    """An enum's members of the schema's type (all of them when none is, or no type is named)."""
    members: list[Any] = schema["enum"]
    kind = schema.get("type")
    kinds = [k for k in kind if isinstance(k, str)] if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    return [m for m in members if not kinds or any(_is_type(m, k) for k in kinds)] or members


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Both schemas' keywords in one (for ``allOf`` and the siblings of ``$ref``/``anyOf``): the
    properties and requirements of both, the tighter bound of each, the types both allow."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "properties" and isinstance(value, dict) and isinstance(out[key], dict):
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = _merge(props[name], sub) if isinstance(props.get(name), dict) and isinstance(sub, dict) else sub
            out[key] = props
        elif key == "required" and isinstance(value, list) and isinstance(out[key], list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key in _MERGED_MIN and _number(value) and _number(out[key]):
            out[key] = max(out[key], value)
        elif key in _MERGED_MAX and _number(value) and _number(out[key]):
            out[key] = min(out[key], value)
        elif key == "type":
            mine = out[key] if isinstance(out[key], list) else [out[key]]
            theirs = value if isinstance(value, list) else [value]
            both = [t for t in mine if t in theirs or (t == "integer" and "number" in theirs)]
            both += [t for t in theirs if t == "integer" and "number" in mine and t not in both]
            out[key] = both or mine
        elif key in ("items", "additionalProperties", "contains") and isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _merge(out[key], value)
        elif key == "allOf" and isinstance(value, list) and isinstance(out[key], list):
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out


def _number(value: Any) -> TypeGuard[int | float]:
    """A JSON number (a bool is not one)."""
    return type(value) in (int, float)


class _Maker:
    def __init__(self, root: Any, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.left = _MOST_VALUES

    def make(self, schema: Any, depth: int, refs: int) -> Any:
        self.left -= 1
        if depth > _GIVE_UP_DEPTH or refs > _GIVE_UP_DEPTH or self.left < 0:
            return None
        if schema is True or not isinstance(schema, dict):
            return _words(self.rng, 2)
        if "$ref" in schema or "allOf" in schema:
            schema, refs = self._flatten(schema, refs)
        minimal = refs > _REF_DEPTH or depth > _NEST_DEPTH
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._member(schema)
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                rest = {k: v for k, v in schema.items() if k != key}
                return self.make(_merge(rest, self._branch(branches, minimal)), depth, refs)
        kind = self._type(schema, minimal)
        if kind == "object":
            return self._object(schema, depth, refs, minimal)
        if kind == "array":
            return self._array(schema, depth, refs, minimal)
        if kind in ("integer", "number"):
            return self._number(schema, integer=kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _flatten(self, schema: dict[str, Any], refs: int) -> tuple[dict[str, Any], int]:
        """``schema`` with its ``$ref`` and ``allOf`` folded in (a copy), and the count of
        ``$ref``s followed so far (which says how deep a recursive schema has gone)."""
        out = dict(schema)
        ref = out.pop("$ref", None)
        parts = out.pop("allOf", None)
        if isinstance(ref, str) and refs <= _GIVE_UP_DEPTH:
            target = self._resolve(ref)
            flat, refs = self._flatten(target, refs + 1) if isinstance(target, dict) else ({}, refs + 1)
            out = _merge(flat, out)
        if isinstance(parts, list):
            for part in parts:
                if isinstance(part, dict) and refs <= _GIVE_UP_DEPTH:
                    flat, refs = self._flatten(part, refs)
                    out = _merge(out, flat)
        return out, refs

    def _resolve(self, ref: str) -> Any:
        """A ``#...`` JSON pointer into the document; anything else (a remote or ``$anchor``
        reference) as the empty schema."""
        if not ref.startswith("#"):
            return {}
        node = self.root
        for token in ref[1:].split("/")[1:]:
            token = unquote(token).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return {}
        return node

    def _branch(self, branches: list[Any], minimal: bool) -> dict[str, Any]:
        """The first branch; deep in a recursive schema, one that ends it (``null``, no ``$ref``)."""
        usable = [b if isinstance(b, dict) else {} for b in branches]
        if minimal:
            for b in usable:
                if b.get("type") == "null" or "const" in b or "enum" in b:
                    return b
            for b in usable:
                if "$ref" not in b:
                    return b
        return usable[0]

    def _member(self, schema: dict[str, Any]) -> Any:
        return self.rng.choice(_members(schema))

    def _type(self, schema: dict[str, Any], minimal: bool) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            named = [k for k in kind if isinstance(k, str)]
            if minimal and "null" in named:
                return "null"
            return next((k for k in named if k != "null"), "null" if named else "string")
        if isinstance(kind, str):
            return kind
        if any(k in schema for k in ("properties", "required", "additionalProperties", "patternProperties",
                                     "minProperties", "maxProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems")):
            return "array"
        if any(k in schema for k in _NUMERIC):
            return "number"
        return "string"

    def _object(self, schema: dict[str, Any], depth: int, refs: int, minimal: bool) -> dict[str, Any]:
        found = schema.get("properties")
        props: dict[str, Any] = found if isinstance(found, dict) else {}
        listed = schema.get("required")
        required = list(dict.fromkeys(r for r in listed if isinstance(r, str))) if isinstance(listed, list) else []
        extra = schema.get("additionalProperties", True)
        optional = [] if minimal else [p for p in props if p not in required]
        most = _count(schema, "maxProperties")
        if most is not None:
            optional = optional[:max(0, most - len(required))]
        out: dict[str, Any] = {}
        for name in [p for p in props if p in required or p in optional] + [r for r in required if r not in props]:
            out[name] = self.make(self._property_schema(schema, name, props, extra), depth + 1, refs)
        least = _count(schema, "minProperties")
        if least is not None:
            for name in (p for p in props if p not in out):
                if len(out) >= least:
                    break
                out[name] = self.make(props[name], depth + 1, refs)
            n = 0
            while len(out) < least and extra is not False and n < least:
                n += 1
                if f"extra_{n}" not in out:
                    out[f"extra_{n}"] = self.make(extra if isinstance(extra, dict) else {}, depth + 1, refs)
        return out

    @staticmethod
    def _property_schema(schema: dict[str, Any], name: str, props: dict[str, Any], extra: Any) -> Any:
        if name in props:
            return props[name]
        patterns = schema.get("patternProperties")
        if isinstance(patterns, dict):
            for pattern, sub in patterns.items():
                try:
                    if re.search(pattern, name):
                        return sub
                except re.error:
                    continue
        return extra if isinstance(extra, dict) else {}

    def _array(self, schema: dict[str, Any], depth: int, refs: int, minimal: bool) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-07's tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        least = _count(schema, "minItems") or 0
        most = _count(schema, "maxItems")
        contains = schema.get("contains")
        wanted = 0
        if isinstance(contains, dict) or contains is True:
            wanted = _count(schema, "minContains") or 1
        n = max(least, len(prefix) if not minimal else 0, wanted, 0 if minimal else 2)
        if items is False:
            n = max(least, min(n, len(prefix)))
        if most is not None:
            n = min(n, most)
        unique = schema.get("uniqueItems") is True
        out: list[Any] = []
        seen: set[str] = set()
        for i in range(n):
            if i < len(prefix):
                sub = prefix[i]
            elif wanted and i - len(prefix) < wanted:
                sub = _merge(items if isinstance(items, dict) else {}, contains if isinstance(contains, dict) else {})
            else:
                sub = items
            for _ in range(8 if unique else 1):
                value = self.make(sub, depth + 1, refs)
                key = _identity(value)
                if key not in seen:
                    break
            if unique and key in seen:
                # A small domain (an enum, booleans) runs out of fresh draws: take what is left of it.
                left = [v for v in self._domain(sub, refs) if _identity(v) not in seen]
                if left:
                    value = self.rng.choice(left)
                    key = _identity(value)
            if unique and key in seen and len(out) >= least:
                break
            seen.add(key)
            out.append(value)
        return out

    def _domain(self, schema: Any, refs: int) -> list[Any]:
        """Every value a schema allows when they are few (an enum, a boolean, null), else none."""
        if not isinstance(schema, dict):
            return []
        if "$ref" in schema or "allOf" in schema:
            schema, refs = self._flatten(schema, refs)
        if "const" in schema:
            return [schema["const"]]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return _members(schema)
        kind = schema.get("type")
        return [False, True] if kind == "boolean" else [None] if kind == "null" else []

    def _number(self, schema: dict[str, Any], *, integer: bool) -> int | float:
        low, low_open = _bound(schema, "minimum", "exclusiveMinimum", max)
        high, high_open = _bound(schema, "maximum", "exclusiveMaximum", min)
        if low is None:
            low = high - 100 if high is not None else Fraction(1)
        if high is None:
            high = low + 99
        found = schema.get("multipleOf")
        step = float(found) if _number(found) and 0 < found < math.inf else None
        if integer or step is not None:
            return self._multiple(low, low_open, high, high_open, step, integer=integer)
        value = low + (high - low) * Fraction(self.rng.choice([1, 2, 3]), 4)
        if (low_open and value <= low) or (high_open and value >= high):
            value = (low + high) / 2
        return float(value)

    def _multiple(self, low: Fraction, low_open: bool, high: Fraction, high_open: bool, step: float | None, *,
                  integer: bool) -> int | float:
        """A multiple of ``step`` (of 1 for an integer) between the bounds."""
        unit = Fraction(str(step)) if step is not None else Fraction(1)
        if integer:
            unit = Fraction(unit.numerator)  # the smallest whole multiple of p/q is p
        first = math.ceil(low / unit)
        last = math.floor(high / unit)
        if low_open and first * unit == low:
            first += 1
        if high_open and last * unit == high:
            last -= 1
        last = max(first, last)
        start = self.rng.randint(first, last)
        candidates = [*range(start, min(last, start + 64) + 1), *range(first, min(last, first + 64) + 1)]
        for k in candidates:
            exact = k * unit
            if integer:
                return int(exact)
            value = float(exact)
            # multipleOf is checked in floating point: keep a value whose quotient comes out whole
            if step is None or (value / step).is_integer():
                return int(value) if value.is_integer() else value
        return float(candidates[-1] * unit)

    def _string(self, schema: dict[str, Any]) -> str:
        least = _count(schema, "minLength") or 0
        most = _count(schema, "maxLength")
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            made = from_pattern(pattern, self.rng, least, most)
            if made is not None:
                return made
        fmt = schema.get("format")
        maker = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        if maker is not None:
            text = maker(self.rng)
            if least <= len(text) and (most is None or len(text) <= most):
                return text
        text = _words(self.rng, self.rng.randint(1, 4))
        while len(text) < least:
            text += " " + _words(self.rng, 4)
        if most is not None and len(text) > most:
            text = text[:most].rstrip()
        if len(text) < least:
            text += "x" * (least - len(text))
        return text


def _count(schema: dict[str, Any], key: str) -> int | None:
    """A length or count keyword's value (at most ``_LONGEST``), None when absent or not a count."""
    value = schema.get(key)
    return min(value, _LONGEST) if type(value) is int and value >= 0 else None


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, tighter: Any) -> tuple[Fraction | None, bool]:
    """A numeric bound as an exact fraction and whether it is open, from the 2020-12 keywords or
    draft-4's boolean ``exclusiveMinimum``/``exclusiveMaximum``."""
    closed = schema.get(inclusive)
    opened = schema.get(exclusive)
    found: list[tuple[Fraction, bool]] = []
    if _number(closed) and math.isfinite(closed):
        found.append((Fraction(str(closed)), opened is True))
    if _number(opened) and math.isfinite(opened):
        found.append((Fraction(str(opened)), True))
    if not found:
        return None, False
    value = tighter(v for v, _ in found)
    return value, any(open_ for v, open_ in found if v == value)


def _identity(value: Any) -> str:
    """A value's identity as ``uniqueItems`` sees it: its JSON (true and 1 differ there too),
    with a whole float written as the integer it equals."""
    if type(value) is float and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=str)


def _date(rng: random.Random) -> str:
    return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


def _word(rng: random.Random) -> str:
    return rng.choice([w for w in WORDS if len(w) > 2])


_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date": _date,
    "time": _time,
    "date-time": lambda rng: f"{_date(rng)}T{_time(rng)}",
    "duration": lambda rng: f"P{rng.randint(1, 9)}DT{rng.randint(1, 23)}H",
    "email": lambda rng: f"{_word(rng)}.{_word(rng)}@example.com",
    "idn-email": lambda rng: f"{_word(rng)}@example.com",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "uri": lambda rng: f"https://example.com/{_word(rng)}/{rng.randint(1, 999)}",
    "iri": lambda rng: f"https://example.com/{_word(rng)}",
    "uri-reference": lambda rng: f"/{_word(rng)}/{rng.randint(1, 999)}",
    "iri-reference": lambda rng: f"/{_word(rng)}",
    "uri-template": lambda rng: f"https://example.com/{_word(rng)}/{{id}}",
    "hostname": lambda rng: f"{_word(rng)}.example.com",
    "idn-hostname": lambda rng: f"{_word(rng)}.example.com",
    "ipv4": lambda rng: f"192.0.2.{rng.randint(1, 254)}",
    "ipv6": lambda rng: f"2001:db8::{rng.randint(1, 0xffff):x}",
    "json-pointer": lambda rng: f"/{_word(rng)}/{rng.randint(0, 9)}",
    "relative-json-pointer": lambda rng: f"{rng.randint(0, 3)}",
    "regex": lambda rng: "^[a-z]+$",
}
"""Plausible strings for the formats JSON Schema names (documentation addresses and ranges:
example.com, 192.0.2.0/24, 2001:db8::/32)."""
