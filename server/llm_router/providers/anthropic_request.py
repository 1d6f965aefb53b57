"""A rich ``CompletionRequest`` in the Messages API's words: tools and the choice among them, the
turns of a tool conversation, images, structured output, and the sampling fields.

Used only when a request asks for more than text (``rich``, or ``stop``/``top_p``/``seed``): a
plain text request's body is built in ``anthropic`` as it always was. Whatever the Messages API
cannot carry is refused here, as ``InvalidRequest`` before anything is sent, never dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..content import ImagePart, Part, ResponseFormat, TextPart, ToolSpec
from ..types import CompletionRequest, InvalidRequest, Message

__all__ = [
    "MAX_IMAGE_BYTES", "MAX_IMAGE_SIDE", "MAX_IMAGES", "MANY_IMAGES", "MANY_IMAGES_SIDE", "MEDIA_TYPES", "WRAPPED",
    "Forced", "rich_messages", "add_tools", "add_sampling",
]

MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""The image types the Messages API takes (its vision guide)."""
MAX_IMAGE_BYTES = 5 * 1024 * 1024
"""The largest image the API takes, per image (its vision guide: 5 MB), measured as the API
measures it: the length of the base64 text, not of the bytes it decodes to."""
MAX_IMAGE_SIDE = 8000
"""Wider or taller than this, in pixels, an image is rejected (its vision guide)."""
MAX_IMAGES = 100
"""The most images one request may hold (its vision guide: 100 for models with a 200k-token
context window, more for some others; the lower figure holds for every model)."""
MANY_IMAGES = 20
"""With more images than this in a request, each may be at most ``MANY_IMAGES_SIDE`` a side."""
MANY_IMAGES_SIDE = 2000
"""Wider or taller than this, in pixels, an image is rejected in a request of many images."""
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""What the API takes as a tool's name."""
_ID = re.compile(r"[a-zA-Z0-9_-]+")
"""What the API takes as a tool call's id."""
_COMBINED = ("anyOf", "oneOf", "allOf")
"""Not allowed at the top of a tool's input schema."""
_DEFS = ("$defs", "definitions")
"""Where a schema keeps what its ``$ref``s point to, from its root."""
WRAPPED = "value"
"""The one property of the forced tool's input that holds the answer, when the schema's top level
is no object: a tool's input is always one."""


@dataclass(frozen=True, slots=True)
class Forced:
    """The tool forced for structured output: its name, and whether the answer is its input's
    ``WRAPPED`` property (``wrapped``) or the input itself."""

    name: str
    wrapped: bool = False
    beside_tools: bool = False
    """Offered beside the caller's tools (any one to be called): a call of another is the answer."""


class _Refuse:
    """Raises ``InvalidRequest`` naming the provider and model, with the reason."""

    __slots__ = ("provider", "model")

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model

    def __call__(self, why: str) -> InvalidRequest:
        return InvalidRequest(f"{self.provider} cannot take this request: {why}", provider=self.provider, model=self.model)


def rich_messages(request: CompletionRequest, *, provider: str, model: str) -> list[dict[str, Any]]:
    """The turns as Messages API ``messages``.

    A ``tool`` turn is a ``tool_result`` block in a user turn; consecutive tool turns share one
    user turn (the API wants every result of one assistant turn's calls together), and a user
    turn right after them joins it, after the results (results come first in a user turn). An
    assistant turn's ``tool_calls`` are ``tool_use`` blocks after its text.

    Raises:
        InvalidRequest: an image in an assistant turn (the API takes images from the user and in
            tool results only), an image the API does not take, more images than it takes in one
            request, a tool turn without its call's id.
    """
    refuse = _Refuse(provider, model)
    side = _largest_side(request.messages, refuse)
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open user turn of tool results, if any
    for i, m in enumerate(request.messages):
        if m.role == "tool":
            block = _tool_result(m, i, refuse, side)
            if results is None:
                results = [block]
                out.append({"role": "user", "content": results})
            else:
                results.append(block)
            continue
        if m.role == "user":
            if results is not None:  # an empty text block would be refused: the results are the turn then
                results.extend(_blocks(m.parts, i, refuse, side) if m.parts else
                               [{"type": "text", "text": m.content}] if m.content else [])
                results = None
                continue
            out.append({"role": "user", "content": _blocks(m.parts, i, refuse, side) if m.parts else m.content})
            continue
        results = None
        out.append({"role": "assistant", "content": _assistant(m, i, refuse)})
    return out


def _largest_side(messages: Sequence[Message], refuse: _Refuse) -> int:
    """The most pixels a side an image of this request may have: fewer with many images.

    Raises:
        InvalidRequest: more than ``MAX_IMAGES`` images in the request.
    """
    count = sum(isinstance(p, ImagePart) for m in messages if m.parts for p in m.parts)
    if count > MAX_IMAGES:
        raise refuse(f"the request holds {count} images; the API takes at most {MAX_IMAGES} in one request")
    return MANY_IMAGES_SIDE if count > MANY_IMAGES else MAX_IMAGE_SIDE


def _assistant(m: Message, i: int, refuse: _Refuse) -> str | list[dict[str, Any]]:
    if m.parts:
        raise refuse(f"messages[{i}] is an assistant turn holding an image; the API takes images only from the user")
    if not m.tool_calls:
        return m.content
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    blocks += [{"type": "tool_use", "id": _call_id(c.id), "name": c.name, "input": c.arguments} for c in m.tool_calls]
    return blocks


def _call_id(call_id: str) -> str:
    """A call's id as the API takes one. Ids other providers made may hold characters it refuses
    (``functions.lookup:0``); those become a stable id of their own, the same for the call and its
    result, since an id only pairs the two within the request."""
    if _ID.fullmatch(call_id):
        return call_id
    return "toolu_" + hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _tool_result(m: Message, i: int, refuse: _Refuse, side: int) -> dict[str, Any]:
    if not m.tool_call_id:
        raise refuse(f"messages[{i}] is a tool turn without the tool_call_id of the call it answers")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _call_id(m.tool_call_id)}
    if m.parts:
        block["content"] = _blocks(m.parts, i, refuse, side)
    elif m.content:
        block["content"] = m.content
    return block


def _blocks(parts: Sequence[Part], i: int, refuse: _Refuse, side: int) -> list[dict[str, Any]]:
    return [{"type": "text", "text": p.text} if isinstance(p, TextPart) else _image(p, i, refuse, side) for p in parts]


def _image(image: ImagePart, i: int, refuse: _Refuse, side: int) -> dict[str, Any]:
    """An image block: its bytes (``base64``) or its URL (``url``: the API fetches it itself).
    ``side`` is the most pixels a side it may have (fewer when the request holds many); a URL's
    size is not known here, and the API judges it."""
    if image.mime_type not in MEDIA_TYPES:
        raise refuse(f"messages[{i}] holds an image of type {image.mime_type}; the API takes {', '.join(sorted(MEDIA_TYPES))}")
    if image.data is not None:
        if len(image.data) > MAX_IMAGE_BYTES:
            raise refuse(
                f"messages[{i}] holds an image of {len(image.data)} bytes as base64; the API takes at most "
                f"{MAX_IMAGE_BYTES} (5 MB) of base64 text per image"
            )
        if max(image.width or 0, image.height or 0) > side:
            many = f" when a request holds more than {MANY_IMAGES} images" if side < MAX_IMAGE_SIDE else ""
            raise refuse(
                f"messages[{i}] holds an image of {image.width}x{image.height} pixels; the API takes at most "
                f"{side} a side{many}"
            )
        return {"type": "image", "source": {"type": "base64", "media_type": image.mime_type, "data": image.data}}
    if image.url is not None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    raise refuse(f"messages[{i}] holds an image with neither bytes nor a URL")


def add_tools(body: dict[str, Any], request: CompletionRequest, *, provider: str, model: str) -> Forced | None:
    """Add ``tools`` and ``tool_choice`` to ``body``; return the tool forced for structured
    output, if ``response_format`` asked for it.

    Structured output forces a tool: one tool, named after the format, whose input schema is the
    format's schema (wrapped in an object where it is none), and ``tool_choice`` naming it; its
    call's input is the answer. The API's own
    structured-output feature would be the other way, but it needs a beta header and only some
    models take it, where a forced tool works on every Claude model. With tools as well, under
    ``tool_choice`` ``auto``, the format's tool is offered beside them and ``any`` tool must be
    called, exactly one (``disable_parallel_tool_use``): the model either calls one of the
    caller's tools or answers through the format's (``Forced.beside_tools``), never both in one
    turn, which would leave no one answer. Under ``none`` only the format's tool goes; under ``required`` or a
    named tool the answer is a tool call, and the format does not come into it.

    ``tool_choice``: ``auto`` is the API's default and is left out; ``required`` is ``any``, a
    tool's name ``{"type": "tool", "name"}``, ``none`` ``{"type": "none"}``.

    Raises:
        InvalidRequest: a format named like one of the tools, a choice naming a tool not offered,
            forcing a tool when none is offered, a tool name the API does not take.
    """
    refuse = _Refuse(provider, model)
    fmt = request.response_format
    choice = request.tool_choice
    if fmt is not None and (not request.tools or choice in ("auto", "none")):
        tool, wrapped = _format_tool(fmt, refuse)
        if request.tools and choice == "auto":
            if any(t.name == fmt.name for t in request.tools):
                raise refuse(f"response_format is named {fmt.name!r}, like one of the tools: name it otherwise")
            body["tools"] = [*(_tool(t, refuse) for t in request.tools), tool]
            body["tool_choice"] = {"type": "any", "disable_parallel_tool_use": True}
            return Forced(fmt.name, wrapped, beside_tools=True)
        body["tools"] = [tool]
        body["tool_choice"] = {"type": "tool", "name": fmt.name}
        return Forced(fmt.name, wrapped)
    choice = request.tool_choice
    if not request.tools:
        if choice not in ("auto", "none"):
            raise refuse(f"tool_choice {choice!r} forces a tool call, and no tools were offered")
        return None
    body["tools"] = [_tool(t, refuse) for t in request.tools]
    if choice == "required":
        body["tool_choice"] = {"type": "any"}
    elif choice == "none":
        body["tool_choice"] = {"type": "none"}
    elif choice != "auto":
        if all(t.name != choice for t in request.tools):
            raise refuse(f"tool_choice names {choice!r}, which is not among the tools offered")
        body["tool_choice"] = {"type": "tool", "name": choice}
    return None


def _tool(tool: ToolSpec, refuse: _Refuse) -> dict[str, Any]:
    if not _NAME.fullmatch(tool.name):
        raise refuse(f"the tool name {tool.name!r}: the API takes 1 to 64 letters, digits, '_' or '-'")
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = tool.input_schema
    return out


def _format_tool(fmt: ResponseFormat, refuse: _Refuse) -> tuple[dict[str, Any], bool]:
    """The tool forced for structured output, and whether its schema is wrapped.

    A tool's input schema must be an object type, without ``anyOf``/``oneOf``/``allOf`` at its
    top. An object schema is sent as it is (given ``"type": "object"`` when it has properties
    and no type); any other (an array, a string, a union) becomes the one required property
    ``WRAPPED`` of an object, its ``$defs`` kept at the root where its ``$ref``s look."""
    schema = fmt.schema if fmt.type == "json_schema" and fmt.schema is not None else {"type": "object"}
    combined = any(k in schema for k in _COMBINED)
    if "type" not in schema and "properties" in schema and not combined:
        schema = {"type": "object", **schema}
    if not _NAME.fullmatch(fmt.name):
        raise refuse(f"the response_format name {fmt.name!r}: the API takes 1 to 64 letters, digits, '_' or '-'")
    if schema.get("type") == "object" and not combined:
        description = "Give your answer as this tool's input, a JSON value matching its input schema."
        return {"name": fmt.name, "description": description, "input_schema": schema}, False
    inner = {k: v for k, v in schema.items() if k not in _DEFS}
    wrapper: dict[str, Any] = {"type": "object", "properties": {WRAPPED: inner}, "required": [WRAPPED]}
    wrapper.update({k: schema[k] for k in _DEFS if k in schema})
    description = f"Give your answer as this tool's input: an object whose {WRAPPED!r} is the answer, matching its schema."
    return {"name": fmt.name, "description": description, "input_schema": wrapper}, True


def add_sampling(body: dict[str, Any], request: CompletionRequest, *, provider: str, model: str) -> None:
    """``top_p`` and ``stop`` (as ``stop_sequences``); ``seed`` the API has no field for.

    Raises:
        InvalidRequest: a ``seed`` (it cannot be sent, and dropping it would break its promise);
            ``top_p`` with ``temperature`` (Claude 4.5 models and later answer 400 "temperature and
            top_p cannot both be specified for this model"; which to drop is the caller's choice).
    """
    if request.seed is not None:
        raise _Refuse(provider, model)("seed: the Messages API has no seed parameter")
    if request.top_p is not None and request.temperature is not None:
        raise _Refuse(provider, model)(
            "temperature and top_p together: Claude models from 4.5 on take only one of them; give one, not both"
        )
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
