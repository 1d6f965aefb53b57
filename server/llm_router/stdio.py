"""Serving MCP over stdin/stdout: the router's own transport, with the event loop waiting on the pipes.

The SDK's stdio transport goes through anyio's file wrapper, so every line read, every write and
every flush is a trip to a worker thread and back: three thread hand-offs per call, a noticeable
part of a call's cost when the client sits on the same machine. Where stdin and stdout are pipes
or sockets (what every MCP client starts a server with) the loop waits for them to be readable or
writable instead, and reads and writes them directly; a file or a terminal is read and written in
a worker thread, as the SDK does. On Windows the SDK's transport serves, with the same guards
around it (below) except the size limit, which needs the line before the SDK parses it.

What no client or upstream can do to the wire:

* a line that is not JSON is answered with a JSON-RPC parse error (-32700, id null) and JSON that
  is not a JSON-RPC message with an invalid-request error (-32600); each is logged on stderr, and
  the connection goes on (the SDK's transport drops them silently, and the client waits forever);
* a message above ``[limits] max_message_bytes`` is refused before it is parsed (-32600, with the
  request's id, read from the message's last bytes or its first: the TypeScript SDK writes
  ``{...request, jsonrpc, id}``, so its id comes after the params, others write it first), and
  discarded as it arrives: never held whole in memory (only its first and last few KB are kept);
* text that is not valid Unicode (a lone surrogate from an upstream, half an emoji split across two
  stream chunks by a JavaScript server) is repaired on the way out, the pair rejoined or the lone
  half replaced by U+FFFD: what is written is always valid UTF-8, so no answer can make the writer
  raise and end the process after the call was billed.

And while serving, fd 0 reads from the null device and fd 1 writes to stderr (or the null device,
without one), so a stray ``print`` or a child process cannot corrupt the protocol stream; the wire
is read and written through private duplicates, and both descriptors are put back on exit.

The reading and writing of the descriptors themselves (``LineReader``, ``PipeWriter``) are
``stdio_wire``'s; this module serves MCP over them.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import TYPE_CHECKING, Any

import anyio

from .stdio_wire import LineReader, PipeWriter, TooLarge, valid_text

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from mcp.server import Server
    from mcp.server.mcpserver import MCPServer
    from mcp.shared.message import SessionMessage

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "LineReader",
    "PipeWriter",
    "TooLarge",
    "can_serve_natively",
    "limit_messages",
    "serve_stdio",
    "valid_text",
]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The default of ``[limits] max_message_bytes`` (the SDK's own limit for an HTTP request body)."""
_log = logging.getLogger("llm_router.stdio")


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


# -- messages in and out --------------------------------------------------------------------------


def _error_message(request_id: str | int | None, code: int, message: str) -> SessionMessage:
    from mcp.shared.message import SessionMessage
    from mcp_types import ErrorData, JSONRPCError

    return SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message)))


def _unreadable(line: str, exc: Exception) -> SessionMessage:
    """The answer to a line that is no JSON-RPC message: a parse error when it is not JSON at all,
    else an invalid request (with its id, when it has a usable one)."""
    from mcp_types import INVALID_REQUEST, PARSE_ERROR
    from pydantic import ValidationError

    errors = exc.errors(include_url=False) if isinstance(exc, ValidationError) else []
    not_json = next((e for e in errors if e["type"] == "json_invalid"), None)
    if not_json is not None or not errors:
        where = str(not_json["msg"]).removeprefix("Invalid JSON: ") if not_json else type(exc).__name__
        _log.warning("stdio: a line of %d characters is not JSON (%s); answered with a parse error", len(line), where)
        return _error_message(None, PARSE_ERROR, f"Parse error: the line is not valid JSON ({where})")
    request_id = None
    with suppress(ValueError, RecursionError):
        data = json.loads(line)
        candidate = data.get("id") if isinstance(data, dict) else None
        request_id = candidate if isinstance(candidate, str | int) and not isinstance(candidate, bool) else None
    _log.warning("stdio: a line of %d characters is JSON but not a JSON-RPC 2.0 message; answered with an "
                 "invalid-request error", len(line))
    return _error_message(request_id, INVALID_REQUEST,
                          "Invalid Request: not a JSON-RPC 2.0 request, notification or response")


def _with_text_repaired(line: str) -> Any:
    """A message whose JSON escapes a lone surrogate (valid JSON, which JavaScript clients write
    when they cut a string mid-emoji, but text pydantic refuses), read with the half replaced;
    None for anything else."""
    from mcp_types import jsonrpc_message_adapter

    if "\\ud" not in line.lower():
        return None
    try:
        text = valid_text(json.dumps(json.loads(line), ensure_ascii=False))
        return jsonrpc_message_adapter.validate_json(text, by_name=False)
    except Exception:  # noqa: BLE001 - not that case after all: answered as unreadable
        return None


def _too_large(found: TooLarge, limit: int) -> SessionMessage:
    from mcp_types import INVALID_REQUEST

    _log.warning("stdio: refused a message of %d bytes, above the limit of %d ([limits] max_message_bytes)",
                 found.size, limit)
    return _error_message(found.request_id, INVALID_REQUEST,
                          f"Invalid Request: a message of {found.size} bytes is above this server's limit of {limit} "
                          "bytes ([limits] max_message_bytes); it was discarded unread")


def _encoded(item: SessionMessage) -> str:
    """A message as one line of the wire. A string that UTF-8 cannot carry (a lone surrogate) makes
    pydantic's encoder raise: the message is then dumped by Python and its text repaired."""
    message = item.message
    try:
        return message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
    except (ValueError, UnicodeError):  # pydantic's serialization error is a ValueError
        data = message.model_dump(by_alias=True, exclude_unset=True, mode="json")
        return valid_text(json.dumps(data, ensure_ascii=False, separators=(",", ":"))) + "\n"


async def _pump_in(
    lines: AsyncIterator[str | TooLarge], inbound: MemoryObjectSendStream[Any], replies: MemoryObjectSendStream[Any],
    limit: int | None,
) -> None:
    from mcp.shared.message import SessionMessage
    from mcp_types import jsonrpc_message_adapter

    async with inbound, replies:
        async for line in lines:
            if isinstance(line, TooLarge):
                await replies.send(_too_large(line, limit or 0))
                continue
            try:
                message = jsonrpc_message_adapter.validate_json(line, by_name=False)
            except Exception as e:  # noqa: BLE001 - whatever a line holds, it costs that line only
                message = _with_text_repaired(line)
                if message is None:
                    if line.strip():  # a blank line between messages is no message, and no error
                        await replies.send(_unreadable(line, e))
                    continue
            await inbound.send(SessionMessage(message))


async def _pump_out(outbound: MemoryObjectReceiveStream[Any], writer: PipeWriter) -> None:
    async with outbound:
        async for item in outbound:
            await writer.write(_encoded(item))


@asynccontextmanager
async def _line_streams(
    lines: AsyncIterator[str | TooLarge], writer: PipeWriter, limit: int | None
) -> AsyncIterator[tuple[Any, Any]]:
    """The read and write streams a server runs on, fed from ``lines`` and drained into ``writer``."""
    inbound_send, inbound = anyio.create_memory_object_stream[Any](0)
    outbound, outbound_recv = anyio.create_memory_object_stream[Any](0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_pump_in, lines, inbound_send, outbound.clone(), limit)
        tg.start_soon(_pump_out, outbound_recv, writer)
        try:
            yield inbound, outbound
        finally:
            # The writer drains what is queued and stops once no one can send any more: the
            # server is done, and the reader (which answers malformed lines) ends with the input.
            outbound.close()
            inbound.close()


# -- the SDK's transport, guarded (Windows) -------------------------------------------------------


class _GuardedRead:
    """The SDK transport's read stream with every unparseable line answered (it yields them as
    exceptions, which the server would drop) instead of passed on."""

    def __init__(self, inner: Any, replies: Any) -> None:
        self._inner = inner
        self._replies = replies

    def __aiter__(self) -> _GuardedRead:
        return self

    async def __anext__(self) -> Any:
        while True:
            item = await self._inner.__anext__()
            if not isinstance(item, Exception):
                return item
            await self._replies.send(_unreadable("", item))

    async def receive(self) -> Any:
        return await self.__anext__()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _GuardedRead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _GuardedWrite:
    """The SDK transport's write stream, given only messages its encoder can write: one that
    carries text UTF-8 cannot hold is rebuilt from its repaired JSON first."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def send(self, item: SessionMessage) -> None:
        try:
            item.message.model_dump_json(by_alias=True, exclude_unset=True)
        except (ValueError, UnicodeError):
            from mcp.shared.message import SessionMessage
            from mcp_types import jsonrpc_message_adapter

            repaired = jsonrpc_message_adapter.validate_json(_encoded(item), by_name=False)
            item = SessionMessage(repaired, metadata=item.metadata)
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _GuardedWrite:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _serve_with_sdk_transport(low: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        out = _GuardedWrite(write_stream)
        await low.run(_GuardedRead(read_stream, out), out, low.create_initialization_options())


_LIMITS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def limit_messages(server: Server[Any], max_bytes: int) -> None:
    """The longest message a client may send ``server`` over stdio (``mcp_server.create_server``
    sets its configured ``[limits] max_message_bytes`` here)."""
    _LIMITS[server] = max_bytes


async def serve_stdio(server: Server[Any] | MCPServer, *, max_message_bytes: int | None = None) -> None:
    """Run ``server`` over this process's stdin and stdout until the client closes stdin.

    ``max_message_bytes`` is the longest message a client may send: by default the one set with
    ``limit_messages``, else ``DEFAULT_MAX_MESSAGE_BYTES``."""
    from mcp.server.mcpserver import MCPServer

    from .sdk_seams import lowlevel_server_of

    # An MCPServer (the benchmark's bare floor) is served by the low-level server inside it.
    low = lowlevel_server_of(server) if isinstance(server, MCPServer) else server
    limit = max_message_bytes or _LIMITS.get(low, DEFAULT_MAX_MESSAGE_BYTES)
    if sys.platform == "win32":
        await _serve_with_sdk_transport(low)
        return
    with _claimed_std_fds() as (wire_in, wire_out):
        lines = LineReader(wire_in, max_bytes=limit, threaded=not _is_pipe(wire_in))
        writer = PipeWriter(wire_out, threaded=not _is_pipe(wire_out))
        async with _line_streams(lines, writer, limit) as (read_stream, write_stream):
            await low.run(read_stream, write_stream, low.create_initialization_options())
