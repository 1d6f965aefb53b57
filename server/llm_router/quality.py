"""What the router has learned of each model's answers: a quality estimate per model and task type.

Every rating (a caller's ``rate``, or the judge's score) is a point on a 1–5 scale, read as a
quality ``q = (score - 1) / 4`` between 0 and 1. An estimate is a weighted mean with a prior:

* each rating weighs ``2 ** (-age / half_life)`` (``[quality] half_life_days``): a model whose
  answers changed is re-learned, as its old ratings fade; a judge's score weighs ``JUDGE_WEIGHT``
  of a caller's (the caller has usually checked the answer itself);
* a model's overall estimate starts from a prior by its tier (``TIER_PRIOR``), worth
  ``PRIOR_WEIGHT`` ratings; its estimate for one task type starts from its overall estimate, worth
  as many ratings as the model's spread between task types says (``_spread_weight``, empirical
  Bayes: firm for a model as good at everything, light for one that varies by type). So one rating
  moves an estimate, a few dozen settle it, and a task type nobody rated takes what the model is
  known for elsewhere;
* ``confidence`` is ``w / (w + PRIOR_WEIGHT)`` for the weight ``w`` of its own ratings: 0 with
  none, 0.5 with two fresh ones, near 1 with many.

Sums are kept incrementally (O(1) per rating, and per read): each rating's weight is stored as
``2 ** ((t - t0) / half_life)`` against a fixed origin ``t0`` and the sums scaled down to now when
read. A rating that replaces an earlier one of the same request takes out what the board folded in
for that one (never what another server's ledger row said: a board only subtracts its own).
``version`` grows with every change, for whoever caches what it derives from the estimates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .ledger.records import RatingRow
from .types import Quality

__all__ = ["Estimate", "QualityBoard", "TIER_PRIOR", "PRIOR_WEIGHT", "JUDGE_WEIGHT", "score_quality"]

TIER_PRIOR: Mapping[Quality, float] = {"low": 0.55, "medium": 0.7, "high": 0.85, "critical": 0.92}
"""What a model with no ratings is assumed to reach, by its tier (a share of answers rated good)."""
PRIOR_WEIGHT = 2.0
"""How many ratings a prior counts as."""
JUDGE_WEIGHT = 0.5
"""A judge's score counts as this much of a caller's rating."""
_SPREAD_TYPES = 3
"""Task types a model must have ratings on before its spread between types is estimated."""
_MIN_SPREAD = 0.0025
"""The least variance between task types assumed (a spread of 0.05 in quality)."""
_MAX_PRIOR_WEIGHT = 40.0
_REBASE_AT = 200.0
"""Rebase the stored weights once they reach 2 ** this (many half-lives after the origin)."""


def score_quality(score: float) -> float:
    """A 1–5 score as a quality between 0 and 1."""
    return (min(max(score, 1.0), 5.0) - 1.0) / 4.0


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    """The expected quality, 0 to 1 (the share of answers a rater would call good)."""
    ratings: int
    """How many ratings it rests on (caller's and judge's)."""
    weight: float
    """Their weight now (decayed; a judge's counts ``JUDGE_WEIGHT``)."""
    confidence: float
    """0 (the prior alone) to 1; see the module docstring."""

    def upper(self, z: float) -> float:
        """The estimate plus ``z`` standard errors (of a share, with the prior counted as ratings), at most 1."""
        spread = max(self.value * (1 - self.value), 0.01) / (self.weight + PRIOR_WEIGHT)
        return min(self.value + z * math.sqrt(spread), 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": round(self.value, 4), "ratings": self.ratings, "confidence": round(self.confidence, 3)}


@dataclass(frozen=True, slots=True)
class _Folded:
    """What the board folded in for one rating: enough to take it out again exactly."""

    model: str
    task_type: str
    ts: str
    w: float
    q: float


class _Sums:
    __slots__ = ("n", "w", "wq")

    def __init__(self) -> None:
        self.n = 0
        self.w = 0.0
        self.wq = 0.0

    def add(self, sign: int, w: float, q: float) -> None:
        """Add (sign +1) or take out (-1) one rating this board folded in itself, so the sums
        stay those of the ratings it holds; none left, no rounding dust either."""
        self.n += sign
        self.w += sign * w
        self.wq += sign * w * q
        if self.n <= 0:
            self.n, self.w, self.wq = 0, 0.0, 0.0


class QualityBoard:
    """Ratings folded into estimates, per model ref and per (model ref, task type)."""

    def __init__(self, *, half_life_days: float, tiers: Mapping[str, Quality], now: float | None = None) -> None:
        self.half_life_s = half_life_days * 86_400
        self.tiers = dict(tiers)
        """model ref → its tier (the prior)."""
        self._t0 = time.time() if now is None else now
        self._models: dict[str, _Sums] = {}
        self._types: dict[tuple[str, str], _Sums] = {}
        self._spread: dict[str, tuple[int, float]] = {}
        self._folded: dict[tuple[str, str], _Folded] = {}
        """(request id, source) → what this board folded in for it."""
        self.version = 0

    # -- learning -------------------------------------------------------------------------------

    def _weight(self, ts: float, source: str) -> float:
        exponent = (ts - self._t0) / self.half_life_s
        if exponent > _REBASE_AT:
            self._rebase(ts)
            exponent = 0.0
        return float(2.0 ** exponent) * (JUDGE_WEIGHT if source == "judge" else 1.0)

    def _rebase(self, ts: float) -> None:
        scale = 2.0 ** (-(ts - self._t0) / self.half_life_s)
        for sums in (*self._models.values(), *self._types.values()):
            sums.w *= scale
            sums.wq *= scale
        self._folded = {k: _Folded(f.model, f.task_type, f.ts, f.w * scale, f.q) for k, f in self._folded.items()}
        self._t0 = ts

    def _add(self, model: str, task_type: str, sign: int, w: float, q: float) -> None:
        self._models.setdefault(model, _Sums()).add(sign, w, q)
        if task_type:
            self._types.setdefault((model, task_type), _Sums()).add(sign, w, q)

    def _fold(self, row: RatingRow) -> bool:
        """Fold in one rating, taking out what this board folded in for the same request and
        source before; False when it had folded in this very rating already."""
        key = (row.request_id, row.source)
        before = self._folded.get(key)
        if before is not None:
            if before.ts == row.ts and before.q == score_quality(row.score):
                return False
            self._add(before.model, before.task_type, -1, before.w, before.q)
        w, q = self._weight(_epoch(row.ts), row.source), score_quality(row.score)
        self._add(row.model, row.task_type, +1, w, q)
        self._folded[key] = _Folded(row.model, row.task_type, row.ts, w, q)
        return True

    def observe(self, row: RatingRow) -> None:
        """Fold in one rating (replacing the one of the same request and source this board had)."""
        if self._fold(row):
            self.version += 1

    def load(self, rows: Iterable[RatingRow]) -> int:
        """Fold in ratings read from the ledger (at start-up, and those other servers wrote since);
        return how many changed anything."""
        n = sum(self._fold(row) for row in rows)
        if n:
            self.version += 1
        return n

    def forget_some(self, ref: str, keep: float = 0.25) -> None:
        """The model answered as another version than before: keep only ``keep`` of what its
        ratings weigh, so that it is re-learned (and explored) soon."""
        targets = [sums for (model, _), sums in self._types.items() if model == ref]
        if ref in self._models:
            targets.append(self._models[ref])
        for sums in targets:
            sums.w *= keep
            sums.wq *= keep
        for key, f in self._folded.items():
            if f.model == ref:
                self._folded[key] = _Folded(f.model, f.task_type, f.ts, f.w * keep, f.q)
        self.version += 1

    # -- reading --------------------------------------------------------------------------------

    def _decay(self, now: float) -> float:
        return float(2.0 ** (-(now - self._t0) / self.half_life_s))

    def overall(self, ref: str, *, now: float | None = None) -> Estimate:
        return self._overall(ref, self._decay(time.time() if now is None else now))

    def _overall(self, ref: str, scale: float) -> Estimate:
        prior = TIER_PRIOR.get(self.tiers.get(ref, "medium"), TIER_PRIOR["medium"])
        sums = self._models.get(ref)
        if sums is None:
            return Estimate(prior, 0, 0.0, 0.0)
        w, wq = sums.w * scale, sums.wq * scale
        return Estimate((PRIOR_WEIGHT * prior + wq) / (PRIOR_WEIGHT + w), sums.n, w, w / (w + PRIOR_WEIGHT))

    def estimate(self, ref: str, task_type: str | None, *, now: float | None = None) -> Estimate:
        """The model's expected quality on ``task_type`` (its overall estimate for none)."""
        scale = self._decay(time.time() if now is None else now)
        overall = self._overall(ref, scale)
        if not task_type:
            return overall
        sums = self._types.get((ref, task_type))
        if sums is None:
            return Estimate(overall.value, 0, 0.0, 0.0)
        w, wq = sums.w * scale, sums.wq * scale
        m = self._spread_weight(ref, overall.value, scale)
        return Estimate((m * overall.value + wq) / (m + w), sums.n, w, w / (w + PRIOR_WEIGHT))

    def _spread_weight(self, ref: str, mean: float, scale: float) -> float:
        """How many ratings a model's overall estimate counts as, as the prior of one task type:
        empirical Bayes, from how much the model's quality differs between task types. A model
        that is as good at everything (a strong one, usually) gets a firm prior, so that a few
        unlucky ratings on one type do not sink it there; one whose quality varies widely by type
        gets a light one, so that each type is learned from its own ratings."""
        cached = self._spread.get(ref)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        rated = [(s.wq / s.w, s.w * scale) for (r, _), s in self._types.items() if r == ref and s.w * scale >= 1.0]
        weight = PRIOR_WEIGHT
        if len(rated) >= _SPREAD_TYPES:
            between = sum((q - mean) ** 2 for q, _ in rated) / (len(rated) - 1)
            noise = sum(max(q * (1 - q), 0.05) / w for q, w in rated) / len(rated)
            spread = max(between - noise, _MIN_SPREAD)
            weight = min(max(mean * (1 - mean) / spread - 1, PRIOR_WEIGHT), _MAX_PRIOR_WEIGHT)
        self._spread[ref] = (self.version, weight)
        return weight

    def knows(self, refs: Iterable[str]) -> bool:
        """Whether any of these models has a rating at all (else ``adaptive`` ranks as ``balanced``)."""
        return any(ref in self._models and self._models[ref].n > 0 for ref in refs)

    def view(self, ref: str, *, now: float | None = None) -> dict[str, Any]:
        """A model's estimates for ``llm-router://providers``: overall, and by task type."""
        now = time.time() if now is None else now
        by_type = {t: self.estimate(ref, t, now=now).to_dict() for (r, t) in sorted(self._types) if r == ref
                   and self._types[(r, t)].n > 0}
        return {"overall": self.overall(ref, now=now).to_dict(), "by_task_type": by_type,
                "prior": TIER_PRIOR.get(self.tiers.get(ref, "medium"), TIER_PRIOR["medium"])}

