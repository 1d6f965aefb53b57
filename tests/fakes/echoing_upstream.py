"""A hostile upstream that sends the request's own headers (its API key among them) back in
everything it answers, for each of the four wire formats.

``EchoingUpstream(kind, key)`` is a raw HTTP/1.1 server on 127.0.0.1 (no framework between the
bytes and the test: a body can be anything). Each generation request takes the next
``(case, stream)`` of its ``script``; side questions (model lists, ``/props``, ``/tokenize``,
``/api/show``...) get a 404 that echoes the headers too. Every answer closes its connection and
carries the key in an ``x-echo`` response header.

Cases (``JSON_CASES`` for plain requests, ``STREAM_CASES`` for streamed ones): 4xx and 5xx error
bodies, a 200 that is not JSON, a 200 of the wrong shape, unreadable usage, an error inside a 200,
a tool call named after the headers, an answer whose model, id and finish reason are the headers
(``named_after_the_key``, the one case that is an answer, not a failure), and, streaming, an error
event, an event that is not JSON, an event of the wrong shape, unreadable usage at the end, a body
that is no stream, and one whose lines are no SSE fields.

``disguise`` rewrites the key (or the whole header line that carries it) wherever it appears in a
body, as quoting software does on its way: ``DISGUISES`` names them (percent-encoded, JSON
``\\u00xx``-escaped, base64 of the ``authorization: Bearer KEY`` line, HTML character references).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

__all__ = [
    "ANSWERED",
    "DISGUISES",
    "JSON_CASES",
    "STREAM_CASES",
    "EchoingUpstream",
    "echoing_upstreams",
]

JSON_CASES = ("401", "500_text", "400", "not_json", "wrong_shape", "bad_usage", "error_in_200", "tool_call",
              "named_after_the_key")
STREAM_CASES = ("401", "503", "error_event", "event_not_json", "event_wrong_shape", "bad_usage", "not_a_stream",
                "no_sse_fields", "tool_call")
ANSWERED = {"named_after_the_key"}
"""Cases that are an answer (its model, id and finish reason quote the key), not a failure."""


def _percent_all(key: str) -> str:
    return "".join(f"%{b:02X}" for b in key.encode())


def _json_every_other(key: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if i % 2 == 0 else _json_char(c) for i, c in enumerate(key))


def _json_char(c: str) -> str:
    return json.dumps(c)[1:-1]


def _html_refs(key: str) -> str:
    return "".join(f"&#x{ord(c):x};" if i % 3 else f"&#{ord(c)};" for i, c in enumerate(key))


Disguise = tuple[str, Callable[[str], str]]
"""What is rewritten (``"key"`` or the ``"line"`` that carries it) and how."""

DISGUISES: Mapping[str, Disguise] = {
    # Every character as %XX (upper- and lowercase hex): a URL quoted by an over-eager encoder.
    "percent_every_char": ("key", _percent_all),
    "percent_lowercase": ("key", lambda k: _percent_all(k).lower()),
    # What urllib/httpx make of a key in a query string: only its special characters change.
    "url_quoted": ("key", lambda k: quote(k, safe="")),
    # Inside a JSON body, every character as \u00xx, and every other one (the rest as JSON writes it).
    "json_u_escaped": ("key", lambda k: "".join(f"\\u{ord(c):04X}" for c in k)),
    "json_every_other": ("key", _json_every_other),
    # The whole header line, base64 (standard and URL-safe alphabets), as a debugging proxy dumps it.
    "base64_header_line": ("line", lambda line: base64.b64encode(line.encode()).decode()),
    "base64url_header_line": ("line", lambda line: base64.urlsafe_b64encode(line.encode()).decode().rstrip("=")),
    # An HTML error page echoing the request, each character a numeric character reference.
    "html_char_refs": ("key", _html_refs),
}


def _echo(headers: list[tuple[str, str]], key: str, *, one_line: bool = False) -> str:
    """The request's headers, the key's own first and over and over: keys fall across every cut
    (200, 300, 500, 1024 characters...), and redacting a head first cut shrinks it past them."""
    lines = "".join(f"{name}: {value}\n" for name, value in headers)
    keyed = "".join(f"{name}: {value}\n" for name, value in headers if key in value)
    text = keyed * 24 + lines + "pad " * 13 + keyed * 24 + lines
    return text.replace("\n", " | ") if one_line else text


def _answer(kind: str, *, usage: Any = None) -> dict[str, Any]:
    """A whole answer in ``kind``'s format, its usage replaced by ``usage`` when given."""
    if kind == "anthropic":
        return {"type": "message", "id": "msg_1", "model": "m", "role": "assistant", "stop_reason": "end_turn",
                "content": [{"type": "text", "text": "hi"}],
                "usage": usage if usage is not None else {"input_tokens": 1, "output_tokens": 1}}
    if kind == "openai":
        return {"id": "c1", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                                       "finish_reason": "stop"}],
                "usage": usage if usage is not None else {"prompt_tokens": 1, "completion_tokens": 1}}
    if kind == "gemini":
        return {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
                "usageMetadata": usage if usage is not None else {"promptTokenCount": 1, "candidatesTokenCount": 1}}
    return {"model": "m", "message": {"role": "assistant", "content": "hi"}, "done": True,
            **({"prompt_eval_count": usage, "eval_count": usage} if usage is not None else {})}


def _sse(events: list[Any], kind: str) -> bytes:
    """Stream frames: SSE for three of them, NDJSON for Ollama."""
    if kind == "ollama":
        return b"".join(json.dumps(e).encode() + b"\n" for e in events)
    out = b""
    for e in events:
        name, data = e if isinstance(e, tuple) else (None, e)
        payload = data if isinstance(data, str) else json.dumps(data)
        out += (f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode()
    return out


def _tool_call(kind: str, name: str, stream: bool) -> tuple[str, bytes]:
    """An answer that is only a call of a tool named ``name``, in ``kind``'s format."""
    if kind == "anthropic":
        if stream:
            return "text/event-stream", _sse([
                ("message_start", {"type": "message_start", "message": {"id": "m1", "model": "m", "usage": {"input_tokens": 1}}}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "tool_use", "id": "t", "name": name, "input": {}}}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 1}}),
                ("message_stop", {"type": "message_stop"}),
            ], kind)
        body: Any = {"type": "message", "id": "m1", "model": "m", "stop_reason": "tool_use",
                     "content": [{"type": "tool_use", "id": "t", "name": name, "input": {}}],
                     "usage": {"input_tokens": 1, "output_tokens": 1}}
    elif kind == "openai":
        call = {"index": 0, "id": "t", "type": "function", "function": {"name": name, "arguments": "{}"}}
        if stream:
            return "text/event-stream", _sse([
                {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]},
                {"id": "c1", "model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
                "[DONE]",
            ], kind)
        body = {"id": "c1", "model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                             "finish_reason": "tool_calls"}]}
    elif kind == "gemini":
        body = {"candidates": [{"content": {"parts": [{"functionCall": {"name": name, "args": {}}}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}}
        if stream:
            return "text/event-stream", _sse([body], kind)
    else:
        body = {"model": "m", "done": True, "prompt_eval_count": 1, "eval_count": 1,
                "message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": {}}}]}}
        if stream:
            return "application/x-ndjson", _sse([body], kind)
    return "application/json", json.dumps(body).encode()


def _named_after(kind: str, name: str) -> dict[str, Any]:
    """A good answer whose model, id and finish reason are ``name``."""
    body = _answer(kind)
    if kind == "anthropic":
        body.update(model=name, id=name)
    elif kind == "openai":
        body.update(model=name, id=name)
        body["choices"][0]["finish_reason"] = name
    elif kind == "gemini":
        body.update(modelVersion=name, responseId=name)
        body["candidates"][0]["finishReason"] = name
    else:
        body.update(model=name, done_reason=name)
    return body


def _bad_usage(kind: str, echo: str) -> Any:
    if kind == "anthropic":
        return {"input_tokens": echo, "output_tokens": echo}
    if kind == "openai":
        return {"prompt_tokens": echo, "completion_tokens": echo}
    if kind == "gemini":
        return {"promptTokenCount": echo, "candidatesTokenCount": echo}
    return echo


def _error_object(echo: str) -> dict[str, Any]:
    return {"error": {"type": "overloaded_error", "code": 500, "status": "INTERNAL", "message": echo}}


def _stream_answer(kind: str, usage: Any) -> bytes:
    """A stream that ends properly, its usage replaced by ``usage``."""
    if kind == "anthropic":
        return _sse([
            ("message_start", {"type": "message_start", "message": {"id": "m1", "model": "m", "usage": usage}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}),
            ("message_stop", {"type": "message_stop"}),
        ], kind)
    if kind == "openai":
        return _sse([
            {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
            {"id": "c1", "model": "m", "choices": [], "usage": usage},
            "[DONE]",
        ], kind)
    if kind == "gemini":
        return _sse([{"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
                      "usageMetadata": usage}], kind)
    return _sse([{"message": {"content": "hi"}, "done": False},
                 {"message": {"content": ""}, "done": True, "prompt_eval_count": usage, "eval_count": usage}], kind)


def _respond(kind: str, case: str, stream: bool, headers: list[tuple[str, str]], key: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of one hostile answer."""
    echo = _echo(headers, key)
    line = _echo(headers, key, one_line=True)
    if case in ("401", "400", "503"):
        return int(case), "application/json", json.dumps(_error_object(echo)).encode()
    if case == "500_text":
        return 500, "text/plain", echo.encode()
    if case == "not_json":
        return 200, "application/json", echo.encode()
    if case == "wrong_shape":
        body = {"type": "message", "content": echo, "choices": echo, "candidates": echo, "message": echo, "done": True}
        return 200, "application/json", json.dumps(body).encode()
    if case == "bad_usage" and not stream:
        return 200, "application/json", json.dumps(_answer(kind, usage=_bad_usage(kind, echo))).encode()
    if case == "tool_call":
        return 200, *_tool_call(kind, "call_" + line, stream)
    if case == "named_after_the_key":
        # The key's own header first, once cut at 200 characters: a cut before redaction keeps its start.
        return 200, "application/json", json.dumps(_named_after(kind, "m" * 60 + line)).encode()
    if case == "error_in_200":
        body = {"type": "error", **_error_object(echo)}
        return 200, "application/json", json.dumps(body).encode()
    ctype = "application/x-ndjson" if kind == "ollama" else "text/event-stream"
    if case == "error_event":
        event = {"type": "error", **_error_object(line)} if kind != "ollama" else {"error": line}
        return 200, ctype, _sse([("error", event)] if kind == "anthropic" else [event], kind)
    if case == "event_not_json":
        return 200, ctype, (line + "\n").encode() if kind == "ollama" else f"data: {line}\n\n".encode()
    if case == "event_wrong_shape":
        event = {
            "anthropic": {"type": "content_block_delta", "delta": line},
            "openai": {"id": "c1", "choices": [line]},
            "gemini": {"candidates": line},
            "ollama": {"message": line},
        }[kind]
        return 200, ctype, _sse([event], kind)
    if case == "bad_usage":
        return 200, ctype, _stream_answer(kind, _bad_usage(kind, line))
    if case == "not_a_stream":
        return 200, "text/html", echo.encode()
    if case == "no_sse_fields":
        return 200, "text/event-stream", echo.encode()
    raise AssertionError(case)


_GENERATE = ("/v1/messages", "/chat/completions", ":generateContent", ":streamGenerateContent", "/api/chat")


class EchoingUpstream:
    """A raw HTTP/1.1 server on 127.0.0.1 answering each generation request with the next case
    of its script, every answer quoting the request's headers (see the module docstring)."""

    def __init__(self, kind: str, key: str, *, disguise: str | None = None) -> None:
        self.kind = kind
        self.api_key = key
        self.disguise = disguise
        self.script: list[tuple[str, bool]] = []
        self.served: list[tuple[str, bool]] = []
        self.saw_key = 0
        """Requests that carried the key in a header (every generation request must)."""
        self.disguised = 0
        """Answers in which the disguise replaced the key (none where it had nothing to replace)."""
        self._server: asyncio.Server | None = None
        self.base_url = ""

    async def __aenter__(self) -> EchoingUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}" + ("/v1" if self.kind == "openai" else "")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _disguised(self, payload: bytes, headers: list[tuple[str, str]]) -> bytes:
        if self.disguise is None:
            return payload
        what, how = DISGUISES[self.disguise]
        text = payload.decode()
        if what == "key":
            out = text.replace(self.api_key, how(self.api_key))
        else:
            out = text
            for name, value in headers:
                if self.api_key in value:
                    out = out.replace(f"{name}: {value}", how(f"{name}: {value}"))
        if out != text:
            self.disguised += 1
        return out.encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers: list[tuple[str, str]] = [(k, v) for k, v in (x.split(": ", 1) for x in lines if ": " in x)]
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            await reader.readexactly(length)
            if any(self.api_key in v for _k, v in headers):
                self.saw_key += 1
            if method == "POST" and any(target.split("?")[0].endswith(p) for p in _GENERATE) and self.script:
                case, stream = self.script.pop(0)
                self.served.append((case, stream))
                status, ctype, payload = _respond(self.kind, case, stream, headers, self.api_key)
            else:
                status, ctype, payload = 404, "text/plain", _echo(headers, self.api_key).encode()
            payload = self._disguised(payload, headers)
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\nconnection: close\r\n"
                f"x-echo: {self.api_key}\r\n".encode("latin-1")
                + (b"" if ctype in ("text/event-stream", "application/x-ndjson") else f"content-length: {len(payload)}\r\n".encode())
                + b"\r\n" + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def echoing_upstreams(keys: Mapping[str, str], *, disguise: str | None = None) -> AsyncIterator[dict[str, EchoingUpstream]]:
    """One echoing upstream per kind in ``keys`` (kind → the key its adapter is given)."""
    servers = {kind: EchoingUpstream(kind, key, disguise=disguise) for kind, key in keys.items()}
    for server in servers.values():
        await server.__aenter__()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.__aexit__(None, None, None)
