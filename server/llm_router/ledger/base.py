"""What every ledger backend shares: the records it stores, and the upkeep a running server does.

A backend (``sqlite.Ledger``, ``postgres.PostgresLedger``) keeps request rows, per-day rollups,
reservations, budget overrides and events, with the same public methods and the same meaning.
Its methods are synchronous; ``run`` calls them on a worker thread, one at a time per ledger.

Reservations are leases when ``start_upkeep`` runs: each lives ``lease_s`` and the process that
holds it renews it while it runs, up to the call's own time-to-live. A server that dies (killed,
crashed, frozen) stops renewing, so its holds lapse within about ``lease_s`` wherever it ran, and
are reclaimed (logged in ``events``) by whichever server next reserves or tidies up.

A busy server keeps one *spare* hold between calls: the transaction that records a call may also
hold that call's worst case again (when every limit has room for it), and the next call that
fits within it takes it over instead of opening a transaction of its own. A spare is a hold like
any other (counted by every process, shown as reserved); it is let go within ``SPARE_IDLE_S`` of
going unused, and when the ledger closes. Backends may decline to keep spares.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import socket
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from ..types import RouterError

__all__ = [
    "GROUPINGS",
    "HOST",
    "ROW_COLUMNS",
    "SUM_COLUMNS",
    "LedgerBase",
    "LimitCheck",
    "Refusal",
    "RequestRow",
    "SpareRequest",
]

P = ParamSpec("P")
T = TypeVar("T")

ScopeKind = Literal["global", "provider", "tag"]
GROUPINGS = ("provider", "model", "task_type", "tag", "day")
SUM_COLUMNS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost_nusd", "reference_cost_nusd")
HOST = socket.gethostname()
DIMENSIONS = ("day", "provider", "model", "task_type", "tag")
"""The dimensions of ``day_totals``: one row per day and value of each (``day``'s value is the day)."""
_SUMS = ", ".join(f"sum({c})" for c in SUM_COLUMNS)
DAY_TOTALS_FROM_ROLLUPS = "INSERT INTO day_totals (dim, key, day, " + ", ".join(SUM_COLUMNS) + ")\n" + "\nUNION ALL ".join(
    f"SELECT '{dim}', {dim}, day, {_SUMS} FROM rollups GROUP BY {dim}, day" if dim != "day"
    else f"SELECT 'day', day, day, {_SUMS} FROM rollups GROUP BY day"
    for dim in DIMENSIONS
)
"""Derives every day total from the rollups (same SQL on both backends)."""


def add_to_rollup(table_prefix: str = "") -> str:
    """The ON CONFLICT clause that adds a new rollup row's sums to the one already there
    (``table_prefix``: how PostgreSQL names the old value)."""
    return "ON CONFLICT (day, provider, model, tag, task_type) DO UPDATE SET " + ", ".join(
        f"{c} = {table_prefix}{c} + excluded.{c}" for c in SUM_COLUMNS
    )


def upsert_estimated(mark: str, table_prefix: str = "") -> str:
    """The statement that adds one row whose usage was estimated to ``estimated_rollups`` (run only
    for such rows: ``mark`` the driver's placeholder, ``table_prefix`` how PostgreSQL names the old value)."""
    return (
        "INSERT INTO estimated_rollups (day, provider, model, tag, task_type, requests, cost_nusd)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark}, 1, {mark})"
        " ON CONFLICT (day, provider, model, tag, task_type) DO UPDATE SET"
        f" requests = {table_prefix}requests + excluded.requests, cost_nusd = {table_prefix}cost_nusd + excluded.cost_nusd"
    )


def estimated_from_rows(table_prefix: str = "") -> str:
    """Derives ``estimated_rollups`` from the rows whose usage was estimated (both backends), adding
    to what is there: after a rebuild has emptied the days the rows still cover."""
    return (
        "INSERT INTO estimated_rollups (day, provider, model, tag, task_type, requests, cost_nusd)"
        " SELECT day, coalesce(provider, ''), coalesce(model, ''), tag, task_type, count(*), sum(cost_nusd)"
        " FROM requests WHERE cost_estimated = 1 GROUP BY day, coalesce(provider, ''), coalesce(model, ''), tag, task_type"
        " ON CONFLICT (day, provider, model, tag, task_type) DO UPDATE SET"
        f" requests = {table_prefix}requests + excluded.requests, cost_nusd = {table_prefix}cost_nusd + excluded.cost_nusd"
    )


def upsert_day_totals(mark: str, table_prefix: str = "") -> str:
    """The statement that adds one request row to its five day totals in one round trip
    (``mark``: the driver's placeholder; ``table_prefix``: how PostgreSQL names the old value)."""
    values = ", ".join([f"({mark}, {mark}, {mark}, 1, " + ", ".join([mark] * 6) + ")"] * len(DIMENSIONS))
    updates = ", ".join(
        f"{c} = {table_prefix}{c} + excluded.{c}" for c in SUM_COLUMNS
    )
    return (
        f"INSERT INTO day_totals (dim, key, day, {', '.join(SUM_COLUMNS)}) VALUES {values}"
        f" ON CONFLICT (dim, key, day) DO UPDATE SET {updates}"
    )
SPARE_IDLE_S = 2.0
"""A spare hold unused for this long is let go (and is no longer taken over by a call)."""
PRUNE_BATCH = 5_000
"""Rows deleted per transaction when pruning: short enough that reservations never queue long."""

log = logging.getLogger("llm_router.ledger")


class LedgerUnavailable(RouterError):
    """The ledger cannot be opened: no call can be budgeted, so none is made."""

    code = "ledger_unavailable"


WRITER_SCHEMA = 2
"""What this build's writers maintain (see ``schema.record_writer_schema``)."""


def check_writer_schema(stored: str | None, where: str) -> None:
    """Refuse a ledger whose writers must maintain more than this build knows of.

    Raises:
        LedgerUnavailable: naming both versions and what to do.
    """
    need = int(stored) if stored is not None and stored.strip().isdigit() else 0
    if need > WRITER_SCHEMA:
        from .. import __version__

        raise LedgerUnavailable(
            f"the ledger {where} was upgraded by a newer llm-router-mcp: its writers must keep schema {need}, "
            f"and this build ({__version__}) knows schema {WRITER_SCHEMA} only, so the spend it recorded could "
            "be missed by the newer servers' budgets. Upgrade this server, or point it at another ledger"
        )


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One limit to hold: spend in [first_day, last_day] for a scope must stay within limit_nusd."""

    name: str
    scope_kind: ScopeKind
    scope_name: str | None
    first_day: str
    last_day: str
    limit_nusd: int
    resets_at: str | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation was refused: the first limit it would break, with the figures."""

    check: LimitCheck
    spent_nusd: int
    reserved_nusd: int


@dataclass(frozen=True, slots=True)
class SpareRequest:
    """Ask ``record`` to keep this much on hold for the next call, under these checks."""

    checks: Sequence[LimitCheck]
    amount_nusd: int
    day: str
    provider: str
    tag: str
    ttl_s: float


@dataclass(slots=True)
class RequestRow:
    id: str
    ts: str
    day: str
    status: str
    tag: str = ""
    task_type: str = ""
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_nusd: int = 0
    cost_usd: str = "0"
    cost_estimated: int = 0
    prices: str | None = None
    reference_cost_nusd: int | None = None
    latency_ms: int = 0
    attempts: str = "[]"
    error_code: str | None = None
    error: str | None = None
    prompt_hash: str | None = None
    prompt: str | None = None
    strategy: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self) -> tuple[Any, ...]:
        return _row_values(self)

    def totals_values(self) -> tuple[Any, ...]:
        """Parameters of the five ``day_totals`` rows this row adds to, one per dimension (in the
        order of DIMENSIONS), each as (dim, key, day, errors, input, output, cached, cost,
        reference cost)."""
        day = self.day
        sums = (0 if self.status == "ok" else 1, self.input_tokens, self.output_tokens, self.cached_tokens,
                self.cost_nusd, self.reference_cost_nusd or 0)
        return (
            "day", day, day, *sums,
            "provider", self.provider or "", day, *sums,
            "model", self.model or "", day, *sums,
            "task_type", self.task_type, day, *sums,
            "tag", self.tag, day, *sums,
        )

    def estimated_values(self) -> tuple[Any, ...]:
        """(day, provider, model, tag, task_type, cost): what a row whose usage was estimated adds
        to ``estimated_rollups``."""
        return (self.day, self.provider or "", self.model or "", self.tag, self.task_type, self.cost_nusd)

    def rollup_values(self) -> tuple[Any, ...]:
        """(day, provider, model, tag, task_type, errors, input, output, cached, cost, reference cost):
        what this row adds to its rollup."""
        return (
            self.day,
            self.provider or "",
            self.model or "",
            self.tag,
            self.task_type,
            0 if self.status == "ok" else 1,
            self.input_tokens,
            self.output_tokens,
            self.cached_tokens,
            self.cost_nusd,
            self.reference_cost_nusd or 0,
        )


ROW_COLUMNS = [f for f in RequestRow.__dataclass_fields__ if f != "extra"]
_row_values = operator.attrgetter(*ROW_COLUMNS)
assert DIMENSIONS == ("day", "provider", "model", "task_type", "tag"), "RequestRow.totals_values lists them in this order"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if sys.platform == "win32":
        # There os.kill(pid, 0) does not probe: it terminates the process. Expiry reclaims instead.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_detail(
    reservation: str, request_id: str | None, pid: int | None, host: str | None, amount: int, day: str,
    provider: str, tag: str, reason: str,
) -> str:
    return json.dumps(
        {
            "reservation": reservation,
            "request_id": request_id,
            "pid": pid,
            "host": host,
            "amount_nusd": amount,
            "day": day,
            "provider": provider,
            "tag": tag,
            "reason": reason,
        }
    )


def check_grouping(group_by: str, where: dict[str, str] | None) -> None:
    if group_by not in GROUPINGS:
        raise ValueError(f"group_by must be one of {GROUPINGS}")
    for column in where or {}:
        if column not in GROUPINGS:
            raise ValueError(f"cannot filter on {column!r}")


def report_query(
    group_by: str, first_day: str, last_day: str, where: dict[str, str] | None, *, mark: str, collate: str = ""
) -> tuple[str, list[Any]]:
    """The SQL and parameters of a report, for a backend whose placeholder is ``mark``. Unfiltered,
    it reads the day totals (one dimension at a time, a few rows a day); filtered, the per-day
    rollups. Values are always parameters; column names come from ``GROUPINGS`` only."""
    check_grouping(group_by, where)
    sums = ", ".join(f"sum({c})" for c in SUM_COLUMNS)
    if not where:
        sql = (
            f"SELECT key, {sums} FROM day_totals WHERE dim = {mark} AND day BETWEEN {mark} AND {mark}"
            f" GROUP BY key ORDER BY sum(cost_nusd) DESC, key{collate}"
        )
        return sql, [group_by, first_day, last_day]
    clauses = [f"day BETWEEN {mark} AND {mark}", *(f"{column} = {mark}" for column in where)]
    sql = (
        f"SELECT {group_by} AS key, {sums} FROM rollups WHERE {' AND '.join(clauses)}"
        f" GROUP BY {group_by} ORDER BY sum(cost_nusd) DESC, {group_by}{collate}"
    )
    return sql, [first_day, last_day, *where.values()]


def report_rows(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [{"key": r[0], **{n: int(v or 0) for n, v in zip(SUM_COLUMNS, r[1:], strict=True)}} for r in rows]


class LedgerBase(ABC):
    """The interface every backend implements, and the upkeep they share."""

    migrations_applied: list[str]

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._limiter = anyio.CapacityLimiter(1)
        self._pid = os.getpid()
        self.owner = uuid.uuid4().hex
        """Identifies this open ledger in the reservations it makes (renewed while it is open)."""
        self.lease_s: float | None = None
        self.retain_days: int | None = None
        self._today: Callable[[], date] = lambda: datetime.now(UTC).date()
        self._upkeep: threading.Thread | None = None
        self._stop = threading.Event()

    # -- plumbing -------------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ledger method on a worker thread. Not cancellable: once asked for, the method
        runs and its result reaches the caller (a reservation made is always returned, to be
        settled or released; a row to record is always written). A cancellation takes effect
        at the caller's next checkpoint."""
        with anyio.CancelScope(shield=True):
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._limiter)

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the ledger lives, fit to show a person (no password)."""

    def close(self) -> None:
        self.stop_upkeep()
        try:
            self.drop_spare()
        except Exception:  # a spare left behind lapses with its lease, like any hold
            log.warning("could not let the spare hold go on close", exc_info=True)
        self._close()

    @abstractmethod
    def _close(self) -> None: ...

    def _expiry(self, now: float, ttl_s: float) -> tuple[float, float]:
        """(expires_at, hard_expires_at) of a reservation made now: a lease while upkeep renews it,
        never past the call's own time-to-live."""
        hard = now + ttl_s
        if self.lease_s is None:
            return hard, hard
        return min(hard, now + self.lease_s), hard

    # -- budgets --------------------------------------------------------------------------------

    @abstractmethod
    def usage(self, check: LimitCheck) -> tuple[int, int]:
        """(spent, reserved) in nano-dollars for a limit's scope and period. Lapsed holds do not count."""

    def usages(self, checks: Sequence[LimitCheck], *, stale_ok_s: float = 0.0) -> list[tuple[int, int]]:
        """``usage`` of several limits, read at one moment. ``stale_ok_s``: figures that old will
        do (another process's latest commits may be missed for that long); routing passes it, a
        reservation never relies on it."""
        return [self.usage(check) for check in checks]

    @abstractmethod
    def reserve(
        self, checks: Sequence[LimitCheck], amount_nusd: int, *, request_id: str, day: str, provider: str, tag: str,
        ttl_s: float, poll: bool = False,
    ) -> str | Refusal:
        """Atomically: if ``amount_nusd`` fits under every check (with what is spent and held by
        every process sharing the ledger), hold it and return the reservation id; otherwise hold
        nothing and return the first refusal. ``poll``: the caller is waiting for holds to settle
        and asks again; a refusal is then read without the write lock, so waiting calls do not
        queue behind every other process's writes."""

    @abstractmethod
    def release(self, reservation_id: str) -> None:
        """Free a hold (a call that failed or was cancelled). Releasing twice is harmless."""

    @abstractmethod
    def record(self, row: RequestRow, *, reservation_id: str | None = None, spare: SpareRequest | None = None) -> None:
        """Write a request row, its rollup and the release of its reservation in one transaction.
        ``spare``: in the same transaction, keep that much on hold for this process's next call
        if every check allows it and no spare is kept yet (a backend may ignore it)."""

    @property
    def spare_nusd(self) -> int:
        """The spare hold kept for the next call (0 when none)."""
        return 0

    def drop_spare(self, *, idle_s: float = 0.0) -> None:
        """Let the spare hold go (only if it has gone unused for ``idle_s``)."""

    @abstractmethod
    def reclaim(self, *, dead_pids: bool = True) -> int:
        """Free holds that lapsed, or (same machine) whose process is gone. Each is logged in events."""

    @abstractmethod
    def renew(self) -> int:
        """Extend this ledger's own live holds by another lease. Returns how many."""

    @abstractmethod
    def budget_overrides(self) -> dict[tuple[str, str], int | None]: ...

    @abstractmethod
    def set_budget(self, scope: str, period: str, limit_nusd: int | None) -> None: ...

    @abstractmethod
    def reservations_total(self) -> int: ...

    # -- reading --------------------------------------------------------------------------------

    @abstractmethod
    def report(
        self, first_day: str, last_day: str, group_by: str, *, where: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Sums per group over the rollups for days in [first_day, last_day], dearest first."""

    def estimated(self, first_day: str, last_day: str, *, where: dict[str, str] | None = None) -> tuple[int, int]:
        """(calls, nano-dollars) of spend in [first_day, last_day] whose usage was estimated (the
        provider reported none). Read from ``estimated_rollups``, which holds only such calls' per-day
        sums: a few rows a day at most, however many rows the ledger has."""
        check_grouping("day", where)
        clauses = ["day BETWEEN ? AND ?", *(f"{column} = ?" for column in where or {})]
        r = self.query(
            "SELECT coalesce(sum(requests), 0) AS n, coalesce(sum(cost_nusd), 0) AS cost FROM estimated_rollups"
            f" WHERE {' AND '.join(clauses)}",
            [first_day, last_day, *(where or {}).values()],
        )[0]
        return int(r["n"]), int(r["cost"])

    _NEWEST_LAST_TIE = "id"
    """Breaks ties between rows of the same millisecond (SQLite: insertion order, ``rowid``)."""

    def rows(self, *, day: str | None = None, limit: int = 50, request_id: str | None = None) -> list[dict[str, Any]]:
        """Raw request rows, newest first."""
        clauses: list[str] = []
        params: list[Any] = []
        if day is not None:
            clauses.append("day = ?")
            params.append(day)
        if request_id is not None:
            clauses.append("id = ?")
            params.append(request_id)
        sql = "SELECT * FROM requests" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        sql += f" ORDER BY ts DESC, {self._NEWEST_LAST_TIE} DESC LIMIT ?"
        params.append(limit)
        return self.query(sql, params)

    @abstractmethod
    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """What the ledger itself did (reclaims, prunes, rebuilds), newest first."""

    @abstractmethod
    def totals(self) -> dict[str, int]:
        """Sums over the raw rows (the truth), for checks against the rollups."""

    @abstractmethod
    def rebuild_rollups(self, day_of: Callable[[str], str]) -> None:
        """Recompute ``day`` of every row (after a time-zone change) and the rollups from the rows.
        Days whose rows were pruned keep their rollups: there is nothing left to recompute them from."""

    @abstractmethod
    def meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one read statement (``?`` placeholders) and return its rows as dicts."""

    @abstractmethod
    def prune(self, before_day: str) -> int:
        """Delete raw rows of days before ``before_day``, keeping their rollups. Returns rows deleted."""

    def reclaimed(self, since_ts: str) -> list[dict[str, Any]]:
        """Holds reclaimed since ``since_ts`` (ISO UTC), oldest first: what each held and why."""
        rows = self.query(
            "SELECT ts, detail FROM events WHERE kind = 'reservation_reclaimed' AND ts >= ? ORDER BY id", [since_ts]
        )
        return [{"ts": r["ts"], **json.loads(r["detail"])} for r in rows]

    def reclaims(self, check: LimitCheck) -> tuple[int, int]:
        """(how many, nano-dollars) of holds reclaimed in a limit's scope and period: calls whose
        server died or froze mid-call. Reclaims are rare, so this reads their events directly."""
        since = (date.fromisoformat(check.first_day) - timedelta(days=1)).isoformat()  # ts is UTC, days local
        count = amount = 0
        for r in self.reclaimed(since):
            if not check.first_day <= r.get("day", "") <= check.last_day:
                continue
            if check.scope_kind != "global" and r.get(check.scope_kind) != check.scope_name:
                continue
            count += 1
            amount += int(r.get("amount_nusd") or 0)
        return count, amount

    # -- upkeep ---------------------------------------------------------------------------------

    def tidy(self) -> dict[str, int]:
        """One round of upkeep: reclaim dead or lapsed holds, and prune rows past retention."""
        done = {"reclaimed": self.reclaim()}
        if self.retain_days is not None:
            cutoff = (self._today() - timedelta(days=self.retain_days)).isoformat()
            done["pruned"] = self.prune(cutoff)
        return done

    def start_upkeep(
        self, *, lease_s: float, interval_s: float, retain_days: int | None = None,
        today: Callable[[], date] | None = None,
    ) -> None:
        """Make reservations leases renewed by a background thread, tidy up now and then every
        ``interval_s``. For long-running servers; tests and one-shot commands need not call it."""
        self.lease_s = lease_s
        self.retain_days = retain_days
        if today is not None:
            self._today = today
        self.tidy()
        renew_every = max(min(lease_s / 4, interval_s), 0.05)
        self._upkeep = threading.Thread(
            target=self._upkeep_loop, args=(renew_every, interval_s), name="ledger-upkeep", daemon=True
        )
        self._upkeep.start()

    def stop_upkeep(self) -> None:
        self._stop.set()
        if self._upkeep is not None and self._upkeep is not threading.current_thread():
            self._upkeep.join(timeout=30)
        self._upkeep = None

    def _checkpoint(self) -> None:
        """Backends with a write-ahead log flush it here, off the request path."""

    def _upkeep_loop(self, renew_every: float, interval_s: float) -> None:
        last_renew = last_tidy = time.monotonic()
        while not self._stop.wait(min(renew_every, SPARE_IDLE_S)):
            try:
                self.drop_spare(idle_s=SPARE_IDLE_S)
                if time.monotonic() - last_renew >= renew_every * 0.99:
                    last_renew = time.monotonic()
                    self._checkpoint()
                    self.renew()
                if time.monotonic() - last_tidy >= interval_s:
                    last_tidy = time.monotonic()
                    self.tidy()
            except Exception:
                log.warning("ledger upkeep failed; will try again", exc_info=True)
