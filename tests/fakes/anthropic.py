"""The fake Anthropic Messages API (see README.md for the documentation it follows)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import replace
from typing import Any, ClassVar

from .dialect import (
    TOOL_ARGS,
    TOOL_ARGS_PIECES,
    Dialect,
    Endpoint,
    Frames,
    RecordedRequest,
    Turn,
    Usage,
    dumps,
    text_blocks,
)

BAD_IMAGE = "Could not process image"
"""The API's message for image bytes it cannot read (HTTP 400, ``invalid_request_error``):
``fault("status", status=400, message=BAD_IMAGE)`` answers as it does."""
BOTH_SAMPLERS = "temperature and top_p cannot both be specified for this model. Please use only one."
"""The API's 400 for a request with both (Claude 4.5 models and later; "Migrating to Claude 4.5")."""
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MAX_IMAGE_BASE64 = 5 * 1024 * 1024
"""Per image, counted on the base64 text as the API counts it (vision guide: 5 MB)."""
MAX_IMAGES = 100
MANY_IMAGES = 20
MANY_IMAGES_SIDE = 2000
"""The vision guide: at most 100 images a request, and past 20 at most 2000 px a side."""
_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"GIF8": "image/gif"}
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences", "stream",
    "tools", "tool_choice", "metadata", "thinking", "service_tier", "container", "mcp_servers",
})
"""The Messages API's request fields; any other is refused ("Extra inputs are not permitted")."""
_CHOICES = ("auto", "any", "tool", "none")
_CHOICE_FIELDS = {"auto": {"type", "disable_parallel_tool_use"}, "any": {"type", "disable_parallel_tool_use"},
                  "tool": {"type", "name", "disable_parallel_tool_use"}, "none": {"type"}}
"""What each ``tool_choice`` takes (docs 'Messages': ``disable_parallel_tool_use`` but for ``none``)."""


class AnthropicDialect(Dialect):
    """Anthropic Messages API: docs 'Messages', 'Streaming Messages', 'Errors', 'List Models'."""

    kind = "anthropic"
    finish_names: ClassVar[dict[str, str]] = {"stop": "end_turn", "length": "max_tokens", "filter": "refusal"}
    supports_stream_error = True
    stream_error_status = 529
    ERROR_TYPES: ClassVar[dict[int, str]] = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }
    MESSAGES: ClassVar[dict[str, str]] = {
        "invalid_request_error": "Invalid request",
        "authentication_error": "invalid x-api-key",
        "permission_error": "Your API key does not have permission to use the specified resource.",
        "not_found_error": "Not found",
        "request_too_large": "Request exceeds the maximum allowed number of bytes.",
        "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
        "api_error": "Internal server error",
        "overloaded_error": "Overloaded",
    }

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and path == "/v1/messages":
            return "generate"
        if method == "GET" and path == "/v1/models":
            return "models"
        return None

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        got = req.headers.get("x-api-key")
        if api_key is not None and got is None:
            return 401, self.error(401, message="x-api-key header is required")
        if api_key is not None and got != api_key:
            return 401, self.error(401, message="invalid x-api-key")
        if "anthropic-version" not in req.headers:
            return 400, self.error(400, message="anthropic-version: header is required")
        return None

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        body = req.json

        def bad(msg: str) -> tuple[int, Any]:
            return 400, self.error(400, message=msg)

        if not isinstance(body, dict):
            return bad("Request body must be a JSON object")
        if not isinstance(body.get("model"), str):
            return bad("model: Field required")
        if not isinstance(body.get("max_tokens"), int):
            return bad("max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return bad("messages: Field required")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                return bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        system = body.get("system")
        if system is not None and not isinstance(system, str) and not text_blocks(system):
            return bad("system: Input should be a valid string or a list of text blocks")
        temperature = body.get("temperature")
        if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 1):
            return bad("temperature: Input should be less than or equal to 1")
        extra = sorted(set(body) - _FIELDS)
        if extra:
            return bad(f"{extra[0]}: Extra inputs are not permitted")
        problem = _sampling_problem(body) or _tools_problem(body) or _messages_problem(messages)
        return bad(problem) if problem else None

    def error(
        self,
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        model: str = "",
    ) -> Any:
        etype = (
            error_type
            or self.ERROR_TYPES.get(status)
            or ("invalid_request_error" if status < 500 else "api_error")
        )
        return {
            "type": "error",
            "error": {"type": etype, "message": message or self.MESSAGES.get(etype, etype)},
            "request_id": "req_fake_error",
        }

    def headers(self, seq: int) -> dict[str, str]:
        return {"request-id": f"req_fake{seq:06d}"}

    @staticmethod
    def _usage(u: Usage, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": u.input_tokens,
            "cache_creation_input_tokens": u.cache_write_tokens,
            "cache_read_input_tokens": u.cached_tokens,
            "output_tokens": output_tokens,
        }

    def _message(self, t: Turn, content: list[Any], stop_reason: str | None, output_tokens: int) -> Any:
        msg: dict[str, Any] = {
            "id": f"msg_fake{t.seq:06d}",
            "type": "message",
            "role": "assistant",
            "model": t.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }
        if t.usage is not None:
            msg["usage"] = self._usage(t.usage, output_tokens)
        return msg

    def reply(self, t: Turn) -> Any:
        forced = _forced_tool(t)
        if forced is not None:
            return self._message(t, [self._forced_block(t, forced)], self._tool_finish(t), self._out(t))
        if t.step.tool_calls is not None:
            return self.tool_reply(t)
        content = [{"type": "text", "text": t.text}] if t.text else []
        return self._message(t, content, t.finish, self._out(t))

    @staticmethod
    def _out(t: Turn) -> int:
        return t.usage.output_tokens if t.usage else 0

    @staticmethod
    def _tool_finish(t: Turn) -> str:
        """A tool call ends the turn with ``tool_use``, unless the step says otherwise (``length``)."""
        return "tool_use" if t.step.finish is None else t.finish

    def _forced_block(self, t: Turn, name: str) -> dict[str, Any]:
        """Structured output as the API returns it when a tool is forced: the model's JSON is the
        call's input (an object; text that is none, such as invalid JSON, is sent as given).
        With no text scripted, the input is ``{}``."""
        if _unscripted(t):
            return {"type": "tool_use", "id": f"toolu_fake{t.seq:06d}", "name": name, "input": {}}
        try:
            value = json.loads(t.text)
        except ValueError:
            value = t.text
        return {"type": "tool_use", "id": f"toolu_fake{t.seq:06d}", "name": name,
                "input": value if isinstance(value, dict) else t.text}

    def missing_fields(self, t: Turn) -> Any:
        return {"id": f"msg_fake{t.seq:06d}", "type": "message"}

    @staticmethod
    def _event(name: str, data: Any) -> bytes:
        return f"event: {name}\ndata: ".encode() + dumps(data) + b"\n\n"

    def stream(self, t: Turn) -> Frames:
        forced = _forced_tool(t)
        if forced is not None:
            return self._forced_stream(t, forced)
        if t.step.tool_calls is not None:
            return self.tool_stream(t)
        return self._text_stream(t, t.finish)

    def _text_stream(self, t: Turn, finish: str) -> Frames:
        # message_start carries input usage and a provisional output count; message_delta's
        # usage is cumulative (docs), so a client must replace, not add.
        start_out = min(1, t.usage.output_tokens) if t.usage else 0
        head = [
            self._event(
                "message_start", {"type": "message_start", "message": self._message(t, [], None, start_out)}
            )
        ]
        deltas: list[bytes] = []
        tail: list[bytes] = []
        if t.chunks:
            head.append(self._block_start(0, {"type": "text", "text": ""}))
            head.append(self._event("ping", {"type": "ping"}))
            deltas = [self._delta(0, {"type": "text_delta", "text": c}) for c in t.chunks]
            tail.append(self._block_stop(0))
        tail += self._end(t, finish)
        return Frames(head, deltas, tail)

    def _end(self, t: Turn, finish: str) -> list[bytes]:
        delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": finish, "stop_sequence": None}}
        if t.usage is not None:
            delta["usage"] = {"output_tokens": t.usage.output_tokens}
        return [self._event("message_delta", delta), self._event("message_stop", {"type": "message_stop"})]

    def _block_start(self, index: int, block: dict[str, Any]) -> bytes:
        return self._event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _block_stop(self, index: int) -> bytes:
        return self._event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _forced_stream(self, t: Turn, name: str) -> Frames:
        """The forced tool's call streamed: its input arrives as ``input_json_delta`` pieces, one
        per chunk of the step's text (so a cut after N chunks is a cut inside the call)."""
        frames = self._text_stream(replace(t, text="", chunks=[]), self._tool_finish(t))  # no text block
        block = {**self._forced_block(t, name), "input": {}}
        head = frames.head + [self._block_start(0, block)]
        pieces = ["{}"] if _unscripted(t) else t.chunks
        deltas = [self._delta(0, {"type": "input_json_delta", "partial_json": c}) for c in pieces]
        return Frames(head, deltas, [self._block_stop(0), *frames.tail])

    def malformed_frame(self) -> bytes:
        return b'event: message_start\ndata: {"type": "message_start", "message": \n\n'

    @staticmethod
    def _calls(t: Turn) -> list[tuple[str, Any]]:
        return list(t.step.tool_calls) if t.step.tool_calls is not None else [(t.step.tool_name, TOOL_ARGS)]

    @staticmethod
    def _call_id(t: Turn, i: int) -> str:
        return f"toolu_fake{t.seq:06d}" + (f"_{i}" if i else "")

    def tool_reply(self, t: Turn) -> Any:
        content: list[Any] = [{"type": "text", "text": t.text}] if t.text else []
        content += [
            {"type": "tool_use", "id": self._call_id(t, i), "name": name, "input": args}
            for i, (name, args) in enumerate(self._calls(t))
        ]
        return self._message(t, content, self._tool_finish(t), self._out(t))

    def tool_stream(self, t: Turn) -> Frames:
        """Each call as its own content block after the text: ``content_block_start`` with an empty
        input, the input's JSON in ``input_json_delta`` pieces (an empty one first, as the API
        often sends, when the step gives the calls), ``content_block_stop``. Every frame of the
        calls counts as a delta, so ``after_chunks`` can cut a stream inside one."""
        frames = self._text_stream(t, self._tool_finish(t))
        first = 1 if t.chunks else 0
        calls: list[bytes] = []
        for i, (name, args) in enumerate(self._calls(t)):
            index = first + i
            block = {"type": "tool_use", "id": self._call_id(t, i), "name": name, "input": {}}
            calls.append(self._block_start(index, block))
            calls += [self._delta(index, {"type": "input_json_delta", "partial_json": p}) for p in _pieces(t, args)]
            calls.append(self._block_stop(index))
        if t.chunks:  # the text block closes before the calls open
            return Frames(frames.head, frames.deltas + [frames.tail[0], *calls], frames.tail[1:])
        return Frames(frames.head, calls, frames.tail)

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        return self.error(400, message=f"prompt is too long: {prompt} tokens > {window} maximum")

    def stream_error_frame(self, t: Turn) -> bytes:
        etype = t.step.error_type or "overloaded_error"
        return self._event(
            "error",
            {
                "type": "error",
                "error": {"type": etype, "message": t.step.message or self.MESSAGES.get(etype, etype)},
            },
        )

    def models(self, names: list[str]) -> Any:
        data = [
            {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"} for n in names
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }


def _unscripted(t: Turn) -> bool:
    return t.step.text is None and t.step.chunks is None


def _pieces(t: Turn, args: Any) -> list[str]:
    """A call's input as the stream sends it: JSON text in pieces (raw text as given)."""
    if t.step.tool_calls is None:
        return list(TOOL_ARGS_PIECES)
    text = args if isinstance(args, str) else json.dumps(args)
    half = len(text) // 2
    return ["", text[:half], text[half:]]


def _forced_tool(t: Turn) -> str | None:
    """The tool the request forces (``tool_choice`` ``{"type": "tool", "name"}``), whose call
    carries the step's text as its input; None where the step scripts the calls itself or a
    refusal, or the request forces none."""
    if t.step.tool_calls is not None or t.step.fault in ("tool_call", "blocked"):
        return None
    body = t.req.json if isinstance(t.req.json, dict) else {}
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool" and isinstance(choice.get("name"), str):
        return choice["name"]
    return None


def _sampling_problem(body: dict[str, Any]) -> str | None:
    top_p = body.get("top_p")
    if top_p is not None and body.get("temperature") is not None:
        return BOTH_SAMPLERS
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 <= top_p <= 1):
        return "top_p: Input should be less than or equal to 1"
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(x, str) for x in stop)):
        return "stop_sequences: Input should be a valid list of strings"
    return None


def _tools_problem(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not _NAME.fullmatch(tool["name"]):
                return f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.custom.input_schema.type: Input should be 'object'"
            if any(k in schema for k in ("anyOf", "oneOf", "allOf")):
                return f"tools.{i}.custom.input_schema: input_schema does not support oneOf, allOf, or anyOf at the top level"
            if "description" in tool and not isinstance(tool["description"], str):
                return f"tools.{i}.custom.description: Input should be a valid string"
            names.append(tool["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, dict) or choice.get("type") not in _CHOICES:
        return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
    extra = sorted(set(choice) - _CHOICE_FIELDS[choice["type"]])
    if extra:
        return f"tool_choice.{choice['type']}.{extra[0]}: Extra inputs are not permitted"
    if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
        return f"tool_choice.{choice['type']}.disable_parallel_tool_use: Input should be a valid boolean"
    if choice["type"] == "tool" and choice.get("name") not in names:
        return f"tool_choice.tool.name: Tool '{choice.get('name')}' not found in provided tools"
    if choice["type"] in ("any", "tool") and not names:
        return "tool_choice: tool_choice may only be specified while providing tools"
    return None


def _messages_problem(messages: list[Any]) -> str | None:
    """Content blocks as the API checks them: the types each role may send, images, and tool
    results that answer exactly the calls of the assistant turn before them, first in the turn."""
    images = sum(1 for m in messages for _ in _images(m.get("content")))
    if images > MAX_IMAGES:
        return f"messages: too many images in the request: {images} > {MAX_IMAGES}"
    side = MANY_IMAGES_SIDE if images > MANY_IMAGES else None
    calls: list[str] = []  # the tool_use ids of the previous assistant turn, still to be answered
    for i, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, str):
            blocks: list[Any] = []
        elif isinstance(content, list) and content:
            blocks = content
        else:
            return f"messages.{i}.content: Input should be a valid string or a non-empty list"
        if m["role"] == "user":
            answered = [b.get("tool_use_id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
            first = [b.get("tool_use_id") if isinstance(b, dict) and b.get("type") == "tool_result" else None
                     for b in blocks[: len(calls)]]
            if calls and sorted(map(str, first)) != sorted(calls):
                missing = ", ".join(c for c in calls if c not in answered) or ", ".join(calls)
                return (f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                        f"{missing}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.")
            stray = [a for a in answered if a not in calls]
            if stray:
                return (f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {stray[0]}. "
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
            calls = []
        elif calls:
            return (f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(calls)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.")
        allowed = ("text", "image", "tool_result") if m["role"] == "user" else ("text", "tool_use")
        for j, block in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            problem = _block_problem(block, where, allowed, side)
            if problem:
                return problem
            if block["type"] == "tool_use":
                calls.append(block["id"])
    return None


def _images(content: Any) -> list[Any]:
    """The image blocks of a turn's content, those inside its tool results too."""
    if not isinstance(content, list):
        return []
    found: list[Any] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "image":
            found.append(block)
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            found += _images(block.get("content"))
    return found


def _block_problem(block: Any, where: str, allowed: tuple[str, ...], side: int | None = None) -> str | None:
    if not isinstance(block, dict) or block.get("type") not in allowed:
        kind = block.get("type") if isinstance(block, dict) else block
        return f"{where}: Input tag {kind!r} found using 'type' does not match any of the expected tags: {allowed}"
    kind = block["type"]
    if kind == "text" and not isinstance(block.get("text"), str):
        return f"{where}.text.text: Field required"
    if kind == "image":
        return _image_problem(block.get("source"), f"{where}.image.source", side)
    if kind == "tool_use":
        if not isinstance(block.get("id"), str) or not re.fullmatch(r"[a-zA-Z0-9_-]+", block["id"]):
            return f"{where}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
        if not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict):
            return f"{where}.tool_use: name and an input object are required"
    if kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            return f"{where}.tool_result.tool_use_id: Field required"
        inner = block.get("content")
        if isinstance(inner, list):
            for k, part in enumerate(inner):
                problem = _block_problem(part, f"{where}.tool_result.content.{k}", ("text", "image"), side)
                if problem:
                    return problem
        elif inner is not None and not isinstance(inner, str):
            return f"{where}.tool_result.content: Input should be a valid string or list"
    return None


def _image_problem(source: Any, where: str, side: int | None = None) -> str | None:
    """An image source as the API checks it: ``base64`` bytes of the type they claim, at most
    5 MB of base64 text, or a ``url``; in a request of many images (``side``), no wider or
    taller than that (read from a PNG's or GIF's header; other types are not measured here)."""
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
        return f"{where}: Input tag does not match any of the expected tags: 'base64', 'url'"
    if source["type"] == "url":
        url = source.get("url")
        return None if isinstance(url, str) and url.startswith(("https://", "http://")) else f"{where}.url.url: invalid URL"
    media = source.get("media_type")
    if media not in MEDIA_TYPES:
        return f"{where}.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
    data = source.get("data")
    if not isinstance(data, str) or not data:
        return f"{where}.base64: image cannot be empty"
    if len(data) > MAX_IMAGE_BASE64:
        return f"{where}.base64: image exceeds 5 MB maximum: {len(data)} bytes > {MAX_IMAGE_BASE64} bytes"
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return BAD_IMAGE
    found = next((t for magic, t in _MAGIC.items() if raw.startswith(magic)), None)
    if found is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        found = "image/webp"
    if found is None:
        return BAD_IMAGE
    if found != media:
        return (f"{where}.base64.data: The image was specified using the {media} media type, but the image "
                f"appears to be a {found} image")
    dims = _dimensions(raw)
    if side is not None and dims is not None and max(dims) > side:
        return (f"{where}.base64.data: At least one of the image dimensions exceed max allowed size for "
                f"many-image requests: {side} pixels")
    return None


def _dimensions(raw: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR or a GIF's screen descriptor; None for other types."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) >= 24:
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if raw.startswith(b"GIF8") and len(raw) >= 10:
        return int.from_bytes(raw[6:8], "little"), int.from_bytes(raw[8:10], "little")
    return None
