"""The LLM judge on a real engine with mock providers: it scores a sample of answers after they
are returned, its calls billed and capped under its own tag, and nothing it meets (a broken
judgement, a failing provider, its cap) reaches the judged call."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_router.calls import CompleteArgs
from llm_router.config import Settings, settings_from_dict
from llm_router.defaults import demo_config
from llm_router.engine import Engine
from llm_router.judge import RUBRIC, Judge, JudgementInvalid, clip, parse_judgement, request_text
from llm_router.ledger.records import RatingRow
from llm_router.providers.mock import MockProvider
from llm_router.types import ServerError, usd_to_nusd

from .conftest import held_by_calls
from .pngs import png

pytestmark = pytest.mark.anyio

ASKED = "openai:gpt-4o-mini"
GOOD = '{"faithfulness": 5, "completeness": 4, "coherence": 3, "reason": "Accurate but terse."}'


def judged_settings(tmp_path: Path, *, rate: float = 1.0, judge: str = "grader:strict", latency_ms: float = 0,
                    daily_usd: str | None = "1") -> Settings:
    """The demo's mocks (no latency, no faults) and a judge provider of its own, priced so its cap bites;
    ``grader:plain`` cannot be asked for structured output."""
    data = demo_config(str(tmp_path / "ledger.db"))
    for p in data["providers"]:
        p["mock"] = {"imitates": p["mock"]["imitates"]}
    data["resilience"] = {"max_retries": 0}
    data["providers"].append({
        "name": "grader", "kind": "mock", "models": ["strict", "plain"],
        "prices": {m: {"input_per_mtok": 30, "output_per_mtok": 150} for m in ("strict", "plain")},
        "model_overrides": {"plain": {"capabilities": {"json_schema": False, "json_mode": False}}},
        "mock": {"latency_ms": latency_ms},
    })
    data["quality"] = {"judge_model": judge, "judge_sample_rate": rate, "judge_daily_usd": daily_usd}
    return settings_from_dict(data, source="test")


@dataclasses.dataclass
class Judged:
    engine: Engine
    judge: Judge
    grader: MockProvider
    stored: list[RatingRow]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Judged]]:
    engines: list[Engine] = []

    def build(**kwargs: Any) -> Judged:
        engine = Engine(judged_settings(tmp_path, **kwargs))
        engines.append(engine)
        assert engine.judge is not None
        stored: list[RatingRow] = []

        async def store(row: RatingRow) -> None:
            stored.append(row)

        engine.judge.store = store
        grader = engine.providers["grader"]
        assert isinstance(grader, MockProvider)
        return Judged(engine, engine.judge, grader, stored)

    yield build
    for engine in engines:
        await engine.aclose()


async def settled(judge: Judge, n: int) -> dict[str, Any]:
    """Wait (at most 5 s) until ``n`` cases have been judged, failed or refused."""
    with anyio.fail_after(5):
        while True:
            status = judge.status()
            if status["judged"] + status["failed"] + status["refused"] >= n:
                return status
            await anyio.sleep(0.005)


async def ask(engine: Engine, prompt: str = "Name the capital of France.", **kwargs: Any) -> Any:
    return await engine.complete(CompleteArgs(prompt=prompt, model=ASKED, **kwargs))


async def test_the_answer_is_returned_before_the_judge_has_answered(make: Callable[..., Judged]) -> None:
    j = make(latency_ms=400)
    j.grader.answer_next(GOOD)
    started = time.perf_counter()
    result = await ask(j.engine)
    assert time.perf_counter() - started < 0.3
    assert (j.stored, j.judge.status()["judged"]) == ([], 0)
    await settled(j.judge, 1)
    assert [r.request_id for r in j.stored] == [result.request_id]


async def test_a_sampled_answer_gets_a_judge_rating_with_the_mean_of_its_criteria(make: Callable[..., Judged]) -> None:
    j = make()
    j.grader.answer_next(GOOD)
    result = await ask(j.engine, tag="team-a", task_type="qa")
    assert (await settled(j.judge, 1))["judged"] == 1

    assert [dataclasses.replace(r, ts="") for r in j.stored] == [RatingRow(
        request_id=result.request_id, source="judge", ts="", tag="team-a", model=ASKED, task_type="qa", score=4.0,
        comment="Accurate but terse.", criteria='{"faithfulness": 5, "completeness": 4, "coherence": 3}',
        rater="grader:strict",
    )]
    asked = j.grader.last_request
    assert asked is not None and asked.response_format is not None
    assert (asked.system, asked.max_tokens, asked.temperature, asked.response_format.type) == (
        RUBRIC, 300, 0, "json_schema")
    prompt = asked.messages[0].content
    assert "[user]\nName the capital of France." in prompt and result.text in prompt


async def test_a_judge_without_structured_output_is_asked_for_json_in_text_and_read_strictly(
    make: Callable[..., Judged],
) -> None:
    j = make(judge="grader:plain")
    assert not j.judge.can_format
    j.grader.answer_next(f"```json\n{GOOD}\n```", "Here you go: " + GOOD)
    await ask(j.engine)
    await ask(j.engine)
    status = await settled(j.judge, 2)
    assert (status["judged"], status["failed"], status["last_error"]) == (1, 1, "invalid_judgement")
    assert [r.score for r in j.stored] == [4.0]
    assert j.grader.last_request is not None and j.grader.last_request.response_format is None


def test_the_judge_reads_a_conversation_as_text_with_images_and_tool_turns_marked(tmp_path: Path) -> None:
    engine = Engine(judged_settings(tmp_path))
    prepared = engine.prepare(CompleteArgs(system="Be brief.", messages=[
        {"role": "user", "content": [{"type": "text", "text": "Where is this? "},
                                     {"type": "image", "data": png(), "mimeType": "image/png"}]},
        {"role": "assistant", "tool_calls": [{"id": "c1", "name": "locate", "arguments": {"q": "tower"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Paris"},
        {"role": "user", "content": "So?"},
    ], tools=[{"name": "locate"}]))
    assert request_text(prepared.request) == (
        "[system]\nBe brief.\n\n[user]\nWhere is this? [image]\n\n[assistant]\n\n[called locate({\"q\": \"tower\"})]"
        "\n\n[tool result for locate]\nParis\n\n[user]\nSo?\n\n[tools offered] locate"
    )
    engine.ledger.close()


def test_a_long_request_is_read_by_its_head_and_tail_saying_so() -> None:
    text = "a" * 10_000 + "b" * 10_000
    clipped = clip(text)
    assert clipped == "a" * 6000 + "\n[... 8000 characters left out ...]\n" + "b" * 6000
    assert clip("short") == "short"


@pytest.mark.parametrize("text", [
    GOOD.replace(', "reason": "Accurate but terse."', ""),  # a key missing
    GOOD.replace("}", ', "overall": 4}'),  # a key extra
    GOOD.replace('"coherence": 3', '"coherence": 6'),  # out of range
    GOOD.replace('"coherence": 3', '"coherence": 0'),
    GOOD.replace('"coherence": 3', '"coherence": true'),  # a bool for an int
    GOOD.replace('"coherence": 3', '"coherence": 3.0'),
    GOOD.replace('"coherence": 3', '"coherence": "3"'),
    GOOD.replace('"coherence": 3', '"coherence": 3, "coherence": 4'),  # twice
    "Sure! " + GOOD,
    f"```json\n{GOOD}\n```\n```json\n{GOOD}\n```",
    f"```python\n{GOOD}\n```",
    "[" + GOOD + "]",
    "",
])
def test_a_text_judgement_that_is_not_exactly_one_valid_object_is_refused(text: str) -> None:
    with pytest.raises(JudgementInvalid):
        parse_judgement(text)


@pytest.mark.parametrize("text", [GOOD, f"  {GOOD}\n", f"```json\n{GOOD}\n```", f"```\n{GOOD}\n```"])
def test_a_text_judgement_alone_or_in_one_fence_is_read(text: str) -> None:
    assert parse_judgement(text) == json.loads(GOOD)


async def test_a_broken_judgement_is_counted_and_the_judged_call_is_unaffected(make: Callable[..., Judged]) -> None:
    j = make()
    j.grader.answer_next("I would give it a four.")
    result = await ask(j.engine)
    status = await settled(j.judge, 1)
    assert (status["judged"], status["failed"], status["last_error"]) == (0, 1, "invalid_output")
    assert j.stored == []
    assert result.text.startswith("[mock openai:gpt-4o-mini]")
    row = j.engine.ledger.rows(request_id=result.request_id)[0]
    assert (row["status"], row["tag"]) == ("ok", "")


async def test_a_failing_judge_provider_is_counted_and_nothing_is_raised(
    make: Callable[..., Judged], caplog: pytest.LogCaptureFixture,
) -> None:
    j = make()
    j.grader.fail_next(ServerError("grader down", provider="grader", status=500))
    result = await ask(j.engine, prompt="A secret prompt text.")
    status = await settled(j.judge, 1)
    assert (status["failed"], status["last_error"]) == (1, "server_error")
    judge_lines = [r for r in caplog.records if r.name == "llm_router.judge"]
    assert len(judge_lines) == 1 and result.request_id in judge_lines[0].getMessage()
    assert "secret" not in judge_lines[0].getMessage()
    assert j.engine.ledger.rows(request_id=result.request_id)[0]["status"] == "ok"
    assert held_by_calls(j.engine) == 0


async def test_a_judge_over_its_cap_is_refused_by_the_budget_and_counted(make: Callable[..., Judged]) -> None:
    j = make(daily_usd="0.000001")
    result = await ask(j.engine)
    status = await settled(j.judge, 1)
    assert (status["judged"], status["refused"], status["last_error"]) == (0, 1, "budget_exceeded")
    assert j.grader.calls == 0
    assert j.engine.ledger.rows(request_id=result.request_id)[0]["status"] == "ok"
    assert [r["status"] for r in j.engine.ledger.rows(tag="judge")] == ["refused"]


async def test_the_judges_spend_is_billed_to_its_tag_and_never_passes_its_daily_cap(
    make: Callable[..., Judged],
) -> None:
    cap = "0.3"
    j = make(daily_usd=cap)
    for i in range(25):
        await ask(j.engine, prompt=f"Question {i}: " + "explain it at length " * 40)
    status = await settled(j.judge, 25)
    rows = j.engine.ledger.rows(tag="judge", limit=1000)
    spent = sum(r["cost_nusd"] for r in rows)
    assert status["judged"] >= 3 and status["refused"] >= 1
    assert 0 < spent <= usd_to_nusd(cap)
    assert sum(r["status"] == "ok" for r in rows) == status["judged"] == len(j.stored)
    assert {f"{r['provider']}:{r['model']}" for r in rows if r["status"] == "ok"} == {"grader:strict"}


async def test_sample_rate_zero_judges_nothing_and_one_judges_every_answer(make: Callable[..., Judged]) -> None:
    none, every = make(rate=0.0), make(rate=1.0)
    for _ in range(5):
        await ask(none.engine)
        await ask(every.engine)
    assert (await settled(every.judge, 5))["judged"] == 5
    assert (none.grader.calls, none.judge.status()["judged"], none.judge.status()["queued"]) == (0, 0, 0)
    assert len({r.request_id for r in every.stored}) == 5


def test_sampling_is_decided_by_the_request_id_at_the_rate_asked(tmp_path: Path) -> None:
    judge = Engine(judged_settings(tmp_path, rate=0.25)).judge
    assert judge is not None
    ids = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(4000)]
    chosen = [i for i in ids if judge.sampled(i, "team-a")]
    assert 0.22 < len(chosen) / len(ids) < 0.28
    assert chosen == [i for i in ids if judge.sampled(i, "team-a")]
    assert judge.sampled("0" * 32, "team-a") and not judge.sampled("f" * 32, "team-a")
    assert not judge.sampled("0" * 32, "judge")


async def test_the_judges_own_calls_are_never_judged(make: Callable[..., Judged]) -> None:
    j = make(rate=1.0)
    await ask(j.engine)
    await settled(j.judge, 1)
    await anyio.sleep(0.05)  # a judgement of the judge's call would have been offered by now
    assert (j.grader.calls, len(j.stored), j.judge.status()["queued"]) == (1, 1, 0)
    assert [r.tag for r in j.stored] == [""]
    assert len(j.engine.ledger.rows(tag="judge")) == 1


async def test_aclose_with_cases_queued_ends_promptly_and_leaves_no_hold(make: Callable[..., Judged]) -> None:
    j = make(latency_ms=5000)
    for _ in range(6):
        await ask(j.engine)
    await anyio.sleep(0.05)  # the first case is being judged: its call waits on the slow mock
    with anyio.fail_after(1):
        await j.judge.aclose()
    status = j.judge.status()
    assert (status["judged"], status["dropped"], status["queued"]) == (0, 5, 0)
    assert held_by_calls(j.engine) == 0
    assert [r["status"] for r in j.engine.ledger.rows(tag="judge")] == ["cancelled"]


async def test_closing_right_after_offers_ends_at_once_and_judges_none_of_them(make: Any) -> None:
    """Regression: closed before its worker had started, the judge waited its whole close timeout
    and then judged (and billed) the cases it had counted as dropped."""
    j = make(latency_ms=0)
    for _ in range(3):
        j.grader.answer_next(GOOD)
    for _ in range(3):
        await ask(j.engine)
    t0 = time.perf_counter()
    await j.judge.aclose()
    assert time.perf_counter() - t0 < 1.0
    status = j.judge.status()
    assert (status["judged"], status["dropped"], j.grader.calls) == (0, 3, 0), status
