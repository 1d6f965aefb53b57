"""Circuit breakers, recent health per ``provider:model``, and how a deadline is shared along a chain.

A breaker counts failed *calls*, not tries: one ``complete`` whose tries on a model all fail (its
retries included) is one failure for that model. closed → open after ``failure_threshold``
consecutive failed calls; open → half-open once the cool-down has passed (one trial call is let
through); half-open → closed on a success, or back to open (with a doubled cool-down, capped) on
a failure. Only failures that say something about the model's health count: a request the
provider refused as too long, a filtered answer or a tool call in place of text leave the
circuit alone. Routing skips open circuits and says when they will be tried again (ISO 8601, and
seconds from now). Recent latency and error rate feed the ``fastest`` and ``balanced``
strategies. State lives in memory, per server process.

The deadline: see ``model_window``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import anyio

from . import timings
from .types import AuthError, ProviderError

__all__ = ["Breaker", "Health", "HealthBoard", "Window", "counts_against_circuit", "model_window"]

CircuitState = Literal["closed", "open", "half_open"]



def model_window(remaining_s: float, later_models: int, reserve_s: float | None = None) -> float:
    """Seconds one model of a chain may use, its retries included, out of ``remaining_s``.

    Each of the ``later_models`` keeps ``reserve_s`` (by default ``timings.FALLBACK_RESERVE_S``,
    read at each call so a patch of it applies; the engine passes the setting) for itself, or an equal share of what remains
    when the deadline is too short for that: the model gets ``max(remaining - later * reserve,
    remaining / (later + 1))``. The last model gets all that remains. So a slow or hanging first
    model cannot spend the whole deadline, and a healthy fallback is always asked in time.
    """
    if later_models <= 0 or remaining_s <= 0:
        return max(remaining_s, 0.0)
    if reserve_s is None:
        reserve_s = timings.FALLBACK_RESERVE_S
    return max(remaining_s - later_models * reserve_s, remaining_s / (later_models + 1))


@dataclass(frozen=True, slots=True)
class Window:
    """One model's share of a call's deadline, its retries included (see ``model_window``)."""

    end: float
    """anyio clock time at which this model's tries are cut."""
    share_s: float
    later: int
    """Models after this one in the chain, which keep time for themselves."""

    @classmethod
    def share_of(cls, deadline: float, *, later: int, reserve_s: float | None = None) -> Window:
        now = anyio.current_time()
        share = model_window(deadline - now, later, reserve_s)
        return cls(now + share, share, later)


def counts_against_circuit(error: ProviderError) -> bool:
    """Whether a failure says the model is unwell (and so counts toward opening its circuit):
    transient failures (timeouts, 5xx, overload, rate limits, broken answers) and a rejected key
    do; a request refused for its own sake (too long, invalid, filtered, a tool call) does not."""
    return error.retryable or isinstance(error, AuthError)


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class Breaker:
    failure_threshold: int = 3
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0
    state: CircuitState = "closed"
    consecutive_failures: int = 0
    opened_at: float = 0.0
    current_cooldown_s: float = 0.0
    trial_in_flight: bool = False

    def allows(self, now: float) -> bool:
        """Whether a call may go through now (an open circuit past its cool-down lets one trial)."""
        if self.state == "closed":
            return True
        if self.state == "open" and now >= self.opened_at + self.current_cooldown_s:
            return True
        return self.state == "half_open" and not self.trial_in_flight

    def before_call(self, now: float) -> None:
        if self.state == "open" and now >= self.opened_at + self.current_cooldown_s:
            self.state = "half_open"
        if self.state == "half_open":
            self.trial_in_flight = True

    def success(self) -> None:
        self.state = "closed"
        self.consecutive_failures = 0
        self.trial_in_flight = False
        self.current_cooldown_s = 0.0

    def failure(self, now: float) -> None:
        self.consecutive_failures += 1
        self.trial_in_flight = False
        if self.state == "half_open":
            self.current_cooldown_s = min(max(self.current_cooldown_s, self.cooldown_s) * 2, self.max_cooldown_s)
            self.state, self.opened_at = "open", now
        elif self.state == "closed" and self.consecutive_failures >= self.failure_threshold:
            self.current_cooldown_s = self.cooldown_s
            self.state, self.opened_at = "open", now

    def retry_at(self) -> float | None:
        """When an open circuit lets its next trial through (monotonic clock), else None."""
        return self.opened_at + self.current_cooldown_s if self.state == "open" else None

    def retry_info(self, now: float) -> dict[str, Any] | None:
        """``retry_at`` (ISO 8601, UTC) and ``retry_in_s`` of an open circuit, else None."""
        retry = self.retry_at()
        if retry is None:
            return None
        wait = max(retry - now, 0.0)
        return {"retry_at": _iso(time.time() + wait), "retry_in_s": round(wait, 1)}


@dataclass(slots=True)
class Health:
    breaker: Breaker
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=50))

    def p50_ms(self) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[len(ordered) // 2]

    def error_rate(self) -> float | None:
        if not self.outcomes:
            return None
        return 1 - sum(self.outcomes) / len(self.outcomes)

    def to_dict(self, now: float) -> dict[str, Any]:
        retry = self.breaker.retry_info(now) or {"retry_at": None, "retry_in_s": None}
        return {
            "circuit": self.breaker.state,
            "consecutive_failures": self.breaker.consecutive_failures,
            **retry,
            "p50_latency_ms": self.p50_ms(),
            "error_rate": None if (r := self.error_rate()) is None else round(r, 3),
            "recent_calls": len(self.outcomes),
        }


class HealthBoard:
    """Breakers and recent figures for every ``provider:model`` this process has called.

    ``record`` is told once per model per call (after its retries): outcomes, error rates and the
    breaker all count calls, so a model's own retries never open its circuit."""

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._health: dict[str, Health] = {}

    def get(self, ref: str) -> Health:
        h = self._health.get(ref)
        if h is None:
            h = self._health[ref] = Health(Breaker(self.failure_threshold, self.cooldown_s))
        return h

    def allows(self, ref: str) -> tuple[bool, dict[str, Any] | None]:
        """(may call now, and when it may not: the circuit's ``state``, ``failures``, and for an open
        one ``retry_at`` and ``retry_in_s``; a half-open one is waiting on its trial call)."""
        h = self._health.get(ref)
        if h is None:
            return True, None
        now = time.monotonic()
        if h.breaker.allows(now):
            return True, None
        info = h.breaker.retry_info(now) or {}
        return False, {**info, "state": h.breaker.state, "failures": h.breaker.consecutive_failures}

    def before_call(self, ref: str) -> None:
        self.get(ref).breaker.before_call(time.monotonic())

    def record(self, ref: str, *, ok: bool, latency_ms: float, counts_against_circuit: bool = True) -> None:
        """One call's outcome on one model. A failure that says nothing of the model's health
        (``counts_against_circuit=False``: cancelled, too long, filtered) only ends a trial."""
        h = self.get(ref)
        if ok:
            h.outcomes.append(True)
            h.latencies_ms.append(latency_ms)
            h.breaker.success()
        elif counts_against_circuit:
            h.outcomes.append(False)
            h.breaker.failure(time.monotonic())
        else:
            h.breaker.trial_in_flight = False

    def p50_ms(self, ref: str) -> float | None:
        h = self._health.get(ref)
        return h.p50_ms() if h else None

    def error_rate(self, ref: str) -> float | None:
        h = self._health.get(ref)
        return h.error_rate() if h else None

    def describe(self, ref: str) -> dict[str, Any]:
        h = self._health.get(ref)
        return h.to_dict(time.monotonic()) if h is not None else {
            "circuit": "closed", "consecutive_failures": 0, "retry_at": None, "retry_in_s": None,
            "p50_latency_ms": None, "error_rate": None, "recent_calls": 0,
        }
