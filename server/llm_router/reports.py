"""``cost_report``: spend for a period, grouped, with budgets, a month-end projection and savings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread

from .budget import Budget
from .calls import ReportResult
from .catalog import ModelEntry
from .holds import budget_states
from .ledger import GROUPINGS, LedgerBase, RequestRow
from .ledger.base import journaled_note
from .types import InvalidInput, usd_str

__all__ = ["Journaled", "cost_report", "journaled", "period_days"]


def period_days(today: date, period: str | None, since: str | None, until: str | None) -> tuple[str, str, str]:
    """(first day, last day, label) of a named period or of since/until, both inclusive.

    Raises:
        InvalidInput: naming the field.
    """
    if since or until:
        try:
            first = datetime.fromisoformat(since).date() if since else today.replace(day=1)
            last = datetime.fromisoformat(until).date() if until else today
        except ValueError:
            raise InvalidInput("since" if since else "until", "is not a date", allowed="YYYY-MM-DD") from None
        if last < first:
            raise InvalidInput("until", "is before since", allowed="a date on or after since")
        return first.isoformat(), last.isoformat(), f"{first}..{last}"
    p = period or "this_month"
    if p == "today":
        first = last = today
    elif p == "yesterday":
        first = last = today - timedelta(days=1)
    elif p == "this_week":
        first, last = today - timedelta(days=today.weekday()), today
    elif p == "last_7_days":
        first, last = today - timedelta(days=6), today
    elif p == "last_30_days":
        first, last = today - timedelta(days=29), today
    elif p == "this_month":
        first, last = today.replace(day=1), today
    else:
        raise InvalidInput("period", f"{p!r} is not a period", allowed="today, yesterday, this_week, this_month, last_7_days, last_30_days")
    return first.isoformat(), last.isoformat(), p


@dataclass(frozen=True, slots=True)
class Journaled:
    """Rows waiting in the ledger's journal that a report or resource covers: not yet in the
    ledger's figures, but held against every limit until they are written."""

    rows: list[RequestRow]
    note: str | None

    @property
    def cost_nusd(self) -> int:
        return sum(r.cost_nusd for r in self.rows)

    def totals(self) -> dict[str, Any]:
        return {"requests": len(self.rows), "cost_usd": usd_str(self.cost_nusd)}


_NONE_WAITING = Journaled([], None)


async def journaled(
    ledger: LedgerBase, *, where: dict[str, str] | None = None, first_day: str | None = None, last_day: str | None = None,
) -> Journaled:
    """The journal's waiting rows that ``where`` (a member's view: its own tag) and the days select.

    Regression: a call whose row waited in the journal showed in no report, resource or command
    but as a hold; now each says it plainly. Free when nothing waits (one ``os.access``, no read);
    else the file is read off the event loop, never on the ledger's connection."""
    journal = ledger.journal
    if not journal.pending():
        return _NONE_WAITING
    rows = await anyio.to_thread.run_sync(lambda: journal.rows(where=where, first_day=first_day, last_day=last_day))
    if not rows:
        return _NONE_WAITING
    return Journaled(rows, journaled_note(len(rows), sum(r.cost_nusd for r in rows), journal.path))


async def cost_report(
    ledger: LedgerBase, budget: Budget, reference: ModelEntry | None, *, period: str | None, group_by: str,
    since: str | None, until: str | None, where: dict[str, str],
) -> ReportResult:
    """Read from the per-day sums, so it stays fast at millions of rows (the rows remain the truth)."""
    if group_by not in GROUPINGS:
        raise InvalidInput("group_by", f"{group_by!r} is not a grouping", allowed=", ".join(GROUPINGS))
    first, last, label = period_days(budget.clock.today(), period, since, until)

    def read() -> tuple[list[dict[str, Any]], tuple[int, int]]:  # one trip to the ledger for both
        return ledger.report(first, last, group_by, where=where), ledger.estimated(first, last, where=where)

    # The journal first: a replay between the two reads then counts a row twice, never not at all.
    waiting = await journaled(ledger, where=where, first_day=first, last_day=last)
    rows, (estimated_calls, estimated_nusd) = await ledger.run(read)
    states = await budget_states(ledger, budget)
    total = {k: sum(r[k] for r in rows) for k in ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost_nusd", "reference_cost_nusd")}
    today = budget.clock.today()
    month_first = today.replace(day=1)
    month_rows = await ledger.run(ledger.report, month_first.isoformat(), today.isoformat(), "day", where=where)
    month_spend = sum(r["cost_nusd"] for r in month_rows)
    days_in_month = ((month_first + timedelta(days=32)).replace(day=1) - month_first).days
    projection = month_spend * days_in_month // max(today.day, 1)
    savings = None
    if reference is not None:
        savings = {
            "reference_model": reference.ref,
            "reference_cost_usd": usd_str(total["reference_cost_nusd"]),
            "actual_cost_usd": usd_str(total["cost_nusd"]),
            "saved_usd": usd_str(total["reference_cost_nusd"] - total["cost_nusd"]),
            "note": "what the same tokens would have cost on the reference model (successful calls)",
        }
    return ReportResult(
        period={"name": label, "first_day": first, "last_day": last, "timezone": budget.clock.tz_name},
        group_by=group_by,
        totals={
            "requests": total["requests"],
            "errors": total["errors"],
            "input_tokens": total["input_tokens"],
            "output_tokens": total["output_tokens"],
            "cached_tokens": total["cached_tokens"],
            "cost_usd": usd_str(total["cost_nusd"]),
            # Calls whose provider reported no usage: their tokens and cost were estimated.
            "estimated_requests": estimated_calls,
            "estimated_cost_usd": usd_str(estimated_nusd),
            # Calls whose rows wait in the journal (the ledger could not take them yet): not in
            # the figures above, but held against every limit until they are written.
            "journaled_requests": len(waiting.rows),
            "journaled_cost_usd": usd_str(waiting.cost_nusd),
        },
        rows=[
            {
                group_by: r["key"],
                "requests": r["requests"],
                "errors": r["errors"],
                "input_tokens": r["input_tokens"],
                "output_tokens": r["output_tokens"],
                "cached_tokens": r["cached_tokens"],
                "cost_usd": usd_str(r["cost_nusd"]),
            }
            for r in rows
        ],
        budgets=[s.to_dict() for s in states],
        projection={
            "month_to_date_usd": usd_str(month_spend),
            "month_end_usd": usd_str(projection),
            "method": f"month-to-date spend × {days_in_month} / {today.day} days",
        },
        savings=savings,
        notes=[waiting.note] if waiting.note else [],
    )
