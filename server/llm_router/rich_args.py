"""The rich parts of a call's arguments checked and made neutral: conversations with content parts
and tool turns, tools and the tool choice, the output format; and what they ask of a model.

Pydantic has checked the shapes the published schema states (``calls``); here are the rules that
span fields (a tool turn answers a call an earlier turn made, a named tool choice names a tool
offered) and the parts of a turn's content, each refusal an ``InvalidInput`` naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from .calls import CompleteArgs, MessageIn, ToolChoiceName
from .config import LimitsConfig
from .content import ImagePart, Part, ResponseFormat, TextPart, ToolCall, ToolChoice, ToolSpec
from .images import read_image
from .types import CompletionRequest, InvalidInput, Message

__all__ = ["conversation", "tools_of", "format_of", "needs_of", "hashed_turns", "rich_extra", "rich_tokens"]

_CONTENT_ALLOWED = ('a non-empty string, or a list of parts: {"type": "text", "text"}, '
                    '{"type": "image", "data", "mimeType"} or {"type": "image", "url"}')
_PART_KEYS = {"text": frozenset({"type", "text"}), "image": frozenset({"type", "data", "mimeType", "url"})}


def conversation(turns: Sequence[MessageIn], limits: LimitsConfig) -> tuple[Message, ...]:
    """The messages as the provider is sent them.

    Raises:
        InvalidInput: a turn that is wrong where it stands (naming ``messages[i]...``).
    """
    out: list[Message] = []
    calls: dict[str, str] = {}  # id → name of every call an assistant turn made
    waiting: list[str] = []  # the calls of the last assistant turn not yet answered by a tool turn
    images = 0
    for i, turn in enumerate(turns):
        where = f"messages[{i}]"
        if waiting and turn.role != "tool":
            raise InvalidInput(where, f"comes before every call of the assistant turn before it was answered "
                               f"(waiting: {', '.join(waiting)})",
                               allowed="one tool turn for each call, right after the assistant turn that made them")
        if turn.tool_calls and turn.role != "assistant":
            raise InvalidInput(f"{where}.tool_calls", f"is only for an assistant turn, not a {turn.role} turn",
                               allowed="tool_calls on role assistant")
        if turn.tool_call_id is not None and turn.role != "tool":
            raise InvalidInput(f"{where}.tool_call_id", f"is only for a tool turn, not a {turn.role} turn",
                               allowed="tool_call_id on role tool")
        if turn.content == "" and not turn.tool_calls:
            raise InvalidInput(f"{where}.content", "is empty", allowed=_CONTENT_ALLOWED)
        text, parts = _content(turn.content, f"{where}.content", limits, images)
        images += sum(isinstance(p, ImagePart) for p in parts)
        if turn.role == "tool":
            if turn.tool_call_id is None:
                raise InvalidInput(f"{where}.tool_call_id", "is required on a tool turn",
                                   allowed="the id of a call an earlier assistant turn made")
            name = calls.get(turn.tool_call_id)
            if name is None:
                raise InvalidInput(f"{where}.tool_call_id", f"{turn.tool_call_id!r} is no call an earlier assistant turn made",
                                   allowed=", ".join(calls) or "none: no assistant turn before it made a tool call")
            if turn.tool_call_id not in waiting:
                raise InvalidInput(f"{where}.tool_call_id", f"{turn.tool_call_id!r} was answered already, or not by the "
                                   "assistant turn just before", allowed=", ".join(waiting) or "none: every call is answered")
            waiting.remove(turn.tool_call_id)
            if parts:
                raise InvalidInput(f"{where}.content", "a tool turn's result is text", allowed="a string, or text parts")
            out.append(Message(role="tool", content=text, tool_call_id=turn.tool_call_id, name=name))
            continue
        made: tuple[ToolCall, ...] = ()
        if turn.tool_calls:
            made = tuple(ToolCall(c.id, c.name, c.arguments) for c in turn.tool_calls)
            for j, c in enumerate(made):
                if c.id in calls:
                    raise InvalidInput(f"{where}.tool_calls[{j}].id", f"{c.id!r} is the id of an earlier call",
                                       allowed="an id of its own for each call")
                calls[c.id] = c.name
            waiting = [c.id for c in made]
        elif turn.content is None:
            raise InvalidInput(f"{where}.content", "is required", allowed="a string or a list of parts"
                               + (" (or tool_calls, on an assistant turn)" if turn.role == "assistant" else ""))
        out.append(Message(role=turn.role, content=text, parts=parts, tool_calls=made))
    if waiting:
        raise InvalidInput("messages", f"ends before every call was answered (waiting: {', '.join(waiting)})",
                           allowed="one tool turn for each call of the last assistant turn")
    if out[-1].role not in ("user", "tool"):
        raise InvalidInput("messages", "the last turn must be the user's (or a tool's result)",
                           allowed="a list ending with role user or tool")
    if not any(m.content.strip() or m.parts or m.tool_calls for m in out):
        raise InvalidInput("messages", "every turn is blank", allowed="at least one non-blank turn")
    return tuple(out)


def _content(value: Any, field: str, limits: LimitsConfig, images_before: int) -> tuple[str, tuple[Part, ...]]:
    """A turn's text, and its parts when it holds an image (else ``()``)."""
    if value is None:
        return "", ()
    if isinstance(value, str):
        return value, ()
    parts: list[Part] = []
    for j, raw in enumerate(value):
        where = f"{field}[{j}]"
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind not in _PART_KEYS:
            raise InvalidInput(where, "is not a content part", allowed='{"type": "text", "text"} or {"type": "image", "data", "mimeType"} or {"type": "image", "url"}')
        assert isinstance(raw, dict)
        unknown = sorted(set(raw) - _PART_KEYS[kind])
        if unknown:
            raise InvalidInput(f"{where}.{unknown[0]}", f"is not a field of a {kind} part", allowed=", ".join(sorted(_PART_KEYS[kind])))
        if kind == "text":
            text = raw.get("text")
            if not isinstance(text, str):
                raise InvalidInput(f"{where}.text", "is required, a string", allowed="the text of the part")
            parts.append(TextPart(text))
            continue
        if images_before + sum(isinstance(p, ImagePart) for p in parts) >= limits.max_images:
            raise InvalidInput(where, "is one image too many", allowed=f"at most {limits.max_images} images a call ([limits] max_images)")
        for key in ("data", "mimeType", "url"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise InvalidInput(f"{where}.{key}", "is not a string", allowed="a string")
        parts.append(read_image(data=raw.get("data"), url=raw.get("url"), mime_type=raw.get("mimeType"), field=where,
                                max_bytes=limits.max_image_bytes))
    text = "\n".join(p.text for p in parts if isinstance(p, TextPart))
    if not any(isinstance(p, ImagePart) for p in parts):
        return text, ()
    return text, tuple(parts)


def tools_of(args: CompleteArgs) -> tuple[tuple[ToolSpec, ...], ToolChoice]:
    """The tools offered and the choice among them.

    Raises:
        InvalidInput: two tools of one name, a choice naming no tool offered, a choice without tools.
    """
    tools = tuple(ToolSpec(t.name, t.description, t.inputSchema) for t in args.tools or ())
    for i, t in enumerate(tools):
        kind = t.input_schema.get("type")
        if kind not in (None, "object"):
            raise InvalidInput(f"tools[{i}].inputSchema", f"has type {kind!r}, but a tool's arguments are an object",
                               allowed='an object schema: {"type": "object", "properties": {...}}')
    names = [t.name for t in tools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidInput(f"tools[{i}].name", f"{name!r} is offered twice", allowed="each tool once")
    choice = args.tool_choice
    if choice is None:
        return tools, "auto"
    if not tools:
        raise InvalidInput("tool_choice", "is given without tools", allowed="tool_choice only beside tools")
    if isinstance(choice, ToolChoiceName):
        if choice.name not in names:
            raise InvalidInput("tool_choice.name", f"{choice.name!r} is not one of the tools", allowed=", ".join(names))
        return tools, choice.name
    return tools, choice


def format_of(args: CompleteArgs) -> ResponseFormat | None:
    rf = args.response_format
    if rf is None:
        return None
    if rf.type == "json_schema" and rf.schema_ is None:
        raise InvalidInput("response_format.schema", "is required for json_schema", allowed="a JSON Schema object")
    if rf.type == "json_object" and rf.schema_ is not None:
        raise InvalidInput("response_format.schema", "is only for json_schema", allowed='leave it out, or type "json_schema"')
    return ResponseFormat(rf.type, rf.schema_, rf.name or "response")


def needs_of(request: CompletionRequest) -> frozenset[str]:
    """The capabilities a model must have to take ``request`` (``content.CAPABILITY_NAMES``)."""
    needs: set[str] = set()
    if (request.tools and request.tool_choice != "none") or any(m.tool_calls or m.role == "tool" for m in request.messages):
        needs.add("tools")
    if request.tools and request.tool_choice not in ("auto", "none"):
        needs.add("tool_choice")
    for m in request.messages:
        for image in m.images():
            needs.add("vision")
            if image.url is not None:
                needs.add("image_url")
    if request.response_format is not None:
        needs.add("json_schema" if request.response_format.type == "json_schema" else "json_mode")
    if request.stop:
        needs.add("stop")
    if request.top_p is not None:
        needs.add("top_p")
    if request.seed is not None:
        needs.add("seed")
    return frozenset(needs)


def hashed_turns(messages: Sequence[Message]) -> list[list[Any]]:
    """The turns as a rich call's prompt hash (and stored prompt) has them: ``[role, content]``
    as for text, with parts (an image as its type, size and SHA-256, never its bytes), the tool
    calls a turn made and the call a tool turn answers after them."""
    out: list[list[Any]] = []
    for m in messages:
        content: Any = m.content
        if m.parts:
            content = [{"type": "text", "text": p.text} if isinstance(p, TextPart) else _image_fact(p) for p in m.parts]
        turn: list[Any] = [m.role, content]
        if m.tool_calls:
            turn.append([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls])
        if m.tool_call_id is not None:
            turn.append({"tool_call_id": m.tool_call_id})
        out.append(turn)
    return out


def _image_fact(image: ImagePart) -> dict[str, Any]:
    if image.url is not None:
        return {"type": "image", "url": image.url}
    digest = hashlib.sha256((image.data or "").encode()).hexdigest()
    return {"type": "image", "mimeType": image.mime_type, "bytes": image.size_bytes, "sha256": digest}


def rich_extra(request: CompletionRequest) -> dict[str, Any]:
    """What a rich call asked beyond its turns, as its prompt hash covers it."""
    extra: dict[str, Any] = {}
    if request.tools:
        extra["tools"] = [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in request.tools]
        extra["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        extra["response_format"] = {"type": request.response_format.type, "schema": request.response_format.schema}
    for key in ("stop", "top_p", "seed"):
        value = getattr(request, key)
        if value is not None and value != ():
            extra[key] = list(value) if key == "stop" else value
    return extra


def rich_tokens(request: CompletionRequest) -> int:
    """About how many input tokens a rich call's tool definitions, schema and earlier tool calls
    add to its text (four characters a token, as for the text; images are counted apart)."""
    text_bytes = request.text_bytes()
    plain = (len(request.system.encode()) if request.system else 0) + sum(len(m.content.encode()) for m in request.messages)
    return max(text_bytes - plain, 0) // 4
