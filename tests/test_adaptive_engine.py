"""``strategy: "adaptive"`` through the engine: ratings in, routing out, exploration within budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import settings_from_dict
from llm_router.engine import Engine

pytestmark = pytest.mark.anyio

CHEAP, DEAR = "cheap:gpt-4o-mini", "dear:claude-sonnet-4-5"


def config(tmp_path: Path, **quality: Any) -> dict[str, Any]:
    return {
        "ledger": {"path": str(tmp_path / "ledger.db")},
        "providers": [
            {"name": "cheap", "kind": "mock", "models": ["gpt-4o-mini"], "pricing_provider": "openai"},
            {"name": "dear", "kind": "mock", "models": ["claude-sonnet-4-5"], "pricing_provider": "anthropic"},
        ],
        "routing": {"strategy": "adaptive", "default_quality": "low"},
        "resilience": {"max_retries": 0},
        "quality": {"explore_share": 0.0, **quality},
    }


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    eng = Engine(settings_from_dict(config(tmp_path), source="test"))
    yield eng
    await eng.aclose()


async def ask(engine: Engine, task: str, **kw: Any) -> Any:
    return await engine.complete(CompleteArgs(prompt=f"a {task} task, please", task_type=task, **kw))


async def rate(engine: Engine, request_id: str, score: int) -> Any:
    return await engine.rate(await engine.rated_request(request_id), score, None)


async def teach(engine: Engine, model: str, task: str, score: int, n: int) -> None:
    for _ in range(n):
        result = await ask(engine, task, model=model)
        await rate(engine, result.request_id, score)


async def test_nothing_rated_ranks_as_balanced(engine: Engine) -> None:
    explained = await engine.explain(CompleteArgs(prompt="hi", task_type="algebra", strategy="adaptive"))
    assert explained.adaptive is not None and explained.adaptive["mode"] == "balanced"
    assert explained.strategy == "adaptive"


async def test_dear_model_for_the_task_type_where_the_cheap_one_fails(engine: Engine) -> None:
    await teach(engine, CHEAP, "summarize", 5, 40)
    await teach(engine, CHEAP, "algebra", 1, 12)
    await teach(engine, DEAR, "algebra", 5, 6)
    await teach(engine, DEAR, "summarize", 5, 6)
    # traffic: mostly summaries, some algebra
    for _ in range(3):
        await ask(engine, "summarize")
    algebra = await engine.explain(CompleteArgs(prompt="x", task_type="algebra"))
    summary = await engine.explain(CompleteArgs(prompt="x", task_type="summarize"))
    assert algebra.chain[0] == DEAR and algebra.adaptive is not None and algebra.adaptive["mode"] == "exploit"
    assert summary.chain[0] == CHEAP
    info = algebra.adaptive
    assert info["estimates"][CHEAP]["estimate"] < 0.3 < 0.8 < info["estimates"][DEAR]["estimate"]
    assert info["estimates"][CHEAP]["ratings"] == 12
    assert info["cutoff_per_usd"] is not None and info["gain_per_usd"] is not None
    assert any("adaptive (exploit)" in s for s in algebra.steps)
    # route_explain changes nothing: asked again, it says the same
    again = await engine.explain(CompleteArgs(prompt="x", task_type="algebra"))
    assert again.adaptive == algebra.adaptive
    # and complete follows the plan
    assert (await ask(engine, "algebra")).model == DEAR
    assert (await ask(engine, "summarize")).model == CHEAP


async def test_a_rating_replaces_the_earlier_one_of_the_same_request(engine: Engine) -> None:
    result = await ask(engine, "translate", model=CHEAP)
    first = await rate(engine, result.request_id, 1)
    second = await rate(engine, result.request_id, 5)
    assert first.rating["replaced"] is False and second.rating["replaced"] is True
    assert second.rating["previous_score"] == 1
    assert second.estimate["ratings"] == 1 and second.estimate["estimate"] > first.estimate["estimate"]
    rows = engine.ledger.query("SELECT score FROM ratings WHERE request_id = ?", [result.request_id])
    assert [r["score"] for r in rows] == [5.0]


async def test_estimates_survive_a_restart(tmp_path: Path) -> None:
    settings = settings_from_dict(config(tmp_path), source="test")
    eng = Engine(settings)
    try:
        await teach(eng, CHEAP, "algebra", 1, 4)
        before = eng.board.estimate(CHEAP, "algebra")
    finally:
        await eng.aclose()
    eng = Engine(settings)
    try:
        after = eng.board.estimate(CHEAP, "algebra")
        assert after.ratings == 4 and after.value == pytest.approx(before.value, abs=1e-6)
        status = {m["model"]: m for p in eng.providers_status() for m in p["models"]}
        assert status[CHEAP]["quality"]["by_task_type"]["algebra"]["ratings"] == 4
    finally:
        await eng.aclose()


async def test_unrated_models_are_explored_within_their_share(tmp_path: Path) -> None:
    eng = Engine(settings_from_dict(config(tmp_path, explore_share=0.3), source="test"))
    try:
        await teach(eng, CHEAP, "code", 4, 3)  # the cheap model is known a little; the dear one not at all
        models = [(await ask(eng, "code")).model for _ in range(200)]
        explored = eng.planner.explored
        assert 0 < explored <= 0.3 * eng.planner.calls + 1
        # exploration's extra spend is within its share of the spend
        assert eng.planner.explore_extra_nusd <= 0.3 * eng.planner.spent_nusd + 1
        assert models.count(DEAR) >= explored - 1
    finally:
        await eng.aclose()


async def test_exploration_never_passes_a_budget(tmp_path: Path) -> None:
    data = config(tmp_path, explore_share=0.5)
    # The dear model's worst case does not fit the per-request limit; the cheap one's does.
    data["budget"] = {"per_request_usd": 0.001}
    eng = Engine(settings_from_dict(data, source="test"))
    try:
        await teach(eng, CHEAP, "code", 4, 2)
        for _ in range(50):
            result = await ask(eng, "code", max_tokens=200)
            assert result.model == CHEAP
        explained = await eng.explain(CompleteArgs(prompt="x", task_type="code", max_tokens=200))
        assert DEAR in {x["model"] for x in explained.excluded}
    finally:
        await eng.aclose()


async def test_other_strategies_and_forced_models_are_untouched(engine: Engine) -> None:
    await teach(engine, CHEAP, "algebra", 1, 5)
    result = await ask(engine, "algebra", strategy="cheapest")
    assert result.model == CHEAP
    explained = await engine.explain(CompleteArgs(prompt="x", task_type="algebra", strategy="cheapest"))
    assert explained.adaptive is None
    assert engine.planner.calls == 0  # forced and cheapest calls are not adaptive traffic


async def test_a_server_folds_in_what_another_server_on_its_ledger_rated(tmp_path: Path) -> None:
    settings = settings_from_dict(config(tmp_path), source="test")
    one, two = Engine(settings), Engine(settings)
    try:
        await teach(one, CHEAP, "algebra", 1, 3)
        result = await ask(two, "algebra", model=CHEAP)
        await rate(two, result.request_id, 5)
        await rate(one, result.request_id, 1)  # replaces two's rating in the ledger
        assert two.board.estimate(CHEAP, "algebra").ratings == 1
        two.feedback._next_refresh = 0.0  # as if REFRESH_S had passed
        await two.explain(CompleteArgs(prompt="x", task_type="algebra"))
        seen = two.board.estimate(CHEAP, "algebra")
        assert seen.ratings == 4 == one.board.estimate(CHEAP, "algebra").ratings
        assert seen.value == pytest.approx(one.board.estimate(CHEAP, "algebra").value, abs=1e-6)
    finally:
        await one.aclose()
        await two.aclose()


async def test_adaptive_weighs_a_low_tier_model_unless_the_caller_names_a_quality(tmp_path: Path) -> None:
    """A user's trial: with the default quality (medium), a cheap model of tier low was left out
    before adaptive could weigh it, so every call went to the dear one."""
    data = config(tmp_path)
    del data["routing"]["default_quality"]
    data["providers"][0]["model_overrides"] = {"gpt-4o-mini": {"tier": "low"}}
    eng = Engine(settings_from_dict(data, source="test"))
    try:
        await teach(eng, CHEAP, "summarize", 5, 30)
        explained = await eng.explain(CompleteArgs(prompt="x", task_type="summarize"))
        assert CHEAP in explained.chain and explained.adaptive is not None and explained.chain[0] == CHEAP
        named = await eng.explain(CompleteArgs(prompt="x", task_type="summarize", quality="medium"))
        assert named.chain == [DEAR] and {"model": CHEAP, "reason": "below_quality"}.items() <= named.excluded[0].items()
        balanced = await eng.explain(CompleteArgs(prompt="x", task_type="summarize", strategy="balanced"))
        assert CHEAP not in balanced.chain
    finally:
        await eng.aclose()
