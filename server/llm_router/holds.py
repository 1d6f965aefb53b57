"""A call's reservations, as the engine asks for them: the budget read for routing, the worst case
held, then settled with the call's row or freed.

The engine awaits this one component. Each step is one ledger step on the ledger's executor,
bounded by the call's deadline; the budget's part is pure (checks built from limits, figures and
answers read) and runs here, between ledger steps: the ledger calls nothing back. When ``set_budget`` has changed the limits
since a call's checks were built, the ledger grants nothing on them and says which limits it
found (``LimitsMoved``); the checks are built anew and the ledger asked again, each attempt
atomic, so from the moment ``set_budget`` returns no process grants a hold under the limits it
replaced.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal

import anyio.lowlevel

from . import timings
from .budget import Budget, BudgetSnapshot, LimitState
from .ledger import LedgerBase, RequestRow, SpareRequest, settling
from .scopes import configured_limit, limit_nusd
from .types import LedgerBusy

__all__ = ["Holds", "budget_states"]


class Holds:
    """Reservations against one ledger, under one budget's limits."""

    def __init__(self, ledger: LedgerBase, budget: Budget) -> None:
        self.ledger = ledger
        self.budget = budget

    async def snapshot(self, *, tag: str, wait_s: float | None) -> BudgetSnapshot:
        """Spend and holds of every limit that may apply to a call with this tag, waiting at most
        ``wait_s`` for the ledger (None: its own timeout).

        Raises:
            LedgerBusy: the ledger could not be read within the wait.
        """
        until = None if wait_s is None else time.monotonic() + wait_s
        ledger, budget = self.ledger, self.budget
        for _ in range(2):  # once more should the figures show that another process set a limit
            if budget.overrides_due():
                budget.install_overrides(*await ledger.run_within(_left(until), ledger.budget_overrides_at))
            snap = budget.unread(tag=tag)
            snap.fill(await ledger.run_within(_left(until), ledger.usages, snap.unread_checks(),
                                              stale_ok_s=timings.ROUTING_STALENESS_S))
            if not budget.limits_moved():
                break
        return snap

    async def reserve(
        self, snapshot: BudgetSnapshot, *, provider: str, amount_nusd: int, request_id: str, ttl_s: float | None,
        wait_s: float | None, poll: bool = False,
    ) -> str:
        """Hold ``amount_nusd`` against every limit on this provider and the snapshot's tag,
        atomically with the check, waiting at most ``wait_s`` in all for the ledger. Returns the
        hold's id, to be settled or freed.

        Raises:
            BudgetExceeded: naming the limit, what is spent and held, and when it resets.
            LedgerBusy: the ledger could not be had within the wait (nothing was held).
        """
        attempt = self.budget.first_attempt(snapshot, provider=provider, amount_nusd=amount_nusd,
                                            request_id=request_id, ttl_s=ttl_s, poll=poll)
        until = None if wait_s is None else time.monotonic() + wait_s
        ledger = self.ledger
        while True:
            result = await ledger.run_within(
                _left(until), ledger.reserve, attempt.checks, attempt.amount_nusd, request_id=attempt.request_id,
                day=attempt.day, provider=attempt.provider, tag=attempt.tag, ttl_s=attempt.ttl_s, poll=attempt.poll,
                limits_version=attempt.limits_version,
            )
            answer = self.budget.next_attempt(attempt, result)
            if isinstance(answer, str):
                return answer
            # The limits moved under this attempt: ask again on checks built anew, after letting
            # the event loop run (SQLite's step may have run inline) and only while time is left.
            await anyio.lowlevel.checkpoint()
            left = _left(until)
            if left is not None and left <= 0:
                raise LedgerBusy(
                    f"the budget's limits kept changing while this call asked for its hold, for the whole "
                    f"{wait_s:.1f} s it could wait. Nothing was reserved or spent; try again in a few seconds",
                    retry_after=1.0, waited_s=wait_s or 0.0,
                )
            attempt = answer

    def spare_for(
        self, snapshot: BudgetSnapshot, *, provider: str, amount_nusd: int, ttl_s: float,
    ) -> SpareRequest | None:
        """What a settled call may keep on hold for the next one (``Budget.spare_for``)."""
        return self.budget.spare_for(snapshot, provider=provider, amount_nusd=amount_nusd, ttl_s=ttl_s)

    async def settle(
        self, row: RequestRow, *, reservation_id: str | None = None, held: Sequence[str] = (),
        spare: SpareRequest | None = None, wait_s: float | None = None,
    ) -> str | None:
        """Write a call's row and let its holds go (``settling.settle``: a row the ledger cannot
        take goes to its journal, and None or a note saying where the spend waits is returned)."""
        return await settling.settle(self.ledger, row, reservation_id=reservation_id, held=held, spare=spare,
                                     wait_s=wait_s)

    async def free(self, reservation_id: str) -> None:
        """Let a hold go; never fails the call (``settling.free``)."""
        await settling.free(self.ledger, reservation_id)

    # -- the limits themselves (set_budget, resources, reports) ----------------------------------

    async def set_limit(self, scope: str, period: str, limit_usd: Decimal | None) -> None:
        """Persist a limit (None removes it; ``Budget.set_limit``, awaited): from the moment this
        returns, no process grants a hold under the limit it replaced.

        Raises:
            InvalidInput: naming the field.
        """
        nusd = limit_nusd(scope, period, limit_usd)
        await self.ledger.run(self.ledger.set_budget, scope, period, nusd)
        self.budget.install_overrides(*await self.ledger.run(self.ledger.budget_overrides_at))

    async def states(self) -> list[LimitState]:
        """Every limit's state, every tag and provider included (``budget_states``)."""
        return await budget_states(self.ledger, self.budget)

    async def limit_in_force(self, scope: str, period: str) -> int | None:
        """The limit on ``scope``'s ``period`` now, in nano-dollars (None: there is none), read from
        the ledger itself rather than any cache: a member's change is checked against it."""
        overrides = await self.ledger.run(self.ledger.budget_overrides)
        if (scope, period) in overrides:
            return overrides[(scope, period)]
        return configured_limit(self.budget.config, scope, period)


async def budget_states(ledger: LedgerBase, budget: Budget) -> list[LimitState]:
    """Every limit's state under ``budget`` (``Budget.all_states``, awaited): the overrides read
    again when due, then every limit's figures in one ledger step."""
    if budget.overrides_due():
        budget.install_overrides(*await ledger.run(ledger.budget_overrides_at))
    limits = budget.current_limits()
    figures = await ledger.run(ledger.limit_figures, [check for _, check in limits if check is not None])
    return budget.states_of(limits, figures)


def _left(until: float | None) -> float | None:
    """What is left of a wait that ends at ``until`` (monotonic; None: no bound)."""
    return None if until is None else until - time.monotonic()
