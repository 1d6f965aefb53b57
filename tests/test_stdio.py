"""The stdio transport: lines in, text out, on real pipes, and the wire guarded from stray output."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import mcp_types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.server.stdio import _UnownedTextWrapper

from llm_router.stdio import LineReader, PipeWriter

pytestmark = pytest.mark.anyio


async def lines_through_a_pipe(chunks: list[bytes]) -> list[str]:
    """What LineReader yields when ``chunks`` arrive on a pipe one write at a time."""
    r, w = os.pipe()
    out: list[str] = []

    def feed() -> None:
        for chunk in chunks:
            os.write(w, chunk)
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


def test_a_file_on_stdin_is_served_by_the_sdk_transport(tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text("")
    probe = "from llm_router.stdio import can_serve_natively; print(can_serve_natively())"
    with requests.open("rb") as stdin:
        from_file = subprocess.run([sys.executable, "-c", probe], stdin=stdin, capture_output=True, timeout=60, check=True)
    from_pipe = subprocess.run([sys.executable, "-c", probe], input=b"", capture_output=True, timeout=60, check=True)
    assert (from_file.stdout, from_pipe.stdout) == (b"False\n", b"True\n" if sys.platform != "win32" else b"False\n")


SERVE_WITHOUT_THE_SDK_TRANSPORT = textwrap.dedent(
    """
    import sys
    from mcp.server.mcpserver import MCPServer

    async def refuse(self):
        raise SystemExit("the SDK's stdio transport was used")

    MCPServer.run_stdio_async = refuse
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
        assert len((await client.list_tools()).tools) == 4
        for _ in range(3):
            done = await client.call_tool("complete", {"prompt": "hi " * 30_000, "quality": "low"})  # more than a pipe holds
            assert not done.is_error, done.content
            assert done.structured_content is not None and done.structured_content["usage"]["input_tokens"] > 20_000
