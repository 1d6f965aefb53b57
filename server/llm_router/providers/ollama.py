"""Ollama's native chat API: ``POST /api/chat``, one JSON answer or newline-delimited JSON."""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..types import Completion, CompletionRequest, MalformedResponse, ProviderError, Usage
from .base import (
    HttpAdapter,
    HttpSettings,
    TextCallback,
    error_detail,
    error_from_status,
    iter_ndjson,
)

__all__ = ["OllamaProvider"]

_PATH = "/api/chat"
_MODELS_PATH = "/api/tags"
_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, ValueError)


def _usage(raw: dict[str, Any]) -> Usage | None:
    """Ollama may leave ``prompt_eval_count`` out (a prompt served from its cache): then no usage."""
    if raw.get("prompt_eval_count") is None or raw.get("eval_count") is None:
        return None
    return Usage(int(raw["prompt_eval_count"]), int(raw["eval_count"]))


class OllamaProvider(HttpAdapter):
    kind = "ollama"
    models_path = _MODELS_PATH

    def __init__(self, settings: HttpSettings) -> None:
        # A local Ollama needs no key; one behind a proxy or on ollama.com takes a bearer token.
        super().__init__(settings, {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {})

    async def complete(
        self, model: str, request: CompletionRequest, *, on_text: TextCallback | None = None
    ) -> Completion:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        # ``stream`` defaults to true on /api/chat, so it is always sent.
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": on_text is not None,
            "options": options,
        }


        if on_text is None:
            data = await self._post(_PATH, body, model)
            text = self._absorb(data, model)
            if not data.get("done"):
                raise self._malformed("an answer that is not marked done", model)
            return self._finish(text, data, model)
        parts: list[str] = []
        last: dict[str, Any] | None = None
        async with self._stream(_PATH, body, model) as response:
            async for chunk in iter_ndjson(response, provider=self.name, model=model, secret=self._key):
                if last is not None:
                    continue  # read to the end so the connection goes back to the pool
                text = self._absorb(chunk, model, response.headers)
                if chunk.get("done"):
                    last = chunk
                if text:
                    parts.append(text)
                    await on_text(text)
        if last is None:
            raise MalformedResponse(
                f"{self.name}: the stream ended before a line with done: true "
                f"(cut off after {len(parts)} text pieces)",
                provider=self.name,
                model=model,
            )
        return self._finish("".join(parts), last, model)

    def _absorb(self, chunk: Any, model: str, headers: httpx.Headers | None = None) -> str:
        """The text of one answer or stream line; an ``error`` line raises."""
        try:
            if "error" in chunk:  # mid-stream errors keep the 200 status, so treat them as the server's
                raise self._error(model, 500, json.dumps(chunk), headers or httpx.Headers())
            return str(chunk["message"].get("content") or "")
        except _SHAPE_ERRORS:
            raise self._malformed(f"an unreadable answer: {str(chunk)[:200]!r}", model) from None

    def _finish(self, text: str, final: dict[str, Any], model: str) -> Completion:
        try:
            usage = _usage(final)
        except _SHAPE_ERRORS:
            raise self._malformed(f"unreadable token counts in {str(final)[:200]!r}", model) from None
        return Completion(text, final.get("model") or model, usage, final.get("done_reason"), None)

    def _model_names(self, data: Any) -> list[str]:
        return [m["name"] for m in data["models"]]

    def _error(self, model: str, status: int, body: str, headers: httpx.Headers) -> ProviderError:
        message = error_detail(body).get("message")
        return error_from_status(
            status,
            body,
            headers,
            provider=self.name,
            model=model,
            message=message if isinstance(message, str) and message else None,
            secret=self._key,
        )
