"""The circuit breaker's state machine (``resilience.Breaker``) and the board that keeps one per
``provider:model`` (``resilience.HealthBoard``), through their public methods.

A ``Breaker`` is told the time by its caller, so these tests move time by passing it: no sleeps.
The board reads ``time.monotonic`` itself; its tests use a cool-down of zero (a circuit that may
be tried again at once) or of an hour (one that may not within the test).
"""

from __future__ import annotations

import pytest

from llm_router.resilience import Breaker, HealthBoard, counts_against_circuit
from llm_router.types import (
    AuthError,
    ConnectionFailed,
    ContentFiltered,
    ContextTooLong,
    InvalidRequest,
    MalformedResponse,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
    ToolCallOnly,
)

T0 = 1_000.0
"""A monotonic time to start from (any will do: the breaker only compares times it was given)."""


def opened(threshold: int = 3, cooldown_s: float = 30.0, max_cooldown_s: float = 300.0) -> Breaker:
    """A breaker just opened at ``T0`` by ``threshold`` failed calls."""
    breaker = Breaker(failure_threshold=threshold, cooldown_s=cooldown_s, max_cooldown_s=max_cooldown_s)
    for _ in range(threshold):
        breaker.before_call(T0)
        breaker.failure(T0)
    assert breaker.state == "open"
    return breaker


# -- closed -----------------------------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_lets_every_call_through() -> None:
    breaker = Breaker()
    assert (breaker.state, breaker.consecutive_failures, breaker.retry_at()) == ("closed", 0, None)
    for _ in range(10):
        assert breaker.allows(T0)
        breaker.before_call(T0)
    assert breaker.state == "closed" and not breaker.trial_in_flight


def test_the_circuit_stays_closed_below_the_failure_threshold() -> None:
    breaker = Breaker(failure_threshold=3)
    for n in (1, 2):
        breaker.before_call(T0)
        breaker.failure(T0)
        assert (breaker.state, breaker.consecutive_failures) == ("closed", n)
        assert breaker.allows(T0)


def test_the_circuit_opens_after_threshold_consecutive_failures() -> None:
    breaker = opened(threshold=3, cooldown_s=30.0)
    assert breaker.consecutive_failures == 3
    assert breaker.opened_at == T0
    assert breaker.current_cooldown_s == 30.0
    assert breaker.retry_at() == T0 + 30.0


def test_a_success_between_failures_starts_the_count_again() -> None:
    breaker = Breaker(failure_threshold=3)
    for _ in range(2):
        breaker.failure(T0)
    breaker.success()
    assert breaker.consecutive_failures == 0
    for _ in range(2):
        breaker.failure(T0)
    assert breaker.state == "closed"  # two after the success, not four in all
    breaker.failure(T0)
    assert breaker.state == "open"


def test_a_threshold_of_one_opens_on_the_first_failure() -> None:
    assert opened(threshold=1).consecutive_failures == 1


# -- open -------------------------------------------------------------------------------------------


def test_an_open_circuit_refuses_calls_until_its_cooldown_has_passed() -> None:
    breaker = opened(cooldown_s=30.0)
    assert not breaker.allows(T0)
    assert not breaker.allows(T0 + 29.999)
    assert breaker.allows(T0 + 30.0)  # the cool-down's end lets the trial through, not a tick later
    assert breaker.state == "open"  # asking whether it may is no call: the state moves on before_call


def test_a_call_started_on_an_open_circuit_before_its_cooldown_leaves_it_open() -> None:
    breaker = opened(cooldown_s=30.0)
    breaker.before_call(T0 + 10)
    assert breaker.state == "open" and not breaker.trial_in_flight


def test_retry_info_of_an_open_circuit_says_how_long_until_the_trial() -> None:
    breaker = opened(cooldown_s=30.0)
    info = breaker.retry_info(T0 + 12.34)
    assert info is not None
    assert info["retry_in_s"] == 17.7
    assert info["retry_at"].endswith("+00:00")  # ISO 8601 in UTC, to the second
    late = breaker.retry_info(T0 + 99)
    assert late is not None and late["retry_in_s"] == 0.0  # past due: never negative
    assert Breaker().retry_info(T0) is None


# -- half-open: one trial call ------------------------------------------------------------------------


def test_after_the_cooldown_the_circuit_is_half_open_and_lets_one_trial_through() -> None:
    breaker = opened(cooldown_s=30.0)
    breaker.before_call(T0 + 30)
    assert (breaker.state, breaker.trial_in_flight) == ("half_open", True)
    assert breaker.retry_at() is None  # not open: there is no next trial to wait for
    assert not breaker.allows(T0 + 31)  # a second call waits while the trial is out
    assert not breaker.allows(T0 + 10_000)  # however long the trial takes


def test_a_successful_trial_closes_the_circuit_and_forgets_the_failures() -> None:
    breaker = opened(cooldown_s=30.0)
    breaker.before_call(T0 + 30)
    breaker.success()
    assert breaker.state == "closed"
    assert (breaker.consecutive_failures, breaker.current_cooldown_s, breaker.trial_in_flight) == (0, 0.0, False)
    assert breaker.allows(T0 + 30)
    for _ in range(2):  # a full threshold again before it reopens
        breaker.failure(T0 + 31)
    assert breaker.state == "closed"


def test_a_failed_trial_reopens_the_circuit_with_a_doubled_cooldown() -> None:
    breaker = opened(cooldown_s=30.0)
    breaker.before_call(T0 + 30)
    breaker.failure(T0 + 31)
    assert (breaker.state, breaker.opened_at, breaker.current_cooldown_s) == ("open", T0 + 31, 60.0)
    assert not breaker.trial_in_flight
    assert not breaker.allows(T0 + 31 + 59.9)
    assert breaker.allows(T0 + 31 + 60)


def test_the_doubled_cooldown_stops_at_its_cap() -> None:
    breaker = opened(cooldown_s=30.0, max_cooldown_s=100.0)
    now, seen = T0, []
    for _ in range(4):
        now += breaker.current_cooldown_s
        breaker.before_call(now)
        assert breaker.state == "half_open"
        breaker.failure(now)
        seen.append(breaker.current_cooldown_s)
    assert seen == [60.0, 100.0, 100.0, 100.0]


def test_a_success_after_a_capped_cooldown_starts_again_from_the_base_cooldown() -> None:
    breaker = opened(cooldown_s=30.0, max_cooldown_s=100.0)
    for _ in range(3):
        at = breaker.opened_at + breaker.current_cooldown_s
        breaker.before_call(at)
        breaker.failure(at)
    breaker.before_call(breaker.opened_at + breaker.current_cooldown_s)
    breaker.success()
    for _ in range(3):
        breaker.failure(T0 + 10_000)
    assert breaker.current_cooldown_s == 30.0


# -- what counts against the circuit ---------------------------------------------------------------


@pytest.mark.parametrize("error", [RateLimited, Overloaded, ServerError, Timeout, ConnectionFailed, MalformedResponse, AuthError])
def test_unhealthy_failures_count_against_the_circuit(error: type[ProviderError]) -> None:
    assert counts_against_circuit(error("x", provider="p", model="m"))


@pytest.mark.parametrize("error", [ContextTooLong, ContentFiltered, ToolCallOnly, InvalidRequest, ProviderError])
def test_a_request_refused_for_its_own_sake_does_not_count_against_the_circuit(error: type[ProviderError]) -> None:
    assert not counts_against_circuit(error("x", provider="p", model="m"))


# -- the board: one breaker per provider:model -----------------------------------------------------


def test_the_board_allows_a_model_it_has_never_called_without_creating_its_state() -> None:
    board = HealthBoard()
    assert board.allows("p:m") == (True, None)
    assert board.p50_ms("p:m") is None and board.error_rate("p:m") is None
    assert board.describe("p:m") == {
        "circuit": "closed", "consecutive_failures": 0, "retry_at": None, "retry_in_s": None,
        "p50_latency_ms": None, "error_rate": None, "recent_calls": 0,
    }


def test_the_board_opens_one_models_circuit_and_leaves_the_others_closed() -> None:
    board = HealthBoard(failure_threshold=2, cooldown_s=3600)
    for _ in range(2):
        board.before_call("p:bad")
        board.record("p:bad", ok=False, latency_ms=5)
    board.record("p:good", ok=True, latency_ms=7)
    allowed, why = board.allows("p:bad")
    assert not allowed and why is not None
    assert (why["state"], why["failures"]) == ("open", 2)
    assert 3599 <= why["retry_in_s"] <= 3600 and why["retry_at"]
    assert board.allows("p:good") == (True, None)
    assert board.allows("q:bad") == (True, None)  # another provider's model of the same name
    assert board.describe("p:bad")["circuit"] == "open"


def test_the_board_lets_one_trial_through_a_half_open_circuit_and_says_it_waits_on_it() -> None:
    board = HealthBoard(failure_threshold=1, cooldown_s=0)
    board.record("p:m", ok=False, latency_ms=1)
    assert board.allows("p:m") == (True, None)  # cool-down of zero: the trial may go at once
    board.before_call("p:m")
    allowed, why = board.allows("p:m")
    assert not allowed
    assert why == {"state": "half_open", "failures": 1}  # no retry time: it waits on the trial call
    board.record("p:m", ok=True, latency_ms=1)
    assert board.allows("p:m") == (True, None)
    assert board.describe("p:m")["circuit"] == "closed"


def test_a_failure_that_does_not_count_ends_the_trial_but_leaves_the_circuit_as_it_was() -> None:
    board = HealthBoard(failure_threshold=1, cooldown_s=0)
    board.record("p:m", ok=False, latency_ms=1)
    board.before_call("p:m")
    board.record("p:m", ok=False, latency_ms=1, counts_against_circuit=False)
    state = board.get("p:m").breaker
    assert (state.state, state.trial_in_flight, state.consecutive_failures) == ("half_open", False, 1)
    assert board.allows("p:m") == (True, None)  # the next call may be the trial


def test_failures_that_do_not_count_never_open_the_circuit_nor_enter_the_error_rate() -> None:
    board = HealthBoard(failure_threshold=2, cooldown_s=3600)
    board.record("p:m", ok=True, latency_ms=10)
    for _ in range(10):
        board.before_call("p:m")
        board.record("p:m", ok=False, latency_ms=1, counts_against_circuit=False)
    assert board.allows("p:m") == (True, None)
    assert board.describe("p:m")["consecutive_failures"] == 0
    assert board.error_rate("p:m") == 0.0
    assert board.describe("p:m")["recent_calls"] == 1


def test_the_board_keeps_recent_latency_and_error_rate_per_model() -> None:
    board = HealthBoard(failure_threshold=100)
    for ms in (30, 10, 20):
        board.record("p:m", ok=True, latency_ms=ms)
    board.record("p:m", ok=False, latency_ms=999)  # a failure's latency is not the model's speed
    assert board.p50_ms("p:m") == 20
    assert board.error_rate("p:m") == 0.25
    described = board.describe("p:m")
    assert (described["p50_latency_ms"], described["error_rate"], described["recent_calls"]) == (20, 0.25, 4)


def test_the_board_remembers_only_the_last_fifty_calls() -> None:
    board = HealthBoard(failure_threshold=1_000)
    for _ in range(50):
        board.record("p:m", ok=False, latency_ms=1)
    for _ in range(50):
        board.record("p:m", ok=True, latency_ms=1)
    assert board.error_rate("p:m") == 0.0
    assert board.describe("p:m")["recent_calls"] == 50
