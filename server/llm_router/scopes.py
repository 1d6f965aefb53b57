"""Budget scopes and the limits set on them: how a scope is written, what ``set_budget`` may
store, and what the configuration sets (the budget's arithmetic is in ``budget``)."""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import Any, Literal

from .config import BudgetConfig
from .types import InvalidInput, usd_to_nusd

__all__ = ["PERIODS", "Period", "configured_limit", "limit_nusd", "limit_to_store", "parse_scope"]

Period = Literal["daily", "monthly", "per_request"]
PERIODS: tuple[Period, ...] = ("daily", "monthly", "per_request")


def parse_scope(scope: str) -> tuple[Literal["global", "provider", "tag"], str | None]:
    if scope == "global":
        return "global", None
    kind, sep, name = scope.partition(":")
    if sep and name and kind in ("provider", "tag") and len(name) <= 128:
        return kind, name  # type: ignore[return-value]
    raise InvalidInput("scope", f"{scope!r} is not a budget scope", allowed='"global", "provider:NAME", "tag:NAME"')


def limit_nusd(scope: str, period: str, limit_usd: Any) -> int | None:
    """A limit to persist, checked, in nano-dollars (None removes it).

    Raises:
        InvalidInput: naming the field.
    """
    parse_scope(scope)
    if period not in PERIODS:
        raise InvalidInput("period", f"{period!r} is not a period", allowed=", ".join(PERIODS))
    if period == "per_request" and scope != "global":
        raise InvalidInput("period", "per_request limits apply to the global scope only", allowed="daily, monthly")
    if limit_usd is None:
        return None
    try:
        nusd = usd_to_nusd(limit_usd)
    except Exception:
        raise InvalidInput("limit_usd", f"{limit_usd!r} is not an amount", allowed="a number of dollars >= 0, or null") from None
    if nusd < 0:
        raise InvalidInput("limit_usd", "a limit cannot be negative", allowed="a number of dollars >= 0, or null")
    if nusd > usd_to_nusd(1_000_000_000):
        raise InvalidInput("limit_usd", "is implausibly large", allowed="at most 1e9 dollars, or null to remove the limit")
    return nusd


def limit_to_store(scope: str, limit_usd: Decimal | None, providers: Collection[str]) -> int | None:
    """A ``set_budget``'s limit as the ledger stores it, in whole nano-dollars (None: no limit).

    Raises:
        InvalidInput: an unknown provider's scope, or a limit above 0 too small to store.
    """
    kind, name = parse_scope(scope)
    if kind == "provider" and name not in providers:
        raise InvalidInput("scope", f"unknown provider {name!r}", allowed=", ".join(f"provider:{p}" for p in providers))
    stored = None if limit_usd is None or not limit_usd.is_finite() else usd_to_nusd(limit_usd)
    if stored == 0 and limit_usd:
        raise InvalidInput("limit_usd", f"${limit_usd:f} is less than half a billionth of a dollar, the ledger's "
                           "smallest amount", allowed="0 (nothing may be spent), or at least 0.000000001")
    return stored


def configured_limit(budget: BudgetConfig, scope: str, period: str) -> int | None:
    """The limit the configuration sets on ``scope``'s ``period``, in nano-dollars (None: none)."""
    kind, name = parse_scope(scope)
    if kind == "global":
        value = getattr(budget, f"{period}_usd", None)
    else:
        limits = (budget.providers if kind == "provider" else budget.tags).get(name or "")
        value = getattr(limits, f"{period}_usd", None) if limits is not None else None
    return None if value is None else usd_to_nusd(value)
