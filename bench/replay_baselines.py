"""What a routing replay is measured against, from per-task labels and measured costs alone.

* ``oracle``: the least-cost fixed choice of a model per task type, knowing each type's true
  success counts (the labels), that reaches a given number of good answers. Per type, the models
  form a lower convex hull of (cost, good answers); every step along a hull is an upgrade with a
  gain per extra dollar, and the upgrades of all types are taken best ratio first until the target
  is met; the last one taken may be partial (that type split between two models). This is the
  exact optimum of the continuous problem, and for two models what sorting the types by quality
  gain per extra dollar and cutting off gives.
* ``random_choice``: each task to a model drawn with given shares (those the router ended with),
  costs and quality from what each model's forced run measured for that task.
* ``summarise``: quality, cost and shares of calls of a run over a part of the tasks.

Money is integer nano-dollars; an oracle's split type costs a fraction, rounded to the nano-dollar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Summary", "oracle", "random_choice", "summarise", "draws"]


@dataclass(frozen=True, slots=True)
class Summary:
    tasks: int
    good: Fraction
    """Good answers (a fraction only for the oracle's split type)."""
    cost_nusd: int
    calls: tuple[Fraction, ...]
    """Per model: the share of the tasks it answered."""

    @property
    def quality(self) -> float:
        return float(self.good / self.tasks) if self.tasks else 0.0


def summarise(indices: Sequence[int], chosen: Sequence[int], labels: Sequence[Sequence[int]],
              costs: Sequence[int], n_models: int) -> Summary:
    """A run over the tasks ``indices``: ``chosen[i]`` the model (its column) that answered task
    i, ``labels[i][m]`` whether model m answers it well, ``costs[i]`` what the answer cost."""
    counts = [0] * n_models
    good = cost = 0
    for i in indices:
        counts[chosen[i]] += 1
        good += labels[i][chosen[i]]
        cost += costs[i]
    n = len(indices)
    return Summary(n, Fraction(good), cost, tuple(Fraction(c, n) if n else Fraction(0) for c in counts))


def draws(seed: int, n: int) -> list[float]:
    """The uniform draws ``random_choice`` uses, seeded apart from every other draw of a replay."""
    import random

    rng = random.Random(f"{seed}:random-baseline")
    return [rng.random() for _ in range(n)]


def random_choice(shares: Sequence[float], uniforms: Sequence[float]) -> list[int]:
    """Per task, the model whose cumulative share first exceeds its uniform draw (models in
    order; the last one takes what rounding leaves)."""
    out = []
    for u in uniforms:
        acc = 0.0
        pick = len(shares) - 1
        for m, share in enumerate(shares):
            acc += share
            if u < acc:
                pick = m
                break
        out.append(pick)
    return out


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str
    order: int
    frm: int
    to: int
    extra_nusd: int
    gain: int


def _hull(cost: Sequence[int], good: Sequence[int]) -> tuple[int, list[tuple[int, int]]]:
    """The cheapest model of a type (the better of equally cheap ones), and the upgrades along the
    lower convex hull from it: (from, to) pairs, each with a lower gain per dollar than the last."""
    models = range(len(cost))
    start = at = min(models, key=lambda m: (cost[m], -good[m], m))
    steps: list[tuple[int, int]] = []
    while True:
        better = [m for m in models if good[m] > good[at]]
        if not better:
            return start, steps
        base = at
        at = max(better, key=lambda m: (_slope(good[m] - good[base], cost[m] - cost[base]), good[m]))  # noqa: B023
        steps.append((base, at))


def _slope(gain: int, extra: int) -> Fraction | float:
    """Good answers gained per nano-dollar more; a gain for nothing more comes first."""
    return float("inf") if extra <= 0 else Fraction(gain, extra)


def oracle(indices: Sequence[int], kinds: Sequence[str], labels: Sequence[Sequence[int]],
           costs: Sequence[Sequence[int]], target_good: Fraction) -> Summary:
    """The least-cost per-type choice over the tasks ``indices`` reaching ``target_good`` good
    answers (or the most it can, when that is out of reach). ``costs[i][m]``: what model m's
    forced run paid for task i. A target below what the cheapest choice already reaches gives
    the cheapest choice."""
    n_models = len(costs[indices[0]]) if indices else 0
    cost_by: dict[str, list[int]] = {}
    good_by: dict[str, list[int]] = {}
    count: dict[str, int] = {}
    for i in indices:
        c = cost_by.setdefault(kinds[i], [0] * n_models)
        g = good_by.setdefault(kinds[i], [0] * n_models)
        for m in range(n_models):
            c[m] += costs[i][m]
            g[m] += labels[i][m]
        count[kinds[i]] = count.get(kinds[i], 0) + 1
    # Where each type stands: model -> share of its tasks.
    place: dict[str, dict[int, Fraction]] = {}
    steps: list[tuple[Fraction | float, int, int, _Step]] = []
    for order, kind in enumerate(cost_by):
        start, hull = _hull(cost_by[kind], good_by[kind])
        place[kind] = {start: Fraction(1)}
        for k, (frm, to) in enumerate(hull):
            extra = cost_by[kind][to] - cost_by[kind][frm]
            gain = good_by[kind][to] - good_by[kind][frm]
            steps.append((_slope(gain, extra), order, k, _Step(kind, order, frm, to, extra, gain)))
    # Best ratio first; a type's own steps keep their order (their ratios fall along the hull).
    steps.sort(key=lambda s: (-s[0], s[1], s[2]))
    good = sum((Fraction(good_by[k][m]) * f for k, p in place.items() for m, f in p.items()), Fraction(0))
    cost = sum((Fraction(cost_by[k][m]) * f for k, p in place.items() for m, f in p.items()), Fraction(0))
    for _, _, _, step in steps:
        need = target_good - good
        if need <= 0:
            break
        part = min(Fraction(1), need / step.gain)
        moved = place[step.kind].pop(step.frm)
        if part < 1:
            place[step.kind][step.frm] = moved * (1 - part)
        place[step.kind][step.to] = place[step.kind].get(step.to, Fraction(0)) + moved * part
        good += step.gain * part
        cost += step.extra_nusd * part
    n = len(indices)
    calls = [Fraction(0)] * n_models
    for kind, p in place.items():
        for m, f in p.items():
            calls[m] += f * count[kind] / n
    return Summary(n, good, round(cost), tuple(calls))
