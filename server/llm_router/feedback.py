"""Ratings in, estimates out: what ``rate`` and the judge store, and the board they feed.

A rating is stored first (the ledger's ``ratings`` table: one per request and source, a later
one replacing it) and then folded into ``quality.QualityBoard``; at start-up the board is rebuilt
from the ledger. The caller's right to rate a request (its tag) is ``access.check_rating``'s.
"""

from __future__ import annotations

import logging
from typing import Any

from .calls import RateResult
from .ledger import LedgerBase
from .ledger.records import RatedRequest, RatingRow, now_iso
from .quality import QualityBoard
from .types import InvalidInput

__all__ = ["Feedback"]

log = logging.getLogger("llm_router.quality")

_REQUEST_ID = "the request_id a complete call returned (32 hex digits)"


class Feedback:
    def __init__(self, ledger: LedgerBase, board: QualityBoard) -> None:
        self.ledger = ledger
        self.board = board

    def load(self) -> int:
        """Rebuild the board from the ledger's ratings (at start-up, before any call)."""
        return self.board.load(self.ledger.ratings())

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
        row = RatingRow(request_id=subject.id, source="caller", ts=now_iso(), tag=subject.tag, model=subject.ref,
                        task_type=subject.task_type, score=float(score), comment=comment or None)
        replaced = await self.ledger.run(self.ledger.put_rating, row)
        self.board.observe(row, replaces=replaced)
        return RateResult(
            rating={"request_id": row.request_id, "score": score, "comment": row.comment, "model": row.model,
                    "task_type": row.task_type or None, "ts": row.ts, "replaced": replaced is not None,
                    **({"previous_score": int(replaced.score)} if replaced is not None else {})},
            estimate=self.estimate_view(row.model, row.task_type),
        )

    async def judged(self, row: RatingRow) -> None:
        """Store the judge's score of one answer and fold it in (the judge's ``store``)."""
        replaced = await self.ledger.run(self.ledger.put_rating, row)
        self.board.observe(row, replaces=replaced)

    def estimate_view(self, ref: str, task_type: str) -> dict[str, Any]:
        by_type = self.board.estimate(ref, task_type or None)
        return {"model": ref, "task_type": task_type or None, **by_type.to_dict(),
                "overall": self.board.overall(ref).to_dict()}
