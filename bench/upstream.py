"""A minimal, fast OpenAI-compatible chat-completions server for benchmarks (loopback only).

Raw ``asyncio.Protocol`` HTTP/1.1 with keep-alive, so that the upstream costs a few tens of
microseconds per request and is never the bottleneck of what is measured.

    python bench/upstream.py [--port 0]

prints ``PORT <n>`` on stdout once it listens on 127.0.0.1, then serves until stdin closes (or
``--max-seconds`` pass), so it never outlives the benchmark that started it.

Endpoints:
    POST /v1/chat/completions   JSON answer with ``usage``; ``"stream": true`` gives SSE chunks,
                                a usage chunk and ``[DONE]`` (sent with Content-Length, keep-alive).
                                A request with ``tools`` is answered with one call of
                                ``TOOL_CALL_NAME``; one with ``response_format``, or for
                                ``JSON_MODEL`` (so a plain call can get the same text), with
                                ``JSON_ANSWER`` (valid for ``bench/structured.py``'s schema).
    GET  /v1/models             the one model list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time

ANSWER = "The quick brown fox jumps over the lazy dog."
ANSWER_TOKENS = 10
_STREAM_PIECES = ("The quick brown ", "fox jumps over ", "the lazy dog.")

JSON_MODEL = "bench-json"
"""The model whose every answer is ``JSON_ANSWER``, with or without ``response_format``."""
JSON_ANSWER = json.dumps(
    {
        "invoice_number": "INV-2026-0042",
        "vendor": {"name": "Acme Tools Ltd", "country": "GB", "vat_id": "GB123456789"},
        "issue_date": "2026-11-30",
        "currency": "GBP",
        "status": "due",
        "line_items": [
            {"description": "Cordless drill", "quantity": 2, "unit_price": 89.5, "category": "hardware"},
            {"description": "Drill bit set", "quantity": 1, "unit_price": 24.0, "category": "hardware"},
            {"description": "Delivery", "quantity": 1, "unit_price": 6.95, "category": "shipping"},
        ],
        "total": 209.95,
        "notes": None,
    }
)
TOOL_CALL_NAME = "create_ticket"
TOOL_CALL_ARGUMENTS = json.dumps(
    {"title": "Checkout fails on Safari", "priority": "high", "labels": ["web", "payments"], "assignee": None}
)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found"}


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
        f"content-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def _completion(req: dict, n: int) -> bytes:
    model = req.get("model", "bench-model")
    prompt_tokens = max(1, len(json.dumps(req.get("messages", []))) // 4)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": ANSWER_TOKENS,
        "total_tokens": prompt_tokens + ANSWER_TOKENS,
    }
    rid = f"chatcmpl-bench-{n}"
    created = int(time.time())
    if not req.get("stream"):
        message: dict = {"role": "assistant", "content": ANSWER}
        finish = "stop"
        if req.get("tools"):
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": f"call_bench_{n}",
                    "type": "function",
                    "function": {"name": TOOL_CALL_NAME, "arguments": TOOL_CALL_ARGUMENTS},
                }
            ]
            finish = "tool_calls"
        elif req.get("response_format") or model == JSON_MODEL:
            message["content"] = JSON_ANSWER
        body = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        return _response(200, json.dumps(body).encode())
    events = []
    for i, piece in enumerate(_STREAM_PIECES):
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        events.append(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        )
    events.append(
        {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    if (req.get("stream_options") or {}).get("include_usage"):
        events.append(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return _response(200, sse.encode(), "text/event-stream")


class _Http(asyncio.Protocol):
    requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            start = end + 4
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body, consumed = _dechunk(self.buf, start)
                if body is None:
                    return  # wait for the rest
                self.buf = self.buf[consumed:]
            else:
                length = int(headers.get("content-length") or 0)
                if len(self.buf) - start < length:
                    return
                body = self.buf[start : start + length]
                self.buf = self.buf[start + length :]
            self.transport.write(self._handle(method, path.split("?", 1)[0], body))  # type: ignore[attr-defined]
            if headers.get("connection", "").lower() == "close":
                self.transport.close()
                return

    def _handle(self, method: str, path: str, body: bytes) -> bytes:
        _Http.requests += 1
        if method == "POST" and path.endswith("/chat/completions"):
            try:
                req = json.loads(body)
            except ValueError:
                return _response(
                    400, b'{"error": {"message": "body is not JSON", "type": "invalid_request_error"}}'
                )
            return _completion(req, _Http.requests)
        if method == "GET" and path.endswith("/models"):
            return _response(200, b'{"object": "list", "data": [{"id": "bench-model", "object": "model"}]}')
        return _response(404, b'{"error": {"message": "not found", "type": "invalid_request_error"}}')


def _dechunk(buf: bytes, start: int) -> tuple[bytes | None, int]:
    out = []
    i = start
    while True:
        eol = buf.find(b"\r\n", i)
        if eol < 0:
            return None, 0
        size = int(buf[i:eol].split(b";")[0], 16)
        if len(buf) < eol + 2 + size + 2:
            return None, 0
        if size == 0:
            return b"".join(out), eol + 4
        out.append(buf[eol + 2 : eol + 2 + size])
        i = eol + 2 + size + 2


async def _serve(port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", port, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()

    def watch_stdin() -> None:  # the parent closing our stdin (or dying) stops us
        try:
            while sys.stdin.buffer.read1(4096):  # discard anything written; stop at end of file
                pass
        except (OSError, ValueError):
            pass
        finally:
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop after this long whatever happens")
    a = p.parse_args()
    asyncio.run(_serve(a.port, a.max_seconds))


if __name__ == "__main__":
    main()
