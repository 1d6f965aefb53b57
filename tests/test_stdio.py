"""The stdio transport: lines in, text out, on real pipes, and the wire guarded from stray output."""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import mcp_types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.server.stdio import _UnownedTextWrapper

from llm_router.stdio import LineReader, PipeWriter, TooLarge

pytestmark = pytest.mark.anyio


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written: a signal arriving during a write larger than
    the pipe's buffer ends it early, and what it returns is only what went through."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def lines_through_a_pipe(chunks: list[bytes]) -> list[str]:
    """What LineReader yields when ``chunks`` arrive on a pipe one write at a time."""
    r, w = os.pipe()
    out: list[str] = []

    def feed() -> None:
        for chunk in chunks:
            write_all(w, chunk)
            time.sleep(0.001)  # let the reader see the pieces apart
        os.close(w)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, feed)
            out = [line async for line in LineReader(r)]
    finally:
        os.close(r)
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


_LINE = st.one_of(st.text(max_size=40).map(str.encode), st.binary(max_size=6))  # text, or bytes that may not decode


@settings(max_examples=80, deadline=None)
@given(lines=st.lists(_LINE, max_size=6), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_lines_are_what_the_sdk_transport_reads_from_the_same_bytes(lines: list[bytes], cuts: list[int]) -> None:
    # Multi-byte characters and undecodable bytes, cut across arbitrary chunk boundaries. No
    # carriage returns: the SDK's text layer would turn them into newlines, which JSON lines never need.
    data = b"\n".join(lines).replace(b"\r", b"")
    expected = list(_UnownedTextWrapper(io.BytesIO(data), encoding="utf-8", errors="replace"))
    assert anyio.run(lines_through_a_pipe, split(data, cuts)) == expected


async def test_a_message_larger_than_a_pipe_arrives_whole_and_crlf_framing_parses() -> None:
    big = '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": {"pad": "' + "x" * 300_000 + '"}}}'
    lines = await lines_through_a_pipe([big.encode() + b"\r\n", b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}'])
    assert [len(line) for line in lines] == [len(big) + 2, 45]
    for line in lines:  # the SDK parses each line as it comes
        mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)


async def test_writes_wait_for_a_slow_reader_without_holding_up_the_loop() -> None:
    r, w = os.pipe()
    received = bytearray()

    def slow_reader() -> None:
        while chunk := os.read(r, 4096):
            received.extend(chunk)
            time.sleep(0.0005)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.001)

    message = "".join(f"line {i} " + "é" * 50 + "\n" for i in range(4000))  # ~450 KB, several pipe-fulls
    try:
        writer = PipeWriter(w)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await writer.write(message)
            await writer.flush()
            tg.cancel_scope.cancel()
    finally:
        os.close(w)
        reader.join(timeout=30)
        os.close(r)
    assert received.decode() == message
    assert ticks > 5  # the loop ran while the pipe was full


CLAIM_SCRIPT = textwrap.dedent(
    """
    import os, sys, anyio
    from llm_router.stdio import _claimed_std_fds, can_serve_natively, LineReader, PipeWriter

    async def main():
        assert can_serve_natively()
        with _claimed_std_fds() as (wire_in, wire_out):
            assert min(wire_in, wire_out) > 2
            print("stray print"); sys.stdout.flush()
            os.write(1, b"stray write\\n")
            assert os.read(0, 10) == b""  # fd 0 no longer reads the wire
            writer = PipeWriter(wire_out)
            async for line in LineReader(wire_in):
                await writer.write("echo " + line)
        print("after", os.get_blocking(1))

    anyio.run(main)
    """
)


def test_stray_output_goes_to_stderr_and_the_std_descriptors_come_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLAIM_SCRIPT], input=b"one\ntwo\n", capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"echo one\necho two\nafter True\n"
    assert b"stray print\nstray write\n" in done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell")
def test_with_no_stderr_at_all_stray_output_still_misses_the_wire() -> None:
    # fd 2 closed: a plain dup of stdin would land on 2, and stderr is not there to divert to.
    done = subprocess.run(
        ["/bin/sh", "-c", 'exec "$0" -c "$1" 2>&-', sys.executable, CLAIM_SCRIPT],
        input=b"one\ntwo\n", capture_output=True, timeout=60, check=False,
    )
    assert (done.returncode, done.stdout) == (0, b"echo one\necho two\nafter True\n")


SERVE_WITHOUT_THE_SDK_TRANSPORT = textwrap.dedent(
    """
    import sys
    import mcp.server.stdio
    from mcp.server.mcpserver import MCPServer

    def refuse(*args, **kwargs):
        raise SystemExit("the SDK's stdio transport was used")

    MCPServer.run_stdio_async = refuse
    mcp.server.stdio.stdio_server = refuse
    from llm_router.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
async def test_serve_answers_a_client_over_pipes_with_its_own_transport(tmp_path: Path) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", SERVE_WITHOUT_THE_SDK_TRANSPORT, "serve", "--demo", "--ledger", str(tmp_path / "pipes.db")],
    )
    async with Client(params) as client:
        assert len((await client.list_tools()).tools) == 6
        for _ in range(3):
            done = await client.call_tool("complete", {"prompt": "hi " * 30_000, "quality": "low"})  # more than a pipe holds
            assert not done.is_error, done.content
            assert done.structured_content is not None and done.structured_content["usage"]["input_tokens"] > 20_000


# -- what no client or upstream can do to the wire ------------------------------------------------


class RawPeer:
    """A server process spoken to line by line, as a client that writes its own JSON would."""

    def __init__(self, args: list[str], stdin: Any = subprocess.PIPE) -> None:
        self.proc = subprocess.Popen([sys.executable, *args], stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=_env())
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr = bytearray()
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def send(self, message: Any) -> None:
        assert self.proc.stdin is not None
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next(self, timeout: float = 60) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"the server ended; stderr: {self.stderr.decode(errors='replace')[-3000:]}"
        line.decode("utf-8")  # strict: what the server writes is valid UTF-8
        return json.loads(line)

    def reply_to(self, request_id: Any, timeout: float = 60) -> dict[str, Any]:
        """The response to ``request_id``, skipping notifications (progress, logs) before it."""
        while True:
            message = self.next(timeout)
            if message.get("id") == request_id and "method" not in message:
                return message

    def initialize(self) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
        init = self.reply_to(0)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return init

    def close(self) -> list[dict[str, Any]]:
        """Close stdin; everything the server still wrote before it exited."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        rest: list[dict[str, Any]] = []
        while (line := self.lines.get(timeout=60)) is not None:
            rest.append(json.loads(line))
        self.proc.wait(60)
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return rest


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LLM_ROUTER_", "ANTHROPIC", "OPENAI", "GEMINI",
                                                                       "GOOGLE", "OLLAMA"))}


def _serve_demo(tmp_path: Path) -> list[str]:
    return ["-m", "llm_router", "serve", "--demo", "--ledger", str(tmp_path / "raw.db")]


@pytest.mark.slow
def test_a_malformed_line_is_answered_with_an_error_logged_on_stderr_and_the_connection_goes_on(tmp_path: Path) -> None:
    """The SDK's transport dropped such lines without a word: the client waited, and nothing said why."""
    peer = RawPeer(_serve_demo(tmp_path))
    try:
        peer.initialize()
        peer.send(b"this is not json\n")
        assert peer.next() == {"jsonrpc": "2.0", "id": None, "error": {
            "code": -32700, "message": "Parse error: the line is not valid JSON (expected ident at line 1 column 2)"}}
        peer.send({"id": 7, "hello": "world"})
        invalid = peer.next()
        assert (invalid["id"], invalid["error"]["code"]) == (7, -32600)
        peer.send(b"\n")  # a blank line is no message, and no error
        peer.send({"jsonrpc": "2.0", "id": 8, "method": "ping"})
        assert peer.reply_to(8) == {"jsonrpc": "2.0", "id": 8, "result": {}}
    finally:
        peer.close()
    log = peer.stderr.decode()
    assert "stdio: a line of 17 characters is not JSON" in log and "answered with a parse error" in log
    assert "is JSON but not a JSON-RPC 2.0 message" in log


SMALL_LIMIT = """
[ledger]
path = "{ledger}"
[limits]
max_message_bytes = 65536
[[providers]]
name = "mock"
kind = "mock"
models = ["m"]
[providers.prices."m"]
input_per_mtok = 1.0
output_per_mtok = 2.0
"""


@pytest.mark.slow
def test_a_message_above_the_size_limit_is_refused_unread_and_the_next_one_is_answered(tmp_path: Path) -> None:
    config = tmp_path / "limit.toml"
    config.write_text(SMALL_LIMIT.format(ledger=(tmp_path / "limit.db").as_posix()))
    peer = RawPeer(["-m", "llm_router", "serve", "--config", str(config)])
    try:
        peer.initialize()
        huge = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "complete", "arguments": {"prompt": "x" * 3_000_000}}}
        peer.send(huge)
        size = len(json.dumps(huge)) + 1
        refused = peer.reply_to(3)
        assert refused["error"] == {"code": -32600, "message": f"Invalid Request: a message of {size} bytes is above "
                                    "this server's limit of 65536 bytes ([limits] max_message_bytes); it was discarded unread"}
        peer.send({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                   "params": {"name": "route_explain", "arguments": {"prompt": "still there?"}}})
        assert not peer.reply_to(4)["result"].get("isError")
    finally:
        peer.close()
    assert f"refused a message of {size} bytes, above the limit of 65536" in peer.stderr.decode()
    import sqlite3

    with sqlite3.connect(tmp_path / "limit.db") as db:
        assert db.execute("SELECT COUNT(*) FROM requests").fetchone() == (0,), "the refused call never ran"


@pytest.mark.slow
def test_the_typescript_sdk_client_gets_the_refusal_of_an_over_long_call_at_once_and_the_next_call_answered(
    tmp_path: Path,
) -> None:
    """Seen with the TypeScript SDK and MCP Inspector: a call above the limit hung for 60 s, then
    "Request timed out" (-32001), because the refusal went out with ``id: null``."""
    from .node_peers import NODE_DIR, RUN_TIMEOUT_S, demo_server_command, node, require, server_env

    require("@modelcontextprotocol/sdk")
    huge = "x" * 4_300_000  # above the default limit of 4 MiB
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"steps": [{"tool": "complete", "arguments": {"prompt": huge}},
                                          {"tool": "route_explain", "arguments": {"prompt": "still there?"}}]}))
    started = time.monotonic()
    with plan.open("rb") as stdin:  # a file: Node's readFileSync(0) fails with EAGAIN on a pipe this long
        proc = subprocess.run([node(), "sdk_client.mjs", "stdio", *demo_server_command(tmp_path / "ledger.db")],
                              stdin=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=server_env(),
                              cwd=NODE_DIR, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-4000:]}"
    refused, after = json.loads(proc.stdout)["steps"]
    assert refused["outcome"] == "threw" and refused["code"] == -32600, refused
    assert "above this server's limit of 4194304 bytes ([limits] max_message_bytes)" in refused["message"]
    assert after["outcome"] == "result" and not after["isError"], after
    assert time.monotonic() - started < 50, "answered, not timed out (the SDK gives up after 60 s)"


async def test_an_over_long_line_is_skipped_as_it_arrives_never_held_whole() -> None:
    r, w = os.pipe()
    limit = 100_000
    line = b'{"jsonrpc": "2.0", "id": "big-1", "method": "ping", "params": {"pad": "' + b"y" * 5_000_000 + b'"}}\n'
    reader = LineReader(r, max_bytes=limit)
    held: list[int] = []
    real_read = reader._read

    async def watched() -> bytes:
        held.append(len(reader._buf))
        return await real_read()

    reader._read = watched  # type: ignore[method-assign]

    def feed() -> None:
        write_all(w, line + b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}\n')
        os.close(w)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, feed)
            out = [item async for item in reader]
    finally:
        os.close(r)
    assert isinstance(out[0], TooLarge) and (out[0].size, out[0].request_id) == (len(line), "big-1")
    assert out[1:] == ['{"jsonrpc": "2.0", "id": 2, "method": "ping"}\n']
    assert max(held) <= limit + 65536, "never more than the limit and one read's worth"


def _written_as_the_typescript_sdk_writes_it(request_id: Any, pad: int) -> bytes:
    """``{...request, jsonrpc, id}``: the id after the multi-MB params, with a nested ``"id"``, an
    escaped ``"id":`` inside a string and a string ending in a backslash just before it."""
    request = {"method": "tools/call", "params": {"name": "complete", "arguments": {
        "prompt": "y" * pad, "id": "nested-inner", "note": 'say "id": 5} \\', "list": [{"id": 6}]}}}
    return json.dumps({**request, "jsonrpc": "2.0", "id": request_id}).encode() + b"\r\n"


async def _read_all(chunks: list[bytes], limit: int) -> tuple[list[str | TooLarge], int]:
    """What a LineReader with ``limit`` yields from ``chunks`` on a pipe, and the most it held. Less
    than a pipe holds is written before reading starts, so one read has it all (the whole line in
    hand, then dropped); more is skipped as it arrives."""
    r, w = os.pipe()
    reader = LineReader(r, max_bytes=limit)
    held: list[int] = []
    real_read = reader._read

    async def watched() -> bytes:
        held.append(len(reader._buf))
        return await real_read()

    reader._read = watched  # type: ignore[method-assign]

    def feed() -> None:
        for chunk in chunks:
            write_all(w, chunk)
        os.close(w)

    try:
        if sum(map(len, chunks)) < 65536:  # what a pipe holds: all there for the first read, which finds the newline
            feed()
            out = [item async for item in reader]
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, feed)
                out = [item async for item in reader]
    finally:
        os.close(r)
    return out, max(held)


@pytest.mark.parametrize("pad", [20_000, 5_000_000], ids=["within-one-read", "skipped-as-it-arrives"])
@pytest.mark.parametrize("request_id", [7, "ts-sdk-7", -3])
async def test_an_over_long_message_whose_id_comes_last_is_refused_with_that_id_not_a_nested_one(
    pad: int, request_id: Any,
) -> None:
    """The TypeScript SDK (and MCP Inspector) write the id after the params: refused with
    ``id: null``, the client never matched the refusal and timed out 60 s later (-32001)."""
    line = _written_as_the_typescript_sdk_writes_it(request_id, pad)
    out, held = await _read_all([line, b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}\n'], limit=1_000)
    assert isinstance(out[0], TooLarge) and (out[0].size, out[0].request_id) == (len(line), request_id)
    assert out[1:] == ['{"jsonrpc": "2.0", "id": 2, "method": "ping"}\n']
    assert held <= 1_000 + 65536, "never more than the limit and one read's worth"


@pytest.mark.parametrize("pad", [20_000, 5_000_000], ids=["within-one-read", "skipped-as-it-arrives"])
async def test_an_over_long_message_ending_in_a_nested_id_is_refused_with_the_id_it_opens_with(pad: int) -> None:
    leading = {"jsonrpc": "2.0", "id": "lead-1", "method": "tools/call",
               "params": {"pad": "y" * pad, "meta": {"id": "nested-last"}}}
    no_top_level_id = {"jsonrpc": "2.0", "method": "notifications/x", "params": {"pad": "y" * pad, "id": 9}}
    lines = [json.dumps(leading).encode() + b"\n", json.dumps(no_top_level_id).encode() + b"\n"]
    out, _held = await _read_all(lines, limit=1_000)
    assert [(type(x), x.request_id) for x in out if isinstance(x, TooLarge)] == [(TooLarge, "lead-1"), (TooLarge, None)]
    assert len(out) == 2


LONE_SURROGATES = textwrap.dedent(
    """
    import sys, anyio
    from mcp.server import Server
    from mcp_types import CallToolResult, ListToolsResult, TextContent, Tool
    from llm_router import stdio

    # Half an emoji on its own, and an emoji whose halves arrived apart and were joined as two code points.
    TEXT = "lone \\ud83d here; split \\ud83d\\ude00 there"

    async def list_tools(ctx, params):
        return ListToolsResult(tools=[Tool(name="echo", input_schema={"type": "object"})])

    async def call_tool(ctx, params):
        return CallToolResult(content=[TextContent(type="text", text=TEXT)], structured_content={"text": TEXT})

    server = Server("surrogates", on_list_tools=list_tools, on_call_tool=call_tool)

    async def main():
        if sys.argv[1] == "sdk":
            await stdio._serve_with_sdk_transport(server)  # what Windows runs
        else:
            await stdio.serve_stdio(server)

    anyio.run(main)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ours", "sdk"])
def test_a_lone_surrogate_in_an_answer_reaches_the_client_as_valid_utf8_and_never_ends_the_server(
    transport: str,
) -> None:
    """It made the writer raise ``UnicodeEncodeError``: the process exited, the answer was lost."""
    peer = RawPeer(["-c", LONE_SURROGATES, transport])
    try:
        peer.initialize()
        for request_id in (1, 2):  # and again: the server is still there
            peer.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "echo"}})
            result = peer.reply_to(request_id)["result"]
            assert result["content"][0]["text"] == "lone \ufffd here; split \U0001F600 there"
            assert result["structuredContent"] == {"text": "lone \ufffd here; split \U0001F600 there"}
        # A client's own lone surrogate (valid JSON that pydantic refuses) is read with it replaced.
        peer.send(b'{"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"_meta": {"note": "\\ud83d"}}}\n')
        if transport == "ours":
            assert peer.reply_to(3) == {"jsonrpc": "2.0", "id": 3, "result": {}}
        else:  # the SDK's reader refuses the line before it can be repaired: answered as unreadable
            assert peer.next() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": (
                "Parse error: the line is not valid JSON (unexpected end of hex escape at line 1 column 83)")}}
    finally:
        peer.close()
    assert peer.proc.returncode == 0, peer.stderr.decode(errors="replace")


SLOW_MOCK = """
[ledger]
path = "{ledger}"
[[providers]]
name = "slow"
kind = "mock"
models = ["m"]
[providers.mock]
latency_ms = 30000
[providers.prices."m"]
input_per_mtok = 1.0
output_per_mtok = 2.0
"""


@pytest.mark.slow
def test_a_cancelled_request_gets_no_response(tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(SLOW_MOCK.format(ledger=(tmp_path / "slow.db").as_posix()))
    peer = RawPeer(["-m", "llm_router", "serve", "--config", str(config)])
    try:
        peer.initialize()
        peer.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": "complete", "arguments": {"prompt": "take your time"}, "_meta": {"progressToken": "p5"}}})
        started = peer.next()
        assert started["method"] == "notifications/progress", started  # the call is under way
        peer.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5, "reason": "user"}})
        peer.send({"jsonrpc": "2.0", "id": 6, "method": "ping"})
        assert peer.reply_to(6)["result"] == {}
    finally:
        rest = peer.close()
    # Had the call still been running when the input ended, it would have been answered
    # ("Connection closed") on the way out: nothing at all is said about request 5.
    assert [m for m in rest if m.get("id") == 5] == [], rest


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminal")
def test_a_terminal_on_stdin_is_served_by_our_transport_reading_in_a_worker_thread(tmp_path: Path) -> None:
    """The loop cannot wait on a terminal (nor a file): those are read in a worker thread."""
    import pty
    import tty

    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    try:
        peer = RawPeer(["-c", SERVE_WITHOUT_THE_SDK_TRANSPORT, *_serve_demo(tmp_path)[2:]], stdin=terminal)
        peer.proc.stdin = None  # what is typed goes in through the controlling side
        write_all(controller, json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "tty", "version": "1"}}}).encode()
            + b"\n")
        assert peer.reply_to(0)["result"]["serverInfo"]["name"] == "llm-router"
        write_all(controller, b"not json\n")
        assert peer.next()["error"]["code"] == -32700
        write_all(controller, b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n')
        assert peer.reply_to(1)["result"] == {}
    finally:
        os.close(terminal)
        os.close(controller)  # the terminal hangs up: the end of input
    assert peer.close() == []
    assert peer.proc.returncode == 0, peer.stderr.decode(errors="replace")


BARE_MCPSERVER = textwrap.dedent(
    """
    import anyio
    from mcp.server.mcpserver import MCPServer
    from llm_router.stdio import serve_stdio

    server = MCPServer("bare")

    @server.tool()
    async def echo(text: str) -> str:
        return text

    anyio.run(serve_stdio, server)
    """
)


@pytest.mark.slow
def test_an_mcpserver_is_served_through_the_low_level_server_inside_it() -> None:
    """What the benchmark's bare floor runs on the router's transport (the SDK keeps that server
    private: this pins the one attribute read)."""
    peer = RawPeer(["-c", BARE_MCPSERVER])
    try:
        assert peer.initialize()["result"]["serverInfo"]["name"] == "bare"
        peer.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}})
        assert peer.reply_to(1)["result"]["content"][0]["text"] == "hi"
    finally:
        peer.close()
