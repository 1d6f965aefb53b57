"""Google Gemini API: ``generateContent``, and ``streamGenerateContent?alt=sse`` for streams."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

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
    RETRY_AFTER_CAP_S,
    HttpSettings,
    TextCallback,
    error_detail,
    error_from_status,
    iter_sse,
    json_or_malformed,
    reclassify,
)

__all__ = ["GeminiProvider"]

_MODELS_PATH = "/v1beta/models?pageSize=1000"
_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError)
# Finish reasons that mean a filter withheld (part of) the answer.
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "MODEL_ARMOR"}
)
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")
_NO_HEADERS = httpx.Headers()


def _usage(raw: Any) -> Usage | None:
    """``promptTokenCount`` includes cached tokens; thinking tokens are billed as output.

    Zero counts are left out of the JSON, so only a missing ``promptTokenCount`` means no usage.
    """
    if not isinstance(raw, dict) or raw.get("promptTokenCount") is None:
        return None
    return Usage(
        int(raw["promptTokenCount"]) + int(raw.get("toolUsePromptTokenCount") or 0),
        int(raw.get("candidatesTokenCount") or 0) + int(raw.get("thoughtsTokenCount") or 0),
        int(raw.get("cachedContentTokenCount") or 0),
    )


def _retry_delay(detail: dict[str, Any]) -> float | None:
    """``RetryInfo.retryDelay`` (e.g. ``"37s"``) from a 429's details, when no header says."""
    for item in detail.get("details") or ():
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            match = _DELAY.match(str(item.get("retryDelay", "")))
            if match:
                return min(float(match.group(1)), RETRY_AFTER_CAP_S)
    return None


@dataclass(slots=True)
class _Answer:
    model: str
    parts: list[str] = field(default_factory=list)
    usage: Any = None
    response_id: str | None = None
    finish_reason: str | None = None
    candidates: bool = False


class GeminiProvider(HttpAdapter):
    kind = "gemini"
    models_path = _MODELS_PATH

    def __init__(self, settings: HttpSettings) -> None:
        super().__init__(settings, {"x-goog-api-key": settings.api_key} if settings.api_key else {})

    async def complete(
        self, model: str, request: CompletionRequest, *, on_text: TextCallback | None = None
    ) -> Completion:
        config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        body: dict[str, Any] = {
            "contents": [
                {"role": "user" if m.role == "user" else "model", "parts": [{"text": m.content}]}
                for m in request.messages
            ],
            "generationConfig": config,
        }
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        name = model.removeprefix("models/")


        answer = _Answer(model)
        if on_text is None:
            path = f"/v1beta/models/{name}:generateContent"
            data = await self._post(path, body, model)
            text = self._absorb(answer, data, model)
            if text:
                answer.parts.append(text)
            if not answer.candidates:
                raise self._malformed("an answer with no candidates and no block reason", model)
            return self._finish(answer, model)
        path = f"/v1beta/models/{name}:streamGenerateContent?alt=sse"
        async with self._stream(path, body, model) as response:
            async for _event, data in iter_sse(response):
                chunk = json_or_malformed(data, provider=self.name, model=model, secret=self._key)
                text = self._absorb(answer, chunk, model, response.headers)
                if text:
                    answer.parts.append(text)
                    await on_text(text)
        if answer.finish_reason is None:
            raise MalformedResponse(
                f"{self.name}: the stream ended before a chunk with a finishReason "
                f"(cut off after {len(answer.parts)} text pieces)",
                provider=self.name,
                model=model,
            )
        return self._finish(answer, model)

    def _absorb(self, answer: _Answer, chunk: Any, model: str, headers: httpx.Headers = _NO_HEADERS) -> str:
        """Fold one response (or stream chunk) into ``answer``; return its text, if any."""
        try:
            if "error" in chunk:  # an error after the 200 status line was sent
                code = chunk["error"].get("code") if isinstance(chunk["error"], dict) else None
                raise self._error(model, code if isinstance(code, int) else 500, json.dumps(chunk), headers)
            block = (chunk.get("promptFeedback") or {}).get("blockReason")
            if block:
                raise ContentFiltered(
                    f"{self.name} blocked the prompt (blockReason {block})", provider=self.name, model=model
                )
            if chunk.get("usageMetadata"):
                answer.usage = chunk["usageMetadata"]  # each chunk's counts are totals so far
            answer.model = chunk.get("modelVersion") or answer.model
            answer.response_id = chunk.get("responseId") or answer.response_id
            candidates = chunk.get("candidates") or ()
            if not candidates:
                return ""
            answer.candidates = True
            candidate = candidates[0]
            answer.finish_reason = candidate.get("finishReason") or answer.finish_reason
            parts = (candidate.get("content") or {}).get("parts") or ()
            return "".join(p.get("text", "") for p in parts if not p.get("thought"))
        except _SHAPE_ERRORS:
            raise self._malformed(f"an unreadable response: {str(chunk)[:200]!r}", model) from None

    def _finish(self, answer: _Answer, model: str) -> Completion:
        try:
            usage = _usage(answer.usage)
        except _SHAPE_ERRORS:
            raise self._malformed(f"unreadable usage: {answer.usage!r}", model) from None
        if answer.finish_reason in _FILTERED:
            raise ContentFiltered(
                f"{self.name} withheld the answer (finishReason {answer.finish_reason})",
                provider=self.name,
                model=model,
                usage=usage,
            )
        return Completion(
            "".join(answer.parts), answer.model, usage, answer.finish_reason, answer.response_id
        )

    def _model_names(self, data: Any) -> list[str]:
        return [m["name"].removeprefix("models/") for m in data["models"]]

    def _error(self, model: str, status: int, text: str, headers: httpx.Headers) -> ProviderError:
        detail = error_detail(text)
        message = detail.get("message")
        state = detail.get("status")
        shown = f"{state}: {message}" if state and message else (message or None)
        err = error_from_status(
            status, text, headers, provider=self.name, model=model, message=shown, secret=self._key
        )
        reasons = {str(d.get("reason")) for d in detail.get("details") or () if isinstance(d, dict)}
        lowered = str(message or "").lower()
        if "API_KEY_INVALID" in reasons or "api key not valid" in lowered:
            return reclassify(err, AuthError)
        if status == 400 and "input token count" in lowered:
            return reclassify(err, ContextTooLong)
        if err.retry_after is None and status == 429:
            err.retry_after = _retry_delay(detail)
        return err
