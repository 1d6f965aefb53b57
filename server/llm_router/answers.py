"""Answers kept after their call: what every ``complete`` past validation ended with, readable by
its ``request_id`` for ``[ledger] keep_answers_s`` seconds after it ended.

A client's tool timeout (often 60 s) is shorter than some answers take: the answer then arrives,
paid for, after the client gave up on it. Kept here, it is still the caller's to read
(``llm-router://answers/{request_id}``, and as the call's task when the client speaks the Tasks
extension), and so is a refusal or a failure, which a caller who timed out wants to know of too.

Only this server's memory holds them (not the ledger, which keeps no answer text), bounded: at most
``MAX_KEPT`` ended calls and ``MAX_BYTES`` of their text (an entry counts its answer text, its
summary and ``ENTRY_BYTES`` for the rest), the oldest ended first evicted. A call still under way
is held while it runs (it is listed as ``working``) and joins the ended ones when it ends. Each call
costs a dict insert and a move; expiry looks only at the oldest entry, so it is O(1) per call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio

from .types import BudgetExceeded, RouterError

__all__ = ["ENTRY_BYTES", "MAX_BYTES", "MAX_KEPT", "Answers", "Kept", "Status", "iso"]

MAX_KEPT = 1000
"""Ended calls kept at most; beyond, the one that ended first goes."""
MAX_BYTES = 32 * 1024 * 1024
"""Text kept at most (answers and summaries, ``ENTRY_BYTES`` per entry besides); beyond, the one
that ended first goes."""
ENTRY_BYTES = 2048
"""What an entry counts besides its text: its attempts, usage, budget figures."""

Status = Literal["working", "ok", "error", "refused", "cancelled"]
"""``working`` while the call runs; then as its ledger row says: ok (answered), error (no model
answered), refused (by a budget), cancelled (aborted)."""


def iso(unix: float) -> str:
    """A time as the Tasks extension and the resources write it: ISO 8601, UTC, milliseconds."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True, eq=False)
class Kept:
    """One call's outcome, or the call itself while it runs. ``structured`` is the answer's
    structured content as the engine made it (every caller's view is taken from it when read),
    ``summary`` its text; ``failure`` the error a call without an answer ended with."""

    request_id: str
    tag: str
    created: float
    updated: float
    status: Status = "working"
    message: str = ""
    """What the call is doing (which model is asked, a fallback, streaming), or how it ended."""
    model: str | None = None
    expires: float | None = None
    """None while the call runs."""
    structured: dict[str, Any] | None = None
    summary: str | None = None
    failure: RouterError | None = None
    size: int = ENTRY_BYTES
    asked: bool = False
    """Whether a model has been asked (from then on the call may cost something)."""
    scope: anyio.CancelScope | None = None
    """The call's own cancel scope, while it runs in the background."""
    done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def ended(self) -> bool:
        return self.status != "working"

    def first_line(self, limit: int = 200) -> str:
        """The answer's first line (or the failure's), for a listing."""
        text = self.summary if self.summary is not None else str(self.failure) if self.failure is not None else self.message
        line = text.strip().split("\n", 1)[0] if text else ""
        return line if len(line) <= limit else line[: limit - 1] + "…"


def _without_traceback(error: RouterError) -> RouterError:
    """A copy of ``error`` with its attributes but no traceback or chained errors: what is kept
    holds no frames (and so none of the call's locals) for an hour."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    return copy


class Answers:
    """The kept calls of one engine (see the module's docstring). ``keep_s`` 0 keeps nothing."""

    def __init__(self, keep_s: float, *, clock: Callable[[], float] = time.time, max_kept: int = MAX_KEPT,
                 max_bytes: int = MAX_BYTES) -> None:
        self.keep_s = keep_s
        self.clock = clock
        self.max_kept, self.max_bytes = max_kept, max_bytes
        self._ended: OrderedDict[str, Kept] = OrderedDict()
        """By the time they ended, oldest first: the first is the next to expire or be evicted."""
        self._working: dict[str, Kept] = {}
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.keep_s > 0

    def start(self, request_id: str, tag: str) -> Kept:
        """A call about to run: held (when keeping is on) until it ends."""
        now = self.clock()
        kept = Kept(request_id, tag, now, now)
        if self.enabled:
            self._working[request_id] = kept
        return kept

    def say(self, kept: Kept, message: str, *, model: str | None = None) -> None:
        """What the call is doing now; a model named means one is being asked."""
        kept.message, kept.updated = message, self.clock()
        if model is not None:
            kept.model, kept.asked = model, True

    def discard(self, kept: Kept) -> None:
        """A call refused before it began (its arguments): nothing to keep."""
        self._working.pop(kept.request_id, None)
        kept.status = "error"
        kept.done.set()

    def answered(self, kept: Kept, model: str, structured: dict[str, Any], summary: str) -> None:
        kept.model, kept.structured, kept.summary = model, structured, summary
        kept.size = ENTRY_BYTES + len(summary) + len(str(structured.get("text") or ""))
        self._end(kept, "ok", "answered by " + model)

    def failed(self, kept: Kept, error: RouterError) -> None:
        kept.failure = _without_traceback(error)
        kept.size = ENTRY_BYTES + len(str(error))
        refused = isinstance(error, BudgetExceeded)
        self._end(kept, "refused" if refused else "error", f"{'refused' if refused else 'failed'} ({error.code})")

    def cancelled(self, kept: Kept) -> None:
        self._end(kept, "cancelled", "cancelled; " + ("what the model had sent is billed" if kept.asked
                                                      else "no model was asked, nothing is billed"))

    def _end(self, kept: Kept, status: Status, message: str) -> None:
        now = self.clock()
        kept.status, kept.message, kept.updated, kept.expires, kept.scope = status, message, now, now + self.keep_s, None
        kept.done.set()
        if not self.enabled or self._working.pop(kept.request_id, None) is None:
            return  # not kept (keeping off), or a second end of the same call
        self._ended[kept.request_id] = kept
        self._bytes += kept.size
        self._expire(now)
        while self._ended and (len(self._ended) > self.max_kept or self._bytes > self.max_bytes):
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, gone = self._ended.popitem(last=False)
        self._bytes -= gone.size

    def _expire(self, now: float) -> None:
        while self._ended:
            oldest = next(iter(self._ended.values()))
            if oldest.expires is None or oldest.expires > now:
                return
            self._drop_oldest()

    def get(self, request_id: str, *, tag: str | None) -> Kept | None:
        """The call ``request_id``, running or kept, when ``tag`` (None: any tag) may see it."""
        self._expire(self.clock())
        kept = self._working.get(request_id) or self._ended.get(request_id)
        if kept is None or (tag is not None and kept.tag != tag):
            return None
        return kept

    def listing(self, *, tag: str | None) -> list[Kept]:
        """The calls ``tag`` (None: every tag) may see, running or kept, newest first."""
        self._expire(self.clock())
        calls = [k for k in (*self._working.values(), *self._ended.values()) if tag is None or k.tag == tag]
        calls.sort(key=lambda k: k.created, reverse=True)
        return calls

    def count(self, *, tag: str | None) -> int:
        return len(self.listing(tag=tag))

    def stats(self) -> dict[str, int]:
        return {"working": len(self._working), "kept": len(self._ended), "bytes": self._bytes}
