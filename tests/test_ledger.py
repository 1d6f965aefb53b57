"""ledger/: migrations, request rows and their rollups, reservations, reclaims and reports, on real
SQLite files in ``tmp_path``."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from llm_router.ledger import GROUPINGS, Ledger, LimitCheck, Refusal, RequestRow
from llm_router.ledger import sqlite as ledger_sqlite
from llm_router.ledger.schema import MIGRATIONS, migrate

DAY = "2025-03-14"
MIGRATION_NAMES = [
    "001_create_requests",
    "002_create_rollups",
    "003_create_reservations",
    "004_create_budgets",
    "005_create_events",
]


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(ledger_file: Path) -> Iterator[Ledger]:
    led = Ledger(ledger_file)
    yield led
    led.close()


_ids = itertools.count(1)


def row(
    *,
    day: str = DAY,
    provider: str | None = "anthropic",
    model: str | None = "claude-haiku-4-5",
    tag: str = "",
    task_type: str = "",
    status: str = "ok",
    cost_nusd: int = 1_000,
    input_tokens: int = 100,
    output_tokens: int = 10,
    cached_tokens: int = 0,
    reference_cost_nusd: int | None = None,
    ts: str | None = None,
) -> RequestRow:
    n = next(_ids)
    return RequestRow(
        id=f"req-{n}",
        ts=ts or f"{day}T12:00:00.{n % 1000:03d}+00:00",
        day=day,
        status=status,
        tag=tag,
        task_type=task_type,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        cost_nusd=cost_nusd,
        cost_usd=str(cost_nusd / 1e9),
        reference_cost_nusd=reference_cost_nusd,
    )


def daily(limit_nusd: int, *, kind: str = "global", name: str | None = None, day: str = DAY) -> LimitCheck:
    label = "global" if kind == "global" else f"{kind}:{name}"
    return LimitCheck(f"{label} daily", kind, name, day, day, limit_nusd)  # type: ignore[arg-type]


def reserve(led: Ledger, checks: list[LimitCheck], amount: int, **kw: Any) -> str | Refusal:
    args: dict[str, Any] = {"request_id": "r", "day": DAY, "provider": "anthropic", "tag": "", "ttl_s": 900}
    return led.reserve(checks, amount, **(args | kw))


def columns(db_path: Path, table: str) -> list[tuple[str, str]]:
    db = sqlite_utils.Database(db_path)
    try:
        return [(c.name, c.type) for c in db[table].columns]
    finally:
        db.close()


def rollup_table(led: Ledger) -> list[dict[str, Any]]:
    return [
        dict(r) for r in led.db.query("SELECT * FROM rollups ORDER BY day, provider, model, tag, task_type")
    ]


def rollups_from_rows(led: Ledger) -> list[dict[str, Any]]:
    """What the rollups must say, computed here independently from the raw rows."""
    sums: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for r in led.db.query("SELECT * FROM requests"):
        key = (r["day"], r["provider"] or "", r["model"] or "", r["tag"], r["task_type"])
        s = sums.setdefault(
            key,
            dict(
                zip(("day", "provider", "model", "tag", "task_type"), key, strict=True),
                requests=0,
                errors=0,
                input_tokens=0,
                output_tokens=0,
                cached_tokens=0,
                cost_nusd=0,
                reference_cost_nusd=0,
            ),
        )
        s["requests"] += 1
        s["errors"] += r["status"] != "ok"
        for col in ("input_tokens", "output_tokens", "cached_tokens", "cost_nusd"):
            s[col] += r[col]
        s["reference_cost_nusd"] += r["reference_cost_nusd"] or 0
    return [sums[k] for k in sorted(sums)]


# -- migrations ---------------------------------------------------------------------------------


def test_blank_database_is_migrated_to_the_ledger_of_the_design(ledger: Ledger, ledger_file: Path) -> None:
    assert ledger.migrations_applied == MIGRATION_NAMES
    assert sorted(ledger.db.table_names()) == [
        "_migrations",
        "budgets",
        "events",
        "meta",
        "requests",
        "reservations",
        "rollups",
    ]
    assert columns(ledger_file, "requests") == [
        ("id", "TEXT"),
        ("ts", "TEXT"),
        ("day", "TEXT"),
        ("tag", "TEXT"),
        ("task_type", "TEXT"),
        ("provider", "TEXT"),
        ("model", "TEXT"),
        ("status", "TEXT"),
        ("input_tokens", "INTEGER"),
        ("output_tokens", "INTEGER"),
        ("cached_tokens", "INTEGER"),
        ("cache_write_tokens", "INTEGER"),
        ("cost_nusd", "INTEGER"),
        ("cost_usd", "TEXT"),
        ("cost_estimated", "INTEGER"),
        ("prices", "TEXT"),
        ("reference_cost_nusd", "INTEGER"),
        ("latency_ms", "INTEGER"),
        ("attempts", "TEXT"),
        ("error_code", "TEXT"),
        ("error", "TEXT"),
        ("prompt_hash", "TEXT"),
        ("prompt", "TEXT"),
        ("strategy", "TEXT"),
    ]
    assert [c for c, _ in columns(ledger_file, "reservations")] == [
        "id",
        "request_id",
        "created_at",
        "expires_at",
        "host",
        "pid",
        "day",
        "provider",
        "tag",
        "amount_nusd",
    ]
    assert [c for c, _ in columns(ledger_file, "budgets")] == ["scope", "period", "limit_nusd", "updated_at"]


def test_ledger_file_is_in_wal_mode_and_readable_by_plain_sqlite(ledger: Ledger, ledger_file: Path) -> None:
    ledger.record(row())

    conn = sqlite3.connect(ledger_file)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (1,)
    finally:
        conn.close()


def test_migrating_twice_is_a_no_op(ledger_file: Path) -> None:
    Ledger(ledger_file).close()
    before = columns(ledger_file, "requests")

    again = Ledger(ledger_file)
    try:
        assert again.migrations_applied == []
        assert migrate(again.db) == []
        assert [r["name"] for r in again.db["_migrations"].rows] == MIGRATION_NAMES
    finally:
        again.close()
    assert columns(ledger_file, "requests") == before


def test_database_with_only_the_first_migration_is_brought_up_to_date(ledger_file: Path) -> None:
    old = sqlite_utils.Database(ledger_file)
    old["_migrations"].create({"name": str, "applied_at": str}, pk="name")
    for name, fn in MIGRATIONS[:1]:
        fn(old)
        old["_migrations"].insert({"name": name, "applied_at": "2025-01-01T00:00:00+00:00"})
    old["requests"].insert(
        {"id": "old-1", "ts": f"{DAY}T00:00:00+00:00", "day": DAY, "status": "ok", "cost_nusd": 7}
    )
    old.close()

    led = Ledger(ledger_file)
    try:
        assert led.migrations_applied == MIGRATION_NAMES[1:]
        assert sorted(led.db.table_names()) == [
            "_migrations",
            "budgets",
            "events",
            "meta",
            "requests",
            "reservations",
            "rollups",
        ]
        assert led.totals() == {"requests": 1, "cost_nusd": 7, "input_tokens": 0, "output_tokens": 0}
    finally:
        led.close()


def test_a_failing_migration_leaves_nothing_half_applied(
    ledger_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(db: sqlite_utils.Database) -> None:
        db["half"].create({"x": int})
        raise RuntimeError("boom")

    monkeypatch.setattr("llm_router.ledger.schema.MIGRATIONS", [*MIGRATIONS, ("006_broken", broken)])
    with pytest.raises(RuntimeError, match="boom"):
        Ledger(ledger_file)

    db = sqlite_utils.Database(ledger_file)
    try:
        assert db.table_names() == []
    finally:
        db.close()


def test_several_connections_opening_a_new_ledger_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Regression: concurrent first opens (two server processes starting together) failed with
    'table already exists' or 'database is locked'. Threads with their own connections race the
    same way processes do."""
    path = tmp_path / "shared.db"
    start = threading.Barrier(6)
    opened: list[Ledger] = []
    errors: list[BaseException] = []

    def open_ledger() -> None:
        start.wait(timeout=10)
        try:
            opened.append(Ledger(path))
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=open_ledger) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert errors == []
        assert sorted(len(led.migrations_applied) for led in opened) == [0, 0, 0, 0, 0, len(MIGRATIONS)]
    finally:
        for led in opened:
            led.close()


# -- request rows and rollups -------------------------------------------------------------------


def test_record_keeps_rollups_in_step_with_requests(ledger: Ledger) -> None:
    providers = [
        ("anthropic", "claude-haiku-4-5"),
        ("openai", "gpt-4o-mini"),
        ("ollama", "llama3.1"),
        (None, None),
    ]
    tags = ["", "alice", "team:billing"]
    days = ["2025-03-13", "2025-03-14", "2025-03-15"]
    for i in range(120):
        provider, model = providers[i % 4]
        ledger.record(
            row(
                day=days[i % 3],
                provider=provider,
                model=model,
                tag=tags[i % 5 % 3],
                task_type=["", "summarize", "code_generation"][i % 7 % 3],
                status="ok" if i % 6 else "error",
                cost_nusd=i * 1_337,
                input_tokens=i * 10,
                output_tokens=i,
                cached_tokens=i % 4,
                reference_cost_nusd=i * 2_000 if i % 2 else None,
            )
        )

    assert rollup_table(ledger) == rollups_from_rows(ledger)
    totals = ledger.totals()
    assert totals == {
        "requests": 120,
        "cost_nusd": sum(i * 1_337 for i in range(120)),
        "input_tokens": sum(i * 10 for i in range(120)),
        "output_tokens": sum(range(120)),
    }
    report = ledger.report(days[0], days[-1], "day")
    assert sum(r["cost_nusd"] for r in report) == totals["cost_nusd"]
    assert sum(r["requests"] for r in report) == 120


def test_record_stores_the_row_as_given(ledger: Ledger) -> None:
    r = row(tag="t", task_type="summarize", cost_nusd=42, reference_cost_nusd=99)
    r.prices = json.dumps({"input": "1", "source": "genai-prices"})
    r.attempts = json.dumps([{"model": "anthropic:claude-haiku-4-5", "outcome": "ok"}])
    r.prompt_hash = "ab" * 32
    r.latency_ms = 321
    r.strategy = "balanced"
    ledger.record(r)

    stored = ledger.rows(request_id=r.id)

    expected = {k: v for k, v in ledger_sqlite.row_asdict(r).items() if k != "extra"}
    assert stored == [expected]


def test_record_settles_its_reservation_in_the_same_transaction(ledger: Ledger) -> None:
    rid = reserve(ledger, [daily(10_000)], 5_000)
    assert isinstance(rid, str)
    assert ledger.usage(daily(10_000)) == (0, 5_000)

    ledger.record(row(cost_nusd=1_234), reservation_id=rid)

    assert ledger.usage(daily(10_000)) == (1_234, 0)
    assert ledger.reservations_total() == 0


def test_a_row_that_cannot_be_stored_leaves_rollups_and_reservations_untouched(ledger: Ledger) -> None:
    rid = reserve(ledger, [daily(10_000)], 5_000)
    assert isinstance(rid, str)
    first = row(cost_nusd=100)
    ledger.record(first)

    with pytest.raises(sqlite3.IntegrityError):
        ledger.record(first, reservation_id=rid)  # same id twice

    assert ledger.usage(daily(10_000)) == (100, 5_000)
    assert rollup_table(ledger) == rollups_from_rows(ledger)


# -- reservations -------------------------------------------------------------------------------


def test_reserve_holds_money_that_counts_against_the_limit(ledger: Ledger) -> None:
    ledger.record(row(cost_nusd=3_000))

    rid = reserve(ledger, [daily(10_000)], 4_000)

    assert isinstance(rid, str)
    assert ledger.usage(daily(10_000)) == (3_000, 4_000)


def test_reserve_refuses_when_spent_plus_reserved_plus_amount_would_pass_a_limit(ledger: Ledger) -> None:
    ledger.record(row(cost_nusd=3_000))
    assert isinstance(reserve(ledger, [daily(10_000)], 4_000), str)

    exactly_full = reserve(ledger, [daily(10_000)], 3_000)
    one_over = reserve(ledger, [daily(10_001)], 3_002)

    assert isinstance(exactly_full, str)
    assert one_over == Refusal(daily(10_001), spent_nusd=3_000, reserved_nusd=7_000)


def test_refusal_names_the_first_check_it_would_break_and_holds_nothing(ledger: Ledger) -> None:
    ledger.record(row(provider="openai", tag="alice", cost_nusd=900))
    checks = [
        daily(1_000_000),
        daily(1_000, kind="provider", name="openai"),
        daily(500, kind="tag", name="alice"),
    ]

    refusal = reserve(ledger, checks, 200, provider="openai", tag="alice")

    assert refusal == Refusal(checks[1], spent_nusd=900, reserved_nusd=0)
    assert ledger.reservations_total() == 0


def test_limits_only_count_their_own_scope_and_days(ledger: Ledger) -> None:
    ledger.record(row(provider="openai", tag="bob", cost_nusd=5_000))
    ledger.record(row(provider="anthropic", tag="alice", cost_nusd=700))
    ledger.record(row(provider="anthropic", tag="alice", cost_nusd=10_000, day="2025-03-13"))
    assert isinstance(reserve(ledger, [], 50, provider="anthropic", tag="alice"), str)

    assert ledger.usage(daily(0, kind="provider", name="anthropic")) == (700, 50)
    assert ledger.usage(daily(0, kind="tag", name="alice")) == (700, 50)
    assert ledger.usage(daily(0, kind="tag", name="bob")) == (5_000, 0)
    assert ledger.usage(daily(0)) == (5_700, 50)
    month = LimitCheck("global monthly", "global", None, "2025-03-01", "2025-03-31", 0)
    assert ledger.usage(month) == (15_700, 50)


def test_concurrent_reservations_never_hold_more_than_the_limit(ledger_file: Path) -> None:
    """Check-and-reserve is one transaction: eight threads on two connections race for a limit
    that fits exactly five reservations."""
    ledgers = [Ledger(ledger_file), Ledger(ledger_file)]
    results: list[str | Refusal] = []
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait(timeout=10)
        results.append(reserve(ledgers[i % 2], [daily(5_000)], 1_000))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert sum(isinstance(r, str) for r in results) == 5
        assert ledgers[0].usage(daily(5_000)) == (0, 5_000)
    finally:
        for led in ledgers:
            led.close()


def test_release_frees_the_reservation(ledger: Ledger) -> None:
    rid = reserve(ledger, [daily(1_000)], 1_000)
    assert isinstance(rid, str)
    assert isinstance(reserve(ledger, [daily(1_000)], 1), Refusal)

    ledger.release(rid)

    assert ledger.reservations_total() == 0
    assert isinstance(reserve(ledger, [daily(1_000)], 1_000), str)


def test_releasing_twice_is_harmless(ledger: Ledger) -> None:
    rid = reserve(ledger, [], 10)
    assert isinstance(rid, str)

    ledger.release(rid)
    ledger.release(rid)

    assert ledger.reservations_total() == 0


# -- reclaiming ---------------------------------------------------------------------------------


def reclaim_events(led: Ledger) -> list[dict[str, Any]]:
    return [
        {"kind": e["kind"], **{k: v for k, v in e["detail"].items() if k != "reservation"}}
        for e in led.events()
        if e["kind"] == "reservation_reclaimed"
    ]


def test_expired_reservations_are_reclaimed_and_logged(ledger: Ledger) -> None:
    live = reserve(ledger, [], 100, request_id="live")
    expired = reserve(ledger, [], 2_000, request_id="stuck", ttl_s=-1)  # expired the moment it was made
    assert isinstance(live, str) and isinstance(expired, str)

    assert ledger.reclaim() == 1

    assert ledger.reservations_total() == 100
    assert reclaim_events(ledger) == [
        {
            "kind": "reservation_reclaimed",
            "request_id": "stuck",
            "pid": ledger_sqlite.os.getpid(),
            "host": ledger_sqlite._HOST,
            "amount_nusd": 2_000,
        }
    ]
    assert ledger.reclaim() == 0


def test_expired_reservations_stop_counting_against_limits_and_are_logged_when_reserving(
    ledger: Ledger,
) -> None:
    """Regression: reserve() dropped expired reservations without a trace in events."""
    assert isinstance(reserve(ledger, [daily(1_000)], 1_000, request_id="stuck", ttl_s=-1), str)

    assert isinstance(reserve(ledger, [daily(1_000)], 1_000, request_id="next"), str)

    assert [e["request_id"] for e in reclaim_events(ledger)] == ["stuck"]


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def fake_reservation(led: Ledger, *, pid: int, host: str, amount: int = 500, expires_in: float = 900) -> None:
    now = datetime.now(UTC).timestamp()
    led.db["reservations"].insert(
        {
            "id": f"fake-{pid}-{host}-{expires_in}",
            "request_id": f"from-{pid}",
            "created_at": now,
            "expires_at": now + expires_in,
            "host": host,
            "pid": pid,
            "day": DAY,
            "provider": "anthropic",
            "tag": "",
            "amount_nusd": amount,
        }
    )


def test_reservation_of_a_dead_process_on_this_host_is_reclaimed(ledger: Ledger, dead_pid: int) -> None:
    fake_reservation(ledger, pid=dead_pid, host=ledger_sqlite._HOST, amount=500)
    fake_reservation(ledger, pid=dead_pid, host="another-machine", amount=70)  # can't tell: left alone
    fake_reservation(ledger, pid=ledger_sqlite.os.getppid(), host=ledger_sqlite._HOST, amount=3)  # alive
    mine = reserve(ledger, [], 1)  # this process: alive
    assert isinstance(mine, str)

    assert ledger.reclaim() == 1

    assert ledger.reservations_total() == 70 + 3 + 1
    assert reclaim_events(ledger) == [
        {
            "kind": "reservation_reclaimed",
            "request_id": f"from-{dead_pid}",
            "pid": dead_pid,
            "host": ledger_sqlite._HOST,
            "amount_nusd": 500,
        }
    ]


def test_reclaim_without_dead_pids_only_frees_expired_reservations(ledger: Ledger, dead_pid: int) -> None:
    fake_reservation(ledger, pid=dead_pid, host=ledger_sqlite._HOST)

    assert ledger.reclaim(dead_pids=False) == 0
    assert ledger.reservations_total() == 500


def test_expired_reservation_of_a_dead_process_is_reclaimed_once(ledger: Ledger, dead_pid: int) -> None:
    """Regression: it matched both the expired and the dead-process query and was counted twice."""
    fake_reservation(ledger, pid=dead_pid, host=ledger_sqlite._HOST, expires_in=-60)

    assert ledger.reclaim() == 1
    assert len(reclaim_events(ledger)) == 1


def test_reclaim_never_signals_processes_on_windows(
    ledger: Ledger, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: on Windows os.kill(pid, 0) terminates the process instead of probing it."""
    fake_reservation(ledger, pid=dead_pid, host=ledger_sqlite._HOST)
    signalled: list[int] = []
    monkeypatch.setattr(ledger_sqlite.sys, "platform", "win32")
    monkeypatch.setattr(ledger_sqlite.os, "kill", lambda pid, sig: signalled.append(pid))

    assert ledger.reclaim() == 0
    assert signalled == []


# -- two processes, one file --------------------------------------------------------------------


def test_two_ledgers_on_one_file_see_each_others_spend_at_once(ledger_file: Path) -> None:
    a, b = Ledger(ledger_file), Ledger(ledger_file)
    try:
        a.record(row(cost_nusd=4_000))
        rid = b.reserve(
            [daily(10_000)], 5_000, request_id="b1", day=DAY, provider="openai", tag="", ttl_s=900
        )

        assert isinstance(rid, str)
        assert a.usage(daily(10_000)) == (4_000, 5_000)
        assert b.usage(daily(10_000)) == (4_000, 5_000)
        assert a.reserve(
            [daily(10_000)], 1_001, request_id="a2", day=DAY, provider="x", tag="", ttl_s=900
        ) == Refusal(daily(10_000), spent_nusd=4_000, reserved_nusd=5_000)

        b.record(row(cost_nusd=2_000), reservation_id=rid)

        assert a.usage(daily(10_000)) == (6_000, 0)
        assert a.totals()["requests"] == 2
    finally:
        a.close()
        b.close()


def test_budget_overrides_are_shared_through_the_file(ledger_file: Path) -> None:
    a, b = Ledger(ledger_file), Ledger(ledger_file)
    try:
        a.set_budget("global", "daily", 5_000_000_000)
        a.set_budget("tag:alice", "monthly", 1_000)
        b.set_budget("tag:alice", "monthly", None)

        assert b.budget_overrides() == {("global", "daily"): 5_000_000_000, ("tag:alice", "monthly"): None}
        assert a.budget_overrides() == b.budget_overrides()
    finally:
        a.close()
        b.close()


# -- hostile strings ----------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE requests; --",
    "quote \" and ' and `backtick`",
    "Robert'); DELETE FROM rollups WHERE ('1'='1",
    "% _ wildcards * ?",
    "ünïcødé 🚀 中文 עברית",
    "line\nbreak\ttab",
    "  padded  ",
]


@pytest.mark.parametrize("nasty", HOSTILE)
def test_hostile_strings_are_stored_verbatim_and_filter_exactly(ledger: Ledger, nasty: str) -> None:
    ledger.record(row(tag=nasty, model=nasty, provider=nasty, task_type=nasty, cost_nusd=111))
    ledger.record(row(tag="plain", cost_nusd=222))
    ledger.record(row(tag=nasty.upper() + "x", cost_nusd=444))

    stored = ledger.rows(day=DAY)
    by_tag = ledger.report(DAY, DAY, "tag", where={"tag": nasty})
    by_model = ledger.report(DAY, DAY, "model", where={"provider": nasty, "task_type": nasty})

    assert sorted(ledger.db.table_names()) == [
        "_migrations",
        "budgets",
        "events",
        "meta",
        "requests",
        "reservations",
        "rollups",
    ]
    assert [
        (r["tag"], r["model"], r["provider"], r["task_type"]) for r in stored if r["cost_nusd"] == 111
    ] == [(nasty, nasty, nasty, nasty)]
    assert [(r["key"], r["cost_nusd"]) for r in by_tag] == [(nasty, 111)]
    assert [(r["key"], r["cost_nusd"]) for r in by_model] == [(nasty, 111)]
    assert ledger.usage(daily(0, kind="tag", name=nasty)) == (111, 0)
    assert ledger.usage(daily(0, kind="provider", name=nasty)) == (111, 0)
    assert rollup_table(ledger) == rollups_from_rows(ledger)


def test_report_refuses_to_group_or_filter_by_anything_but_the_known_columns(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="group_by"):
        ledger.report(DAY, DAY, "tag; DROP TABLE requests")
    with pytest.raises(ValueError, match="cannot filter"):
        ledger.report(DAY, DAY, "tag", where={"1=1 OR tag": "x"})


# -- reports ------------------------------------------------------------------------------------


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    ledger.record(
        row(
            day="2025-03-13",
            provider="anthropic",
            model="claude-haiku-4-5",
            tag="alice",
            task_type="summarize",
            cost_nusd=1_000,
            input_tokens=10,
            output_tokens=1,
            reference_cost_nusd=3_000,
        )
    )
    ledger.record(
        row(
            day="2025-03-14",
            provider="anthropic",
            model="claude-sonnet-4-5",
            tag="bob",
            task_type="code_generation",
            cost_nusd=5_000,
            input_tokens=20,
            output_tokens=2,
            cached_tokens=5,
            reference_cost_nusd=5_000,
        )
    )
    ledger.record(
        row(
            day="2025-03-14",
            provider="openai",
            model="gpt-4o-mini",
            tag="alice",
            task_type="summarize",
            cost_nusd=300,
            input_tokens=30,
            output_tokens=3,
        )
    )
    ledger.record(
        row(
            day="2025-03-14",
            provider="openai",
            model="gpt-4o-mini",
            tag="alice",
            task_type="summarize",
            status="error",
            cost_nusd=0,
            input_tokens=0,
            output_tokens=0,
        )
    )
    ledger.record(
        row(
            day="2025-03-15",
            provider="ollama",
            model="llama3.1",
            tag="",
            task_type="",
            cost_nusd=0,
            input_tokens=40,
            output_tokens=4,
        )
    )
    ledger.record(
        row(day="2025-03-16", provider="openai", model="gpt-4o", cost_nusd=99_999)
    )  # outside the period
    return ledger


def _r(key: str, requests: int, errors: int, i: int, o: int, c: int, cost: int, ref: int) -> dict[str, Any]:
    return {
        "key": key,
        "requests": requests,
        "errors": errors,
        "input_tokens": i,
        "output_tokens": o,
        "cached_tokens": c,
        "cost_nusd": cost,
        "reference_cost_nusd": ref,
    }


REPORTS = {
    "provider": [
        _r("anthropic", 2, 0, 30, 3, 5, 6_000, 8_000),
        _r("openai", 2, 1, 30, 3, 0, 300, 0),
        _r("ollama", 1, 0, 40, 4, 0, 0, 0),
    ],
    "model": [
        _r("claude-sonnet-4-5", 1, 0, 20, 2, 5, 5_000, 5_000),
        _r("claude-haiku-4-5", 1, 0, 10, 1, 0, 1_000, 3_000),
        _r("gpt-4o-mini", 2, 1, 30, 3, 0, 300, 0),
        _r("llama3.1", 1, 0, 40, 4, 0, 0, 0),
    ],
    "task_type": [
        _r("code_generation", 1, 0, 20, 2, 5, 5_000, 5_000),
        _r("summarize", 3, 1, 40, 4, 0, 1_300, 3_000),
        _r("", 1, 0, 40, 4, 0, 0, 0),
    ],
    "tag": [
        _r("bob", 1, 0, 20, 2, 5, 5_000, 5_000),
        _r("alice", 3, 1, 40, 4, 0, 1_300, 3_000),
        _r("", 1, 0, 40, 4, 0, 0, 0),
    ],
    "day": [
        _r("2025-03-14", 3, 1, 50, 5, 5, 5_300, 5_000),
        _r("2025-03-13", 1, 0, 10, 1, 0, 1_000, 3_000),
        _r("2025-03-15", 1, 0, 40, 4, 0, 0, 0),
    ],
}


@pytest.mark.parametrize("group_by", GROUPINGS)
def test_report_groups_spend_by_each_grouping_dearest_first(filled: Ledger, group_by: str) -> None:
    assert filled.report("2025-03-13", "2025-03-15", group_by) == REPORTS[group_by]


def test_report_filters_combine(filled: Ledger) -> None:
    assert filled.report("2025-03-13", "2025-03-15", "day", where={"tag": "alice", "provider": "openai"}) == [
        _r("2025-03-14", 2, 1, 30, 3, 0, 300, 0)
    ]


def test_report_of_an_empty_period_is_empty(filled: Ledger) -> None:
    assert filled.report("2024-01-01", "2024-12-31", "provider") == []


def test_rows_come_newest_first_and_filter_by_day(filled: Ledger) -> None:
    days = [r["day"] for r in filled.rows()]

    assert days == sorted(days, reverse=True)
    assert {r["day"] for r in filled.rows(day="2025-03-14")} == {"2025-03-14"}
    assert len(filled.rows(limit=2)) == 2


# -- rebuilding rollups -------------------------------------------------------------------------


def test_rebuild_rollups_rederives_them_from_the_rows(filled: Ledger) -> None:
    expected = rollup_table(filled)
    filled.db.execute("UPDATE rollups SET cost_nusd = cost_nusd * 7, requests = 0")
    filled.db.execute("DELETE FROM rollups WHERE provider = 'ollama'")

    filled.rebuild_rollups(lambda ts: ts[:10])

    assert rollup_table(filled) == expected
    assert [e["kind"] for e in filled.events()] == ["rollups_rebuilt"]


def test_rebuild_rollups_refiles_rows_under_a_new_day(ledger: Ledger) -> None:
    """After a time-zone change: 23:30 UTC is the next day in Tokyo."""
    ledger.record(row(day="2025-03-14", ts="2025-03-14T23:30:00.000+00:00", cost_nusd=10))
    ledger.record(row(day="2025-03-14", ts="2025-03-14T08:00:00.000+00:00", cost_nusd=20))

    def tokyo_day(ts: str) -> str:
        return (datetime.fromisoformat(ts) + timedelta(hours=9)).date().isoformat()

    ledger.rebuild_rollups(tokyo_day)

    assert sorted(r["day"] for r in ledger.rows()) == ["2025-03-14", "2025-03-15"]
    assert rollup_table(ledger) == rollups_from_rows(ledger)
    assert ledger.usage(daily(0, day="2025-03-15")) == (10, 0)


# -- small things -------------------------------------------------------------------------------


def test_meta_values_are_stored_and_replaced(ledger: Ledger) -> None:
    assert ledger.meta("timezone") is None

    ledger.set_meta("timezone", "UTC")
    ledger.set_meta("timezone", "Asia/Tokyo")

    assert ledger.meta("timezone") == "Asia/Tokyo"


@pytest.mark.anyio
async def test_run_calls_a_ledger_method_on_a_worker_thread(ledger: Ledger) -> None:
    rid = await ledger.run(reserve, ledger, [daily(100)], 10)

    assert isinstance(rid, str)
    assert await ledger.run(ledger.reservations_total) == 10


def test_ledger_creates_the_folder_it_lives_in(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "a" / "b" / "ledger.db")
    led.close()

    assert (tmp_path / "a" / "b" / "ledger.db").is_file()
