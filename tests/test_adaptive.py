"""The adaptive plan: least cost at the target share of always-best quality, over the whole traffic."""

from __future__ import annotations

import itertools

import pytest

from llm_router.adaptive import Option, plan


def opts(cheap_q: float, dear_q: float, cheap: int = 1_000, dear: int = 20_000) -> list[Option]:
    return [Option("m:cheap", cheap, cheap_q), Option("m:dear", dear, dear_q)]


def brute_force(shares: dict[str, float], options: dict[str, list[Option]], target: float) -> float:
    """The least cost of any whole assignment of types to models meeting the target (no split)."""
    types = list(shares)
    total = sum(shares.values())
    best = sum(shares[t] * max(o.quality for o in options[t]) for t in types) / total
    least = float("inf")
    for pick in itertools.product(*(options[t] for t in types)):
        q = sum(shares[t] * o.quality for t, o in zip(types, pick, strict=True)) / total
        if q >= target * best - 1e-12:
            least = min(least, sum(shares[t] * o.cost_nusd for t, o in zip(types, pick, strict=True)))
    return least


def cost_of(p: object, shares: dict[str, float], options: dict[str, list[Option]]) -> float:
    by_ref = {t: {o.ref: o for o in options[t]} for t in options}
    total = 0.0
    for t, tp in p.types.items():  # type: ignore[attr-defined]
        base = by_ref[t][tp.base].cost_nusd
        up = by_ref[t][tp.upgrade].cost_nusd if tp.upgrade else base
        total += shares[t] * ((1 - tp.fraction) * base + tp.fraction * up)
    return total


def test_dear_model_goes_where_it_adds_most_per_dollar() -> None:
    shares = {"summarize": 0.5, "algebra": 0.3, "code": 0.2}
    options = {"summarize": opts(0.93, 0.95), "algebra": opts(0.40, 0.92), "code": opts(0.70, 0.90)}
    p = plan(shares, options, 0.95)
    assert p.types["summarize"].base == "m:cheap" and p.types["summarize"].upgrade is None
    assert p.types["algebra"].base == "m:dear"
    assert p.reached == pytest.approx(0.95)
    # the cut-off falls in code: a share of its calls go to the dear model
    assert p.types["code"].upgrade == "m:dear" and 0 < p.types["code"].fraction < 1
    assert p.cutoff_per_usd == pytest.approx(p.types["code"].gain_per_usd)
    assert p.types["algebra"].gain_per_usd > p.cutoff_per_usd


def test_never_dearer_than_any_whole_assignment_that_meets_the_target() -> None:
    import random

    rng = random.Random(5)
    for _ in range(200):
        types = [f"t{i}" for i in range(rng.randint(1, 5))]
        shares = {t: rng.random() + 0.01 for t in types}
        options = {t: [Option(f"m:{j}", rng.randint(1, 50_000), rng.random()) for j in range(rng.randint(1, 3))]
                   for t in types}
        target = rng.uniform(0.5, 1.0)
        p = plan(shares, options, target)
        total = sum(shares.values())
        assert p.expected >= target * p.best - 1e-9
        assert cost_of(p, shares, options) <= brute_force(shares, options, target) + 1e-6
        # and the expected quality the plan states is what its assignment gives
        by_ref = {t: {o.ref: o for o in options[t]} for t in options}
        q = sum(shares[t] * ((1 - tp.fraction) * by_ref[t][tp.base].quality
                              + tp.fraction * (by_ref[t][tp.upgrade].quality if tp.upgrade else by_ref[t][tp.base].quality))
                for t, tp in p.types.items()) / total
        assert q == pytest.approx(p.expected, abs=1e-9)


def test_cheap_model_everywhere_when_it_is_as_good() -> None:
    p = plan({"a": 1.0, "b": 1.0}, {"a": opts(0.9, 0.9), "b": opts(0.95, 0.9)}, 0.95)
    assert {tp.base for tp in p.types.values()} == {"m:cheap"}
    assert p.cutoff_per_usd is None


def test_target_one_takes_the_best_everywhere() -> None:
    p = plan({"a": 1.0, "b": 2.0}, {"a": opts(0.5, 0.9), "b": opts(0.8, 0.81)}, 1.0)
    assert all(tp.base == "m:dear" for tp in p.types.values())


def test_dominated_and_non_concave_options_are_skipped() -> None:
    options = {"a": [Option("m:cheap", 1_000, 0.5), Option("m:mid", 2_000, 0.55), Option("m:dear", 3_000, 0.9),
                     Option("m:waste", 4_000, 0.8)]}
    p = plan({"a": 1.0}, options, 1.0)
    assert p.types["a"].base == "m:dear"
    # mid buys less per dollar than going straight to dear: never a stop on the way
    p = plan({"a": 1.0}, options, 0.6 / 0.9)
    assert p.types["a"].upgrade in (None, "m:dear") and p.types["a"].base in ("m:cheap", "m:dear")


def test_free_models_and_single_options() -> None:
    p = plan({"a": 1.0}, {"a": [Option("m:free", 0, 0.6), Option("m:dear", 5_000, 0.9)]}, 0.9)
    assert p.types["a"].upgrade == "m:dear"
    p = plan({"a": 1.0}, {"a": [Option("m:only", 7, 0.3)]}, 0.95)
    assert p.types["a"].base == "m:only" and p.reached == 1.0


def test_the_cut_off_types_calls_are_split_at_its_share_and_route_explain_commits_nothing() -> None:
    from dataclasses import dataclass
    from datetime import UTC, datetime

    from llm_router.adaptive import Planner
    from llm_router.config import QualityConfig
    from llm_router.ledger.records import RatingRow
    from llm_router.quality import QualityBoard
    from llm_router.types import Usage

    @dataclass
    class Entry:
        cost: int

        def typical_nusd(self, _in: int, _out: int) -> int:
            return self.cost

    @dataclass
    class Cand:
        ref: str
        typical_nusd: int
        entry: Entry

    board = QualityBoard(half_life_days=14, tiers={"m:cheap": "medium", "m:dear": "high"})
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    for i in range(40):  # the cheap model is right 60% of the time, the dear one always
        board.observe(RatingRow(f"c{i}", "caller", now, "", "m:cheap", "t", 5 if i % 5 < 3 else 1))
        board.observe(RatingRow(f"d{i}", "caller", now, "", "m:dear", "t", 5))
    planner = Planner(QualityConfig(target=0.9, explore_share=0.0), board)
    cands = [Cand("m:cheap", 1_000, Entry(1_000)), Cand("m:dear", 20_000, Entry(20_000))]
    first = planner.choose("t", cands, "normal")
    assert first is not None and planner.choose("t", cands, "normal") == first  # reading changes nothing
    picks = []
    for _ in range(400):
        choice = planner.choose("t", cands, "normal")
        assert choice is not None and choice.mode == "exploit"
        planner.routed(choice, "t", 1_000)
        planner.observed("t", Usage(100, 50))
        picks.append(choice.ref)
    share = planner._cache[1].types["t"].fraction if planner._cache else None
    assert share is not None and 0 < share < 1
    assert abs(picks.count("m:dear") / len(picks) - share) < 0.01
    json_text = __import__("json").dumps(first.explain, allow_nan=False)
    assert "cut_off_share" in json_text
