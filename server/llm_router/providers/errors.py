"""Provider failures as the router's error vocabulary, decided at the adapter boundary.

An HTTP status, an upstream's own error code or an httpx transport failure becomes one of the
``ProviderError`` classes of ``llm_router.types`` (retry and fallback decide by class and
attributes, never by message text). Bodies and messages are redacted of the adapter's
credentials and made valid text before they are kept; a ``Retry-After`` is read in every form
servers send; a context-length error keeps the window it states, when it states one.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from .. import timings
from ..types import (
    AuthError,
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
from .wire import (
    MAX_TOKEN_COUNT,
    clean_text,
    redact,
)

__all__ = [
    "ErrorMapper",
    "error_detail",
    "error_from_status",
    "error_from_transport",
    "parse_retry_after",
    "reclassify",
    "stated_window",
]


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), or ``retry-after-ms``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000
            if math.isfinite(value):
                return min(max(value, 0.0), timings.RETRY_AFTER_CAP_S)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
        return min(max(value, 0.0), timings.RETRY_AFTER_CAP_S) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return min(max(when.timestamp() - time.time(), 0.0), timings.RETRY_AFTER_CAP_S)
    except (OverflowError, OSError, ValueError):
        return None


# -- context windows stated in errors ------------------------------------------------------------

_CONTEXT_HINTS = (
    "context length", "context_length", "too long", "maximum context", "token limit", "too many tokens",
    "context size", "context limit", "context window",
)
_N = r"(\d[\d,]*)"
# Each pattern captures the window itself, as these servers word it (numbers may wrap lines).
_WINDOW_PATTERNS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"maximum context length is\s+{_N}\s+tokens",  # OpenAI, vLLM, OpenRouter
        rf"exceeds the available context size\s+\({_N}\s+tokens\)",  # llama.cpp server
        rf"prompt is too long:\s*\d[\d,]*\s+tokens\s*>\s*{_N}\s+maximum",  # Anthropic
        rf"exceed context limit:\s*\d[\d,]*\s*\+\s*\d[\d,]*\s*>\s*{_N}",  # Anthropic, input + max_tokens
        rf"maximum number of tokens allowed\s+\({_N}\)",  # Gemini
        rf"longer than the model's context length\s+\({_N}\s+tokens\)",  # Together
        rf"too large for model with\s+{_N}\s+maximum context length",  # Mistral
    )
)


def stated_window(message: str) -> int | None:
    """The context window a context-length error states, if it states one."""
    for pattern in _WINDOW_PATTERNS:
        match = pattern.search(message)
        if match:
            window = int(match.group(1).replace(",", ""))
            return window if 0 < window <= MAX_TOKEN_COUNT else None
    return None


def error_from_status(
    status: int,
    body: str,
    headers: httpx.Headers,
    *,
    provider: str,
    model: str,
    message: str | None = None,
    secrets: Sequence[str] = (),
) -> ProviderError:
    """Map an HTTP failure onto the error vocabulary (adapters refine with their own codes first)."""
    body = clean_text(redact(body, secrets))
    said = clean_text(redact(message or body, secrets))
    msg = said[:300] or f"HTTP {status}"
    kw: dict[str, Any] = {"provider": provider, "model": model, "status": status, "body": body}
    text = f"{provider} answered HTTP {status}: {msg}"
    if status in (401, 403):
        return AuthError(f"{text}. Check the API key.", **kw)
    if status == 429:
        return RateLimited(text, retry_after=parse_retry_after(headers), **kw)
    if status in (503, 529):
        return Overloaded(text, retry_after=parse_retry_after(headers), **kw)
    if status == 413 or (status == 400 and any(h in msg.lower() for h in _CONTEXT_HINTS)):
        return ContextTooLong(text, context_window=stated_window(said[:2000]), **kw)
    if status == 408:
        return Timeout(text, **kw)
    if status >= 500:
        return ServerError(text, retry_after=parse_retry_after(headers), **kw)
    return InvalidRequest(text, **kw)


def error_from_transport(exc: Exception, *, provider: str, model: str, secrets: Sequence[str] = ()) -> ProviderError:
    """Map an httpx transport failure (no HTTP status) onto the vocabulary."""
    detail = clean_text(redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, secrets))
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"{provider} did not answer in time ({detail})", provider=provider, model=model)
    if isinstance(exc, httpx.RemoteProtocolError):
        return MalformedResponse(
            f"{provider} closed the connection mid-response ({detail})", provider=provider, model=model
        )
    if isinstance(exc, httpx.TransportError):
        return ConnectionFailed(f"could not reach {provider} ({detail})", provider=provider, model=model)
    return MalformedResponse(f"{provider}: {detail}", provider=provider, model=model)


ErrorMapper = Callable[[int, str, httpx.Headers], ProviderError]
"""An adapter's ``(status, body, headers) -> error`` for a non-2xx answer."""


def error_detail(body: str | dict[str, Any]) -> dict[str, Any]:
    """The ``error`` object of an error body (``{}`` when there is none; a bare string becomes its message).

    Anthropic, OpenAI and Gemini send ``{"error": {...}}``; Ollama sends ``{"error": "text"}``.
    Gemini may wrap it in a one-element list.
    """
    data: object = body
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return {}
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
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
        context_window=(err.context_window or stated_window(str(err))) if cls is ContextTooLong else None,
    )
