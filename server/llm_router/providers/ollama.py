"""Ollama's native chat API: ``POST /api/chat``, one JSON answer or newline-delimited JSON.

Ollama runs a model with a context of ``num_ctx`` tokens, whatever the model was trained for: a
Modelfile's ``num_ctx``, else the server's default (2048 or 4096 in older versions, sized by the
GPU's memory in newer ones, or ``OLLAMA_CONTEXT_LENGTH``). ``context_window`` reports what the
server will really use: the context of the loaded model (``GET /api/ps``), else the Modelfile's
``num_ctx`` (``POST /api/show``), else nothing yet (asked again once the model has been loaded).
The same ``/api/show`` answer, asked once, says what the model can do (``capabilities``).

A rich request (tools, images, structured output) is translated in ``ollama_request``; the
answer's tool calls are read here, whole as Ollama sends them (in a stream, each in a line of
its own or several in one).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from .. import timings
from ..content import FinishReason, ToolCall
from ..defaults import KIND_CAPABILITIES
from ..types import Completion, CompletionRequest, Message, ProviderError, Usage
from . import base, ollama_request, wire
from .base import (
    _NOT_OFFERED,
    HttpAdapter,
    HttpSettings,
    TextCallback,
)
from .errors import error_detail, error_from_status
from .translate import finish_of, new_call_id, tool_arguments
from .wire import (
    SHAPE_ERRORS,
    TextJoiner,
    clean_text,
    content_type,
    dumps_or_empty,
    is_json_type,
    iter_ndjson,
    json_or_malformed,
    read_capped,
    token_count,
)

__all__ = ["OllamaProvider"]

_PATH = "/api/chat"
_MODELS_PATH = "/api/tags"
_NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines", "text/plain", ""}
)
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length"}
"""``done_reason`` in the router's words (``load``, ``unload`` and anything new: a normal end).
Ollama says ``stop`` after tool calls too: an answer holding calls is ``tool_calls`` whatever it says."""
_CAPABILITIES = {"tools": "tools", "vision": "vision"}
"""``/api/show``'s ``capabilities`` words (``completion``, ``tools``, ``vision``, ``thinking``,
``insert``, ``embedding``) that name something a request can need, in the router's words."""

_Call = tuple[str, Any, Any]
"""A tool call as an answer carried it: its name ("" when none), its ``function`` and the call."""


@dataclass(frozen=True, slots=True)
class _Shown:
    """What one ``/api/show`` answer says of a model: its Modelfile's ``num_ctx`` and what it can do."""

    num_ctx: int | None
    capabilities: frozenset[str] | None


def _usage(raw: dict[str, Any]) -> Usage | None:
    """Ollama may leave ``prompt_eval_count`` out (a prompt served from its cache): then no usage.
    Zero prompt and zero output tokens are no count either (servers that imitate Ollama send them)."""
    if raw.get("prompt_eval_count") is None or raw.get("eval_count") is None:
        return None
    usage = Usage(token_count(raw["prompt_eval_count"]), token_count(raw["eval_count"]))
    return usage if usage.input_tokens or usage.output_tokens else None


def _capabilities(said: Any) -> frozenset[str] | None:
    """The router's capabilities of a model whose ``/api/show`` lists ``said``: the protocol's
    defaults with ``tools`` and ``vision`` where listed; none at all for a model that cannot chat
    (no ``completion``: an embedding model). None when the server lists nothing (older Ollama)."""
    if not isinstance(said, list):
        return None
    words = {w for w in said if isinstance(w, str)}
    if "completion" not in words:
        return frozenset()
    return KIND_CAPABILITIES["ollama"] | {ours for theirs, ours in _CAPABILITIES.items() if theirs in words}


def _plain_messages(turns: tuple[Message, ...]) -> list[dict[str, Any]] | None:
    """The turns as plain ``/api/chat`` messages; None as soon as one holds more than text
    (images, tool calls, a tool result): those are ``ollama_request``'s."""
    out = []
    for m in turns:
        if m.parts or m.tool_calls or m.role == "tool":
            return None
        out.append({"role": m.role, "content": m.content})
    return out


def _num_ctx(parameters: Any) -> int | None:
    """``num_ctx`` from ``/api/show``'s ``parameters``: Modelfile lines such as ``num_ctx    8192``."""
    if not isinstance(parameters, str):
        return None
    for line in parameters.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "num_ctx" and words[1].isdigit():
            return int(words[1])
    return None


class OllamaProvider(HttpAdapter):
    kind = "ollama"
    models_path = _MODELS_PATH

    def __init__(self, settings: HttpSettings) -> None:
        # A local Ollama needs no key; one behind a proxy or on ollama.com takes a bearer token.
        super().__init__(settings, {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {})
        self._shown: dict[str, tuple[_Shown | None, bool, float]] = {}
        """Each model's ``/api/show`` answer (None: none had), whether that is final, and until when it holds."""
        self._show_lock: anyio.Lock | None = None

    async def complete(
        self, model: str, request: CompletionRequest, *, on_text: TextCallback | None = None
    ) -> Completion:
        body = self._body(model, request, stream=on_text is not None)
        offered = bool(request.tools) and request.tool_choice != "none"
        if on_text is None:
            return self._whole(await self._post(_PATH, body, model), model, offered)
        parts: list[str] = []
        tools: list[_Call] = []
        joiner = TextJoiner()
        last: dict[str, Any] | None = None
        async with self._stream(_PATH, body, model) as response:
            ctype = content_type(response)
            if is_json_type(ctype):  # one JSON answer, as without "stream" (or NDJSON mislabelled)
                raw = await read_capped(response, wire.MAX_BODY_BYTES, provider=self.name, model=model)
                try:
                    data = json.loads(raw)
                except (ValueError, RecursionError):
                    data = None
                if isinstance(data, dict):
                    completion = self._whole(data, model, offered)
                    if completion.text:
                        await on_text(completion.text)
                    return completion
                lines = [json_or_malformed(x, provider=self.name, model=model, secrets=self._secrets)
                         for x in raw.splitlines() if x.strip()]
                chunks: Any = _replay(lines)
            elif ctype in _NDJSON_TYPES:
                chunks = iter_ndjson(response, provider=self.name, model=model, secrets=self._secrets)
            else:
                raise await self._not_a_stream(response, "newline-delimited JSON", model)
            async for chunk in chunks:
                if last is not None:
                    continue  # read to the end so the connection goes back to the pool
                text = self._absorb(chunk, model, tools, response.headers)
                if chunk.get("done"):
                    last = chunk
                if text and (text := joiner.feed(text)):
                    parts.append(text)
                    await on_text(text)
            if last is not None and (tail := joiner.flush()):
                parts.append(tail)
                await on_text(tail)
        if last is None:
            calls = f" and {len(tools)} tool calls" if tools else ""
            raise self._malformed(
                f"a stream that ended before a line with done: true (cut off after {len(parts)} text pieces{calls})",
                model,
            )
        return self._finish("".join(parts), last, tools, model, offered)

    def _body(self, model: str, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        """The ``/api/chat`` body. A plain text request's is what it always was; the sampling
        parameters go in ``options`` (Ollama has a field for each: ``stop``, ``top_p``, ``seed``)."""
        # ``request.rich`` in one pass with the plain messages, which a plain request needs anyway.
        messages = _plain_messages(request.messages)
        rich = messages is None or bool(request.tools) or request.response_format is not None
        if messages is None:
            messages = ollama_request.messages(request.messages, provider=self.name, model=model)
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.seed is not None:
            options["seed"] = request.seed
        if request.stop:
            options["stop"] = list(request.stop)
        # ``stream`` defaults to true on /api/chat, so it is always sent.
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream, "options": options}
        if rich:
            ollama_request.add_rich_fields(body, request, provider=self.name, model=model)
        return body

    def _whole(self, data: Any, model: str, offered: bool) -> Completion:
        tools: list[_Call] = []
        text = self._absorb(data, model, tools)
        if not data.get("done"):
            raise self._malformed("an answer that is not marked done", model)
        return self._finish(text, data, tools, model, offered)

    def _absorb(self, chunk: Any, model: str, tools: list[_Call], headers: httpx.Headers | None = None) -> str:
        """The text of one answer or stream line (its tool calls added to ``tools``); an ``error`` line raises."""
        try:
            if "error" in chunk:  # mid-stream errors keep the 200 status, so treat them as the server's
                raise self._error(model, 500, dumps_or_empty(chunk), headers or httpx.Headers())
            message = chunk["message"]
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                name = function.get("name")
                tools.append((name if isinstance(name, str) else "", function, call))
            content = message.get("content")
            if content is not None and not isinstance(content, str):
                raise TypeError(f"content is a {type(content).__name__}")
            chunk.get("done")  # a line that is no object fails here, not in the caller
            return content or ""
        except SHAPE_ERRORS:
            raise self._malformed(f"an unreadable answer: {self._quote(chunk)}", model) from None

    def _finish(self, text: str, final: dict[str, Any], tools: list[_Call], model: str, offered: bool) -> Completion:
        try:
            usage = _usage(final)
        except SHAPE_ERRORS:
            raise self._malformed(f"unreadable token counts in {self._quote(final)}", model) from None
        text = clean_text(text)
        calls: tuple[ToolCall, ...] = ()
        if tools and offered:
            calls = tuple(self._tool_call(t, model, usage) for t in tools)
        elif tools and not text.strip():
            raise self._tool_call_only([name for name, _, _ in tools], model, usage)
        finish = finish_of(self._field(final.get("done_reason")), _FINISH, tool_calls=bool(calls))
        return Completion(text, self._field(final.get("model"), model), usage, finish, None, calls)

    def _tool_call(self, call: _Call, model: str, usage: Usage | None) -> ToolCall:
        """One call the model made of a tool offered: its arguments an object (``InvalidOutput``,
        billed, when they are not), its id Ollama's where it sends one (newer servers), else new."""
        name, function, raw = call
        if not name:
            raise self._malformed(f"a tool call without a function name: {self._quote(raw)}", model)
        name = self._field(name, "")
        args = tool_arguments(function.get("arguments"), tool=name, provider=self.name, model=model, usage=usage, secrets=self._secrets)
        return ToolCall(self._field(raw.get("id")) or new_call_id(), name, args)

    def _model_names(self, data: Any) -> list[str]:
        return [m["name"] for m in data["models"]]

    def _error(self, model: str, status: int, body: str, headers: httpx.Headers) -> ProviderError:
        # Ollama states no window in its context error ("prompt too long; exceeded max context
        # length by N tokens"): the error's class is all it says.
        message = error_detail(body).get("message")
        return error_from_status(
            status,
            body,
            headers,
            provider=self.name,
            model=model,
            message=message if isinstance(message, str) and message else None,
            secrets=self._secrets,
        )

    # -- the window the server runs a model with ------------------------------------------------

    async def context_window(self, model: str) -> int | None:
        return await self._remember_window(model, self._ask_window)

    async def _ask_window(self, model: str) -> tuple[int | None, bool]:
        wanted = {model, model if ":" in model else f"{model}:latest"}
        status, data = await self._side_json("GET", "/api/ps")
        running = data.get("models") if status == 200 and isinstance(data, dict) else None
        for entry in running if isinstance(running, list) else ():
            if isinstance(entry, dict) and (entry.get("name") in wanted or entry.get("model") in wanted):
                window = entry.get("context_length")
                if type(window) is int and window > 0:
                    return window, True
        shown, final = await self._show(model)
        if shown is not None and shown.num_ctx:
            return shown.num_ctx, True
        # No num_ctx: the server's default applies, which /api/ps says once the model is loaded.
        return None, final and shown is None

    async def capabilities(self, model: str) -> frozenset[str] | None:
        shown, _ = await self._show(model)
        return None if shown is None else shown.capabilities

    async def _show(self, model: str) -> tuple[_Shown | None, bool]:
        """``POST /api/show`` once for both the window and the capabilities, remembered as the
        window is: an answer (or "not offered") for good, a passing failure (a model not pulled
        yet: 404) for ``timings.UNKNOWN_RETRY_S``. Never raises."""
        hit = self._shown.get(model)
        if hit is not None and hit[2] > base._clock():
            return hit[0], hit[1]
        if self._show_lock is None:
            self._show_lock = anyio.Lock()
        async with self._show_lock:
            hit = self._shown.get(model)
            if hit is not None and hit[2] > base._clock():
                return hit[0], hit[1]
            status, data = await self._side_json("POST", "/api/show", {"model": model})
            shown: _Shown | None = None
            if status == 200 and isinstance(data, dict):
                shown = _Shown(_num_ctx(data.get("parameters")), _capabilities(data.get("capabilities")))
            final = shown is not None or (status in _NOT_OFFERED and status != 404)
            self._shown[model] = (shown, final, math.inf if final else base._clock() + timings.UNKNOWN_RETRY_S)
            return shown, final


async def _replay(items: list[Any]) -> Any:
    for item in items:
        yield item
