"""The ``adaptive`` strategy: the traffic's quality at ``target`` of always-best, at the least cost.

A user who says "95% of the best model's quality" means the whole traffic, not every call. So the
plan is made over every task type at once (``plan``), from what ``quality.QualityBoard`` estimates
each model gives on each type and from each type's share of recent traffic and typical cost:

1. every type starts on its cheapest model;
2. each step up to a dearer model (along each type's efficient frontier: the models no cheaper
   one beats, kept concave) buys ``Δquality / Δcost`` per call: its *gain per dollar*;
3. the steps are taken best gain per dollar first until the traffic's expected quality reaches
   ``target`` × what always taking each type's best model would give. The last step taken is the
   *cut-off*: it may be taken for a share of that type's calls only (spread evenly over them).

Each model is planned at its estimate plus half a standard error (``_planned``), so that a model
unlucky in its first ratings on a type is not shut out of it for good. This is the least-cost
answer to that target (the greedy solution of the multiple-choice
knapsack's relaxation, which is exact once one type may be split). ``Planner.choose`` applies it
to one call, among the models routing left (so the budget's exclusions hold, exploration's too),
and says why. Before any rating exists the call is ranked as ``balanced`` would rank it.

Exploration: a model with too little recent rating for the call's task type (a new model, or one
whose ratings faded or whose version changed) is tried on some calls, at most ``explore_share`` of
the calls and ``explore_share`` of the spend (its extra cost over the planned model, by routing's
estimates), only while no limit is past half used, and only among the models routing found within
every budget.

``Planner`` holds the little state this needs (counts and running means, in memory): ``choose``
reads it and changes nothing (``route_explain`` calls it too); the engine commits a call's choice
with ``routed`` and its usage with ``observed``. The plan is cached until the estimates change, or
the traffic has moved (every ``_EPOCH_CALLS`` calls or a new task type).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import QualityConfig
from .quality import Estimate, QualityBoard
from .types import Usage, usd_str

if TYPE_CHECKING:
    from .catalog import ModelEntry
    from .routing import Candidate

__all__ = ["AdaptiveChoice", "Option", "Plan", "Planner", "TypePlan", "plan"]

EXPLORE_BELOW = 2.0
"""A model whose ratings for a task type weigh less than this (about two fresh ones) is explored there."""
OPTIMISM = 0.5
"""How many standard errors above its estimate a model is planned with (see ``_planned``)."""
_WINDOW = 1000
"""Task types' shares are counted over this many recent calls."""
_EPOCH_CALLS = 64
_TOKENS_ALPHA = 0.05
"""Weight of a new call in a task type's running mean of input and output tokens."""


@dataclass(frozen=True, slots=True)
class Option:
    """One model for one task type: what a call of that type typically costs on it, and its quality."""

    ref: str
    cost_nusd: int
    quality: float


@dataclass(slots=True)
class TypePlan:
    base: str
    """The model the type's calls go to."""
    upgrade: str | None = None
    """The model a share of them go to, when the cut-off falls in this type."""
    fraction: float = 0.0
    """That share (0 to 1)."""
    next_gain_per_usd: float | None = None
    """The gain per dollar of this type's next step up (None: on its best model already)."""
    gain_per_usd: float | None = None
    """The gain per dollar of the last step it took (None: none taken)."""
    share: float = 0.0


@dataclass(slots=True)
class Plan:
    types: dict[str, TypePlan]
    cutoff_per_usd: float | None
    """The gain per dollar of the last step taken: steps below it are not worth their cost."""
    expected: float
    best: float
    target: float

    @property
    def reached(self) -> float:
        return 1.0 if self.best <= 0 else self.expected / self.best


def _frontier(options: Sequence[Option]) -> list[Option]:
    """The options no cheaper one beats, cheapest first, kept concave (each step up buys less per
    dollar than the one before it)."""
    kept: list[Option] = []
    for o in sorted(options, key=lambda o: (o.cost_nusd, -o.quality, o.ref)):
        if kept and o.quality <= kept[-1].quality:
            continue
        while len(kept) >= 2 and _slope(kept[-2], kept[-1]) <= _slope(kept[-1], o):
            kept.pop()
        kept.append(o)
    return kept


def _slope(a: Option, b: Option) -> float:
    """Quality gained per dollar from ``a`` to ``b`` (b dearer and better)."""
    dc = b.cost_nusd - a.cost_nusd
    return math.inf if dc <= 0 else (b.quality - a.quality) / (dc / 1e9)


def plan(shares: Mapping[str, float], options: Mapping[str, Sequence[Option]], target: float) -> Plan:
    """The least-cost assignment of task types to models whose expected quality is at least
    ``target`` of always taking each type's best (see the module docstring). ``shares`` need not
    sum to 1; a type without options is left out."""
    fronts = {t: _frontier(options[t]) for t in shares if options.get(t)}
    total = sum(shares[t] for t in fronts) or 1.0
    level = {t: 0 for t in fronts}
    expected = sum(shares[t] * f[0].quality for t, f in fronts.items()) / total
    best = sum(shares[t] * f[-1].quality for t, f in fronts.items()) / total
    need = target * best
    steps = sorted(
        ((_slope(f[i], f[i + 1]), t, i) for t, f in fronts.items() for i in range(len(f) - 1)),
        key=lambda s: (-s[0], s[1], s[2]),
    )
    types = {t: TypePlan(base=f[0].ref, share=shares[t] / total) for t, f in fronts.items()}
    cutoff: float | None = None
    for slope, t, i in steps:
        if expected >= need - 1e-12:
            break
        f, tp = fronts[t], types[t]
        if level[t] != i:  # a concave frontier is climbed in order; kept for safety
            continue
        gain = tp.share * (f[i + 1].quality - f[i].quality)
        cutoff = slope
        if expected + gain <= need + 1e-12:
            expected += gain
            level[t] = i + 1
            tp.base, tp.gain_per_usd = f[i + 1].ref, slope
        else:
            tp.upgrade, tp.fraction = f[i + 1].ref, (need - expected) / gain
            tp.gain_per_usd = slope
            expected = need
            break
    for t, f in fronts.items():
        i = level[t]
        types[t].next_gain_per_usd = _slope(f[i], f[i + 1]) if i + 1 < len(f) else None
    return Plan(types, cutoff, expected, best, target)


@dataclass(slots=True)
class AdaptiveChoice:
    """What ``adaptive`` made of one call: the model to ask first, and why (``explain``)."""

    task_type: str
    mode: str
    """``exploit`` (the plan), ``explore`` (learning a model) or ``balanced`` (nothing rated yet)."""
    ref: str | None
    explain: dict[str, Any]
    upgraded: bool = False
    """Whether the call took the cut-off's step up (it counts toward the type's split)."""
    extra_nusd: int = 0
    """Exploring: the extra typical cost over the planned model."""
    planned_nusd: int = 0


@dataclass(slots=True)
class _TypeStats:
    input_tokens: float
    output_tokens: float


@dataclass(slots=True)
class Planner:
    config: QualityConfig
    board: QualityBoard
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    counts: Counter[str] = field(default_factory=Counter)
    tokens: dict[str, _TypeStats] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)
    """Per task type: how much of the cut-off's share its calls have taken so far, minus those sent."""
    calls: int = 0
    explored: int = 0
    spent_nusd: int = 0
    explore_extra_nusd: int = 0
    epoch: int = 0
    _cache: tuple[Any, Plan] | None = None

    # -- reading (route_explain and complete alike) ---------------------------------------------

    def choose(self, task_type: str | None, candidates: Sequence[Candidate], tier: str) -> AdaptiveChoice | None:
        """The model to ask first among ``candidates`` (ranked by ``balanced`` already), or None
        when there is nothing to choose (fewer than two)."""
        if len(candidates) < 2:
            return None
        t = task_type or ""
        refs = [c.ref for c in candidates]
        if not self.board.knows(refs):
            return AdaptiveChoice(t, "balanced", None, {
                "mode": "balanced", "task_type": t or None,
                "why": "no candidate has been rated yet: ranked as balanced would rank them",
            })
        the_plan = self._plan(t, candidates)
        tp = the_plan.types[t]
        typical = {c.ref: c.typical_nusd for c in candidates}
        estimates = {c.ref: self.board.estimate(c.ref, t) for c in candidates}
        upgraded = False
        ref = tp.base
        # The cut-off's share, spread evenly: a call steps up when that keeps the count of those that
        # did nearest to the share (so a share above one half starts with a step up).
        if tp.upgrade is not None and self.split.get(t, 0.0) + tp.fraction >= 0.5:
            ref, upgraded = tp.upgrade, True
        out = {
            "task_type": t or None,
            "target": self.config.target,
            "estimates": {r: {**e.to_dict(), "typical_cost_usd": usd_str(typical[r])} for r, e in estimates.items()},
            "traffic_share": round(tp.share, 4),
            "plan": {"model": tp.base, **({"cut_off_model": tp.upgrade, "cut_off_share": round(tp.fraction, 4)}
                                          if tp.upgrade else {})},
            "gain_per_usd": None if tp.gain_per_usd is None else _round(tp.gain_per_usd),
            "next_gain_per_usd": None if tp.next_gain_per_usd is None else _round(tp.next_gain_per_usd),
            "cutoff_per_usd": None if the_plan.cutoff_per_usd is None else _round(the_plan.cutoff_per_usd),
            "expected_share_of_best": round(the_plan.reached, 4),
        }
        probe = self._explore(t, candidates, estimates, typical, typical[ref], tier)
        if probe is not None:
            target, extra = probe
            out |= {"mode": "explore", "why": f"{target} has too few recent ratings for {t or 'untyped calls'} "
                    f"(weight {estimates[target].weight:.2f} < {EXPLORE_BELOW}): tried to learn it, within "
                    f"{self.config.explore_share:.0%} of calls and of spend"}
            return AdaptiveChoice(t, "explore", target, out, extra_nusd=extra, planned_nusd=typical[ref])
        out |= {"mode": "exploit", "why": _why(t, tp, ref, upgraded, the_plan)}
        return AdaptiveChoice(t, "exploit", ref, out, upgraded=upgraded, planned_nusd=typical[ref])

    def _explore(self, t: str, candidates: Sequence[Candidate], estimates: Mapping[str, Any],
                 typical: Mapping[str, int], planned_nusd: int, tier: str) -> tuple[str, int] | None:
        share = self.config.explore_share
        if share <= 0 or tier != "normal":
            return None
        if self.explored + 1 > share * (self.calls + 1) + 1:
            return None
        unknown = [c for c in candidates if estimates[c.ref].weight < EXPLORE_BELOW]
        if not unknown:
            return None
        pick = min(unknown, key=lambda c: (estimates[c.ref].weight, c.typical_nusd, c.ref))
        extra = max(typical[pick.ref] - planned_nusd, 0)
        if extra and self.explore_extra_nusd + extra > share * (self.spent_nusd + planned_nusd):
            return None
        return pick.ref, extra

    def _plan(self, t: str, candidates: Sequence[Candidate]) -> Plan:
        # A plan holds for every call of a known task type until the estimates or the traffic move;
        # a type never seen (or never answered) is planned with this call's own figures.
        known = self.counts.get(t, 0) > 0 and t in self.tokens
        key = (tuple(c.ref for c in candidates), None if known else t, self.board.version, self.epoch)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        seen = max(len(self.recent), 1)
        shares = {u: n / seen for u, n in self.counts.items() if n > 0}
        if t not in shares:
            shares[t] = 1 / seen
        options: dict[str, list[Option]] = {}
        for u in shares:
            stats = self.tokens.get(u)
            options[u] = [
                Option(c.ref, c.typical_nusd if stats is None else _typical(c.entry, stats),
                       _planned(self.board.estimate(c.ref, u)))
                for c in candidates
            ]
        made = plan(shares, options, self.config.target)
        self._cache = (key, made)
        return made

    # -- committing (complete only) -------------------------------------------------------------

    def routed(self, choice: AdaptiveChoice | None, task_type: str | None, first_nusd: int) -> None:
        """A call was routed adaptively (``choice`` None: one candidate, nothing chosen); ``first_nusd``
        is the typical cost of the model it asks first."""
        t = task_type or ""
        if len(self.recent) == self.recent.maxlen:
            old = self.recent[0]
            self.counts[old] -= 1
        self.recent.append(t)
        self.counts[t] += 1
        self.calls += 1
        self.spent_nusd += first_nusd
        if self.calls % _EPOCH_CALLS == 0 or self.counts[t] == 1:
            self.epoch += 1
        if choice is None:
            return
        if choice.mode == "explore":
            self.explored += 1
            self.explore_extra_nusd += choice.extra_nusd
        elif choice.mode == "exploit":
            tp = self._cache[1].types.get(t) if self._cache is not None else None
            if tp is not None and tp.upgrade is not None:
                self.split[t] = self.split.get(t, 0.0) + tp.fraction - (1.0 if choice.upgraded else 0.0)

    def observed(self, task_type: str | None, usage: Usage) -> None:
        """A call of ``task_type`` answered with ``usage``: its type's typical tokens move toward it."""
        t = task_type or ""
        stats = self.tokens.get(t)
        if stats is None:
            self.tokens[t] = _TypeStats(float(usage.input_tokens), float(usage.output_tokens))
            return
        stats.input_tokens += _TOKENS_ALPHA * (usage.input_tokens - stats.input_tokens)
        stats.output_tokens += _TOKENS_ALPHA * (usage.output_tokens - stats.output_tokens)

    def status(self) -> dict[str, Any]:
        return {"calls": self.calls, "explored": self.explored, "task_types": len(self.counts),
                "explore_share": round(self.explored / self.calls, 4) if self.calls else 0.0}


def _planned(estimate: Estimate) -> float:
    """The quality a model is planned with: its estimate plus ``OPTIMISM`` standard errors.
    Planned at its mean, a model unlucky in its first few ratings on a task type would be sent
    none of that type's calls again, and so never be re-learned there (exploration alone is too
    rare, and capped in cost); a little optimism keeps it in play until its ratings say
    otherwise. Measured on the replay benchmark: 0.5 kept quality at the target at the least
    cost of the values tried (0 to 1)."""
    return estimate.upper(OPTIMISM)


def _typical(entry: ModelEntry, stats: _TypeStats) -> int:
    return entry.typical_nusd(round(stats.input_tokens), round(stats.output_tokens)) or 0


def _round(x: float) -> float | str:
    return "inf" if math.isinf(x) else round(x, 2)


def _why(t: str, tp: TypePlan, ref: str, upgraded: bool, the_plan: Plan) -> str:
    kind = f"task type {t!r}" if t else "untyped calls"
    reach = f"the traffic's expected quality is {the_plan.reached:.1%} of always-best (target {the_plan.target:.0%})"
    if upgraded:
        return (f"{kind} is at the cut-off: {tp.fraction:.0%} of its calls go to {ref}, whose gain per dollar is the "
                f"last the target needs; {reach}")
    if tp.upgrade is not None:
        return (f"{kind} is at the cut-off: {1 - tp.fraction:.0%} of its calls stay on {ref}, the rest go to "
                f"{tp.upgrade}; {reach}")
    if tp.gain_per_usd is not None:
        return f"{ref} gains enough per dollar on {kind} to be worth its cost; {reach}"
    return f"{ref} is the cheapest model, good enough for {kind}: a dearer one would not gain enough per dollar; {reach}"
