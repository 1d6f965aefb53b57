"""Serving MCP over stdin/stdout with the event loop waiting on the pipes itself.

The SDK's stdio transport goes through anyio's file wrapper, so every line read, every write and
every flush is a trip to a worker thread and back: three thread hand-offs per call, a noticeable
part of a call's cost when the client sits on the same machine. Where stdin and stdout are pipes
or sockets (what every MCP client starts a server with, on POSIX) the loop waits for them to be
readable or writable instead, and reads and writes them directly; anywhere else (Windows, a file
or terminal on stdin) the SDK's own transport serves, unchanged.

Either way the wire is guarded the same: while serving, fd 0 reads from the null device and fd 1
writes to stderr (or the null device, without one), so a stray ``print`` or a child process cannot
corrupt the protocol stream; the wire is read and written through private duplicates, and both
descriptors are put back on exit.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from mcp.server import Server
    from mcp.server.mcpserver import MCPServer

__all__ = ["LineReader", "PipeWriter", "can_serve_natively", "serve_stdio"]

_CHUNK = 1 << 16


class LineReader:
    """The lines arriving on a pipe, decoded as UTF-8 (undecodable bytes replaced, as the SDK
    does), each with its newline; a last line without one is still given at end of input."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self._eof = False

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        buf = self._buf
        scanned = 0
        while True:
            end = buf.find(b"\n", scanned)
            if end >= 0:
                line = buf[: end + 1].decode("utf-8", "replace")
                del buf[: end + 1]
                return line
            if self._eof:
                if not buf:
                    raise StopAsyncIteration
                line = buf.decode("utf-8", "replace")
                buf.clear()
                return line
            scanned = len(buf)
            await anyio.wait_readable(self.fd)
            try:
                chunk = os.read(self.fd, _CHUNK)
            except BlockingIOError:  # a pipe left non-blocking by whoever made it, and nothing there after all
                continue
            if chunk:
                buf += chunk
            else:
                self._eof = True


class PipeWriter:
    """Writes text to a pipe without blocking the loop: the descriptor is made non-blocking, a
    write goes straight out when the pipe has room (the usual case) and waits for room when the
    reader is behind. Each ``write`` sends its whole text before returning; ``flush`` has nothing
    left to do."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    async def write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8"))
        while data:
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                await anyio.wait_writable(self.fd)

    async def flush(self) -> None:
        return None


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def can_serve_natively() -> bool:
    """True where the loop can wait on stdin and stdout itself: POSIX, both of them pipes or sockets."""
    return sys.platform != "win32" and _is_pipe(0) and _is_pipe(1)


def _divert(fd: int, target: str | int) -> None:
    """Point ``fd`` at ``target``: a path opened for it, or another descriptor."""
    if isinstance(target, int):
        os.dup2(target, fd)
        return
    other = os.open(target, os.O_RDONLY if fd == 0 else os.O_WRONLY)
    try:
        os.dup2(other, fd)
    finally:
        os.close(other)


def _has_stderr() -> bool:
    """Whether fd 2 is the stderr this process started with. When it started without one, fd 2
    may since have been handed to something else (the event loop's own socket, say)."""
    try:
        return sys.__stderr__ is not None and sys.__stderr__.fileno() == 2
    except (OSError, ValueError):
        return False


@contextmanager
def _claimed_std_fds() -> Iterator[tuple[int, int]]:
    """Private duplicates of the wire's fd 0 and 1 (numbered above 2, closed in child processes),
    with 0 and 1 themselves pointed away from it while serving (null device; stderr, or the null
    device when there is none) and put back afterwards."""
    import fcntl

    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    try:
        wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        os.close(wire_in)
        raise
    blocking = os.get_blocking(wire_out)
    with suppress(OSError, ValueError):
        sys.stdout.flush()
    try:
        _divert(0, os.devnull)
        _divert(1, 2 if _has_stderr() else os.devnull)
        yield wire_in, wire_out
    finally:
        with suppress(OSError, ValueError):
            sys.stdout.flush()  # what was printed while serving goes to stderr, not the wire
        os.set_blocking(wire_out, blocking)  # the flag is shared with whoever else holds the pipe
        os.dup2(wire_out, 1)
        os.dup2(wire_in, 0)
        os.close(wire_out)
        os.close(wire_in)


async def serve_stdio(server: Server[Any] | MCPServer) -> None:
    """Run ``server`` over this process's stdin and stdout until the client closes stdin."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.stdio import stdio_server

    # An MCPServer (the benchmark's bare floor) is served by the low-level server inside it.
    low = server._lowlevel_server if isinstance(server, MCPServer) else server
    if not can_serve_natively():
        async with stdio_server() as (read_stream, write_stream):
            await low.run(read_stream, write_stream, low.create_initialization_options())
        return
    with _claimed_std_fds() as (wire_in, wire_out):
        # Duck-typed for what stdio_server uses of its anyio files: async line iteration, write, flush.
        stdin: Any = LineReader(wire_in)
        stdout: Any = PipeWriter(wire_out)
        async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
            await low.run(read_stream, write_stream, low.create_initialization_options())
