"""OpenAI Chat Completions (``POST {base}/chat/completions``), and servers that speak it.

The base URL already ends in ``/v1``. Keyless local servers (vLLM, llama.cpp, LM Studio) get no
``Authorization`` header. Where the base URL is not a known hosted API, the server may be asked
side questions that llama.cpp answers: the window it runs a model with and what the model takes
(``GET /props``, one answer for both; vLLM's ``max_model_len`` in its model list otherwise) and a
token count (llama.cpp's ``POST /tokenize``, else llama-cpp-python's ``POST /extras/tokenize``).

A rich request (tools, images, structured output, tool turns) is translated by
``openai_request``; a plain text one is built here, as small as ever. Tool calls in the answer
(``openai_calls`` assembles streamed ones) are the answer when the request offered tools, and a
``ToolCallOnly`` failure when it did not.

A 2xx stream that ends cleanly before any event at all is asked once more without streaming,
within the same attempt: llama-cpp-python's server answers a stream request over its window that
way, and only the plain request gets its real error (see ``_asked_again_whole``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import httpx

from .. import timings
from ..content import FinishReason, ToolCall
from ..types import (
    AuthError,
    Completion,
    CompletionRequest,
    ContentFiltered,
    ContextTooLong,
    ProviderError,
    Usage,
)
from . import base
from .base import (
    _NOT_OFFERED,
    HttpAdapter,
    HttpSettings,
    TextCallback,
)
from .errors import error_detail, error_from_status, reclassify
from .openai_calls import Call, RawCall, fold_calls, raw_calls
from .openai_props import Props, read_props
from .openai_request import FINISH, add_format, add_sampling, add_tools, rich_messages
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

__all__ = ["OpenAIProvider"]

_PATH = "/chat/completions"
_MODELS_PATH = "/models"
# Error codes (or types) that say more than the HTTP status does.
_CODE_CLASS: dict[str, type[ProviderError]] = {
    "context_length_exceeded": ContextTooLong,
    "string_above_max_length": ContextTooLong,
    "exceed_context_size_error": ContextTooLong,  # llama.cpp's server, with n_ctx beside it
    "content_filter": ContentFiltered,
    "content_policy_violation": ContentFiltered,
    "insufficient_quota": AuthError,  # out of credit: retrying cannot help, another provider can
}
_TOOL_FINISH = frozenset({"tool_calls", "function_call"})
_SSE_TYPES = frozenset({"text/event-stream", "text/plain", ""})
# Hosts of hosted OpenAI-compatible APIs: none runs llama.cpp's /props or /tokenize, so they are
# never asked (a suffix match: "openai.azure.com" covers every Azure resource).
_HOSTED = (
    "api.openai.com", "openai.azure.com", "services.ai.azure.com", "inference.ai.azure.com", "api.groq.com",
    "api.together.xyz", "api.together.ai", "api.mistral.ai", "openrouter.ai", "api.deepseek.com",
    "api.fireworks.ai", "api.x.ai", "api.perplexity.ai", "googleapis.com", "api.anthropic.com",
    "api.cerebras.ai", "api.deepinfra.com", "api.sambanova.ai", "amazonaws.com", "api.moonshot.ai",
    "api.moonshot.cn", "api.novita.ai", "api.hyperbolic.xyz", "huggingface.co", "api.nvidia.com",
    "api.cohere.ai", "api.cohere.com", "dashscope.aliyuncs.com", "api.minimax.io", "api.z.ai",
)


# The tokenizers a local server may offer at its root, in the order they are tried: llama.cpp's C++
# server (no BOS added, special tokens parsed as its chat endpoint does), then llama-cpp-python's
# (``python -m llama_cpp.server``, which has no /tokenize; its count includes the BOS token).
_TOKENIZERS: tuple[tuple[str, Callable[[str, str], dict[str, Any]]], ...] = (
    ("/tokenize", lambda text, model: {"content": text, "add_special": False, "with_pieces": False, "model": model}),
    ("/extras/tokenize", lambda text, model: {"input": text, "model": model}),
)
_NO_SUCH_TOKENIZER = frozenset({422})
"""Beside ``_NOT_OFFERED``: a body refused as malformed (FastAPI's 422) is an endpoint of that name
that speaks another dialect, which asking again will not change."""


def _is_hosted(host: str) -> bool:
    return any(host == h or host.endswith("." + h) for h in _HOSTED)


def _usage(raw: Any) -> Usage | None:
    """``prompt_tokens`` already counts cached tokens; ``prompt_tokens_details`` says how many.

    Zero prompt and completion tokens are no count (a prompt is never zero tokens): some
    compatible servers send zeros where they counted nothing, and zeros would bill as free.
    """
    if not isinstance(raw, dict) or raw.get("prompt_tokens") is None or raw.get("completion_tokens") is None:
        return None
    prompt, completion = token_count(raw["prompt_tokens"]), token_count(raw["completion_tokens"])
    if prompt == 0 and completion == 0:
        return None
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        prompt,
        completion,
        token_count(details.get("cached_tokens") or 0),
        token_count(details.get("cache_write_tokens") or 0),  # reported by some compatible servers, never by OpenAI
    )


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"text is a {type(value).__name__}")


@dataclass(slots=True)
class _Stream:
    model: str
    parts: list[str] = field(default_factory=list)
    joiner: TextJoiner = field(default_factory=TextJoiner)
    calls: dict[int, Call] = field(default_factory=dict)
    usage: Any = None
    response_id: str | None = None
    finish_reason: str | None = None
    refusal: bool = False
    done: bool = False
    named: bool = False


class OpenAIProvider(HttpAdapter):
    kind = "openai"
    models_path = _MODELS_PATH

    def __init__(self, settings: HttpSettings) -> None:
        super().__init__(settings, {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {})
        host = (urlsplit(settings.base_url).hostname or "").lower()
        # OpenAI itself deprecated ``max_tokens`` (newer models reject it); compatible servers
        # mostly know only ``max_tokens``.
        self._max_tokens_field = "max_completion_tokens" if host == "api.openai.com" else "max_tokens"
        self._hosted = _is_hosted(host)
        self._openai = host == "api.openai.com"
        """OpenAI's own API, whose documented limits (images per request) are checked before sending."""
        # llama.cpp serves /props and /tokenize at its root, beside /v1.
        self._root = settings.base_url.rstrip("/").removesuffix("/v1")
        self._tokenizer: int | None = None
        """Which of ``_TOKENIZERS`` the server offers (None until one has answered)."""
        self._lacks: set[int] = set()
        """Which of ``_TOKENIZERS`` the server has said it does not offer."""
        self._props: dict[str, tuple[Props, float]] = {}
        """Each model's ``/props`` answer, and until when it holds (as ``_remember_window`` keeps windows)."""
        self._props_lock: anyio.Lock | None = None

    async def complete(
        self, model: str, request: CompletionRequest, *, on_text: TextCallback | None = None
    ) -> Completion:
        if request.rich:
            messages = rich_messages(request, provider=self.name, model=model, limits=self._openai)
        else:
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
        if request.stop or request.top_p is not None or request.seed is not None:
            add_sampling(body, request, provider=self.name, model=model)
        if request.tools or request.tool_choice != "auto":
            add_tools(body, request, provider=self.name, model=model)
        if request.response_format is not None:
            add_format(body, request.response_format, provider=self.name, model=model)
        offered = bool(request.tools)

        if on_text is None:
            data = await self._post(_PATH, body, model)
            return self._parse(data, model, offered)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        async with self._stream(_PATH, body, model) as response:
            ctype = content_type(response)
            if is_json_type(ctype):  # a server that ignores "stream" answers as it would without it
                completion = self._parse(await self._read_json(response, model), model, offered)
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
            if events.events == 0 and events.stray is None:
                return await self._asked_again_whole(body, model, on_text, offered)
            raise events.ended_early("[DONE]", len(state.parts), secrets=self._secrets)
        try:
            usage = _usage(state.usage)
            raw = [call.raw() for call in state.calls.values()]
        except SHAPE_ERRORS:
            raise self._malformed(f"unreadable usage or tool calls: {self._quote(state.usage)}", model) from None
        text = "".join(state.parts)
        finish, calls = self._finish(text, state.finish_reason, state.refusal, raw, model, usage, offered)
        return Completion(text, state.model, usage, finish, state.response_id, calls)

    async def _asked_again_whole(
        self, body: dict[str, Any], model: str, on_text: TextCallback, offered: bool
    ) -> Completion:
        """The same request without streaming, after a 2xx stream that ended cleanly before any
        event at all. llama-cpp-python's server answers a stream request whose prompt is over its
        window that way (its log says "Requested tokens (N) exceed context window of W"), while
        the same request without ``stream`` gets a real 400 ``context_length_exceeded`` stating the
        window. Taken for a cut stream, it was retried in vain, the window never learnt, and the
        breaker opened for the model; asked again whole, within the same attempt, the server says
        what is wrong (or answers, and that text is passed on in one piece). The question goes out
        on a new connection: the server closes the stream's own just after ending it (uvicorn, on
        the exception behind the empty stream), and a request sent on it first is lost."""
        whole = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        completion = self._parse(await self._post_on_a_new_connection(_PATH, whole, model), model, offered)
        if completion.text:
            await on_text(completion.text)
        return completion

    def _absorb(self, state: _Stream, data: str, model: str, headers: httpx.Headers) -> str | None:
        """Fold one chunk into ``state``; return its text delta, if any."""
        if data == "[DONE]":
            state.done = True
            return None
        chunk = json_or_malformed(data, provider=self.name, model=model, secrets=self._secrets)
        try:
            if "error" in chunk:  # an error after the 200 status line was sent
                raise self._error(model, _status_of(chunk["error"]), data, headers)
            if not state.named:  # every chunk repeats the model and the id: read them once
                state.model = self._field(chunk.get("model"), state.model)
                state.response_id = self._field(chunk.get("id"), state.response_id)
                state.named = state.response_id is not None
            if chunk.get("usage"):
                state.usage = chunk["usage"]
            choices = chunk.get("choices") or ()  # empty in the final usage chunk
            if not choices:
                return None
            choice = choices[0]
            if finish := choice.get("finish_reason"):
                state.finish_reason = self._field(finish, state.finish_reason)
            delta = choice.get("delta") or {}
            state.refusal = state.refusal or bool(delta.get("refusal"))
            if delta.get("tool_calls") or delta.get("function_call"):
                fold_calls(state.calls, delta)
            return _text(delta.get("content"))
        except SHAPE_ERRORS:
            raise self._malformed(f"an unreadable stream chunk: {self._quote(data)}", model) from None

    def _parse(self, data: Any, model: str, offered: bool) -> Completion:
        if isinstance(data, dict) and "error" in data and "choices" not in data:
            raise self._error(model, _status_of(data["error"]), dumps_or_empty(data), httpx.Headers())
        try:
            choice = data["choices"][0]
            message = choice["message"]
            native = self._field(choice.get("finish_reason"))
            refusal = bool(message.get("refusal"))
            raw = raw_calls(message)
            text = clean_text(_text(message.get("content")) or "")
            answered = self._field(data.get("model"), model)
            usage = _usage(data.get("usage"))
            response_id = self._field(data.get("id"))
        except SHAPE_ERRORS:
            raise self._malformed("an answer without a readable choices[0].message", model) from None
        finish, calls = self._finish(text, native, refusal, raw, model, usage, offered)
        return Completion(text, answered, usage, finish, response_id, calls)

    def _finish(
        self, text: str, native: str | None, refusal: bool, raw: list[RawCall], model: str, usage: Usage | None,
        offered: bool,
    ) -> tuple[FinishReason, tuple[ToolCall, ...]]:
        """The answer's finish reason in the router's words, and its tool calls. An answer
        withheld by a filter (or refused: a structured answer's ``refusal``) is no answer; nor,
        when the request offered no tools, is one that is only a tool call."""
        if native == "content_filter" or refusal:
            why = "finish_reason content_filter" if native == "content_filter" else "the model refused"
            raise ContentFiltered(
                f"{self.name} withheld the answer ({why})", provider=self.name, model=model, usage=usage
            )
        if not offered:
            if native in _TOOL_FINISH or (raw and not text.strip()):
                raise self._tool_call_only([n if isinstance(n, str) else "" for _, n, _ in raw], model, usage)
            return finish_of(native, FINISH, tool_calls=False), ()
        calls = tuple(self._call(call, model, usage) for call in raw)
        if not calls and native in _TOOL_FINISH:
            raise self._malformed(f"finish_reason {native} without any tool call", model)
        return finish_of(native, FINISH, tool_calls=bool(calls)), calls

    def _call(self, raw: RawCall, model: str, usage: Usage | None) -> ToolCall:
        call_id, name, arguments = raw
        tool = self._field(name)
        if tool is None:
            raise self._malformed(f"a tool call without a name: {self._quote(raw)}", model)
        # Read strictly, made valid text, quoted without this adapter's credentials (translate).
        value = tool_arguments(arguments, tool=tool, provider=self.name, model=model, usage=usage, secrets=self._secrets)
        return ToolCall(self._field(call_id) or new_call_id(), tool, value)

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
            secrets=self._secrets,
        )
        cls = _CODE_CLASS.get(code) if isinstance(code, str) else None
        if cls is None and isinstance(etype, str):
            cls = _CODE_CLASS.get(etype)
        err = reclassify(err, cls) if cls else err
        n_ctx = detail.get("n_ctx")  # llama.cpp states the window beside its message
        if isinstance(err, ContextTooLong) and type(n_ctx) is int and n_ctx > 0:
            err.context_window = n_ctx
        return err

    # -- side questions to a local server --------------------------------------------------------

    async def context_window(self, model: str) -> int | None:
        """llama.cpp's per-slot ``n_ctx`` from ``GET /props`` (what one request may fill), else
        vLLM's ``max_model_len`` from its model list. Never asked of a hosted API."""
        if self._hosted:
            return None
        return await self._remember_window(model, self._ask_window)

    async def _ask_window(self, model: str) -> tuple[int | None, bool]:
        props = await self._props_of(model)
        if props.n_ctx is not None:
            return props.n_ctx, True
        if props.status != 200 and props.status not in _NOT_OFFERED:
            return None, False  # unreachable, loading, or a router without the model loaded yet
        status, data = await self._side_json("GET", _MODELS_PATH)
        if status == 200 and isinstance(data, dict) and isinstance(data.get("data"), list):
            for entry in data["data"]:
                if isinstance(entry, dict) and entry.get("id") == model and type(entry.get("max_model_len")) is int:
                    return entry["max_model_len"], True
        return None, status == 200 or status in _NOT_OFFERED

    async def capabilities(self, model: str) -> frozenset[str] | None:
        """What llama.cpp's ``GET /props`` states (``openai_props.read_props``): its answer is the
        one the window is read from, asked once. Never asked of a hosted API."""
        if self._hosted:
            return None
        return (await self._props_of(model)).capabilities

    async def _props_of(self, model: str) -> Props:
        """``GET /props`` for ``model``, remembered: an answer (or "not offered") for good, a
        passing failure for ``timings.UNKNOWN_RETRY_S``. Concurrent callers share one question."""
        hit = self._props.get(model)
        if hit is not None and hit[1] > base._clock():
            return hit[0]
        if self._props_lock is None:
            self._props_lock = anyio.Lock()
        async with self._props_lock:
            hit = self._props.get(model)
            if hit is not None and hit[1] > base._clock():
                return hit[0]
            # ``autoload=false``: a llama.cpp router must not load (and evict for) a model just to say.
            status, data = await self._side_json(
                "GET", f"{self._root}/props?model={quote(model, safe='')}&autoload=false"
            )
            props = read_props(status, data)
            final = status == 200 or status in _NOT_OFFERED
            self._props[model] = (props, math.inf if final else base._clock() + timings.UNKNOWN_RETRY_S)
            return props

    async def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens in ``text`` by the server's own tokenizer: llama.cpp's ``POST /tokenize``, else
        llama-cpp-python's ``POST /extras/tokenize``. Which one the server has is remembered once
        one answers, and so is each it lacks: a server with neither is not asked again. None
        where there is no count (no tokenizer, or none that answered this time)."""
        if self._hosted:
            return None
        if self._tokenizer is not None:
            return await self._count_with(self._tokenizer, model, text)
        for which in range(len(_TOKENIZERS)):
            if which not in self._lacks and (count := await self._count_with(which, model, text)) is not None:
                return count
        return None

    async def _count_with(self, which: int, model: str, text: str) -> int | None:
        path, body = _TOKENIZERS[which]
        status, data = await self._side_json("POST", f"{self._root}{path}", body(text, model))
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if status == 200 and isinstance(tokens, list):
            self._tokenizer = which
            return len(tokens)
        if status == 200 or status in _NOT_OFFERED or status in _NO_SUCH_TOKENIZER:
            self._lacks.add(which)
            if self._tokenizer == which:
                self._tokenizer = None
        return None


def _status_of(error: Any) -> int:
    """The HTTP status an error sent inside a 200 body stands for (its ``code``), else 500."""
    code = error.get("code") if isinstance(error, dict) else None
    return code if type(code) is int and 400 <= code <= 599 else 500
