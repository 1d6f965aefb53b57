"""A clock and an id source a test controls, so that what a ledger does between two steps depends
on the steps, never on how fast (or how loaded) the machine running them is."""

from __future__ import annotations

import random
from collections.abc import Callable

START = 1_741_953_600.0
"""2025-03-14T12:00:00Z, the tests' usual day, as unix seconds."""


class ManualClock:
    """Unix time that moves only when the test moves it (pass the clock itself as ``clock=``)."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self.now += seconds


def seeded_ids(seed: int) -> Callable[[], str]:
    """Reservation ids as random-looking as the real ones (so their sort order is arbitrary), but
    the same sequence on every run."""
    rng = random.Random(seed)
    return lambda: f"{rng.getrandbits(128):032x}"
