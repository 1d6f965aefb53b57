"""Fixtures that run a test against each ledger backend: a SQLite file in ``tmp_path``, and a
fresh schema in the PostgreSQL database named by ``$LLM_ROUTER_TEST_PG_URL``.

Without that variable (or with no server answering it) the PostgreSQL variants are skipped and
say why; with ``LLM_ROUTER_REQUIRE_PG=1`` (set by ``.ci/run``) they fail instead, so a CI run
cannot pass without having run them.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from llm_router.ledger import Ledger, LedgerBase

PG_URL_VAR = "LLM_ROUTER_TEST_PG_URL"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _unavailable(reason: str) -> None:
    if os.environ.get("LLM_ROUTER_REQUIRE_PG") == "1":
        pytest.fail(f"PostgreSQL tests were required (LLM_ROUTER_REQUIRE_PG=1) but cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The test server's URL, once checked to answer."""
    url = os.environ.get(PG_URL_VAR)
    if not url:
        _unavailable(f"no PostgreSQL server to test against: set {PG_URL_VAR}=postgresql://user@127.0.0.1/db "
                     "(.ci/run starts one)")
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed: pip install -e '.[postgres]'")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as e:
        _unavailable(f"the PostgreSQL server at {PG_URL_VAR} does not answer: {str(e).strip()}")
    return url  # type: ignore[return-value]


def with_search_path(url: str, schema: str) -> str:
    """The URL with ``options=-csearch_path=SCHEMA`` added: every connection made from it lives in that schema."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A URL whose connections all use a schema of their own, dropped after the test."""
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(pg_server_url, schema)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@dataclass
class Store:
    """Where a test's ledger lives; ``open()`` gives a new connection to it (another 'process')."""

    kind: str
    target: str

    def open(self) -> LedgerBase:
        if self.kind == "sqlite":
            return Ledger(self.target)
        from llm_router.ledger.postgres import PostgresLedger

        return PostgresLedger(self.target)

    def config(self) -> dict[str, Any]:
        """The ``[ledger]`` section of a config naming this store."""
        return {"path": self.target} if self.kind == "sqlite" else {"url": self.target}


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store("sqlite", str(tmp_path / "ledger.db"))
    return Store("postgres", request.getfixturevalue("pg_url"))


# -- a ledger opened for a test (the ledger tests' own fixtures) --------------------------------------

@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(store: Store) -> Iterator[LedgerBase]:
    led = store.open()
    yield led
    led.close()


@pytest.fixture
def sqlite_ledger(ledger_file: Path) -> Iterator[Ledger]:
    led = Ledger(ledger_file)
    yield led
    led.close()


# -- raw access, for tests that must reach under the interface -----------------------------------


def execute(led: LedgerBase, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> None:
    """Run one write statement (``?`` placeholders) on the ledger's own connection."""
    if isinstance(led, Ledger):
        led.db.execute(sql, list(params))
        return
    from llm_router.ledger.postgres import _placeholders

    with led._lock:
        led._connection().execute(_placeholders(sql), list(params))


def tables(led: LedgerBase) -> list[str]:
    if isinstance(led, Ledger):
        return sorted(led.db.table_names())
    rows = led.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    return sorted(r["table_name"] for r in rows)


def columns(led: LedgerBase, table: str) -> list[str]:
    if isinstance(led, Ledger):
        return [r["name"] for r in led.query(f"SELECT name FROM pragma_table_info('{table}')")]
    rows = led.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = ? ORDER BY ordinal_position",
        [table],
    )
    return [r["column_name"] for r in rows]


def integrity_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.IntegrityError]
    try:
        import psycopg

        errors.append(psycopg.IntegrityError)
    except ImportError:
        pass
    return tuple(errors)


OpenLedger = Callable[[], LedgerBase]
