"""ledger/: the ledger's schema: migrations on both backends, from a blank ledger and from earlier
ones. Each runs against both backends where both apply (``backends.py``); rows and checks come from
``ledger_rows.py``."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from llm_router.ledger import Ledger, LedgerBase, pg_session, schema
from llm_router.ledger import base as ledger_base
from llm_router.ledger.ddl import create_table
from llm_router.ledger.schema import MIGRATIONS, migrate

from .backends import Store, columns, execute, tables, with_search_path
from .ledger_before import sqlite_steps as before_sqlite
from .ledger_rows import (
    DAY,
    MIGRATION_NAMES,
    TABLES,
    daily,
    day_totals,
    day_totals_from,
    reserve,
    rollup_table,
    row,
    sqlite_columns,
)

# -- migrations ---------------------------------------------------------------------------------

REQUEST_COLUMNS = [
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
RESERVATION_COLUMNS = [
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
    "owner",
    "hard_expires_at",
]


def test_blank_database_is_migrated_to_the_ledger_of_the_design(ledger: LedgerBase) -> None:
    assert ledger.migrations_applied == MIGRATION_NAMES
    assert tables(ledger) == TABLES
    assert columns(ledger, "requests") == [name for name, _ in REQUEST_COLUMNS]
    assert columns(ledger, "reservations") == RESERVATION_COLUMNS
    assert columns(ledger, "budgets") == ["scope", "period", "limit_nusd", "updated_at"]
    assert columns(ledger, "rollups") == [
        "day", "provider", "model", "tag", "task_type", *ledger_base.SUM_COLUMNS,
    ]
    assert columns(ledger, "events") == ["id", "ts", "kind", "detail"]


def test_sqlite_columns_have_the_types_of_the_design(sqlite_ledger: Ledger, ledger_file: Path) -> None:
    assert sqlite_columns(ledger_file, "requests") == REQUEST_COLUMNS


def test_both_backends_have_the_same_migrations() -> None:
    from llm_router.ledger.postgres import MIGRATIONS as PG_MIGRATIONS

    assert [name for name, _ in PG_MIGRATIONS] == [name for name, _ in MIGRATIONS] == MIGRATION_NAMES


def test_ledger_file_is_in_wal_mode_and_readable_by_plain_sqlite(sqlite_ledger: Ledger, ledger_file: Path) -> None:
    import sqlite3

    sqlite_ledger.record(row())

    conn = sqlite3.connect(ledger_file)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (1,)
    finally:
        conn.close()


def test_migrating_twice_is_a_no_op(store: Store) -> None:
    store.open().close()

    again = store.open()
    try:
        before = columns(again, "requests")
        assert again.migrations_applied == []
        assert [r["name"] for r in again.query("SELECT name FROM _migrations ORDER BY name")] == MIGRATION_NAMES
        if isinstance(again, Ledger):
            assert migrate(again.db) == []
        assert columns(again, "requests") == before
    finally:
        again.close()


def test_database_with_only_the_first_migration_is_brought_up_to_date(ledger_file: Path) -> None:
    old = sqlite_utils.Database(ledger_file)
    old["_migrations"].create({"name": str, "applied_at": str}, pk="name")
    for name, fn in before_sqlite.MIGRATIONS[:1]:
        fn(old)
        old["_migrations"].insert({"name": name, "applied_at": "2025-01-01T00:00:00+00:00"})
    old["requests"].insert(
        {"id": "old-1", "ts": f"{DAY}T00:00:00+00:00", "day": DAY, "status": "ok", "cost_nusd": 7}
    )
    old.close()

    _assert_brought_up_to_date_keeping_its_row(Ledger(ledger_file))


@pytest.mark.postgres
def test_postgres_schema_with_only_the_first_migration_is_brought_up_to_date(pg_url: str) -> None:
    import psycopg

    from llm_router.ledger import postgres

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE _migrations (name text PRIMARY KEY, applied_at text)")
        name, sql = BEFORE_PG_STEPS[0]
        conn.execute(sql.encode())
        conn.execute("INSERT INTO _migrations VALUES (%s, '2025-01-01T00:00:00+00:00')", (name,))
        conn.execute("INSERT INTO requests (id, ts, day, status, cost_nusd) VALUES ('old-1', %s, %s, 'ok', 7)",
                     (f"{DAY}T00:00:00+00:00", DAY))

    _assert_brought_up_to_date_keeping_its_row(postgres.PostgresLedger(pg_url))


def _assert_brought_up_to_date_keeping_its_row(led: LedgerBase) -> None:
    """``led`` opened on a ledger left after the first migration, with one row of $7 (then closed)."""
    try:
        assert led.migrations_applied == MIGRATION_NAMES[1:]
        assert tables(led) == TABLES
        assert led.totals() == {"requests": 1, "cost_nusd": 7, "input_tokens": 0, "output_tokens": 0}
    finally:
        led.close()


def test_day_totals_of_an_existing_ledger_are_derived_from_its_rollups(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_router.ledger import postgres, schema

    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:6])
        m.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:6])
        old = store.open()
        for i, (day, provider, tag) in enumerate([(DAY, "a", "x"), (DAY, "b", "x"), ("2025-03-15", "a", "")]):
            execute(old, "INSERT INTO rollups VALUES (?, ?, 'm', ?, '', 2, 1, 10, 5, 0, ?, 0)",
                    [day, provider, tag, 1_000 * (i + 1)])
        old.close()

    led = store.open()
    try:
        assert led.migrations_applied == MIGRATION_NAMES[6:]
        assert day_totals(led) == day_totals_from(rollup_table(led))
        assert led.report(DAY, "2025-03-15", "tag") == [
            {"key": "", "requests": 2, "errors": 1, "input_tokens": 10, "output_tokens": 5, "cached_tokens": 0,
             "cost_nusd": 3_000, "reference_cost_nusd": 0},  # a tie in cost: by key
            {"key": "x", "requests": 4, "errors": 2, "input_tokens": 20, "output_tokens": 10, "cached_tokens": 0,
             "cost_nusd": 3_000, "reference_cost_nusd": 0},
        ]
    finally:
        led.close()


def test_holds_in_flight_survive_the_move_to_a_table_without_rowid(ledger_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server upgraded while another process still holds budget: the holds are kept, whole."""
    from llm_router.ledger import schema

    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:8])
        old = Ledger(ledger_file)
        held = [reserve(old, [daily(1_000)], amount) for amount in (10, 20)]
        before = old.query("SELECT * FROM reservations ORDER BY id")
        old.close()

    led = Ledger(ledger_file)
    try:
        assert led.migrations_applied == MIGRATION_NAMES[8:]
        assert led.query("SELECT * FROM reservations ORDER BY id") == before and len(before) == 2
        assert "WITHOUT ROWID" in led.query("SELECT sql FROM sqlite_master WHERE name = 'reservations'")[0]["sql"]
        assert led.reservations_total() == 30
        for rid in held:
            assert isinstance(rid, str)
            led.release(rid)
        assert led.reservations_total() == 0
    finally:
        led.close()


def test_a_failing_migration_leaves_nothing_half_applied(
    ledger_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = (f"{len(MIGRATIONS) + 1:03d}_broken", ("CREATE TABLE half (x INTEGER)", "SELECT no_such_function()"))
    monkeypatch.setattr("llm_router.ledger.schema.MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(sqlite3.OperationalError, match="no_such_function"):
        Ledger(ledger_file)

    db = sqlite_utils.Database(ledger_file)
    try:
        assert db.table_names() == []
    finally:
        db.close()


@pytest.mark.postgres
def test_a_failing_postgres_migration_leaves_nothing_half_applied(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from llm_router.ledger import postgres

    broken = (f"{len(MIGRATIONS) + 1:03d}_broken", ("CREATE TABLE half (x bigint)", "SELECT no_such_function()"))
    monkeypatch.setattr(postgres, "MIGRATIONS", [*postgres.MIGRATIONS, broken])
    with pytest.raises(psycopg.errors.UndefinedFunction):
        postgres.PostgresLedger(pg_url)

    with psycopg.connect(pg_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchone() == (0,)


def test_several_connections_opening_a_new_ledger_at_once_migrate_it_once(store: Store) -> None:
    """Regression: concurrent first opens (two server processes starting together) failed with
    'table already exists' or 'database is locked'. Threads with their own connections race the
    same way processes do."""
    start = threading.Barrier(6)
    opened: list[LedgerBase] = []
    errors: list[BaseException] = []

    def open_ledger() -> None:
        start.wait(timeout=10)
        try:
            opened.append(store.open())
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


def _shape(led: LedgerBase) -> dict[str, Any]:
    """Each table's columns and the ledger's own indexes (not those behind its keys), by name."""
    if isinstance(led, Ledger):
        indexes = led.query("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        names = [r["name"] for r in indexes]
    else:
        indexes = led.query(
            "SELECT i.indexname AS name FROM pg_indexes i WHERE i.schemaname = current_schema() AND NOT EXISTS"
            " (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.connamespace = current_schema()::regnamespace)"
        )
        names = [r["name"] for r in indexes]
    return {"columns": {t: sorted(columns(led, t)) for t in tables(led)}, "indexes": sorted(names)}


@pytest.mark.postgres
@pytest.mark.parametrize("built_by", ["an earlier build", "this history"])
@pytest.mark.parametrize("steps", range(len(MIGRATION_NAMES)))
def test_a_ledger_migrated_from_any_earlier_step_has_the_same_shape_on_both_backends(
    steps: int, built_by: str, tmp_path: Path, pg_url: str,
) -> None:
    """A ledger left after ``steps`` migrations, by the builds before one schema history or by the
    history itself, ends in the same tables, columns and indexes on SQLite and PostgreSQL, and in
    exactly the schema of a ledger this build makes from a blank one."""
    from llm_router.ledger import postgres

    fresh = _sqlite_schema(_sqlite_made_by("this history", tmp_path / "fresh.db", len(MIGRATION_NAMES)))
    _sqlite_made_by(built_by, tmp_path / "ledger.db", steps)
    _postgres_made_by(built_by, pg_url, steps)

    on_sqlite, on_postgres = Ledger(tmp_path / "ledger.db"), postgres.PostgresLedger(pg_url)
    try:
        assert on_sqlite.migrations_applied == on_postgres.migrations_applied == MIGRATION_NAMES[steps:]
        assert _shape(on_sqlite) == _shape(on_postgres)
        assert _shape(on_sqlite)["columns"]["requests"] == sorted(name for name, _ in REQUEST_COLUMNS)
    finally:
        on_sqlite.close()
        on_postgres.close()
    assert _sqlite_schema(tmp_path / "ledger.db") == fresh


@pytest.mark.parametrize("steps", range(len(before_sqlite.MIGRATIONS) + 1))
def test_each_step_of_the_history_leaves_a_sqlite_ledger_exactly_as_the_earlier_builds_did(
    steps: int, tmp_path: Path,
) -> None:
    """SQLite keeps each ``CREATE`` as written: the same text, table by table and index by index,
    and the same ``meta`` keys, after every step the earlier builds had (so a ledger made today reads
    as one made before; the steps after them were never written but by this history)."""
    before = _sqlite_schema(_sqlite_made_by("an earlier build", tmp_path / "before.db", steps))
    assert _sqlite_schema(_sqlite_made_by("this history", tmp_path / "now.db", steps)) == before


@pytest.mark.postgres
@pytest.mark.parametrize("steps", range(len(before_sqlite.MIGRATIONS) + 1))  # the .sql files: as many
def test_each_step_of_the_history_leaves_a_postgresql_ledger_exactly_as_the_earlier_builds_did(
    steps: int, pg_url: str, pg_server_url: str,
) -> None:
    """Column by column (types, nullability, defaults, identity), index by index and key by key,
    and the same ``meta`` keys, after every step the earlier builds had, as their ``.sql`` files."""
    import psycopg

    other = f"{_current_schema(pg_url)}_now"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{other}"')
    try:
        now_url = with_search_path(pg_server_url, other)
        _postgres_made_by("an earlier build", pg_url, steps)
        _postgres_made_by("this history", now_url, steps)
        assert _postgres_schema(now_url) == _postgres_schema(pg_url)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{other}" CASCADE')


def test_the_history_is_written_once_for_both_backends() -> None:
    """One list of migrations: the SQLite and PostgreSQL steps are its renderings, name for name."""
    assert [name for name, _ in schema.HISTORY] == MIGRATION_NAMES
    assert schema.render(schema.SQLITE) == schema.MIGRATIONS
    assert schema.render(pg_session.POSTGRES) == pg_session.MIGRATIONS


# -- ledgers as the earlier builds and this history leave them ----------------------------------

BEFORE_PG_STEPS = [
    (f.stem, f.read_text(encoding="utf-8"))
    for f in sorted((Path(__file__).parent / "ledger_before" / "pg_migrations").glob("*.sql"))
]
"""The PostgreSQL builds' migrations before one schema history, as shipped."""
APPLIED_AT = "2025-01-01T00:00:00+00:00"


def _sqlite_made_by(built_by: str, path: Path, steps: int) -> Path:
    """A SQLite ledger after its first ``steps`` migrations, applied by the earlier builds'
    sqlite-utils steps or by this history."""
    if built_by == "an earlier build":
        old = sqlite_utils.Database(path)
        old["_migrations"].create({"name": str, "applied_at": str}, pk="name")
        for name, fn in before_sqlite.MIGRATIONS[:steps]:
            fn(old)
            old["_migrations"].insert({"name": name, "applied_at": APPLIED_AT})
        old.close()
        return path
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if steps == 0:  # nothing to apply: the table alone, as an earlier build left it
            conn.execute(create_table(schema.MIGRATIONS_TABLE, schema.SQLITE))
        assert schema.migrate_connection(conn, MIGRATIONS[:steps]) == MIGRATION_NAMES[:steps]
    finally:
        conn.close()
    return path


def _postgres_made_by(built_by: str, url: str, steps: int) -> None:
    """A PostgreSQL ledger after its first ``steps`` migrations, by the earlier builds' ``.sql``
    files or by this history."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        if built_by == "an earlier build":
            conn.execute("CREATE TABLE _migrations (name text PRIMARY KEY, applied_at text)")
            for name, sql in BEFORE_PG_STEPS[:steps]:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO _migrations VALUES (%s, %s)", (name, APPLIED_AT))
        else:
            applied = pg_session.migrate(conn, _current_schema(url), pg_session.MIGRATIONS[:steps])
            assert applied == MIGRATION_NAMES[:steps]


def _current_schema(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return str(conn.execute("SELECT current_schema()").fetchone()[0])  # type: ignore[index]


def _sqlite_schema(path: Path) -> dict[str, Any]:
    """What ``sqlite_master`` holds (each statement as SQLite kept it) and the keys of ``meta``."""
    conn = sqlite3.connect(path)
    try:
        master = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        has_meta = any(name == "meta" for _, name, _, _ in master)
        meta = conn.execute("SELECT key FROM meta ORDER BY key").fetchall() if has_meta else []
        migrations = conn.execute("SELECT name FROM _migrations ORDER BY name").fetchall()
    finally:
        conn.close()
    return {"sqlite_master": master, "meta": meta, "_migrations": migrations}


def _postgres_schema(url: str) -> dict[str, Any]:
    """The schema's columns, indexes, keys and ``meta`` keys, with the schema's own name left out."""
    import psycopg

    with psycopg.connect(url) as conn:
        name = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
        cols = conn.execute(
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default, is_identity,"
            " identity_generation FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 2"
        ).fetchall()
        indexes = [
            (table, index, definition.replace(f"{name}.", ""))
            for table, index, definition in conn.execute(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 2"
            )
        ]
        keys = conn.execute(
            "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = current_schema()::regnamespace ORDER BY 2"
        ).fetchall()
        has_meta = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]  # type: ignore[index]
        meta = conn.execute("SELECT key FROM meta ORDER BY key").fetchall() if has_meta else []
        migrations = conn.execute("SELECT name FROM _migrations ORDER BY name").fetchall()
    return {"columns": cols, "indexes": indexes, "keys": keys, "meta": meta, "_migrations": migrations}
