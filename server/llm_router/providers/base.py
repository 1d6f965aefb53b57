"""The small interface every provider adapter implements, and the HTTP plumbing they share.

An adapter knows one wire protocol and nothing of budgets, routing or MCP. It turns a
``CompletionRequest`` into a ``Completion`` (with the usage the provider reported) or raises one
of the ``ProviderError`` classes from ``llm_router.types``.

Whatever an upstream sends can fail one attempt, never the process: every body is read with a
size cap, every JSON value is checked for shape, every text kept from upstream (answer text,
model names, error messages) is made valid Unicode before it reaches MCP (``wire`` does the
reading, ``errors`` the error vocabulary; this module the requests and the side questions).
"""

from __future__ import annotations

import functools
import json
import math
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import anyio
import httpx

from .. import timings
from ..redaction import credentials
from ..types import (
    Completion,
    CompletionRequest,
    InvalidRequest,
    MalformedResponse,
    ProviderError,
    ToolCallOnly,
    Usage,
)
from . import wire
from .errors import ErrorMapper, error_from_transport
from .wire import (
    MAX_TOKEN_COUNT,
    QUOTE_HEAD,
    SHAPE_ERRORS,
    clean_text,
    error_body,
    json_or_malformed,
    not_a_stream,
    read_capped,
    redact,
    shown,
    upstream_str,
)

__all__ = [
    "TextCallback",
    "Provider",
    "ProbeResult",
    "HttpSettings",
    "make_client",
    "post_json",
    "open_stream",
    "probe_models",
    "HttpAdapter",
]

TextCallback = Callable[[str], Awaitable[None]]
"""Called with each piece of text as a stream delivers it."""


PROBE_BODY_BYTES = 4 * 1024 * 1024
_clock: Callable[[], float] = time.monotonic
"""When remembered side answers lapse (replaced in tests)."""


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
        stream is a failure, never a truncated success. All text is valid Unicode.

        Raises:
            ProviderError: one of its subclasses, carrying status, retry_after and a trimmed body;
                ``ToolCallOnly`` (with the billed usage) when the model answered only with a tool call.
        """
        ...

    async def probe(self) -> ProbeResult:
        """A cheap check that the provider answers and the key works (used by ``check``)."""
        ...

    async def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens in ``text`` by the server's own tokenizer, where it offers one (llama.cpp's
        ``/tokenize``, llama-cpp-python's ``/extras/tokenize``); None where it does not, or where it
        did not answer. Used only to estimate usage a server did not report."""
        ...

    async def context_window(self, model: str) -> int | None:
        """The context window the server itself runs ``model`` with, where it says (llama.cpp
        ``/props``, Ollama ``/api/show``); None where it does not. Asked once per model."""
        ...

    async def capabilities(self, model: str) -> frozenset[str] | None:
        """What the server itself says ``model`` can do, in ``content.CAPABILITY_NAMES`` (Ollama's
        ``/api/show`` ``capabilities``, llama.cpp's ``/props``); None where it does not say, or did
        not answer. Asked once per model; routing then takes it over the protocol's default."""
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


def _encode(body: dict[str, Any], *, provider: str, model: str) -> bytes:
    """The request as JSON bytes. Text that cannot be UTF-8 (a lone surrogate half in a prompt)
    goes out escaped, as a JavaScript client would send it, instead of failing the encoder."""
    try:
        try:
            return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("ascii")
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(
            f"the request to {provider} could not be encoded as JSON ({exc})", provider=provider, model=model
        ) from None


_JSON_HEADERS = {"content-type": "application/json"}


async def post_json(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    *,
    provider: str,
    model: str,
    secrets: Sequence[str],
    to_error: ErrorMapper,
) -> Any:
    """POST ``body`` and return the decoded JSON answer; every failure is a ``ProviderError``."""
    content = _encode(body, provider=provider, model=model)
    try:
        async with client.stream("POST", path, content=content, headers=_JSON_HEADERS) as response:
            if not 200 <= response.status_code < 300:
                raise to_error(response.status_code, await error_body(response), response.headers)
            raw = await read_capped(response, wire.MAX_BODY_BYTES, provider=provider, model=model)
    except httpx.HTTPError as exc:
        raise error_from_transport(exc, provider=provider, model=model, secrets=secrets) from None
    return json_or_malformed(raw, provider=provider, model=model, secrets=secrets)


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    *,
    provider: str,
    model: str,
    secrets: Sequence[str],
    to_error: ErrorMapper,
) -> AsyncIterator[httpx.Response]:
    """POST ``body`` and yield the 2xx response unread, for streaming.

    Transport failures while the caller reads (a reset, a read timeout, a connection closed
    mid-body) surface here too, mapped by ``error_from_transport``.
    """
    content = _encode(body, provider=provider, model=model)
    try:
        async with client.stream("POST", path, content=content, headers=_JSON_HEADERS) as response:
            if not 200 <= response.status_code < 300:
                raise to_error(response.status_code, await error_body(response), response.headers)
            yield response
    except httpx.HTTPError as exc:
        raise error_from_transport(exc, provider=provider, model=model, secrets=secrets) from None


_UNREADABLE_LIST: tuple[type[BaseException], ...] = (UnicodeDecodeError, *SHAPE_ERRORS)
"""What reading a model list that is not UTF-8 JSON of the expected shape raises."""


async def probe_models(
    client: httpx.AsyncClient,
    path: str,
    *,
    provider: str,
    secrets: Sequence[str],
    to_error: ErrorMapper,
    extract: Callable[[Any], list[str]],
) -> ProbeResult:
    """GET a model list; never raises for HTTP, transport or format failures (``ok=False``)."""
    start = time.perf_counter()
    try:
        async with client.stream("GET", path) as response:
            if not 200 <= response.status_code < 300:
                err = to_error(response.status_code, await error_body(response), response.headers)
                return ProbeResult(False, str(err), latency_ms=_ms_since(start))
            raw = await read_capped(response, wire.MAX_BODY_BYTES, provider=provider, model="")
    except httpx.HTTPError as exc:
        err = error_from_transport(exc, provider=provider, model="", secrets=secrets)
        return ProbeResult(False, str(err), latency_ms=_ms_since(start))
    except ProviderError as exc:
        return ProbeResult(False, str(exc), latency_ms=_ms_since(start))
    latency = _ms_since(start)
    try:
        models = [name for name in extract(json.loads(raw)) if isinstance(name, str)]
    except _UNREADABLE_LIST:
        detail = f"{provider} sent a model list that could not be read: {shown(raw[:QUOTE_HEAD], secrets)!r}"
        return ProbeResult(False, detail, latency_ms=latency)
    models = [clean_text(name) for name in models]
    return ProbeResult(True, f"{provider} answered with {len(models)} model{'' if len(models) == 1 else 's'}", tuple(models), latency)


def _ms_since(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


_NOT_OFFERED = frozenset({401, 403, 404, 405, 501})
"""Answers to a side question that will not change by asking again."""


class HttpAdapter:
    """The plumbing every HTTP adapter shares: its name, its credentials, one pooled client, and the
    post/stream/probe calls with failures mapped by the adapter's own ``_error``. An adapter
    subclasses it, sets ``kind`` and ``models_path``, and writes ``complete``, ``_error`` and
    ``_model_names``."""

    kind: str
    models_path: str

    def __init__(self, settings: HttpSettings, headers: dict[str, str]) -> None:
        self.name = settings.name
        self._secrets = credentials(settings.api_key, settings.base_url, settings.headers)
        """What every quote of upstream text is redacted of: each credential this adapter's requests
        carry (its own headers carry only the key; configured ones and the ``base_url`` may add more)."""
        self._client = make_client(settings, headers)
        # Another client like it, for a request that must not reuse a pooled connection; None
        # where the settings give a transport (tests), which the shared client then serves.
        self._new_client: Callable[[], httpx.AsyncClient] | None = (
            (lambda: make_client(settings, headers)) if settings.transport is None else None
        )
        self._windows: dict[str, tuple[int | None, float]] = {}
        """Each model's window as the server stated it, and until when that answer holds."""
        self._window_lock: anyio.Lock | None = None

    def _error(self, model: str, status: int, body: str, headers: httpx.Headers) -> ProviderError:
        raise NotImplementedError

    def _model_names(self, data: Any) -> list[str]:
        raise NotImplementedError

    def _mapper(self, model: str) -> ErrorMapper:
        return lambda status, text, headers: self._error(model, status, text, headers)

    async def _post(self, path: str, body: dict[str, Any], model: str) -> Any:
        return await post_json(
            self._client, path, body, provider=self.name, model=model, secrets=self._secrets, to_error=self._mapper(model)
        )

    def _stream(self, path: str, body: dict[str, Any], model: str) -> AbstractAsyncContextManager[httpx.Response]:
        return open_stream(
            self._client, path, body, provider=self.name, model=model, secrets=self._secrets, to_error=self._mapper(model)
        )

    async def _post_on_a_new_connection(self, path: str, body: dict[str, Any], model: str) -> Any:
        """``_post`` on a connection of its own, never one from the pool: for a request right after
        an answer that ended in a failure the server may close that connection for (a request
        reused on it before the close arrives is lost, as a read error). With a transport given in
        the settings (tests), on the shared client."""
        if self._new_client is None:
            return await self._post(path, body, model)
        async with self._new_client() as client:
            return await post_json(
                client, path, body, provider=self.name, model=model, secrets=self._secrets, to_error=self._mapper(model)
            )

    async def _read_json(self, response: httpx.Response, model: str) -> Any:
        """A whole JSON body sent in reply to a stream request."""
        raw = await read_capped(response, wire.MAX_BODY_BYTES, provider=self.name, model=model)
        return json_or_malformed(raw, provider=self.name, model=model, secrets=self._secrets)

    async def _not_a_stream(self, response: httpx.Response, expected: str, model: str) -> MalformedResponse:
        return await not_a_stream(response, expected, provider=self.name, model=model, secrets=self._secrets)

    def _malformed(self, what: str, model: str) -> MalformedResponse:
        return MalformedResponse(f"{self.name} sent {redact(clean_text(what), self._secrets)}", provider=self.name, model=model)

    @overload
    def _field(self, value: Any, default: str) -> str: ...
    @overload
    def _field(self, value: Any, default: str | None = None) -> str | None: ...
    def _field(self, value: Any, default: str | None = None) -> str | None:
        """A short string field from upstream (model, id, finish reason), without this adapter's credentials."""
        return upstream_str(value, default, secrets=self._secrets)

    def _quote(self, value: Any) -> str:
        """The start of something upstream sent, quoted for an error message (redacted, valid)."""
        if not isinstance(value, (str, bytes)):
            try:
                value = str(value)[:QUOTE_HEAD]
            except RecursionError:
                value = f"<{type(value).__name__} nested too deep to show>"
        return repr(shown(value[:QUOTE_HEAD], self._secrets))

    def _tool_call_only(self, names: Iterable[str], model: str, usage: Usage | None) -> ToolCallOnly:
        """The answer was a tool call, not text: a failed attempt, billed when usage was reported."""
        called = ", ".join(dict.fromkeys(clean_text(redact(n, self._secrets)[:64]) for n in names if n)) or "unnamed"
        return ToolCallOnly(
            f"{self.name} answered with a tool call ({called[:200]}) instead of text; no tools were offered",
            provider=self.name,
            model=model,
            usage=usage,
        )

    async def _side_json(self, method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int | None, Any]:
        """A side question to the server (its window, a token count): ``(status, decoded body)``,
        ``(None, None)`` when it could not be asked or read. Never raises; a short timeout."""
        try:
            content = None if body is None else _encode(body, provider=self.name, model="")
            headers = None if body is None else _JSON_HEADERS
            async with self._client.stream(
                method, url, content=content, headers=headers, timeout=timings.PROBE_TIMEOUT_S
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    return status, None
                raw = await read_capped(response, PROBE_BODY_BYTES, provider=self.name, model="")
        except (httpx.HTTPError, ProviderError):
            return None, None
        try:
            return status, json.loads(raw)
        except (ValueError, RecursionError):
            return status, None

    async def _remember_window(
        self, model: str, ask: Callable[[str], Awaitable[tuple[int | None, bool]]]
    ) -> int | None:
        """``ask(model)`` once, remembered: a final answer (a window, or "not offered") for good, a
        passing failure for ``timings.UNKNOWN_RETRY_S``. Concurrent callers share one question."""
        hit = self._windows.get(model)
        if hit is not None and hit[1] > _clock():
            return hit[0]
        if self._window_lock is None:
            self._window_lock = anyio.Lock()
        async with self._window_lock:
            hit = self._windows.get(model)
            if hit is not None and hit[1] > _clock():
                return hit[0]
            try:
                window, final = await ask(model)
            except Exception:  # a side question never fails the call that needed it
                window, final = None, False
            if window is not None and not 0 < window <= MAX_TOKEN_COUNT:
                window = None
            self._windows[model] = (window, math.inf if final else _clock() + timings.UNKNOWN_RETRY_S)
            return window

    async def count_tokens(self, model: str, text: str) -> int | None:
        return None

    async def context_window(self, model: str) -> int | None:
        return None

    async def capabilities(self, model: str) -> frozenset[str] | None:
        return None

    async def probe(self) -> ProbeResult:
        return await probe_models(
            self._client, self.models_path, provider=self.name, secrets=self._secrets, to_error=self._mapper(""),
            extract=self._model_names,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
