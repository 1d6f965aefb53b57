"""Rows, checks and sums for the ledger's tests (the fixtures ``ledger``, ``ledger_file`` and
``sqlite_ledger`` are in ``backends.py``)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import sqlite_utils

from llm_router.ledger import LedgerBase, LimitCheck, Refusal, RequestRow
from llm_router.ledger import base as ledger_base

DAY = "2025-03-14"
MIGRATION_NAMES = [
    "001_create_requests",
    "002_create_rollups",
    "003_create_reservations",
    "004_create_budgets",
    "005_create_events",
    "006_lease_reservations",
    "007_create_day_totals",
    "008_lean_reservations",
    "009_reservations_without_rowid",
    "010_create_estimated_rollups",
    "011_record_writer_schema",
    "012_writers_keep_limits_version_and_journal",
    "013_name_the_ledger",
    "014_create_ratings",
]
TABLES = ["_migrations", "budgets", "day_totals", "estimated_rollups", "events", "meta", "ratings", "requests",
          "reservations", "rollups"]


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


def reserve(led: LedgerBase, checks: list[LimitCheck], amount: int, **kw: Any) -> str | Refusal:
    args: dict[str, Any] = {"request_id": "r", "day": DAY, "provider": "anthropic", "tag": "", "ttl_s": 900}
    return led.reserve(checks, amount, **(args | kw))


def rollup_table(led: LedgerBase) -> list[dict[str, Any]]:
    return led.query("SELECT * FROM rollups ORDER BY day, provider, model, tag, task_type")


def rollups_from_rows(led: LedgerBase) -> list[dict[str, Any]]:
    """What the rollups must say, computed here independently from the raw rows."""
    sums: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for r in led.query("SELECT * FROM requests"):
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


def day_totals(led: LedgerBase) -> list[dict[str, Any]]:
    return led.query("SELECT * FROM day_totals ORDER BY dim, key, day")


def day_totals_from(rollups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the day totals must say, computed here from rollup rows."""
    sums: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rollups:
        for dim in ledger_base.DIMENSIONS:
            key = (dim, r[dim] if dim != "day" else r["day"], r["day"])
            s = sums.setdefault(key, {"dim": key[0], "key": key[1], "day": key[2]}
                                | dict.fromkeys(ledger_base.SUM_COLUMNS, 0))
            for col in ledger_base.SUM_COLUMNS:
                s[col] += r[col]
    return [sums[k] for k in sorted(sums)]


def assert_in_step(led: LedgerBase) -> None:
    """Rollups are the rows' sums, and day totals the rollups' sums."""
    assert rollup_table(led) == rollups_from_rows(led)
    assert day_totals(led) == day_totals_from(rollup_table(led))


def sqlite_columns(db_path: Path, table: str) -> list[tuple[str, str]]:
    db = sqlite_utils.Database(db_path)
    try:
        return [(c.name, c.type) for c in db[table].columns]
    finally:
        db.close()
