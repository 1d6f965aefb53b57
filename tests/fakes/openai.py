"""The fake OpenAI Chat Completions API, and the llama.cpp and llama-cpp-python servers that speak
it (see README.md for the documentation it follows)."""

from __future__ import annotations

import json
import time
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
)


class OpenAIDialect(Dialect):
    """OpenAI Chat Completions: API reference 'Create chat completion', 'The chat completion
    chunk object' (stream_options.include_usage), 'List models', guide 'Error codes'."""

    kind = "openai"
    finish_names: ClassVar[dict[str, str]] = {"stop": "stop", "length": "length", "filter": "content_filter"}
    ROLES: ClassVar[tuple[str, ...]] = ("system", "developer", "user", "assistant", "tool", "function")

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and path == f"{self.base_path}/chat/completions":
            return "generate"
        if method == "GET" and path == f"{self.base_path}/models":
            return "models"
        if self.llama_cpp_python and (method, path) in (("POST", "/extras/tokenize"), ("POST", "/extras/tokenize/count")):
            return "side"
        if self.llama_cpp and not self.llama_cpp_python and (method, path) in (("GET", "/props"), ("POST", "/tokenize")):
            return "side"
        return None

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        if api_key is None:
            return None
        header = req.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return 401, self.error(
                401,
                code=None,
                message=(
                    "You didn't provide an API key. You need to provide your API key in an Authorization "
                    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                ),
            )
        got = header[len("Bearer ") :]
        if got != api_key:
            masked = f"{got[:3]}****{got[-4:]}" if len(got) > 8 else "****"
            return 401, self.error(
                401,
                code="invalid_api_key",
                message=(
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys."
                ),
            )
        return None

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        body = req.json

        def bad(msg: str, param: str | None = None, code: str | None = None) -> tuple[int, Any]:
            err = self.error(400, message=msg, code=code)
            err["error"]["param"] = param
            return 400, err

        if not isinstance(body, dict):
            return bad("We could not parse the JSON body of your request.")
        if not isinstance(body.get("model"), str):
            return bad("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in self.ROLES:
                role = m.get("role") if isinstance(m, dict) else None
                return bad(
                    f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                    "'user', 'tool', and 'function'.",
                    f"messages[{i}].role",
                    "invalid_value",
                )
        temperature = body.get("temperature")
        if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
            return bad(
                f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
                f"but got {temperature} instead.",
                "temperature",
                "decimal_above_max_value",
            )
        if body.get("stream_options") is not None and body.get("stream") is not True:
            return bad(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
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
        param: str | None = None
        if status == 401:
            etype, code = "invalid_request_error", code
            message = message or "Incorrect API key provided."
        elif status == 404:
            etype, code = "invalid_request_error", code or "model_not_found"
            message = message or f"The model `{model}` does not exist or you do not have access to it."
        elif status == 429 and (error_type == "insufficient_quota" or code == "insufficient_quota"):
            etype, code = "insufficient_quota", "insufficient_quota"
            message = message or (
                "You exceeded your current quota, please check your plan and billing details."
            )
        elif status == 429:
            etype, code = "requests", code or "rate_limit_exceeded"
            message = message or f"Rate limit reached for {model or 'model'} on requests per min (RPM)."
        elif code == "context_length_exceeded":
            etype, param = "invalid_request_error", "messages"
            message = message or (
                "This model's maximum context length is 128000 tokens. However, "
                "your messages resulted in 130000 tokens. Please reduce the length "
                "of the messages."
            )
        elif status >= 500:
            etype = "server_error"
            message = message or ("The server had an error while processing your request. Sorry about that!")
        else:
            etype = "invalid_request_error"
            message = message or "Invalid request."
        return {"error": {"message": message, "type": error_type or etype, "param": param, "code": code}}

    def headers(self, seq: int) -> dict[str, str]:
        return {"x-request-id": f"req_fake{seq:06d}"}

    @staticmethod
    def _usage(u: Usage) -> dict[str, Any]:
        prompt = u.input_tokens + u.cached_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": u.output_tokens,
            "total_tokens": prompt + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _base(self, t: Turn, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake{t.seq:06d}",
            "object": obj,
            "created": int(time.time()),
            "model": t.model,
            "system_fingerprint": "fp_fake",
        }

    def reply(self, t: Turn) -> Any:
        body = self._base(t, "chat.completion")
        body["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": t.text, "refusal": None},
                "logprobs": None,
                "finish_reason": t.finish,
            }
        ]
        if t.usage is not None:
            body["usage"] = self._usage(t.usage)
        return body

    def missing_fields(self, t: Turn) -> Any:
        return {"id": f"chatcmpl-fake{t.seq:06d}", "object": "chat.completion", "model": t.model}

    llama_cpp = False
    """Speak as llama.cpp's server does: no usage in streams, even when include_usage asks."""
    llama_cpp_python = False
    """Speak as llama-cpp-python's server does (no usage in streams either; its own side endpoints)."""

    def _include_usage(self, t: Turn) -> bool:
        opts = (t.req.json or {}).get("stream_options") or {}
        return isinstance(opts, dict) and opts.get("include_usage") is True

    def _frame(self, t: Turn, choices: list[Any], usage: Any = None) -> bytes:
        body = self._base(t, "chat.completion.chunk")
        body["choices"] = choices
        if self._include_usage(t) and not self.llama_cpp:  # docs: every other chunk carries "usage": null
            body["usage"] = usage
        return b"data: " + dumps(body) + b"\n\n"

    @staticmethod
    def _choice(delta: dict[str, Any], finish: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    def stream(self, t: Turn) -> Frames:
        head = [self._frame(t, self._choice({"role": "assistant", "content": "", "refusal": None}))]
        deltas = [self._frame(t, self._choice({"content": c})) for c in t.chunks]
        tail = [self._frame(t, self._choice({}, t.finish))]
        if self._include_usage(t) and t.usage is not None and not self.llama_cpp:
            tail.append(self._frame(t, [], self._usage(t.usage)))
        tail.append(b"data: [DONE]\n\n")
        return Frames(head, deltas, tail)

    def tool_reply(self, t: Turn) -> Any:
        body = self.reply(t)
        call = {
            "id": f"call_fake{t.seq:06d}",
            "type": "function",
            "function": {"name": t.step.tool_name, "arguments": json.dumps(TOOL_ARGS)},
        }
        body["choices"][0]["message"].update(content=t.text or None, tool_calls=[call])
        body["choices"][0]["finish_reason"] = "tool_calls"
        return body

    def tool_stream(self, t: Turn) -> Frames:
        frames = self.stream(replace(t, finish="tool_calls"))
        first = {"index": 0, "id": f"call_fake{t.seq:06d}", "type": "function",
                 "function": {"name": t.step.tool_name, "arguments": ""}}
        calls = [self._frame(t, self._choice({"content": None, "tool_calls": [first]}))]
        calls += [
            self._frame(t, self._choice({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
            for p in TOOL_ARGS_PIECES
        ]
        return Frames(frames.head, frames.deltas + calls, frames.tail)

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        flavor = flavor or ("llama-cpp-python" if self.llama_cpp_python else "llama.cpp" if self.llama_cpp else "openai")
        if flavor == "llama.cpp":  # server-task.cpp: the numbers ride beside the message
            message = f"request ({prompt} tokens) exceeds the available context size ({window} tokens), try increasing it"
            return {"error": {"code": 400, "message": message, "type": "exceed_context_size_error",
                              "n_prompt_tokens": prompt, "n_ctx": window}}
        if flavor == "llama.cpp-old":  # older servers said neither number
            message = "the request exceeds the available context size, try increasing it"
            return {"error": {"code": 400, "message": message, "type": "exceed_context_size_error"}}
        if flavor == "llama-cpp-python":  # llama_cpp/server/errors.py: requested = prompt + max_tokens
            message = (
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion."
            )
            return {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                              "code": "context_length_exceeded"}}
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages resulted in "
            f"{prompt} tokens. Please reduce the length of the messages."
        )
        return {"error": {"message": message, "type": "invalid_request_error", "param": "messages",
                          "code": "context_length_exceeded"}}

    def models(self, names: list[str]) -> Any:
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 1700000000, "owned_by": "system"} for n in names
            ],
        }

    def not_found(self, req: RecordedRequest) -> tuple[int, bytes, str]:
        err = self.error(404, message=f"Invalid URL ({req.method} {req.path})", code=None)
        err["error"]["code"] = None
        return 404, dumps(err), "application/json"
