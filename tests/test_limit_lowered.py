"""A limit lowered with ``set_budget`` holds from the moment the call returns, in every process
sharing the ledger, on SQLite and PostgreSQL.

Regression: ``set_budget`` lowered the daily limit, and 62 calls started after it returned were
still granted in the other processes, up to 0.54 s later: each server kept the limits it had read
for a second, and a reservation was checked against the limits of the snapshot routing had built.
Now ``set_budget`` raises a limits version in the same transaction as the new limit (under the
reservations' advisory lock on PostgreSQL), and a reservation (or the take-over of a spare hold)
whose checks were built from an older version rebuilds them from the limits in the file, inside
its own transaction, before it decides. The version is read in statements the reservation already
runs, so a call costs no extra read."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from llm_router import timings
from llm_router.budget import Budget
from llm_router.config import BudgetConfig
from llm_router.ledger import Ledger, LedgerBase, RequestRow, SpareRequest
from llm_router.types import BudgetExceeded, usd_str

from .backends import Store
from .clocks import ManualClock, seeded_ids
from .test_shared_budget import server, write_config

pytestmark = [pytest.mark.anyio]

WORST = 1_000
"""A call's worst case, in nano-dollars."""
COST = 300
"""What each call costs."""
_n = itertools.count()


@pytest.fixture(autouse=True)
def _limits_only_through_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server also reads the limits again now and then (for writers that do not raise the
    version); in these tests it never does, so only the version can tell a server of a new limit."""
    monkeypatch.setattr(timings, "OVERRIDE_REFRESH_S", 1e9)


def budget_of(led: LedgerBase, **limits: Any) -> Budget:
    return Budget(BudgetConfig.model_validate(limits), led)  # type: ignore[arg-type]


def one_call(budget: Budget, *, spare: bool = True, snapshot: Any = None) -> str:
    """Route (snapshot), reserve, settle with a spare kept for the next call, like the engine."""
    snap = snapshot or budget.snapshot()
    rid = budget.reserve(snap, provider="p", amount_nusd=WORST, request_id=f"req-{next(_n)}", ttl_s=900)
    keep = budget.spare_for(snap, provider="p", amount_nusd=WORST, ttl_s=900) if spare else None
    budget.ledger.record(row(snap.day), reservation_id=rid, spare=keep)
    return rid


def unversioned_call(led: LedgerBase, snap: Any) -> None:
    """The same call on the same checks, with no limits version given (the ledger as it was)."""
    rid = led.reserve(snap.checks("p"), WORST, request_id=f"req-{next(_n)}", day=snap.day, provider="p", tag="",
                      ttl_s=900)
    assert isinstance(rid, str)
    led.record(row(snap.day), reservation_id=rid,
               spare=SpareRequest(snap.checks("p"), 2 * WORST, snap.day, "p", "", 900))


def row(day: str) -> RequestRow:
    return RequestRow(id=f"row-{next(_n)}", ts=f"{day}T12:00:00+00:00", day=day, status="ok", provider="p", model="m",
                      cost_nusd=COST, cost_usd=usd_str(COST))


@contextmanager
def statements(led: LedgerBase) -> Iterator[list[str]]:
    """Every statement ``led`` sends while the block runs (SQLite: the trace callback; PostgreSQL:
    its connection's ``execute``)."""
    seen: list[str] = []
    if isinstance(led, Ledger):
        led._conn.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            led._conn.set_trace_callback(None)
        return
    conn = led._connection()  # type: ignore[attr-defined]
    real = conn.execute

    def traced(query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(query))
        return real(query, *args, **kwargs)

    conn.execute = traced
    try:
        yield seen
    finally:
        del conn.execute


def shape(sql: str) -> str:
    """A statement without its values (SQLite's trace shows them inline)."""
    return sql.split(" VALUES")[0].split(" WHERE")[0][:60]


def two_servers(store: Store, clock: ManualClock) -> tuple[LedgerBase, LedgerBase]:
    if store.kind == "sqlite":
        return Ledger(store.target, clock=clock, new_id=seeded_ids(1)), Ledger(store.target, clock=clock, new_id=seeded_ids(2))
    return store.open(), store.open()


def reads_limits(sql: str) -> bool:
    """A statement whose only business is the limits (the version may ride on others)."""
    return "FROM budgets" in sql or sql.lstrip().startswith("SELECT coalesce((SELECT")


def test_a_limit_lowered_in_one_server_refuses_the_next_call_in_another_at_once_with_no_extra_read(
    store: Store,
) -> None:
    clock = ManualClock()
    ours, theirs = two_servers(store, clock)
    try:
        mine, other = budget_of(ours, daily_usd=1), budget_of(theirs, daily_usd=1)
        for _ in range(3):
            one_call(mine)
            clock.advance(0.01)
        # The hot path, alone and with another server writing between calls: the limits version
        # costs no statement of its own (the same statements as the ledger without it).
        for others_write in (False, True):
            counts = []
            for versioned in (True, False):
                with statements(ours) as seen:
                    for _ in range(5):
                        if others_write:
                            one_call(other, spare=False)
                        if versioned:
                            one_call(mine)
                        else:
                            unversioned_call(ours, mine.snapshot())
                        clock.advance(0.01)
                assert [s for s in seen if reads_limits(s)] == []
                counts.append(sorted(shape(s) for s in seen))
            assert counts[0] == counts[1], others_write

        routed = mine.snapshot()  # routed on the old limit: the call is in flight when it is lowered
        spent = ours.usage(routed.checks("p")[0])[0]
        lowered = spent + WORST - 1  # the old limit allows the call, the new one no longer does
        other.set_limit("global", "daily", Decimal(lowered) / 10**9)

        with pytest.raises(BudgetExceeded) as refused:
            mine.reserve(routed, provider="p", amount_nusd=WORST, request_id="after", ttl_s=900)
        assert (refused.value.limit_name, refused.value.limit_nusd) == ("global daily", lowered)
        # Its own spare hold, kept under the old limit, was let go rather than counted as a call in flight.
        assert refused.value.reserved_nusd == 0 and ours.spare_nusd == 0 and ours.reservations_total() == 0
        with pytest.raises(BudgetExceeded):  # a call routed now is refused too, on the new limit
            one_call(mine)
        assert {s.limit.limit_nusd for s in mine.snapshot().states} == {lowered}
    finally:
        ours.close()
        theirs.close()

SERVERS = 8
WORKERS = 4
"""Calls each server has in flight at once."""
BEFORE = 3
"""Calls each server completes before the limit is lowered (so every one is busy and has read its limits)."""
AFTER = 6
"""Calls each server must have started, and seen answered, after ``set_budget`` returned."""
OLD_LIMIT = "1000"
NEW_LIMIT = "0.000001"
"""Below what is spent by the time it is set: no call started after it may be granted."""


def test_a_limit_set_where_none_was_refuses_the_next_call_in_another_server_at_once(store: Store) -> None:
    """No check carries the version when no limit applies: a server with none still learns of the
    first one before it grants anything (its spare hold included)."""
    clock = ManualClock()
    ours, theirs = two_servers(store, clock)
    try:
        mine, other = budget_of(ours), budget_of(theirs)
        for _ in range(3):
            one_call(mine)
        routed = mine.snapshot()
        assert routed.checks("p") == []
        other.set_limit("global", "daily", Decimal(0))

        with pytest.raises(BudgetExceeded) as refused:
            mine.reserve(routed, provider="p", amount_nusd=WORST, request_id="after", ttl_s=900)
        assert (refused.value.limit_name, refused.value.limit_nusd) == ("global daily", 0)
        assert ours.reservations_total() == 0
    finally:
        ours.close()
        theirs.close()


def test_a_per_request_limit_lowered_in_another_server_refuses_at_once(store: Store) -> None:
    clock = ManualClock()
    ours, theirs = two_servers(store, clock)
    try:
        mine, other = budget_of(ours, per_request_usd=1), budget_of(theirs, per_request_usd=1)
        one_call(mine)
        routed = mine.snapshot()
        other.set_limit("global", "per_request", Decimal(WORST - 1) / 10**9)

        with pytest.raises(BudgetExceeded) as refused:
            mine.reserve(routed, provider="p", amount_nusd=WORST, request_id="after", ttl_s=900)
        assert (refused.value.limit_name, refused.value.limit_nusd, refused.value.resets_at) == (
            "global per_request", WORST - 1, None)
        assert ours.reservations_total() == 0
    finally:
        ours.close()
        theirs.close()


def test_a_raised_limit_is_routed_on_at_once_in_another_server(store: Store) -> None:
    """Not needed for safety (a raised limit only lets more through), and free: routing sees the
    version move as it reads the figures, and reads the limits again."""
    clock = ManualClock()
    ours, theirs = two_servers(store, clock)
    try:
        mine, other = budget_of(ours, daily_usd=1), budget_of(theirs, daily_usd=1)
        one_call(mine)
        other.set_limit("global", "daily", Decimal(2))
        clock.advance(timings.ROUTING_STALENESS_S * 2)  # what routing may reuse has aged
        assert [s.limit.limit_nusd for s in mine.snapshot().states] == [2 * 10**9]
    finally:
        ours.close()
        theirs.close()


def test_set_budget_lets_its_own_spare_hold_go_so_no_view_counts_it_as_a_call_in_flight(tmp_path: Path) -> None:
    """Regression: after a limit was lowered, the idle spare hold was still held, and the budget
    views and refusals called it money 'held by calls in flight'."""
    led = Ledger(tmp_path / "ledger.db", clock=ManualClock())
    try:
        budget = budget_of(led, daily_usd=1)
        one_call(budget)
        assert led.spare_nusd == 2 * WORST

        budget.set_limit("global", "daily", Decimal(COST + WORST) / 10**9)
        assert led.spare_nusd == 0 and led.reservations_total() == 0
        assert [(s.spent_nusd, s.reserved_nusd) for s in budget.all_states()] == [(COST, 0)]
        with pytest.raises(BudgetExceeded) as refused:
            budget.reserve(budget.snapshot(), provider="p", amount_nusd=WORST + 1, request_id="r", ttl_s=900)
        assert refused.value.reserved_nusd == 0
    finally:
        led.close()


def test_a_spare_kept_before_a_limit_was_lowered_elsewhere_is_never_taken_over_and_goes_at_the_next_call(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    ours, theirs = (Ledger(tmp_path / "ledger.db", clock=clock, new_id=seeded_ids(i)) for i in (1, 2))
    try:
        mine, other = budget_of(ours, daily_usd=1), budget_of(theirs, daily_usd=1)
        one_call(mine)
        kept = ours._spare
        assert kept is not None
        routed = mine.snapshot()
        other.set_limit("global", "daily", Decimal(COST + WORST - 1) / 10**9)  # the spare still fits under it, the call not

        with pytest.raises(BudgetExceeded):
            mine.reserve(routed, provider="p", amount_nusd=WORST, request_id="after", ttl_s=900)
        assert ours._spare is None and ours.reservations_total() == 0
    finally:
        ours.close()
        theirs.close()


def test_a_call_settled_after_a_limit_was_lowered_elsewhere_keeps_no_spare_on_the_old_limit(tmp_path: Path) -> None:
    clock = ManualClock()
    ours, theirs = (Ledger(tmp_path / "ledger.db", clock=clock, new_id=seeded_ids(i)) for i in (1, 2))
    try:
        mine, other = budget_of(ours, daily_usd=1), budget_of(theirs, daily_usd=1)
        snap = mine.snapshot()
        rid = mine.reserve(snap, provider="p", amount_nusd=WORST, request_id="in flight", ttl_s=900)
        other.set_limit("global", "daily", Decimal(1) / 10**5)  # 10,000: the spare would fit, but was asked on $1
        ours.record(row(snap.day), reservation_id=rid,
                    spare=mine.spare_for(snap, provider="p", amount_nusd=WORST, ttl_s=900))
        assert ours.spare_nusd == 0 and ours.reservations_total() == 0
    finally:
        ours.close()
        theirs.close()


@pytest.mark.postgres
def test_postgres_set_budget_waits_for_a_reservation_in_progress_and_is_ordered_with_it(pg_url: str) -> None:
    """set_budget takes the reservations' advisory lock: a reservation holding it (between its
    check and its commit) finishes first, and every later one sees the new limit."""
    import psycopg

    from llm_router.ledger.postgres import PostgresLedger

    led = PostgresLedger(pg_url)
    holder = psycopg.connect(pg_url)
    watcher = psycopg.connect(pg_url, autocommit=True)
    try:
        me = led._connection().info.backend_pid
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (led._reserve_key,))  # a reservation mid-way
        done = threading.Event()
        thread = threading.Thread(target=lambda: (led.set_budget("global", "daily", 5), done.set()))
        thread.start()

        def waiting() -> bool:
            return watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted", (me,)
            ).fetchone()[0] == 1  # type: ignore[index]

        deadline = time.monotonic() + 20
        while not waiting():
            assert time.monotonic() < deadline, "set_budget never queued on the reservations' lock"
            time.sleep(0.01)
        assert not done.is_set()
        assert watcher.execute("SELECT count(*) FROM budgets").fetchone() == (0,)  # type: ignore[union-attr]
        holder.commit()
        thread.join(timeout=20)
        assert done.is_set()
        assert led.budget_overrides_at() == (1, {("global", "daily"): 5})
    finally:
        holder.close()
        watcher.close()
        led.close()


@pytest.mark.slow
async def test_no_call_started_after_set_budget_returns_is_granted_under_the_old_limit_in_any_process(
    store: Store, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.toml", store, daily_usd=OLD_LIMIT, providers={"mock": 10})
    calls: list[dict[str, Any]] = []
    """Every call: server, when it was sent (test's monotonic clock), and how it ended."""
    lowered_at: list[float] = []
    started = anyio.Event()
    stop = anyio.Event()
    done_before = [0] * SERVERS
    done_after = [0] * SERVERS
    progress = anyio.Event()

    def note() -> None:
        nonlocal progress
        progress.set()
        progress = anyio.Event()

    async def worker(client: Client, i: int, w: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.monotonic()
            result = await client.call_tool("complete", {"prompt": f"q {i}-{w}-{n}", "model": "mock:m",
                                                         "max_tokens": 100})
            error = (result.meta or {}).get("llm-router/error") or {}
            call = {"server": i, "sent": sent, "ok": not result.is_error, "error": error,
                    "cost_usd": (result.structured_content or {}).get("cost_usd"),
                    "text": None if not result.is_error else result.content[0].text}  # type: ignore[union-attr]
            calls.append(call)
            if lowered_at and sent > lowered_at[0]:
                done_after[i] += 1
            else:
                done_before[i] += 1
            note()

    async def serve(i: int, clients: list[Client | None]) -> None:
        async with Client(server(config)) as client, anyio.create_task_group() as tg:
            clients[i] = client
            await started.wait()
            for w in range(WORKERS):
                tg.start_soon(worker, client, i, w)
            await stop.wait()

    async def until(predicate: Any) -> None:
        while not predicate():
            await progress.wait()

    clients: list[Client | None] = [None] * SERVERS
    with anyio.fail_after(150):
        async with anyio.create_task_group() as tg:
            for i in range(SERVERS):
                tg.start_soon(serve, i, clients)
            while not all(clients):
                await anyio.sleep(0.05)
            started.set()
            await until(lambda: min(done_before) >= BEFORE)
            lowered = await clients[0].call_tool(  # type: ignore[union-attr]
                "set_budget", {"scope": "global", "period": "daily", "limit_usd": NEW_LIMIT})
            lowered_at.append(time.monotonic())
            assert not lowered.is_error, lowered.content
            await until(lambda: min(done_after) >= AFTER)
            stop.set()

    after = [c for c in calls if c["sent"] > lowered_at[0]]
    granted_after = [c for c in after if c["ok"]]
    late = [c["sent"] - lowered_at[0] for c in granted_after]
    print(f"\n{store.kind}: {len(calls)} calls, {len(after)} started after set_budget returned; granted after it: "
          f"{len(granted_after)}" + (f" (up to {max(late):.3f} s later)" if late else ""))
    assert len(after) >= SERVERS * AFTER
    assert granted_after == [], f"{len(granted_after)} calls granted under the old limit after it was lowered"
    # Each was refused for the new limit, by name and figure.
    unexpected = [c for c in after if c["error"].get("code") != "budget_exceeded"]
    assert unexpected == []
    assert {(c["error"]["limit"], c["error"]["limit_usd"]) for c in after} == {("global daily", NEW_LIMIT)}

    led = store.open()
    try:
        totals = led.totals()
        held = led.reservations_total()
    finally:
        led.close()
    # Every call has its row, the rows sum to what the answered calls cost, and nothing is held.
    assert totals["requests"] == len(calls)
    assert totals["cost_nusd"] == sum(int(Decimal(c["cost_usd"]) * 10**9) for c in calls if c["ok"])
    assert held == 0
