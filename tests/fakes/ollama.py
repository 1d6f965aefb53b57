"""The fake Ollama /api/chat API (see README.md for the documentation it follows)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar

from .dialect import (
    TOOL_ARGS,
    Dialect,
    Endpoint,
    Frames,
    RecordedRequest,
    Turn,
    dumps,
    now_iso,
)


class OllamaDialect(Dialect):
    """Ollama native API: docs 'Chat' (/api/chat), 'Streaming', 'Usage', 'Errors', 'List models'.

    Local Ollama has no auth; an api_key makes the fake demand ``Authorization: Bearer`` as
    Ollama's cloud endpoint does. ``stream`` defaults to TRUE when absent.

    Rich requests, per 'Tool calling', 'Vision' and 'Structured outputs': ``tools`` as
    ``{"type": "function", "function": {name, description, parameters}}``; an assistant turn's
    ``tool_calls`` (``function`` with ``name`` and an ``arguments`` object), a ``tool`` turn's
    ``tool_name``; a message's ``images`` as base64 (anything else is refused as Ollama's Go
    decoder refuses it: 400 ``illegal base64 data at input byte N``); ``format`` ``"json"`` or a
    JSON schema; ``options.stop``/``top_p``/``seed``. Structured output comes back as Ollama
    sends it, the JSON text in ``message.content`` (script it with ``text=``).

    Tool calls (``Step.tool_calls``, on a ``tool_call`` step or any other) go in
    ``message.tool_calls`` without ids, as Ollama documents them; streamed, each call arrives
    whole in a line of its own after the text lines and before the ``done`` line (Ollama never
    splits a call's arguments). A ``cut_stream`` (without ``clean_eof``) or ``stall`` whose
    ``after_chunks`` ends on a call's line sends that line only up to the start of its
    ``arguments``: the connection drops inside the call.
    """

    kind = "ollama"
    finish_names: ClassVar[dict[str, str]] = {"stop": "stop", "length": "length"}
    supports_blocked = False
    supports_stream_error = True
    ROLES: ClassVar[tuple[str, ...]] = ("system", "user", "assistant", "tool")

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and path == "/api/chat":
            return "generate"
        if method == "GET" and path == "/api/tags":
            return "models"
        if (method, path) in (("POST", "/api/show"), ("GET", "/api/ps")):
            return "side"
        return None

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        if api_key is None or req.headers.get("authorization") == f"Bearer {api_key}":
            return None
        return 401, {"error": "unauthorized"}

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        body = req.json
        if not isinstance(body, dict):
            return 400, {"error": "invalid request body"}
        if not body.get("model"):
            return 400, {"error": "model is required"}
        messages = body.get("messages", [])
        if not isinstance(messages, list):
            return 400, {"error": "messages must be an array"}
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in self.ROLES:
                return 400, {"error": "invalid message role"}
        for m in messages:
            problem = _message_problem(m)
            if problem is not None:
                return 400, {"error": problem}
        options = body.get("options", {})
        if not isinstance(options, dict):
            return 400, {"error": "options must be an object"}
        problem = _options_problem(options) or _tools_problem(body.get("tools"))
        if problem is None and body.get("format", "") not in ("", "json") and not isinstance(body.get("format"), dict):
            problem = 'invalid format: expected "json" or a valid JSON schema'
        return None if problem is None else (400, {"error": problem})

    def wants_stream(self, req: RecordedRequest) -> bool:
        body = req.json if isinstance(req.json, dict) else {}
        return body.get("stream", True) is not False

    def stream_content_type(self, req: RecordedRequest) -> str:
        return "application/x-ndjson"

    def finish(self, name: str) -> str:
        if name == "filter":
            raise ValueError("Ollama has no content-filter finish reason")
        return super().finish(name)

    def error(
        self,
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        model: str = "",
    ) -> Any:
        default = {
            404: f'model "{model}" not found, try pulling it first',
            400: "invalid request",
            429: "too many requests",
            502: "bad gateway",
        }.get(status, "the model failed to generate a response")
        return {"error": message or default}

    def _stats(self, t: Turn) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "total_duration": 174560334,
            "load_duration": 101397084,
            "prompt_eval_duration": 13074791,
            "eval_duration": 52479709,
        }
        if t.usage is not None:
            stats["prompt_eval_count"] = t.usage.input_tokens
            stats["eval_count"] = t.usage.output_tokens
        return stats

    def reply(self, t: Turn) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": t.text}
        calls = self._tool_calls(t)
        if calls:
            message["tool_calls"] = calls
        return {
            "model": t.model,
            "created_at": now_iso(),
            "message": message,
            "done": True,
            "done_reason": t.finish,
            **self._stats(t),
        }

    def missing_fields(self, t: Turn) -> Any:
        return {"model": t.model, "created_at": now_iso()}

    def stream(self, t: Turn) -> Frames:
        def line(obj: Any) -> bytes:
            return dumps(obj) + b"\n"

        deltas = [
            line(
                {
                    "model": t.model,
                    "created_at": now_iso(),
                    "message": {"role": "assistant", "content": c},
                    "done": False,
                }
            )
            for c in t.chunks
        ]
        calls = [
            line({"model": t.model, "created_at": now_iso(),
                  "message": {"role": "assistant", "content": "", "tool_calls": [c]}, "done": False})
            for c in self._tool_calls(t)
        ]
        cut = t.step.after_chunks - len(deltas) - 1  # the call line a cut_stream or stall ends on
        if t.step.fault in ("cut_stream", "stall") and not t.step.clean_eof and 0 <= cut < len(calls):
            calls[cut] = calls[cut][: calls[cut].index(b'"arguments":') + len(b'"arguments":') + 1]
        final = line(
            {
                "model": t.model,
                "created_at": now_iso(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": t.finish,
                **self._stats(t),
            }
        )
        return Frames([], deltas + calls, [final])

    def malformed_frame(self) -> bytes:
        return b'{"model": "x", "message": {"role": "assistant", "content": \n'

    def stream_error_frame(self, t: Turn) -> bytes:
        return dumps({"error": t.step.message or "an error was encountered while running the model"}) + b"\n"

    def _tool_calls(self, t: Turn) -> list[Any]:
        """The calls an answer carries: ``Step.tool_calls`` as given (arguments an object, or raw
        text sent as a JSON string), else one call of ``tool_name`` for a ``tool_call`` step."""
        step = t.step
        if step.tool_calls is not None:
            return [{"function": {"name": name, "arguments": args}} for name, args in step.tool_calls]
        if step.fault == "tool_call":
            return [{"function": {"name": step.tool_name, "arguments": TOOL_ARGS}}]
        return []

    def tool_reply(self, t: Turn) -> Any:
        return self.reply(t)

    def tool_stream(self, t: Turn) -> Frames:
        return self.stream(t)

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        # Ollama says by how much, never the window itself.
        return {"error": f"prompt too long; exceeded max context length by {prompt - window} tokens"}

    def models(self, names: list[str]) -> Any:
        return {
            "models": [
                {
                    "name": n,
                    "model": n,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 3338801804,
                    "digest": "0" * 64,
                    "details": {
                        "format": "gguf",
                        "family": "llama",
                        "families": ["llama"],
                        "parameter_size": "1B",
                        "quantization_level": "Q4_K_M",
                    },
                }
                for n in names
            ]
        }

    def not_found(self, req: RecordedRequest) -> tuple[int, bytes, str]:
        return 404, b"404 page not found", "text/plain"


def _message_problem(m: dict[str, Any]) -> str | None:
    """What Ollama's decoder refuses in one message (its Go types: ``content`` and ``tool_name``
    strings, ``images`` base64 bytes, ``tool_calls`` with an ``arguments`` object)."""
    for name in ("content", "tool_name"):
        if name in m and not isinstance(m[name], str):
            return f"json: cannot unmarshal {type(m[name]).__name__} into Go struct field Message.messages.{name} of type string"
    images = m.get("images", [])
    if not isinstance(images, list):
        return "json: cannot unmarshal images into Go struct field Message.messages.images of type []api.ImageData"
    for image in images:
        bad = _bad_base64_at(image)
        if bad is not None:
            return f"illegal base64 data at input byte {bad}"
    calls = m.get("tool_calls", [])
    if not isinstance(calls, list):
        return "json: cannot unmarshal tool_calls into Go struct field Message.messages.tool_calls of type []api.ToolCall"
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return "json: cannot unmarshal a tool call without function.name"
        if not isinstance(function.get("arguments", {}), dict):
            return ("json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls.function"
                    ".arguments of type api.ToolCallFunctionArguments")
    return None


def _bad_base64_at(image: Any) -> int | None:
    """Where standard base64 ``image`` first goes wrong (None: it decodes), as Go reports it."""
    if not isinstance(image, str):
        return 0
    try:
        base64.b64decode(image, validate=True)
        return None
    except (binascii.Error, ValueError):
        alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        return next((i for i, ch in enumerate(image) if ch not in alphabet), len(image))


def _options_problem(options: dict[str, Any]) -> str | None:
    """Ollama's ``Options.FromMap`` checks for the options the router sends."""
    if "stop" in options and not (
        isinstance(options["stop"], list) and all(isinstance(x, str) for x in options["stop"])
    ):
        return 'option "stop" must be of an array of strings'
    for name in ("temperature", "top_p"):
        if name in options and (type(options[name]) not in (int, float)):
            return f'option "{name}" must be of type float32'
    for name in ("num_predict", "seed"):
        if name in options and type(options[name]) is not int:
            return f'option "{name}" must be of type integer'
    return None


def _tools_problem(tools: Any) -> str | None:
    """``tools`` as Ollama's ``api.Tool`` list: ``{"type": "function", "function": {name, parameters}}``."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "json: cannot unmarshal tools into Go struct field ChatRequest.tools of type api.Tools"
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if (not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict)
                or not isinstance(function.get("name"), str) or not isinstance(function.get("parameters", {}), dict)):
            return "invalid tool definition: expected type function with a function name and parameters object"
    return None
