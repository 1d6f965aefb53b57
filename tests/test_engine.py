"""The engine end to end on mock providers: routing, fallback, budgets, the ledger row, cancellation."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import Settings
from llm_router.engine import Engine
from llm_router.providers.base import ProbeResult
from llm_router.providers.mock import MockProvider
from llm_router.types import (
    AllAttemptsFailed,
    AuthError,
    BudgetExceeded,
    Completion,
    CompletionRequest,
    InvalidInput,
    Overloaded,
    RateLimited,
    ServerError,
    Usage,
    usd_to_nusd,
)

from .clocks import ManualClock, seeded_ids
from .conftest import held_by_calls, make_settings

pytestmark = pytest.mark.anyio


async def test_complete_answers_and_records_one_row_with_the_exact_cost(engine: Engine) -> None:
    result = await engine.complete(CompleteArgs(prompt="Summarise the news in one line.", tag="team-a"))

    rows = engine.ledger.rows()
    assert len(rows) == 1
    row = rows[0]
    entry = engine.catalog.get(result.model)
    usage = Usage(result.usage.input_tokens, result.usage.output_tokens)
    assert Decimal(result.cost_usd) == entry.cost_usd(usage)
    assert row["cost_nusd"] == usd_to_nusd(entry.cost_usd(usage))
    assert (row["status"], row["tag"], f"{row['provider']}:{row['model']}") == ("ok", "team-a", result.model)
    assert (row["input_tokens"], row["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert json.loads(row["prices"])["source"].startswith("genai-prices")
    assert row["prompt"] is None and len(row["prompt_hash"]) == 64
    assert held_by_calls(engine) == 0


@pytest.mark.parametrize(
    "args",
    [
        {"prompt": "hi"},
        {"prompt": "hi", "quality": "low"},
        {"prompt": "hi", "quality": "high", "strategy": "cheapest"},
        {"prompt": "hi", "quality": "critical"},
        {"prompt": "hi", "strategy": "best"},
        {"prompt": "hi", "strategy": "fastest"},
        {"prompt": "write code", "task_type": "code_generation"},
        {"prompt": "hi", "model": ["gemini:gemini-2.5-flash", "openai:gpt-4o"]},
    ],
)
async def test_complete_tries_first_the_model_route_explain_puts_first(engine: Engine, args: dict[str, Any]) -> None:
    explained = await engine.explain(CompleteArgs(**args))
    result = await engine.complete(CompleteArgs(**args))
    assert result.attempts[0].model == explained.chain[0]


async def test_a_retryable_failure_falls_back_to_the_next_model_and_lists_every_attempt(engine: Engine) -> None:
    chain = (await engine.explain(CompleteArgs(prompt="hello"))).chain
    first = chain[0].split(":")[0]
    provider = engine.providers[first]
    assert isinstance(provider, MockProvider)
    provider.fail_next(Overloaded("mock overloaded", provider=first, status=529))

    result = await engine.complete(CompleteArgs(prompt="hello"))

    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert result.attempts[0].error_code == "overloaded"
    assert result.model == chain[1]
    row = engine.ledger.rows()[0]
    assert [a["outcome"] for a in json.loads(row["attempts"])] == ["error", "ok"]
    assert held_by_calls(engine) == 0


async def test_when_every_model_fails_the_error_lists_them_and_one_error_row_is_written(engine: Engine) -> None:
    chain = ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]
    engine.providers["anthropic"].fail_next(RateLimited("slow down", provider="anthropic", status=429, retry_after=2))  # type: ignore[attr-defined]
    engine.providers["openai"].fail_next(AuthError("bad key", provider="openai", status=401))  # type: ignore[attr-defined]

    with pytest.raises(AllAttemptsFailed) as info:
        await engine.complete(CompleteArgs(prompt="hello", model=chain))

    assert [a.model for a in info.value.attempts] == chain
    assert "rate_limited" in str(info.value) and "auth" in str(info.value)
    rows = engine.ledger.rows()
    assert len(rows) == 1 and rows[0]["status"] == "error" and rows[0]["cost_nusd"] == 0
    assert held_by_calls(engine) == 0


class _SilentProvider:
    """Answers without reporting usage, as some OpenAI-compatible servers do."""

    name = "openai"
    kind = "openai"

    async def complete(self, model: str, request: CompletionRequest, *, on_text: Any = None) -> Completion:
        return Completion(text="an answer of some words", model=model, usage=None, finish_reason="stop")

    async def probe(self) -> ProbeResult:
        return ProbeResult(ok=True, detail="fake")

    async def aclose(self) -> None:
        return None


async def test_a_reply_without_usage_is_recorded_with_an_estimate_marked_as_such(settings: Settings) -> None:
    engine = Engine(settings, providers={"openai": _SilentProvider()})  # type: ignore[dict-item]
    try:
        result = await engine.complete(CompleteArgs(prompt="hello", model="openai:gpt-4o-mini"))
        assert result.usage.estimated is True
        assert engine.ledger.rows()[0]["cost_estimated"] == 1
        assert Decimal(result.cost_usd) > 0
    finally:
        await engine.aclose()


async def test_a_cancelled_call_releases_its_reservation_and_is_recorded_as_cancelled(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    engine = Engine(settings)
    try:
        started = anyio.Event()
        slow = engine.providers["anthropic"]
        assert isinstance(slow, MockProvider)
        real = slow.complete

        async def hanging(model: str, request: CompletionRequest, *, on_text: Any = None) -> Completion:
            started.set()
            await anyio.sleep(30)
            return await real(model, request, on_text=on_text)

        slow.complete = hanging  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.complete, CompleteArgs(prompt="hi", model="anthropic:claude-haiku-4-5"))
            with anyio.fail_after(5):
                await started.wait()
            assert held_by_calls(engine) > 0
            tg.cancel_scope.cancel()

        rows = engine.ledger.rows()
        assert [r["status"] for r in rows] == ["cancelled"]
        assert json.loads(rows[0]["attempts"])[0]["outcome"] == "cancelled"
        assert held_by_calls(engine) == 0
    finally:
        await engine.aclose()


async def test_the_deadline_ends_a_hanging_call_with_an_error_listing_what_was_tried(engine: Engine) -> None:
    provider = engine.providers["anthropic"]
    assert isinstance(provider, MockProvider)

    async def hang(model: str, request: CompletionRequest, *, on_text: Any = None) -> Completion:
        await anyio.sleep(30)
        raise AssertionError("unreachable")

    provider.complete = hang  # type: ignore[method-assign]
    with anyio.fail_after(5):
        with pytest.raises(AllAttemptsFailed) as info:
            await engine.complete(CompleteArgs(prompt="hi", model="anthropic:claude-haiku-4-5", deadline_s=0.2))
    assert info.value.deadline_hit
    assert info.value.attempts[0].error_code == "timeout"
    assert held_by_calls(engine) == 0


async def test_hundred_concurrent_calls_never_push_spend_past_the_daily_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, budget={"daily_usd": 0.05, "monthly_usd": None, "per_request_usd": None})
    providers = [p.model_copy(update={"mock": p.mock.model_copy(update={"latency_ms": 10, "failure_rate": 0})})
                 for p in settings.providers]
    engine = Engine(settings.model_copy(update={"providers": providers}))
    model = "anthropic:claude-sonnet-4-5"
    worst = engine.catalog.get(model).worst_case_nusd(100, 1000)
    limit = usd_to_nusd(Decimal("0.05"))
    results: list[Any] = []
    refused: list[BudgetExceeded] = []

    async def one(i: int) -> None:
        try:
            results.append(await engine.complete(CompleteArgs(prompt=f"question {i}", model=model, max_tokens=1000)))
        except BudgetExceeded as e:
            refused.append(e)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
        totals = engine.ledger.totals()
        reported = sum(usd_to_nusd(Decimal(r.cost_usd)) for r in results)
        assert len(results) + len(refused) == 100
        assert refused and results, "the limit should fit some calls but not all"
        assert totals["cost_nusd"] == reported <= limit
        # Nobody was refused while what was spent still left room: holds were waited for.
        assert all(e.spent_nusd + e.needed_nusd > e.limit_nusd for e in refused)
        assert limit - totals["cost_nusd"] < worst
        assert totals["requests"] == 100  # refused calls are rows too
        assert held_by_calls(engine) == 0
        assert all(e.limit_name == "global daily" for e in refused)
    finally:
        await engine.aclose()


async def test_a_refusal_names_the_limit_what_is_spent_and_when_it_resets(engine: Engine) -> None:
    await engine.set_budget("global", "daily", Decimal("0.000001"))
    with pytest.raises(BudgetExceeded) as info:
        await engine.complete(CompleteArgs(prompt="hello", model="anthropic:claude-opus-4-5"))
    message = str(info.value)
    assert "global daily" in message and "spent" in message and "resets at" in message
    assert engine.ledger.rows()[0]["status"] == "refused"


async def test_from_ninety_percent_of_a_limit_only_free_models_are_used(engine: Engine) -> None:
    await engine.set_budget("global", "daily", Decimal("0.01"))
    await _spend(engine, Decimal("0.0095"))
    explained = await engine.explain(CompleteArgs(prompt="hello", quality="low"))
    assert explained.budget_tier == "restricted"
    assert explained.chain == ["ollama:llama3.1"]
    assert {e["reason"] for e in explained.excluded} >= {"budget_restricted"}


async def test_from_half_a_limit_cheaper_models_go_first(engine: Engine) -> None:
    await engine.set_budget("global", "daily", Decimal("1"))
    normal = await engine.explain(CompleteArgs(prompt="hello", quality="high", strategy="best"))
    await _spend(engine, Decimal("0.6"))
    cautious = await engine.explain(CompleteArgs(prompt="hello", quality="high", strategy="best"))
    assert cautious.budget_tier == "cautious"
    costs = [Decimal(c["worst_case_cost_usd"]) for c in cautious.candidates]
    assert costs == sorted(costs)
    assert normal.chain != cautious.chain


async def test_a_provider_scoped_limit_excludes_only_that_provider(engine: Engine) -> None:
    await engine.set_budget("provider:anthropic", "daily", Decimal("0"))
    explained = await engine.explain(CompleteArgs(prompt="hello", quality="low"))
    assert not any(m.startswith("anthropic:") for m in explained.chain)
    assert any(e["model"].startswith("anthropic:") and e["reason"] == "over_budget" for e in explained.excluded)


async def test_set_budget_survives_a_restart(settings: Settings) -> None:
    first = Engine(settings)
    await first.set_budget("tag:research", "monthly", Decimal("12.5"))
    await first.set_budget("global", "daily", None)
    await first.aclose()
    second = Engine(settings)
    try:
        limits = {(b["scope"], b["period"]): b for b in await second.budgets()}
        assert limits[("tag:research", "monthly")]["limit_usd"] == "12.5"
        assert ("global", "daily") not in limits  # removed, though the config sets one
        assert limits[("global", "monthly")]["source"] == "config"
    finally:
        await second.aclose()


async def test_three_failures_in_a_row_open_the_circuit_and_routing_skips_the_model(engine: Engine) -> None:
    model = "gemini:gemini-2.5-flash"
    provider = engine.providers["gemini"]
    assert isinstance(provider, MockProvider)
    for _ in range(3):
        provider.fail_next(ServerError("boom", provider="gemini", status=500))
        with pytest.raises(AllAttemptsFailed):
            await engine.complete(CompleteArgs(prompt="x", model=model))
    explained = await engine.explain(CompleteArgs(prompt="x", model=[model, "openai:gpt-4o"]))
    assert explained.chain == ["openai:gpt-4o"]
    assert explained.excluded[0]["reason"] == "circuit_open"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
        ({"messages": [{"role": "assistant", "content": "b"}]}, "messages"),
        ({"prompt": "a", "model": "nosuch:model"}, "model"),
        ({"prompt": "a", "model": "anthropic:claude-nine"}, "model"),
        ({"prompt": "a", "model": "anthropic"}, "model"),
        ({"prompt": "a", "model": []}, "model"),
        ({"prompt": "a", "tag": "bad\x00tag"}, "tag"),
        ({"prompt": "x" * 400_001}, "prompt"),
    ],
)
async def test_bad_input_names_the_field_and_leaves_no_trace(engine: Engine, args: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        await engine.complete(CompleteArgs(**args))
    assert info.value.field == field
    assert engine.ledger.rows() == [] and held_by_calls(engine) == 0


async def _spend(engine: Engine, amount: Decimal) -> None:
    """Record an already-paid call of ``amount`` today."""
    from datetime import UTC, datetime

    from llm_router.ledger import RequestRow

    now = datetime.now(UTC)
    nusd = usd_to_nusd(amount)
    engine.ledger.record(
        RequestRow(
            id=f"seed-{nusd}", ts=now.isoformat(), day=now.astimezone(engine.budget.clock.tz).date().isoformat(),
            status="ok", provider="openai", model="gpt-4o", cost_nusd=nusd, cost_usd=str(amount),
        )
    )


def _quick_retries(tmp_path: Path, **policy: Any) -> Settings:
    settings = make_settings(tmp_path, resilience={"backoff_base_s": 0.01, "backoff_max_s": 0.05, **policy})
    providers = [p.model_copy(update={"mock": p.mock.model_copy(update={"latency_ms": 0, "failure_rate": 0})})
                 for p in settings.providers]
    return settings.model_copy(update={"providers": providers})


async def test_a_retryable_failure_is_retried_on_the_same_model_before_falling_back(tmp_path: Path) -> None:
    engine = Engine(_quick_retries(tmp_path, max_retries=2))
    try:
        mock = engine.providers["openai"]
        assert isinstance(mock, MockProvider)
        mock.fail_next(ServerError("e1", status=500), Overloaded("e2", status=503))
        result = await engine.complete(CompleteArgs(prompt="hi", model=["openai:gpt-4o", "anthropic:claude-haiku-4-5"]))
        assert [(a.model, a.outcome) for a in result.attempts] == [
            ("openai:gpt-4o", "error"), ("openai:gpt-4o", "error"), ("openai:gpt-4o", "ok")]
    finally:
        await engine.aclose()


async def test_auth_and_invalid_request_errors_are_never_retried(tmp_path: Path) -> None:
    engine = Engine(_quick_retries(tmp_path, max_retries=3))
    try:
        engine.providers["openai"].fail_next(AuthError("bad key", status=401))  # type: ignore[attr-defined]
        result = await engine.complete(CompleteArgs(prompt="hi", model=["openai:gpt-4o", "anthropic:claude-haiku-4-5"]))
        assert [(a.model, a.outcome) for a in result.attempts] == [
            ("openai:gpt-4o", "error"), ("anthropic:claude-haiku-4-5", "ok")]
    finally:
        await engine.aclose()


async def test_retry_after_is_honoured_and_a_long_one_moves_on(tmp_path: Path) -> None:
    engine = Engine(_quick_retries(tmp_path, max_retries=1, retry_after_cap_s=1))
    try:
        mock = engine.providers["openai"]
        mock.fail_next(RateLimited("wait", status=429, retry_after=0.2))  # type: ignore[attr-defined]
        t0 = anyio.current_time()
        result = await engine.complete(CompleteArgs(prompt="hi", model="openai:gpt-4o"))
        assert anyio.current_time() - t0 >= 0.2
        assert [a.outcome for a in result.attempts] == ["error", "ok"]

        mock.fail_next(RateLimited("wait long", status=429, retry_after=60))  # type: ignore[attr-defined]
        result = await engine.complete(CompleteArgs(prompt="hi", model=["openai:gpt-4o", "gemini:gemini-2.5-flash"]))
        assert [a.model for a in result.attempts] == ["openai:gpt-4o", "gemini:gemini-2.5-flash"]
    finally:
        await engine.aclose()


async def test_a_context_length_error_moves_to_a_model_with_a_larger_window(engine: Engine) -> None:
    from llm_router.types import ContextTooLong

    engine.providers["openai"].fail_next(ContextTooLong("too long", status=400))  # type: ignore[attr-defined]
    chain = ["openai:gpt-4o", "openai:gpt-4o-mini", "gemini:gemini-2.5-flash"]  # 128k, 128k, 1M windows
    result = await engine.complete(CompleteArgs(prompt="hi", model=chain))
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("openai:gpt-4o", "error"), ("openai:gpt-4o-mini", "skipped"), ("gemini:gemini-2.5-flash", "ok")]


async def test_a_refusal_at_the_ninety_percent_tier_says_the_call_would_fit_but_only_free_models_run(
    engine: Engine,
) -> None:
    await engine.set_budget("global", "daily", Decimal("1"))
    await _spend(engine, Decimal("0.92"))
    with pytest.raises(BudgetExceeded) as info:
        await engine.complete(CompleteArgs(prompt="hello", model="openai:gpt-4o-mini", max_tokens=50))
    assert info.value.restricted and info.value.to_dict()["restricted"] is True
    assert "92% spent" in str(info.value) and "only free models" in str(info.value)
    assert "would be exceeded" not in str(info.value)


def test_the_prices_stored_on_a_row_follow_an_entry_repriced_in_place() -> None:
    """A genai-prices entry is repriced in place when a dated price change takes effect; the
    prices written on the next row must be the new ones, not a copy made for the old."""
    import json
    from decimal import Decimal

    from llm_router.catalog import ModelEntry, Prices
    from llm_router.rows import prices_json as _prices_json

    entry = ModelEntry(
        ref="p:m", provider="p", model="m", kind="openai", prices=Prices(Decimal(1), Decimal(2), Decimal(1), Decimal(1)),
        price_source="genai-prices", context_window=1000, context_source="config", tier="low", tier_source="config",
    )
    assert json.loads(_prices_json(entry))["output_per_mtok"] == "2"
    entry.prices = Prices(Decimal(1), Decimal(3), Decimal(1), Decimal(1))
    assert json.loads(_prices_json(entry))["output_per_mtok"] == "3"


async def test_consecutive_calls_hand_a_spare_hold_along_and_none_outlives_the_engine(settings: Settings) -> None:
    """After a call, its worst case (twice over) stays held as a spare, which the next call like it
    takes over instead of reserving on its own; closing the engine lets the last spare go. The
    ledger runs on a clock of the test's own: a spare idle for SPARE_IDLE_S is let go, and a busy
    machine could take that long between two steps on the wall clock."""
    from llm_router.ledger import Ledger

    clock = ManualClock()
    engine = Engine(settings, ledger=Ledger(settings.ledger.path, clock=clock, new_id=seeded_ids(7)))
    try:
        args = CompleteArgs(prompt="hello", model="anthropic:claude-haiku-4-5", max_tokens=64)
        worst = engine.catalog.get("anthropic:claude-haiku-4-5").worst_case_nusd(
            (await engine.decision(engine.prepare(args))).request.input_tokens_bound, 64
        )
        await engine.complete(args)
        first = engine.ledger._spare
        assert first is not None and engine.ledger.spare_nusd == 2 * worst and held_by_calls(engine) == 0

        await engine.complete(args)
        second = engine.ledger._spare
        assert second is not None and second.rid == first.rid and held_by_calls(engine) == 0  # taken over, kept again
        holds = engine.ledger.query("SELECT id, amount_nusd, request_id FROM reservations")
        assert holds == [{"id": second.rid, "amount_nusd": 2 * worst, "request_id": None}]  # one hold, handed along
        budgets = {(b["scope"], b["period"]): b for b in await engine.budgets()}
        assert Decimal(budgets[("global", "daily")]["reserved_usd"]) * 10**9 == 2 * worst  # shown as reserved
    finally:
        await engine.aclose()
    ledger = Ledger(settings.ledger.path, clock=clock)  # on the same clock, no hold has lapsed
    try:
        assert ledger.reservations_total() == 0 and ledger.totals()["requests"] == 2
    finally:
        ledger.close()


async def test_from_half_a_limit_no_spare_is_kept(engine: Engine) -> None:
    await engine.set_budget("global", "daily", Decimal("1"))
    await _spend(engine, Decimal("0.6"))

    await engine.complete(CompleteArgs(prompt="hello", model="anthropic:claude-haiku-4-5"))

    assert engine.ledger.spare_nusd == 0 and engine.ledger.reservations_total() == 0
