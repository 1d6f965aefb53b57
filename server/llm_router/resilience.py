"""Circuit breakers and recent health per ``provider:model``.

closed → open after ``failure_threshold`` consecutive failures; open → half-open once the
cool-down has passed (one trial call is let through); half-open → closed on a success, or back to
open (with a doubled cool-down, capped) on a failure. Routing skips open circuits and explains
when they will be tried again. Recent latency and error rate feed the ``fastest`` and
``balanced`` strategies. State lives in memory, per server process.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Breaker", "Health", "HealthBoard"]

CircuitState = Literal["closed", "open", "half_open"]


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
        return self.opened_at + self.current_cooldown_s if self.state == "open" else None


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

    def to_dict(self, wall_offset: float) -> dict[str, Any]:
        retry = self.breaker.retry_at()
        return {
            "circuit": self.breaker.state,
            "consecutive_failures": self.breaker.consecutive_failures,
            "retry_at_unix": round(retry + wall_offset, 3) if retry is not None else None,
            "p50_latency_ms": self.p50_ms(),
            "error_rate": None if (r := self.error_rate()) is None else round(r, 3),
            "recent_calls": len(self.outcomes),
        }


class HealthBoard:
    """Breakers and recent figures for every ``provider:model`` this process has called."""

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._health: dict[str, Health] = {}
        # monotonic → wall clock, for showing when an open circuit will be retried
        self._wall_offset = time.time() - time.monotonic()

    def get(self, ref: str) -> Health:
        h = self._health.get(ref)
        if h is None:
            h = self._health[ref] = Health(Breaker(self.failure_threshold, self.cooldown_s))
        return h

    def allows(self, ref: str) -> tuple[bool, float | None]:
        """(may call now, unix time it will be tried again when not)."""
        h = self._health.get(ref)
        if h is None:
            return True, None
        now = time.monotonic()
        if h.breaker.allows(now):
            return True, None
        retry = h.breaker.retry_at()
        return False, None if retry is None else retry + self._wall_offset

    def before_call(self, ref: str) -> None:
        self.get(ref).breaker.before_call(time.monotonic())

    def record(self, ref: str, *, ok: bool, latency_ms: float, counts_against_circuit: bool = True) -> None:
        h = self.get(ref)
        h.outcomes.append(ok)
        if ok:
            h.latencies_ms.append(latency_ms)
            h.breaker.success()
        elif counts_against_circuit:
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
        return self.get(ref).to_dict(self._wall_offset) if ref in self._health else {
            "circuit": "closed", "consecutive_failures": 0, "retry_at_unix": None,
            "p50_latency_ms": None, "error_rate": None, "recent_calls": 0,
        }
