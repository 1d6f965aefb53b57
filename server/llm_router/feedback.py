"""Ratings in, estimates out: what ``rate`` and the judge store, and the board they feed.

A rating is stored first (the ledger's ``ratings`` table: one per request and source, a later
one replacing it) and then folded into ``quality.QualityBoard``; at start-up the board is rebuilt
from the ledger. The caller's right to rate a request (its tag) is ``access.check_rating``'s.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from .calls import RateResult
from .ledger import LedgerBase
from .ledger.records import RatedRequest, RatingRow, now_iso
from .prepare import is_text
from .quality import QualityBoard
from .types import InvalidInput, RouterError

__all__ = ["Feedback", "printable"]

log = logging.getLogger("llm_router.quality")

REFRESH_S = 30.0
"""How often a server folds in the ratings other servers on its ledger stored."""
CLOCK_SLACK_S = 300.0
_REQUEST_ID = "the request_id a complete call returned (32 hex digits)"
_CONTROL = {c: None for c in range(32) if chr(c) not in "\n\t"} | {0x7F: None}


def printable(text: str) -> str:
    """``text`` without control characters (new lines and tabs kept): what a stored comment may hold
    (PostgreSQL refuses NUL in text)."""
    return text.translate(_CONTROL)


class Feedback:
    def __init__(self, ledger: LedgerBase, board: QualityBoard) -> None:
        self.ledger = ledger
        self.board = board
        self._newest: str | None = None
        self._next_refresh = 0.0

    def load(self) -> int:
        """Rebuild the board from the ledger's ratings (at start-up, before any call)."""
        rows = self.ledger.ratings()
        self._seen(rows)
        return self.board.load(rows)

    def _seen(self, rows: list[RatingRow]) -> None:
        if rows:
            self._newest = max(self._newest or rows[-1].ts, max(r.ts for r in rows))
        self._next_refresh = time.monotonic() + REFRESH_S

    async def refresh_if_due(self) -> None:
        """Fold in what other servers on the same ledger rated since the last look (every
        ``REFRESH_S``; from a little before the newest rating seen, as their clocks may lag)."""
        if time.monotonic() < self._next_refresh:
            return
        self._next_refresh = time.monotonic() + REFRESH_S
        since = None
        if self._newest is not None:
            since = (datetime.fromisoformat(self._newest) - timedelta(seconds=CLOCK_SLACK_S)).isoformat(
                timespec="milliseconds")
        try:
            rows = await self.ledger.run(self.ledger.ratings, since_ts=since)
        except RouterError as e:  # a busy or unreachable ledger: the next look tries again
            log.info("ratings not refreshed: %s", e)
            return
        self._seen(rows)
        self.board.load(rows)

    async def subject(self, request_id: str) -> RatedRequest:
        """The request a rating is about, if it can be rated.

        Raises:
            InvalidInput: no such request, or one that has no answer (failed, refused, cancelled).
        """
        rid = request_id.strip().lower()
        if len(rid) != 32 or any(ch not in "0123456789abcdef" for ch in rid):
            raise InvalidInput("request_id", f"{request_id[:40]!r} is not a request id", allowed=_REQUEST_ID)
        found = await self.ledger.run(self.ledger.rated_request, rid)
        if found is None:
            raise InvalidInput("request_id", f"no request {rid} in the ledger (a call whose row could not be written "
                               "yet is rated once it is)", allowed=_REQUEST_ID)
        if found.status != "ok" or found.ref is None:
            raise InvalidInput("request_id", f"request {rid} ended with status {found.status}: it has no answer to rate",
                               allowed="a request that was answered")
        return found

    async def rate(self, subject: RatedRequest, score: int, comment: str | None) -> RateResult:
        """Store the caller's rating of ``subject`` (replacing an earlier one) and return it with
        the model's updated estimate for the request's task type."""
        assert subject.ref is not None  # subject() refuses a request without a model
        if comment is not None and printable(comment) != comment:
            raise InvalidInput("comment", "contains control characters", allowed="text; new lines and tabs are kept")
        if comment is not None and not is_text(comment):
            raise InvalidInput("comment", "holds a lone UTF-16 surrogate, which is not text", allowed="valid Unicode text")
        row = RatingRow(request_id=subject.id, source="caller", ts=now_iso(), tag=subject.tag, model=subject.ref,
                        task_type=subject.task_type, score=float(score), comment=comment or None)
        replaced = await self.ledger.run(self.ledger.put_rating, row)
        self.board.observe(row)
        return RateResult(
            rating={"request_id": row.request_id, "score": score, "comment": row.comment, "model": row.model,
                    "task_type": row.task_type or None, "ts": row.ts, "replaced": replaced is not None,
                    **({"previous_score": int(replaced.score)} if replaced is not None else {})},
            estimate=self.estimate_view(row.model, row.task_type),
        )

    async def judged(self, row: RatingRow) -> None:
        """Store the judge's score of one answer and fold it in (the judge's ``store``)."""
        await self.ledger.run(self.ledger.put_rating, row)
        self.board.observe(row)

    def estimate_view(self, ref: str, task_type: str) -> dict[str, Any]:
        by_type = self.board.estimate(ref, task_type or None)
        return {"model": ref, "task_type": task_type or None, **by_type.to_dict(),
                "overall": self.board.overall(ref).to_dict()}

