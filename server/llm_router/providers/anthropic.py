"""Anthropic Messages API: ``POST /v1/messages``, one JSON answer or a server-sent event stream.

A rich request (tools, images, structured output, sampling fields) is translated by
``anthropic_request``; the answer, text and tool calls alike, is read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..content import FinishReason, ToolCall
from ..types import (
    AuthError,
    Completion,
    CompletionRequest,
    ContentFiltered,
    Overloaded,
    ProviderError,
    Usage,
)
from .anthropic_request import WRAPPED, add_sampling, add_tools, rich_messages
from .base import (
    HttpAdapter,
    HttpSettings,
    TextCallback,
)
from .errors import error_detail, error_from_status, reclassify
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

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Each documented ``stop_reason`` in the router's words."""
_FORCED_FINISH: dict[str, FinishReason] = {**_FINISH, "tool_use": "stop"}
"""For structured output, where calling the forced tool is how the model gives its answer."""


@dataclass(frozen=True, slots=True)
class _Want:
    """What the request asked of the answer: tool calls may be the answer (``tools``), or the
    forced tool's input is (``forced``, structured output); neither for plain text."""

    tools: bool = False
    """Tool calls may be the answer (with ``forced`` as well: a call of any tool but that one)."""
    forced: str | None = None
    wrapped: bool = False
    """The answer is the forced input's ``WRAPPED`` property (a schema whose top is no object)."""


_PLAIN = _Want()


@dataclass(slots=True)
class _Block:
    """A ``tool_use`` block of a stream, its input arriving in pieces of JSON text."""

    id: str | None
    name: str
    pieces: list[str] = field(default_factory=list)


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
    want: _Want = _PLAIN
    blocks: dict[int, _Block] = field(default_factory=dict)
    """The tool_use blocks by their index, in the order they came."""
    held: list[str] = field(default_factory=list)
    """Structured output: text deltas, the answer only if the forced tool is never called."""


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
        rich = request.rich
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "messages": rich_messages(request, provider=self.name, model=model) if rich
            else [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.system:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        want = _PLAIN
        if rich or request.tool_choice != "auto":
            forced = add_tools(body, request, provider=self.name, model=model)
            if forced is not None:
                want = _Want(tools=forced.beside_tools, forced=forced.name, wrapped=forced.wrapped)
            elif request.tools:
                want = _Want(tools=True)
        if request.stop or request.top_p is not None or request.seed is not None:
            add_sampling(body, request, provider=self.name, model=model)

        if on_text is None:
            data = await self._post(_PATH, body, model)
            return self._parse(data, model, want)
        body["stream"] = True
        async with self._stream(_PATH, body, model) as response:
            ctype = content_type(response)
            if is_json_type(ctype):  # a proxy that ignores "stream" answers as it would without it
                completion = self._parse(await self._read_json(response, model), model, want)
                if completion.text:
                    await on_text(completion.text)
                return completion
            if ctype not in _SSE_TYPES:
                raise await self._not_a_stream(response, "an event stream", model)
            state = _Stream(model, want=want)
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
        if want is _PLAIN:
            self._check(text, state.stop_reason, state.tools, model, usage)
            return Completion(text, state.model, usage, finish_of(state.stop_reason, _FINISH, tool_calls=False),
                              state.response_id)
        others = want.forced is not None and want.tools and any(b.name != want.forced for b in state.blocks.values())
        if want.forced is not None and not others:
            block = next((b for b in state.blocks.values() if b.name == want.forced), None)
            if block is not None and (want.wrapped or want.tools):  # held back whole, now known to be the answer
                if text := self._structured_text("".join(block.pieces), want, model) or "{}":
                    await on_text(text)
            elif block is not None:
                if not text:  # the forced tool's input was streamed as the text; none at all is an empty object
                    text = "{}"
                    await on_text(text)
            elif text := clean_text("".join(state.held)):
                await on_text(text)  # no forced call: the answer is what the model wrote as text
            return self._answer(text, [], state.stop_reason, state.model, usage, state.response_id, model, want)
        calls = [(b.id, b.name, "".join(b.pieces)) for b in state.blocks.values()]
        if others:  # beside the caller's tools, it called one of them: the text held is the text besides the calls
            text = clean_text("".join(state.held))
            if text:
                await on_text(text)
        return self._answer(text, calls, state.stop_reason, state.model, usage, state.response_id, model, want)

    def _absorb(self, state: _Stream, data: str, model: str, headers: httpx.Headers) -> str | None:
        """Fold one event into ``state``; return its text delta, if any."""
        event = json_or_malformed(data, provider=self.name, model=model, secrets=self._secrets)
        try:
            kind = event["type"]
            if kind == "content_block_delta":
                delta = event["delta"]
                dtype = delta.get("type")
                if dtype == "text_delta":
                    if not isinstance(delta["text"], str):
                        raise TypeError("text_delta without text")
                    if state.want.forced is None:
                        return delta["text"]
                    state.held.append(delta["text"])  # structured output: text besides the forced call is held
                    return None
                if dtype == "input_json_delta" and state.want is not _PLAIN:
                    return self._tool_piece(state, event["index"], delta["partial_json"])
                return None  # thinking deltas are not answer text, nor a call's input when no tools were offered
            if kind == "content_block_start":
                block = event["content_block"]
                if block.get("type") == "tool_use":
                    name = block.get("name") if isinstance(block.get("name"), str) else ""
                    state.tools.append(name)
                    if state.want is not _PLAIN:
                        state.blocks[event["index"]] = _Block(block.get("id"), name)
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

    def _tool_piece(self, state: _Stream, index: Any, piece: Any) -> str | None:
        """One piece of a tool call's input: kept for the call, or, for the forced tool of
        structured output, returned as the answer's text as it comes. Beside the caller's tools
        the forced tool's pieces are kept too: whether its call is the answer is known only at
        the end (a call of another tool in the same turn is), and what was streamed must agree
        with the result."""
        block = state.blocks.get(index)
        if block is None or not isinstance(piece, str):
            raise TypeError("input_json_delta outside a tool_use block, or without partial_json")
        want = state.want
        if want.forced is not None and block.name == want.forced and not want.wrapped and not want.tools:
            return piece
        block.pieces.append(piece)
        return None

    def _parse(self, data: Any, model: str, want: _Want = _PLAIN) -> Completion:
        if isinstance(data, dict) and data.get("type") == "error":
            raise self._error(model, 200, dumps_or_empty(data), httpx.Headers(), in_stream=True)
        try:
            blocks = data["content"]
            text = "".join(block["text"] for block in blocks if block.get("type") == "text")
            uses = [b for b in blocks if b.get("type") == "tool_use"]
            tools = [b.get("name") if isinstance(b.get("name"), str) else "" for b in uses]
            answered = self._field(data.get("model"), model)
            usage = _usage(data.get("usage"))
            stop_reason = self._field(data.get("stop_reason"))
            response_id = self._field(data.get("id"))
        except SHAPE_ERRORS:
            raise self._malformed("an answer without a readable content list", model) from None
        text = clean_text(text)
        if want is _PLAIN:
            self._check(text, stop_reason, tools, model, usage)
            return Completion(text, answered, usage, finish_of(stop_reason, _FINISH, tool_calls=False), response_id)
        calls = [(b.get("id"), name, b.get("input")) for b, name in zip(uses, tools, strict=True)]
        return self._answer(text, calls, stop_reason, answered, usage, response_id, model, want)

    def _answer(
        self,
        text: str,
        calls: list[tuple[Any, str, Any]],
        stop_reason: str | None,
        answered: str,
        usage: Usage | None,
        response_id: str | None,
        model: str,
        want: _Want,
    ) -> Completion:
        """The answer to a request that offered tools or asked for structured output.

        ``calls`` are ``(id, name, input)``, the input an object (JSON answers) or JSON text
        (streams). With tools offered, calls are the answer. For structured output the forced
        tool's input is the text (the router validates it, not this adapter); an answer that
        did not call it keeps its text for the router to judge."""
        self._refused(stop_reason, model, usage)
        if want.forced is not None and want.tools and any(c[1] != want.forced for c in calls):
            calls = [c for c in calls if c[1] != want.forced]  # it called the caller's tools: those are the answer
        elif want.forced is not None:
            forced = next((c for c in calls if c[1] == want.forced), None)
            if forced is not None:
                text = self._structured_text(forced[2], want, model)
            return Completion(text, answered, usage, finish_of(stop_reason, _FORCED_FINISH, tool_calls=False),
                              response_id)
        tool_calls = []
        for call_id, name, raw in calls:
            if not name:
                raise self._malformed("a tool_use block without a name", model)
            shown = self._field(name, "")
            # Read strictly, made valid text, quoted without this adapter's credentials (translate).
            arguments = tool_arguments(raw, tool=shown, provider=self.name, model=model, usage=usage, secrets=self._secrets)
            tool_calls.append(ToolCall(self._field(call_id) or new_call_id(), shown, arguments))
        if stop_reason == "tool_use" and not tool_calls:
            raise self._malformed("stop_reason tool_use without a tool_use block", model)
        finish = finish_of(stop_reason, _FINISH, tool_calls=bool(tool_calls))
        return Completion(text, answered, usage, finish, response_id, tuple(tool_calls))

    def _structured_text(self, raw: Any, want: _Want, model: str) -> str:
        """The forced call's input as the answer's JSON text: an object as JSON, text (a stream's
        pieces joined) as it is; for a wrapped schema, its ``WRAPPED`` property, where it has
        one (else all of it, for the router to find wrong)."""
        value = raw
        if isinstance(raw, str):
            if not want.wrapped:
                return clean_text(raw)
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):
                return clean_text(raw)
        if want.wrapped and isinstance(value, dict) and WRAPPED in value:
            value = value[WRAPPED]
        try:
            return clean_text(json.dumps(value, ensure_ascii=False))
        except (ValueError, TypeError, RecursionError):
            raise self._malformed(f"a {want.forced} call whose input cannot be read back", model) from None

    def _check(self, text: str, stop_reason: str | None, tools: list[str], model: str, usage: Usage | None) -> None:
        """A refusal, or an answer that is only a tool call (no tools were offered), is no
        answer (both are billed)."""
        self._refused(stop_reason, model, usage)
        if stop_reason == "tool_use" or (tools and not text.strip()):
            raise self._tool_call_only(tools, model, usage)

    def _refused(self, stop_reason: str | None, model: str, usage: Usage | None) -> None:
        if stop_reason == "refusal":
            raise ContentFiltered(
                f"{self.name} refused to answer (stop_reason refusal): a safety classifier intervened",
                provider=self.name,
                model=model,
                usage=usage,
            )

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
