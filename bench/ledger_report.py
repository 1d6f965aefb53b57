"""How fast ``cost_report`` answers over a ledger of a million rows.

    python bench/ledger_report.py [--rows N] [--days D] [--runs K] [--url postgresql://...] [--keep PATH]

Builds a ledger of N request rows (default 1,000,000) spread over the last D days (default 60),
across 4 providers, 12 models, 25 tags and 5 task types, with the per-day rollups derived from
those rows by the same aggregate the ledger uses to rebuild them, and checked against the rows.
Then times ``Engine.cost_report`` for this month grouped by each of provider, model, tag, day and
task_type (median and worst of K runs, after one warm-up), with budget limits in place so each
report also reads every limit's spend; and, for scale, the same provider totals summed from the
raw rows instead of the rollups. SQLite by default (a file in a temporary folder); ``--url`` runs
against a PostgreSQL database instead (its tables are dropped and rebuilt: use a scratch one).

Nothing is asserted; the figures are printed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from llm_router.config import Settings, settings_from_dict
from llm_router.engine import Engine
from llm_router.ledger import LedgerBase, open_ledger
from llm_router.ledger.base import DAY_TOTALS_FROM_ROLLUPS, DIMENSIONS, ROW_COLUMNS

PROVIDERS = {
    "anthropic": ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"],
    "openai": ["gpt-4.1-nano", "gpt-4o-mini", "gpt-4o"],
    "gemini": ["gemini-2.5-flash-lite", "gemini-2.5-flash", "gemini-2.5-pro"],
    "local": ["llama3.1", "qwen2.5-7b", "mistral-7b"],
}
TAGS = [""] + [f"team-{i:02d}" for i in range(24)]
TASK_TYPES = ["", "summarize", "code_generation", "classify", "translate"]
GROUPINGS = ("provider", "model", "tag", "day", "task_type")
BATCH = 50_000


def settings(target: dict[str, Any]) -> Settings:
    providers = [{"name": name, "kind": "mock", "models": models,
                  "prices": {m: {"input_per_mtok": 1, "output_per_mtok": 5} for m in models}}
                 for name, models in PROVIDERS.items()]
    return settings_from_dict(
        {
            "ledger": target,
            "providers": providers,
            "budget": {
                "daily_usd": 500, "monthly_usd": 10_000,
                "providers": {"anthropic": {"daily_usd": 200, "monthly_usd": 4_000}},
                "tags": {"team-01": {"monthly_usd": 300}, "team-02": {"daily_usd": 20}},
            },
        },
        source="bench",
    )


def fake_rows(n: int, days: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """n rows over the last ``days`` days (UTC), oldest first, in ROW_COLUMNS order."""
    rnd = random.Random(seed)
    pairs = [(p, m) for p, ms in PROVIDERS.items() for m in ms]
    today = datetime.now(UTC).date()
    first = datetime.combine(today - timedelta(days=days - 1), datetime.min.time(), UTC)
    span = days * 86_400_000
    for i in range(n):
        ts = first + timedelta(milliseconds=span * i // n)
        provider, model = pairs[rnd.randrange(len(pairs))]
        status = "ok" if rnd.random() > 0.03 else "error"
        tin, tout = (rnd.randrange(50, 4_000), rnd.randrange(10, 1_000)) if status == "ok" else (0, 0)
        cost = (tin * 1_000 + tout * 5_000) if provider != "local" else 0
        row = {
            "id": f"bench-{i:08d}", "ts": ts.isoformat(timespec="milliseconds"), "day": ts.date().isoformat(),
            "status": status, "tag": rnd.choice(TAGS), "task_type": rnd.choice(TASK_TYPES),
            "provider": provider, "model": model, "input_tokens": tin, "output_tokens": tout,
            "cached_tokens": 0, "cache_write_tokens": 0, "cost_nusd": cost, "cost_usd": str(cost / 1e9),
            "cost_estimated": 0, "prices": None, "reference_cost_nusd": cost * 3, "latency_ms": rnd.randrange(200, 9_000),
            "attempts": "[]", "error_code": None if status == "ok" else "server_error", "error": None,
            "prompt_hash": None, "prompt": None, "strategy": "balanced",
        }
        yield tuple(row[c] for c in ROW_COLUMNS)


def batches(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for r in rows:
        batch.append(r)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def build(ledger: LedgerBase, n: int, days: int) -> None:
    """Bulk-insert the rows in one transaction, then derive every rollup from them."""
    from llm_router.ledger import Ledger

    if isinstance(ledger, Ledger):
        from llm_router.ledger.sqlite import _REFILE_ROLLUPS

        insert = f"INSERT INTO requests ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
        with ledger._tx() as c:
            for batch in batches(fake_rows(n, days)):
                c.executemany(insert, batch)
            c.execute("DELETE FROM rollups")
            c.execute(_REFILE_ROLLUPS)
            c.execute("DELETE FROM day_totals")
            c.execute(DAY_TOTALS_FROM_ROLLUPS)
        with ledger._lock:
            ledger._conn.execute("ANALYZE")
            ledger._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    from llm_router.ledger.postgres import _REFILE_ROLLUPS as PG_REFILE

    def load(c: Any) -> None:
        c.execute("TRUNCATE requests, rollups, day_totals")
        with c.cursor().copy(f"COPY requests ({', '.join(ROW_COLUMNS)}) FROM STDIN") as copy:
            for row in fake_rows(n, days):
                copy.write_row(row)
        c.execute(PG_REFILE)
        c.execute(DAY_TOTALS_FROM_ROLLUPS)

    ledger._call(load, tx=True)  # type: ignore[attr-defined]
    with ledger._lock:  # type: ignore[attr-defined]
        ledger._connection().execute("VACUUM ANALYZE requests")  # type: ignore[attr-defined]
        ledger._connection().execute("VACUUM ANALYZE rollups")  # type: ignore[attr-defined]
        ledger._connection().execute("VACUUM ANALYZE day_totals")  # type: ignore[attr-defined]


def check_consistent(ledger: LedgerBase) -> tuple[int, int, int]:
    """(rows, rollup rows, day-total rows), once rollups and day totals are checked against the rows."""
    raw = ledger.totals()
    sums = ledger.query("SELECT sum(requests) AS n, sum(cost_nusd) AS cost, count(*) AS k FROM rollups")[0]
    assert (int(sums["n"]), int(sums["cost"])) == (raw["requests"], raw["cost_nusd"]), "rollups differ from rows"
    for dim in DIMENSIONS:
        t = ledger.query("SELECT sum(requests) AS n, sum(cost_nusd) AS cost FROM day_totals WHERE dim = ?", [dim])[0]
        assert (int(t["n"]), int(t["cost"])) == (raw["requests"], raw["cost_nusd"]), f"day totals by {dim} differ"
    totals = ledger.query("SELECT count(*) AS k FROM day_totals")[0]["k"]
    return raw["requests"], int(sums["k"]), int(totals)


async def time_reports(engine: Engine, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for group in GROUPINGS:
        await engine.cost_report(period="this_month", group_by=group)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            report = await engine.cost_report(period="this_month", group_by=group)
            times.append(time.perf_counter() - t0)
        assert report.totals["requests"] > 0
        out[group] = times
    # A filter needs the full rollups (every dimension at once), not the day totals.
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await engine.cost_report(period="this_month", group_by="model", tag="team-01")
        times.append(time.perf_counter() - t0)
    out["model, tag=team-01"] = times
    return out


def time_raw(ledger: LedgerBase, runs: int) -> list[float]:
    """The provider totals of this month from the raw rows, as a report without rollups would be."""
    today = datetime.now(UTC).date()
    first = today.replace(day=1).isoformat()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ledger.query(
            "SELECT provider, count(*), sum(cost_nusd) FROM requests WHERE day BETWEEN ? AND ? GROUP BY provider",
            [first, today.isoformat()],
        )
        times.append(time.perf_counter() - t0)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--url", help="a scratch PostgreSQL database instead of a SQLite file")
    parser.add_argument("--keep", type=Path, help="build the SQLite ledger here and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "ledger.db"
        target = {"url": args.url} if args.url else {"path": str(path)}
        cfg = settings(target)
        ledger = open_ledger(cfg, upkeep=False)
        if args.url:
            from llm_router.ledger.postgres import PostgresLedger

            assert isinstance(ledger, PostgresLedger)
        t0 = time.perf_counter()
        build(ledger, args.rows, args.days)
        built = time.perf_counter() - t0
        rows, rollups, totals = check_consistent(ledger)
        engine = Engine(cfg, ledger=ledger, providers={})
        try:
            report_times = anyio.run(time_reports, engine, args.runs)
            raw_times = time_raw(ledger, max(3, args.runs // 3))
        finally:
            anyio.run(engine.aclose)
        size = "" if args.url else f", file {path.stat().st_size / 2**20:.0f} MiB"
        month_days = datetime.now(UTC).date().day

    backend = "PostgreSQL" if args.url else "SQLite"
    print(f"{backend} ledger: {rows:,} rows over {args.days} days, {rollups:,} rollup rows, {totals:,} day totals{size}; built and "
          f"checked in {built:.1f} s")
    print(f"cost_report period=this_month ({month_days} days so far), {args.runs} runs each "
          f"(whole call: rollup query, every limit's spend, month-to-date projection):")
    print(f"  {'group_by':<20} {'median':>11} {'worst':>11}")
    for group, times in report_times.items():
        print(f"  {group:<20} {ms(statistics.median(times))} {ms(max(times))}")
    print(f"for scale, provider totals of the month summed from the raw rows: median {ms(statistics.median(raw_times))}")
    print(f"built on {date.today().isoformat()}, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
