"""Candidates → filters → scores → a ``Decision`` that carries its own explanation.

The order, each step recorded in ``Decision.steps``:
1. manual override (``model``: one model or an explicit chain) — else
2. the task-type rule for ``task_type`` — else every configured model;
3. availability: key present, circuit not open;
4. fit: the prompt and ``max_tokens`` fit the context window (when it is known: an assumed
   window never excludes) and the output limit; for models not named by an override or rule,
   the model's tier meets the requested quality;
5. budget: a known price; the worst case within ``max_cost_usd``, the per-request limit and what
   every daily/monthly limit still allows; from 90% of a limit only free models;
6. score by strategy (cheapest, best, fastest, balanced). An override or rule keeps its order;
   from 50% of a limit cheaper models go first.

Pure: no I/O. ``route_explain`` shows a Decision; ``complete`` walks the very same one, and
``Decision.walk`` is that walk: the chain, with the models an override or rule named (and those
the catalog would have offered but for an open circuit) where routing left them out, so that the
call's attempts say why each was skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .budget import BudgetSnapshot, LimitState, Tier
from .capabilities import how_to_change
from .catalog import Catalog, ModelEntry
from .content import ImagePart
from .images import image_tokens
from .types import QUALITIES, BudgetExceeded, NoRoute, Quality, RouterError, Strategy, usd_str

if TYPE_CHECKING:
    from .adaptive import AdaptiveChoice

__all__ = ["RouteRequest", "Candidate", "Excluded", "Decision", "decide", "TYPICAL_OUTPUT_TOKENS"]

TYPICAL_OUTPUT_TOKENS = 500
_RANK = {q: i for i, q in enumerate(QUALITIES)}


@dataclass(frozen=True, slots=True)
class RouteRequest:
    models: tuple[str, ...] = ()
    """An explicit chain (manual override); empty when routing is left to us."""
    task_type: str | None = None
    quality: Quality | None = None
    strategy: Strategy | None = None
    max_cost_nusd: int | None = None
    tag: str = ""
    input_tokens_bound: int = 0
    """A hard upper bound on input tokens (reservations)."""
    input_tokens_typical: int = 0
    """A realistic estimate of input tokens (context fit, typical cost)."""
    max_tokens: int = 1024
    needs: frozenset[str] = frozenset()
    """The capabilities a model must have to take the call (``rich_args.needs_of``)."""
    images: tuple[ImagePart, ...] = ()
    """The call's images, counted in each model's input tokens by its provider's estimate."""
    quality_auto: dict[str, Any] | None = None
    """When the caller asked quality auto: what ``complexity.assess`` saw and decided."""


@dataclass(slots=True)
class Candidate:
    entry: ModelEntry
    worst_case_nusd: int
    typical_nusd: int
    score: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    budget_tier: Tier = "normal"

    @property
    def ref(self) -> str:
        return self.entry.ref

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.ref,
            "tier": self.entry.tier,
            "score": round(self.score, 4),
            "score_parts": {k: round(v, 4) for k, v in self.parts.items()},
            "estimated_cost_usd": usd_str(self.typical_nusd),
            "worst_case_cost_usd": usd_str(self.worst_case_nusd),
            "budget_tier": self.budget_tier,
            "context_window": self.entry.context_window,
            "context_source": self.entry.context_source,
            "capabilities": self.entry.capabilities.listed(),
        }


@dataclass(frozen=True, slots=True)
class Excluded:
    model: str
    reason: str
    """One of: no_key, disabled, circuit_open, capability_missing, context_too_small, output_limit,
    below_quality, no_price, over_max_cost, over_budget, budget_restricted."""
    detail: str
    retry: dict[str, Any] | None = None
    """For an open circuit: ``retry_at`` (ISO 8601) and ``retry_in_s``."""
    needed_nusd: int = 0
    """For a budget exclusion: the call's worst case on this model, as routing judged it."""
    room_nusd: int | None = None
    limit: LimitState | None = None
    """For a budget exclusion: the least any limit on the model's provider allows beyond what is
    spent, and that limit (``BudgetSnapshot.headroom``; None: no limit applies)."""
    missing: tuple[str, ...] = ()
    """For capability_missing: what the request needs that the model lacks."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "reason": self.reason, "detail": self.detail}
        if self.retry:
            out |= self.retry
        if self.missing:
            out["missing"] = list(self.missing)
        return out


@dataclass(slots=True)
class Decision:
    request: RouteRequest
    source: str
    strategy: Strategy
    quality: Quality
    chain: list[Candidate]
    excluded: list[Excluded]
    steps: list[str]
    budget_tier: Tier
    budget: BudgetSnapshot
    adaptive: AdaptiveChoice | None = None
    """What the adaptive strategy chose, and why (None for the other strategies)."""
    walk: Sequence[Candidate | Excluded] = field(default_factory=list)
    """What ``complete`` goes through, in order: each candidate of the chain, and each model it
    should say it skipped (see the module docstring). The chain itself when nothing is skipped
    (so read-only: a ``Sequence``, which the chain, a list of candidates, is)."""

    def explain(self) -> dict[str, Any]:
        head = self.chain[0] if self.chain else None
        return {
            "chain": [c.ref for c in self.chain],
            "source": self.source,
            "strategy": self.strategy,
            "quality": self.quality,
            "budget_tier": self.budget_tier,
            "estimated_cost_usd": None
            if head is None
            else {
                "typical": usd_str(head.typical_nusd),
                "worst_case": usd_str(head.worst_case_nusd),
                "range_over_chain": [
                    usd_str(min(c.typical_nusd for c in self.chain)),
                    usd_str(max(c.worst_case_nusd for c in self.chain)),
                ],
            },
            "candidates": [c.to_dict() for c in self.chain],
            "excluded": [e.to_dict() for e in self.excluded],
            "steps": self.steps,
            **({"adaptive": self.adaptive.explain} if self.adaptive is not None else {}),
            **({"quality_auto": self.request.quality_auto} if self.request.quality_auto is not None else {}),
        }

    def refusal(self) -> RouterError:
        """Why no model can take this call (the chain is empty): the limit, when the budget is what
        left no model (the first model it left out, with the figures routing judged it by);
        otherwise every exclusion."""
        first = next((e for e in self.excluded if e.reason in ("over_budget", "budget_restricted")), None)
        if first is not None:
            need, state = first.needed_nusd, first.limit
            over = first.room_nusd is not None and need > first.room_nusd
            if state is not None and state.check is not None and (first.reason == "budget_restricted" or over):
                return BudgetExceeded(
                    limit_name=state.check.name, limit_nusd=state.limit.limit_nusd, spent_nusd=state.spent_nusd,
                    reserved_nusd=state.reserved_nusd, needed_nusd=need, resets_at=state.check.resets_at,
                    restricted=not over,
                )
            if self.budget.per_request_nusd is not None:
                return BudgetExceeded(
                    limit_name="global per_request", limit_nusd=self.budget.per_request_nusd, spent_nusd=0,
                    reserved_nusd=0, needed_nusd=need, resets_at=None,
                )
        return NoRoute("no model can take this call", {e.model: f"{e.reason}: {e.detail}" for e in self.excluded})


Availability = Mapping[str, tuple[bool, str]]
"""provider name → (usable, why)."""
CircuitCheck = Callable[[str], tuple[bool, dict[str, Any] | None]]
"""model ref → (may call now, and when not: ``state``, ``failures``, and when open ``retry_at``
(ISO 8601) and ``retry_in_s``)."""
LatencyOf = Callable[[str], float | None]
"""model ref → recent median latency in ms (None when unknown); also used for error rates (0..1)."""


class Chooser(Protocol):
    """What ranks candidates for ``adaptive`` (``adaptive.Planner``): reads what was learned, changes nothing."""

    def choose(self, task_type: str | None, candidates: Sequence[Candidate], tier: str) -> AdaptiveChoice | None: ...


def decide(
    req: RouteRequest,
    *,
    catalog: Catalog,
    rules: Mapping[str, tuple[str, ...]],
    default_strategy: Strategy,
    default_quality: Quality,
    availability: Availability,
    circuit: CircuitCheck,
    latency_of: LatencyOf,
    budget: BudgetSnapshot,
    error_rate_of: LatencyOf = lambda ref: None,
    explain: bool = True,
    adaptive: Chooser | None = None,
) -> Decision:
    """``explain=False`` (what ``complete`` asks): a lone candidate is not scored, since its score
    changes nothing and is only ever shown by ``route_explain``."""
    strategy = req.strategy or default_strategy
    quality = req.quality or default_quality
    steps: list[str] = []
    excluded: list[Excluded] = []
    if req.quality_auto is not None:
        steps.append(f"quality auto: {quality} (complexity {req.quality_auto['score']}"
                     f"{': ' + ', '.join(req.quality_auto['reasons']) if req.quality_auto.get('reasons') else ''})")

    # 1-2. Where the candidates come from.
    if req.models:
        source = "override"
        entries = [catalog.get(ref) for ref in req.models]
        steps.append(f"manual override: the chain is {', '.join(req.models)}, in that order")
    elif req.task_type and req.task_type in rules:
        source = f"rule:{req.task_type}"
        entries = [catalog.get(ref) for ref in rules[req.task_type]]
        steps.append(f"task-type rule {req.task_type!r}: {', '.join(e.ref for e in entries)}, in that order")
    else:
        source = "catalog"
        entries = list(catalog)
        why = f"no rule for task_type {req.task_type!r}; " if req.task_type else ""
        steps.append(f"{why}every configured model is a candidate ({len(entries)})")
    ordered = source != "catalog"
    # The exclusions the call's attempts list as skipped: every one among the models an override
    # or rule named; from the catalog, the models left out only for an open circuit.
    listed: list[Excluded] = []

    def exclude_and_list(out: Excluded) -> None:
        excluded.append(out)
        listed.append(out)

    exclude: Callable[[Excluded], None] = exclude_and_list if ordered else excluded.append

    # 3. Availability.
    kept: list[ModelEntry] = []
    for e in entries:
        usable, why = availability.get(e.provider, (False, "not configured"))
        if not usable:
            exclude(Excluded(e.ref, "disabled" if "disabled" in why else "no_key", why))
            continue
        may, info = circuit(e.ref)
        if not may:
            out = _circuit_open(e.ref, info)
            exclude(out)
            if not ordered and _RANK[e.tier] >= _RANK[quality]:
                listed.append(out)
            continue
        kept.append(e)
    steps.append(f"availability: {len(kept)} of {len(entries)} usable")

    # 3b. Capabilities: what the request asks of a model (tools, images, a schema, parameters).
    if req.needs:
        able: list[ModelEntry] = []
        for e in kept:
            lacks = e.capabilities.missing(req.needs)
            if lacks:
                exclude(Excluded(e.ref, "capability_missing", f"it cannot take {', '.join(lacks)} ({e.capabilities.source}"
                                 f"{how_to_change(e.model, e.capabilities)})", missing=tuple(lacks)))
            else:
                able.append(e)
        steps.append(f"capabilities ({', '.join(sorted(req.needs))}): {len(able)} of {len(kept)} can take the request")
        kept = able

    # 4. Fit. The quality floor applies to the catalog's models, but not for adaptive when the
    # caller named no quality: adaptive's own measure of quality is what it learned.
    floor = not ordered and (req.quality is not None or strategy != "adaptive")
    fitting: list[ModelEntry] = []
    guessed: list[str] = []
    seen_by = _image_tokens(req.images, kept) if req.images else {}
    for e in kept:
        need = req.input_tokens_typical + seen_by.get(e.ref, 0) + req.max_tokens
        if need > e.context_window and e.context_known:
            out = Excluded(e.ref, "context_too_small", f"about {need - req.max_tokens} input + {req.max_tokens} output tokens exceed its {e.context_window}-token window ({e.context_source})")
        elif e.max_output_tokens is not None and req.max_tokens > e.max_output_tokens:
            out = Excluded(e.ref, "output_limit", f"max_tokens {req.max_tokens} is above its output limit of {e.max_output_tokens}")
        elif floor and _RANK[e.tier] < _RANK[quality]:
            out = Excluded(e.ref, "below_quality", f"tier {e.tier} is below the requested quality {quality}")
        else:
            if need > e.context_window:
                guessed.append(e.ref)
            fitting.append(e)
            continue
        exclude(out)
    steps.append(f"fit (context window, output limit{', quality ≥ ' + quality if floor else ''}): {len(fitting)} left")
    if guessed:
        steps.append(f"kept though the call may not fit, since their windows are only assumed: {', '.join(guessed)}")

    # 5. Budget.
    candidates: list[Candidate] = []
    for e in fitting:
        seen = seen_by.get(e.ref, 0)
        worst = e.worst_case_nusd(req.input_tokens_bound + seen, req.max_tokens)
        typical = e.typical_nusd(req.input_tokens_typical + seen, min(req.max_tokens, TYPICAL_OUTPUT_TOKENS))
        if worst is None or typical is None:
            exclude(Excluded(e.ref, "no_price", f"no price known ({e.price_source}); it cannot be budgeted"))
            continue
        if req.max_cost_nusd is not None and worst > req.max_cost_nusd:
            exclude(Excluded(e.ref, "over_max_cost", f"worst case ${usd_str(worst)} is above max_cost_usd ${usd_str(req.max_cost_nusd)}"))
            continue
        room, state = budget.headroom(e.provider)
        if budget.per_request_nusd is not None and worst > budget.per_request_nusd:
            exclude(Excluded(e.ref, "over_budget", f"worst case ${usd_str(worst)} is above the per-request limit ${usd_str(budget.per_request_nusd)}",
                             needed_nusd=worst, room_nusd=room, limit=state))
            continue
        if room is not None and state is not None and worst > room:
            exclude(Excluded(e.ref, "over_budget", f"worst case ${usd_str(worst)} does not fit: {state.limit.scope} {state.limit.period} has ${usd_str(room)} left (resets {state.check.resets_at if state.check else 'never'})",
                             needed_nusd=worst, room_nusd=room, limit=state))
            continue
        tier = budget.tier(e.provider)
        if tier in ("restricted", "exhausted") and not e.free:
            exclude(Excluded(e.ref, "budget_restricted", "a limit is 90% used or more: only free models are allowed",
                             needed_nusd=worst, room_nusd=room, limit=state))
            continue
        candidates.append(Candidate(e, worst, typical, budget_tier=tier))
    overall_tier = budget.tier()
    steps.append(f"budget (tier {overall_tier}): {len(candidates)} within every limit")

    # 6. Score.
    if explain or len(candidates) > 1:
        _score(candidates, strategy, quality, latency_of, error_rate_of)
    chosen: AdaptiveChoice | None = None
    if ordered:
        steps.append("order kept as given; scores shown for information")
    else:
        candidates.sort(key=lambda c: (-c.score, c.typical_nusd, c.ref))
        if strategy == "adaptive" and adaptive is not None:
            chosen = adaptive.choose(req.task_type, candidates, overall_tier)
            first = next((c for c in candidates if chosen is not None and c.ref == chosen.ref), None)
            if first is not None:
                candidates.remove(first)
                candidates.insert(0, first)
            steps.append(f"ranked by strategy adaptive ({chosen.mode if chosen else 'one candidate'}): "
                         f"{chosen.explain['why'] if chosen else 'nothing to choose'}; the rest as balanced ranks them")
        else:
            steps.append(f"ranked by strategy {strategy}")
    reordered = False
    if any(c.budget_tier == "cautious" for c in candidates):
        candidates.sort(key=lambda c: (c.worst_case_nusd, -c.score))
        steps.append("a limit is 50% used or more: cheaper models moved first")
        reordered = True
    if candidates:
        steps.append(f"first choice: {candidates[0].ref}")
    return Decision(req, source, strategy, quality, candidates, excluded, steps, overall_tier, budget, chosen,
                    _walk(candidates, listed, entries if ordered and not reordered else None))


def _image_tokens(images: tuple[ImagePart, ...], entries: list[ModelEntry]) -> dict[str, int]:
    """The input tokens the call's images may take on each model (``images.image_tokens``: an
    upper bound per image, from its provider's documentation)."""
    return {e.ref: sum(image_tokens(e.kind, image, model=e.model) for image in images) for e in entries}


def _walk(chain: list[Candidate], listed: list[Excluded], order: list[ModelEntry] | None) -> Sequence[Candidate | Excluded]:
    """The chain with the listed exclusions: where they stand in ``order`` (the override or rule,
    when its order was kept), else before it."""
    if not listed:
        return chain  # the usual call: nothing to interleave
    if order is None:
        return [*listed, *chain]
    position = {e.ref: i for i, e in reversed(list(enumerate(order)))}
    return sorted([*listed, *chain], key=lambda item: position.get(item.model if isinstance(item, Excluded) else item.ref, 0))


def _circuit_open(ref: str, info: dict[str, Any] | None) -> Excluded:
    if info and info.get("state") == "half_open":
        return Excluded(ref, "circuit_open", "circuit half-open: its one trial call is in flight; it is tried again "
                        "once that call succeeds")
    if not info or info.get("retry_at") is None:
        return Excluded(ref, "circuit_open", "circuit open")
    failures = info.get("failures")
    after = f" after {failures} failed calls in a row" if failures else ""
    retry = {"retry_at": info["retry_at"], "retry_in_s": info.get("retry_in_s")}
    return Excluded(ref, "circuit_open", f"circuit open{after}; next try at {info['retry_at']} (in {info.get('retry_in_s')} s)", retry)


def _score(
    cands: list[Candidate], strategy: Strategy, quality: Quality, latency_of: LatencyOf, error_rate_of: LatencyOf
) -> None:
    if not cands:
        return
    logs = [math.log10(c.typical_nusd + 1) for c in cands]
    lo, hi = min(logs), max(logs)
    want = _RANK[quality]
    for c, lg in zip(cands, logs, strict=True):
        cost = 1.0 if hi == lo else 1 - (lg - lo) / (hi - lo)
        rank = _RANK[c.entry.tier]
        # Meeting the requested quality exactly is best; overshooting wastes money, undershooting is worse.
        fit = 1 - 0.2 * (rank - want) if rank >= want else max(0.0, 0.5 - 0.25 * (want - rank))
        p50 = latency_of(c.ref)
        speed = 0.5 if p50 is None else 1 / (1 + p50 / 1000)
        capability = rank / (len(QUALITIES) - 1)
        errors = error_rate_of(c.ref)
        reliability = 1.0 if errors is None else 1.0 - errors
        if strategy == "cheapest":
            c.parts = {"cost": cost, "quality_fit": fit}
            c.score = 0.9 * cost + 0.1 * fit
        elif strategy == "best":
            c.parts = {"capability": capability, "cost": cost}
            c.score = 0.9 * capability + 0.1 * cost
        elif strategy == "fastest":
            c.parts = {"speed": speed, "reliability": reliability, "cost": cost}
            c.score = 0.7 * speed + 0.2 * reliability + 0.1 * cost
        else:
            c.parts = {"quality_fit": fit, "cost": cost, "speed": speed, "reliability": reliability}
            c.score = 0.4 * fit + 0.35 * cost + 0.1 * speed + 0.15 * reliability
