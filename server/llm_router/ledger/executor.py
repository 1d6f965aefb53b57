"""A ledger's executor: its steps run one at a time on a worker thread, not cancellable, each
waiting at most its call's deadline for the connection and for another process's write lock.

The SQLite ledger runs a step inline on the event loop instead when its connection is free
(``sqlite.Ledger.run_within``, with ``sqlite_locking.BusyLock.acquire_brief``): a worker-thread round
trip costs more than its SQL (about 1 ms a call, measured), and a busy file sends the step here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..types import LedgerBusy

__all__ = ["Executor"]

T = TypeVar("T")


class Executor:
    """One ledger connection's queue of steps."""

    def __init__(self, busy_here: Callable[[float], LedgerBusy]) -> None:
        """``busy_here``: the error of a step that waited its whole time for this connection."""
        self.limiter = anyio.CapacityLimiter(1)
        self.wait = threading.local()
        """``until``: the monotonic time by which the step running on this thread must have the
        write lock (None: the backend's own timeout). Set by ``on_thread`` and ``waiting``."""
        self._busy_here = busy_here

    async def on_thread(self, wait_s: float | None, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the worker thread, shielded from cancellation, waiting at
        most ``wait_s`` (None: the backend's own timeout)."""
        with anyio.CancelScope(shield=True):
            result = await self._on_thread(wait_s, fn, args, kwargs)
        return result

    async def _on_thread(self, wait_s: float | None, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        if wait_s is None:
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)
        wait_s = max(wait_s, 0.0)
        until = time.monotonic() + wait_s
        limiter = self.limiter
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            with anyio.move_on_after(wait_s) as scope:
                await limiter.acquire()
            if scope.cancelled_caught:  # this server's own ledger work kept the connection
                raise self._busy_here(wait_s) from None

        def bounded() -> T:
            self.wait.until = until
            try:
                return fn(*args, **kwargs)
            finally:
                self.wait.until = None

        try:
            return await anyio.to_thread.run_sync(bounded)
        finally:
            limiter.release()

    @contextmanager
    def waiting(self, seconds: float) -> Iterator[None]:
        """On this thread, wait at most ``seconds`` for each write lock (upkeep's own steps)."""
        before = getattr(self.wait, "until", None)
        self.wait.until = time.monotonic() + seconds
        try:
            yield
        finally:
            self.wait.until = before
