"""Answers checked against what the call asked for: JSON against its schema, tool calls against
their tools' ``inputSchema``, by a JSON Schema library (``jsonschema``), never by hand.

``OutputCheck.build`` runs once per call, in ``prepare``: each schema is checked to be a valid
JSON Schema (a bad one is the caller's ``InvalidInput``, naming the field) and compiled into a
validator. ``OutputCheck.answer`` runs on every answer: an answer that does not parse or does not
match is the model's ``InvalidOutput``, billed like any answer, and the chain goes on to the next
model. The error says where in the value it went wrong and how, so that a caller who gets no
valid answer at all learns what each model returned wrong.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2
from jsonschema import FormatChecker, ValidationError, validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from .content import ResponseFormat, ToolCall, ToolSpec
from .types import Completion, InvalidInput, InvalidOutput, Usage

__all__ = ["OutputCheck", "compile_schema", "parse_json_answer"]

_FORMATS = FormatChecker()
_MAX_ERRORS = 3
_FENCE = re.compile(r"^```(?:json|JSON)?[ \t]*\n(.*)\n```[ \t]*$", re.DOTALL)


_COMPILED: dict[str, Validator] = {}
_MAX_COMPILED = 256
"""Validators already compiled, by their schema's canonical JSON. Checking a schema against its
metaschema costs milliseconds (7 ms for a realistic one: bench/structured.py), callers send the
same few schemas again and again, and a validator does not change once built; the oldest goes
first when full. A schema that is refused is never kept."""


def compile_schema(schema: Any, field: str) -> Validator:
    """A validator for ``schema``, in the draft its ``$schema`` names (2020-12 when none).

    Raises:
        InvalidInput: ``field`` is not a JSON Schema (an object, valid under its metaschema), or
        refers outside itself (a ``$ref`` that is not ``#...``: nothing is ever fetched).
    """
    if not isinstance(schema, dict):
        raise InvalidInput(field, "is not a JSON Schema object", allowed='a JSON Schema, e.g. {"type": "object", ...}')
    try:
        key: str | None = json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # no JSON (an in-process caller's object): not kept
        key = None
    if key is not None and (kept := _COMPILED.get(key)) is not None:
        return kept
    try:
        refs, patterns = _walk(schema)
    except RecursionError:
        raise InvalidInput(field, "is nested too deep", allowed="a JSON Schema nested less deeply") from None
    for ref in refs:
        if not ref.startswith("#"):
            raise InvalidInput(field, f"refers to {ref!r}, outside the schema", allowed="$ref only into the schema itself (#/$defs/...)")
    base = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        base.check_schema(schema)
    except SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "the top"
        raise InvalidInput(field, f"is not a valid JSON Schema: at {where}, {_short(e.message)}",
                           allowed="a JSON Schema (draft 2020-12 unless $schema says another)") from None
    for pattern in patterns:
        try:
            _linear(pattern)
        except re2.error:
            raise InvalidInput(field, f"has the pattern {pattern[:80]!r}, which cannot be checked in linear time",
                               allowed="patterns without backreferences or lookaround (RE2 syntax)") from None
    # Compiled from a copy: a caller who changes its dict later changes nothing kept.
    validator: Validator = _linear_patterns(base)(json.loads(key) if key is not None else schema, format_checker=_FORMATS)
    try:
        for sample in _SAMPLES:  # a $ref loop that never goes down into the value recurses on anything
            validator.is_valid(sample)
    except RecursionError:
        raise InvalidInput(field, "has a $ref loop that never goes down into the value",
                           allowed="$ref that descends into the value (a property or item)") from None
    if key is not None:
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = validator
    return validator


_SAMPLES: tuple[Any, ...] = ({}, [], "", 0, None)


def _walk(node: Any) -> tuple[list[str], list[str]]:
    """Every ``$ref`` in a schema, and every regular expression it checks values with (``pattern``
    values, ``patternProperties`` keys)."""
    refs: list[str] = []
    patterns: list[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "$ref" and isinstance(item, str):
                    refs.append(item)
                elif key == "pattern" and isinstance(item, str):
                    patterns.append(item)
                else:
                    if key == "patternProperties" and isinstance(item, dict):
                        patterns.extend(k for k in item if isinstance(k, str))
                    visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(node)
    return refs, patterns


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a pattern refused is the caller's error, not a line on stderr


@functools.lru_cache(maxsize=1024)
def _linear(pattern: str) -> Any:
    """``pattern`` compiled by RE2, which matches in time linear in the text: Python's ``re``
    backtracks, and a pattern such as ``^(a+)+$`` against a model's answer of 32 characters held
    the event loop (and every other call) for minutes.

    Raises:
        re2.error: a pattern RE2 cannot run (a backreference, lookaround).
    """
    return re2.compile(pattern, _RE2_OPTIONS)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _linear(pattern).search(instance):
        yield ValidationError(f"{instance[:80]!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _linear(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@functools.cache
def _linear_patterns(cls: Any) -> Any:
    """``cls`` (a draft's validator class) with ``pattern`` and ``patternProperties`` checked by RE2."""
    return validators.extend(cls, {"pattern": _pattern, "patternProperties": _pattern_properties})  # type: ignore[no-untyped-call]  # the stubs leave it untyped


def parse_json_answer(text: str) -> Any:
    """The JSON value an answer holds: the whole text, or the one fenced block it is wrapped in
    (```json ... ```, which local models add even in JSON mode).

    Raises:
        ValueError: the text is not JSON.
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    return json.loads(fenced.group(1) if fenced else stripped)


@dataclass(frozen=True, slots=True)
class OutputCheck:
    """What a call's answers are checked against: its output format (``response``: a validator,
    or None for any JSON object) and its tools (``tools``: name → validator)."""

    format: ResponseFormat | None
    response: Validator | None
    tools: Mapping[str, Validator]
    tool_choice: str

    @staticmethod
    def build(response_format: ResponseFormat | None, tools: Sequence[ToolSpec], tool_choice: str) -> OutputCheck | None:
        """The checks a call needs, None for a plain text call (nothing to check).

        Raises:
            InvalidInput: a schema that is not one (``response_format.schema``, ``tools[i].inputSchema``).
        """
        if response_format is None and not tools:
            return None
        response = None
        if response_format is not None and response_format.schema is not None:
            response = compile_schema(response_format.schema, "response_format.schema")
        checks = {t.name: compile_schema(t.input_schema, f"tools[{i}].inputSchema") for i, t in enumerate(tools)}
        return OutputCheck(response_format, response, checks, tool_choice)

    def answer(self, completion: Completion, *, provider: str, model: str, usage: Usage | None) -> Any:
        """The parsed JSON value of a structured answer (None when none was asked, or the answer is
        tool calls); checks every tool call.

        Raises:
            InvalidOutput: what is wrong, carrying ``usage`` (what the answer is billed).
        """
        def invalid(problem: str) -> InvalidOutput:
            return InvalidOutput(f"the model answered {problem}", provider=provider, model=model, usage=usage)

        if completion.tool_calls:
            self._check_calls(completion.tool_calls, invalid)
            return None
        if self.tools and self.tool_choice not in ("auto", "none"):
            wanted = "a call of one of its tools" if self.tool_choice == "required" else f"a call of {self.tool_choice}"
            raise invalid(f"in text where tool_choice asked for {wanted}")
        if self.format is None:
            return None
        try:
            value = parse_json_answer(completion.text)
        except (ValueError, RecursionError) as e:
            raise invalid(f"with text that is not JSON ({_short(str(e))}): {_quote(completion.text)}") from None
        if self.response is None:
            if not isinstance(value, dict):
                raise invalid(f"with JSON that is a {_json_type(value)}, not the object json_object asks for")
            return value
        errors = _errors(self.response, value)
        if errors:
            raise invalid(f"with JSON that does not match the schema: {errors}")
        return value

    def _check_calls(self, calls: Sequence[ToolCall], invalid: Any) -> None:
        if self.tool_choice == "none":
            raise invalid(f"with a call of {calls[0].name}, though tool_choice was none")
        for call in calls:
            validator = self.tools.get(call.name)
            if validator is None:
                offered = ", ".join(self.tools) or "none"
                raise invalid(f"with a call of {call.name!r}, which is not one of its tools ({offered})")
            if self.tool_choice not in ("auto", "required") and call.name != self.tool_choice:
                raise invalid(f"with a call of {call.name}, though tool_choice asked for {self.tool_choice}")
            errors = _errors(validator, call.arguments)
            if errors:
                raise invalid(f"with a call of {call.name} whose arguments do not match its inputSchema: {errors}")


def _errors(validator: Validator, value: Any) -> str:
    """The first few ways ``value`` fails ``validator`` ("" when it does not), each with where."""
    try:
        found = sorted(validator.iter_errors(value), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    except RecursionError:
        return "at $: nested too deep to check"
    shown = [f"at {_path(e)}: {_short(e.message)}" for e in found[:_MAX_ERRORS]]
    if len(found) > _MAX_ERRORS:
        shown.append(f"and {len(found) - _MAX_ERRORS} more")
    return "; ".join(shown)


def _path(error: ValidationError) -> str:
    out = "$"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
