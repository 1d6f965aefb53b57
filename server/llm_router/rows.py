"""A call's one ledger row, built in one place whether the call was answered or not.

The row holds the call's facts as the ledger keeps them: the model that answered (or the last one
asked), the usage and cost billed (an answer's, plus what failed attempts still cost), the prices
charged, the attempts as JSON, the error (already passed through the redactor) and the prompt's
hash. ``Billed`` gathers what failed attempts cost as the chain is walked.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .budget import Clock
from .catalog import ModelEntry, Prices
from .ledger import RequestRow
from .prepare import Prepared
from .types import AttemptRecord, Usage, parse_model_ref, usd_str

__all__ = ["Billed", "request_row", "prices_json"]

_NOTHING = Usage()


@dataclass(slots=True)
class Billed:
    """What failed attempts of one call still cost (a withheld answer is billed), and the holds
    kept for them until the call's row records that cost."""

    usage: Usage = field(default_factory=Usage)
    nusd: int = 0
    held: list[str] = field(default_factory=list)

    def add(self, usage: Usage, nusd: int, reservation: str) -> None:
        self.usage += usage
        self.nusd += nusd
        self.held.append(reservation)


def request_row(
    prepared: Prepared,
    request_id: str,
    clock: Clock,
    *,
    status: str,
    attempts: list[AttemptRecord],
    started: float,
    strategy: str | None,
    answered_by: ModelEntry | None = None,
    usage: Usage = _NOTHING,
    cost_nusd: int = 0,
    reference_cost_nusd: int | None = None,
    error_code: str | None = None,
    error: str | None = None,
) -> RequestRow:
    """The row of a call ``started`` (``time.perf_counter``) and ending now.

    ``answered_by``: the model whose answer is returned, whose prices the row records; without one
    (a call that failed, was refused or cancelled) the row names the last model asked, or else the
    last one skipped. ``strategy`` None: the call was never routed (the ledger busy)."""
    provider: str | None
    model: str | None
    prices: str | None
    if answered_by is not None:
        provider, model, prices = answered_by.provider, answered_by.model, prices_json(answered_by)
    else:
        last = next((a for a in reversed(attempts) if a.outcome != "skipped"), attempts[-1] if attempts else None)
        provider, model = parse_model_ref(last.model) if last else (None, None)
        prices = None
    now = datetime.now(UTC)
    return RequestRow(
        id=request_id,
        ts=now.isoformat(timespec="milliseconds"),
        day=clock.day_at(now),
        status=status,
        tag=prepared.tag,
        task_type=prepared.task_type,
        provider=provider,
        model=model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cost_nusd=cost_nusd,
        cost_usd=usd_str(cost_nusd),
        cost_estimated=int(usage.estimated),
        prices=prices,
        reference_cost_nusd=reference_cost_nusd,
        latency_ms=int((time.perf_counter() - started) * 1000),
        attempts=json.dumps([a.to_dict() for a in attempts]),
        error_code=error_code,
        error=error,
        prompt_hash=prepared.prompt_hash,
        prompt=prepared.prompt_text,
        strategy=strategy,
    )


def prices_json(entry: ModelEntry) -> str:
    """The prices a row was charged at, as JSON."""
    return _prices_text(entry.price_source, entry.prices)


@functools.lru_cache(maxsize=1024)
def _prices_text(source: str, p: Prices | None) -> str:
    # Keyed by the prices themselves (not the entry): a genai-prices entry is repriced in place
    # when a dated price change takes effect.
    data: dict[str, Any] = {"source": source}
    if p is not None:
        data |= {
            "input_per_mtok": str(p.input),
            "output_per_mtok": str(p.output),
            "cached_input_per_mtok": str(p.cache_read),
            "cache_write_per_mtok": str(p.cache_write),
        }
    return json.dumps(data)
