"""Google Gemini API: ``generateContent``, and ``streamGenerateContent?alt=sse`` for streams."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from .. import timings
from ..content import FinishReason, ToolCall
from ..types import (
    AuthError,
    Completion,
    CompletionRequest,
    ContentFiltered,
    ContextTooLong,
    InvalidOutput,
    MalformedResponse,
    ProviderError,
    Usage,
)
from .base import (
    HttpAdapter,
    HttpSettings,
    TextCallback,
)
from .errors import error_detail, error_from_status, reclassify
from .gemini_request import WRAPPED, FormatCall, enrich
from .translate import finish_of, new_call_id, tool_arguments
from .wire import (
    SHAPE_ERRORS,
    EventStream,
    TextJoiner,
    clean_text,
    content_type,
    dumps_or_empty,
    is_json_type,
    json_or_malformed,
    token_count,
)

__all__ = ["GeminiProvider"]

_MODELS_PATH = "/v1beta/models?pageSize=1000"
# Finish reasons that mean a filter withheld (part of) the answer.
# LANGUAGE is one: the docs say the answer was flagged for a language it does not support, and
# cut there.
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "MODEL_ARMOR", "LANGUAGE"}
)
# Generation stopped for a reason the docs leave unknown ("OTHER"): what came may be cut anywhere,
# so it is no answer to return as if it ended normally; a failed attempt, billed, that another
# try may get right (MalformedResponse is retryable).
_UNFINISHED = frozenset({"OTHER"})
# Finish reasons that mean the model went for a tool and failed at it (with tools offered: a
# call it got wrong; without: a call instead of an answer).
_TOOL_FINISH = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})
_FINISH: dict[str, FinishReason] = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(_FILTERED, "content_filter")}
_SSE_TYPES = frozenset({"text/event-stream", "text/plain", ""})
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")
_NO_HEADERS = httpx.Headers()


def _usage(raw: Any) -> Usage | None:
    """``promptTokenCount`` includes cached tokens; thinking tokens are billed as output.

    Zero counts are left out of the JSON, so only a missing ``promptTokenCount`` means no usage,
    or a prompt of no tokens with no output (a prompt is never empty: that is no count at all).
    """
    if not isinstance(raw, dict) or raw.get("promptTokenCount") is None:
        return None
    usage = Usage(
        token_count(raw["promptTokenCount"]) + token_count(raw.get("toolUsePromptTokenCount") or 0),
        token_count(raw.get("candidatesTokenCount") or 0) + token_count(raw.get("thoughtsTokenCount") or 0),
        token_count(raw.get("cachedContentTokenCount") or 0),
    )
    return usage if usage.input_tokens or usage.output_tokens else None


def _retry_delay(detail: dict[str, Any]) -> float | None:
    """``RetryInfo.retryDelay`` (e.g. ``"37s"``) from a 429's details, when no header says."""
    details = detail.get("details")
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            match = _DELAY.match(str(item.get("retryDelay", "")))
            if match:
                return min(float(match.group(1)), timings.RETRY_AFTER_CAP_S)
    return None


@dataclass(slots=True)
class _Answer:
    model: str
    parts: list[str] = field(default_factory=list)
    joiner: TextJoiner = field(default_factory=TextJoiner)
    calls: list[dict[str, Any]] = field(default_factory=list)
    """The ``functionCall`` objects, as sent."""
    usage: Any = None
    response_id: str | None = None
    finish_reason: str | None = None
    candidates: bool = False
    finish_message: str | None = None


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
        forced: FormatCall | None = None
        if (request.rich or request.stop or request.top_p is not None or request.seed is not None
                or request.tool_choice != "auto"):
            forced = enrich(body, request, provider=self.name, model=model)
        name = model.removeprefix("models/")

        answer = _Answer(model)
        offered = bool(request.tools)
        if on_text is None:
            path = f"/v1beta/models/{name}:generateContent"
            data = await self._post(path, body, model)
            return self._whole(answer, data, model, offered, forced)
        path = f"/v1beta/models/{name}:streamGenerateContent?alt=sse"
        async with self._stream(path, body, model) as response:
            ctype = content_type(response)
            if is_json_type(ctype):  # a whole answer, or the JSON-array form of a stream
                completion = self._whole(answer, await self._read_json(response, model), model, offered, forced)
                if completion.text:
                    await on_text(completion.text)
                return completion
            if ctype not in _SSE_TYPES:
                raise await self._not_a_stream(response, "an event stream", model)
            events = EventStream(response, provider=self.name, model=model)
            async for _event, data in events:
                chunk = json_or_malformed(data, provider=self.name, model=model, secrets=self._secrets)
                text = self._absorb(answer, chunk, model, response.headers)
                if text and (text := answer.joiner.feed(text)):
                    answer.parts.append(text)
                    if forced is None:  # with a format's function, the answer is known at the end
                        await on_text(text)
            if answer.finish_reason is not None and (tail := answer.joiner.flush()):
                answer.parts.append(tail)
                if forced is None:
                    await on_text(tail)
        if answer.finish_reason is None:
            # Gemini streams have no terminator: the chunk with a finishReason is the end.
            raise events.ended_early("a chunk with a finishReason", len(answer.parts), secrets=self._secrets)
        completion = self._finish(answer, model, offered, forced)
        if forced is not None and completion.text:
            await on_text(completion.text)
        return completion

    def _whole(self, answer: _Answer, data: Any, model: str, offered: bool, forced: FormatCall | None) -> Completion:
        """A whole answer: one response object, or a list of stream chunks."""
        for chunk in data if isinstance(data, list) else (data,):
            answer.parts.append(self._absorb(answer, chunk, model))
        if not answer.candidates:
            raise self._malformed("an answer with no candidates and no block reason", model)
        return self._finish(answer, model, offered, forced)

    def _absorb(self, answer: _Answer, chunk: Any, model: str, headers: httpx.Headers = _NO_HEADERS) -> str:
        """Fold one response (or stream chunk) into ``answer``; return its text, if any."""
        try:
            if "error" in chunk:  # an error after the 200 status line was sent
                code = chunk["error"].get("code") if isinstance(chunk["error"], dict) else None
                status = code if type(code) is int and 400 <= code <= 599 else 500
                raise self._error(model, status, dumps_or_empty(chunk), headers)
            block = (chunk.get("promptFeedback") or {}).get("blockReason")
            if block:
                raise ContentFiltered(
                    f"{self.name} blocked the prompt (blockReason {self._field(block, '?')})",
                    provider=self.name,
                    model=model,
                )
            if chunk.get("usageMetadata"):
                answer.usage = chunk["usageMetadata"]  # each chunk's counts are totals so far
            answer.model = self._field(chunk.get("modelVersion"), answer.model)
            answer.response_id = self._field(chunk.get("responseId"), answer.response_id)
            candidates = chunk.get("candidates") or ()
            if not candidates:
                return ""
            answer.candidates = True
            candidate = candidates[0]
            answer.finish_reason = self._field(candidate.get("finishReason"), answer.finish_reason)
            answer.finish_message = self._field(candidate.get("finishMessage"), answer.finish_message)
            parts = (candidate.get("content") or {}).get("parts") or ()
            texts: list[str] = []
            for part in parts:
                if "functionCall" in part:
                    call = part["functionCall"]
                    answer.calls.append(call if isinstance(call, dict) else {})
                elif not part.get("thought"):
                    texts.append(part.get("text", ""))
            return "".join(texts)
        except SHAPE_ERRORS:
            raise self._malformed(f"an unreadable response: {self._quote(chunk)}", model) from None

    def _finish(self, answer: _Answer, model: str, offered: bool, forced: FormatCall | None = None) -> Completion:
        try:
            usage = _usage(answer.usage)
        except SHAPE_ERRORS:
            raise self._malformed(f"unreadable usage: {self._quote(answer.usage)}", model) from None
        if answer.finish_reason in _FILTERED:
            raise ContentFiltered(
                f"{self.name} withheld the answer (finishReason {answer.finish_reason})",
                provider=self.name,
                model=model,
                usage=usage,
            )
        if answer.finish_reason in _UNFINISHED:
            raise MalformedResponse(
                f"{self.name} stopped the answer unfinished (finishReason {answer.finish_reason})",
                provider=self.name, model=model, usage=usage,
            )
        text = clean_text("".join(answer.parts))
        if forced is not None and answer.finish_reason not in _TOOL_FINISH:
            mine = [c for c in answer.calls if c.get("name") == forced.name]
            if mine and len(mine) == len(answer.calls):  # the format's function called: the answer
                text = self._format_text(mine[0], forced, model, usage)
                return Completion(text, answer.model, usage, "stop", answer.response_id, ())
            answer.calls = [c for c in answer.calls if c.get("name") != forced.name]  # the caller's tools
        if offered:
            calls = self._tool_calls(answer, model, usage)
        elif answer.finish_reason in _TOOL_FINISH or (answer.calls and not text.strip()):
            names = [self._field(c.get("name"), "") for c in answer.calls] or [answer.finish_reason or ""]
            raise self._tool_call_only(names, model, usage)
        else:
            calls = ()
        finish = finish_of(answer.finish_reason, _FINISH, tool_calls=bool(calls))
        return Completion(text, answer.model, usage, finish, answer.response_id, calls)

    def _tool_calls(self, answer: _Answer, model: str, usage: Usage | None) -> tuple[ToolCall, ...]:
        """The answer's ``functionCall`` parts as tool calls (ids made for those sent without); a
        call Gemini itself found malformed is the model's mistake, billed (``InvalidOutput``)."""
        if answer.finish_reason in _TOOL_FINISH:
            said = f": {self._quote(answer.finish_message)}" if answer.finish_message else ""
            raise InvalidOutput(
                f"{self.name} ended its answer with finishReason {answer.finish_reason}{said}",
                provider=self.name, model=model, usage=usage,
            )
        calls: list[ToolCall] = []
        for call in answer.calls:
            name = self._field(call.get("name"))
            if name is None:
                raise self._malformed(f"a functionCall without a name: {self._quote(call)}", model)
            arguments = tool_arguments(call.get("args"), tool=name, provider=self.name, model=model, usage=usage, secrets=self._secrets)
            calls.append(ToolCall(self._field(call.get("id")) or new_call_id(), name, arguments))
        return tuple(calls)

    def _format_text(self, call: dict[str, Any], forced: FormatCall, model: str, usage: Usage | None) -> str:
        """A call of the format's function as the answer's JSON text: its arguments, or their
        ``WRAPPED`` property."""
        args = tool_arguments(call.get("args"), tool=forced.name, provider=self.name, model=model, usage=usage,
                              secrets=self._secrets)
        if forced.wrapped:
            if WRAPPED not in args:
                raise InvalidOutput(
                    f"{self.name} called {forced.name} without its {WRAPPED!r} argument: {self._quote(args)}",
                    provider=self.name, model=model, usage=usage,
                )
            return json.dumps(args[WRAPPED], ensure_ascii=False)
        return json.dumps(args, ensure_ascii=False)

    def _model_names(self, data: Any) -> list[str]:
        return [m["name"].removeprefix("models/") for m in data["models"]]

    def _error(self, model: str, status: int, text: str, headers: httpx.Headers) -> ProviderError:
        detail = error_detail(text)
        message = detail.get("message")
        message = message if isinstance(message, str) else None
        state = detail.get("status")
        shown = f"{state}: {message}" if isinstance(state, str) and message else (message or None)
        err = error_from_status(
            status, text, headers, provider=self.name, model=model, message=shown, secrets=self._secrets
        )
        details = detail.get("details")
        reasons = {str(d.get("reason")) for d in details if isinstance(d, dict)} if isinstance(details, list) else set()
        lowered = (message or "").lower()
        if "API_KEY_INVALID" in reasons or "api key not valid" in lowered:
            return reclassify(err, AuthError)
        if status == 400 and "input token count" in lowered:
            return reclassify(err, ContextTooLong)
        if err.retry_after is None and status == 429:
            err.retry_after = _retry_delay(detail)
        return err
