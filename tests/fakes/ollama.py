"""The fake Ollama /api/chat API (see README.md for the documentation it follows)."""

from __future__ import annotations

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
        if not isinstance(body.get("options", {}), dict):
            return 400, {"error": "options must be an object"}
        return None

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
        return {
            "model": t.model,
            "created_at": now_iso(),
            "message": {"role": "assistant", "content": t.text},
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
        return Frames([], deltas, [final])

    def malformed_frame(self) -> bytes:
        return b'{"model": "x", "message": {"role": "assistant", "content": \n'

    def stream_error_frame(self, t: Turn) -> bytes:
        return dumps({"error": t.step.message or "an error was encountered while running the model"}) + b"\n"

    def _tool_calls(self, t: Turn) -> list[Any]:
        return [{"function": {"name": t.step.tool_name, "arguments": TOOL_ARGS}}]

    def tool_reply(self, t: Turn) -> Any:
        body = self.reply(t)
        body["message"]["tool_calls"] = self._tool_calls(t)
        return body

    def tool_stream(self, t: Turn) -> Frames:
        frames = self.stream(t)
        call = {"model": t.model, "created_at": now_iso(),
                "message": {"role": "assistant", "content": "", "tool_calls": self._tool_calls(t)}, "done": False}
        return Frames(frames.head, frames.deltas + [dumps(call) + b"\n"], frames.tail)

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
