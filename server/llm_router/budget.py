"""Limits, tiers, periods, and the checks a hold must pass (pure: the holds themselves are ``holds.py``).

A limit is a scope (``global``, ``provider:NAME``, ``tag:NAME``) and a period (``daily``,
``monthly``, ``per_request``). Limits come from the config and from ``set_budget`` (persisted in
the ledger, winning over the config). Days and months begin in the configured time zone.

Tiers, from how much of the tightest limit is spent: ``normal`` below 50%; ``cautious``
from 50% (routing prefers cheaper models); ``restricted`` from 90% (only free models); a call
that could push spend past 100% is refused before anything is sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from . import timings
from .config import BudgetConfig
from .ledger import LedgerBase, LimitCheck, Refusal, SpareRequest
from .ledger.base import LimitsMoved, Overrides
from .scopes import PERIODS, Period, configured_limit, limit_nusd, limit_to_store, parse_scope
from .types import BudgetExceeded, LedgerBusy, usd_str, usd_to_nusd

__all__ = ["Period", "Tier", "Limit", "Clock", "Budget", "BudgetSnapshot", "tier_of", "parse_scope",
           "limit_nusd", "limit_to_store", "configured_limit"]  # the scopes' too, where callers find them

Tier = Literal["normal", "cautious", "restricted", "exhausted"]
_TIER_RANK: dict[Tier, int] = {"normal": 0, "cautious": 1, "restricted": 2, "exhausted": 3}
SPARE_MARGIN = 2
"""A spare hold is this many times the worst case of the call that kept it."""
MAX_LIMITS_MOVED = 8
"""How many times in a row a hold is asked for again on limits ``set_budget`` changed meanwhile
(each attempt is atomic): past that, the call is refused as busy rather than left spinning."""


def tier_of(fraction: float) -> Tier:
    if fraction >= 1:
        return "exhausted"
    if fraction >= 0.9:
        return "restricted"
    if fraction >= 0.5:
        return "cautious"
    return "normal"


def worst_tier(tiers: Iterable[Tier]) -> Tier:
    return max(tiers, key=_TIER_RANK.__getitem__, default="normal")


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str
    period: Period
    limit_nusd: int
    source: Literal["config", "set_budget"]


class Clock:
    """Days and months in the budget's time zone."""

    def __init__(self, tz: str) -> None:
        self.tz_name = tz
        self.tz = ZoneInfo(tz)
        self._day: tuple[float, float, date, str] = (0.0, 0.0, date.min, "")
        """(start, end, the day, as ISO): the local day in force between two unix times, kept
        for reuse: asked for several times per call, it changes once a day."""

    def day_of(self, ts_iso: str) -> str:
        return datetime.fromisoformat(ts_iso).astimezone(self.tz).date().isoformat()

    def today(self) -> date:
        return self._local_day(time.time())[2]

    def day_at(self, when: datetime) -> str:
        """The local day (ISO) of an aware datetime."""
        return self._local_day(when.timestamp())[3]

    def _local_day(self, ts: float) -> tuple[float, float, date, str]:
        window = self._day
        if not window[0] <= ts < window[1]:
            local = datetime.fromtimestamp(ts, self.tz).date()
            nxt = local + timedelta(days=1)
            start = datetime(local.year, local.month, local.day, tzinfo=self.tz).timestamp()
            end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.tz).timestamp()
            window = self._day = (start, end, local, local.isoformat())
        return window

    def bounds(self, period: Period, day: date) -> tuple[str, str, str]:
        """(first day, last day, when the period resets as an ISO time) for the period holding ``day``."""
        if period == "monthly":
            first = day.replace(day=1)
            nxt = (first + timedelta(days=32)).replace(day=1)
        else:
            first = day
            nxt = day + timedelta(days=1)
        reset = datetime(nxt.year, nxt.month, nxt.day, tzinfo=self.tz)
        return first.isoformat(), (nxt - timedelta(days=1)).isoformat(), reset.isoformat()


@dataclass(slots=True)
class LimitState:
    limit: Limit
    check: LimitCheck | None
    spent_nusd: int = 0
    reserved_nusd: int = 0
    reclaimed: tuple[int, int] = (0, 0)
    """(holds, nano-dollars) reclaimed in this period from calls whose server died mid-call."""

    @property
    def fraction(self) -> float:
        """Share of the limit spent. Holds of calls in flight do not count toward the tier: they are
        worst cases that settle far lower, and would make tiers flap under load. They are what
        keeps spend under the limit, at reservation time."""
        if self.limit.limit_nusd <= 0:
            return 1.0
        return self.spent_nusd / self.limit.limit_nusd

    @property
    def remaining_nusd(self) -> int:
        return max(self.limit.limit_nusd - self.spent_nusd - self.reserved_nusd, 0)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "scope": self.limit.scope,
            "period": self.limit.period,
            "limit_usd": usd_str(self.limit.limit_nusd),
            "source": self.limit.source,
        }
        if self.check is not None:
            d |= {
                "spent_usd": usd_str(self.spent_nusd),
                "reserved_usd": usd_str(self.reserved_nusd),
                "remaining_usd": usd_str(self.remaining_nusd),
                "percent_used": round(self.fraction * 100, 2),
                "tier": tier_of(self.fraction),
                "period_start": self.check.first_day,
                "resets_at": self.check.resets_at,
            }
            if self.reclaimed[0]:
                d["reclaimed"] = {"holds": self.reclaimed[0], "usd": usd_str(self.reclaimed[1])}
        return d


@dataclass(slots=True)
class BudgetSnapshot:
    """Spend and holds for every limit that may apply to one call, read at one moment."""

    day: str
    tag: str
    states: list[LimitState]
    per_request_nusd: int | None
    limits_version: int | None = None
    """The limits version the checks were built from (a reservation finding it moved builds them anew)."""
    _tiers: dict[str | None, Tier] = field(default_factory=dict, repr=False)
    """Each provider's tier, worked out once: routing asks for it per candidate and overall."""
    _mine: dict[str, list[LimitState]] = field(default_factory=dict, repr=False)
    """Each provider's limits, worked out once: routing, the reservation, the spare and the
    answer's budget all ask."""

    def unread_checks(self) -> list[LimitCheck]:
        """The checks whose spend and holds ``fill`` takes, in order."""
        return [s.check for s in self.states if s.check is not None]

    def fill(self, usages: Sequence[tuple[int, int]]) -> None:
        """Take (spent, reserved) of each of ``unread_checks``, read from the ledger at one moment."""
        for state, (spent, reserved) in zip([s for s in self.states if s.check is not None], usages, strict=True):
            state.spent_nusd, state.reserved_nusd = spent, reserved

    def for_provider(self, provider: str) -> list[LimitState]:
        mine = self._mine.get(provider)
        if mine is None:
            mine = self._mine[provider] = [
                s
                for s in self.states
                if s.check is not None
                and (s.check.scope_kind != "provider" or s.check.scope_name == provider)
            ]
        return mine

    def checks(self, provider: str) -> list[LimitCheck]:
        """The checks a hold on this provider must pass."""
        return [s.check for s in self.for_provider(provider) if s.check is not None]

    def tier(self, provider: str | None = None) -> Tier:
        tier = self._tiers.get(provider)
        if tier is None:
            states = self.for_provider(provider) if provider else [
                s for s in self.states if s.check is not None and s.check.scope_kind != "provider"
            ]
            tier = self._tiers[provider] = worst_tier(tier_of(s.fraction) for s in states)
        return tier

    def headroom(self, provider: str) -> tuple[int | None, LimitState | None]:
        """The least any limit on this provider allows beyond what is already spent, and which
        limit that is. Holds of calls in flight are not counted: they settle to their actual cost
        (usually far below the worst case), and a call that fits after them waits for them."""
        best: tuple[int | None, LimitState | None] = (None, None)
        for s in self.for_provider(provider):
            room = max(s.limit.limit_nusd - s.spent_nusd, 0)
            if best[0] is None or room < best[0]:
                best = (room, s)
        return best


class Budget:
    def __init__(self, config: BudgetConfig, ledger: LedgerBase) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = Clock(config.timezone)
        self._overrides: Overrides = {}
        self._overrides_read = -math.inf
        self._version = -1
        """The limits version ``_overrides`` were read at."""
        self._hint = -1
        """``ledger.limits_version_seen`` when the overrides were last read: when it moves, another
        process has set a limit, and the next snapshot reads them again."""
        self._config_limits = list(self._from_config())
        self._limits: tuple[object, list[Limit]] | None = None
        self._checks: tuple[date, list[Limit], list[tuple[Limit, LimitCheck | None]]] | None = None
        """Each limit's check for one day: rebuilt when the day or the limits change, not per call."""

    def _from_config(self) -> Iterable[Limit]:
        c = self.config
        for period, value in (("daily", c.daily_usd), ("monthly", c.monthly_usd), ("per_request", c.per_request_usd)):
            if value is not None:
                yield Limit("global", period, usd_to_nusd(value), "config")  # type: ignore[arg-type]
        for kind, table in (("provider", c.providers), ("tag", c.tags)):
            for name, lim in table.items():
                for period, value in (("daily", lim.daily_usd), ("monthly", lim.monthly_usd)):
                    if value is not None:
                        yield Limit(f"{kind}:{name}", period, usd_to_nusd(value), "config")  # type: ignore[arg-type]

    # -- limits ---------------------------------------------------------------------------------

    def _refresh(self, force: bool = False) -> None:
        if force or self.overrides_due():
            self.install_overrides(*self.ledger.budget_overrides_at())

    def overrides_due(self) -> bool:
        """Whether the limits set with ``set_budget`` are to be read again: another process set one
        (the ledger saw the limits version move), or they are ``timings.OVERRIDE_REFRESH_S`` old."""
        return (self.ledger.limits_version_seen != self._hint
                or time.monotonic() - self._overrides_read > timings.OVERRIDE_REFRESH_S)

    def install_overrides(self, version: int, overrides: Overrides) -> None:
        """The limits set with ``set_budget`` as just read from the ledger (``budget_overrides_at``)."""
        self._install(version, overrides)
        self._overrides_read = time.monotonic()

    def _install(self, version: int, overrides: Overrides) -> None:
        if overrides != self._overrides:
            self._overrides = overrides
        self._version = version
        self._hint = self.ledger.limits_version_seen

    def checks_under(
        self, moved: LimitsMoved, *, day: str, provider: str, tag: str, amount_nusd: int
    ) -> list[LimitCheck] | Refusal:
        """The checks of a hold on this provider and tag under the limits a reservation found in
        the ledger (``set_budget`` changed them since the call's own checks were built), or the
        refusal of the per-request limit, which needs no sums."""
        self._install(moved.version, moved.overrides)
        self._overrides_read = time.monotonic()
        checks: list[LimitCheck] = []
        for lim, check in self._day_checks(date.fromisoformat(day)):
            if check is None:
                if amount_nusd > lim.limit_nusd:
                    return Refusal(LimitCheck("global per_request", "global", None, day, day, lim.limit_nusd), 0, 0)
            elif check.scope_kind == "global" or check.scope_name == (provider if check.scope_kind == "provider" else tag):
                checks.append(check)
        return checks

    def limits(self) -> list[Limit]:
        self._refresh()
        return self._merged()

    def _merged(self) -> list[Limit]:
        """The config's limits with the overrides read last laid over them."""
        if self._limits is not None and self._limits[0] is self._overrides:
            return self._limits[1]
        merged: dict[tuple[str, str], Limit | None] = {(lim.scope, lim.period): lim for lim in self._config_limits}
        for (scope, period), value in self._overrides.items():
            merged[(scope, period)] = None if value is None else Limit(scope, period, value, "set_budget")  # type: ignore[arg-type]
        limits = sorted((lim for lim in merged.values() if lim is not None), key=lambda lim: (lim.scope != "global", lim.scope, PERIODS.index(lim.period)))
        self._limits = (self._overrides, limits)
        return limits

    def _day_checks(self, today: date) -> list[tuple[Limit, LimitCheck | None]]:
        limits = self._merged()
        if self._checks is None or self._checks[0] != today or self._checks[1] is not limits:
            checks: list[tuple[Limit, LimitCheck | None]] = []
            for lim in limits:
                if lim.period == "per_request":
                    checks.append((lim, None))
                    continue
                kind, name = parse_scope(lim.scope)
                first, last, resets = self.clock.bounds(lim.period, today)
                checks.append((lim, LimitCheck(f"{lim.scope} {lim.period}", kind, name, first, last, lim.limit_nusd, resets)))
            self._checks = (today, limits, checks)
        return self._checks[2]

    def set_limit(self, scope: str, period: str, limit_usd: Any) -> None:
        """Persist a limit (None removes it), here (the engine awaits ``Holds.set_limit``; this form serves one-shot tools and tests).

        Raises:
            InvalidInput: naming the field.
        """
        self.ledger.set_budget(scope, period, limit_nusd(scope, period, limit_usd))
        self._refresh(force=True)

    # -- reading state --------------------------------------------------------------------------

    def snapshot(self, *, tag: str = "", providers: Iterable[str] | None = None) -> BudgetSnapshot:
        """Spend and holds for the global limits, the tag's, and those of ``providers`` (all when None),
        read here (the engine awaits ``Holds.snapshot``, bounded by the call's deadline; this form serves tools and tests).
        Reading the figures may show that another process set a limit: then they are read again
        on it (a raised one then takes effect at once too; a lowered one the reservation enforces
        anyway)."""
        for _ in range(2):
            self._refresh()
            snap = self.unread(tag=tag, providers=providers)
            snap.fill(self.ledger.usages(snap.unread_checks(), stale_ok_s=timings.ROUTING_STALENESS_S))
            if not self.limits_moved():
                break
        return snap

    def limits_moved(self) -> bool:
        """Whether the ledger has seen the limits version move since the overrides were read."""
        return self.ledger.limits_version_seen != self._hint

    def unread(self, *, tag: str = "", providers: Iterable[str] | None = None) -> BudgetSnapshot:
        """The snapshot's limits under the overrides read last, their figures not read yet (``fill``)."""
        today = self.clock.today()
        wanted = None if providers is None else set(providers)
        states: list[LimitState] = []
        per_request: int | None = None
        for lim, check in self._day_checks(today):
            if check is None:
                per_request = lim.limit_nusd
            elif check.scope_kind == "tag" and check.scope_name != tag or check.scope_kind == "provider" and wanted is not None and check.scope_name not in wanted:
                continue
            states.append(LimitState(lim, check))
        return BudgetSnapshot(day=today.isoformat(), tag=tag, states=states, per_request_nusd=per_request,
                              limits_version=self._version)

    def all_states(self) -> list[LimitState]:
        """Every limit, every tag and provider included (for resources and reports), read here
        (the engine awaits ``Holds.states``; this form serves tools and tests)."""
        self._refresh()
        limits = self.current_limits()
        return self.states_of(limits, self.ledger.limit_figures([c for _, c in limits if c is not None]))

    def current_limits(self) -> list[tuple[Limit, LimitCheck | None]]:
        """Every limit under the overrides read last, with its check for today (None: per request)."""
        return self._day_checks(self.clock.today())

    @staticmethod
    def states_of(
        limits: Sequence[tuple[Limit, LimitCheck | None]], figures: Sequence[tuple[int, int, tuple[int, int]]],
    ) -> list[LimitState]:
        """``limits``' states, given the ledger's figures of those with a check, in order
        (``LedgerBase.limit_figures``)."""
        read = iter(figures)
        out: list[LimitState] = []
        for lim, check in limits:
            if check is None:
                out.append(LimitState(lim, None))
            else:
                spent, reserved, reclaimed = next(read)
                out.append(LimitState(lim, check, spent, reserved, reclaimed))
        return out

    # -- reservations ---------------------------------------------------------------------------

    def spare_for(self, snapshot: BudgetSnapshot, *, provider: str, amount_nusd: int, ttl_s: float) -> SpareRequest | None:
        """What a settled call may keep on hold for the next one on the same provider and tag:
        twice its own worst case (room for a somewhat larger next call), and only while every limit
        on it is in the normal tier, so that near a limit no hold is kept that nobody is using."""
        version = snapshot.limits_version
        if (snapshot.tier(provider) != "normal" or version is None or version != self._version
                or self.ledger.limits_version_seen != self._hint):
            return None  # (limits were set since the call's checks were built: none is kept on the old ones)
        return SpareRequest(snapshot.checks(provider), SPARE_MARGIN * amount_nusd, snapshot.day, provider, snapshot.tag,
                            ttl_s, version)

    def reserve(
        self, snapshot: BudgetSnapshot, *, provider: str, amount_nusd: int, request_id: str, ttl_s: float | None = None,
        poll: bool = False,
    ) -> str:
        """Hold ``amount_nusd`` against every limit on this provider and tag, atomically with the
        check (the engine awaits ``Holds.reserve``, each attempt bounded by the call's deadline; this form serves tests).

        Raises:
            BudgetExceeded: naming the limit, what is spent and held, and when it resets.
        """
        attempt = self.first_attempt(snapshot, provider=provider, amount_nusd=amount_nusd, request_id=request_id,
                                     ttl_s=ttl_s, poll=poll)
        while True:
            result = attempt.make(self.ledger)
            answer = self.next_attempt(attempt, result)
            if isinstance(answer, str):
                return answer
            attempt = answer

    def first_attempt(
        self, snapshot: BudgetSnapshot, *, provider: str, amount_nusd: int, request_id: str, ttl_s: float | None = None,
        poll: bool = False,
    ) -> Attempt:
        """The first ``ledger.reserve`` a hold asks for: on the snapshot's checks and limits version.

        Raises:
            BudgetExceeded: over the per-request limit (which needs no sums).
        """
        per_request = snapshot.per_request_nusd
        if per_request is not None and amount_nusd > per_request:
            raise BudgetExceeded(
                limit_name="global per_request", limit_nusd=per_request, spent_nusd=0, reserved_nusd=0,
                needed_nusd=amount_nusd, resets_at=None,
            )
        return Attempt(
            snapshot.checks(provider), amount_nusd, request_id=request_id, day=snapshot.day, provider=provider,
            tag=snapshot.tag, ttl_s=ttl_s or self.config.reservation_ttl_s, poll=poll,
            limits_version=snapshot.limits_version,
        )

    def next_attempt(self, attempt: Attempt, result: str | Refusal | LimitsMoved) -> str | Attempt:
        """What a ``ledger.reserve`` answer means: the hold's id; or, the limits having moved, the
        attempt to make next, on checks built from the limits the ledger read (pure: no ledger read).

        Raises:
            BudgetExceeded: naming the limit, what is spent and held, and when it resets.
            LedgerBusy: the limits moved under ``MAX_LIMITS_MOVED`` attempts in a row.
        """
        if isinstance(result, LimitsMoved):
            if attempt.moves >= MAX_LIMITS_MOVED:
                raise LedgerBusy(
                    f"the budget's limits were changed {attempt.moves + 1} times while this call asked for its "
                    "hold (another process is calling set_budget without pause). Nothing was reserved or spent; "
                    "try again in a few seconds", retry_after=1.0, waited_s=0.0,
                )
            rebuilt = self.checks_under(result, day=attempt.day, provider=attempt.provider, tag=attempt.tag,
                                        amount_nusd=attempt.amount_nusd)
            if not isinstance(rebuilt, Refusal):
                return replace(attempt, checks=rebuilt, limits_version=result.version, moves=attempt.moves + 1)
            result = rebuilt
        if isinstance(result, Refusal):
            raise BudgetExceeded(
                limit_name=result.check.name, limit_nusd=result.check.limit_nusd, spent_nusd=result.spent_nusd,
                reserved_nusd=result.reserved_nusd, needed_nusd=attempt.amount_nusd, resets_at=result.check.resets_at,
            )
        return result


@dataclass(frozen=True, slots=True)
class Attempt:
    """One ``ledger.reserve`` to make: its checks, and the limits version they were built from."""

    checks: Sequence[LimitCheck]
    amount_nusd: int
    request_id: str
    day: str
    provider: str
    tag: str
    ttl_s: float
    poll: bool
    limits_version: int | None
    moves: int = 0
    """How many times the limits had moved under the attempts before this one."""

    def make(self, ledger: LedgerBase) -> str | Refusal | LimitsMoved:
        """Ask the ledger for this hold (one atomic step: see ``LedgerBase.reserve``)."""
        return ledger.reserve(
            self.checks, self.amount_nusd, request_id=self.request_id, day=self.day, provider=self.provider,
            tag=self.tag, ttl_s=self.ttl_s, poll=self.poll, limits_version=self.limits_version,
        )
