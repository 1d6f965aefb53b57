"""Anthropic Messages API: ``POST /v1/messages``, one JSON answer or a server-sent event stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ..types import (
    AuthError,
    Completion,
    CompletionRequest,
    ContentFiltered,
    Overloaded,
    ProviderError,
    Usage,
)
from .base import (
    HttpAdapter,
    HttpSettings,
    TextCallback,
)
from .errors import error_detail, error_from_status, reclassify
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

__all__ = ["AnthropicProvider"]

API_VERSION = "2023-06-01"
_PATH = "/v1/messages"
_MODELS_PATH = "/v1/models?limit=1000"

# The HTTP status each documented error type carries; used for errors that arrive inside a
# stream (whose HTTP status is 200) and where the type says more than the status.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# Types that say more than the status (an overload sent as a 500; out of credit is no bad request).
_TYPE_CLASS: dict[str, type[ProviderError]] = {"overloaded_error": Overloaded, "billing_error": AuthError}
_SSE_TYPES = frozenset({"text/event-stream", "text/plain", ""})


def _usage(raw: Any) -> Usage | None:
    """Anthropic's ``input_tokens`` leaves out cache reads and writes; ours counts them. No input
    and no output at all is no count (mock servers send zeros), not a free call."""
    if not isinstance(raw, dict) or raw.get("input_tokens") is None or raw.get("output_tokens") is None:
        return None
    read = token_count(raw.get("cache_read_input_tokens") or 0)
    write = token_count(raw.get("cache_creation_input_tokens") or 0)
    usage = Usage(token_count(raw["input_tokens"]) + read + write, token_count(raw["output_tokens"]), read, write)
    return usage if usage.input_tokens or usage.output_tokens else None


@dataclass(slots=True)
class _Stream:
    model: str
    parts: list[str] = field(default_factory=list)
    joiner: TextJoiner = field(default_factory=TextJoiner)
    tools: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    response_id: str | None = None
    stop_reason: str | None = None
    done: bool = False


class AnthropicProvider(HttpAdapter):
    kind = "anthropic"
    models_path = _MODELS_PATH

    def __init__(self, settings: HttpSettings) -> None:
        headers = {"anthropic-version": API_VERSION}
        if settings.api_key:
            headers["x-api-key"] = settings.api_key
        super().__init__(settings, headers)

    async def complete(
        self, model: str, request: CompletionRequest, *, on_text: TextCallback | None = None
    ) -> Completion:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.system:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = request.temperature

        if on_text is None:
            data = await self._post(_PATH, body, model)
            return self._parse(data, model)
        body["stream"] = True
        async with self._stream(_PATH, body, model) as response:
            ctype = content_type(response)
            if is_json_type(ctype):  # a proxy that ignores "stream" answers as it would without it
                completion = self._parse(await self._read_json(response, model), model)
                if completion.text:
                    await on_text(completion.text)
                return completion
            if ctype not in _SSE_TYPES:
                raise await self._not_a_stream(response, "an event stream", model)
            state = _Stream(model)
            events = EventStream(response, provider=self.name, model=model)
            async for _event, data in events:
                if state.done:
                    continue  # read to the end so the connection goes back to the pool
                text = self._absorb(state, data, model, response.headers)
                if text and (text := state.joiner.feed(text)):
                    state.parts.append(text)
                    await on_text(text)
            if state.done and (tail := state.joiner.flush()):
                state.parts.append(tail)
                await on_text(tail)
        if not state.done:
            raise events.ended_early("message_stop", len(state.parts), secrets=self._secrets)
        try:
            usage = _usage(state.usage)
        except SHAPE_ERRORS:
            raise self._malformed(f"unreadable usage: {self._quote(state.usage)}", model) from None
        text = "".join(state.parts)
        self._check(text, state.stop_reason, state.tools, model, usage)
        return Completion(text, state.model, usage, state.stop_reason, state.response_id)

    def _absorb(self, state: _Stream, data: str, model: str, headers: httpx.Headers) -> str | None:
        """Fold one event into ``state``; return its text delta, if any."""
        event = json_or_malformed(data, provider=self.name, model=model, secrets=self._secrets)
        try:
            kind = event["type"]
            if kind == "content_block_delta":
                delta = event["delta"]
                if delta.get("type") != "text_delta":
                    return None  # thinking and tool-input deltas are not answer text
                if not isinstance(delta["text"], str):
                    raise TypeError("text_delta without text")
                return delta["text"]
            if kind == "content_block_start":
                block = event["content_block"]
                if block.get("type") == "tool_use":
                    state.tools.append(block.get("name") if isinstance(block.get("name"), str) else "")
            elif kind == "message_start":
                message = event["message"]
                state.model = self._field(message.get("model"), state.model)
                state.response_id = self._field(message.get("id"))
                state.usage.update(message.get("usage") or {})
            elif kind == "message_delta":
                state.stop_reason = self._field((event.get("delta") or {}).get("stop_reason"), state.stop_reason)
                # Counts here are cumulative and replace those from message_start.
                state.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            elif kind == "message_stop":
                state.done = True
            elif kind == "error":
                raise self._error(model, 200, data, headers, in_stream=True)
        except SHAPE_ERRORS:
            raise self._malformed(f"an unreadable stream event: {self._quote(data)}", model) from None
        return None

    def _parse(self, data: Any, model: str) -> Completion:
        if isinstance(data, dict) and data.get("type") == "error":
            raise self._error(model, 200, dumps_or_empty(data), httpx.Headers(), in_stream=True)
        try:
            blocks = data["content"]
            text = "".join(block["text"] for block in blocks if block.get("type") == "text")
            tools = [b.get("name") if isinstance(b.get("name"), str) else "" for b in blocks if b.get("type") == "tool_use"]
            completion = Completion(
                clean_text(text),
                self._field(data.get("model"), model),
                _usage(data.get("usage")),
                self._field(data.get("stop_reason")),
                self._field(data.get("id")),
            )
        except SHAPE_ERRORS:
            raise self._malformed("an answer without a readable content list", model) from None
        self._check(completion.text, completion.finish_reason, tools, model, completion.usage)
        return completion

    def _check(self, text: str, stop_reason: str | None, tools: list[str], model: str, usage: Usage | None) -> None:
        """A refusal, or an answer that is only a tool call, is no answer (both are billed)."""
        if stop_reason == "refusal":
            raise ContentFiltered(
                f"{self.name} refused to answer (stop_reason refusal): a safety classifier intervened",
                provider=self.name,
                model=model,
                usage=usage,
            )
        if stop_reason == "tool_use" or (tools and not text.strip()):
            raise self._tool_call_only(tools, model, usage)

    def _model_names(self, data: Any) -> list[str]:
        return [m["id"] for m in data["data"]]

    def _error(
        self, model: str, status: int, body: str, headers: httpx.Headers, *, in_stream: bool = False
    ) -> ProviderError:
        detail = error_detail(body)
        etype = detail.get("type")
        if in_stream:  # the stream's own status is 200
            status = _TYPE_STATUS.get(etype, 500) if isinstance(etype, str) else 500
        message = detail.get("message")
        text = f"{etype}: {message}" if isinstance(etype, str) and isinstance(message, str) and message else None
        err = error_from_status(
            status, body, headers, provider=self.name, model=model, message=text, secrets=self._secrets
        )
        cls = _TYPE_CLASS.get(etype) if isinstance(etype, str) else None
        return reclassify(err, cls) if cls else err
