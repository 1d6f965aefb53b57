"""Quality estimates: a prior by tier, ratings folded in with decay, replaced ratings taken out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llm_router.ledger.records import RatingRow
from llm_router.quality import JUDGE_WEIGHT, PRIOR_WEIGHT, TIER_PRIOR, QualityBoard, score_quality

NOW = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
DAY = 86_400


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def rating(rid: str, score: float, *, model: str = "m:cheap", task: str = "summarize", ts: float = NOW,
           source: str = "caller") -> RatingRow:
    return RatingRow(request_id=rid, source=source, ts=iso(ts), tag="", model=model, task_type=task,  # type: ignore[arg-type]
                     score=score)


def board() -> QualityBoard:
    return QualityBoard(half_life_days=14, tiers={"m:cheap": "low", "m:dear": "high"}, now=NOW)


def test_scores_map_to_quality() -> None:
    assert [score_quality(s) for s in (1, 2, 3, 4, 5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert score_quality(9) == 1.0 and score_quality(0) == 0.0


def test_unrated_model_is_its_tier_prior_with_no_confidence() -> None:
    b = board()
    e = b.estimate("m:dear", "algebra", now=NOW)
    assert e.value == TIER_PRIOR["high"] and e.ratings == 0 and e.confidence == 0.0
    assert b.estimate("m:unknown", None, now=NOW).value == TIER_PRIOR["medium"]
    assert not b.knows(["m:cheap", "m:dear"])


def test_ratings_move_the_type_estimate_and_the_overall_one() -> None:
    b = board()
    for i in range(4):
        b.observe(rating(f"r{i}", 5))
    overall = b.overall("m:cheap", now=NOW)
    # overall: (2 * 0.55 + 4 * 1.0) / (2 + 4)
    assert overall.value == pytest.approx((PRIOR_WEIGHT * 0.55 + 4) / (PRIOR_WEIGHT + 4))
    typed = b.estimate("m:cheap", "summarize", now=NOW)
    assert typed.value == pytest.approx((PRIOR_WEIGHT * overall.value + 4) / (PRIOR_WEIGHT + 4))
    assert typed.ratings == 4 and typed.confidence == pytest.approx(4 / 6)
    # another type of the same model starts from its overall estimate
    other = b.estimate("m:cheap", "algebra", now=NOW)
    assert other.value == pytest.approx(overall.value) and other.ratings == 0
    assert b.knows(["m:cheap"]) and not b.knows(["m:dear"])


def test_a_rating_half_a_life_old_weighs_half_and_fades() -> None:
    b = board()
    b.observe(rating("old", 1, ts=NOW - 14 * DAY))
    e = b.estimate("m:cheap", "summarize", now=NOW)
    assert e.weight == pytest.approx(0.5)
    later = b.estimate("m:cheap", "summarize", now=NOW + 140 * DAY)
    assert later.weight < 0.001 and later.confidence < 0.001


def test_judge_scores_weigh_less_than_a_callers() -> None:
    b = board()
    b.observe(rating("r", 3, source="judge"))
    assert b.estimate("m:cheap", "summarize", now=NOW).weight == pytest.approx(JUDGE_WEIGHT)


def test_a_replaced_rating_is_taken_out() -> None:
    b = board()
    first = rating("r", 1)
    b.observe(first)
    again = rating("r", 5, ts=NOW + 60)
    b.observe(again)
    e = b.estimate("m:cheap", "summarize", now=NOW + 60)
    assert e.ratings == 1
    assert e.value == pytest.approx((PRIOR_WEIGHT * b.overall("m:cheap", now=NOW + 60).value + e.weight) / (PRIOR_WEIGHT + e.weight))
    assert b.overall("m:cheap", now=NOW + 60).ratings == 1


def test_a_new_version_keeps_a_quarter_of_the_weight() -> None:
    b = board()
    for i in range(8):
        b.observe(rating(f"r{i}", 5))
    v = b.version
    b.forget_some("m:cheap")
    assert b.estimate("m:cheap", "summarize", now=NOW).weight == pytest.approx(2.0)
    assert b.version > v


def test_load_rebuilds_what_observe_built() -> None:
    rows = [rating(f"r{i}", 1 + i % 5, task=("a", "b")[i % 2], ts=NOW - i * DAY) for i in range(30)]
    one, two = board(), board()
    for r in rows:
        one.observe(r)
    assert two.load(rows) == 30
    for t in ("a", "b", None):
        assert one.estimate("m:cheap", t, now=NOW) == two.estimate("m:cheap", t, now=NOW)


def test_weights_stay_finite_over_years() -> None:
    b = QualityBoard(half_life_days=1, tiers={}, now=NOW)
    for year in range(4):
        b.observe(rating(f"y{year}", 5, ts=NOW + year * 365 * DAY))
    e = b.estimate("m:cheap", "summarize", now=NOW + 3 * 365 * DAY)
    assert e.weight == pytest.approx(1.0) and e.ratings == 4


def test_view_lists_rated_types() -> None:
    b = board()
    b.observe(rating("r", 4, task="translate"))
    view = b.view("m:cheap", now=NOW)
    assert set(view["by_task_type"]) == {"translate"}
    assert view["overall"]["ratings"] == 1 and view["prior"] == TIER_PRIOR["low"]


def test_re_rating_any_way_round_keeps_estimates_those_of_the_ratings_held() -> None:
    """Regression: a replacement subtracted the ledger's earlier row, which another server (or a
    forgotten version) had folded in, not this board: estimates went above 1 and counts to 0."""
    import random

    rng = random.Random(3)
    b = board()
    latest: dict[str, RatingRow] = {}
    for i in range(400):
        rid = f"r{rng.randrange(30)}"
        row = rating(rid, rng.choice([1, 2, 3, 4, 5]), task=rng.choice(["a", "b"]), ts=NOW + i)
        b.observe(row)
        latest[rid] = row
        if i % 97 == 0:
            b.forget_some("m:cheap")
        e = b.estimate("m:cheap", "a", now=NOW + i)
        assert 0.0 <= e.value <= 1.0
    fresh = board()
    fresh.load(latest.values())
    for t in ("a", "b", None):
        assert b.estimate("m:cheap", t, now=NOW + 400).ratings == fresh.estimate("m:cheap", t, now=NOW + 400).ratings


def test_loading_a_rating_already_folded_in_changes_nothing() -> None:
    b = board()
    row = rating("r", 5)
    b.observe(row)
    v = b.version
    assert b.load([row]) == 0 and b.version == v
    assert b.load([rating("r", 1, ts=NOW + 5)]) == 1 and b.estimate("m:cheap", "summarize", now=NOW).ratings == 1
