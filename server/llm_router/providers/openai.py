"""OpenAI Chat Completions (``POST {base}/chat/completions``), and servers that speak it.

The base URL already ends in ``/v1``. Keyless local servers (vLLM, llama.cpp, LM Studio) get no
``Authorization`` header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..types import (
    AuthError,
    Completion,
    CompletionRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    ProviderError,
    Usage,
)
from .base import (
    HttpAdapter,
    HttpSettings,
    TextCallback,
    error_detail,
    error_from_status,
    iter_sse,
    json_or_malformed,
    reclassify,
)

__all__ = ["OpenAIProvider"]

_PATH = "/chat/completions"
_MODELS_PATH = "/models"
_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError)
# Error codes that say more than the HTTP status does.
_CODE_CLASS: dict[str, type[ProviderError]] = {
    "context_length_exceeded": ContextTooLong,
    "string_above_max_length": ContextTooLong,
    "content_filter": ContentFiltered,
    "content_policy_violation": ContentFiltered,
    "insufficient_quota": AuthError,  # out of credit: retrying cannot help, another provider can
}


def _usage(raw: Any) -> Usage | None:
    """``prompt_tokens`` already counts cached tokens; ``prompt_tokens_details`` says how many."""
    if not isinstance(raw, dict) or raw.get("prompt_tokens") is None or raw.get("completion_tokens") is None:
        return None
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        int(raw["prompt_tokens"]),
        int(raw["completion_tokens"]),
        int(details.get("cached_tokens") or 0),
        int(details.get("cache_write_tokens") or 0),  # reported by some compatible servers, never by OpenAI
    )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"text is a {type(value).__name__}")


@dataclass(slots=True)
class _Stream:
    model: str
    parts: list[str] = field(default_factory=list)
    usage: Any = None
    response_id: str | None = None
    finish_reason: str | None = None
    refusal: bool = False
    done: bool = False


class OpenAIProvider(HttpAdapter):
    kind = "openai"
    models_path = _MODELS_PATH

    def __init__(self, settings: HttpSettings) -> None:
        super().__init__(settings, {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {})
        # OpenAI itself deprecated ``max_tokens`` (newer models reject it); compatible servers
        # mostly know only ``max_tokens``.
        official = urlsplit(settings.base_url).hostname == "api.openai.com"
        self._max_tokens_field = "max_completion_tokens" if official else "max_tokens"

    async def complete(
        self, model: str, request: CompletionRequest, *, on_text: TextCallback | None = None
    ) -> Completion:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            self._max_tokens_field: request.max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature


        if on_text is None:
            data = await self._post(_PATH, body, model)
            return self._parse(data, model)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        async with self._stream(_PATH, body, model) as response:
            state = _Stream(model)
            async for _event, data in iter_sse(response):
                if state.done:
                    continue  # read to the end so the connection goes back to the pool
                text = self._absorb(state, data, model, response.headers)
                if text:
                    state.parts.append(text)
                    await on_text(text)
        if not state.done:
            raise MalformedResponse(
                f"{self.name}: the stream ended before [DONE] (cut off after {len(state.parts)} text pieces)",
                provider=self.name,
                model=model,
            )
        try:
            usage = _usage(state.usage)
        except _SHAPE_ERRORS:
            raise self._malformed(f"unreadable usage: {state.usage!r}", model) from None
        self._check_filter(state.finish_reason, state.refusal, model, usage)
        return Completion("".join(state.parts), state.model, usage, state.finish_reason, state.response_id)

    def _absorb(self, state: _Stream, data: str, model: str, headers: httpx.Headers) -> str | None:
        """Fold one chunk into ``state``; return its text delta, if any."""
        if data == "[DONE]":
            state.done = True
            return None
        chunk = json_or_malformed(data, provider=self.name, model=model, secret=self._key)
        try:
            if "error" in chunk:  # an error after the 200 status line was sent
                status = chunk["error"].get("code") if isinstance(chunk["error"], dict) else None
                raise self._error(model, status if isinstance(status, int) else 500, data, headers)
            state.model = chunk.get("model") or state.model
            state.response_id = chunk.get("id") or state.response_id
            if chunk.get("usage"):
                state.usage = chunk["usage"]
            choices = chunk.get("choices") or ()  # empty in the final usage chunk
            if not choices:
                return None
            choice = choices[0]
            state.finish_reason = choice.get("finish_reason") or state.finish_reason
            delta = choice.get("delta") or {}
            state.refusal = state.refusal or bool(delta.get("refusal"))
            return _text(delta.get("content"))
        except _SHAPE_ERRORS:
            raise self._malformed(f"an unreadable stream chunk: {data[:200]!r}", model) from None

    def _parse(self, data: Any, model: str) -> Completion:
        try:
            choice = data["choices"][0]
            message = choice["message"]
            finish = choice.get("finish_reason")
            completion = Completion(
                _text(message.get("content")) or "",
                data.get("model") or model,
                _usage(data.get("usage")),
                finish,
                data.get("id"),
            )
        except _SHAPE_ERRORS:
            raise self._malformed("an answer without choices[0].message", model) from None
        self._check_filter(finish, bool(message.get("refusal")), model, completion.usage)
        return completion

    def _check_filter(self, finish_reason: str | None, refusal: bool, model: str, usage: Usage | None) -> None:
        if finish_reason == "content_filter" or refusal:
            why = "finish_reason content_filter" if finish_reason == "content_filter" else "the model refused"
            raise ContentFiltered(
                f"{self.name} withheld the answer ({why})", provider=self.name, model=model, usage=usage
            )

    def _model_names(self, data: Any) -> list[str]:
        return [m["id"] for m in data["data"]]

    def _error(self, model: str, status: int, body: str, headers: httpx.Headers) -> ProviderError:
        detail = error_detail(body)
        code = detail.get("code")
        etype = detail.get("type")
        message = detail.get("message")
        err = error_from_status(
            status,
            body,
            headers,
            provider=self.name,
            model=model,
            message=message if isinstance(message, str) and message else None,
            secret=self._key,
        )
        cls = _CODE_CLASS.get(code) if isinstance(code, str) else None
        if cls is None and isinstance(etype, str):
            cls = _CODE_CLASS.get(etype)
        return reclassify(err, cls) if cls else err
