"""Money helpers and the error vocabulary."""

from __future__ import annotations

from decimal import Decimal

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


@hypothesis_settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.text(max_size=200))
def test_a_lone_prompt_hashes_exactly_as_the_general_json_form(text: str) -> None:
    """The hash is of the prompt's compact JSON, a lone user prompt (the usual call) like any
    other: rows hashed before and after compare."""
    import hashlib
    import json

    from llm_router.calls import prompt_hash

    general = json.dumps({"system": None, "messages": [["user", text]]}, ensure_ascii=False, separators=(",", ":"))
    assert prompt_hash(None, [("user", text)]) == hashlib.sha256(general.encode()).hexdigest()
    assert prompt_hash("", [("user", text)]) != prompt_hash(None, [("user", text)])


@pytest.mark.parametrize(
    ("system", "messages", "known"),
    [
        (None, [("user", "hi")], "e953e250d8ff4527db0bde76896b0978ccc4550d652bf93d39b318a639859015"),
        (None, [("user", 'Grüße, 世界 "quoted" \\ back\nline\t\u2028')],
         "bf72640beadca78d67822fc16f71e4d52b848b4afbed5c057d412656ecacbd1a"),
        ("be brief", [("user", "hi")], "c6c7288d2dbee4edc44f4b62dedbb364d7e2539f3d8380b22e3ceff99969546d"),
        ("", [("user", "hi")], "ac993735cd25f2d1f8b384e29b6eaa1e647693612b15e587566d808d6bdda863"),
        (None, [("user", "a"), ("assistant", "b"), ("user", "c")],
         "b9b0af5c911d03b9d0256cc6daf4daf9e685a68092544ce4fe9b048302ee09bf"),
        ("sys", [("user", "x"), ("assistant", "y"), ("user", "\U0001f600")],
         "4bffc18037232d454b11667954ee7c25aa1a7c51e5889fed188c6ae29a8eff05"),
    ],
)
def test_prompt_hashes_already_in_users_ledgers_never_change(
    system: str | None, messages: list[tuple[str, str]], known: str
) -> None:
    """Hashes made by earlier builds (these were), so a prompt asked again matches its old rows."""
    from llm_router.calls import prompt_hash

    assert prompt_hash(system, messages) == known
