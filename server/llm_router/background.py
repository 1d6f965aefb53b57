"""Calls that outlive the request that started them: a ``complete`` whose client gave up (its tool
timeout, a dropped connection) after a model was asked, or one run as a task.

Each runs as an asyncio task on the running loop, inside its own anyio cancel scope, the way the
judge's worker does (``judge``): the MCP transports own the loop, and no task group of ours outlives
a request. ``aclose`` (from ``Engine.aclose``, at shutdown) lets the calls still running finish for
up to ``CLOSE_WAIT_S``, then cancels them through their scopes, so each still records its one
ledger row and frees its holds (the engine's steps for that are shielded), and waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["CLOSE_WAIT_S", "Background"]

log = logging.getLogger("llm_router.background")

CLOSE_WAIT_S = 10.0
"""How long shutdown waits for calls under way to finish before cancelling them."""
CANCELLED_WAIT_S = 10.0
"""How long a cancelled call is then waited for (recording its row, freeing its holds)."""


class Background:
    """The calls running in the background, each with its cancel scope."""

    def __init__(self) -> None:
        self._running: dict[asyncio.Task[None], anyio.CancelScope] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._running)

    def spawn(self, run: Callable[[], Awaitable[None]], scope: anyio.CancelScope, *, name: str) -> bool:
        """Start ``run`` inside ``scope``; False (not started) once closing."""
        if self._closed:
            return False
        task = asyncio.get_running_loop().create_task(self._run(run, scope), name=name)
        self._running[task] = scope
        task.add_done_callback(self._gone)
        return True

    def _gone(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)

    @staticmethod
    async def _run(run: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await run()
            except Exception:  # ``run`` keeps its own outcome; what escapes it is a bug, never the loop's
                log.exception("a call in the background failed unexpectedly")

    async def aclose(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Let what runs finish (at most ``wait_s``), then cancel the rest and wait for them."""
        self._closed = True
        if not self._running:
            return
        with anyio.CancelScope(shield=True):
            tasks = set(self._running)
            _, pending = await asyncio.wait(tasks, timeout=wait_s)
            if not pending:
                return
            log.warning("shutting down: cancelling %d call(s) still under way (each records its row)", len(pending))
            for task in pending:
                scope = self._running.get(task)
                if scope is not None:
                    scope.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCELLED_WAIT_S)
            for task in pending:  # a cancelled call that does not end: not waited for without end
                task.cancel()
