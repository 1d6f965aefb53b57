"""What the engine's state looks like from outside: the resources' JSON (providers, ledger rows,
budgets, the journal) and the parts of a result that describe rather than compute (the budget
after a call, the notes). Pure functions of what the engine read; the engine does the reading."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .budget import BudgetSnapshot, LimitState, Tier, tier_of, worst_tier
from .catalog import Catalog
from .config import ProviderConfig
from .estimates import note_for
from .ledger import RequestRow
from .quality import QualityBoard
from .resilience import HealthBoard
from .routing import RouteRequest
from .types import InvalidInput, usd_str

__all__ = [
    "answer_notes",
    "budget_after",
    "budgets_view",
    "journal_entries",
    "ledger_row_view",
    "ledger_day",
    "providers_view",
    "unknown_provider_note",
]


def providers_view(
    providers: Iterable[ProviderConfig], availability: Mapping[str, tuple[bool, str]], catalog: Catalog,
    health: HealthBoard, board: QualityBoard | None = None,
) -> list[dict[str, Any]]:
    """``llm-router://providers``: each provider, usable or not and why, its models with their health
    and what was learned of their answers (``quality``: estimate, ratings and confidence, overall
    and by task type)."""
    out = []
    for cfg in providers:
        usable, why = availability[cfg.name]
        models = [e for e in catalog if e.provider == cfg.name]
        out.append(
            {
                "name": cfg.name,
                "kind": cfg.kind,
                "imitates": cfg.mock.imitates if cfg.mock else None,
                "base_url": cfg.base_url,
                "usable": usable,
                "why": why,
                "models": [{**e.describe(), "health": health.describe(e.ref),
                            **({"quality": board.view(e.ref)} if board is not None else {})} for e in models],
            }
        )
    return out


def budgets_view(states: Iterable[LimitState]) -> list[dict[str, Any]]:
    """``llm-router://budgets``: every limit with spent, reserved and remaining."""
    return [s.to_dict() for s in states]


def ledger_day(day: str) -> str:
    """A day as ``llm-router://ledger/{date}`` takes it, as the ledger files rows under.

    Raises:
        InvalidInput: not a date.
    """
    try:
        return datetime.fromisoformat(day).date().isoformat()
    except ValueError:
        raise InvalidInput("date", f"{day!r} is not a date", allowed="YYYY-MM-DD") from None


def ledger_row_view(r: dict[str, Any]) -> dict[str, Any]:
    """A stored row as ``llm-router://ledger`` shows it (in place): dollars rather than
    nano-dollars, the attempts and prices as JSON values, the estimate flag as a bool."""
    r["cost_usd"] = usd_str(r.pop("cost_nusd") or 0)
    ref = r.pop("reference_cost_nusd")
    r["reference_cost_usd"] = None if ref is None else usd_str(ref)
    r["attempts"] = json.loads(r["attempts"] or "[]")
    r["prices"] = json.loads(r["prices"]) if r["prices"] else None
    r["cost_estimated"] = bool(r["cost_estimated"])
    return r


def journal_entries(rows: Sequence[RequestRow]) -> list[dict[str, Any]]:
    """The plain facts of each row waiting in the journal, newest first (as the ledger's entries)."""
    return [
        {"id": r.id, "ts": r.ts, "day": r.day, "tag": r.tag, "task_type": r.task_type, "provider": r.provider,
         "model": r.model, "status": r.status, "error_code": r.error_code, "cost_usd": usd_str(r.cost_nusd),
         "cost_estimated": bool(r.cost_estimated)}
        for r in reversed(rows)
    ]


def budget_after(snapshot: BudgetSnapshot, provider: str, cost_nusd: int) -> dict[str, Any]:
    """The tier after this call, and the limit touching it with the least left, this call's cost
    added (spend read at the call's start). Every limit is in ``llm-router://budgets``."""
    tightest: LimitState | None = None
    least = 0
    tier: Tier = "normal"
    for s in snapshot.for_provider(provider):
        after = LimitState(s.limit, s.check, s.spent_nusd + cost_nusd, s.reserved_nusd)
        if tightest is None or after.remaining_nusd < least:
            tightest, least = after, after.remaining_nusd
        tier = worst_tier((tier, tier_of(after.fraction)))
    return {"tier": tier, "tightest": None if tightest is None else tightest.to_dict()}


def answer_notes(route: RouteRequest, rules: Mapping[str, tuple[str, ...]], method: str | None) -> list[str]:
    """What the answer should tell the caller about how its call was handled: a task type no rule
    is written for (and the rule it may have meant), an estimated usage."""
    notes: list[str] = []
    if route.task_type and not route.models and route.task_type not in rules:
        close = difflib.get_close_matches(route.task_type, list(rules), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (
            f" (rules exist for: {', '.join(rules)})" if rules else " (no rules are configured)")
        notes.append(f"no routing rule for task_type {route.task_type!r}: every configured model was a candidate{hint}")
    if method is not None:
        notes.append(note_for(method))
    return notes


def unknown_provider_note(provider: str, configured: Iterable[str]) -> str:
    """A spend report's note for a provider name no provider is configured under."""
    names = list(configured)
    close = difflib.get_close_matches(provider, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"configured: {', '.join(names) or 'none'}"
    return (f"no provider named {provider!r} is configured ({hint}); only calls the ledger "
            "holds for that name are counted")
