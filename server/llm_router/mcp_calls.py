"""One ``complete`` as the MCP surface runs it: in the background, its outcome kept, and what a
cancellation does to it.

The call runs as a server-owned task (``background``), and the request waits for it. When the
request is cancelled (the client's tool timeout sends ``notifications/cancelled``; a stateless
HTTP client just drops its connection, which cancels the request the same way):

* before any model was asked, the call is aborted: nothing was spent;
* after, with ``on_cancel: "finish"`` (the default), the call goes on to its end, is billed and
  settled as usual (one ledger row) and its answer kept (``answers``), for the caller to read at
  ``llm-router://answers/{request_id}``; no more progress or log messages go to the request;
* with ``on_cancel: "abort"`` it is cancelled as it always was: a ``cancelled`` row, what was
  streamed billed, its holds freed, before the request's cancellation completes.

A call run as a task (``mcp_tasks``) is started the same way and not waited for.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any, Literal

import anyio

from .access import Access, error_view, result_view
from .answers import Kept
from .attempts import Progress
from .calls import CompleteArgs, CompleteResult
from .mcp_state import ServerState, Wire, error, ok
from .types import InvalidInput, RouterError

__all__ = ["ABORT_WAIT_S", "AS_TASK", "CallCancelled", "KeptCall", "kept_result", "summary_text"]

log = logging.getLogger("llm_router.mcp")

ABORT_WAIT_S = 10.0
"""How long an aborted call's request waits for it to record its row and free its holds."""

AS_TASK: contextvars.ContextVar[bool] = contextvars.ContextVar("llm_router.as_task", default=False)
"""Set by the Tasks extension around a ``tools/call`` it decided to run as a task."""


class _Unexpected(RouterError):
    """A call in the background failed in a way the router did not foresee (a bug): logged."""

    code = "internal"


def summary_text(result: CompleteResult, note: str) -> str:
    """The text of an answer: the answer (its tool calls too), who answered, tokens, cost, request id."""
    failed = any(a.outcome != "ok" for a in result.attempts)
    u = result.usage
    tokens = f"{u.input_tokens} in / {u.output_tokens} out" + (" (estimated)" if u.estimated else "")
    answer = result.text
    if result.tool_calls:  # a client that reads only the text sees the calls too
        calls = "\n".join(f"- {c.name} {json.dumps(c.arguments, ensure_ascii=False)} (id {c.id})" for c in result.tool_calls)
        answer = f"{answer}\n\ntool calls:\n{calls}" if answer else f"tool calls:\n{calls}"
    summary = (
        f"{answer}\n\n— {result.model}, {tokens}, "
        f"${result.cost_usd}{' after fallback' if failed else ''}; request {result.request_id}{note}"
    )
    if result.notes:
        summary += "".join(f"\n{line}" for line in result.notes)
    return summary


def kept_result(state: ServerState, access: Access, kept: Kept) -> Wire | None:
    """A kept call's result as ``access`` may see it, through the same views as the live result
    (None: it has none, being under way or cancelled)."""
    if kept.structured is not None and kept.summary is not None:
        return ok(state, result_view(access, "complete", kept.structured), kept.summary)
    if kept.failure is not None:
        return error(state, error_view(access, kept.failure))
    return None


class CallCancelled(RouterError):
    """The call was cancelled while its request still waited: by ``tasks/cancel`` on its id, or
    by the server shutting down. Its row says ``cancelled``."""

    code = "cancelled"


class KeptCall:
    """One ``complete``: its kept entry, its run in the background, and its outcome."""

    def __init__(self, state: ServerState, access: Access, args: CompleteArgs, note: str, request_id: str) -> None:
        self.state, self.access, self.args, self.note = state, access, args, note
        tag = access.tag if access.tag is not None else (args.tag or "").strip()
        self.kept = state.engine.answers.start(request_id, tag)
        self.result: CompleteResult | None = None
        self.error: BaseException | None = None
        self.detached = False
        """The request is gone (cancelled, or a task): nothing more is sent to it."""
        self._progress: Progress | None = None
        self._first = True

    @property
    def request_id(self) -> str:
        return self.kept.request_id

    # -- what the call says as it goes ----------------------------------------------------------

    def _status(self, message: str, model: str) -> None:
        self.state.engine.answers.say(self.kept, message, model=model)

    async def _to_client(self, value: float, total: float | None, message: str) -> None:
        if self.detached or self._progress is None:
            return
        if self._first:  # the request id, early: a client that times out knows where to look
            self._first = False
            message = f"request {self.request_id}: {message}"
        await self._progress(value, total, message)

    async def _to_task(self, value: float, total: float | None, message: str) -> None:
        if value and self.kept.model is not None:  # streamed text: its length so far
            self.state.engine.answers.say(self.kept, f"streaming from {self.kept.model}: {int(value)} characters so far")

    # -- the run --------------------------------------------------------------------------------

    async def _body(self, progress: Progress | None) -> None:
        engine, kept, answers = self.state.engine, self.kept, self.state.engine.answers
        t0 = time.perf_counter()
        try:
            try:
                result = await engine.complete(self.args, progress=progress, request_id=kept.request_id,
                                               status=self._status)
            except InvalidInput as e:
                self.error = e
                answers.discard(kept)
                return
            except RouterError as e:
                self.error = e
                answers.failed(kept, e)
                await self.state.notifier.ledger_written()
                self._observe(t0, None, e)
                return
            except anyio.get_cancelled_exc_class():
                answers.cancelled(kept)
                with anyio.CancelScope(shield=True):
                    await self.state.notifier.ledger_written()
                raise
            except Exception as e:
                self.error = e
                if self.detached:
                    log.exception("complete failed unexpectedly (request %s)", kept.request_id)
                answers.failed(kept, _Unexpected(f"complete failed unexpectedly (request {kept.request_id}); "
                                                 "the server's log has the details"))
                return
            self.result = result
            summary = summary_text(result, self.note)
            answers.answered(kept, result.model, result.to_json(), summary)
            await self.state.notifier.ledger_written()
            self._observe(t0, result, None)
        finally:
            kept.done.set()

    def _observe(self, t0: float, result: Any, e: RouterError | None) -> None:
        """The observer hears of a call its request did not see end (that request already told it)."""
        if self.detached and self.state.observer is not None:
            self.state.observer.tool_done("complete", time.perf_counter() - t0, result, e)

    def _spawn(self, progress: Progress | None) -> anyio.CancelScope | None:
        scope = anyio.CancelScope()
        self.kept.scope = scope
        started = self.state.engine.background.spawn(lambda: self._body(progress), scope,
                                                     name=f"llm_router.complete.{self.request_id[:8]}")
        return scope if started else None

    async def run(self, progress: Progress | None, on_cancel: Literal["finish", "abort"]) -> tuple[CompleteResult, dict[str, Any], str]:
        """Run the call and wait for it; returns (result, its structured content as the engine
        made it, its summary). A cancellation of the request aborts it or lets it finish (see the
        module's docstring).

        Raises:
            RouterError: the call's own error (InvalidInput, NoRoute, BudgetExceeded ...).
        """
        self._progress = progress
        scope = self._spawn(self._to_client if progress is not None else None)
        if scope is None:  # the server is shutting down: run here, cancelled with the request
            await self._body(self._to_client if progress is not None else None)
        else:
            try:
                await self.kept.done.wait()
            except anyio.get_cancelled_exc_class():
                if on_cancel == "abort" or not self.kept.asked:
                    scope.cancel()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_WAIT_S):
                        await self.kept.done.wait()
                else:
                    self.detached = True
                raise
        if self.error is not None:
            raise self.error
        if self.result is None:  # cancelled from elsewhere while this request waited
            error = CallCancelled(f"the call was cancelled before it ended ({self.kept.message})")
            error.request_id = self.request_id
            raise error
        assert self.result is not None and self.kept.structured is not None and self.kept.summary is not None
        return self.result, self.kept.structured, self.kept.summary

    def start_task(self) -> bool:
        """Start the call as a task, not waited for (False: the server is shutting down)."""
        self.detached = True
        return self._spawn(self._to_task) is not None
