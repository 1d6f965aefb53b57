"""The stdio wire, byte by byte: lines as they arrive on a descriptor, and text written to one,
both without blocking the event loop (``stdio`` serves MCP over them).

A line above the size limit is never held whole: it is discarded as it arrives, only its first and
last few KB kept to find its JSON-RPC id in (where the TypeScript SDK puts it, last, or where most
clients put it, first), so that the refusal can answer the request. Text that UTF-8 cannot carry
(a lone surrogate) is repaired on the way out, never refused.
"""

from __future__ import annotations

import errno
import json
import os
import re
from contextlib import suppress

import anyio

__all__ = ["LineReader", "PipeWriter", "TooLarge", "valid_text"]

_CHUNK = 1 << 16
_ID_SCAN_BYTES = 4096

def valid_text(text: str) -> str:
    """``text`` with every surrogate sorted out: a high and a low half side by side become the one
    character they encode, any other half becomes U+FFFD. What is left encodes as UTF-8."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class TooLarge:
    """What ``LineReader`` gives for a line above its limit, in place of the line (discarded)."""

    __slots__ = ("request_id", "size")

    def __init__(self, size: int, request_id: str | int | None) -> None:
        self.size = size
        self.request_id = request_id


class LineReader:
    """The lines arriving on a descriptor, decoded as UTF-8 (undecodable bytes replaced, as the SDK
    does), each with its newline; a last line without one is still given at end of input.

    A line longer than ``max_bytes`` is never buffered whole: once it passes the limit, what is
    held is dropped and the rest of it is skipped as it arrives, and a ``TooLarge`` takes its place.
    ``threaded`` reads in a worker thread (a file or terminal, which the loop cannot wait on)."""

    def __init__(self, fd: int, *, max_bytes: int | None = None, threaded: bool = False) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.threaded = threaded
        self._buf = bytearray()
        self._eof = False

    def __aiter__(self) -> LineReader:
        return self

    async def _read(self) -> bytes:
        if self.threaded:
            try:
                return await anyio.to_thread.run_sync(os.read, self.fd, _CHUNK, abandon_on_cancel=True)
            except OSError as e:
                if e.errno == errno.EIO:  # a terminal hung up: the end of input
                    return b""
                raise
        while True:
            await anyio.wait_readable(self.fd)
            try:
                return os.read(self.fd, _CHUNK)
            except BlockingIOError:  # a pipe left non-blocking by whoever made it, and nothing there after all
                continue

    async def __anext__(self) -> str | TooLarge:
        buf = self._buf
        scanned = 0
        limit = self.max_bytes
        while True:
            end = buf.find(b"\n", scanned)
            if end >= 0:
                if limit is not None and end > limit:
                    return self._drop_through(end)
                line = buf[: end + 1].decode("utf-8", "replace")
                del buf[: end + 1]
                return line
            if self._eof:
                if not buf:
                    raise StopAsyncIteration
                if limit is not None and len(buf) > limit:
                    return self._drop_through(len(buf) - 1)
                line = buf.decode("utf-8", "replace")
                buf.clear()
                return line
            if limit is not None and len(buf) > limit:
                return await self._skip_rest()
            scanned = len(buf)
            chunk = await self._read()
            if chunk:
                buf += chunk
            else:
                self._eof = True

    def _drop_through(self, end: int) -> TooLarge:
        buf = self._buf
        head, tail = bytes(buf[:_ID_SCAN_BYTES]), bytes(buf[max(0, end + 1 - _ID_SCAN_BYTES) : end + 1])
        del buf[: end + 1]
        return TooLarge(end + 1, _message_id(head, tail))

    async def _skip_rest(self) -> TooLarge:
        """Drop an over-long line, reading on until its newline (or the end of input). Only its
        first and last ``_ID_SCAN_BYTES`` are kept, to find its id in."""
        buf = self._buf
        head, tail = bytes(buf[:_ID_SCAN_BYTES]), bytes(buf[-_ID_SCAN_BYTES:])
        size = len(buf)
        buf.clear()
        while not self._eof:
            chunk = await self._read()
            if not chunk:
                self._eof = True
                break
            end = chunk.find(b"\n")
            if end >= 0:
                size += end + 1
                tail = _last(tail, chunk[:end])
                buf += chunk[end + 1:]
                break
            size += len(chunk)
            tail = _last(tail, chunk)
        return TooLarge(size, _message_id(head, tail))


def _last(tail: bytes, more: bytes) -> bytes:
    """The last ``_ID_SCAN_BYTES`` of ``tail`` followed by ``more``."""
    if len(more) >= _ID_SCAN_BYTES:
        return more[-_ID_SCAN_BYTES:]
    return (tail + more)[-_ID_SCAN_BYTES:]


def _message_id(head: bytes, tail: bytes) -> str | int | None:
    """The top-level id of an over-long message from its first and last bytes: where the
    TypeScript SDK (and so MCP Inspector) puts it, last, else where most clients put it, first."""
    found = _trailing_id(tail)
    return found if found is not None else _leading_id(head)


_ID_MEMBER = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?[0-9]{1,19})\s*[,}]')


def _leading_id(head: bytes) -> str | int | None:
    """The top-level ``"id"`` of a JSON-RPC message from its first bytes, when it comes before
    anything else that is long (clients write ``{"jsonrpc", "id", "method", "params"}``); None
    otherwise. Only keys of the outermost object count: a nested ``"id"`` never answers for it."""
    depth = 0
    i, n = 0, len(head)
    while i < n:
        c = head[i]
        if c == 0x22:  # a string: a key of the outer object may be the id
            if depth == 1 and (m := _ID_MEMBER.match(head, i)):
                with suppress(ValueError):
                    value = json.loads(m.group(1))
                    return value if isinstance(value, str | int) else None
                return None
            i += 1
            while i < n and head[i] != 0x22:
                i += 2 if head[i] == 0x5C else 1
        elif c in b"{[":
            depth += 1
        elif c in b"}]":
            depth -= 1
        i += 1
    return None


def _trailing_id(tail: bytes) -> str | int | None:
    """The top-level ``"id"`` of a JSON-RPC message from its last bytes, when it comes after
    everything that is long (the TypeScript SDK writes ``{...request, jsonrpc: "2.0", id}``); None
    otherwise. Read backwards from the closing brace, outside any string, so only keys of the
    outermost object count: a nested ``"id"`` never answers for it. A string whose start lies
    before ``tail`` (or is not certain) ends the search."""
    end = len(tail.rstrip())
    if not end or tail[end - 1] != 0x7D:  # not the end of an object: no message, or cut short
        return None
    depth = 0
    i = end - 1
    while i >= 0:
        c = tail[i]
        if c == 0x22:  # the closing quote of a string: back to its opening quote
            i -= 1
            while True:
                i = tail.rfind(b'"', 0, i + 1)
                if i < 0:
                    return None
                j = i - 1
                while j >= 0 and tail[j] == 0x5C:
                    j -= 1
                if j < 0:
                    return None  # backslashes from the very start of the tail: escaped or not, unknown
                if (i - 1 - j) % 2 == 0:
                    break  # not escaped: the string opens here
                i -= 1
            if depth == 1 and (m := _ID_MEMBER.match(tail, i)):
                with suppress(ValueError):
                    value = json.loads(m.group(1))
                    return value if isinstance(value, str | int) else None
                return None
        elif c in b"}]":
            depth += 1
        elif c in b"{[":
            depth -= 1
            if depth <= 0:
                return None  # the outermost object's opening brace: it has no id after its long part
        i -= 1
    return None


class PipeWriter:
    """Writes text to a descriptor without blocking the loop: a pipe is made non-blocking, a write
    goes straight out when it has room (the usual case) and waits for room when the reader is
    behind; ``threaded`` writes in a worker thread (a file or terminal). Each ``write`` sends its
    whole text before returning; ``flush`` has nothing left to do. Text that cannot be encoded is
    repaired (``valid_text``), never refused."""

    def __init__(self, fd: int, *, threaded: bool = False) -> None:
        self.fd = fd
        self.threaded = threaded
        if not threaded:
            os.set_blocking(fd, False)

    async def write(self, text: str) -> None:
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            encoded = valid_text(text).encode("utf-8")
        data = memoryview(encoded)
        while data:
            if self.threaded:
                data = data[await anyio.to_thread.run_sync(os.write, self.fd, data) :]
                continue
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                await anyio.wait_writable(self.fd)

    async def flush(self) -> None:
        return None
