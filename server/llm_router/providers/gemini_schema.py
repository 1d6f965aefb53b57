"""JSON Schema as Gemini takes it: the ``Schema`` object of ``responseSchema`` and of a function's
``parameters``, which is a select subset of an OpenAPI 3.0 schema object, not JSON Schema.

What the conversion does:

- local ``$ref``s (``#/$defs/X``, ``#/definitions/X``, any JSON pointer into the schema) are
  inlined, their sibling keywords laid over what they point to; a recursive one cannot be inlined
  and is refused (``UnsendableSchema``, naming where in the schema it is);
- ``type: ["string", "null"]`` (and ``anyOf`` with a ``{"type": "null"}`` branch, pydantic's
  ``Optional``) becomes ``nullable: true``; several types become an ``anyOf``; type names are
  Gemini's (``STRING``, ``OBJECT`` ...); ``oneOf`` becomes ``anyOf``, ``allOf`` is merged;
- ``const`` becomes a one-value ``enum``; Gemini's ``enum`` holds strings only, so one of other
  values is left out (its type kept);
- ``exclusiveMinimum``/``exclusiveMaximum`` given as numbers become ``minimum``/``maximum``;
- ``format`` is kept only where Gemini gives it a meaning (``date-time`` and ``enum`` for
  strings, ``int32``/``int64``, ``float``/``double``);
- every keyword outside Gemini's ``Schema`` (``additionalProperties``, ``$schema``, ``$id``,
  ``examples``, ``not``, ``if``/``then``, ``prefixItems``, ``dependentRequired`` ...) is left out,
  since Gemini answers an unknown field with a 400.

Gemini refuses three shapes outright (400), so none is ever sent; each is narrowed instead, to a
schema every answer to which is also valid for the original:

- a schema of no type (``{}``, ``true``, or only keywords of other types' values) becomes
  ``STRING`` (a string is valid for it);
- an array without ``items`` gets ``items: STRING`` (an array of strings is valid for it);
- an object of no ``properties`` (free-form: ``additionalProperties`` only) has no narrowing
  that keeps every answer valid, nor has a tuple (``prefixItems``), nor an untyped schema whose
  values are constrained (``not``, ``if``, an ``enum`` of mixed types): converting one raises
  ``NoSafeSchema`` naming where it is. ``response_schema``'s caller then sends the request in
  JSON mode only (``responseMimeType`` without ``responseSchema``: any JSON, which the router
  still validates), a tool's ``parameters`` is refused. Where several types are allowed
  (``type: ["object", "string"]``), an object branch of no properties is left out instead
  (narrowing), unless it is the only one; so is an optional property of no safe conversion (an
  answer without it is valid). A tool's top-level object of no properties is no
  problem: ``parameters`` is left out then, and the call's arguments are ``{}``.

Leaving a constraint out is safe here: it only makes what Gemini is told looser, and the router
validates every answer against the caller's ORIGINAL schema afterwards (an answer that breaks a
dropped constraint is an ``invalid_output`` attempt, never returned).

Documented ``Schema`` fields (Gemini API reference, ``Schema``): type, format, title,
description, nullable, enum, maxItems, minItems, properties, required, minProperties,
maxProperties, minLength, maxLength, pattern, example, anyOf, propertyOrdering, default, items,
minimum, maximum.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

__all__ = ["NoSafeSchema", "UnsendableSchema", "response_schema", "parameters"]

_TYPES = {
    "string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
    "array": "ARRAY", "object": "OBJECT", "null": "NULL",
}
_COPIED = ("title", "description", "pattern", "default")
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
_FORMATS = {
    "STRING": frozenset({"date-time", "enum"}),
    "INTEGER": frozenset({"int32", "int64"}),
    "NUMBER": frozenset({"float", "double"}),
}
_UNTYPED_VALUES = ("not", "if", "then", "else", "enum", "const")
"""Keywords that constrain the values of an untyped schema beyond what STRING keeps valid."""
_STRING: dict[str, Any] = {"type": "STRING"}
_MAX_NODES = 5000
"""Inlining ``$ref``s can multiply a schema's size; past this many nodes it is refused."""


class UnsendableSchema(ValueError):
    """A schema that cannot be put in Gemini's form (a recursive ``$ref``, one that points nowhere,
    one too large once inlined). The message says where in the schema."""


class NoSafeSchema(UnsendableSchema):
    """A schema Gemini would refuse and that has no narrowing keeping every answer valid for the
    original (see the module's docstring); ``path`` is where in the schema."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def response_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as ``generationConfig.responseSchema``: converted, and every object's
    ``propertyOrdering`` set to the order its properties were written in (Gemini otherwise
    orders them alphabetically in the JSON it writes).

    Raises:
        UnsendableSchema: see the module's docstring.
    """
    return _Converter(schema, ordered=True).convert(schema, "#")


def parameters(schema: dict[str, Any]) -> dict[str, Any] | None:
    """A tool's ``inputSchema`` as a ``functionDeclarations[].parameters``; None for a tool that
    takes no properties (Gemini wants ``parameters`` left out then).

    Raises:
        UnsendableSchema: see the module's docstring.
    """
    converted = _Converter(schema, ordered=False).convert(schema, "#", bare_root=True)
    return converted if converted.get("properties") or converted.get("anyOf") else None


class _Converter:
    __slots__ = ("_root", "_ordered", "_inlining", "_nodes")

    def __init__(self, root: dict[str, Any], *, ordered: bool) -> None:
        self._root = root
        self._ordered = ordered
        self._inlining: list[str] = ["#"]
        """The references being inlined, outermost first (the root is "#")."""
        self._nodes = 0

    def convert(self, schema: Any, path: str, *, bare_root: bool = False) -> dict[str, Any]:
        """``bare_root``: a top-level object of no properties is let through (a tool's)."""
        try:
            return self._node(schema, path, bare=bare_root)
        except RecursionError:
            raise UnsendableSchema("the schema is nested too deep to convert") from None

    def _node(self, schema: Any, path: str, *, whole: bool = True, bare: bool = False) -> dict[str, Any]:
        """``schema`` converted. ``whole``: it is a whole schema, so it is made one Gemini takes
        (see the module's docstring); not for the parts laid over another (``allOf`` members,
        a ``$ref``'s siblings), which would otherwise bring a type of their own."""
        out = self._convert(schema, path)
        if whole:
            _sendable(out, schema, path, bare=bare)
        return out

    def _convert(self, schema: Any, path: str) -> dict[str, Any]:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise UnsendableSchema(f"the schema has over {_MAX_NODES} parts once its $refs are inlined (at {path})")
        if schema is True or schema == {}:
            return {}
        if not isinstance(schema, dict):
            raise UnsendableSchema(f"{path} is {schema!r}, not a schema Gemini can take")
        if "$ref" in schema:
            return self._ref(schema, path)
        out: dict[str, Any] = {}
        nullable = False
        several = False
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                branches, null = self._branches(schema[key], f"{path}/{key}")
                nullable |= null
                if len(branches) == 1:
                    out.update(branches[0])
                elif branches:
                    out["anyOf"] = branches
        for i, sub in enumerate(schema.get("allOf") or ()):
            _merge(out, self._node(sub, f"{path}/allOf/{i}", whole=False))
        kinds, null = self._type(schema)
        nullable |= null
        if len(kinds) == 1:
            out["type"] = kinds[0]
        elif kinds:  # several types: Gemini's Schema has one, so an anyOf of them
            out["anyOf"] = [*out.get("anyOf", ()), *({"type": k} for k in kinds)]
            several = True
        infer = not kinds and "anyOf" not in out
        self._values(schema, out, infer=infer)
        if isinstance(schema.get("properties"), dict):
            required: list[Any] = schema["required"] if isinstance(schema.get("required"), list) else []
            props: dict[str, Any] = {}
            for name, sub in schema["properties"].items():
                try:
                    props[name] = self._node(sub, f"{path}/properties/{_escape(name)}")
                except NoSafeSchema:
                    if name in required:
                        raise
                    # An optional property Gemini cannot be told of is left out: never written
                    # then, which keeps the answer valid (narrowing).
            _merge(out, {"properties": props})
            if infer:
                out.setdefault("type", "OBJECT")
        if self._ordered and len(out.get("properties", ())) > 1:
            out["propertyOrdering"] = list(out["properties"])
        if isinstance(schema.get("required"), list):
            names = [n for n in schema["required"] if isinstance(n, str) and n in out.get("properties", {})]
            if names:
                _merge(out, {"required": names})
        items = schema.get("items")
        if isinstance(items, (dict, bool)):
            out["items"] = self._node(items, f"{path}/items")
            if infer:
                out.setdefault("type", "ARRAY")
        for key in _COPIED:
            if key in schema:
                out[key] = schema[key]
        for key in _COUNTS:
            if type(schema.get(key)) is int:
                out[key] = schema[key]
        self._bounds(schema, out)
        if several:
            _fill_branches(out, path)
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), ()):
            out["format"] = fmt
        if nullable:
            if out.get("anyOf"):
                out["anyOf"] = [{**b, "nullable": True} for b in out["anyOf"]]
            elif out:  # (an empty schema takes null already)
                out["nullable"] = True
        return out

    def _ref(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise UnsendableSchema(f"{path}/$ref is {ref!r}: only references inside the schema (#/...) can be inlined")
        if ref in self._inlining:
            raise UnsendableSchema(
                f"{path}/$ref {ref!r} refers back to itself (recursive schemas cannot be sent to Gemini)"
            )
        self._inlining.append(ref)
        try:
            out = self._node(self._target(ref, path), ref)
        finally:
            self._inlining.pop()
        siblings = {k: v for k, v in schema.items() if k not in ("$ref", "$defs", "definitions")}
        if siblings:
            _merge(out, self._node(siblings, path, whole=False))
        return out

    def _target(self, ref: str, path: str) -> Any:
        node: Any = self._root
        for raw in ref[1:].lstrip("/").split("/") if ref not in ("#", "#/") else ():
            step = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and step in node:
                node = node[step]
            elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
                node = node[int(step)]
            else:
                raise UnsendableSchema(f"{path}/$ref {ref!r} points to nothing in the schema")
        return node

    def _branches(self, subs: list[Any], path: str) -> tuple[list[dict[str, Any]], bool]:
        """The branches of an ``anyOf``, converted, without the ``null`` ones (returned as a flag)."""
        branches: list[dict[str, Any]] = []
        null = False
        for i, sub in enumerate(subs):
            converted = self._node(sub, f"{path}/{i}")
            if converted == {"type": "NULL"}:
                null = True
            else:
                branches.append(converted)
        return branches, null

    def _type(self, schema: dict[str, Any]) -> tuple[list[str], bool]:
        """Gemini's names for the types ``schema["type"]`` lists (one, several, or none given),
        null left out when it is one of several, and whether it was."""
        raw = schema.get("type")
        names = [raw] if isinstance(raw, str) else [t for t in raw if isinstance(t, str)] if isinstance(raw, list) else []
        null = "null" in names and len(names) > 1
        return [_TYPES[n] for n in dict.fromkeys(names) if n in _TYPES and not (null and n == "null")], null

    def _values(self, schema: dict[str, Any], out: dict[str, Any], *, infer: bool) -> None:
        """``enum`` and ``const``: Gemini's ``enum`` takes strings only; null among them is ``nullable``."""
        values: list[Any] | None = None
        if "const" in schema:
            values = [schema["const"]]
        elif isinstance(schema.get("enum"), list):
            values = list(schema["enum"])
        if values is None:
            return
        if None in values:
            values = [v for v in values if v is not None]
            out["nullable"] = True
            if not values:
                out.pop("nullable")
                out["type"] = "NULL"
                return
        if all(isinstance(v, str) for v in values):
            out["enum"] = values
            if infer:
                out.setdefault("type", "STRING")
            return
        inferred = {_type_of(v) for v in values}
        if infer and len(inferred) == 1 and None not in inferred:
            out.setdefault("type", inferred.pop())

    def _bounds(self, schema: dict[str, Any], out: dict[str, Any]) -> None:
        for key, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            for source in (key, exclusive):
                value = schema.get(source)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[key] = value
                    break


def _sendable(out: dict[str, Any], schema: Any, path: str, *, bare: bool) -> None:
    """Make ``out`` (``schema`` converted) one Gemini takes, by narrowing (see the module's
    docstring), or raise ``NoSafeSchema``."""
    kind = out.get("type")
    if kind is None and "anyOf" not in out:
        if isinstance(schema, dict) and any(k in schema for k in _UNTYPED_VALUES):
            raise NoSafeSchema(f"{path} gives no type and constrains its values in a way Gemini's schema cannot say", path)
        out.update(_STRING)
    elif kind == "ARRAY" and "items" not in out:
        if isinstance(schema, dict) and schema.get("prefixItems"):
            raise NoSafeSchema(f"{path} is a tuple (prefixItems), which Gemini's schema cannot say", path)
        out["items"] = dict(_STRING)
    elif kind == "OBJECT" and not out.get("properties") and not bare:
        raise NoSafeSchema(f"{path} is an object of no properties (free-form), which Gemini refuses", path)


def _fill_branches(out: dict[str, Any], path: str) -> None:
    """The branches of several types made sendable: an array's gets the items, an object's the
    properties; an object branch of none is left out (narrowing), unless none would be left."""
    branches: list[dict[str, Any]] = []
    for branch in out["anyOf"]:
        if set(branch) == {"type"} and branch["type"] == "ARRAY":
            branch = {**branch, "items": out.get("items", _STRING)}
        elif set(branch) == {"type"} and branch["type"] == "OBJECT":
            if not out.get("properties"):
                continue
            branch = {**branch, **{k: out[k] for k in ("properties", "required") if k in out}}
        branches.append(branch)
    if not branches:
        raise NoSafeSchema(f"{path} allows only an object of no properties (free-form), which Gemini refuses", path)
    out["anyOf"] = branches


def _type_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "NUMBER"
    if isinstance(value, str):
        return "STRING"
    return None


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """``other`` laid over ``into``: properties and required joined, other keys replaced."""
    for key, value in other.items():
        if key == "properties" and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        elif key in ("required", "propertyOrdering") and isinstance(into.get(key), list):
            into[key] = list(dict.fromkeys([*into[key], *value]))
        else:
            into[key] = value


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
