"""Which ledger the settings and environment open, and what a running server's upkeep does with
it: retention that keeps reports whole, and holds of dead processes reclaimed without a restart."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llm_router.cli import main
from llm_router.config import LedgerConfig, Settings, settings_from_dict
from llm_router.engine import Engine
from llm_router.ledger import Ledger, LedgerUnavailable, RequestRow, ledger_location, open_ledger
from llm_router.ledger import base as ledger_base
from llm_router.ledger.postgres import MIGRATIONS as postgres_migrations
from llm_router.ledger.postgres import PostgresLedger, redact_url
from llm_router.types import ConfigError

from .backends import Store, execute
from .conftest import make_settings


def ledger_settings(tmp_path: Path, **ledger: Any) -> Settings:
    """The demo settings, with exactly this ``[ledger]`` section."""
    return make_settings(tmp_path).model_copy(update={"ledger": LedgerConfig(**ledger)})


# -- choosing the backend -----------------------------------------------------------------------


def test_a_path_opens_a_sqlite_file_and_llm_router_db_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ledger_settings(tmp_path, path=str(tmp_path / "from-file.db"))
    led = open_ledger(settings, upkeep=False)
    led.close()
    assert isinstance(led, Ledger) and led.path == tmp_path / "from-file.db"

    monkeypatch.setenv("LLM_ROUTER_DB", str(tmp_path / "from-env.db"))
    led = open_ledger(settings, upkeep=False)
    led.close()
    assert isinstance(led, Ledger) and led.path == tmp_path / "from-env.db"


@pytest.mark.postgres
def test_llm_router_db_url_opens_the_postgresql_ledger_whatever_the_file_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    monkeypatch.setenv("LLM_ROUTER_DB", str(tmp_path / "ignored.db"))
    monkeypatch.setenv("LLM_ROUTER_DB_URL", pg_url)

    led = open_ledger(ledger_settings(tmp_path, path=str(tmp_path / "also-ignored.db")), upkeep=False)
    try:
        assert isinstance(led, PostgresLedger)
        assert led.migrations_applied[-1] == postgres_migrations[-1][0]
    finally:
        led.close()
    assert not (tmp_path / "ignored.db").exists()


def test_the_url_must_be_postgresql_and_cannot_come_with_a_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"ledger": {"url": "mysql://x/y"}}, source="cfg.toml")
    assert info.value.key == "ledger.url" and "postgresql://" in str(info.value)

    with pytest.raises(ConfigError) as info:
        settings_from_dict({"ledger": {"url": "postgresql://x/y", "path": "a.db"}}, source="cfg.toml")
    assert info.value.key == "ledger.url" and "not both" in str(info.value)


def test_a_postgresql_url_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(LedgerUnavailable, match=r"pip install 'llm-router-mcp\[postgres\]'"):
        PostgresLedger("postgresql://nobody@127.0.0.1:1/none")


def test_an_unreachable_postgresql_ledger_is_an_error_saying_what_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(LedgerUnavailable) as info:
        PostgresLedger("postgresql://team:s3cret@127.0.0.1:1/spend")
    message = str(info.value)
    assert "postgresql://team:***@127.0.0.1:1/spend" in message and "s3cret" not in message
    assert "$LLM_ROUTER_DB_URL" in message and "PGPASSWORD" in message

    cfg = tmp_path / "config.toml"
    cfg.write_text('[ledger]\nurl = "postgresql://team:s3cret@127.0.0.1:1/spend"\n'
                   '[[providers]]\nname = "m"\nkind = "mock"\nmodels = ["x"]\n')
    assert main(["report", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the PostgreSQL ledger") and "s3cret" not in err


def test_where_the_ledger_is_is_shown_without_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert redact_url("postgresql://team:s3cret@db.internal:5432/spend") == "postgresql://team:***@db.internal:5432/spend"
    assert redact_url("postgresql://team@db.internal/spend") == "postgresql://team@db.internal/spend"
    assert ledger_location(ledger_settings(tmp_path, path=str(tmp_path / "l.db"))) == str(tmp_path / "l.db")

    monkeypatch.setenv("LLM_ROUTER_DB_URL", "postgresql://team:s3cret@db.internal/spend")
    assert ledger_location(ledger_settings(tmp_path)) == "postgresql://team:***@db.internal/spend (PostgreSQL)"


def test_check_names_the_postgresql_ledger_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[ledger]\nurl = "postgresql://team:s3cret@db.internal/spend"\n'
                   '[[providers]]\nname = "m"\nkind = "mock"\nmodels = ["x"]\n')
    main(["check", "--offline", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert "ledger: postgresql://team:***@db.internal/spend (PostgreSQL)" in out
    assert "s3cret" not in out


# -- what a running server's upkeep does --------------------------------------------------------


def old_row(n: int, when: datetime, cost: int) -> RequestRow:
    return RequestRow(
        id=f"old-{n}", ts=when.isoformat(timespec="milliseconds"), day=when.date().isoformat(), status="ok",
        provider="openai", model="gpt-4o", tag="research", cost_nusd=cost, cost_usd=str(cost / 1e9),
    )


@pytest.mark.anyio
async def test_retention_prunes_old_rows_at_start_and_reports_of_those_days_still_add_up(
    store: Store, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    seed = store.open()
    for n, (days_ago, cost) in enumerate([(45, 1_000), (45, 2_000), (40, 4_000), (1, 8_000)]):
        seed.record(old_row(n, now - timedelta(days=days_ago), cost))
    seed.close()
    old_day = (now - timedelta(days=45)).date().isoformat()

    engine = Engine(ledger_settings(tmp_path, **store.config(), retain_days=30))
    try:
        assert [r["id"] for r in engine.ledger.rows()] == ["old-3"]
        report = await engine.cost_report(since=old_day, until=now.date().isoformat(), group_by="tag")
        assert report.totals["requests"] == 4 and report.totals["cost_usd"] == "0.000015"
        assert report.rows[0]["tag"] == "research"
        assert [e["kind"] for e in engine.ledger.events()] == ["rows_pruned"]
    finally:
        await engine.aclose()


def test_a_running_server_reclaims_a_dead_neighbours_holds_without_a_restart(store: Store, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    engine = Engine(ledger_settings(tmp_path, **store.config(), maintenance_interval_s=1))
    try:
        now = time.time()
        execute(
            engine.ledger,
            "INSERT INTO reservations (id, request_id, created_at, expires_at, host, pid, day, provider, tag,"
            " amount_nusd) VALUES ('held', 'r', ?, ?, ?, ?, '2025-03-14', 'openai', '', 500)",
            [now, now + 900, ledger_base.HOST, dead.pid],
        )
        deadline = time.monotonic() + 15
        while engine.ledger.reservations_total():
            assert time.monotonic() < deadline, "the dead process's hold was not reclaimed"
            time.sleep(0.05)
        assert [e["detail"]["reason"] for e in engine.ledger.events() if e["kind"] == "reservation_reclaimed"] == [
            "process_gone"
        ]
    finally:
        import anyio

        anyio.run(engine.aclose)
