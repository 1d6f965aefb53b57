"""An upstream that echoes the request's key in everything it sends never gets it onto the disk.

A hostile loopback server (one per adapter, raw HTTP on 127.0.0.1) answers every request with
the request's own headers (the API key included, in the provider's header form) quoted again and
again in whatever it sends: 4xx and 5xx error bodies, a 200 that is not JSON, a 200 of the wrong
shape, an unreadable usage object, an error inside a 200, and, streaming, an error event, an
event that is not JSON, an event of the wrong shape, unreadable usage at the end, a body that is
no stream, and one whose lines are no SSE fields. The key is long (160 characters, as real keys
are) and repeated, so that redacting within a head cut before it shrinks the head and pulls the
start of a key cut in half into what is quoted.

Every call goes through the engine and an in-memory MCP session; every tool result, resource,
log message, progress message, stderr and logging record is kept; the engine is closed; then the
ledger's files (``.db``, ``-wal``, ``-shm``, as bytes) and all of those outputs are searched for
any 8 consecutive characters of any key.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from llm_router.calls import CompleteArgs
from llm_router.engine import Engine
from llm_router.mcp_server import create_server
from llm_router.redaction import Redactor

from .conftest import FAKE_MODELS, settings_for_fakes

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEYS = {  # long, random, no public prefix: any 8 characters of one are found only where it leaked
    "anthropic": "gNSWPH8prVqsUeQCtDR3zzX6hqo35uwZqxZOOHjkJQQrkaPehMvbfrn2yzL7C5Mg3PR4hLLOOxl3gV3FGRmrCNnFZsGqgh0f"
                 "rrhbkVAhRHLfBERkIyDtFDBAM0gqEzpC3N8FeKjFTrKCb0Tz8BbwTKx8EqwtHmcO",
    "openai": "JEZqgygcmtbaLGsH7Zwqhc9jXmaoq3GqlpnMR6vsUW5xcJ6MV8YWkGP1mxFyp9yIJX6uF68NcpP7BEXvfqZgimdS7jnqFCiI"
              "5ydYgqTxIBAiCofjZUljbQ6oP3Q0w7MQ0JTcKADr9Eu7e3xdRP7PI0g63eB1h3d1",
    "gemini": "P7keaYRtciy4Lja4CDY3FTHbsfrpsRLPGaJYpUa7w5h2hzyCswU7vbqis9KZXTt9nHL15Cb5PeCvKyYMBqRW9AmYby3TEpy0"
              "HhWo0pmq23epYfD3QJdbmRZRMPsXBDo5VeOeTTlTxDSmygMxEnWRwvFI1tdlNODi",
    "ollama": "520rE5tIdjdHbRtFxOsxQ9VliZbnGXei4Lo53t2zLE0MZwlwp23JOwv0HBhact35rktmZYmhG2Vo7ysMChyXhCXMWZeT0I07"
              "pdLInIIWLymIfix3OE1hfXV8f3JLoo58giEJEuyGePQ44xh5Gv2rkDETXgOwcICu",
}
KEY_HEADER = {"anthropic": "x-api-key", "openai": "authorization", "gemini": "x-goog-api-key", "ollama": "authorization"}
JSON_CASES = ("401", "500_text", "400", "not_json", "wrong_shape", "bad_usage", "error_in_200", "tool_call",
              "named_after_the_key")
STREAM_CASES = ("401", "503", "error_event", "event_not_json", "event_wrong_shape", "bad_usage", "not_a_stream",
                "no_sse_fields", "tool_call")
ANSWERED = {"named_after_the_key"}
"""Cases that are an answer (its model, id and finish reason quote the key), not a failure."""


def _echo(headers: list[tuple[str, str]], *, one_line: bool = False) -> str:
    """The request's headers, the key's own first and over and over: keys fall across every cut
    (200, 300, 500, 1024 characters...), and redacting a head first cut shrinks it past them."""
    lines = "".join(f"{name}: {value}\n" for name, value in headers)
    keyed = "".join(f"{name}: {value}\n" for name, value in headers if any(k in value for k in KEYS.values()))
    text = keyed * 24 + lines + "pad " * 13 + keyed * 24 + lines
    return text.replace("\n", " | ") if one_line else text


def _answer(kind: str, echo: str, *, usage: Any = None) -> dict[str, Any]:
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
    body = _answer(kind, name)
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


def _respond(kind: str, case: str, stream: bool, headers: list[tuple[str, str]]) -> tuple[int, str, bytes]:
    """(status, content type, body) of one hostile answer."""
    echo = _echo(headers)
    line = _echo(headers, one_line=True)
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
        return 200, "application/json", json.dumps(_answer(kind, echo, usage=_bad_usage(kind, echo))).encode()
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


class HostileUpstream:
    """A raw HTTP/1.1 server on 127.0.0.1 answering each generation request with the next case
    of its script; side questions (model lists, /props, /tokenize, /api/show...) get a 404 that
    echoes the headers too. Every answer closes its connection."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.api_key = KEYS[kind]
        self.script: list[tuple[str, bool]] = []
        self.served: list[tuple[str, bool]] = []
        self.saw_key = 0
        self._server: asyncio.Server | None = None
        self.base_url = ""

    async def __aenter__(self) -> HostileUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}" + ("/v1" if self.kind == "openai" else "")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = [tuple(x.split(": ", 1)) for x in lines if ": " in x]
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            await reader.readexactly(length)
            if any(KEYS[self.kind] in v for _k, v in headers):
                self.saw_key += 1
            pairs: list[tuple[str, str]] = [(k, v) for k, v in headers]  # in the order they came
            if method == "POST" and any(target.split("?")[0].endswith(p) for p in _GENERATE) and self.script:
                case, stream = self.script.pop(0)
                self.served.append((case, stream))
                status, ctype, payload = _respond(self.kind, case, stream, pairs)
            else:
                status, ctype, payload = 404, "text/plain", _echo(pairs).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\nconnection: close\r\n"
                f"x-echo: {KEYS[self.kind]}\r\n".encode()
                + (b"" if ctype in ("text/event-stream", "application/x-ndjson") else f"content-length: {len(payload)}\r\n".encode())
                + b"\r\n" + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def _upstreams() -> AsyncIterator[dict[str, HostileUpstream]]:
    servers = {kind: HostileUpstream(kind) for kind in KEYS}
    for server in servers.values():
        await server.__aenter__()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.__aexit__(None, None, None)


def _pieces(key: str) -> set[str]:
    return {key[i : i + 8] for i in range(len(key) - 7)}


def _leaks(where: str, text: str) -> list[str]:
    found = []
    for kind, key in KEYS.items():
        hits = [p for p in _pieces(key) if p in text]
        if hits:
            at = text.find(hits[0])
            found.append(f"{where}: {len(hits)} pieces of the {kind} key, e.g. ...{text[max(0, at - 60):at + 20]!r}")
    return found


def _ledger_files(tmp_path: Path) -> dict[str, str]:
    return {p.name: p.read_bytes().decode("latin-1") for p in sorted(tmp_path.glob("ledger.db*"))}


async def test_a_key_an_upstream_echoes_in_every_error_and_malformed_body_never_reaches_disk_or_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # every record the process makes, not only what reaches a client
    outputs: list[tuple[str, str]] = []
    logs: list[str] = []

    async def on_log(params: Any) -> None:
        logs.append(json.dumps(params.data))

    async with _upstreams() as ups:
        settings = settings_for_fakes(tmp_path, ups, monkeypatch, resilience={"max_retries": 0, "breaker_failures": 100})
        for up in ups.values():
            up.script = [(c, False) for c in JSON_CASES] + [(c, True) for c in STREAM_CASES]
        Redactor.from_environment(settings).install()  # as ``serve`` does, on the handlers capturing here
        engine = Engine(settings)
        try:
            async with Client(create_server(engine), logging_callback=on_log) as client:
                progress_seen: list[str] = []

                async def progress(_p: float, _t: float | None, message: str | None) -> None:
                    progress_seen.append(message or "")

                async def engine_progress(_value: float, _total: float | None, message: str) -> None:
                    progress_seen.append(message)

                for kind, up in ups.items():
                    ref = f"{kind}:{FAKE_MODELS[kind]}"
                    for case, stream in list(up.script):
                        with anyio.fail_after(30):
                            result = await client.call_tool(
                                "complete", {"prompt": f"hello {case}", "model": [ref], "tag": "leak"},
                                progress_callback=progress if stream else None,
                            )
                        text = "".join(getattr(b, "text", "") for b in result.content)
                        assert result.is_error is (case not in ANSWERED), (kind, case, text)
                        outputs.append((f"complete {kind} {case} {'stream' if stream else 'json'}", text))
                        outputs.append((f"structured {kind} {case}", json.dumps(result.structured_content)))
                    assert len(up.served) == len(JSON_CASES) + len(STREAM_CASES) <= up.saw_key, kind
                # The same calls straight through the engine, errors as the engine raises them.
                for kind, up in ups.items():
                    up.script = [("bad_usage", True), ("wrong_shape", False)]
                    for _ in range(2):
                        try:
                            stream = up.script[0][1]
                            await engine.complete(CompleteArgs(prompt="direct", model=[f"{kind}:{FAKE_MODELS[kind]}"]),
                                                  progress=engine_progress if stream else None)
                        except Exception as e:  # noqa: BLE001 - the error itself is what is searched
                            outputs.append((f"engine error {kind}", f"{e!s} {getattr(e, 'to_dict', lambda: {})()}"))
                for tool, args in (("cost_report", {"period": "today", "group_by": "model"}),
                                   ("route_explain", {"prompt": "hello"})):
                    result = await client.call_tool(tool, args)
                    outputs.append((tool, "".join(getattr(b, "text", "") for b in result.content)))
                for uri in ("llm-router://ledger", "llm-router://providers", "llm-router://budgets"):
                    outputs.append((uri, (await client.read_resource(uri)).contents[0].text))
                outputs.append(("progress", "\n".join(progress_seen)))
            before_close = _ledger_files(tmp_path)
        finally:
            await engine.aclose()

    captured = capfd.readouterr()
    outputs += [("stderr", captured.err), ("stdout", captured.out), ("client log", "\n".join(logs)),
                ("logging", "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records))]
    ledger = _ledger_files(tmp_path)
    # The hostile answers were really given, and their errors really reached the ledger...
    assert any(name == "ledger.db" for name in ledger)
    joined_ledger = "".join(ledger.values()) + "".join(before_close.values())
    assert "leak" in joined_ledger and "unreadable usage" in joined_ledger
    assert any("[redacted]" in text for _w, text in outputs)
    # ...and not one piece of a key came out anywhere.
    leaks = [leak for name, data in {**{f"before close {k}": v for k, v in before_close.items()}, **ledger}.items()
             for leak in _leaks(f"ledger file {name}", data)]
    leaks += [leak for where, text in outputs for leak in _leaks(where, text)]
    assert not leaks, "\n".join(leaks)



async def test_an_adapter_failure_quoting_a_key_past_200_characters_leaves_no_part_of_it_in_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What an adapter lets escape is quoted by the engine up to 200 characters: redacted first,
    so a key that the cut would split leaves nothing of itself in the attempt, the row or the error."""
    from .conftest import make_settings

    key = KEYS["anthropic"]
    engine = Engine(make_settings(tmp_path), env={"ANTHROPIC_API_KEY": key})
    name, provider = next(iter(engine.providers.items()))
    ref = next(e.ref for e in engine.catalog if e.provider == name)

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("unexpected field in " + "x" * 150 + key + " of the answer")

    monkeypatch.setattr(provider, "complete", broken)
    try:
        with pytest.raises(Exception) as raised:
            await engine.complete(CompleteArgs(prompt="hello", model=[ref]))
    finally:
        await engine.aclose()
    text = f"{raised.value} {getattr(raised.value, 'to_dict', dict)()}"
    assert "RuntimeError" in text and "xxxx" in text  # the failure is quoted...
    ledger = _ledger_files(tmp_path)
    assert "RuntimeError" in "".join(ledger.values())  # the row and its attempt were written
    leaks = _leaks("error", text) + [leak for n, data in ledger.items() for leak in _leaks(n, data)]
    assert not leaks, "\n".join(leaks)  # ...without any of the key


def test_the_start_of_a_key_cut_off_at_the_end_of_a_head_is_redacted_with_the_whole_keys() -> None:
    from llm_router.redaction import clip, mask

    key = KEYS["openai"]
    head = (f"Bearer {key}\n" * 5 + f"Bearer {key}")[:900]  # a body read up to a cap, the last key cut
    assert mask(head, [key]).endswith("Bearer [redacted]") and not _leaks("mask", mask(head, [key]))
    assert not _leaks("clip", clip(head, [key], 200))  # redacting first shrinks the head: the cut start moves in
    assert mask("ends with the word sk", [key]) == "ends with the word sk"
