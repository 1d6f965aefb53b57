"""The fake Anthropic Messages API (see README.md for the documentation it follows)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from .dialect import (
    TOOL_ARGS,
    TOOL_ARGS_PIECES,
    Dialect,
    Endpoint,
    Frames,
    RecordedRequest,
    Turn,
    Usage,
    dumps,
    text_blocks,
)


class AnthropicDialect(Dialect):
    """Anthropic Messages API: docs 'Messages', 'Streaming Messages', 'Errors', 'List Models'."""

    kind = "anthropic"
    finish_names: ClassVar[dict[str, str]] = {"stop": "end_turn", "length": "max_tokens", "filter": "refusal"}
    supports_stream_error = True
    stream_error_status = 529
    ERROR_TYPES: ClassVar[dict[int, str]] = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }
    MESSAGES: ClassVar[dict[str, str]] = {
        "invalid_request_error": "Invalid request",
        "authentication_error": "invalid x-api-key",
        "permission_error": "Your API key does not have permission to use the specified resource.",
        "not_found_error": "Not found",
        "request_too_large": "Request exceeds the maximum allowed number of bytes.",
        "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
        "api_error": "Internal server error",
        "overloaded_error": "Overloaded",
    }

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and path == "/v1/messages":
            return "generate"
        if method == "GET" and path == "/v1/models":
            return "models"
        return None

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        got = req.headers.get("x-api-key")
        if api_key is not None and got is None:
            return 401, self.error(401, message="x-api-key header is required")
        if api_key is not None and got != api_key:
            return 401, self.error(401, message="invalid x-api-key")
        if "anthropic-version" not in req.headers:
            return 400, self.error(400, message="anthropic-version: header is required")
        return None

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        body = req.json

        def bad(msg: str) -> tuple[int, Any]:
            return 400, self.error(400, message=msg)

        if not isinstance(body, dict):
            return bad("Request body must be a JSON object")
        if not isinstance(body.get("model"), str):
            return bad("model: Field required")
        if not isinstance(body.get("max_tokens"), int):
            return bad("max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return bad("messages: Field required")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                return bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        system = body.get("system")
        if system is not None and not isinstance(system, str) and not text_blocks(system):
            return bad("system: Input should be a valid string or a list of text blocks")
        temperature = body.get("temperature")
        if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 1):
            return bad("temperature: Input should be less than or equal to 1")
        return None

    def error(
        self,
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        model: str = "",
    ) -> Any:
        etype = (
            error_type
            or self.ERROR_TYPES.get(status)
            or ("invalid_request_error" if status < 500 else "api_error")
        )
        return {
            "type": "error",
            "error": {"type": etype, "message": message or self.MESSAGES.get(etype, etype)},
            "request_id": "req_fake_error",
        }

    def headers(self, seq: int) -> dict[str, str]:
        return {"request-id": f"req_fake{seq:06d}"}

    @staticmethod
    def _usage(u: Usage, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": u.input_tokens,
            "cache_creation_input_tokens": u.cache_write_tokens,
            "cache_read_input_tokens": u.cached_tokens,
            "output_tokens": output_tokens,
        }

    def _message(self, t: Turn, content: list[Any], stop_reason: str | None, output_tokens: int) -> Any:
        msg: dict[str, Any] = {
            "id": f"msg_fake{t.seq:06d}",
            "type": "message",
            "role": "assistant",
            "model": t.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }
        if t.usage is not None:
            msg["usage"] = self._usage(t.usage, output_tokens)
        return msg

    def reply(self, t: Turn) -> Any:
        content = [{"type": "text", "text": t.text}] if t.text else []
        return self._message(t, content, t.finish, t.usage.output_tokens if t.usage else 0)

    def missing_fields(self, t: Turn) -> Any:
        return {"id": f"msg_fake{t.seq:06d}", "type": "message"}

    @staticmethod
    def _event(name: str, data: Any) -> bytes:
        return f"event: {name}\ndata: ".encode() + dumps(data) + b"\n\n"

    def stream(self, t: Turn) -> Frames:
        # message_start carries input usage and a provisional output count; message_delta's
        # usage is cumulative (docs), so a client must replace, not add.
        start_out = min(1, t.usage.output_tokens) if t.usage else 0
        head = [
            self._event(
                "message_start", {"type": "message_start", "message": self._message(t, [], None, start_out)}
            )
        ]
        deltas: list[bytes] = []
        tail: list[bytes] = []
        if t.chunks:
            head.append(
                self._event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            head.append(self._event("ping", {"type": "ping"}))
            deltas = [
                self._event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}},
                )
                for c in t.chunks
            ]
            tail.append(self._event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": t.finish, "stop_sequence": None},
        }
        if t.usage is not None:
            delta["usage"] = {"output_tokens": t.usage.output_tokens}
        tail.append(self._event("message_delta", delta))
        tail.append(self._event("message_stop", {"type": "message_stop"}))
        return Frames(head, deltas, tail)

    def malformed_frame(self) -> bytes:
        return b'event: message_start\ndata: {"type": "message_start", "message": \n\n'

    def _tool_block(self, t: Turn) -> dict[str, Any]:
        return {"type": "tool_use", "id": f"toolu_fake{t.seq:06d}", "name": t.step.tool_name, "input": TOOL_ARGS}

    def tool_reply(self, t: Turn) -> Any:
        content = ([{"type": "text", "text": t.text}] if t.text else []) + [self._tool_block(t)]
        return self._message(t, content, "tool_use", t.usage.output_tokens if t.usage else 0)

    def tool_stream(self, t: Turn) -> Frames:
        frames = self.stream(replace(t, finish="tool_use"))
        index = 1 if t.chunks else 0
        block = {**self._tool_block(t), "input": {}}
        tool = [self._event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})]
        tool += [
            self._event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}},
            )
            for p in TOOL_ARGS_PIECES
        ]
        tool.append(self._event("content_block_stop", {"type": "content_block_stop", "index": index}))
        return Frames(frames.head, frames.deltas, frames.tail[:-2] + tool + frames.tail[-2:])

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        return self.error(400, message=f"prompt is too long: {prompt} tokens > {window} maximum")

    def stream_error_frame(self, t: Turn) -> bytes:
        etype = t.step.error_type or "overloaded_error"
        return self._event(
            "error",
            {
                "type": "error",
                "error": {"type": etype, "message": t.step.message or self.MESSAGES.get(etype, etype)},
            },
        )

    def models(self, names: list[str]) -> Any:
        data = [
            {"type": "model", "id": n, "display_name": n, "created_at": "2025-01-01T00:00:00Z"} for n in names
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
