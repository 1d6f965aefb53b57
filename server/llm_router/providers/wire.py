"""Reading what an upstream sends, whatever it sends: bodies and streams read with size caps,
JSON decoded without trusting its shape, and every text kept from upstream made valid Unicode.

Nothing here knows a provider's format; the adapters (and ``base``) build on it. Each function
raises ``MalformedResponse`` (a ``ProviderError``) or nothing: an upstream's bytes can fail one
attempt, never the process.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, overload

import httpx

from ..redaction import clip, mask
from ..types import MalformedResponse

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_STREAM_BYTES",
    "MAX_LINE_BYTES",
    "MAX_ERROR_BODY_BYTES",
    "MAX_TOKEN_COUNT",
    "SHAPE_ERRORS",
    "clean_text",
    "TextJoiner",
    "upstream_str",
    "token_count",
    "redact",
    "QUOTE_HEAD",
    "shown",
    "json_or_malformed",
    "dumps_or_empty",
    "content_type",
    "is_json_type",
    "read_capped",
    "error_body",
    "EventStream",
    "iter_ndjson",
    "not_a_stream",
]

# Caps on what an upstream may send. Read at call time, so tests can lower them.
MAX_BODY_BYTES = 32 * 1024 * 1024
"""A whole (non-stream) answer: a 100k-token answer is about 1 MB of JSON."""
MAX_STREAM_BYTES = 64 * 1024 * 1024
"""A whole stream: event framing costs about 150 bytes a token, so a 128k-token answer fits."""
MAX_LINE_BYTES = 16 * 1024 * 1024
"""One line of an event stream or NDJSON body."""
MAX_ERROR_BODY_BYTES = 64 * 1024
"""An error body: only its first 500 characters are kept."""
MAX_TOKEN_COUNT = 1_000_000_000
"""A usage figure above this is not a count but garbage (it would bill absurd sums)."""
SHAPE_ERRORS: tuple[type[BaseException], ...] = (
    KeyError, TypeError, AttributeError, ValueError, IndexError, OverflowError, RecursionError,
)
"""What reading a JSON value of the wrong shape raises (``int(float("inf"))`` is an OverflowError)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` as valid Unicode: surrogate pairs joined into their character, lone halves U+FFFD.

    JSON may carry ``"\\ud83d"`` alone (JavaScript servers emit such halves), and a Python string
    holding one cannot be written as UTF-8: left alone, it ends the stdio writer. Valid text (the
    usual case) is returned as it is, after one scan.
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class TextJoiner:
    """Makes stream deltas valid text as they come: a high surrogate ending one delta is held
    back until the next (a pair split across two chunks is rejoined), or until ``flush``."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        if self._held:
            piece, self._held = self._held + piece, ""
        if piece and "\ud800" <= piece[-1] <= "\udbff":
            piece, self._held = piece[:-1], piece[-1]
        return clean_text(piece)

    def flush(self) -> str:
        """What is still held at the end of the stream: a half that never found its pair."""
        held, self._held = self._held, ""
        return "\ufffd" if held else ""


@overload
def upstream_str(value: Any, default: str, *, limit: int = 200, secrets: Sequence[str] = ()) -> str: ...
@overload
def upstream_str(value: Any, default: str | None = None, *, limit: int = 200, secrets: Sequence[str] = ()) -> str | None: ...
def upstream_str(value: Any, default: str | None = None, *, limit: int = 200, secrets: Sequence[str] = ()) -> str | None:
    """A short string field from upstream (a model name, an id, a finish reason), redacted, then
    cut, made valid; ``default`` when it is missing, empty or not a string."""
    if not isinstance(value, str) or not value:
        return default
    return clean_text(clip(value, secrets, limit))


def token_count(value: Any) -> int:
    """A usage figure as an int. Raises ``ValueError`` (or another of ``SHAPE_ERRORS``) for a
    negative, absurd or non-numeric one: such a body is malformed, not a bill."""
    count = int(value)
    if not 0 <= count <= MAX_TOKEN_COUNT:
        raise ValueError(f"token count {count} out of range")
    return count


def redact(text: str, secrets: Sequence[str]) -> str:
    """Remove each of ``secrets`` (an adapter's key and other credentials) from text that may be
    shown (bodies can echo them back), and the start of one that ends the text (a body read only
    up to a cap can cut a key in two)."""
    return mask(text, secrets)


QUOTE_HEAD = 1024
"""How much of a body is looked at to quote its start. The key is redacted in all of it, its
cut-off start at the end included, before the first 200 characters are kept: redacting shrinks
the head, so what lay past 200 (a key cut at 1024) moves inside it."""


def shown(head: bytes | str, secrets: Sequence[str]) -> str:
    """The start of a body (pass up to ``QUOTE_HEAD`` of it) as it may be quoted in an error:
    text, redacted, its first 200 characters, valid."""
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    return clean_text(clip(text[:QUOTE_HEAD], secrets, 200))


def json_or_malformed(text: str | bytes, *, provider: str, model: str, secrets: Sequence[str] = ()) -> Any:
    """Decoded JSON, or ``MalformedResponse`` quoting the start of the body. Bytes are taken as
    they come (JSON is UTF-8 on the wire): ``httpx.Response.text`` would first parse the
    Content-Type header with the ``email`` package, on every call. Bytes that are not UTF-8 are
    replaced, not fatal; nesting too deep to decode is malformed."""
    try:
        try:
            return json.loads(text)
        except UnicodeDecodeError:
            assert isinstance(text, bytes)
            return json.loads(text.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        raise MalformedResponse(
            f"{provider} sent a body that is not JSON: {shown(text[:QUOTE_HEAD], secrets)!r}", provider=provider, model=model
        ) from None


def dumps_or_empty(value: Any) -> str:
    """``value`` as JSON text for an error body, or "" for one that cannot be written back."""
    try:
        return json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        return ""


def content_type(response: httpx.Response) -> str:
    """The media type of a response, lowercased, without parameters ("" when there is none)."""
    header: str = response.headers.get("content-type", "")
    return header.partition(";")[0].strip().lower()


def is_json_type(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


async def read_capped(response: httpx.Response, limit: int, *, provider: str, model: str) -> bytes:
    """The whole body, or ``MalformedResponse`` once it passes ``limit`` bytes (nothing more is read)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise MalformedResponse(
            f"{provider} sent a body of {declared} bytes, over the {limit}-byte limit", provider=provider, model=model
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise MalformedResponse(
                f"{provider} sent a body over the {limit}-byte limit", provider=provider, model=model
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _iter_lines(response: httpx.Response, *, provider: str, model: str) -> AsyncIterator[str]:
    """Lines of a streamed body (``\\n`` or ``\\r\\n``), decoded as UTF-8 with bad bytes replaced,
    with the stream and each line capped in size."""
    buffer = bytearray()
    total = 0
    line_cap, stream_cap = MAX_LINE_BYTES, MAX_STREAM_BYTES
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > stream_cap:
            raise MalformedResponse(
                f"{provider} sent a stream over the {stream_cap}-byte limit", provider=provider, model=model
            )
        if b"\n" not in chunk:
            buffer += chunk
            if len(buffer) > line_cap:
                raise MalformedResponse(
                    f"{provider} sent a stream line over the {line_cap}-byte limit", provider=provider, model=model
                )
            continue
        buffer += chunk
        *lines, rest = bytes(buffer).split(b"\n")
        if len(rest) > line_cap:
            raise MalformedResponse(
                f"{provider} sent a stream line over the {line_cap}-byte limit", provider=provider, model=model
            )
        buffer = bytearray(rest)
        for line in lines:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
    if buffer:
        yield bytes(buffer).removesuffix(b"\r").decode("utf-8", "replace")


_SSE_FIELDS = frozenset({"data", "event", "id", "retry"})


class EventStream:
    """The ``(event, data)`` pairs of a server-sent event stream (data lines joined by newlines).

    It counts the events and keeps the first line that is no SSE field at all (``<html>``, a JSON
    body): when a stream ends without its end marker, that line tells a body of another kind from
    a stream cut short.
    """

    __slots__ = ("_response", "_provider", "_model", "events", "stray")

    def __init__(self, response: httpx.Response, *, provider: str, model: str) -> None:
        self._response = response
        self._provider = provider
        self._model = model
        self.events = 0
        self.stray: str | None = None

    async def __aiter__(self) -> AsyncIterator[tuple[str | None, str]]:
        event: str | None = None
        data: list[str] = []
        async for line in _iter_lines(self._response, provider=self._provider, model=self._model):
            if not line:
                if data:
                    self.events += 1
                    yield event, "\n".join(data)
                event, data = None, []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name not in _SSE_FIELDS and self.stray is None:
                self.stray = line[:QUOTE_HEAD]
        if data:
            self.events += 1
            yield event, "\n".join(data)

    def ended_early(self, marker: str, pieces: int, *, secrets: Sequence[str] = ()) -> MalformedResponse:
        """The error for a stream that ended before ``marker``: a cut stream, or no stream at all."""
        if self.events == 0 and self.stray is not None:
            ctype = content_type(self._response) or "no content type"
            what = f"a body that is not an event stream ({ctype}): {shown(self.stray, secrets)!r}"
        else:
            what = f"a stream that ended before {marker} (cut off after {pieces} text pieces)"
        return MalformedResponse(f"{self._provider} sent {what}", provider=self._provider, model=self._model)


async def iter_ndjson(
    response: httpx.Response, *, provider: str, model: str, secrets: Sequence[str] = ()
) -> AsyncIterator[Any]:
    """Yield one decoded JSON value per non-empty line."""
    async for line in _iter_lines(response, provider=provider, model=model):
        if line.strip():
            yield json_or_malformed(line, provider=provider, model=model, secrets=secrets)


async def not_a_stream(
    response: httpx.Response, expected: str, *, provider: str, model: str, secrets: Sequence[str]
) -> MalformedResponse:
    """The error for a 2xx answer to a stream request whose content type is neither a stream nor
    JSON (an HTML page from a proxy, say): named by its type and its first bytes."""
    head = b""
    try:
        async for chunk in response.aiter_bytes():
            head += chunk
            if len(head) >= QUOTE_HEAD:
                break
    except httpx.HTTPError:
        pass
    ctype = content_type(response) or "no content type"
    return MalformedResponse(
        f"{provider} answered with {ctype}, not {expected}: {shown(head[:QUOTE_HEAD], secrets)!r}",
        provider=provider,
        model=model,
    )


async def error_body(response: httpx.Response) -> str:
    """The start of an error body, as text; what cannot be read is left out."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:MAX_ERROR_BODY_BYTES].decode("utf-8", "replace")
