"""The fake OpenAI Chat Completions API, and the llama.cpp and llama-cpp-python servers that speak
it (see README.md for the documentation it follows)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable
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
    split_text,
)

_Bad = Callable[..., tuple[int, Any]]
"""``validate``'s ``bad(message, param=None, code=None)``: a 400 with OpenAI's error body."""
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_IMAGE_TYPES = ("png", "jpeg", "gif", "webp")
_DATA_URL = re.compile(r"^data:image/([a-z]+);base64,(.*)$", re.DOTALL)
# Strict structured outputs take a subset of JSON Schema (guide "Structured model outputs").
_NOT_STRICT = ("allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
               "patternProperties", "unevaluatedProperties", "propertyNames", "minProperties",
               "maxProperties", "contains", "uniqueItems", "default")
IMAGE_ERRORS: dict[str, str] = {
    "invalid_image_format": (
        "You uploaded an unsupported image. Please make sure your image has of one the following "
        "formats: ['png', 'jpeg', 'gif', 'webp']."
    ),
    "image_parse_error": "You uploaded an unsupported image. Please make sure your image is valid.",
    "invalid_image_url": "Timeout while downloading the image.",
}
"""OpenAI's 400s for an image it cannot take (``code`` → message): a type it does not read,
bytes that are no image, a URL it could not fetch. ``Step(fault="status", status=400,
code=...)`` sends one."""


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
        return self._validate_rich(body, messages, bad)

    def _validate_rich(self, body: dict[str, Any], messages: list[Any], bad: _Bad) -> tuple[int, Any] | None:
        """Content parts and images, tool calls and tool results, tools, tool_choice,
        response_format, stop, top_p and seed, as the API reference and its errors describe them."""
        for i, m in enumerate(messages):
            problem = self._check_message(i, m, messages, bad)
            if problem is not None:
                return problem
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list) or not tools:
                return bad("Invalid 'tools': empty array. Expected an array with minimum length 1.", "tools",
                           "empty_array")
            for i, tool in enumerate(tools):
                function = tool.get("function") if isinstance(tool, dict) else None
                if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
                    return bad(f"Missing required parameter: 'tools[{i}].function'.", f"tools[{i}].function",
                               "missing_required_parameter")
                name = function.get("name")
                if not isinstance(name, str) or not _NAME.match(name):
                    return bad(f"Invalid 'tools[{i}].function.name': string does not match pattern. Expected a "
                               "string that matches the pattern '^[a-zA-Z0-9_-]+$'.", f"tools[{i}].function.name",
                               "invalid_value")
                if "parameters" in function and not isinstance(function["parameters"], dict):
                    return bad(f"Invalid type for 'tools[{i}].function.parameters': expected an object.",
                               f"tools[{i}].function.parameters", "invalid_type")
        choice = body.get("tool_choice")
        if choice is not None:
            if tools is None:
                return bad("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                           "specified.", "tool_choice")
            named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
            if choice not in ("none", "auto", "required") and not (
                isinstance(choice, dict) and choice.get("type") == "function" and isinstance(named, str)
            ):
                return bad("Invalid value for 'tool_choice'.", "tool_choice", "invalid_value")
        problem = self._check_format(body, messages, bad)
        if problem is not None:
            return problem
        stop = body.get("stop")
        if isinstance(stop, list) and len(stop) > 4:
            return bad(f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an "
                       f"array with length {len(stop)} instead.", "stop", "array_above_max_length")
        if stop is not None and not isinstance(stop, (str, list)):
            return bad("Invalid type for 'stop': expected a string or an array of strings.", "stop", "invalid_type")
        top_p = body.get("top_p")
        if top_p is not None and not (isinstance(top_p, (int, float)) and 0 <= top_p <= 1):
            return bad(f"Invalid 'top_p': decimal above maximum value. Expected a value <= 1, but got {top_p} "
                       "instead.", "top_p", "decimal_above_max_value")
        seed = body.get("seed")
        if seed is not None and type(seed) is not int:
            return bad("Invalid type for 'seed': expected an integer.", "seed", "invalid_type")
        return None

    def _check_message(self, i: int, m: dict[str, Any], messages: list[Any], bad: _Bad) -> tuple[int, Any] | None:
        role, content = m.get("role"), m.get("content")
        if isinstance(content, list):
            allowed: tuple[str, ...] = {"user": ("text", "image_url"), "assistant": ("text", "refusal")}.get(
                str(role), ("text",))
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in allowed:
                    return bad(f"Invalid value: '{kind}'. Supported values are: {allowed}.",
                               f"messages[{i}].content[{j}].type", "invalid_value")
                if kind == "image_url":
                    url = (part.get("image_url") or {}).get("url")
                    problem = self._check_image(url, f"messages[{i}].content[{j}].image_url.url", bad)
                    if problem is not None:
                        return problem
        elif content is None and not (role == "assistant" and m.get("tool_calls")):
            return bad(f"Invalid value for 'messages[{i}].content': expected a string, got null.",
                       f"messages[{i}].content", "invalid_type")
        if role == "tool":
            if not isinstance(m.get("tool_call_id"), str):
                return bad(f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                           f"messages[{i}].tool_call_id", "missing_required_parameter")
            if m["tool_call_id"] not in _open_calls(messages, i):
                return bad("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                           "message with 'tool_calls'.", f"messages.[{i}].role")
        calls = m.get("tool_calls")
        if role == "assistant" and calls is not None:
            for j, call in enumerate(calls if isinstance(calls, list) else [None]):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(call.get("id"), str) or call.get("type") != "function":
                    return bad(f"Missing required parameter: 'messages[{i}].tool_calls[{j}].function'.",
                               f"messages[{i}].tool_calls[{j}]", "missing_required_parameter")
                if not isinstance(function.get("arguments"), str):
                    return bad(f"Invalid type for 'messages[{i}].tool_calls[{j}].function.arguments': expected a "
                               "string, but got an object instead.", f"messages[{i}].tool_calls[{j}].function.arguments",
                               "invalid_type")
            answered = {n.get("tool_call_id") for n in _tool_run(messages, i + 1)}
            missing = [c["id"] for c in calls if c["id"] not in answered]
            if missing:
                return bad("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                           "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                           + ", ".join(missing), f"messages.[{i}].role")
        return None

    def _check_image(self, url: Any, param: str, bad: _Bad) -> tuple[int, Any] | None:
        if not isinstance(url, str):
            return bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
        if url.startswith(("https://", "http://")):
            return None
        found = _DATA_URL.match(url)
        if found is None or found.group(1) not in _IMAGE_TYPES:
            return bad(IMAGE_ERRORS["invalid_image_format"], None, "invalid_image_format")
        try:
            base64.b64decode(found.group(2), validate=True)
        except (binascii.Error, ValueError):
            return bad(IMAGE_ERRORS["image_parse_error"], None, "image_parse_error")
        return None

    def _check_format(self, body: dict[str, Any], messages: list[Any], bad: _Bad) -> tuple[int, Any] | None:
        fmt = body.get("response_format")
        if fmt is None:
            return None
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_object":
            said = any("json" in json.dumps(m.get("content")).lower() for m in messages)
            if not said:
                return bad("'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                           "'json_object'.", "messages")
            return None
        if kind != "json_schema":
            return None if kind == "text" else bad(f"Invalid value: '{kind}'.", "response_format.type", "invalid_value")
        spec = fmt.get("json_schema")
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not _NAME.match(name):
            return bad("Missing required parameter: 'response_format.json_schema.name'.",
                       "response_format.json_schema.name", "missing_required_parameter")
        if spec.get("strict") is True:
            why = _strict_problem(spec.get("schema"), ())
            if why is not None:
                return bad(f"Invalid schema for response_format '{name}': {why}", "response_format",
                           "invalid_json_schema")
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
        message: dict[str, Any] = {"role": "assistant", "content": t.text, "refusal": None}
        if t.step.flavor == "refusal":  # a structured-output request the model declined
            message.update(content=None, refusal=t.text)
        body["choices"] = [
            {
                "index": 0,
                "message": message,
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
        if t.step.tool_calls is not None:  # a cut or stalled stream of tool calls
            return self.tool_stream(t)
        return self._text_stream(t)

    def _text_stream(self, t: Turn) -> Frames:
        head = [self._frame(t, self._choice({"role": "assistant", "content": "", "refusal": None}))]
        field = "refusal" if t.step.flavor == "refusal" else "content"
        deltas = [self._frame(t, self._choice({field: c})) for c in t.chunks]
        tail = [self._frame(t, self._choice({}, t.finish))]
        if self._include_usage(t) and t.usage is not None and not self.llama_cpp:
            tail.append(self._frame(t, [], self._usage(t.usage)))
        tail.append(b"data: [DONE]\n\n")
        return Frames(head, deltas, tail)

    @staticmethod
    def _calls(t: Turn) -> list[tuple[str, str, str]]:
        """``(id, name, arguments as sent)`` of each call a tool answer makes: ``Step.tool_calls``
        (text arguments sent as given, to test broken ones), else one of ``tool_name``."""
        calls = t.step.tool_calls if t.step.tool_calls is not None else ((t.step.tool_name, TOOL_ARGS),)
        return [
            (f"call_fake{t.seq:06d}" + (f"_{i}" if i else ""), name, args if isinstance(args, str) else json.dumps(args))
            for i, (name, args) in enumerate(calls)
        ]

    def tool_reply(self, t: Turn) -> Any:
        body = self.reply(t)
        calls = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            for call_id, name, args in self._calls(t)
        ]
        body["choices"][0]["message"].update(content=t.text or None, tool_calls=calls)
        body["choices"][0]["finish_reason"] = "tool_calls"
        return body

    def tool_stream(self, t: Turn) -> Frames:
        """Each call as OpenAI streams it: a first piece with its ``index``, ``id``, ``type`` and
        name (arguments empty), then its arguments in pieces, by ``index`` alone."""
        frames = self._text_stream(replace(t, finish="tool_calls"))
        calls: list[bytes] = []
        for index, (call_id, name, args) in enumerate(self._calls(t)):
            first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            calls.append(self._frame(t, self._choice({"content": None, "tool_calls": [first]} if index == 0
                                                     else {"tool_calls": [first]})))
            pieces = TOOL_ARGS_PIECES if args == json.dumps(TOOL_ARGS) else split_text(args, 2)
            calls += [
                self._frame(t, self._choice({"tool_calls": [{"index": index, "function": {"arguments": p}}]}))
                for p in pieces
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


def _tool_run(messages: list[Any], start: int) -> list[dict[str, Any]]:
    """The tool messages in a row from ``start``."""
    run: list[dict[str, Any]] = []
    for m in messages[start:]:
        if not isinstance(m, dict) or m.get("role") != "tool":
            break
        run.append(m)
    return run


def _open_calls(messages: list[Any], i: int) -> set[Any]:
    """The ids a tool message at ``i`` may answer: those of the assistant turn before the tool
    messages just above it (none when there is no such turn)."""
    j = i - 1
    while j >= 0 and isinstance(messages[j], dict) and messages[j].get("role") == "tool":
        j -= 1
    if j < 0 or not isinstance(messages[j], dict) or messages[j].get("role") != "assistant":
        return set()
    calls = messages[j].get("tool_calls")
    return {c.get("id") for c in calls if isinstance(c, dict)} if isinstance(calls, list) else set()


def _strict_problem(schema: Any, context: tuple[str, ...]) -> str | None:
    """Why OpenAI refuses ``schema`` under ``strict: true``, in its words; None when it takes it."""
    where = f"In context={context}, "
    if not isinstance(schema, dict):
        return f"{where}schema must be a JSON Schema object."
    if not context and schema.get("type") != "object":
        return f"{where}schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{schema.get('type')}\"'."
    for keyword in _NOT_STRICT:
        if keyword in schema:
            return f"{where}'{keyword}' is not permitted."
    kind = schema.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"{where}'additionalProperties' is required to be supplied and to be false."
        props = schema.get("properties") or {}
        missing = [k for k in props if k not in (schema.get("required") or [])]
        if missing:
            return (f"{where}'required' is required to be supplied and to be an array including every key in "
                    f"properties. Missing '{missing[0]}'.")
        for key, sub in props.items():
            if (why := _strict_problem(sub, (*context, "properties", key))) is not None:
                return why
    subs: list[tuple[tuple[str, ...], Any]] = []
    if "items" in schema:
        subs.append(((*context, "items"), schema["items"]))
    for n, sub in enumerate(schema.get("anyOf") or ()):
        subs.append(((*context, "anyOf", str(n)), sub))
    for key, sub in (schema.get("$defs") or {}).items():
        subs.append(((*context, "$defs", key), sub))
    for where_sub, sub in subs:
        if (why := _strict_problem(sub, where_sub)) is not None:
            return why
    return None
