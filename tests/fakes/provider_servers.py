"""Fake LLM provider HTTP servers for adapter tests.

Each :class:`FakeProvider` impersonates one provider's public HTTP API (Anthropic Messages,
OpenAI Chat Completions, Gemini generateContent, Ollama /api/chat) on 127.0.0.1, written from
the providers' own public documentation (see README.md next to this file), not from client code.

Why a hand-written asyncio HTTP/1.1 server instead of starlette/uvicorn: several faults are about
the TCP connection itself (close without a response, drop a chunked stream before its final
chunk, stall forever), and those are only faithful when we own the socket.

The server runs its own event loop in a daemon thread, so the same object works from sync pytest
fixtures (``with FakeProvider("openai") as fake``) and from async tests
(``async with FakeProvider("openai") as fake``). Every connection gets ``Connection: close``; that
keeps the tests free of keep-alive races.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import json
import math
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

import anyio

from . import side_endpoints as side

Kind = Literal["anthropic", "openai", "gemini", "ollama"]
FaultKind = Literal[
    "status",  # HTTP error status with the provider's error body
    "hang",  # read the request, never answer (until the server stops)
    "close",  # read the request, close the TCP connection without any response
    "malformed",  # 200 whose body is not JSON, or JSON missing required fields
    "cut_stream",  # send part of the body/stream, then drop the connection
    "stall",  # send part of the body/stream, then go silent (idle-timeout tests)
    "no_usage",  # a successful answer with the usage fields left out
    "slow",  # a normal answer after ``delay`` seconds
    "blocked",  # the provider's documented safety-block shape
    "stream_error",  # an in-stream error event after some chunks (Anthropic, Ollama)
    "tool_call",  # an answer that is only a tool call (text= adds a preamble)
    "json_to_stream",  # a stream request answered with the plain JSON answer (application/json)
    "empty_stream",  # a stream request answered 200 with a stream that ends cleanly before any event
    "html",  # a 200 HTML page (a proxy or captive portal), whatever was asked
    "context",  # the provider's context-length error, stating the window (window=) where it does
    "lone_surrogate",  # text holding lone UTF-16 halves ("\ud83d" alone), as JavaScript servers send
    "split_surrogate",  # an emoji whose surrogate pair is split across two stream chunks
]
Endpoint = Literal["generate", "models", "side"]
KINDS: tuple[Kind, ...] = get_args(Kind)
FAULTS: tuple[str, ...] = get_args(FaultKind)

DEFAULT_MODELS: dict[str, list[str]] = {
    "anthropic": ["claude-test-1"],
    "openai": ["gpt-test-1"],
    "gemini": ["gemini-test-1"],
    "ollama": ["llama-test:latest"],
}


@dataclass(frozen=True)
class Usage:
    """Provider-neutral token counts; each fake maps them onto its own wire fields.

    ``input_tokens`` are uncached prompt tokens. Mapping (see README): Anthropic reports them
    as-is with the cache fields beside them; OpenAI and Gemini report prompt totals that
    *include* cache reads; Ollama has no cache, so only input/output are sent.
    """

    input_tokens: int = 12
    output_tokens: int = 8
    cached_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Step:
    """What the fake does for one (or ``times``) upcoming request(s) to ``endpoint``.

    ``finish`` takes a neutral name ("stop", "length", "filter") mapped per provider, or any
    provider-native string passed through verbatim. ``after_chunks`` is how many text deltas are
    sent before a cut_stream/stall/stream_error. ``times=None`` keeps the step forever.
    """

    fault: FaultKind | None = None
    text: str | None = None
    chunks: tuple[str, ...] | None = None
    usage: Usage | None = None
    finish: str | None = None
    status: int | None = None
    error_type: str | None = None
    code: str | None = None
    message: str | None = None
    retry_after: str | int | float | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    after_chunks: int = 1
    malformed: Literal["not_json", "missing_fields"] = "not_json"
    clean_eof: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    times: int | None = 1
    endpoint: Endpoint = "generate"
    tool_name: str = "get_weather"
    window: int | None = None
    flavor: str | None = None
    wire_replace: Mapping[bytes, bytes] = field(default_factory=dict)
    """Byte replacements applied to the body as sent (e.g. ``{b"@@": b"\\xff"}``): invalid UTF-8."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (header names lowercased, JSON body parsed if any)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any


@dataclass
class _Turn:
    """Everything a dialect needs to render one successful answer."""

    req: RecordedRequest
    seq: int
    model: str
    text: str
    chunks: list[str]
    usage: Usage | None
    finish: str
    blocked: bool
    step: Step


@dataclass
class _Frames:
    """A stream split so faults can cut it: opening frames, one frame per text delta, closing."""

    head: list[bytes]
    deltas: list[bytes]
    tail: list[bytes]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


TOOL_ARGS = {"city": "Paris"}
"""The arguments of every fake tool call; streams send them in two pieces."""
_TOOL_ARGS_PIECES = ('{"city": ', '"Paris"}')
LONE_SURROGATE_TEXT = "half \ud83d and \ude00 end"
LONE_SURROGATE_CHUNKS = ("half \ud83d", " and \ude00", " end")
SPLIT_SURROGATE_TEXT = "smile \U0001f600 done"
SPLIT_SURROGATE_CHUNKS = ("smile \ud83d", "\ude00 done")
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head><body>Please log in.</body></html>"


def _split(text: str, parts: int = 3) -> list[str]:
    """Deterministic text deltas: ``parts`` roughly equal slices."""
    if not text:
        return []
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _text_of(content: Any) -> str:
    """Text of a message content that is a string or a list of text parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _text_blocks(value: Any) -> bool:
    """True for a list of ``{"type": "text", "text": str}`` blocks (Anthropic's list form of system)."""
    return isinstance(value, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in value
    )


class _Dialect:
    """One provider's wire format. Methods return plain data; the server does the HTTP."""

    kind: str = ""
    finish_names: ClassVar[dict[str, str]] = {}
    supports_blocked = True
    supports_stream_error = False
    stream_error_status = 500

    def __init__(self, base_path: str = "") -> None:
        self.base_path = base_path

    def route(self, method: str, path: str) -> Endpoint | None:
        raise NotImplementedError

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        raise NotImplementedError

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        raise NotImplementedError

    def wants_stream(self, req: RecordedRequest) -> bool:
        body = req.json if isinstance(req.json, dict) else {}
        return body.get("stream") is True

    def stream_content_type(self, req: RecordedRequest) -> str:
        return "text/event-stream"

    def model(self, req: RecordedRequest) -> str:
        body = req.json if isinstance(req.json, dict) else {}
        return str(body.get("model", ""))

    def last_user_text(self, req: RecordedRequest) -> str:
        body = req.json if isinstance(req.json, dict) else {}
        users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
        return _text_of(users[-1].get("content")) if users else ""

    def finish(self, name: str) -> str:
        return self.finish_names.get(name, name)

    def error(
        self,
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        model: str = "",
    ) -> Any:
        raise NotImplementedError

    def headers(self, seq: int) -> dict[str, str]:
        return {}

    def reply(self, t: _Turn) -> Any:
        raise NotImplementedError

    def missing_fields(self, t: _Turn) -> Any:
        raise NotImplementedError

    def stream(self, t: _Turn) -> _Frames:
        raise NotImplementedError

    def malformed_frame(self) -> bytes:
        return b'data: {"this is": not json\n\n'

    def stream_error_frame(self, t: _Turn) -> bytes:
        raise ValueError(f"{self.kind} has no documented in-stream error event")

    def models(self, names: list[str]) -> Any:
        raise NotImplementedError

    def not_found(self, req: RecordedRequest) -> tuple[int, bytes, str]:
        return 404, _dumps(self.error(404, message=f"Unknown path {req.path}")), "application/json"

    def tool_reply(self, t: _Turn) -> Any:
        raise NotImplementedError

    def tool_stream(self, t: _Turn) -> _Frames:
        raise NotImplementedError

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        raise NotImplementedError


class _Anthropic(_Dialect):
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
        if system is not None and not isinstance(system, str) and not _text_blocks(system):
            return bad("system: Input should be a valid string or a list of text blocks")
        temperature = body.get("temperature")
        if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 1):
            return bad("temperature: Input should be less than or equal to 1")
        return None

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

    def _message(self, t: _Turn, content: list[Any], stop_reason: str | None, output_tokens: int) -> Any:
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

    def reply(self, t: _Turn) -> Any:
        content = [{"type": "text", "text": t.text}] if t.text else []
        return self._message(t, content, t.finish, t.usage.output_tokens if t.usage else 0)

    def missing_fields(self, t: _Turn) -> Any:
        return {"id": f"msg_fake{t.seq:06d}", "type": "message"}

    @staticmethod
    def _event(name: str, data: Any) -> bytes:
        return f"event: {name}\ndata: ".encode() + _dumps(data) + b"\n\n"

    def stream(self, t: _Turn) -> _Frames:
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
            head.append(
                self._event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            head.append(self._event("ping", {"type": "ping"}))
            deltas = [
                self._event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}},
                )
                for c in t.chunks
            ]
            tail.append(self._event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": t.finish, "stop_sequence": None},
        }
        if t.usage is not None:
            delta["usage"] = {"output_tokens": t.usage.output_tokens}
        tail.append(self._event("message_delta", delta))
        tail.append(self._event("message_stop", {"type": "message_stop"}))
        return _Frames(head, deltas, tail)

    def malformed_frame(self) -> bytes:
        return b'event: message_start\ndata: {"type": "message_start", "message": \n\n'

    def _tool_block(self, t: _Turn) -> dict[str, Any]:
        return {"type": "tool_use", "id": f"toolu_fake{t.seq:06d}", "name": t.step.tool_name, "input": TOOL_ARGS}

    def tool_reply(self, t: _Turn) -> Any:
        content = ([{"type": "text", "text": t.text}] if t.text else []) + [self._tool_block(t)]
        return self._message(t, content, "tool_use", t.usage.output_tokens if t.usage else 0)

    def tool_stream(self, t: _Turn) -> _Frames:
        frames = self.stream(replace(t, finish="tool_use"))
        index = 1 if t.chunks else 0
        block = {**self._tool_block(t), "input": {}}
        tool = [self._event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})]
        tool += [
            self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}},
            )
            for p in _TOOL_ARGS_PIECES
        ]
        tool.append(self._event("content_block_stop", {"type": "content_block_stop", "index": index}))
        return _Frames(frames.head, frames.deltas, frames.tail[:-2] + tool + frames.tail[-2:])

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        return self.error(400, message=f"prompt is too long: {prompt} tokens > {window} maximum")

    def stream_error_frame(self, t: _Turn) -> bytes:
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


class _OpenAI(_Dialect):
    """OpenAI Chat Completions: API reference 'Create chat completion', 'The chat completion
    chunk object' (stream_options.include_usage), 'List models', guide 'Error codes'."""

    kind = "openai"
    finish_names: ClassVar[dict[str, str]] = {"stop": "stop", "length": "length", "filter": "content_filter"}
    ROLES: ClassVar[tuple[str, ...]] = ("system", "developer", "user", "assistant", "tool", "function")

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and path == f"{self.base_path}/chat/completions":
            return "generate"
        if method == "GET" and path == f"{self.base_path}/models":
            return "models"
        if self.llama_cpp_python and (method, path) in (("POST", "/extras/tokenize"), ("POST", "/extras/tokenize/count")):
            return "side"
        if self.llama_cpp and not self.llama_cpp_python and (method, path) in (("GET", "/props"), ("POST", "/tokenize")):
            return "side"
        return None

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        if api_key is None:
            return None
        header = req.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return 401, self.error(
                401,
                code=None,
                message=(
                    "You didn't provide an API key. You need to provide your API key in an Authorization "
                    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                ),
            )
        got = header[len("Bearer ") :]
        if got != api_key:
            masked = f"{got[:3]}****{got[-4:]}" if len(got) > 8 else "****"
            return 401, self.error(
                401,
                code="invalid_api_key",
                message=(
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys."
                ),
            )
        return None

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        body = req.json

        def bad(msg: str, param: str | None = None, code: str | None = None) -> tuple[int, Any]:
            err = self.error(400, message=msg, code=code)
            err["error"]["param"] = param
            return 400, err

        if not isinstance(body, dict):
            return bad("We could not parse the JSON body of your request.")
        if not isinstance(body.get("model"), str):
            return bad("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in self.ROLES:
                role = m.get("role") if isinstance(m, dict) else None
                return bad(
                    f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                    "'user', 'tool', and 'function'.",
                    f"messages[{i}].role",
                    "invalid_value",
                )
        temperature = body.get("temperature")
        if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
            return bad(
                f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
                f"but got {temperature} instead.",
                "temperature",
                "decimal_above_max_value",
            )
        if body.get("stream_options") is not None and body.get("stream") is not True:
            return bad(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
        return None

    def error(
        self,
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        model: str = "",
    ) -> Any:
        param: str | None = None
        if status == 401:
            etype, code = "invalid_request_error", code
            message = message or "Incorrect API key provided."
        elif status == 404:
            etype, code = "invalid_request_error", code or "model_not_found"
            message = message or f"The model `{model}` does not exist or you do not have access to it."
        elif status == 429 and (error_type == "insufficient_quota" or code == "insufficient_quota"):
            etype, code = "insufficient_quota", "insufficient_quota"
            message = message or (
                "You exceeded your current quota, please check your plan and billing details."
            )
        elif status == 429:
            etype, code = "requests", code or "rate_limit_exceeded"
            message = message or f"Rate limit reached for {model or 'model'} on requests per min (RPM)."
        elif code == "context_length_exceeded":
            etype, param = "invalid_request_error", "messages"
            message = message or (
                "This model's maximum context length is 128000 tokens. However, "
                "your messages resulted in 130000 tokens. Please reduce the length "
                "of the messages."
            )
        elif status >= 500:
            etype = "server_error"
            message = message or ("The server had an error while processing your request. Sorry about that!")
        else:
            etype = "invalid_request_error"
            message = message or "Invalid request."
        return {"error": {"message": message, "type": error_type or etype, "param": param, "code": code}}

    def headers(self, seq: int) -> dict[str, str]:
        return {"x-request-id": f"req_fake{seq:06d}"}

    @staticmethod
    def _usage(u: Usage) -> dict[str, Any]:
        prompt = u.input_tokens + u.cached_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": u.output_tokens,
            "total_tokens": prompt + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _base(self, t: _Turn, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake{t.seq:06d}",
            "object": obj,
            "created": int(time.time()),
            "model": t.model,
            "system_fingerprint": "fp_fake",
        }

    def reply(self, t: _Turn) -> Any:
        body = self._base(t, "chat.completion")
        body["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": t.text, "refusal": None},
                "logprobs": None,
                "finish_reason": t.finish,
            }
        ]
        if t.usage is not None:
            body["usage"] = self._usage(t.usage)
        return body

    def missing_fields(self, t: _Turn) -> Any:
        return {"id": f"chatcmpl-fake{t.seq:06d}", "object": "chat.completion", "model": t.model}

    llama_cpp = False
    """Speak as llama.cpp's server does: no usage in streams, even when include_usage asks."""
    llama_cpp_python = False
    """Speak as llama-cpp-python's server does (no usage in streams either; its own side endpoints)."""

    def _include_usage(self, t: _Turn) -> bool:
        opts = (t.req.json or {}).get("stream_options") or {}
        return isinstance(opts, dict) and opts.get("include_usage") is True

    def _frame(self, t: _Turn, choices: list[Any], usage: Any = None) -> bytes:
        body = self._base(t, "chat.completion.chunk")
        body["choices"] = choices
        if self._include_usage(t) and not self.llama_cpp:  # docs: every other chunk carries "usage": null
            body["usage"] = usage
        return b"data: " + _dumps(body) + b"\n\n"

    @staticmethod
    def _choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    def stream(self, t: _Turn) -> _Frames:
        head = [self._frame(t, self._choice({"role": "assistant", "content": "", "refusal": None}))]
        deltas = [self._frame(t, self._choice({"content": c})) for c in t.chunks]
        tail = [self._frame(t, self._choice({}, t.finish))]
        if self._include_usage(t) and t.usage is not None and not self.llama_cpp:
            tail.append(self._frame(t, [], self._usage(t.usage)))
        tail.append(b"data: [DONE]\n\n")
        return _Frames(head, deltas, tail)

    def tool_reply(self, t: _Turn) -> Any:
        body = self.reply(t)
        call = {
            "id": f"call_fake{t.seq:06d}",
            "type": "function",
            "function": {"name": t.step.tool_name, "arguments": json.dumps(TOOL_ARGS)},
        }
        body["choices"][0]["message"].update(content=t.text or None, tool_calls=[call])
        body["choices"][0]["finish_reason"] = "tool_calls"
        return body

    def tool_stream(self, t: _Turn) -> _Frames:
        frames = self.stream(replace(t, finish="tool_calls"))
        first = {"index": 0, "id": f"call_fake{t.seq:06d}", "type": "function",
                 "function": {"name": t.step.tool_name, "arguments": ""}}
        calls = [self._frame(t, self._choice({"content": None, "tool_calls": [first]}))]
        calls += [
            self._frame(t, self._choice({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
            for p in _TOOL_ARGS_PIECES
        ]
        return _Frames(frames.head, frames.deltas + calls, frames.tail)

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        flavor = flavor or ("llama-cpp-python" if self.llama_cpp_python else "llama.cpp" if self.llama_cpp else "openai")
        if flavor == "llama.cpp":  # server-task.cpp: the numbers ride beside the message
            message = f"request ({prompt} tokens) exceeds the available context size ({window} tokens), try increasing it"
            return {"error": {"code": 400, "message": message, "type": "exceed_context_size_error",
                              "n_prompt_tokens": prompt, "n_ctx": window}}
        if flavor == "llama.cpp-old":  # older servers said neither number
            message = "the request exceeds the available context size, try increasing it"
            return {"error": {"code": 400, "message": message, "type": "exceed_context_size_error"}}
        if flavor == "llama-cpp-python":  # llama_cpp/server/errors.py: requested = prompt + max_tokens
            message = (
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion."
            )
            return {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                              "code": "context_length_exceeded"}}
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages resulted in "
            f"{prompt} tokens. Please reduce the length of the messages."
        )
        return {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                          "code": "context_length_exceeded"}}

    def models(self, names: list[str]) -> Any:
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 1700000000, "owned_by": "system"} for n in names
            ],
        }

    def not_found(self, req: RecordedRequest) -> tuple[int, bytes, str]:
        err = self.error(404, message=f"Invalid URL ({req.method} {req.path})", code=None)
        err["error"]["code"] = None
        return 404, _dumps(err), "application/json"


class _Gemini(_Dialect):
    """Gemini API: reference 'Generating content' (generateContent, streamGenerateContent with
    alt=sse), 'GenerateContentResponse' (PromptFeedback, UsageMetadata), 'Models', and the
    'Troubleshooting' guide's error table."""

    kind = "gemini"
    finish_names: ClassVar[dict[str, str]] = {"stop": "STOP", "length": "MAX_TOKENS", "filter": "SAFETY"}
    STATUSES: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
    MESSAGES: ClassVar[dict[str, str]] = {
        "RESOURCE_EXHAUSTED": "Resource has been exhausted (e.g. check quota).",
        "INTERNAL": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "UNAVAILABLE": "The model is overloaded. Please try again later.",
        "PERMISSION_DENIED": "The caller does not have permission",
        "DEADLINE_EXCEEDED": "Deadline expired before operation could complete.",
    }
    TOP_LEVEL: ClassVar[set[str]] = {
        "contents",
        "systemInstruction",
        "system_instruction",
        "generationConfig",
        "generation_config",
        "safetySettings",
        "safety_settings",
        "tools",
        "toolConfig",
        "tool_config",
        "cachedContent",
        "cached_content",
    }
    PATH: ClassVar[re.Pattern[str]] = re.compile(
        r"^/(v1|v1beta)/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
    )

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and self.PATH.match(path):
            return "generate"
        if method == "GET" and path in ("/v1beta/models", "/v1/models"):
            return "models"
        return None

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        if api_key is None:
            return None
        got = req.headers.get("x-goog-api-key", req.query.get("key"))
        if got is None:
            return 403, self.error(
                403,
                message=(
                    "Method doesn't allow unregistered callers (callers without established identity). "
                    "Please use API Key or other form of API consumer identity to call this API."
                ),
            )
        if got != api_key:
            err = self.error(400, message="API key not valid. Please pass a valid API key.")
            err["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
            return 400, err
        return None

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        body = req.json

        def bad(msg: str) -> tuple[int, Any]:
            return 400, self.error(400, message=msg)

        if not isinstance(body, dict):
            return bad("Invalid JSON payload received.")
        unknown = sorted(set(body) - self.TOP_LEVEL)
        if unknown:
            return bad(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return bad("* GenerateContentRequest.contents: contents is not specified")
        for c in contents:
            if not isinstance(c, dict) or not isinstance(c.get("parts"), list):
                return bad("* GenerateContentRequest.contents: parts is not specified")
            if c.get("role") not in (None, "user", "model"):
                return bad("Please use a valid role: user, model.")
        config = body.get("generationConfig", body.get("generation_config")) or {}
        temperature = config.get("temperature") if isinstance(config, dict) else None
        if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
            return bad("* GenerateContentRequest.generation_config.temperature: must be in [0, 2]")
        return None

    def wants_stream(self, req: RecordedRequest) -> bool:
        m = self.PATH.match(req.path)
        return bool(m and m["method"] == "streamGenerateContent")

    def stream_content_type(self, req: RecordedRequest) -> str:
        return "text/event-stream" if req.query.get("alt") == "sse" else "application/json"

    def model(self, req: RecordedRequest) -> str:
        m = self.PATH.match(req.path)
        return m["model"] if m else ""

    def last_user_text(self, req: RecordedRequest) -> str:
        body = req.json if isinstance(req.json, dict) else {}
        users = [
            c for c in body.get("contents", []) if isinstance(c, dict) and c.get("role", "user") == "user"
        ]
        return _text_of(users[-1].get("parts")) if users else ""

    def error(
        self,
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        model: str = "",
    ) -> Any:
        st = error_type or self.STATUSES.get(status) or ("INVALID_ARGUMENT" if status < 500 else "INTERNAL")
        if st == "NOT_FOUND" and not message:
            message = (
                f"models/{model} is not found for API version v1beta, "
                "or is not supported for generateContent."
            )
        return {
            "error": {
                "code": status,
                "message": message or self.MESSAGES.get(st, "Request contains an invalid argument."),
                "status": st,
            }
        }

    @staticmethod
    def _usage(u: Usage, *, final: bool) -> dict[str, int]:
        prompt = u.input_tokens + u.cached_tokens
        if not final:  # non-final stream chunks: prompt side only; the last chunk is complete
            return {"promptTokenCount": prompt, "totalTokenCount": prompt}
        meta = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": u.output_tokens,
            "totalTokenCount": prompt + u.output_tokens,
        }
        if u.cached_tokens:  # proto3 JSON leaves zero counts out
            meta["cachedContentTokenCount"] = u.cached_tokens
        return meta

    def _response(self, t: _Turn, text: str | None, finish: str | None, final: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if t.blocked:
            body["promptFeedback"] = {
                "blockReason": "SAFETY",
                "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}],
            }
        else:
            cand: dict[str, Any] = {"content": {"parts": [{"text": text or ""}], "role": "model"}, "index": 0}
            if finish:
                cand["finishReason"] = finish
            body["candidates"] = [cand]
        if t.usage is not None:
            body["usageMetadata"] = (
                self._usage(t.usage, final=False) if t.blocked else self._usage(t.usage, final=final)
            )
        body["modelVersion"] = t.model
        body["responseId"] = f"fakeresp{t.seq:06d}"
        return body

    def reply(self, t: _Turn) -> Any:
        return self._response(t, t.text, t.finish, final=True)

    def missing_fields(self, t: _Turn) -> Any:
        return {"modelVersion": t.model, "responseId": f"fakeresp{t.seq:06d}"}

    def stream(self, t: _Turn) -> _Frames:
        # No terminator exists in Gemini streams: the last chunk (finishReason + complete
        # usageMetadata) is the end. Real SSE frames are CRLF-delimited, which SSE allows.
        events = [self._response(t, c, None, final=False) for c in t.chunks[:-1]]
        last = t.chunks[-1] if t.chunks else ""
        events.append(self._response(t, last, t.finish, final=True))
        if t.req.query.get("alt") == "sse":
            frames = [b"data: " + _dumps(e) + b"\r\n\r\n" for e in events]
            return _Frames([], frames[:-1], frames[-1:])
        # Without alt=sse the documented framing is one JSON array, streamed element by element.
        parts = [(b"[" if i == 0 else b",\r\n") + _dumps(e) for i, e in enumerate(events)]
        parts[-1] += b"]"
        return _Frames([], parts[:-1], parts[-1:])

    def malformed_frame(self) -> bytes:
        return b'data: {"candidates": [{"content": \r\n\r\n'

    def _tool_response(self, t: _Turn, text: str) -> dict[str, Any]:
        body = self._response(t, text, "STOP", final=True)
        parts = ([{"text": text}] if text else []) + [{"functionCall": {"name": t.step.tool_name, "args": TOOL_ARGS}}]
        body["candidates"][0]["content"]["parts"] = parts
        return body

    def tool_reply(self, t: _Turn) -> Any:
        return self._tool_response(t, t.text)

    def tool_stream(self, t: _Turn) -> _Frames:
        events = [self._response(t, c, None, final=False) for c in t.chunks] + [self._tool_response(t, "")]
        frames = [b"data: " + _dumps(e) + b"\r\n\r\n" for e in events]
        return _Frames([], frames[:-1], frames[-1:])

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        message = f"The input token count ({prompt}) exceeds the maximum number of tokens allowed ({window})."
        return self.error(400, message=message)

    def models(self, names: list[str]) -> Any:
        return {
            "models": [
                {
                    "name": f"models/{n}",
                    "version": "001",
                    "displayName": n,
                    "description": "fake model",
                    "inputTokenLimit": 1048576,
                    "outputTokenLimit": 8192,
                    "supportedGenerationMethods": ["generateContent", "countTokens"],
                }
                for n in names
            ]
        }


class _Ollama(_Dialect):
    """Ollama native API: docs 'Chat' (/api/chat), 'Streaming', 'Usage', 'Errors', 'List models'.

    Local Ollama has no auth; an api_key makes the fake demand ``Authorization: Bearer`` as
    Ollama's cloud endpoint does. ``stream`` defaults to TRUE when absent.
    """

    kind = "ollama"
    finish_names: ClassVar[dict[str, str]] = {"stop": "stop", "length": "length"}
    supports_blocked = False
    supports_stream_error = True
    ROLES: ClassVar[tuple[str, ...]] = ("system", "user", "assistant", "tool")

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and path == "/api/chat":
            return "generate"
        if method == "GET" and path == "/api/tags":
            return "models"
        if (method, path) in (("POST", "/api/show"), ("GET", "/api/ps")):
            return "side"
        return None

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        if api_key is None or req.headers.get("authorization") == f"Bearer {api_key}":
            return None
        return 401, {"error": "unauthorized"}

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        body = req.json
        if not isinstance(body, dict):
            return 400, {"error": "invalid request body"}
        if not body.get("model"):
            return 400, {"error": "model is required"}
        messages = body.get("messages", [])
        if not isinstance(messages, list):
            return 400, {"error": "messages must be an array"}
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in self.ROLES:
                return 400, {"error": "invalid message role"}
        if not isinstance(body.get("options", {}), dict):
            return 400, {"error": "options must be an object"}
        return None

    def wants_stream(self, req: RecordedRequest) -> bool:
        body = req.json if isinstance(req.json, dict) else {}
        return body.get("stream", True) is not False

    def stream_content_type(self, req: RecordedRequest) -> str:
        return "application/x-ndjson"

    def finish(self, name: str) -> str:
        if name == "filter":
            raise ValueError("Ollama has no content-filter finish reason")
        return super().finish(name)

    def error(
        self,
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        model: str = "",
    ) -> Any:
        default = {
            404: f'model "{model}" not found, try pulling it first',
            400: "invalid request",
            429: "too many requests",
            502: "bad gateway",
        }.get(status, "the model failed to generate a response")
        return {"error": message or default}

    def _stats(self, t: _Turn) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "total_duration": 174560334,
            "load_duration": 101397084,
            "prompt_eval_duration": 13074791,
            "eval_duration": 52479709,
        }
        if t.usage is not None:
            stats["prompt_eval_count"] = t.usage.input_tokens
            stats["eval_count"] = t.usage.output_tokens
        return stats

    def reply(self, t: _Turn) -> Any:
        return {
            "model": t.model,
            "created_at": _now_iso(),
            "message": {"role": "assistant", "content": t.text},
            "done": True,
            "done_reason": t.finish,
            **self._stats(t),
        }

    def missing_fields(self, t: _Turn) -> Any:
        return {"model": t.model, "created_at": _now_iso()}

    def stream(self, t: _Turn) -> _Frames:
        def line(obj: Any) -> bytes:
            return _dumps(obj) + b"\n"

        deltas = [
            line(
                {
                    "model": t.model,
                    "created_at": _now_iso(),
                    "message": {"role": "assistant", "content": c},
                    "done": False,
                }
            )
            for c in t.chunks
        ]
        final = line(
            {
                "model": t.model,
                "created_at": _now_iso(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": t.finish,
                **self._stats(t),
            }
        )
        return _Frames([], deltas, [final])

    def malformed_frame(self) -> bytes:
        return b'{"model": "x", "message": {"role": "assistant", "content": \n'

    def stream_error_frame(self, t: _Turn) -> bytes:
        return _dumps({"error": t.step.message or "an error was encountered while running the model"}) + b"\n"

    def _tool_calls(self, t: _Turn) -> list[Any]:
        return [{"function": {"name": t.step.tool_name, "arguments": TOOL_ARGS}}]

    def tool_reply(self, t: _Turn) -> Any:
        body = self.reply(t)
        body["message"]["tool_calls"] = self._tool_calls(t)
        return body

    def tool_stream(self, t: _Turn) -> _Frames:
        frames = self.stream(t)
        call = {"model": t.model, "created_at": _now_iso(),
                "message": {"role": "assistant", "content": "", "tool_calls": self._tool_calls(t)}, "done": False}
        return _Frames(frames.head, frames.deltas + [_dumps(call) + b"\n"], frames.tail)

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        # Ollama says by how much, never the window itself.
        return {"error": f"prompt too long; exceeded max context length by {prompt - window} tokens"}

    def models(self, names: list[str]) -> Any:
        return {
            "models": [
                {
                    "name": n,
                    "model": n,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 3338801804,
                    "digest": "0" * 64,
                    "details": {
                        "format": "gguf",
                        "family": "llama",
                        "families": ["llama"],
                        "parameter_size": "1B",
                        "quantization_level": "Q4_K_M",
                    },
                }
                for n in names
            ]
        }

    def not_found(self, req: RecordedRequest) -> tuple[int, bytes, str]:
        return 404, b"404 page not found", "text/plain"


_DIALECTS: dict[str, type[_Dialect]] = {
    "anthropic": _Anthropic,
    "openai": _OpenAI,
    "gemini": _Gemini,
    "ollama": _Ollama,
}
_UNSET: Any = object()
READY_WITHIN_S = 30.0
"""How long starting, stopping or an awaited request may take before it is an error: ample on a busy
machine (a healthy server takes milliseconds), and only ever waited in full when something is wrong."""


def _reason(status: int) -> str:
    if status == 529:
        return "Overloaded"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _rewire(body: bytes, step: Step) -> bytes:
    for old, new in step.wire_replace.items():
        body = body.replace(old, new)
    return body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    """Parse one HTTP/1.1 request (Content-Length or chunked body); None if the peer went away."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3:
        return None  # not HTTP/1.x: drop the connection
    method, target, _version = request_line
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    url = urlsplit(target)
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return RecordedRequest(
        method=method,
        path=url.path,
        query=dict(parse_qsl(url.query, keep_blank_values=True)),
        headers=headers,
        body=body,
        json=parsed,
    )


@dataclass
class _Entry:
    step: Step
    remaining: int | None


class FakeProvider:
    """A fake provider API on 127.0.0.1:<free port>, scripted per request.

    Start/stop with ``with``/``async with`` or ``start()``/``stop()``. Queue behaviour with
    :meth:`reply`, :meth:`fault` or :meth:`queue`; each request to a matching endpoint consumes
    the first matching step, and with an empty script the fake answers normally with
    ``f"echo: {last user text}"`` (or ``text``) and ``usage``.
    """

    def __init__(
        self,
        kind: Kind,
        *,
        api_key: str | None = _UNSET,
        models: list[str] | None = None,
        usage: Usage | None = None,
        text: str | None = None,
        base_path: str | None = None,
        llama_cpp: bool = False,
        llama_cpp_python: bool = False,
        n_ctx: int = 4096,
        context_length: int = 131072,
        num_ctx: int | None = None,
        default_num_ctx: int = 4096,
    ) -> None:
        if kind not in _DIALECTS:
            raise ValueError(f"unknown provider kind {kind!r}; expected one of {KINDS}")
        self.kind: Kind = kind
        self.api_key: str | None = (
            (None if kind == "ollama" else f"test-{kind}-key") if api_key is _UNSET else api_key
        )
        if base_path is None:
            base_path = "/v1" if kind == "openai" else ""
        self.base_path = base_path.rstrip("/")
        self.models = list(models) if models is not None else list(DEFAULT_MODELS[kind])
        self.usage = usage or Usage()
        self.text = text
        self._dialect = _DIALECTS[kind](self.base_path)
        if (llama_cpp or llama_cpp_python) and kind != "openai":
            raise ValueError("llama_cpp=True and llama_cpp_python=True speak OpenAI-compatible servers: kind must be openai")
        self.llama_cpp_python = llama_cpp_python
        """Speak as llama-cpp-python's server (the Python one): no /props or /tokenize, but POST
        /extras/tokenize and /extras/tokenize/count at the root; no usage in streams; a prompt of
        ``n_ctx`` tokens or more refused with 400 ``context_length_exceeded`` when asked without
        streaming, and with a 200 event stream that ends before any event when streaming."""
        self.llama_cpp = llama_cpp or llama_cpp_python
        """Serve llama.cpp's GET /props and POST /tokenize at the root, send no usage in streams,
        and refuse a prompt of ``n_ctx`` tokens or more as llama.cpp does."""
        if isinstance(self._dialect, _OpenAI):
            self._dialect.llama_cpp = self.llama_cpp
            self._dialect.llama_cpp_python = llama_cpp_python
        self.n_ctx = n_ctx
        self.context_length = context_length
        """Ollama: the trained window, in /api/show's model_info."""
        self.num_ctx = num_ctx
        """Ollama: the Modelfile's num_ctx, in /api/show's parameters (None: not set)."""
        self.default_num_ctx = default_num_ctx
        """Ollama: the server's default context, what a loaded model without num_ctx runs with."""
        self.loaded: dict[str, int] = {}
        """Ollama: models in memory (after answering a chat) and their context, as /api/ps lists them."""
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._script: list[_Entry] = []
        self._seq = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._error: BaseException | None = None
        self.server_errors: list[BaseException] = []
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        """Bind 127.0.0.1:0 and serve from a daemon thread with its own event loop."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), daemon=True, name=f"fake-provider-{self.kind}"
        )
        self._thread.start()
        if not ready.wait(READY_WITHIN_S) or self._error is not None:
            raise RuntimeError(f"fake {self.kind} server failed to start") from self._error
        return self

    def stop(self, timeout: float = READY_WITHIN_S) -> None:
        """Cancel every in-flight request (hangs included), close the socket, join the thread."""
        if self._thread is None or self._loop is None:
            return
        if self._stop_event is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"fake {self.kind} server did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeProvider:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await anyio.to_thread.run_sync(self.stop)

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client's base_url setting would be (``.../v1`` for OpenAI, the root otherwise)."""
        return self.root_url + self.base_path

    # -- scripting ---------------------------------------------------------------------------

    def queue(self, *steps: Step) -> None:
        """Append steps to the script (checked against what this provider documents)."""
        for step in steps:
            self._check(step)
        with self._cond:
            self._script.extend(_Entry(s, s.times) for s in steps)

    def reply(self, *, times: int | None = 1, **fields: Any) -> None:
        """Queue a successful answer, e.g. ``reply(text="hi", usage=Usage(5, 2))``."""
        self.queue(Step(times=times, **fields))

    def fault(self, kind: FaultKind, *, times: int | None = 1, **fields: Any) -> None:
        """Queue a fault, e.g. ``fault("status", status=429, retry_after=2)``."""
        self.queue(Step(fault=kind, times=times, **fields))

    def clear(self) -> None:
        """Forget the script and the request log."""
        with self._cond:
            self._script.clear()
            self._requests.clear()

    @property
    def pending(self) -> int:
        """Number of scripted steps not yet used (persistent steps count once)."""
        with self._cond:
            return len(self._script)

    def _check(self, step: Step) -> None:
        if step.fault is not None and step.fault not in FAULTS:
            raise ValueError(f"unknown fault {step.fault!r}; expected one of {FAULTS}")
        if step.fault == "status" and step.status is None:
            raise ValueError("fault='status' needs status=<code>")
        if step.fault == "slow" and step.delay <= 0:
            raise ValueError("fault='slow' needs delay=<seconds>")
        if step.fault == "blocked" and not self._dialect.supports_blocked:
            raise ValueError(f"{self.kind} documents no safety-block response")
        if step.fault == "stream_error" and not self._dialect.supports_stream_error:
            raise ValueError(f"{self.kind} documents no in-stream error event")
        if step.fault == "context" and step.window is not None and step.window < 1:
            raise ValueError("window must be >= 1")
        if step.finish is not None:
            self._dialect.finish(step.finish)
        if step.times is not None and step.times < 1:
            raise ValueError("times must be >= 1 or None")

    def _take(self, endpoint: Endpoint) -> Step | None:
        with self._cond:
            for i, entry in enumerate(self._script):
                if entry.step.endpoint == endpoint:
                    if entry.remaining is not None:
                        entry.remaining -= 1
                        if entry.remaining == 0:
                            del self._script[i]
                    return entry.step
        return None

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, oldest first."""
        with self._cond:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._cond:
            if not self._requests:
                raise AssertionError(f"no request reached the fake {self.kind} server")
            return self._requests[-1]

    @property
    def counts(self) -> Counter[str]:
        """Requests received per path (query string excluded)."""
        with self._cond:
            return Counter(r.path for r in self._requests)

    def wait_for_requests(self, n: int, timeout: float = READY_WITHIN_S) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived (e.g. before cancelling a hung call)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests arrived within {timeout}s")
            return list(self._requests)

    # -- server internals --------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        assert self._loop is not None
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            ready.set()
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            open_writers = list(self._writers)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for writer in open_writers:  # drop unflushed buffers so no transport outlives the loop
                writer.transport.abort()
            await server.wait_closed()
            await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            req = await _read_request(reader)
            if req is not None:
                with self._cond:
                    self._requests.append(req)
                    self._cond.notify_all()
                await self._respond(req, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError, OSError):
            pass  # stop() cancelled us or the client went away: nothing left to answer
        except Exception as exc:  # a bug in the fake itself: keep it for the test to see
            self.server_errors.append(exc)
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _forever(self) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        step: Step | None = None,
    ) -> None:
        hdrs = {
            "content-type": content_type,
            "content-length": str(len(body)),
            "connection": "close",
            **(headers or {}),
        }
        if step is not None and step.retry_after is not None:
            hdrs["retry-after"] = str(step.retry_after)
        if step is not None:
            hdrs.update(step.headers)
            body = _rewire(body, step)
            hdrs["content-length"] = str(len(body))
        if step is not None and step.fault in ("cut_stream", "stall"):
            writer.write(_head(status, hdrs) + body[: len(body) // 2])
            await writer.drain()
            if step.fault == "stall":
                await self._forever()
            return  # the handler closes the socket short of Content-Length
        writer.write(_head(status, hdrs) + body)
        await writer.drain()

    async def _respond(self, req: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        d = self._dialect
        endpoint = d.route(req.method, req.path)
        if endpoint is None:
            status, body, ctype = d.not_found(req)
            await self._send(writer, status, body, ctype)
            return
        step = self._take(endpoint) or Step(endpoint=endpoint)
        seq = next(self._seq)
        headers = d.headers(seq)
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.fault == "close":
            return
        if step.fault == "hang":
            await self._forever()
            return
        problem = d.auth_error(req, self.api_key) or (d.validate(req) if endpoint == "generate" else None)
        if problem is not None:
            await self._send(writer, problem[0], _dumps(problem[1]), headers=headers)
            return
        model = d.model(req)
        if step.fault == "status" or (step.fault == "stream_error" and not d.wants_stream(req)):
            status = step.status or d.stream_error_status
            err = d.error(
                status, error_type=step.error_type, message=step.message, code=step.code, model=model
            )
            await self._send(writer, status, _dumps(err), headers=headers, step=step)
            return
        if step.fault == "html":
            await self._send(writer, 200, HTML_PAGE, "text/html; charset=utf-8", headers=headers, step=step)
            return
        if endpoint == "side":
            status, body = self._side(req)
            await self._send(writer, status, _dumps(body), headers=headers, step=step)
            return
        if endpoint == "models":
            body = b'{"data": [' if step.fault == "malformed" else _dumps(d.models(self.models))
            await self._send(writer, 200, body, headers=headers, step=step)
            return
        prompt = side.prompt_tokens(req.json) if self.llama_cpp or step.fault == "context" else 0
        if step.fault == "context" or (self.llama_cpp and prompt >= self.n_ctx and step.fault is None):
            if self.llama_cpp_python and step.fault is None and d.wants_stream(req):
                # What llama-cpp-python answers a stream request over its window (seen): a 200
                # stream that ends before any event, its log saying "Requested tokens (N) exceed
                # context window of W".
                await self._stream(writer, self._turn(req, replace(step, fault="empty_stream"), seq, model), headers)
                return
            window = step.window or (self.n_ctx if self.llama_cpp else 4096)
            asked = (req.json or {}).get("max_tokens") if isinstance(req.json, dict) else None
            body = d.context_error(window, max(prompt, window + 100), step.flavor,
                                   max_tokens=asked if type(asked) is int else 0)
            await self._send(writer, 400, _dumps(body), headers=headers, step=step)
            return
        turn = self._turn(req, step, seq, model)
        if self.kind == "ollama":
            self.loaded[side.ollama_name(model)] = self.num_ctx or self.default_num_ctx
        if step.fault == "tool_call":
            if d.wants_stream(req):
                await self._stream(writer, turn, headers, d.tool_stream(turn))
            else:
                await self._send(writer, 200, _dumps(d.tool_reply(turn)), headers=headers, step=step)
        elif d.wants_stream(req) and step.fault != "json_to_stream":
            await self._stream(writer, turn, headers)
        elif step.fault == "malformed":
            body = (
                _dumps(d.missing_fields(turn))
                if step.malformed == "missing_fields"
                else b'{"id": "fake", "content": ['
            )
            await self._send(writer, 200, body, headers=headers, step=step)
        else:
            await self._send(writer, 200, _dumps(d.reply(turn)), headers=headers, step=step)

    def _side(self, req: RecordedRequest) -> tuple[int, Any]:
        """llama.cpp's /props and /tokenize, Ollama's /api/show and /api/ps."""
        if req.path == "/props":
            return 200, side.llama_props(self.n_ctx, f"/models/{self.models[0]}.gguf")
        if req.path == "/tokenize":
            return side.llama_tokenize(req.json)
        if req.path.startswith("/extras/tokenize"):
            return side.llama_python_tokenize(req.json, count=req.path.endswith("/count"))
        if req.path == "/api/ps":
            return 200, side.ollama_ps(self.loaded)
        body = req.json if isinstance(req.json, dict) else {}
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or side.ollama_name(name) not in {side.ollama_name(m) for m in self.models}:
            return 404, {"error": f"model '{name}' not found"}
        return 200, side.ollama_show(name, context_length=self.context_length, num_ctx=self.num_ctx)

    def _turn(self, req: RecordedRequest, step: Step, seq: int, model: str) -> _Turn:
        blocked = step.fault == "blocked"
        if step.fault == "lone_surrogate" and step.text is None and step.chunks is None:
            step = replace(step, text=LONE_SURROGATE_TEXT, chunks=LONE_SURROGATE_CHUNKS)
        elif step.fault == "split_surrogate" and step.text is None and step.chunks is None:
            step = replace(step, text=SPLIT_SURROGATE_TEXT, chunks=SPLIT_SURROGATE_CHUNKS)
        if blocked:
            text = ""
        elif step.fault == "tool_call":
            text = step.text or ""
        elif step.text is not None:
            text = step.text
        elif step.chunks is not None:
            text = "".join(step.chunks)
        elif self.text is not None:
            text = self.text
        else:
            text = f"echo: {self._dialect.last_user_text(req)}"
        chunks = [] if blocked else list(step.chunks) if step.chunks is not None else _split(text)
        finish = self._dialect.finish(step.finish or ("filter" if blocked else "stop"))
        usage = None if step.fault == "no_usage" else (step.usage or self.usage)
        return _Turn(
            req=req,
            seq=seq,
            model=model,
            text=text,
            chunks=chunks,
            usage=usage,
            finish=finish,
            blocked=blocked,
            step=step,
        )

    async def _stream(
        self, writer: asyncio.StreamWriter, t: _Turn, headers: Mapping[str, str], frames: _Frames | None = None
    ) -> None:
        d, step = self._dialect, t.step
        frames = frames or d.stream(t)
        hdrs = {
            "content-type": d.stream_content_type(t.req),
            "transfer-encoding": "chunked",
            "cache-control": "no-cache",
            "connection": "close",
            **headers,
            **step.headers,
        }
        writer.write(_head(200, hdrs))
        if step.fault == "malformed":
            body = [d.malformed_frame()]
        elif step.fault == "empty_stream":
            body = []
        elif step.fault in ("cut_stream", "stall", "stream_error"):
            body = frames.head + frames.deltas[: step.after_chunks]
        else:
            body = frames.head + frames.deltas + frames.tail
        for i, frame in enumerate(body):
            if i and step.chunk_delay:
                await asyncio.sleep(step.chunk_delay)
            writer.write(_chunk(_rewire(frame, step)))
            await writer.drain()
        if step.fault == "stream_error":
            writer.write(_chunk(d.stream_error_frame(t)))
        if step.fault == "stall":
            await self._forever()
            return
        if step.fault == "cut_stream" and not step.clean_eof:
            await writer.drain()
            return  # closed without the terminating zero-length chunk
        writer.write(b"0\r\n\r\n")
        await writer.drain()


@contextlib.contextmanager
def running(kind: Kind, **kwargs: Any) -> Iterator[FakeProvider]:
    """``with running("openai") as fake:`` — shorthand for ``with FakeProvider(...)``."""
    with FakeProvider(kind, **kwargs) as fake:
        yield fake


@contextlib.contextmanager
def refused_url(path: str = "") -> Iterator[str]:
    """A URL on 127.0.0.1 that refuses connections for as long as the context is open.

    The port is bound but never listened on, so connects get ECONNREFUSED and no other
    process can take the port meanwhile.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{path}"
    finally:
        sock.close()


def unused_url(path: str = "") -> str:
    """A URL on 127.0.0.1 where nothing listens now (the port could be reused later; prefer
    :func:`refused_url` when the test runs long)."""
    with refused_url(path) as url:
        return url
