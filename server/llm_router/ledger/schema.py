"""The ledger's schema: one history of append-only numbered migrations, for both backends.

Each migration is a function of the backend's dialect that returns its statements (tables and
indexes given as data in ``ddl.py``, the few spellings that differ taken from ``dialect.py``), so
the SQLite and PostgreSQL DDL come from the one text. ``MIGRATIONS`` is the history rendered for
SQLite, ``pg_session.MIGRATIONS`` for PostgreSQL; each backend runs the ones a ledger has not seen
and records their names in its ``_migrations`` table, as the builds before did (their names are
these), and is safe to run on every open. Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .ddl import Column, Table, add_column, create_index, create_table, drop_index, index_name, integer, real, text
from .dialect import SQLITE, Dialect
from .statements import DAY_TOTALS_FROM_ROLLUPS, REFILE_ESTIMATED

if TYPE_CHECKING:
    import sqlite_utils

__all__ = [
    "HISTORY", "LEDGER_ID_KEY", "MIGRATIONS", "MIGRATIONS_TABLE", "WRITER_SCHEMA_KEY", "Statements", "migrate",
    "migrate_connection", "render",
]

Statements = tuple[str, ...]
Step = Callable[[Dialect], list[str]]
HISTORY: list[tuple[str, Step]] = []


def _migration(fn: Step) -> Step:
    HISTORY.append((f"{len(HISTORY) + 1:03d}_{fn.__name__}", fn))
    return fn


def render(dialect: Dialect, history: Sequence[tuple[str, Step]] = HISTORY) -> list[tuple[str, Statements]]:
    """The history as one backend runs it: each migration's name and its statements."""
    return [(name, tuple(step(dialect))) for name, step in history]


MIGRATIONS_TABLE = Table("_migrations", (text("name"), text("applied_at")), key=("name",))
"""Where a ledger records the migrations applied to it, by name."""


def _sums(*names: str) -> tuple[Column, ...]:
    return tuple(integer(n) for n in names)


_ROLLUP_KEY = tuple(text(n, not_null=True) for n in ("day", "provider", "model", "tag", "task_type"))
_ROLLUP_SUMS = _sums(
    "requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost_nusd", "reference_cost_nusd",
)

REQUESTS = Table("requests", (
    text("id", not_null=True),
    text("ts", not_null=True),  # UTC, ISO 8601 with milliseconds
    text("day", not_null=True),  # the local day (budget time zone) the call belongs to
    text("tag", default="''"),
    text("task_type", default="''"),
    text("provider"),
    text("model"),
    text("status", not_null=True),  # ok | error | cancelled | refused
    integer("input_tokens"),
    integer("output_tokens"),
    integer("cached_tokens"),
    integer("cache_write_tokens"),
    integer("cost_nusd", default="0"),
    text("cost_usd"),  # the same figure as an exact decimal, for people reading the file
    integer("cost_estimated", default="0"),  # 1 when the provider reported no usage and we estimated
    text("prices"),  # JSON: the prices in force for this call, and their source
    integer("reference_cost_nusd"),  # what the reference model would have cost for this usage
    integer("latency_ms"),
    text("attempts"),  # JSON list: every model tried, with its outcome
    text("error_code"),
    text("error"),
    text("prompt_hash"),
    text("prompt"),  # only when store_prompts = true
    text("strategy"),
), key=("id",))

_HELD = (
    text("id", not_null=True),
    text("request_id"),
    real("created_at"),  # seconds since the epoch, by the server's clock
    real("expires_at"),
    text("host"),
    integer("pid"),
    text("day", not_null=True),
    text("provider", not_null=True),
    text("tag", not_null=True),
    integer("amount_nusd", not_null=True),
)
_LEASE = (text("owner"), real("hard_expires_at"))
RESERVATIONS_FIRST = Table("reservations", _HELD, key=("id",))
RESERVATIONS = Table("reservations", _HELD + _LEASE, key=("id",), without_rowid=True)


@_migration
def create_requests(d: Dialect) -> list[str]:
    """One row per ``complete`` call, whatever its outcome. Money in integer nano-dollars."""
    return [create_table(REQUESTS, d), create_index("requests", "ts"), create_index("requests", "day")]


@_migration
def create_rollups(d: Dialect) -> list[str]:
    """Per-day sums kept in step with ``requests`` in the same transaction: budget checks and
    reports read these, so they stay fast at millions of rows. ``requests`` remains the truth."""
    rollups = Table("rollups", _ROLLUP_KEY + _ROLLUP_SUMS, key=tuple(c.name for c in _ROLLUP_KEY))
    return [create_table(rollups, d), create_index("rollups", "tag", "day"), create_index("rollups", "provider", "day")]


@_migration
def create_reservations(d: Dialect) -> list[str]:
    """Money held by calls in flight. Deleted on settle or release; reclaimed when expired or
    when the process that made it is gone."""
    return [
        create_table(RESERVATIONS_FIRST, d), create_index("reservations", "day"),
        create_index("reservations", "expires_at"),
    ]


@_migration
def create_budgets(d: Dialect) -> list[str]:
    """Limits set with ``set_budget``. They override the config; a NULL limit removes one."""
    budgets = Table("budgets", (
        text("scope", not_null=True), text("period", not_null=True), integer("limit_nusd"), text("updated_at"),
    ), key=("scope", "period"))
    return [create_table(budgets, d)]


@_migration
def create_events(d: Dialect) -> list[str]:
    """Things the ledger itself did that an operator should be able to see (reclaims, prunes, rebuilds)."""
    events = Table("events", (Column("id", "serial"), text("ts"), text("kind"), text("detail")), key=("id",))
    meta = Table("meta", (text("key"), text("value")), key=("key",))
    return [create_table(events, d), create_table(meta, d)]


@_migration
def lease_reservations(d: Dialect) -> list[str]:
    """Reservations become leases: ``owner`` (the open ledger that renews them) and
    ``hard_expires_at`` (the call's own time-to-live, past which no renewal extends them)."""
    return [*(add_column("reservations", c, d) for c in _LEASE), create_index("reservations", "owner")]


@_migration
def create_day_totals(d: Dialect) -> list[str]:
    """Per-day sums by one dimension at a time (``dim`` = day, provider, model, task_type or tag,
    ``key`` its value), kept in step with ``rollups`` in the same transaction: a month's report or
    budget check reads a few hundred of these instead of tens of thousands of rollups."""
    key = (text("dim", not_null=True), text("key", not_null=True), text("day", not_null=True))
    return [create_table(Table("day_totals", key + _ROLLUP_SUMS, key=("dim", "key", "day")), d),
            DAY_TOTALS_FROM_ROLLUPS]


@_migration
def lean_reservations(d: Dialect) -> list[str]:
    """``reservations`` holds only the calls in flight (a handful of rows), and every call inserts
    and deletes one: secondary indexes there cost page writes on the hot path and save nothing
    over scanning so few rows."""
    return [drop_index(index_name("reservations", (c,))) for c in ("day", "expires_at", "owner")]


@_migration
def reservations_without_rowid(d: Dialect) -> list[str]:
    """Keyed by id alone: a rowid table kept its rows and their id index in two B-trees, so each
    hold taken and each hold released wrote two pages to the WAL instead of one. Same columns,
    same rows. PostgreSQL tables have no rowid, and the primary key is already the only index:
    nothing to change there; the number keeps both in step."""
    if not d.without_rowid:
        return []
    listed = ", ".join(f'"{c.name}"' for c in RESERVATIONS.columns)
    return [
        create_table(RESERVATIONS.with_name("reservations_new"), d),
        f'INSERT INTO "reservations_new" ({listed}) SELECT {listed} FROM "reservations"',
        'DROP TABLE "reservations"',
        'ALTER TABLE "reservations_new" RENAME TO "reservations"',
    ]


@_migration
def create_estimated_rollups(d: Dialect) -> list[str]:
    """Per-day sums of the calls whose usage was estimated (the provider reported none), by the
    same keys as ``rollups``: a report says how much of a period's spend is an estimate without
    reading rows. Written only for such calls, so most days have no row here at all. Filled from
    the rows already recorded."""
    estimated = Table("estimated_rollups", _ROLLUP_KEY + _sums("requests", "cost_nusd"),
                      key=tuple(c.name for c in _ROLLUP_KEY))
    return [create_table(estimated, d), REFILE_ESTIMATED]


WRITER_SCHEMA_KEY = "writer_schema"
RAISE_WRITER_SCHEMA = (
    "INSERT INTO meta (key, value) VALUES ('writer_schema', '{n}') ON CONFLICT (key) DO UPDATE SET value = "
    "CASE WHEN CAST(meta.value AS INTEGER) < {n} THEN excluded.value ELSE meta.value END"
)
"""Raise (never lower) the writer schema the ledger records; the same statement on both backends."""


@_migration
def record_writer_schema(d: Dialect) -> list[str]:
    """The version of what writers must maintain, in ``meta``: 2 since ``estimated_rollups`` (a
    writer that does not keep it in step would hide estimated spend). A build refuses a ledger
    whose version is above its own, so an older server can never write rows a newer one cannot
    see. A later migration that changes what writers must keep raises it the same way."""
    return [RAISE_WRITER_SCHEMA.format(n=2)]


@_migration
def writers_keep_limits_version_and_journal(d: Dialect) -> list[str]:
    """Writer schema 3: every ``set_budget`` raises ``limits_version`` and every reservation checks
    it (a lowered limit holds from the moment it returns), and every write transaction first
    replays the journal of answered calls whose rows could not be written. A build of schema 2 did
    neither: opening such a ledger, it granted calls under a limit another server had just lowered
    and never wrote the journal's spend. Raised, so such builds refuse this ledger."""
    return [RAISE_WRITER_SCHEMA.format(n=3)]


LEDGER_ID_KEY = "ledger_id"


@_migration
def name_the_ledger(d: Dialect) -> list[str]:
    """A random id for this ledger in ``meta``, read by the way with the limits version: a server
    notices when another ledger was copied over its file in place (same device and inode), and a
    PostgreSQL ledger is what the database says it is, whatever URL reached it."""
    return [f"INSERT INTO meta (key, value) VALUES ('ledger_id', {d.random_id}) ON CONFLICT (key) DO NOTHING"]


RATINGS = Table("ratings", (
    text("request_id", not_null=True),
    text("source", not_null=True),  # caller | judge
    text("ts", not_null=True),  # UTC, ISO 8601 with milliseconds
    text("tag", not_null=True, default="''"),
    text("model", not_null=True),  # the ref that answered (provider:model)
    text("task_type", not_null=True, default="''"),
    Column("score", "real", not_null=True),  # 1 to 5
    text("comment"),
    text("criteria"),  # JSON: the judge's scores by criterion
    text("rater", not_null=True, default="''"),  # the judge model's ref; empty for the caller
), key=("request_id", "source"))


@_migration
def create_ratings(d: Dialect) -> list[str]:
    """Scores of answered requests, at most one per request and source (the caller's ``rate``, the
    judge): what quality estimates are made from. Each copies the tag, model and task type it needs,
    so no join with ``requests`` and no prune of its rows loses one; pruning never deletes these.
    Ratings are not spend: writers that do not keep them miss no budget, so the writer schema stays."""
    return [create_table(RATINGS, d), create_index("ratings", "ts")]


MIGRATIONS: list[tuple[str, Statements]] = render(SQLITE)
"""The history as the SQLite ledger runs it."""


def _pending(
    conn: sqlite3.Connection, migrations: Sequence[tuple[str, Statements]] | None,
) -> list[tuple[str, Statements]]:
    has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone()
    done = {r[0] for r in conn.execute("SELECT name FROM _migrations")} if has_table else set()
    return [(name, sql) for name, sql in (MIGRATIONS if migrations is None else migrations) if name not in done]


def migrate_connection(
    conn: sqlite3.Connection, migrations: Sequence[tuple[str, Statements]] | None = None,
) -> list[str]:
    """Apply what is missing of ``migrations`` (``MIGRATIONS`` when not given, as it is when
    called); return the names applied now. Nothing is written when nothing is missing.

    All in one ``BEGIN IMMEDIATE`` transaction, re-checked once the write lock is held: several
    processes may open a new ledger at the same moment, and only one of them must migrate it.
    """
    if not _pending(conn, migrations):
        return []
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone() is None:
            conn.execute(create_table(MIGRATIONS_TABLE, SQLITE))
        applied: list[str] = []
        for name, statements in _pending(conn, migrations):
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, datetime.now(UTC).isoformat()))
            applied.append(name)
    except BaseException:
        if own:
            conn.execute("ROLLBACK")
        raise
    if own:
        conn.execute("COMMIT")
    return applied


def migrate(db: sqlite_utils.Database, migrations: Sequence[tuple[str, Statements]] | None = None) -> list[str]:
    """``migrate_connection`` for a ``sqlite_utils.Database`` (tools, tests)."""
    return migrate_connection(db.conn, migrations)
