"""What every fake dialect shares: the scripted steps and usage a test gives, the request as the
fake received it, what one answer is rendered from, and the ``Dialect`` base each provider's wire
format implements (``anthropic.py``, ``openai.py``, ``gemini.py``, ``ollama.py``).

Dialects return plain data; the loopback server (``server.py``) does the HTTP and the faults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, get_args

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
    tool_calls: tuple[tuple[str, Any], ...] | None = None
    """For a ``tool_call`` step: the calls to answer with, ``(name, arguments)`` each, the
    arguments an object or raw text (sent as given, to test broken arguments). None: one call
    of ``tool_name`` with ``TOOL_ARGS``."""
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
class Turn:
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
class Frames:
    """A stream split so faults can cut it: opening frames, one frame per text delta, closing."""

    head: list[bytes]
    deltas: list[bytes]
    tail: list[bytes]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


TOOL_ARGS = {"city": "Paris"}
"""The arguments of every fake tool call; streams send them in two pieces."""
TOOL_ARGS_PIECES = ('{"city": ', '"Paris"}')
LONE_SURROGATE_TEXT = "half \ud83d and \ude00 end"
LONE_SURROGATE_CHUNKS = ("half \ud83d", " and \ude00", " end")
SPLIT_SURROGATE_TEXT = "smile \U0001f600 done"
SPLIT_SURROGATE_CHUNKS = ("smile \ud83d", "\ude00 done")
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head><body>Please log in.</body></html>"


def split_text(text: str, parts: int = 3) -> list[str]:
    """Deterministic text deltas: ``parts`` roughly equal slices."""
    if not text:
        return []
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def text_of(content: Any) -> str:
    """Text of a message content that is a string or a list of text parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def text_blocks(value: Any) -> bool:
    """True for a list of ``{"type": "text", "text": str}`` blocks (Anthropic's list form of system)."""
    return isinstance(value, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in value
    )


class Dialect:
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
        return text_of(users[-1].get("content")) if users else ""

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

    def reply(self, t: Turn) -> Any:
        raise NotImplementedError

    def missing_fields(self, t: Turn) -> Any:
        raise NotImplementedError

    def stream(self, t: Turn) -> Frames:
        raise NotImplementedError

    def malformed_frame(self) -> bytes:
        return b'data: {"this is": not json\n\n'

    def stream_error_frame(self, t: Turn) -> bytes:
        raise ValueError(f"{self.kind} has no documented in-stream error event")

    def models(self, names: list[str]) -> Any:
        raise NotImplementedError

    def not_found(self, req: RecordedRequest) -> tuple[int, bytes, str]:
        return 404, dumps(self.error(404, message=f"Unknown path {req.path}")), "application/json"

    def tool_reply(self, t: Turn) -> Any:
        raise NotImplementedError

    def tool_stream(self, t: Turn) -> Frames:
        raise NotImplementedError

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        raise NotImplementedError
