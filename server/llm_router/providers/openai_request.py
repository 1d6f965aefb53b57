"""A rich request in OpenAI Chat Completions' words: tools and the choice among them, a model's
earlier tool calls and their results, images, structured output, and the sampling fields.

Only what a rich request asks for goes through here (``OpenAIProvider.complete`` builds a plain
text body itself, unchanged). What the wire format cannot carry is refused with
``InvalidRequest`` before anything is sent; nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..content import FinishReason, ImagePart, ResponseFormat, TextPart, ToolSpec
from ..types import CompletionRequest, InvalidRequest, Message
from .translate import data_url

__all__ = ["FINISH", "MAX_STOP", "JSON_LINE", "rich_messages", "add_sampling", "add_tools", "add_format", "strict_ok"]

FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the legacy functions API
    "content_filter": "content_filter",
}
MAX_STOP = 4
"""OpenAI takes at most four stop sequences."""
JSON_LINE = "Answer in JSON."
"""Added to the system text for ``json_object`` when no text of the request says JSON (OpenAI
refuses ``json_object`` unless the word JSON appears in the messages)."""
# OpenAI's documented limits on images in one request (guide "Images and vision").
MAX_IMAGES = 500
MAX_PAYLOAD_BYTES = 50 * 1024 * 1024


class _Refusal:
    """Builds the ``InvalidRequest`` for something the wire format cannot carry."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model = provider, model

    def __call__(self, why: str) -> InvalidRequest:
        return InvalidRequest(f"{self.provider} cannot carry {why}", provider=self.provider, model=self.model)


def rich_messages(request: CompletionRequest, *, provider: str, model: str, limits: bool) -> list[dict[str, Any]]:
    """The request's turns (system text first) as Chat Completions messages. ``limits``: check
    OpenAI's own limits on images (its API; compatible servers have their own)."""
    refuse = _Refusal(provider, model)
    system = request.system
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object" and not _says_json(request):
        system = f"{system}\n\n{JSON_LINE}" if system else JSON_LINE
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    images = 0
    payload = 0
    for i, m in enumerate(request.messages):
        out.append(_message(m, i, refuse))
        for image in m.images():
            images += 1
            payload += len(image.data or "")
    if limits and images > MAX_IMAGES:
        raise refuse(f"{images} images in one request (OpenAI takes at most {MAX_IMAGES})")
    if limits and payload > MAX_PAYLOAD_BYTES:
        raise refuse(f"{payload} bytes of images in one request (OpenAI takes at most 50 MB)")
    return out


def _says_json(request: CompletionRequest) -> bool:
    texts: Iterator[str] = (m.content for m in request.messages)
    return any("json" in t.lower() for t in (request.system or "", *texts))


def _message(m: Message, i: int, refuse: _Refusal) -> dict[str, Any]:
    if m.role == "tool":
        if m.parts:
            raise refuse(f"an image in a tool result (messages[{i}]): a tool message holds text only")
        if not m.tool_call_id:
            raise refuse(f"a tool result without the id of the call it answers (messages[{i}])")
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "assistant":
        if m.parts:
            raise refuse(f"an image in an assistant turn (messages[{i}]): images go in user turns only")
        if not m.tool_calls:
            return {"role": "assistant", "content": m.content}
        return {
            "role": "assistant",
            "content": m.content or None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _compact(c.arguments)}}
                for c in m.tool_calls
            ],
        }
    if not m.parts:
        return {"role": m.role, "content": m.content}
    return {"role": m.role, "content": [_part(p, i, refuse) for p in m.parts]}


def _part(part: TextPart | ImagePart, i: int, refuse: _Refusal) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.url is not None and not part.url.startswith(("https://", "http://")):
        raise refuse(f"an image URL that is not http(s) (messages[{i}]): it takes a web URL or the bytes")
    if part.url is None and not part.data:
        raise refuse(f"an image with neither bytes nor a URL (messages[{i}])")
    return {"type": "image_url", "image_url": {"url": data_url(part)}}


def add_sampling(body: dict[str, Any], request: CompletionRequest, *, provider: str, model: str) -> None:
    """``stop`` (a list of at most four), ``top_p`` and ``seed``, each where asked."""
    if request.stop:
        if len(request.stop) > MAX_STOP:
            raise _Refusal(provider, model)(
                f"{len(request.stop)} stop sequences (it takes at most {MAX_STOP})"
            )
        body["stop"] = list(request.stop)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.seed is not None:
        body["seed"] = request.seed


def add_tools(body: dict[str, Any], request: CompletionRequest, *, provider: str, model: str) -> None:
    """``tools`` as function definitions, and ``tool_choice`` unless it is ``auto`` (OpenAI's own
    default whenever tools are given, so the body says only what differs from it)."""
    choice = request.tool_choice
    if not request.tools:
        if choice not in ("auto", "none"):
            raise _Refusal(provider, model)(f"tool_choice {choice!r} without any tools")
        return
    body["tools"] = [_tool(t) for t in request.tools]
    if choice in ("required", "none"):
        body["tool_choice"] = choice
    elif choice != "auto":
        body["tool_choice"] = {"type": "function", "function": {"name": choice}}


def _tool(tool: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.input_schema
    return {"type": "function", "function": function}


def add_format(body: dict[str, Any], fmt: ResponseFormat, *, provider: str, model: str) -> None:
    """OpenAI's native structured output. A schema goes with ``strict: true`` only when it keeps
    strict mode's rules (``strict_ok``): OpenAI refuses a non-conforming schema under strict with
    a 400 instead of answering, while with ``strict: false`` it follows the schema as well as it
    can, and the router validates what comes back either way."""
    if fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
        return
    if fmt.schema is None:
        raise _Refusal(provider, model)("a json_schema response_format without its schema")
    body["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": fmt.name, "schema": fmt.schema, "strict": strict_ok(fmt.schema)},
    }


# Strict mode's subset of JSON Schema (guide "Structured model outputs", "Supported schemas").
_STRICT_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
    "$defs", "definitions", "$ref", "description", "title",
    "pattern", "format",  # strings
    "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",  # numbers
    "minItems", "maxItems",  # arrays
})
_STRICT_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
_MAX_DEPTH = 10
_MAX_PROPERTIES = 5000
_MAX_ENUM = 1000


def strict_ok(schema: dict[str, Any]) -> bool:
    """Whether OpenAI takes ``schema`` under strict mode: an object at the root; every object with
    ``additionalProperties: false`` and all its properties ``required``; only the keywords strict
    mode supports; within its limits on nesting (10 levels), properties (5000) and enum values."""
    if schema.get("type") != "object":
        return False
    counted = [0]
    return _strict(schema, 1, counted) and counted[0] <= _MAX_PROPERTIES


def _strict(node: Any, depth: int, counted: list[int]) -> bool:
    if not isinstance(node, dict):
        return False
    if depth > _MAX_DEPTH or not _STRICT_KEYWORDS.issuperset(node):
        return False
    if "format" in node and node["format"] not in _STRICT_FORMATS:
        return False
    if "enum" in node and (not isinstance(node["enum"], list) or len(node["enum"]) > _MAX_ENUM):
        return False
    kind = node.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node
    children: list[Any] = []
    if is_object:
        props = node.get("properties", {})
        if not isinstance(props, dict) or node.get("additionalProperties") is not False:
            return False
        required = node.get("required", [])
        if not isinstance(required, list) or set(required) != set(props) or len(required) != len(props):
            return False
        counted[0] += len(props)
        children.extend(props.values())
    elif "additionalProperties" in node:
        return False
    if "items" in node:
        children.append(node["items"])
    if "anyOf" in node:
        if not isinstance(node["anyOf"], list):
            return False
        children.extend(node["anyOf"])
    for defs in ("$defs", "definitions"):
        if defs in node:
            if depth != 1 or not isinstance(node[defs], dict):
                return False
            if not all(_strict(d, 1, counted) for d in node[defs].values()):
                return False
    return all(_strict(c, depth + 1, counted) for c in children)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
