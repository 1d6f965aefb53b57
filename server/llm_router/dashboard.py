"""The spend dashboard's data: one period's spend per day, by provider and by model, every budget
as spent / held / left, the savings against the reference model, and the latest calls with their
attempts, for the ``dashboard`` tool and ``GET /dashboard``.

Assembled only from what the engine already reports (``Engine.cost_report``, ``Engine.budgets``,
``Engine.ledger_rows``), through the same role views (``access``) as the tools and resources: a
member sees its own tag's spend and calls, and limits every tag shares by their limit and tier
alone. No money is computed here: every figure is the Decimal text those reports give.

The page that shows it (``dashboard.html``, package data) is read once, when first asked for
(``page``): served with its data embedded (``embedded``), or as the MCP App ``ui://`` resource,
where the host hands it the tool's result.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from .access import Access, limits_view, report_tag, rows_tag, rows_view
from .calls import DATE_PATTERN, Period
from .reports import period_days
from .types import EMPTY_GROUP, InvalidInput, plural

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "CALLS_SHOWN",
    "DEFAULT_PERIOD",
    "DashboardArgs",
    "DashboardResult",
    "Page",
    "dashboard_data",
    "embedded",
    "page",
    "summary",
]

DEFAULT_PERIOD = "last_7_days"
CALLS_SHOWN = 20
"""How many of the latest calls the dashboard lists."""
_CALL_KEYS = ("id", "ts", "day", "tag", "task_type", "provider", "model", "status", "error_code", "cost_usd",
              "cost_estimated", "latency_ms", "strategy")
_ATTEMPT_KEYS = ("model", "outcome", "error_code", "latency_ms", "cost_usd")


class DashboardArgs(BaseModel):
    """Arguments of ``dashboard`` (and the query of ``GET /dashboard``)."""

    model_config = ConfigDict(extra="forbid")

    period: Period | None = Field(default=None, description=f"A named period; default {DEFAULT_PERIOD}. Or give since/until.")
    since: str | None = Field(default=None, pattern=DATE_PATTERN, description="First day, YYYY-MM-DD (inclusive).")
    until: str | None = Field(default=None, pattern=DATE_PATTERN, description="Last day, YYYY-MM-DD (inclusive).")
    tag: str | None = Field(default=None, max_length=128, description="Only calls billed to this tag.")


class DashboardResult(BaseModel):
    period: dict[str, str] = Field(description="name, first_day, last_day, timezone")
    totals: dict[str, Any] = Field(description="as cost_report's totals")
    by_day: list[dict[str, Any]] = Field(description="every day of the period, oldest first: day, requests, errors, cost_usd")
    by_provider: list[dict[str, Any]] = Field(description="provider, requests, errors, tokens, cost_usd (dearest first)")
    by_model: list[dict[str, Any]] = Field(description="model, requests, errors, tokens, cost_usd (dearest first)")
    budgets: list[dict[str, Any]] = Field(description="every limit this caller may see, as llm-router://budgets shows it")
    savings: dict[str, Any] | None = Field(description="against the reference model, as cost_report's")
    projection: dict[str, Any] = Field(description="month-end projection, as cost_report's")
    calls: list[dict[str, Any]] = Field(description=f"the {CALLS_SHOWN} latest calls, newest first, with their attempts")
    filters: dict[str, str] = Field(default_factory=dict, description="the tag the dashboard is limited to, if any")
    notes: list[str] = Field(default_factory=list, description="what the reader should know")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


MAX_DAYS = 366
"""The longest period the dashboard draws, day by day (a year, a leap day included)."""


def _every_day(first: str, last: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-day rows with the days that had no call filled in (a chart shows them as zero)."""
    have = {r["day"]: r for r in rows}
    out = []
    start = date.fromisoformat(first)
    for n in range((date.fromisoformat(last) - start).days + 1):  # not past the last day: it may be date.max
        key = (start + timedelta(days=n)).isoformat()
        r = have.get(key)
        out.append({"day": key, "requests": r["requests"] if r else 0, "errors": r["errors"] if r else 0,
                    "cost_usd": r["cost_usd"] if r else "0"})
    return out


def _call_view(row: dict[str, Any]) -> dict[str, Any]:
    """A ledger row as the dashboard lists it: what was called, how it ended, what it cost, and
    each attempt (no prompt, no error text: the ledger resource has those)."""
    out = {k: row.get(k) for k in _CALL_KEYS}
    out["attempts"] = [{k: a[k] for k in _ATTEMPT_KEYS if a.get(k) is not None}
                       for a in row.get("attempts") or [] if isinstance(a, dict)]
    return out


async def dashboard_data(engine: Engine, access: Access, args: DashboardArgs) -> DashboardResult:
    """The dashboard for ``args``'s period, as ``access`` may see it.

    Raises:
        InvalidInput: both a period and since/until, or a bad date (naming the field).
        Forbidden: a member asked for another tag.
    """
    if args.period is not None and (args.since or args.until):
        raise InvalidInput("period", "give a period or since/until, not both", allowed="one of them")
    period = args.period if args.period or args.since or args.until else DEFAULT_PERIOD
    first, last, _ = period_days(engine.budget.clock.today(), period, args.since, args.until)
    if date.fromisoformat(last) - date.fromisoformat(first) >= timedelta(days=MAX_DAYS):
        # Every day of the period is drawn: a range of centuries would hold the server for minutes.
        raise InvalidInput("since" if args.since else "until", f"is more than {MAX_DAYS} days from the other end",
                           allowed=f"since and until at most {MAX_DAYS} days apart")
    tag = report_tag(access, args.tag)
    asked = {"period": period, "since": args.since, "until": args.until, "tag": tag}
    by_day = await engine.cost_report(group_by="day", **asked)
    by_provider = await engine.cost_report(group_by="provider", **asked)
    by_model = await engine.cost_report(group_by="model", **asked)
    # The budgets resource's own figures (the reports' are the same states, read a moment apart).
    budgets = limits_view(access, await engine.budgets())
    seen = rows_tag(access) if tag is None else tag
    rows = rows_view(access, await engine.ledger_rows(limit=CALLS_SHOWN, tag=seen))
    p = by_day.period

    def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Dearest first; the sort key is exact (Decimal text compared as numbers), never a float.
        from decimal import Decimal

        return sorted(rows, key=lambda r: (-Decimal(r["cost_usd"]), -r["requests"]))

    notes = list(dict.fromkeys([*by_day.notes, *by_provider.notes]))
    return DashboardResult(
        period=p,
        totals=by_day.totals,
        by_day=_every_day(p["first_day"], p["last_day"], by_day.rows),
        by_provider=ranked(by_provider.rows),
        by_model=ranked(by_model.rows),
        budgets=budgets,
        savings=by_day.savings,
        projection=by_day.projection,
        calls=[_call_view(r) for r in rows],
        filters=by_day.filters,
        notes=notes,
    )


def summary(d: DashboardResult) -> str:
    """The dashboard as text, for clients that render no MCP App (and for the model)."""
    p, t = d.period, d.totals
    only = ", ".join(f"{k} {v!r}" for k, v in d.filters.items())
    lines = [f"Dashboard, {p['name']} ({p['first_day']}..{p['last_day']}){f', only {only}' if only else ''}: "
             f"${t['cost_usd']} over {plural(t['requests'], 'call')}, {plural(t['errors'], 'error')}"]
    busy = [r for r in d.by_day if r["requests"]]
    if busy:  # the days without calls are $0: said once, not listed
        lines.append("per day: " + ", ".join(f"{r['day']} ${r['cost_usd']}" for r in busy)
                     + (f" (no calls on the other {plural(len(d.by_day) - len(busy), 'day')})" if len(busy) < len(d.by_day) else ""))
    for title, rows, key in (("by provider", d.by_provider, "provider"), ("by model", d.by_model, "model")):
        if rows:
            lines.append(f"{title}: " + ", ".join(f"{r[key] or EMPTY_GROUP[key]} ${r['cost_usd']} ({plural(r['requests'], 'call')})"
                                                   for r in rows))
    for b in d.budgets:
        name = f"{b['scope']} {b['period']}"
        if "spent_usd" in b:
            lines.append(f"budget {name}: ${b['spent_usd']} spent, ${b['reserved_usd']} held, ${b['remaining_usd']} left "
                         f"of ${b['limit_usd']} (resets {b['resets_at']})")
        else:
            lines.append(f"budget {name}: ${b['limit_usd']}" + (f", tier {b['tier']}" if "tier" in b else ""))
    if d.savings is not None:
        s = d.savings
        lines.append(f"saved ${s['saved_usd']} against {s['reference_model']} (${s['reference_cost_usd']} there, "
                     f"${s['actual_cost_usd']} here)")
    lines.append(f"projected month end: ${d.projection['month_end_usd']}")
    if d.calls:
        lines.append("latest calls:")
        for c in d.calls[:5]:
            tried = " → ".join(f"{a['model']} {a['outcome']}" for a in c["attempts"])
            lines.append(f"  {c['ts']} {c['model'] or '-'} {c['status']} ${c['cost_usd']}" + (f" ({tried})" if tried else ""))
    lines += [f"note: {n}" for n in d.notes]
    return "\n".join(lines)


# -- the page ---------------------------------------------------------------------------------

_DATA_TAG = '<script type="application/json" id="dashboard-data">null</script>'
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


@dataclass(frozen=True, slots=True)
class Page:
    """The dashboard's HTML, and the Content-Security-Policy it is served under over HTTP: its
    one inline script and one inline style allowed by their hashes, and nothing else but
    same-origin fetches of its own data."""

    html: str
    csp: str


@cache
def page() -> Page:
    """The page, read from the package once."""
    html = resources.files("llm_router").joinpath("dashboard.html").read_text(encoding="utf-8")
    if html.count(_DATA_TAG) != 1:
        raise RuntimeError("dashboard.html must hold its data tag exactly once")
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    csp = "; ".join([
        "default-src 'none'",
        f"script-src {' '.join(hashes['script'])}",
        f"style-src {' '.join(hashes['style'])}",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return Page(html, csp)


def _script_safe(value: Any) -> str:
    """JSON that cannot end the script element it sits in."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029")


def embedded(payload: dict[str, Any]) -> str:
    """The page with ``payload`` (``{"data": ...}`` or ``{"needs_token": true}``) in its data tag."""
    return page().html.replace(_DATA_TAG, _DATA_TAG.replace(">null<", f">{_script_safe(payload)}<"))
