"""The small interface every provider adapter implements, and the HTTP plumbing they share.

An adapter knows one wire protocol and nothing of budgets, routing or MCP. It turns a
``CompletionRequest`` into a ``Completion`` (with the usage the provider reported) or raises one
of the ``ProviderError`` classes from ``llm_router.types``.
"""

from __future__ import annotations

import email.utils
import functools
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ..types import (
    AuthError,
    CompletionRequest,
    Completion,
    ConnectionFailed,
    ContextTooLong,
    InvalidRequest,
    MalformedResponse,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
)

__all__ = [
    "TextCallback",
    "Provider",
    "ProbeResult",
    "HttpSettings",
    "make_client",
    "error_from_status",
    "error_from_transport",
    "parse_retry_after",
    "iter_sse",
    "iter_ndjson",
    "json_or_malformed",
    "redact",
    "ErrorMapper",
    "error_detail",
    "reclassify",
    "post_json",
    "open_stream",
    "probe_models",
]

TextCallback = Callable[[str], Awaitable[None]]
"""Called with each piece of text as a stream delivers it."""

RETRY_AFTER_CAP_S = 120.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a cheap health probe (a model list) found."""

    ok: bool
    detail: str
    models: tuple[str, ...] = ()
    latency_ms: int = 0


class Provider(Protocol):
    """One configured provider (a name, a wire protocol, a key, a connection pool)."""

    name: str
    kind: str

    async def complete(
        self, model: str, request: CompletionRequest, *, on_text: TextCallback | None = None
    ) -> Completion:
        """Ask ``model`` for a completion.

        With ``on_text`` the adapter streams from the provider and calls it with each text delta
        as it arrives; the returned ``Completion`` holds the whole text and the final usage. A
        stream that ends before the provider's end marker raises ``MalformedResponse``: a cut
        stream is a failure, never a truncated success.

        Raises:
            ProviderError: one of its subclasses, carrying status, retry_after and a trimmed body.
        """
        ...

    async def probe(self) -> ProbeResult:
        """A cheap check that the provider answers and the key works (used by ``check``)."""
        ...

    async def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens in ``text`` by the server's own tokenizer, where it offers one (llama.cpp's
        ``/tokenize``); None where it does not. Used only to estimate usage a server did not report."""
        ...

    async def context_window(self, model: str) -> int | None:
        """The context window the server itself runs ``model`` with, where it says (llama.cpp
        ``/props``, Ollama ``/api/show``); None where it does not. Asked once per model."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool."""
        ...


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What an HTTP adapter needs from its configuration, with the key already read."""

    name: str
    base_url: str
    api_key: str | None
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    transport: httpx.AsyncBaseTransport | None = None
    """Replaces the network (``httpx.MockTransport`` in tests); None in production."""


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle takes tens of milliseconds, so every client shares one context."""
    return httpx.create_ssl_context()


def make_client(settings: HttpSettings, headers: dict[str, str]) -> httpx.AsyncClient:
    """The one pooled client an adapter keeps for the server's lifetime."""
    return httpx.AsyncClient(
        base_url=settings.base_url.rstrip("/"),
        headers={**headers, **settings.headers},
        timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        verify=_ssl_context() if settings.transport is None else True,
        transport=settings.transport,
    )


def redact(text: str, secret: str | None) -> str:
    """Remove a key from text that may be shown (bodies can echo the key back)."""
    if secret and len(secret) >= 4 and secret in text:
        return text.replace(secret, "[redacted]")
    return text


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), or ``retry-after-ms``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return min(max(float(raw_ms) / 1000, 0.0), RETRY_AFTER_CAP_S)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return min(max(float(raw), 0.0), RETRY_AFTER_CAP_S)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), RETRY_AFTER_CAP_S)


_CONTEXT_HINTS = ("context length", "context_length", "too long", "maximum context", "token limit", "too many tokens")


def error_from_status(
    status: int,
    body: str,
    headers: httpx.Headers,
    *,
    provider: str,
    model: str,
    message: str | None = None,
    secret: str | None = None,
) -> ProviderError:
    """Map an HTTP failure onto the error vocabulary (adapters refine with their own codes first)."""
    body = redact(body, secret)
    msg = redact(message or body[:300] or f"HTTP {status}", secret)
    kw: dict[str, Any] = {"provider": provider, "model": model, "status": status, "body": body}
    text = f"{provider} answered HTTP {status}: {msg}"
    if status in (401, 403):
        return AuthError(f"{text}. Check the API key.", **kw)
    if status == 429:
        return RateLimited(text, retry_after=parse_retry_after(headers), **kw)
    if status in (503, 529):
        return Overloaded(text, retry_after=parse_retry_after(headers), **kw)
    if status == 413 or (status == 400 and any(h in msg.lower() for h in _CONTEXT_HINTS)):
        return ContextTooLong(text, **kw)
    if status == 408:
        return Timeout(text, **kw)
    if status >= 500:
        return ServerError(text, retry_after=parse_retry_after(headers), **kw)
    return InvalidRequest(text, **kw)


def error_from_transport(exc: Exception, *, provider: str, model: str, secret: str | None = None) -> ProviderError:
    """Map an httpx transport failure (no HTTP status) onto the vocabulary."""
    detail = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, secret)
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"{provider} did not answer in time ({detail})", provider=provider, model=model)
    if isinstance(exc, httpx.RemoteProtocolError):
        return MalformedResponse(
            f"{provider} closed the connection mid-response ({detail})", provider=provider, model=model
        )
    if isinstance(exc, httpx.TransportError):
        return ConnectionFailed(f"could not reach {provider} ({detail})", provider=provider, model=model)
    return MalformedResponse(f"{provider}: {detail}", provider=provider, model=model)


def json_or_malformed(text: str | bytes, *, provider: str, model: str, secret: str | None = None) -> Any:
    """Decoded JSON, or ``MalformedResponse`` quoting the start of the body. Bytes are taken as
    they come (JSON is UTF-8 on the wire): ``httpx.Response.text`` would first parse the
    Content-Type header with the ``email`` package, on every call."""
    try:
        return json.loads(text)
    except ValueError:
        head = text[:200]
        shown = redact(head.decode("utf-8", "replace") if isinstance(head, bytes) else head, secret)
        raise MalformedResponse(
            f"{provider} sent a body that is not JSON: {shown!r}", provider=provider, model=model
        ) from None


async def iter_sse(response: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
    """Yield ``(event, data)`` for each server-sent event (data lines joined by newlines)."""
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


async def iter_ndjson(
    response: httpx.Response, *, provider: str, model: str, secret: str | None = None
) -> AsyncIterator[Any]:
    """Yield one decoded JSON value per non-empty line."""
    async for line in response.aiter_lines():
        if line.strip():
            yield json_or_malformed(line, provider=provider, model=model, secret=secret)


ErrorMapper = Callable[[int, str, httpx.Headers], ProviderError]
"""An adapter's ``(status, body, headers) -> error`` for a non-2xx answer."""


def error_detail(body: str | dict[str, Any]) -> dict[str, Any]:
    """The ``error`` object of an error body (``{}`` when there is none; a bare string becomes its message).

    Anthropic, OpenAI and Gemini send ``{"error": {...}}``; Ollama sends ``{"error": "text"}``.
    """
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return {}
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return err
    if isinstance(err, str):
        return {"message": err}
    return {}


def reclassify(err: ProviderError, cls: type[ProviderError]) -> ProviderError:
    """The same failure as another class: a provider's own error code outranks the HTTP status."""
    if type(err) is cls:
        return err
    return cls(
        str(err),
        provider=err.provider,
        model=err.model,
        status=err.status,
        retry_after=err.retry_after,
        body=err.body,
        usage=err.usage,
        context_window=err.context_window,
    )


async def post_json(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    *,
    provider: str,
    model: str,
    secret: str | None,
    to_error: ErrorMapper,
) -> Any:
    """POST ``body`` and return the decoded JSON answer; every failure is a ``ProviderError``."""
    try:
        response = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        raise error_from_transport(exc, provider=provider, model=model, secret=secret) from None
    if response.status_code >= 400:
        raise to_error(response.status_code, response.text, response.headers)
    return json_or_malformed(response.content, provider=provider, model=model, secret=secret)


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    *,
    provider: str,
    model: str,
    secret: str | None,
    to_error: ErrorMapper,
) -> AsyncIterator[httpx.Response]:
    """POST ``body`` and yield the 2xx response unread, for streaming.

    Transport failures while the caller reads (a reset, a read timeout, a connection closed
    mid-body) surface here too, mapped by ``error_from_transport``.
    """
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise to_error(response.status_code, response.text, response.headers)
            # Event streams and NDJSON are UTF-8 by definition: say so, and httpx skips working
            # out the charset from the Content-Type header (an email-parser round per stream).
            response.encoding = "utf-8"
            yield response
    except httpx.HTTPError as exc:
        raise error_from_transport(exc, provider=provider, model=model, secret=secret) from None


async def probe_models(
    client: httpx.AsyncClient,
    path: str,
    *,
    provider: str,
    secret: str | None,
    to_error: ErrorMapper,
    extract: Callable[[Any], list[str]],
) -> ProbeResult:
    """GET a model list; never raises for HTTP, transport or format failures (``ok=False``)."""
    start = time.perf_counter()
    try:
        response = await client.get(path)
    except httpx.HTTPError as exc:
        err = error_from_transport(exc, provider=provider, model="", secret=secret)
        return ProbeResult(False, str(err), latency_ms=_ms_since(start))
    latency = _ms_since(start)
    if response.status_code >= 400:
        err = to_error(response.status_code, response.text, response.headers)
        return ProbeResult(False, str(err), latency_ms=latency)
    try:
        models = extract(json.loads(response.text))
    except (ValueError, TypeError, KeyError, AttributeError):
        shown = redact(response.text[:200], secret)
        detail = f"{provider} sent a model list that could not be read: {shown!r}"
        return ProbeResult(False, detail, latency_ms=latency)
    return ProbeResult(True, f"{provider} answered with {len(models)} models", tuple(models), latency)


def _ms_since(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


class HttpAdapter:
    """The plumbing every HTTP adapter shares: its name, its key, one pooled client, and the
    post/stream/probe calls with failures mapped by the adapter's own ``_error``. An adapter
    subclasses it, sets ``kind`` and ``models_path``, and writes ``complete``, ``_error`` and
    ``_model_names``."""

    kind: str
    models_path: str

    def __init__(self, settings: HttpSettings, headers: dict[str, str]) -> None:
        self.name = settings.name
        self._key = settings.api_key
        self._client = make_client(settings, headers)

    def _error(self, model: str, status: int, body: str, headers: httpx.Headers) -> ProviderError:
        raise NotImplementedError

    def _model_names(self, data: Any) -> list[str]:
        raise NotImplementedError

    def _mapper(self, model: str) -> ErrorMapper:
        return lambda status, text, headers: self._error(model, status, text, headers)

    async def _post(self, path: str, body: dict[str, Any], model: str) -> Any:
        return await post_json(
            self._client, path, body, provider=self.name, model=model, secret=self._key, to_error=self._mapper(model)
        )

    def _stream(self, path: str, body: dict[str, Any], model: str) -> AbstractAsyncContextManager[httpx.Response]:
        return open_stream(
            self._client, path, body, provider=self.name, model=model, secret=self._key, to_error=self._mapper(model)
        )

    def _malformed(self, what: str, model: str) -> MalformedResponse:
        return MalformedResponse(f"{self.name} sent {what}", provider=self.name, model=model)

    async def count_tokens(self, model: str, text: str) -> int | None:
        return None

    async def context_window(self, model: str) -> int | None:
        return None

    async def probe(self) -> ProbeResult:
        return await probe_models(
            self._client, self.models_path, provider=self.name, secret=self._key, to_error=self._mapper(""),
            extract=self._model_names,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
