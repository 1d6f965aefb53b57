"""The SQLite ledger's migrations as the builds before one schema history wrote them (sqlite-utils
steps), frozen here so that tests can build the ledgers those builds left at any step. Never used by
the server; never edit: it is what users' files were made by. The PostgreSQL builds' steps are the
``.sql`` files beside this module."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

DAY_TOTALS_FROM_ROLLUPS = "INSERT INTO day_totals (dim, key, day, requests, errors, input_tokens, output_tokens, cached_tokens, cost_nusd, reference_cost_nusd)\nSELECT 'day', day, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY day\nUNION ALL SELECT 'provider', provider, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY provider, day\nUNION ALL SELECT 'model', model, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY model, day\nUNION ALL SELECT 'task_type', task_type, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY task_type, day\nUNION ALL SELECT 'tag', tag, day, sum(requests), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_nusd), sum(reference_cost_nusd) FROM rollups GROUP BY tag, day"
REFILE_ESTIMATED = "INSERT INTO estimated_rollups (day, provider, model, tag, task_type, requests, cost_nusd) SELECT day, coalesce(provider, ''), coalesce(model, ''), tag, task_type, count(*), sum(cost_nusd) FROM requests WHERE cost_estimated = 1 GROUP BY day, coalesce(provider, ''), coalesce(model, ''), tag, task_type ON CONFLICT (day, provider, model, tag, task_type) DO UPDATE SET requests = estimated_rollups.requests + excluded.requests, cost_nusd = estimated_rollups.cost_nusd + excluded.cost_nusd"

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["MIGRATIONS"]

Migration = Callable[["sqlite_utils.Database"], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def _migration(fn: Migration) -> Migration:
    MIGRATIONS.append((f"{len(MIGRATIONS) + 1:03d}_{fn.__name__}", fn))
    return fn


@_migration
def create_requests(db: sqlite_utils.Database) -> None:
    """One row per ``complete`` call, whatever its outcome. Money in integer nano-dollars."""
    db.table("requests").create(
        {
            "id": str,
            "ts": str,  # UTC, ISO 8601 with milliseconds
            "day": str,  # the local day (budget time zone) the call belongs to
            "tag": str,
            "task_type": str,
            "provider": str,
            "model": str,
            "status": str,  # ok | error | cancelled | refused
            "input_tokens": int,
            "output_tokens": int,
            "cached_tokens": int,
            "cache_write_tokens": int,
            "cost_nusd": int,
            "cost_usd": str,  # the same figure as an exact decimal, for people reading the file
            "cost_estimated": int,  # 1 when the provider reported no usage and we estimated
            "prices": str,  # JSON: the prices in force for this call, and their source
            "reference_cost_nusd": int,  # what the reference model would have cost for this usage
            "latency_ms": int,
            "attempts": str,  # JSON list: every model tried, with its outcome
            "error_code": str,
            "error": str,
            "prompt_hash": str,
            "prompt": str,  # only when store_prompts = true
            "strategy": str,
        },
        pk="id",
        not_null={"id", "ts", "day", "status"},
        defaults={"tag": "", "task_type": "", "cost_nusd": 0, "cost_estimated": 0},
    )
    db.table("requests").create_index(["ts"])
    db.table("requests").create_index(["day"])


@_migration
def create_rollups(db: sqlite_utils.Database) -> None:
    """Per-day sums kept in step with ``requests`` in the same transaction: budget checks and
    reports read these, so they stay fast at millions of rows. ``requests`` remains the truth."""
    db.table("rollups").create(
        {
            "day": str,
            "provider": str,
            "model": str,
            "tag": str,
            "task_type": str,
            "requests": int,
            "errors": int,
            "input_tokens": int,
            "output_tokens": int,
            "cached_tokens": int,
            "cost_nusd": int,
            "reference_cost_nusd": int,
        },
        pk=("day", "provider", "model", "tag", "task_type"),
        not_null={"day", "provider", "model", "tag", "task_type"},
    )
    db.table("rollups").create_index(["tag", "day"])
    db.table("rollups").create_index(["provider", "day"])


@_migration
def create_reservations(db: sqlite_utils.Database) -> None:
    """Money held by calls in flight. Deleted on settle or release; reclaimed when expired or
    when the process that made it is gone."""
    db.table("reservations").create(
        {
            "id": str,
            "request_id": str,
            "created_at": float,
            "expires_at": float,
            "host": str,
            "pid": int,
            "day": str,
            "provider": str,
            "tag": str,
            "amount_nusd": int,
        },
        pk="id",
        not_null={"id", "day", "provider", "tag", "amount_nusd"},
    )
    db.table("reservations").create_index(["day"])
    db.table("reservations").create_index(["expires_at"])


@_migration
def create_budgets(db: sqlite_utils.Database) -> None:
    """Limits set with ``set_budget``. They override the config; a NULL limit removes one."""
    db.table("budgets").create(
        {"scope": str, "period": str, "limit_nusd": int, "updated_at": str},
        pk=("scope", "period"),
        not_null={"scope", "period"},
    )


@_migration
def create_events(db: sqlite_utils.Database) -> None:
    """Things the ledger itself did that an operator should be able to see (reclaims, rebuilds)."""
    db.table("events").create({"id": int, "ts": str, "kind": str, "detail": str}, pk="id")
    db.table("meta").create({"key": str, "value": str}, pk="key")


@_migration
def lease_reservations(db: sqlite_utils.Database) -> None:
    """Reservations become leases: ``owner`` (the open ledger that renews them) and
    ``hard_expires_at`` (the call's own time-to-live, past which no renewal extends them)."""
    db.table("reservations").add_column("owner", str)
    db.table("reservations").add_column("hard_expires_at", float)
    db.table("reservations").create_index(["owner"])


@_migration
def create_day_totals(db: sqlite_utils.Database) -> None:
    """Per-day sums by one dimension at a time (``dim`` = day, provider, model, task_type or tag,
    ``key`` its value), kept in step with ``rollups`` in the same transaction: a month's report or
    budget check reads a few hundred of these instead of tens of thousands of rollups."""
    db.table("day_totals").create(
        {
            "dim": str,
            "key": str,
            "day": str,
            "requests": int,
            "errors": int,
            "input_tokens": int,
            "output_tokens": int,
            "cached_tokens": int,
            "cost_nusd": int,
            "reference_cost_nusd": int,
        },
        pk=("dim", "key", "day"),
        not_null={"dim", "key", "day"},
    )
    db.execute(DAY_TOTALS_FROM_ROLLUPS)




@_migration
def lean_reservations(db: sqlite_utils.Database) -> None:
    """``reservations`` holds only the calls in flight (a handful of rows), and every call inserts
    and deletes one: secondary indexes there cost page writes on the hot path and save nothing
    over scanning so few rows."""
    for name in ("idx_reservations_day", "idx_reservations_expires_at", "idx_reservations_owner"):
        db.execute(f'DROP INDEX IF EXISTS "{name}"')


@_migration
def reservations_without_rowid(db: sqlite_utils.Database) -> None:
    """Keyed by id alone: a rowid table kept its rows and their id index in two B-trees, so each
    hold taken and each hold released wrote two pages to the WAL instead of one. Same columns,
    same rows."""
    cols = [r[1] for r in db.execute('PRAGMA table_info("reservations")').fetchall()]
    db.execute(
        'CREATE TABLE "reservations_new" (\n'
        '   "id" TEXT PRIMARY KEY NOT NULL,\n'
        '   "request_id" TEXT,\n'
        '   "created_at" REAL,\n'
        '   "expires_at" REAL,\n'
        '   "host" TEXT,\n'
        '   "pid" INTEGER,\n'
        '   "day" TEXT NOT NULL,\n'
        '   "provider" TEXT NOT NULL,\n'
        '   "tag" TEXT NOT NULL,\n'
        '   "amount_nusd" INTEGER NOT NULL,\n'
        '   "owner" TEXT,\n'
        '   "hard_expires_at" REAL\n'
        ") WITHOUT ROWID"
    )
    listed = ", ".join(f'"{c}"' for c in cols)
    db.execute(f'INSERT INTO "reservations_new" ({listed}) SELECT {listed} FROM "reservations"')
    db.execute('DROP TABLE "reservations"')
    db.execute('ALTER TABLE "reservations_new" RENAME TO "reservations"')


@_migration
def create_estimated_rollups(db: sqlite_utils.Database) -> None:
    """Per-day sums of the calls whose usage was estimated (the provider reported none), by the
    same keys as ``rollups``: a report says how much of a period's spend is an estimate without
    reading rows. Written only for such calls, so most days have no row here at all. Filled from
    the rows already recorded."""
    db.table("estimated_rollups").create(
        {"day": str, "provider": str, "model": str, "tag": str, "task_type": str, "requests": int, "cost_nusd": int},
        pk=("day", "provider", "model", "tag", "task_type"),
        not_null={"day", "provider", "model", "tag", "task_type"},
    )
    db.execute(REFILE_ESTIMATED)






WRITER_SCHEMA_KEY = "writer_schema"
RAISE_WRITER_SCHEMA = (
    "INSERT INTO meta (key, value) VALUES ('writer_schema', '{n}') ON CONFLICT (key) DO UPDATE SET value = "
    "CASE WHEN CAST(meta.value AS INTEGER) < {n} THEN excluded.value ELSE meta.value END"
)
"""Raise (never lower) the writer schema the ledger records; the same statement on both backends."""


@_migration
def record_writer_schema(db: sqlite_utils.Database) -> None:
    """The version of what writers must maintain, in ``meta``: 2 since ``estimated_rollups`` (a
    writer that does not keep it in step would hide estimated spend). A build refuses a ledger
    whose version is above its own, so an older server can never write rows a newer one cannot
    see. A later migration that changes what writers must keep raises it the same way."""
    db.execute(RAISE_WRITER_SCHEMA.format(n=2))


@_migration
def writers_keep_limits_version_and_journal(db: sqlite_utils.Database) -> None:
    """Writer schema 3: every ``set_budget`` raises ``limits_version`` and every reservation checks
    it (a lowered limit holds from the moment it returns), and every write transaction first
    replays the journal of answered calls whose rows could not be written. A build of schema 2 did
    neither: opening such a ledger, it granted calls under a limit another server had just lowered
    and never wrote the journal's spend. Raised, so such builds refuse this ledger."""
    db.execute(RAISE_WRITER_SCHEMA.format(n=3))


LEDGER_ID_KEY = "ledger_id"


@_migration
def name_the_ledger(db: sqlite_utils.Database) -> None:
    """A random id for this ledger in ``meta``, read by the way with the limits version: a server
    notices when another ledger was copied over its file in place (same device and inode)."""
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('ledger_id', lower(hex(randomblob(16)))) ON CONFLICT (key) DO NOTHING"
    )
