"""The fake Gemini generateContent API (see README.md for the documentation it follows)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, ClassVar

from .dialect import (
    TOOL_ARGS,
    Dialect,
    Endpoint,
    Frames,
    RecordedRequest,
    Turn,
    Usage,
    dumps,
    text_of,
)

BAD_IMAGE_MESSAGE = "Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
"""What Gemini answers (400 INVALID_ARGUMENT) for image bytes it cannot read: the message of a
``Step(fault="status", status=400, message=BAD_IMAGE_MESSAGE)``."""
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
"""The image types the image-understanding guide lists (no image/gif)."""
GENERATION_CONFIG = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
    "thinkingConfig", "mediaResolution",
})
"""``GenerationConfig``'s fields (API reference, 'Generating content')."""
SCHEMA_FIELDS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})
"""``Schema``'s fields (API reference, 'Caching' / 'Schema'): anything else is an unknown name."""
SCHEMA_TYPES = frozenset({"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
PART_DATA = ("text", "inlineData", "functionCall", "functionResponse", "fileData", "executableCode",
             "codeExecutionResult")
CALLING_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")


def _schema_problem(schema: Any, where: str) -> str | None:
    """The 400 message for a ``Schema`` Gemini would refuse, or None."""
    if not isinstance(schema, dict):
        return f"Invalid value at '{where}' (type.googleapis.com/google.ai.generativelanguage.v1beta.Schema)"
    for key in schema:
        if key not in SCHEMA_FIELDS:
            return f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': Cannot find field.'
    if "type" in schema and schema["type"] not in SCHEMA_TYPES:
        return f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), {json_str(schema['type'])}"
    if "enum" in schema and not (isinstance(schema["enum"], list) and all(isinstance(v, str) for v in schema["enum"])):
        return f"Invalid value at '{where}.enum' (TYPE_STRING)"
    # Three shapes the API refuses though each field is known (its schema validation).
    if "type" not in schema and "anyOf" not in schema:
        return f"* GenerateContentRequest.{where}.type: must be specified"
    if schema.get("type") == "ARRAY" and "items" not in schema:
        return f"* GenerateContentRequest.{where}.items: missing field."
    if schema.get("type") == "OBJECT" and not schema.get("properties"):
        return f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type"
    subs: list[tuple[Any, str]] = []
    if isinstance(schema.get("properties"), dict):
        subs += [(v, f"{where}.properties[{k}].value") for k, v in schema["properties"].items()]
    if "items" in schema:
        subs.append((schema["items"], f"{where}.items"))
    if isinstance(schema.get("anyOf"), list):
        subs += [(v, f"{where}.any_of[{i}]") for i, v in enumerate(schema["anyOf"])]
    for sub, at in subs:
        problem = _schema_problem(sub, at)
        if problem:
            return problem
    return None


def json_str(value: Any) -> str:
    return dumps(value).decode()


class GeminiDialect(Dialect):
    """Gemini API: reference 'Generating content' (generateContent, streamGenerateContent with
    alt=sse), 'GenerateContentResponse' (PromptFeedback, UsageMetadata), 'Models', and the
    'Troubleshooting' guide's error table."""

    kind = "gemini"
    finish_names: ClassVar[dict[str, str]] = {"stop": "STOP", "length": "MAX_TOKENS", "filter": "SAFETY"}
    STATUSES: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
    MESSAGES: ClassVar[dict[str, str]] = {
        "RESOURCE_EXHAUSTED": "Resource has been exhausted (e.g. check quota).",
        "INTERNAL": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "UNAVAILABLE": "The model is overloaded. Please try again later.",
        "PERMISSION_DENIED": "The caller does not have permission",
        "DEADLINE_EXCEEDED": "Deadline expired before operation could complete.",
    }
    TOP_LEVEL: ClassVar[set[str]] = {
        "contents",
        "systemInstruction",
        "system_instruction",
        "generationConfig",
        "generation_config",
        "safetySettings",
        "safety_settings",
        "tools",
        "toolConfig",
        "tool_config",
        "cachedContent",
        "cached_content",
    }
    PATH: ClassVar[re.Pattern[str]] = re.compile(
        r"^/(v1|v1beta)/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
    )

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and self.PATH.match(path):
            return "generate"
        if method == "GET" and path in ("/v1beta/models", "/v1/models"):
            return "models"
        return None

    def auth_error(self, req: RecordedRequest, api_key: str | None) -> tuple[int, Any] | None:
        if api_key is None:
            return None
        got = req.headers.get("x-goog-api-key", req.query.get("key"))
        if got is None:
            return 403, self.error(
                403,
                message=(
                    "Method doesn't allow unregistered callers (callers without established identity). "
                    "Please use API Key or other form of API consumer identity to call this API."
                ),
            )
        if got != api_key:
            err = self.error(400, message="API key not valid. Please pass a valid API key.")
            err["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ]
            return 400, err
        return None

    def validate(self, req: RecordedRequest) -> tuple[int, Any] | None:
        body = req.json

        def bad(msg: str) -> tuple[int, Any]:
            return 400, self.error(400, message=msg)

        if not isinstance(body, dict):
            return bad("Invalid JSON payload received.")
        unknown = sorted(set(body) - self.TOP_LEVEL)
        if unknown:
            return bad(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return bad("* GenerateContentRequest.contents: contents is not specified")
        for c in contents:
            if not isinstance(c, dict) or not isinstance(c.get("parts"), list):
                return bad("* GenerateContentRequest.contents: parts is not specified")
            if c.get("role") not in (None, "user", "model"):
                return bad("Please use a valid role: user, model.")
        config = body.get("generationConfig", body.get("generation_config")) or {}
        temperature = config.get("temperature") if isinstance(config, dict) else None
        if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
            return bad("* GenerateContentRequest.generation_config.temperature: must be in [0, 2]")
        problem = self._rich_problem(body, contents, config if isinstance(config, dict) else {}, self.model(req))
        return None if problem is None else bad(problem)

    def _rich_problem(self, body: dict[str, Any], contents: list[Any], config: dict[str, Any], model: str) -> str | None:
        """What Gemini refuses in the parts, tools and generation config of a request (400)."""
        for key in config:
            if key not in GENERATION_CONFIG and "_" not in key:
                return f'Invalid JSON payload received. Unknown name "{key}" at \'generation_config\': Cannot find field.'
        stops = config.get("stopSequences")
        if stops is not None and (not isinstance(stops, list) or len(stops) > 5):
            return "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed"
        if "responseSchema" in config:
            if config.get("responseMimeType") != "application/json":
                return ("* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be "
                        "application/json when response_schema is set")
            problem = _schema_problem(config["responseSchema"], "generation_config.response_schema")
            if problem:
                return problem
        for ci, c in enumerate(contents):
            for pi, part in enumerate(c["parts"]):
                problem = self._part_problem(part, c.get("role", "user"), f"contents[{ci}].parts[{pi}]")
                if problem:
                    return problem
        declared: set[str] = set()
        for ti, tool in enumerate(body.get("tools") or ()):
            for di, decl in enumerate((tool or {}).get("functionDeclarations") or ()):
                where = f"tools[{ti}].function_declarations[{di}]"
                name = decl.get("name") if isinstance(decl, dict) else None
                if not isinstance(name, str) or not FUNCTION_NAME.match(name):
                    return f"* GenerateContentRequest.{where}.name: Invalid function name."
                declared.add(name)
                unknown = sorted(set(decl) - {"name", "description", "parameters", "parametersJsonSchema",
                                              "behavior", "response", "responseJsonSchema"})
                if unknown:
                    return f'Invalid JSON payload received. Unknown name "{unknown[0]}" at \'{where}\': Cannot find field.'
                if "parameters" in decl:
                    problem = _schema_problem(decl["parameters"], f"{where}.parameters")
                    if problem:
                        return problem
        calling = ((body.get("toolConfig") or {}).get("functionCallingConfig")) or {}
        # Gemini 2.x refuses function calling (modes AUTO and ANY) with JSON mode; Gemini 3 takes both.
        if (declared and config.get("responseMimeType") == "application/json" and calling.get("mode") != "NONE"
                and not model.startswith("gemini-3")):
            return "Function calling with a response mime type: 'application/json' is unsupported"
        if calling:
            if calling.get("mode") not in CALLING_MODES:
                return "Invalid value at 'tool_config.function_calling_config.mode'"
            allowed = calling.get("allowedFunctionNames")
            if allowed is not None:
                if calling.get("mode") not in ("ANY", "VALIDATED"):
                    return ("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                            "only set allowed_function_names when mode is ANY or VALIDATED.")
                if not set(allowed) <= declared:
                    return ("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                            "function names must be declared in tools.")
        return None

    @staticmethod
    def _part_problem(part: Any, role: str, where: str) -> str | None:
        """A part carries exactly one kind of data; images of a type and an encoding Gemini reads;
        calls in model turns and their results in user turns."""
        if not isinstance(part, dict):
            return f"Invalid value at '{where}'"
        kinds = [k for k in PART_DATA if k in part]
        if len(kinds) != 1:
            return f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field"
        if "inlineData" in part:
            blob = part["inlineData"] or {}
            mime = blob.get("mimeType")
            if mime not in IMAGE_TYPES:
                return f"Unsupported MIME type: {mime}"
            try:
                base64.b64decode(blob.get("data") or "", validate=True)
            except (binascii.Error, ValueError):
                return f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
        if "fileData" in part:
            data = part["fileData"] or {}
            uri = data.get("fileUri")
            if not isinstance(uri, str) or not uri:
                return f"* GenerateContentRequest.{where}.file_data.file_uri: missing field."
            if not isinstance(data.get("mimeType"), str):
                return f"* GenerateContentRequest.{where}.file_data.mime_type: missing field."
            if data["mimeType"] not in IMAGE_TYPES:
                return f"Unsupported MIME type: {data['mimeType']}"
            if not uri.startswith("https://"):  # a Files API upload's URI is https too
                return f"* GenerateContentRequest.{where}.file_data.file_uri: Unsupported file uri: {uri}"
        if "functionCall" in part and role != "model":
            return f"* GenerateContentRequest.{where}: a function call must be in a model turn"
        if "functionResponse" in part:
            fr = part["functionResponse"] or {}
            if role != "user":
                return f"* GenerateContentRequest.{where}: a function response must be in a user turn"
            if not isinstance(fr.get("name"), str) or not isinstance(fr.get("response"), dict):
                return f"* GenerateContentRequest.{where}.function_response: name and response (an object) are required"
        return None

    def wants_stream(self, req: RecordedRequest) -> bool:
        m = self.PATH.match(req.path)
        return bool(m and m["method"] == "streamGenerateContent")

    def stream_content_type(self, req: RecordedRequest) -> str:
        return "text/event-stream" if req.query.get("alt") == "sse" else "application/json"

    def model(self, req: RecordedRequest) -> str:
        m = self.PATH.match(req.path)
        return m["model"] if m else ""

    def last_user_text(self, req: RecordedRequest) -> str:
        body = req.json if isinstance(req.json, dict) else {}
        users = [
            c for c in body.get("contents", []) if isinstance(c, dict) and c.get("role", "user") == "user"
        ]
        return text_of(users[-1].get("parts")) if users else ""

    def error(
        self,
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        model: str = "",
    ) -> Any:
        st = error_type or self.STATUSES.get(status) or ("INVALID_ARGUMENT" if status < 500 else "INTERNAL")
        if st == "NOT_FOUND" and not message:
            message = (
                f"models/{model} is not found for API version v1beta, "
                "or is not supported for generateContent."
            )
        return {
            "error": {
                "code": status,
                "message": message or self.MESSAGES.get(st, "Request contains an invalid argument."),
                "status": st,
            }
        }

    @staticmethod
    def _usage(u: Usage, *, final: bool) -> dict[str, int]:
        prompt = u.input_tokens + u.cached_tokens
        if not final:  # non-final stream chunks: prompt side only; the last chunk is complete
            return {"promptTokenCount": prompt, "totalTokenCount": prompt}
        meta = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": u.output_tokens,
            "totalTokenCount": prompt + u.output_tokens,
        }
        if u.cached_tokens:  # proto3 JSON leaves zero counts out
            meta["cachedContentTokenCount"] = u.cached_tokens
        return meta

    def _response(self, t: Turn, text: str | None, finish: str | None, final: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if t.blocked:
            body["promptFeedback"] = {
                "blockReason": "SAFETY",
                "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}],
            }
        else:
            cand: dict[str, Any] = {"content": {"parts": [{"text": text or ""}], "role": "model"}, "index": 0}
            if finish:
                cand["finishReason"] = finish
            body["candidates"] = [cand]
        if t.usage is not None:
            body["usageMetadata"] = (
                self._usage(t.usage, final=False) if t.blocked else self._usage(t.usage, final=final)
            )
        body["modelVersion"] = t.model
        body["responseId"] = f"fakeresp{t.seq:06d}"
        return body

    def reply(self, t: Turn) -> Any:
        return self._response(t, t.text, t.finish, final=True)

    def missing_fields(self, t: Turn) -> Any:
        return {"modelVersion": t.model, "responseId": f"fakeresp{t.seq:06d}"}

    def stream(self, t: Turn) -> Frames:
        # No terminator exists in Gemini streams: the last chunk (finishReason + complete
        # usageMetadata) is the end. Real SSE frames are CRLF-delimited, which SSE allows.
        events = [self._response(t, c, None, final=False) for c in t.chunks[:-1]]
        last = t.chunks[-1] if t.chunks else ""
        events.append(self._response(t, last, t.finish, final=True))
        if t.req.query.get("alt") == "sse":
            frames = [b"data: " + dumps(e) + b"\r\n\r\n" for e in events]
            return Frames([], frames[:-1], frames[-1:])
        # Without alt=sse the documented framing is one JSON array, streamed element by element.
        parts = [(b"[" if i == 0 else b",\r\n") + dumps(e) for i, e in enumerate(events)]
        parts[-1] += b"]"
        return Frames([], parts[:-1], parts[-1:])

    def malformed_frame(self) -> bytes:
        return b'data: {"candidates": [{"content": \r\n\r\n'

    @staticmethod
    def _calls(t: Turn) -> list[tuple[str, Any]]:
        return list(t.step.tool_calls) if t.step.tool_calls is not None else [(t.step.tool_name, TOOL_ARGS)]

    def _malformed_call(self, t: Turn, raw: str) -> dict[str, Any]:
        """Arguments that are no JSON object: Gemini sends no call at all but ends the candidate
        with ``MALFORMED_FUNCTION_CALL`` and a ``finishMessage`` quoting what the model wrote."""
        body = self._response(t, "", None, final=True)
        body["candidates"] = [
            {"finishReason": "MALFORMED_FUNCTION_CALL", "finishMessage": f"Malformed function call: {raw}", "index": 0}
        ]
        return body

    def _call_chunk(self, t: Turn, calls: list[tuple[str, Any]], finish: str | None, final: bool) -> dict[str, Any]:
        body = self._response(t, "", finish, final=final)
        body["candidates"][0]["content"]["parts"] = [{"functionCall": {"name": n, "args": a}} for n, a in calls]
        return body

    def tool_reply(self, t: Turn) -> Any:
        calls = self._calls(t)
        broken = next((a for _, a in calls if not isinstance(a, dict)), None)
        if broken is not None:
            return self._malformed_call(t, str(broken))
        body = self._call_chunk(t, calls, "STOP", final=True)
        if t.text:
            body["candidates"][0]["content"]["parts"].insert(0, {"text": t.text})
        return body

    def tool_stream(self, t: Turn) -> Frames:
        # Gemini streams a function call whole, its arguments never in pieces: each call comes
        # in a chunk of its own after the text, and a last chunk holds the finishReason and the
        # complete usage (cut the stream with after_chunks = text chunks + calls sent).
        calls = self._calls(t)
        events = [self._response(t, c, None, final=False) for c in t.chunks]
        broken = next((a for _, a in calls if not isinstance(a, dict)), None)
        if broken is not None:
            events.append(self._malformed_call(t, str(broken)))
        else:
            events += [self._call_chunk(t, [call], None, final=False) for call in calls]
            events.append(self._response(t, "", "STOP", final=True))
        frames = [b"data: " + dumps(e) + b"\r\n\r\n" for e in events]
        return Frames([], frames[:-1], frames[-1:])

    def context_error(self, window: int, prompt: int, flavor: str | None, max_tokens: int = 0) -> Any:
        message = f"The input token count ({prompt}) exceeds the maximum number of tokens allowed ({window})."
        return self.error(400, message=message)

    def models(self, names: list[str]) -> Any:
        return {
            "models": [
                {
                    "name": f"models/{n}",
                    "version": "001",
                    "displayName": n,
                    "description": "fake model",
                    "inputTokenLimit": 1048576,
                    "outputTokenLimit": 8192,
                    "supportedGenerationMethods": ["generateContent", "countTokens"],
                }
                for n in names
            ]
        }
