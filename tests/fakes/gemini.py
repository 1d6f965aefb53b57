"""The fake Gemini generateContent API (see README.md for the documentation it follows)."""

from __future__ import annotations

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

    def _tool_response(self, t: Turn, text: str) -> dict[str, Any]:
        body = self._response(t, text, "STOP", final=True)
        parts = ([{"text": text}] if text else []) + [{"functionCall": {"name": t.step.tool_name, "args": TOOL_ARGS}}]
        body["candidates"][0]["content"]["parts"] = parts
        return body

    def tool_reply(self, t: Turn) -> Any:
        return self._tool_response(t, t.text)

    def tool_stream(self, t: Turn) -> Frames:
        events = [self._response(t, c, None, final=False) for c in t.chunks] + [self._tool_response(t, "")]
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
