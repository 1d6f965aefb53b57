"""The engine's fallback under pressure: the deadline shared along a chain, breakers that count
calls, skipped models said out loud, context windows learnt from servers, and usage estimated
when a server reports none. Scripted fake providers (the ``Provider`` protocol), no network."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_router import timings
from llm_router.calls import CompleteArgs
from llm_router.config import Settings, settings_from_dict
from llm_router.engine import Engine
from llm_router.providers.base import ProbeResult
from llm_router.resilience import Window, model_window
from llm_router.timings import FALLBACK_RESERVE_S
from llm_router.types import (
    AllAttemptsFailed,
    AuthError,
    BudgetExceeded,
    Completion,
    CompletionRequest,
    ContextTooLong,
    MalformedResponse,
    NoRoute,
    ServerError,
    Timeout,
    ToolCallOnly,
    Usage,
)

from .clocks import ManualClock
from .conftest import held_by_calls

pytestmark = pytest.mark.anyio

Step = Callable[[str, CompletionRequest], Awaitable[Completion]]


REPORTED = Usage(10, 5)


def answer(text: str = "an answer", usage: Usage | None = REPORTED) -> Step:
    async def step(model: str, request: CompletionRequest) -> Completion:
        return Completion(text=text, model=model, usage=usage, finish_reason="stop")

    return step


def fail(error: Exception) -> Step:
    async def step(model: str, request: CompletionRequest) -> Completion:
        raise error

    return step


def after(seconds: float, then: Step) -> Step:
    """``then``, once ``seconds`` have passed (a slow server, or one that times out)."""

    async def step(model: str, request: CompletionRequest) -> Completion:
        await anyio.sleep(seconds)
        return await then(model, request)

    return step


def streamed(*pieces: str, then: Step) -> Step:
    """Stream ``pieces`` to the caller's ``on_text``, then ``then`` (an answer, or a failure midway)."""

    async def step(model: str, request: CompletionRequest, on_text: Any = None) -> Completion:
        for piece in pieces:
            if on_text is not None:
                await on_text(piece)
        return await then(model, request)

    step.streams = True  # type: ignore[attr-defined]
    return step


def hang() -> Step:
    return after(3600, answer())


class Scripted:
    """A provider whose calls run the next scripted step (then ``default`` for ever after)."""

    kind = "mock"

    def __init__(
        self, name: str, *steps: Step, default: Step | None = None,
        window: Callable[[], Awaitable[int | None]] | None = None,
        tokens: Callable[[str], Awaitable[int | None]] | None = None,
    ) -> None:
        self.name = name
        self.steps: deque[Step] = deque(steps)
        self.default = default or answer()
        self.calls = 0
        self.window_asks = 0
        self.counted: list[str] = []
        self._window = window
        self._tokens = tokens

    async def complete(self, model: str, request: CompletionRequest, *, on_text: Any = None) -> Completion:
        self.calls += 1
        step = self.steps.popleft() if self.steps else self.default
        if getattr(step, "streams", False):
            return await step(model, request, on_text)  # type: ignore[call-arg]
        return await step(model, request)

    async def probe(self) -> ProbeResult:
        return ProbeResult(ok=True, detail="scripted")

    async def count_tokens(self, model: str, text: str) -> int | None:
        self.counted.append(text)
        return None if self._tokens is None else await self._tokens(text)

    async def context_window(self, model: str) -> int | None:
        self.window_asks += 1
        return None if self._window is None else await self._window()

    async def aclose(self) -> None:
        return None


NAMES = ("first", "second", "third")


def settings_for(tmp_path: Path, *, resilience: dict[str, Any] | None = None, dear: str | None = None,
                 free: str | None = None, **sections: Any) -> Settings:
    """Three providers of one model ``m`` each, none with a known window (only assumed); ``dear``
    costs 16 times the others, ``free`` nothing."""
    providers = []
    for name in NAMES:
        price = 16 if name == dear else 0 if name == free else 1
        providers.append({"name": name, "kind": "mock", "models": ["m"],
                          "prices": {"m": {"input_per_mtok": price, "output_per_mtok": 2 * price}}})
    return settings_from_dict(
        {"ledger": {"path": str(tmp_path / "ledger.db")}, "providers": providers,
         "resilience": {"max_retries": 0, "backoff_base_s": 0.01, "backoff_max_s": 0.02, **(resilience or {})},
         **sections},
        source="test",
    )


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def build(*providers: Scripted, **kw: Any) -> Engine:
        engine = Engine(settings_for(tmp_path, **kw), providers={p.name: p for p in providers})  # type: ignore[misc]
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        await engine.aclose()


CHAIN = ["first:m", "second:m"]


def outcomes(attempts: list[Any]) -> list[tuple[str, str, str | None]]:
    return [(a.model, a.outcome, a.error_code) for a in attempts]


# -- 5. the deadline is shared along the chain ------------------------------------------------


def test_each_later_model_keeps_a_minimum_slice_or_an_equal_share() -> None:
    assert model_window(55, 1) == 55 - FALLBACK_RESERVE_S
    assert model_window(55, 3) == 55 - 3 * FALLBACK_RESERVE_S
    assert model_window(4, 1) == 2  # too short for the slice: an equal share
    assert model_window(6, 2) == 2
    assert model_window(4, 0) == 4  # the last model has all that remains
    assert model_window(-1, 2) == 0


async def test_a_models_window_ends_where_the_models_after_it_keep_their_slices() -> None:
    """The share as an end time, with a deadline far enough away that a pause of the machine
    cannot matter: whenever it is taken, it ends the later models' slices before the deadline."""
    deadline = anyio.current_time() + 100
    assert Window.share_of(deadline, later=1).end == pytest.approx(deadline - FALLBACK_RESERVE_S)
    assert Window.share_of(deadline, later=3).end == pytest.approx(deadline - 3 * FALLBACK_RESERVE_S)
    assert Window.share_of(deadline, later=1, reserve_s=0.2).end == pytest.approx(deadline - 0.2)
    last = Window.share_of(deadline, later=0)
    assert last.end == pytest.approx(deadline) and last.later == 0


async def test_a_patched_fallback_reserve_is_what_a_window_and_the_settings_default_keep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the reserve was a default bound when ``model_window`` and ``Window.share_of`` were
    defined, so a patch of ``timings.FALLBACK_RESERVE_S`` was ignored; and the setting
    ``[resilience] fallback_reserve_s`` had a default of its own, a second figure to keep in step."""
    assert Settings().resilience.fallback_reserve_s == FALLBACK_RESERVE_S
    monkeypatch.setattr(timings, "FALLBACK_RESERVE_S", 2.0)
    assert model_window(55, 1) == 53
    deadline = anyio.current_time() + 100
    assert Window.share_of(deadline, later=1).end == pytest.approx(deadline - 2)
    assert Settings().resilience.fallback_reserve_s == 2


async def test_a_retry_is_made_only_when_the_wait_and_another_try_as_long_fit_in_the_models_window(
    make: Callable[..., Engine],
) -> None:
    """The retry arithmetic with plain numbers, far from what a pause of the machine could move."""
    engine = make(Scripted("first"), Scripted("second"), resilience={"max_retries": 2})
    timeout = Timeout("no answer in time", provider="first", status=None)
    roomy = Window.share_of(anyio.current_time() + 100, later=1)  # 92 s for the first model
    wait = engine.caller.retry_wait(timeout, 0, 1.0, roomy.end)
    assert wait is not None and 0 < wait <= 0.02  # a fast failure is retried, after its backoff
    assert engine.caller.retry_wait(timeout, 2, 1.0, roomy.end) is None  # out of retries
    assert engine.caller.retry_wait(timeout, 0, 92.0, roomy.end) is None  # a try as long again would not fit
    # The case seen, in numbers: a 4 s deadline, two models. The first's share is 2 s, so its try
    # is cut there (not at its own 3 s timeout) and no retry fits in what is left of it.
    issue = Window.share_of(anyio.current_time() + 4, later=1)
    assert issue.share_s <= 2.0
    assert engine.caller.retry_wait(timeout, 0, issue.share_s, issue.end) is None


@pytest.mark.slow
async def test_a_slow_first_model_never_turns_the_call_into_a_deadline_error(make: Callable[..., Engine]) -> None:
    """At the scale seen (a 4 s deadline): a 1.2 s pause of the machine leaves the backup time."""
    slow, fast = Scripted("first", default=hang()), Scripted("second")
    engine = make(slow, fast)
    with anyio.fail_after(30):
        result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN, deadline_s=4))
    assert result.model == "second:m"
    assert outcomes(result.attempts) == [("first:m", "error", "timeout"), ("second:m", "ok", None)]
    # Cut at its share (half: one model comes after it), not at the deadline, and told so. (The
    # share is taken once routing is done: a pause before that leaves it a little less.)
    said = re.search(r"no answer within its (\d+\.\d) s share of the call's 4 s deadline", result.attempts[0].error or "")
    assert said and 1.0 <= float(said[1]) <= 2.0, result.attempts[0].error
    assert result.attempts[0].latency_ms >= 500  # it was given its time (less any pause before its try)


@pytest.mark.slow
async def test_retries_on_one_model_stop_when_they_would_leave_the_rest_of_the_chain_no_time(
    make: Callable[..., Engine],
) -> None:
    """The case seen: its own 3 s timeout, a retry, and the 4 s deadline was gone before the
    backup was asked. Now the try is cut at the first model's 2 s share and not retried."""
    timing_out = Scripted("first", default=after(3, fail(Timeout("no answer in time", provider="first", status=None))))
    engine = make(timing_out, Scripted("second"), resilience={"max_retries": 2})
    with anyio.fail_after(30):
        result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN, deadline_s=4))
    assert result.model == "second:m"
    assert timing_out.calls == 1
    assert outcomes(result.attempts) == [("first:m", "error", "timeout"), ("second:m", "ok", None)]
    assert "share of the call's 4 s deadline" in (result.attempts[0].error or "")


async def test_a_fast_failure_is_still_retried_within_its_share(make: Callable[..., Engine]) -> None:
    flaky = Scripted("first", fail(ServerError("e1", status=500)), fail(ServerError("e2", status=500)))
    engine = make(flaky, Scripted("second"), resilience={"max_retries": 2})
    result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN, deadline_s=60))
    assert outcomes(result.attempts) == [("first:m", "error", "server_error")] * 2 + [("first:m", "ok", None)]


@pytest.mark.slow
async def test_a_wait_for_budget_on_one_model_is_bounded_by_its_share_of_the_deadline(
    make: Callable[..., Engine],
) -> None:
    """Another call's hold leaves the first model no room until it settles (so the call waits for
    it rather than refuse), but that call hangs: the wait ends with the first model's share, and
    the free model after it (a little slow) still has time to answer. A 4 s deadline: the wait
    ends after the first model's 2 s, which leaves the second room for a pause of the machine."""
    holding = anyio.Event()

    async def hold_then_hang(model: str, request: CompletionRequest) -> Completion:
        holding.set()
        await anyio.sleep(3600)
        raise AssertionError("unreachable")

    engine = make(Scripted("first"), Scripted("second", default=after(0.15, answer())),
                  Scripted("third", default=hold_then_hang), dear="first", free="second")
    await engine.set_budget("global", "daily", Decimal("0.033"))  # the dear worst case fits, not beside the hold
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: engine.complete(CompleteArgs(prompt="hold", model="third:m", max_tokens=1_000)))
            await holding.wait()
            result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN, max_tokens=1_000, deadline_s=4))
            tg.cancel_scope.cancel()
    assert outcomes(result.attempts) == [("first:m", "skipped", "budget_exceeded"), ("second:m", "ok", None)]


# -- 6. breakers count calls; every skipped model is said -------------------------------------


async def test_one_call_whose_retries_all_fail_counts_once_against_the_circuit(make: Callable[..., Engine]) -> None:
    """A local server restarting: one call's three tries fail. That is one failed call, not three,
    so the circuit stays closed and the next call, once the server is back, reaches it."""
    down = ServerError("connection reset", provider="first", status=502)
    local = Scripted("first", fail(down), fail(down), fail(down))
    engine = make(local, Scripted("second"), resilience={"max_retries": 2, "breaker_failures": 3})
    result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert [a.outcome for a in result.attempts] == ["error", "error", "error", "ok"]
    health = engine.health.describe("first:m")
    assert (health["circuit"], health["consecutive_failures"]) == ("closed", 1)

    again = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert again.model == "first:m" and outcomes(again.attempts) == [("first:m", "ok", None)]


async def test_three_failed_calls_open_the_circuit_and_a_forced_chain_says_it_skipped_the_model(
    make: Callable[..., Engine], breaker_clock: ManualClock,
) -> None:
    """...so a forced chain never goes silently to a model sixteen times dearer."""
    engine = make(Scripted("first", default=fail(ServerError("down", status=500))), Scripted("second"), dear="second",
                  resilience={"breaker_failures": 3, "breaker_cooldown_s": 60})
    for _ in range(3):
        await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    breaker_clock.advance(15)  # opened at 12:00:00 for 60 s
    result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert outcomes(result.attempts) == [("first:m", "skipped", "circuit_open"), ("second:m", "ok", None)]
    detail = result.attempts[0].error or ""
    assert detail.endswith("after 3 failed calls in a row; next try at 2025-03-14T12:01:00+00:00 (in 45.0 s)"), detail
    row = engine.ledger.rows()[0]
    assert [a["outcome"] for a in json.loads(row["attempts"])] == ["skipped", "ok"]
    health = engine.providers_status()[0]["models"][0]["health"]
    assert (health["circuit"], health["retry_at"], health["retry_in_s"]) == ("open", "2025-03-14T12:01:00+00:00", 45.0)


async def test_a_forced_chain_whose_every_model_is_left_out_is_refused_listing_each_with_its_reason(
    make: Callable[..., Engine],
) -> None:
    engine = make(Scripted("first", default=fail(AuthError("bad key", status=401))), Scripted("second"),
                  resilience={"breaker_failures": 1, "breaker_cooldown_s": 60})
    with pytest.raises(AllAttemptsFailed):
        await engine.complete(CompleteArgs(prompt="hi", model="first:m"))
    with pytest.raises(NoRoute) as info:
        await engine.complete(CompleteArgs(prompt="hi", model="first:m"))
    row = engine.ledger.rows()[0]
    assert row["status"] == "refused" and row["id"] == info.value.request_id
    assert [(a["model"], a["outcome"], a["error_code"]) for a in json.loads(row["attempts"])] == [
        ("first:m", "skipped", "circuit_open")]


async def test_failures_that_say_nothing_of_a_models_health_never_open_its_circuit(make: Callable[..., Engine]) -> None:
    errors = [ContextTooLong("too long", status=400), ToolCallOnly("a tool call"), ContextTooLong("too long", status=400)]
    engine = make(Scripted("first", *(fail(e) for e in errors)), Scripted("second"), resilience={"breaker_failures": 2})
    for _ in errors:
        await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert engine.health.describe("first:m")["circuit"] == "closed"


async def test_a_model_a_forced_chain_names_but_routing_leaves_out_is_in_the_attempts(
    make: Callable[..., Engine],
) -> None:
    engine = make(Scripted("first"), Scripted("second"), Scripted("third"), dear="first")
    result = await engine.complete(
        CompleteArgs(prompt="hi", model=["first:m", "second:m"], max_tokens=50, max_cost_usd=Decimal("0.0005")))
    assert outcomes(result.attempts) == [("first:m", "skipped", "over_max_cost"), ("second:m", "ok", None)]
    assert "is above max_cost_usd" in (result.attempts[0].error or "")


async def test_a_retried_stream_reports_only_its_own_text_as_progress(
    make: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream cut midway is retried: what the caller is shown must restart with the new try,
    never the dead try's text with the new one after it."""
    monkeypatch.setattr("llm_router.timings.PROGRESS_INTERVAL_S", 0)
    cut = MalformedResponse("the stream ended before [DONE]", provider="first")
    engine = make(Scripted("first", streamed("dead ", "end", then=fail(cut)),
                           streamed("fresh ", "answer", then=answer("fresh answer"))), resilience={"max_retries": 1})
    shown: list[str] = []

    async def progress(_value: float, _total: float | None, message: str) -> None:
        shown.append(message)

    result = await engine.complete(CompleteArgs(prompt="hi", model="first:m"), progress=progress)
    assert result.text == "fresh answer"
    assert shown[-1] == "fresh answer" and "dead end" in shown


async def test_models_past_max_attempts_are_listed_as_skipped_when_the_walk_reaches_them(
    make: Callable[..., Engine],
) -> None:
    broken = fail(ServerError("down", status=500))
    engine = make(Scripted("first", default=broken), Scripted("second", default=broken), Scripted("third"),
                  routing={"max_attempts": 2})
    with pytest.raises(AllAttemptsFailed) as info:
        await engine.complete(CompleteArgs(prompt="hi", model=["first:m", "second:m", "third:m"]))
    assert outcomes(info.value.attempts)[-1] == ("third:m", "skipped", "max_attempts")


# -- 7. only known windows exclude; windows are learnt ----------------------------------------


async def test_a_guessed_window_never_blocks_a_fallback_that_would_have_worked(make: Callable[..., Engine]) -> None:
    """Both windows only assumed (128,000): the first server says the prompt is too long, giving
    no figure. The fallback must still be asked, not skipped as "no larger"."""
    engine = make(Scripted("first", fail(ContextTooLong("prompt too long", status=400))), Scripted("second"))
    result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert outcomes(result.attempts) == [("first:m", "error", "context_too_long"), ("second:m", "ok", None)]


async def test_a_window_a_server_states_in_its_error_is_remembered_and_shown(make: Callable[..., Engine]) -> None:
    small = ContextTooLong("the request exceeds the available context size (2048 tokens)", status=400,
                           context_window=2_048)
    engine = make(Scripted("first", fail(small)), Scripted("second"))
    await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    shown = engine.providers_status()[0]["models"][0]
    assert (shown["context_window"], shown["context_source"], shown["context_known"]) == (
        2_048, "reported by the server in an error", True)
    # Known now, the window excludes a call that cannot fit, and route_explain says why.
    explained = await engine.explain(CompleteArgs(prompt="x " * 4_000, model=CHAIN, max_tokens=1_000))
    assert explained.chain == ["second:m"]
    assert explained.excluded[0]["reason"] == "context_too_small" and "2048-token window" in explained.excluded[0]["detail"]
    assert explained.candidates[0]["context_source"].startswith("assumed")


async def test_after_a_stated_window_only_larger_known_windows_are_tried(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("first", fail(ContextTooLong("too long", status=400, context_window=4_096))),
                  Scripted("second"), Scripted("third"))
    engine.catalog.learn_window("second:m", 4_096, "reported by the server")
    result = await engine.complete(CompleteArgs(prompt="hi", model=["first:m", "second:m", "third:m"]))
    assert outcomes(result.attempts) == [("first:m", "error", "context_too_long"),
                                         ("second:m", "skipped", "context_too_small"), ("third:m", "ok", None)]


async def test_an_assumed_window_is_asked_of_the_server_once_before_the_first_decision(
    make: Callable[..., Engine],
) -> None:
    async def window() -> int:
        return 8_192

    local = Scripted("first", window=window)
    engine = make(local, Scripted("second"))
    explained = await engine.explain(CompleteArgs(prompt="hi", model="first:m"))
    assert explained.candidates[0]["context_window"] == 8_192
    assert explained.candidates[0]["context_source"] == "reported by the server"
    for _ in range(3):
        await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert local.window_asks == 1
    assert engine.catalog.get("second:m").context_known is False  # it said nothing: still assumed


async def test_a_server_slow_to_say_its_window_never_holds_up_a_call_for_long(make: Callable[..., Engine]) -> None:
    async def never() -> int:
        await anyio.sleep(3600)
        return 1

    async def garbage() -> int:
        raise ValueError("the server sent nonsense")

    first, second = Scripted("first", window=never), Scripted("second", window=garbage)
    engine = make(first, second)
    t0 = anyio.current_time()
    with anyio.fail_after(120):
        await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
        await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    # Waited a moment, never the hour the server takes (a bound no pause of the machine reaches)...
    assert anyio.current_time() - t0 < 60
    # ...and once: the second call did not ask again.
    assert (first.window_asks, second.window_asks) == (1, 1)
    assert not engine.catalog.get("first:m").context_known and not engine.catalog.get("second:m").context_known


# -- 8. usage a server did not report ----------------------------------------------------------


async def test_usage_a_server_omits_is_counted_by_its_own_tokenizer_and_marked_in_the_answer(
    make: Callable[..., Engine],
) -> None:
    async def words(text: str) -> int:
        return len(text.split())

    local = Scripted("first", default=answer("one two three four five six seven", usage=None), tokens=words)
    engine = make(local, Scripted("second"))
    result = await engine.complete(CompleteArgs(prompt="count these five words", system="be brief", model="first:m"))
    # The prompt as sent (system and turn: 6 words) plus 4 a message and 3 for the reply; the answer's 7.
    assert (result.usage.input_tokens, result.usage.output_tokens) == (6 + 2 * 4 + 3, 7)
    assert result.usage.estimated and result.usage.estimate_method == "server_tokenizer"
    assert any("estimated" in n and "tokenizer" in n for n in result.notes)
    published = result.to_json()
    assert published["usage"]["estimated"] is True and published["usage"]["estimate_method"] == "server_tokenizer"
    assert any("estimated" in n for n in published["notes"])
    row = engine.ledger.rows()[0]
    assert (row["cost_estimated"], row["input_tokens"], row["output_tokens"]) == (1, 17, 7)
    await engine.complete(CompleteArgs(prompt="hi", model="second:m"))  # reported usage: not an estimate
    report = await engine.cost_report(period="today")
    assert report.totals["requests"] == 2
    assert (report.totals["estimated_requests"], report.totals["estimated_cost_usd"]) == (1, result.cost_usd)


async def test_without_a_tokenizer_the_estimate_is_four_characters_a_token_and_says_so(
    make: Callable[..., Engine],
) -> None:
    engine = make(Scripted("first", default=answer("x" * 40, usage=None)))
    result = await engine.complete(CompleteArgs(prompt="y" * 80, model="first:m"))
    assert (result.usage.input_tokens, result.usage.output_tokens) == (80 // 4 + 4, 40 // 4)
    assert result.usage.estimate_method == "about_4_chars_per_token"
    assert any("about 4 characters a token" in n for n in result.notes)


async def test_a_tokenizer_that_hangs_or_fails_leaves_the_character_estimate(make: Callable[..., Engine]) -> None:
    async def hanging(text: str) -> int:
        await anyio.sleep(3600)
        return 1

    async def broken(text: str) -> int:
        raise RuntimeError("tokenizer crashed")

    for tokens in (hanging, broken):
        engine = make(Scripted("first", default=answer("four char", usage=None), tokens=tokens))
        with anyio.fail_after(30):  # a hanging tokenizer is given up on after COUNT_TOKENS_S
            result = await engine.complete(CompleteArgs(prompt="hi", model="first:m", deadline_s=10))
        assert result.usage.estimate_method == "about_4_chars_per_token"
        await engine.aclose()


async def test_a_call_cancelled_while_its_usage_is_counted_still_records_its_row_and_frees_its_hold(
    make: Callable[..., Engine],
) -> None:
    counting = anyio.Event()

    async def slow_tokenizer(text: str) -> int:
        counting.set()
        await anyio.sleep(3600)
        return 1

    engine = make(Scripted("first", default=answer("some text", usage=None), tokens=slow_tokenizer))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.complete, CompleteArgs(prompt="hi", model="first:m", deadline_s=10))
            await counting.wait()
            tg.cancel_scope.cancel()
    rows = engine.ledger.rows()
    assert [(r["status"], r["cost_estimated"]) for r in rows] == [("ok", 1)]  # answered and billed
    assert held_by_calls(engine) == 0


async def test_reported_usage_is_never_marked_estimated(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("first"))
    result = await engine.complete(CompleteArgs(prompt="hi", model="first:m"))
    assert not result.usage.estimated and result.usage.estimate_method is None and result.notes is None
    assert "estimate_method" not in result.to_json()["usage"]


# -- the rest: request ids, task types, tool calls, cancellation, stray exceptions -------------


async def test_every_error_after_a_call_has_a_row_carries_that_rows_request_id(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("first", default=fail(ServerError("down", status=500))), Scripted("second"))
    with pytest.raises(AllAttemptsFailed) as failed:
        await engine.complete(CompleteArgs(prompt="hi", model="first:m"))
    await engine.set_budget("global", "daily", Decimal(0))
    with pytest.raises(BudgetExceeded) as refused:
        await engine.complete(CompleteArgs(prompt="hi", model="second:m"))
    ids = [r["id"] for r in engine.ledger.rows()]
    for error in (failed.value, refused.value):
        assert error.request_id in ids and error.to_dict()["request_id"] == error.request_id


async def test_an_unknown_task_type_is_accepted_and_said_in_the_notes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, routing={"rules": [{"task_type": "code_generation", "chain": ["first:m"]}]})
    engine = Engine(settings, providers={n: Scripted(n) for n in NAMES})  # type: ignore[misc]
    try:
        result = await engine.complete(CompleteArgs(prompt="hi", task_type="code_generaton"))
        assert any("no routing rule for task_type 'code_generaton'" in n and "did you mean 'code_generation'" in n
                   for n in result.notes)
        ruled = await engine.complete(CompleteArgs(prompt="hi", task_type="code_generation"))
        assert ruled.notes is None
    finally:
        await engine.aclose()


async def test_an_answer_that_is_only_a_tool_call_falls_back_and_its_tokens_are_billed(
    make: Callable[..., Engine],
) -> None:
    tool_call = ToolCallOnly("answered with a tool call (get_weather) and no text", provider="first", model="m",
                             usage=Usage(100, 20))
    engine = make(Scripted("first", fail(tool_call)), Scripted("second", default=answer("the text", Usage(10, 5))))
    result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert result.text == "the text"
    assert outcomes(result.attempts) == [("first:m", "error", "tool_call_only"), ("second:m", "ok", None)]
    row = engine.ledger.rows()[0]
    assert (row["input_tokens"], row["output_tokens"]) == (110, 25)  # the tool call's tokens were billed


async def test_a_cancelled_attempt_records_how_long_it_ran(make: Callable[..., Engine]) -> None:
    started = anyio.Event()

    async def slow(model: str, request: CompletionRequest) -> Completion:
        started.set()
        await anyio.sleep(3600)
        raise AssertionError("unreachable")

    engine = make(Scripted("first", default=slow))
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.complete, CompleteArgs(prompt="hi", model="first:m"))
        with anyio.fail_after(5):
            await started.wait()
        await anyio.sleep(0.15)  # the attempt's running time is what is measured here, not a synchronisation
        tg.cancel_scope.cancel()
    attempt = json.loads(engine.ledger.rows()[0]["attempts"])[0]
    assert attempt["outcome"] == "cancelled" and attempt["latency_ms"] >= 150


async def test_a_call_cancelled_while_it_reports_a_fallback_records_its_row_and_frees_every_hold(
    make: Callable[..., Engine],
) -> None:
    """The first model's withheld answer was billed (its hold kept for the row); the client cancels
    while being told of the fallback. The row must still be written, with that cost, and no hold
    may be left behind."""
    tool_call = ToolCallOnly("a tool call and no text", provider="first", model="m", usage=Usage(100, 20))
    engine = make(Scripted("first", fail(tool_call)), Scripted("second"))
    reporting = anyio.Event()

    async def progress(_value: float, _total: float | None, message: str) -> None:
        if "falling back" in message:
            reporting.set()
            await anyio.sleep(3600)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: engine.complete(CompleteArgs(prompt="hi", model=CHAIN), progress=progress))
            await reporting.wait()
            tg.cancel_scope.cancel()
    rows = engine.ledger.rows()
    assert [r["status"] for r in rows] == ["cancelled"] and rows[0]["cost_nusd"] > 0
    assert held_by_calls(engine) == 0


async def test_a_stray_exception_from_an_adapter_fails_one_attempt_never_the_call(make: Callable[..., Engine]) -> None:
    engine = make(Scripted("first", fail(KeyError("choices"))), Scripted("second"))
    result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert outcomes(result.attempts) == [("first:m", "error", "malformed_response"), ("second:m", "ok", None)]
    assert "KeyError" in (result.attempts[0].error or "")


@pytest.mark.slow
async def test_the_slice_each_later_model_keeps_is_a_setting(make: Callable[..., Engine]) -> None:
    """``[resilience] fallback_reserve_s``: with 1.5 s kept for the backup, a hanging first model of
    a 4 s call is cut after 2.5 s (the default 8 s slice would have left it an equal share, 2 s)."""
    slow, fast = Scripted("first", default=hang()), Scripted("second")
    engine = make(slow, fast, resilience={"fallback_reserve_s": 1.5})
    with anyio.fail_after(30):
        result = await engine.complete(CompleteArgs(prompt="hi", model=CHAIN, deadline_s=4))
    assert result.model == "second:m"
    # More than the equal share: the setting was used. (Taken once routing is done, the share is
    # 2.5 s less any pause of the machine before it.)
    said = re.search(r"no answer within its (\d+\.\d) s share of the call's 4 s deadline", result.attempts[0].error or "")
    assert said and 2.0 < float(said[1]) <= 2.5, result.attempts[0].error


async def test_a_server_that_did_not_say_its_window_at_start_is_asked_again_later(
    make: Callable[..., Engine],
) -> None:
    """A local server down (or busy past the wait) when the first call came kept its assumed
    window for good: it was never asked again, so a window it could have said was never learnt."""
    answers: deque[int | None] = deque([None, 4_096])

    async def window() -> int | None:
        return answers.popleft()

    local = Scripted("first", window=window)
    engine = make(local, Scripted("second"))
    await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert local.window_asks == 1  # not again at once: the next ask waits a minute
    assert engine.catalog.get("first:m").context_known is False

    engine.windows.ask_at = 0.0  # the minute has passed
    await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert local.window_asks == 2
    entry = engine.catalog.get("first:m")
    assert (entry.context_window, entry.context_source, entry.context_known) == (4_096, "reported by the server", True)
    engine.windows.ask_at = 0.0
    await engine.complete(CompleteArgs(prompt="hi", model=CHAIN))
    assert local.window_asks == 2, "a window learnt is never asked again"
