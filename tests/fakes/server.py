"""Fake LLM provider HTTP servers for adapter tests.

Each :class:`FakeProvider` impersonates one provider's public HTTP API (Anthropic Messages,
OpenAI Chat Completions, Gemini generateContent, Ollama /api/chat) on 127.0.0.1, written from
the providers' own public documentation (see README.md next to this file), not from client code.

Why a hand-written asyncio HTTP/1.1 server instead of starlette/uvicorn: several faults are about
the TCP connection itself (close without a response, drop a chunked stream before its final
chunk, stall forever), and those are only faithful when we own the socket.

The server runs its own event loop in a daemon thread, so the same object works from sync pytest
fixtures (``with FakeProvider("openai") as fake``) and from async tests
(``async with FakeProvider("openai") as fake``). Every connection gets ``Connection: close``; that
keeps the tests free of keep-alive races.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio

from . import side_endpoints as side
from .anthropic import AnthropicDialect
from .dialect import (
    DEFAULT_MODELS,
    FAULTS,
    HTML_PAGE,
    KINDS,
    LONE_SURROGATE_CHUNKS,
    LONE_SURROGATE_TEXT,
    SPLIT_SURROGATE_CHUNKS,
    SPLIT_SURROGATE_TEXT,
    Dialect,
    Endpoint,
    FaultKind,
    Frames,
    Kind,
    RecordedRequest,
    Step,
    Turn,
    Usage,
    dumps,
    split_text,
)
from .gemini import GeminiDialect
from .http1 import chunk, read_request, status_head
from .ollama import OllamaDialect
from .openai import OpenAIDialect

_DIALECTS: dict[str, type[Dialect]] = {
    "anthropic": AnthropicDialect,
    "openai": OpenAIDialect,
    "gemini": GeminiDialect,
    "ollama": OllamaDialect,
}
_UNSET: Any = object()
READY_WITHIN_S = 30.0
"""How long starting, stopping or an awaited request may take before it is an error: ample on a busy
machine (a healthy server takes milliseconds), and only ever waited in full when something is wrong."""


def _rewire(body: bytes, step: Step) -> bytes:
    for old, new in step.wire_replace.items():
        body = body.replace(old, new)
    return body


@dataclass
class _Entry:
    step: Step
    remaining: int | None


class FakeProvider:
    """A fake provider API on 127.0.0.1:<free port>, scripted per request.

    Start/stop with ``with``/``async with`` or ``start()``/``stop()``. Queue behaviour with
    :meth:`reply`, :meth:`fault` or :meth:`queue`; each request to a matching endpoint consumes
    the first matching step, and with an empty script the fake answers normally with
    ``f"echo: {last user text}"`` (or ``text``) and ``usage``.
    """

    def __init__(
        self,
        kind: Kind,
        *,
        api_key: str | None = _UNSET,
        models: list[str] | None = None,
        usage: Usage | None = None,
        text: str | None = None,
        base_path: str | None = None,
        llama_cpp: bool = False,
        llama_cpp_python: bool = False,
        n_ctx: int = 4096,
        context_length: int = 131072,
        num_ctx: int | None = None,
        default_num_ctx: int = 4096,
        show_capabilities: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if kind not in _DIALECTS:
            raise ValueError(f"unknown provider kind {kind!r}; expected one of {KINDS}")
        self.kind: Kind = kind
        self.api_key: str | None = (
            (None if kind == "ollama" else f"test-{kind}-key") if api_key is _UNSET else api_key
        )
        if base_path is None:
            base_path = "/v1" if kind == "openai" else ""
        self.base_path = base_path.rstrip("/")
        self.models = list(models) if models is not None else list(DEFAULT_MODELS[kind])
        self.usage = usage or Usage()
        self.text = text
        self._dialect = _DIALECTS[kind](self.base_path)
        if (llama_cpp or llama_cpp_python) and kind != "openai":
            raise ValueError("llama_cpp=True and llama_cpp_python=True speak OpenAI-compatible servers: kind must be openai")
        self.llama_cpp_python = llama_cpp_python
        """Speak as llama-cpp-python's server (the Python one): no /props or /tokenize, but POST
        /extras/tokenize and /extras/tokenize/count at the root; no usage in streams; a prompt of
        ``n_ctx`` tokens or more refused with 400 ``context_length_exceeded`` when asked without
        streaming, and with a 200 event stream that ends before any event when streaming."""
        self.llama_cpp = llama_cpp or llama_cpp_python
        """Serve llama.cpp's GET /props and POST /tokenize at the root, send no usage in streams,
        and refuse a prompt of ``n_ctx`` tokens or more as llama.cpp does."""
        self.props: dict[str, Any] = {}
        """llama.cpp: fields laid over ``GET /props``'s answer, e.g. ``{"modalities": {"vision": True}}``."""
        if isinstance(self._dialect, OpenAIDialect):
            self._dialect.llama_cpp = self.llama_cpp
            self._dialect.llama_cpp_python = llama_cpp_python
        self.n_ctx = n_ctx
        self.context_length = context_length
        """Ollama: the trained window, in /api/show's model_info."""
        self.num_ctx = num_ctx
        """Ollama: the Modelfile's num_ctx, in /api/show's parameters (None: not set)."""
        self.default_num_ctx = default_num_ctx
        """Ollama: the server's default context, what a loaded model without num_ctx runs with."""
        self.loaded: dict[str, int] = {}
        """Ollama: models in memory (after answering a chat) and their context, as /api/ps lists them."""
        self.show_capabilities: Mapping[str, Sequence[str]] = show_capabilities or {}
        """Ollama: each model's /api/show ``capabilities`` by name; a model not named: completion, tools."""
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._script: list[_Entry] = []
        self._seq = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._error: BaseException | None = None
        self.server_errors: list[BaseException] = []
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        """Bind 127.0.0.1:0 and serve from a daemon thread with its own event loop."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), daemon=True, name=f"fake-provider-{self.kind}"
        )
        self._thread.start()
        if not ready.wait(READY_WITHIN_S) or self._error is not None:
            raise RuntimeError(f"fake {self.kind} server failed to start") from self._error
        return self

    def stop(self, timeout: float = READY_WITHIN_S) -> None:
        """Cancel every in-flight request (hangs included), close the socket, join the thread."""
        if self._thread is None or self._loop is None:
            return
        if self._stop_event is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"fake {self.kind} server did not stop within {timeout}s")
        self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeProvider:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await anyio.to_thread.run_sync(self.stop)

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client's base_url setting would be (``.../v1`` for OpenAI, the root otherwise)."""
        return self.root_url + self.base_path

    # -- scripting ---------------------------------------------------------------------------

    def queue(self, *steps: Step) -> None:
        """Append steps to the script (checked against what this provider documents)."""
        for step in steps:
            self._check(step)
        with self._cond:
            self._script.extend(_Entry(s, s.times) for s in steps)

    def reply(self, *, times: int | None = 1, **fields: Any) -> None:
        """Queue a successful answer, e.g. ``reply(text="hi", usage=Usage(5, 2))``."""
        self.queue(Step(times=times, **fields))

    def fault(self, kind: FaultKind, *, times: int | None = 1, **fields: Any) -> None:
        """Queue a fault, e.g. ``fault("status", status=429, retry_after=2)``."""
        self.queue(Step(fault=kind, times=times, **fields))

    def clear(self) -> None:
        """Forget the script and the request log."""
        with self._cond:
            self._script.clear()
            self._requests.clear()

    @property
    def pending(self) -> int:
        """Number of scripted steps not yet used (persistent steps count once)."""
        with self._cond:
            return len(self._script)

    def _check(self, step: Step) -> None:
        if step.fault is not None and step.fault not in FAULTS:
            raise ValueError(f"unknown fault {step.fault!r}; expected one of {FAULTS}")
        if step.fault == "status" and step.status is None:
            raise ValueError("fault='status' needs status=<code>")
        if step.fault == "slow" and step.delay <= 0:
            raise ValueError("fault='slow' needs delay=<seconds>")
        if step.fault == "blocked" and not self._dialect.supports_blocked:
            raise ValueError(f"{self.kind} documents no safety-block response")
        if step.fault == "stream_error" and not self._dialect.supports_stream_error:
            raise ValueError(f"{self.kind} documents no in-stream error event")
        if step.fault == "context" and step.window is not None and step.window < 1:
            raise ValueError("window must be >= 1")
        if step.finish is not None:
            self._dialect.finish(step.finish)
        if step.times is not None and step.times < 1:
            raise ValueError("times must be >= 1 or None")

    def _take(self, endpoint: Endpoint) -> Step | None:
        with self._cond:
            for i, entry in enumerate(self._script):
                if entry.step.endpoint == endpoint:
                    if entry.remaining is not None:
                        entry.remaining -= 1
                        if entry.remaining == 0:
                            del self._script[i]
                    return entry.step
        return None

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, oldest first."""
        with self._cond:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._cond:
            if not self._requests:
                raise AssertionError(f"no request reached the fake {self.kind} server")
            return self._requests[-1]

    @property
    def counts(self) -> Counter[str]:
        """Requests received per path (query string excluded)."""
        with self._cond:
            return Counter(r.path for r in self._requests)

    def wait_for_requests(self, n: int, timeout: float = READY_WITHIN_S) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived (e.g. before cancelling a hung call)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests arrived within {timeout}s")
            return list(self._requests)

    # -- server internals --------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        assert self._loop is not None
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            ready.set()
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            open_writers = list(self._writers)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for writer in open_writers:  # drop unflushed buffers so no transport outlives the loop
                writer.transport.abort()
            await server.wait_closed()
            await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            req = await read_request(reader)
            if req is not None:
                with self._cond:
                    self._requests.append(req)
                    self._cond.notify_all()
                await self._respond(req, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError, OSError):
            pass  # stop() cancelled us or the client went away: nothing left to answer
        except Exception as exc:  # a bug in the fake itself: keep it for the test to see
            self.server_errors.append(exc)
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _forever(self) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        step: Step | None = None,
    ) -> None:
        hdrs = {
            "content-type": content_type,
            "content-length": str(len(body)),
            "connection": "close",
            **(headers or {}),
        }
        if step is not None and step.retry_after is not None:
            hdrs["retry-after"] = str(step.retry_after)
        if step is not None:
            hdrs.update(step.headers)
            body = _rewire(body, step)
            hdrs["content-length"] = str(len(body))
        if step is not None and step.fault in ("cut_stream", "stall"):
            writer.write(status_head(status, hdrs) + body[: len(body) // 2])
            await writer.drain()
            if step.fault == "stall":
                await self._forever()
            return  # the handler closes the socket short of Content-Length
        writer.write(status_head(status, hdrs) + body)
        await writer.drain()

    async def _respond(self, req: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        d = self._dialect
        endpoint = d.route(req.method, req.path)
        if endpoint is None:
            status, body, ctype = d.not_found(req)
            await self._send(writer, status, body, ctype)
            return
        step = self._take(endpoint) or Step(endpoint=endpoint)
        seq = next(self._seq)
        headers = d.headers(seq)
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.fault == "close":
            return
        if step.fault == "hang":
            await self._forever()
            return
        problem = d.auth_error(req, self.api_key) or (d.validate(req) if endpoint == "generate" else None)
        if problem is not None:
            await self._send(writer, problem[0], dumps(problem[1]), headers=headers)
            return
        model = d.model(req)
        if step.fault == "status" or (step.fault == "stream_error" and not d.wants_stream(req)):
            status = step.status or d.stream_error_status
            err = d.error(
                status, error_type=step.error_type, message=step.message, code=step.code, model=model
            )
            await self._send(writer, status, dumps(err), headers=headers, step=step)
            return
        if step.fault == "html":
            await self._send(writer, 200, HTML_PAGE, "text/html; charset=utf-8", headers=headers, step=step)
            return
        if endpoint == "side":
            status, body = self._side(req)
            await self._send(writer, status, dumps(body), headers=headers, step=step)
            return
        if endpoint == "models":
            body = b'{"data": [' if step.fault == "malformed" else dumps(d.models(self.models))
            await self._send(writer, 200, body, headers=headers, step=step)
            return
        prompt = side.prompt_tokens(req.json) if self.llama_cpp or step.fault == "context" else 0
        if step.fault == "context" or (self.llama_cpp and prompt >= self.n_ctx and step.fault is None):
            if self.llama_cpp_python and step.fault is None and d.wants_stream(req):
                # What llama-cpp-python answers a stream request over its window (seen): a 200
                # stream that ends before any event, its log saying "Requested tokens (N) exceed
                # context window of W".
                await self._stream(writer, self._turn(req, replace(step, fault="empty_stream"), seq, model), headers)
                return
            window = step.window or (self.n_ctx if self.llama_cpp else 4096)
            asked = (req.json or {}).get("max_tokens") if isinstance(req.json, dict) else None
            body = d.context_error(window, max(prompt, window + 100), step.flavor,
                                   max_tokens=asked if type(asked) is int else 0)
            await self._send(writer, 400, dumps(body), headers=headers, step=step)
            return
        turn = self._turn(req, step, seq, model)
        if self.kind == "ollama":
            self.loaded[side.ollama_name(model)] = self.num_ctx or self.default_num_ctx
        if step.fault == "tool_call":
            if d.wants_stream(req):
                await self._stream(writer, turn, headers, d.tool_stream(turn))
            else:
                await self._send(writer, 200, dumps(d.tool_reply(turn)), headers=headers, step=step)
        elif d.wants_stream(req) and step.fault != "json_to_stream":
            await self._stream(writer, turn, headers)
        elif step.fault == "malformed":
            body = (
                dumps(d.missing_fields(turn))
                if step.malformed == "missing_fields"
                else b'{"id": "fake", "content": ['
            )
            await self._send(writer, 200, body, headers=headers, step=step)
        else:
            await self._send(writer, 200, dumps(d.reply(turn)), headers=headers, step=step)

    def _side(self, req: RecordedRequest) -> tuple[int, Any]:
        """llama.cpp's /props and /tokenize, Ollama's /api/show and /api/ps."""
        if req.path == "/props" and self.props:
            return 200, {**side.llama_props(self.n_ctx, f"/models/{self.models[0]}.gguf"), **self.props}
        if req.path == "/props":
            return 200, side.llama_props(self.n_ctx, f"/models/{self.models[0]}.gguf")
        if req.path == "/tokenize":
            return side.llama_tokenize(req.json)
        if req.path.startswith("/extras/tokenize"):
            return side.llama_python_tokenize(req.json, count=req.path.endswith("/count"))
        if req.path == "/api/ps":
            return 200, side.ollama_ps(self.loaded)
        body = req.json if isinstance(req.json, dict) else {}
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or side.ollama_name(name) not in {side.ollama_name(m) for m in self.models}:
            return 404, {"error": f"model '{name}' not found"}
        shown = side.ollama_show(name, context_length=self.context_length, num_ctx=self.num_ctx)
        shown["capabilities"] = side.ollama_capabilities(name, self.show_capabilities)
        return 200, shown

    def _turn(self, req: RecordedRequest, step: Step, seq: int, model: str) -> Turn:
        blocked = step.fault == "blocked"
        if step.fault == "lone_surrogate" and step.text is None and step.chunks is None:
            step = replace(step, text=LONE_SURROGATE_TEXT, chunks=LONE_SURROGATE_CHUNKS)
        elif step.fault == "split_surrogate" and step.text is None and step.chunks is None:
            step = replace(step, text=SPLIT_SURROGATE_TEXT, chunks=SPLIT_SURROGATE_CHUNKS)
        if blocked:
            text = ""
        elif step.fault == "tool_call":
            text = step.text or ""
        elif step.text is not None:
            text = step.text
        elif step.chunks is not None:
            text = "".join(step.chunks)
        elif self.text is not None:
            text = self.text
        else:
            text = f"echo: {self._dialect.last_user_text(req)}"
        chunks = [] if blocked else list(step.chunks) if step.chunks is not None else split_text(text)
        finish = self._dialect.finish(step.finish or ("filter" if blocked else "stop"))
        usage = None if step.fault == "no_usage" else (step.usage or self.usage)
        return Turn(
            req=req,
            seq=seq,
            model=model,
            text=text,
            chunks=chunks,
            usage=usage,
            finish=finish,
            blocked=blocked,
            step=step,
        )

    async def _stream(
        self, writer: asyncio.StreamWriter, t: Turn, headers: Mapping[str, str], frames: Frames | None = None
    ) -> None:
        d, step = self._dialect, t.step
        frames = frames or d.stream(t)
        hdrs = {
            "content-type": d.stream_content_type(t.req),
            "transfer-encoding": "chunked",
            "cache-control": "no-cache",
            "connection": "close",
            **headers,
            **step.headers,
        }
        writer.write(status_head(200, hdrs))
        if step.fault == "malformed":
            body = [d.malformed_frame()]
        elif step.fault == "empty_stream":
            body = []
        elif step.fault in ("cut_stream", "stall", "stream_error"):
            body = frames.head + frames.deltas[: step.after_chunks]
        else:
            body = frames.head + frames.deltas + frames.tail
        for i, frame in enumerate(body):
            if i and step.chunk_delay:
                await asyncio.sleep(step.chunk_delay)
            writer.write(chunk(_rewire(frame, step)))
            await writer.drain()
        if step.fault == "stream_error":
            writer.write(chunk(d.stream_error_frame(t)))
        if step.fault == "stall":
            await self._forever()
            return
        if step.fault == "cut_stream" and not step.clean_eof:
            await writer.drain()
            return  # closed without the terminating zero-length chunk
        writer.write(b"0\r\n\r\n")
        await writer.drain()


@contextlib.contextmanager
def running(kind: Kind, **kwargs: Any) -> Iterator[FakeProvider]:
    """``with running("openai") as fake:`` — shorthand for ``with FakeProvider(...)``."""
    with FakeProvider(kind, **kwargs) as fake:
        yield fake


@contextlib.contextmanager
def refused_url(path: str = "") -> Iterator[str]:
    """A URL on 127.0.0.1 that refuses connections for as long as the context is open.

    The port is bound but never listened on, so connects get ECONNREFUSED and no other
    process can take the port meanwhile.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{path}"
    finally:
        sock.close()


def unused_url(path: str = "") -> str:
    """A URL on 127.0.0.1 where nothing listens now (the port could be reused later; prefer
    :func:`refused_url` when the test runs long)."""
    with refused_url(path) as url:
        return url
