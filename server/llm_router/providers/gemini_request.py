"""A rich request in Gemini's words (``generateContent``): tools and the choice among them, earlier
calls and their results, images, structured output, and the sampling fields beyond temperature.

Only a request that asks for one of these comes here (``GeminiProvider.complete`` builds a plain
text body itself, unchanged). What Gemini's format cannot carry is refused before sending, with
``InvalidRequest``: an image by URL of no definite type or not HTTPS, an image type Gemini does
not read, more than 5 stop sequences, a forced tool choice with no tools, a tool's schema that
cannot be put in Gemini's form (``gemini_schema``), a format beside tools that cannot be a
function's parameters.

Structured output beside tools: Gemini 2.x answers a request holding both function
declarations and ``responseMimeType: application/json`` with a 400 ("Function calling with a
response mime type: 'application/json' is unsupported", modes AUTO and ANY alike). So under
``tool_choice`` ``auto`` the format is declared as one more function (named after the format,
its parameters the format's schema, wrapped in an object's ``value`` where the schema's top is
none) and mode ``ANY`` makes the model call one: a call of the format's function is the answer,
a call of the caller's tools the tool calls (``FormatCall``). Under ``none`` only the format is
sent (no tools), under ``required`` or a named tool only the tools. Gemini 3 takes the
combination natively, but one way for every model keeps a fallback between models alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..content import ImagePart, ResponseFormat, TextPart, ToolCall, ToolSpec
from ..types import CompletionRequest, InvalidRequest, Message
from .gemini_schema import NoSafeSchema, UnsendableSchema, parameters, response_schema

__all__ = ["enrich", "FormatCall", "IMAGE_TYPES", "MAX_STOP_SEQUENCES", "SKIP_SIGNATURE", "WRAPPED"]

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
"""The image types Gemini reads (its image-understanding guide); not image/gif."""
MAX_STOP_SEQUENCES = 5
"""``generationConfig.stopSequences`` takes at most 5."""
SKIP_SIGNATURE = "skip_thought_signature_validator"
"""Gemini 3 models refuse a history whose function calls lack the ``thoughtSignature`` their
answer carried; the calls in a request come from the caller, which never saw one (nor can they
have one when another provider made them), so each model turn's first call carries the value
Gemini's thought-signature guide documents for history it did not produce."""
_OUR_IDS = re.compile(r"^call_[0-9a-f]{24}$")
"""The ids ``translate.new_call_id`` makes for calls Gemini sent without one: never sent back."""
_CHOICE_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
"""What Gemini takes as a function's name."""
WRAPPED = "value"
"""The one property of the format function's parameters that holds the answer, when the format's
schema is no object with properties (a function's parameters are always one)."""


@dataclass(frozen=True, slots=True)
class FormatCall:
    """The function standing for the response format beside tools: its name, and whether the
    answer is its arguments' ``WRAPPED`` property or the arguments themselves."""

    name: str
    wrapped: bool

_Refuse = Callable[[str], InvalidRequest]


def enrich(body: dict[str, Any], request: CompletionRequest, *, provider: str, model: str) -> FormatCall | None:
    """Add to ``body`` (the plain-text body already built) what ``request`` asks beyond text;
    return the format's function when structured output goes beside tools (see the module's
    docstring).

    Raises:
        InvalidRequest: for what Gemini cannot carry (see the module's docstring).
    """
    def refuse(problem: str) -> InvalidRequest:
        return InvalidRequest(f"{provider} cannot take {problem}", provider=provider, model=model)

    config: dict[str, Any] = body["generationConfig"]
    fmt = request.response_format
    choice = request.tool_choice
    forced: FormatCall | None = None
    if request.rich:
        body["contents"] = _contents(request.messages, refuse)
        tools = request.tools if fmt is None or choice != "none" else ()
        if tools:
            declarations = [_declaration(t.name, t.description, t.input_schema, refuse) for t in tools]
            if fmt is not None and choice == "auto":
                forced, declaration = _format_declaration(fmt, tools, refuse)
                declarations.append(declaration)
            body["tools"] = [{"functionDeclarations": declarations}]
        elif fmt is not None:
            _response_format(config, fmt, refuse)
    if forced is not None:
        body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY"}}
    elif fmt is None or choice != "none":
        choice_config = _tool_config(request, refuse)
        if choice_config is not None:
            body["toolConfig"] = choice_config
    if request.stop:
        if len(request.stop) > MAX_STOP_SEQUENCES:
            raise refuse(f"{len(request.stop)} stop sequences (at most {MAX_STOP_SEQUENCES})")
        config["stopSequences"] = list(request.stop)
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.seed is not None:
        config["seed"] = request.seed
    return forced


def _response_format(config: dict[str, Any], fmt: ResponseFormat, refuse: _Refuse) -> None:
    """JSON mode, with the schema as ``responseSchema``; where the schema has no safe conversion
    (``NoSafeSchema``), JSON mode only: any JSON, which the router validates against the schema."""
    config["responseMimeType"] = "application/json"
    if fmt.type == "json_schema" and fmt.schema is not None:
        try:
            config["responseSchema"] = response_schema(fmt.schema)
        except NoSafeSchema:
            pass
        except UnsendableSchema as exc:
            raise refuse(f"the response_format schema: {exc}") from None


def _format_declaration(
    fmt: ResponseFormat, tools: tuple[ToolSpec, ...], refuse: _Refuse
) -> tuple[FormatCall, dict[str, Any]]:
    """The function standing for the format beside the caller's tools."""
    if any(t.name == fmt.name for t in tools):
        raise refuse(f"response_format named {fmt.name!r}, like one of the tools: name it otherwise")
    if not _FUNCTION_NAME.match(fmt.name):
        raise refuse(f"response_format named {fmt.name!r} beside tools: a function's name starts with a letter or _")
    if fmt.type != "json_schema" or fmt.schema is None:
        raise refuse("a json_object response_format beside tools: Gemini takes no JSON mode with function calling, "
                     "and a function's parameters cannot be free-form; give a json_schema")
    try:
        params = parameters(fmt.schema)
        wrapped = params is None or params.get("type") != "OBJECT"
        if wrapped:
            params = {"type": "OBJECT", "properties": {WRAPPED: response_schema(fmt.schema)}, "required": [WRAPPED]}
    except UnsendableSchema as exc:
        raise refuse(f"the response_format schema beside tools (sent as a function's parameters): {exc}") from None
    answer = f"its {WRAPPED!r} argument is the answer" if wrapped else "its arguments are the answer"
    declaration = {
        "name": fmt.name,
        "description": f"Give your final answer by calling this function: {answer}. Call another function only "
                       "to use that tool.",
        "parameters": params,
    }
    return FormatCall(fmt.name, wrapped), declaration


def _declaration(name: str, description: str, schema: dict[str, Any], refuse: _Refuse) -> dict[str, Any]:
    """One ``functionDeclarations`` entry: ``parameters`` converted, left out for a tool of none."""
    declaration: dict[str, Any] = {"name": name, "description": description}
    try:
        params = parameters(schema)
    except UnsendableSchema as exc:
        raise refuse(f"the inputSchema of tool {name!r}: {exc}") from None
    if params is not None:
        declaration["parameters"] = params
    return declaration


def _tool_config(request: CompletionRequest, refuse: _Refuse) -> dict[str, Any] | None:
    """``toolConfig.functionCallingConfig`` for a choice other than ``auto`` (Gemini's default)."""
    choice = request.tool_choice
    if choice == "auto":
        return None
    if not request.tools:
        if choice == "none":
            return None
        raise refuse(f"tool_choice {choice!r} without any tools")
    mode = _CHOICE_MODES.get(choice)
    if mode is not None:
        return {"functionCallingConfig": {"mode": mode}}
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice]}}


def _contents(messages: tuple[Message, ...], refuse: _Refuse) -> list[dict[str, Any]]:
    """The turns as Gemini's ``contents``: a model's calls as ``functionCall`` parts, the tool turns
    answering them as one ``user`` turn of ``functionResponse`` parts (consecutive ones together)."""
    contents: list[dict[str, Any]] = []
    called: dict[str, str] = {}  # call id -> tool name, for a tool turn that names no tool
    results: list[dict[str, Any]] | None = None  # the parts of the tool-result turn being built
    for m in messages:
        if m.role == "tool":
            if m.parts:
                raise refuse("a tool result holding an image: a functionResponse carries an object only")
            if results is None:
                results = []
                contents.append({"role": "user", "parts": results})
            results.append(_function_response(m, called, refuse))
            continue
        results = None
        parts = _parts(m, refuse) if m.parts else [{"text": m.content}] if m.content or not m.tool_calls else []
        for i, call in enumerate(m.tool_calls):
            called[call.id] = call.name
            parts.append(_function_call(call, first=i == 0))
        contents.append({"role": "user" if m.role == "user" else "model", "parts": parts})
    return contents


def _function_call(call: ToolCall, *, first: bool) -> dict[str, Any]:
    fc: dict[str, Any] = {"name": call.name, "args": call.arguments}
    if _sendable_id(call.id):
        fc["id"] = call.id
    part: dict[str, Any] = {"functionCall": fc}
    if first:
        part["thoughtSignature"] = SKIP_SIGNATURE
    return part


def _function_response(m: Message, called: dict[str, str], refuse: _Refuse) -> dict[str, Any]:
    """A tool turn's result: ``{"result": text}``, or the object itself when the text is a JSON
    object (Gemini's ``response`` is an object)."""
    name = m.name or called.get(m.tool_call_id or "")
    if not name:
        raise refuse(f"a tool turn (tool_call_id {m.tool_call_id!r}) that names no tool: Gemini answers calls by name")
    response: Any = None
    if m.content.lstrip().startswith("{"):
        try:
            response = json.loads(m.content)
        except (ValueError, RecursionError):
            response = None
    fr: dict[str, Any] = {"name": name, "response": response if isinstance(response, dict) else {"result": m.content}}
    if m.tool_call_id and _sendable_id(m.tool_call_id):
        fr["id"] = m.tool_call_id
    return {"functionResponse": fr}


def _sendable_id(call_id: str) -> bool:
    """Whether a call's id goes to Gemini: any id but one made here for a call Gemini sent without."""
    return bool(call_id) and _OUR_IDS.match(call_id) is None


def _parts(m: Message, refuse: _Refuse) -> list[dict[str, Any]]:
    """A turn holding images: its text and ``inlineData`` parts, in order."""
    parts: list[dict[str, Any]] = []
    for part in m.parts:
        if isinstance(part, TextPart):
            parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            parts.append(_image(part, refuse))
    return parts


def _image(image: ImagePart, refuse: _Refuse) -> dict[str, Any]:
    """Bytes as ``inlineData``; a URL as ``fileData`` (Gemini fetches a public or signed HTTPS URL
    itself, its file input methods guide), whose ``mimeType`` is required: a URL of no known
    image type (``image/*``) is refused."""
    if image.data is None:
        if image.url is None:
            raise refuse("an image with neither bytes nor a URL")
        if not image.url.startswith("https://"):
            raise refuse("an image by a URL other than https://: Gemini fetches public or signed HTTPS URLs only")
        if image.mime_type not in IMAGE_TYPES:
            raise refuse(f"an image by URL of type {image.mime_type}: Gemini needs its type, one of "
                         f"{', '.join(sorted(IMAGE_TYPES))} (send the bytes instead)")
        return {"fileData": {"mimeType": image.mime_type, "fileUri": image.url}}
    if image.mime_type not in IMAGE_TYPES:
        raise refuse(f"a {image.mime_type} image: Gemini reads {', '.join(sorted(IMAGE_TYPES))} only")
    return {"inlineData": {"mimeType": image.mime_type, "data": image.data}}
