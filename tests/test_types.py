"""Money helpers and the error vocabulary."""

from __future__ import annotations

from decimal import Decimal

import pytest

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
