"""Money helpers and the error vocabulary."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from llm_router.types import (
    AllAttemptsFailed,
    AttemptRecord,
    AuthError,
    BudgetExceeded,
    InvalidInput,
    RateLimited,
    usd_str,
    usd_to_nusd,
)


@pytest.mark.parametrize(
    ("nusd", "text"),
    [(0, "0"), (1, "0.000000001"), (100, "0.0000001"), (10**9, "1"), (5 * 10**10, "50"),
     (1_234_567_891, "1.234567891"), (-5, "-0.000000005"), (44_250, "0.00004425")],
)
def test_amounts_print_as_plain_exact_decimals_never_in_exponent_form(nusd: int, text: str) -> None:
    assert usd_str(nusd) == text
    assert usd_to_nusd(Decimal(text)) == nusd


def test_reservations_round_up_and_costs_round_to_nearest() -> None:
    assert usd_to_nusd(Decimal("0.0000000001"), round_up=True) == 1
    assert usd_to_nusd(Decimal("0.0000000004")) == 0
    assert usd_to_nusd("0.0000000015") == 2  # half to even


def test_errors_carry_what_the_caller_needs() -> None:
    assert RateLimited("x", retry_after=3).retryable and RateLimited("x").fallback_ok
    assert not AuthError("x").retryable
    e = InvalidInput("max_tokens", "is too large", allowed="1 to 1000000")
    assert str(e) == "max_tokens: is too large (allowed: 1 to 1000000)" and e.to_dict()["field"] == "max_tokens"
    b = BudgetExceeded(limit_name="global daily", limit_nusd=10**9, spent_nusd=9 * 10**8, reserved_nusd=0,
                       needed_nusd=2 * 10**8, resets_at="2026-11-24T00:00:00+00:00")
    assert "global daily of $1" in str(b) and "$0.9 spent" in str(b) and b.to_dict()["resets_at"]
    failed = AllAttemptsFailed([AttemptRecord("a:b", "error", "timeout", "slow")], deadline_hit=True)
    assert str(failed).startswith("the deadline passed") and failed.to_dict()["attempts"][0]["model"] == "a:b"


@hypothesis_settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    finish=st.one_of(st.none(), st.sampled_from(["stop", "length"])),
    estimated=st.booleans(),
    tries=st.lists(
        st.tuples(
            st.sampled_from(["ok", "error", "skipped", "cancelled"]),
            st.one_of(st.none(), st.sampled_from(["rate_limited", "timeout"])),
            st.one_of(st.none(), st.text(max_size=20)),
            st.integers(0, 10_000),
            st.one_of(st.none(), st.integers(400, 599)),
            st.one_of(st.none(), st.just("0.0001")),
        ),
        min_size=1,
        max_size=4,
    ),
    tightest=st.one_of(st.none(), st.fixed_dictionaries({"scope": st.just("global"), "tier": st.just("normal")})),
)
def test_an_answer_dumps_to_exactly_the_published_complete_result(
    finish: str | None, estimated: bool, tries: list[tuple[Any, ...]], tightest: dict[str, Any] | None
) -> None:
    """The engine's Answer is plain data with a hand-written to_json; the tool publishes the
    CompleteResult schema. The two must never drift apart."""
    from llm_router.calls import Answer, AnswerUsage, CompleteResult

    attempts = [AttemptRecord(f"p:m{i}", o, c, e, ms, status, cost) for i, (o, c, e, ms, status, cost) in enumerate(tries)]
    answer = Answer(
        request_id="r1", text="hi", provider="p", model="p:m", provider_model="m-2026", finish_reason=finish,
        usage=AnswerUsage(3, 4, 1, 2, estimated), cost_usd="0.00001", latency_ms=12, attempts=attempts,
        budget={"tier": "normal", "tightest": tightest},
    )
    published = CompleteResult(
        **{k: getattr(answer, k) for k in ("request_id", "text", "provider", "model", "provider_model", "finish_reason",
                                           "cost_usd", "latency_ms", "budget")},
        usage={"input_tokens": 3, "output_tokens": 4, "cached_tokens": 1, "cache_write_tokens": 2, "estimated": estimated},
        attempts=[a.to_dict() for a in attempts],
    )

    assert answer.to_json() == published.to_json()
    assert list(answer.to_json()) == list(published.to_json())  # same order of keys, too


@hypothesis_settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.text(max_size=200))
def test_a_lone_prompt_hashes_exactly_as_the_general_json_form(text: str) -> None:
    """prompt_hash spells a lone user prompt out by hand; the hash must be the one the general
    path gives (rows hashed before and after compare)."""
    import hashlib
    import json

    from llm_router.calls import prompt_hash

    general = json.dumps({"system": None, "messages": [["user", text]]}, ensure_ascii=False, separators=(",", ":"))
    assert prompt_hash(None, [("user", text)]) == hashlib.sha256(general.encode()).hexdigest()
    assert prompt_hash("", [("user", text)]) != prompt_hash(None, [("user", text)])
