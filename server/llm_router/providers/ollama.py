"""Ollama's native chat API: ``POST /api/chat``, one JSON answer or newline-delimited JSON.

Ollama runs a model with a context of ``num_ctx`` tokens, whatever the model was trained for: a
Modelfile's ``num_ctx``, else the server's default (2048 or 4096 in older versions, sized by the
GPU's memory in newer ones, or ``OLLAMA_CONTEXT_LENGTH``). ``context_window`` reports what the
server will really use: the context of the loaded model (``GET /api/ps``), else the Modelfile's
``num_ctx`` (``POST /api/show``), else nothing yet (asked again once the model has been loaded).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..types import Completion, CompletionRequest, ProviderError, Usage
from . import wire
from .base import (
    _NOT_OFFERED,
    HttpAdapter,
    HttpSettings,
    TextCallback,
)
from .errors import error_detail, error_from_status
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


def _usage(raw: dict[str, Any]) -> Usage | None:
    """Ollama may leave ``prompt_eval_count`` out (a prompt served from its cache): then no usage.
    Zero prompt and zero output tokens are no count either (servers that imitate Ollama send them)."""
    if raw.get("prompt_eval_count") is None or raw.get("eval_count") is None:
        return None
    usage = Usage(token_count(raw["prompt_eval_count"]), token_count(raw["eval_count"]))
    return usage if usage.input_tokens or usage.output_tokens else None


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
            return self._whole(await self._post(_PATH, body, model), model)
        parts: list[str] = []
        tools: list[str] = []
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
                    completion = self._whole(data, model)
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
            raise self._malformed(
                f"a stream that ended before a line with done: true (cut off after {len(parts)} text pieces)", model
            )
        return self._finish("".join(parts), last, tools, model)

    def _whole(self, data: Any, model: str) -> Completion:
        tools: list[str] = []
        text = self._absorb(data, model, tools)
        if not data.get("done"):
            raise self._malformed("an answer that is not marked done", model)
        return self._finish(text, data, tools, model)

    def _absorb(self, chunk: Any, model: str, tools: list[str], headers: httpx.Headers | None = None) -> str:
        """The text of one answer or stream line (tool calls noted in ``tools``); an ``error`` line raises."""
        try:
            if "error" in chunk:  # mid-stream errors keep the 200 status, so treat them as the server's
                raise self._error(model, 500, dumps_or_empty(chunk), headers or httpx.Headers())
            message = chunk["message"]
            for call in message.get("tool_calls") or ():
                name = (call.get("function") or {}).get("name")
                tools.append(name if isinstance(name, str) else "")
            content = message.get("content")
            if content is not None and not isinstance(content, str):
                raise TypeError(f"content is a {type(content).__name__}")
            chunk.get("done")  # a line that is no object fails here, not in the caller
            return content or ""
        except SHAPE_ERRORS:
            raise self._malformed(f"an unreadable answer: {self._quote(chunk)}", model) from None

    def _finish(self, text: str, final: dict[str, Any], tools: list[str], model: str) -> Completion:
        try:
            usage = _usage(final)
        except SHAPE_ERRORS:
            raise self._malformed(f"unreadable token counts in {self._quote(final)}", model) from None
        text = clean_text(text)
        if tools and not text.strip():
            raise self._tool_call_only(tools, model, usage)
        return Completion(
            text, self._field(final.get("model"), model), usage, self._field(final.get("done_reason")), None
        )

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
        status, data = await self._side_json("POST", "/api/show", {"model": model})
        if status == 200 and isinstance(data, dict):
            window = _num_ctx(data.get("parameters"))
            if window:
                return window, True
            return None, False  # the server's default applies: /api/ps says once the model is loaded
        return None, status in _NOT_OFFERED and status != 404  # 404: not pulled yet


async def _replay(items: list[Any]) -> Any:
    for item in items:
        yield item
