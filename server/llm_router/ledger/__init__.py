"""Storage for request rows, spend rollups, reservations and budget overrides.

Two backends with one interface (``LedgerBase``): a SQLite file for one machine (``Ledger``), and
PostgreSQL for a team whose servers run on several machines (``PostgresLedger``). ``open_ledger``
picks one from the settings and the environment.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from .base import GROUPINGS, LedgerBase, LedgerUnavailable, LimitCheck, Refusal, RequestRow, SpareRequest
from .sqlite import Ledger

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "GROUPINGS",
    "Ledger",
    "LedgerBase",
    "LedgerUnavailable",
    "LimitCheck",
    "Refusal",
    "RequestRow",
    "SpareRequest",
    "ledger_location",
    "ledger_url",
    "open_ledger",
]


def ledger_url(settings: Settings) -> str | None:
    """The PostgreSQL URL to use, or None for SQLite: ``$LLM_ROUTER_DB_URL``, else ``[ledger] url``
    unless ``$LLM_ROUTER_DB`` names a SQLite file (the environment wins over the file). The demo
    always keeps its own SQLite file."""
    if settings.demo:
        return None
    env = os.environ.get("LLM_ROUTER_DB_URL")
    if env:
        return env
    if os.environ.get("LLM_ROUTER_DB"):
        return None
    return settings.ledger.url


def ledger_location(settings: Settings) -> str:
    """Where the ledger is, to show a person: the SQLite file, or the PostgreSQL URL without its password."""
    from ..config import ledger_path

    url = ledger_url(settings)
    if url:
        from .postgres import redact_url

        return f"{redact_url(url)} (PostgreSQL)"
    return str(ledger_path(settings))


def open_ledger(settings: Settings, *, upkeep: bool = True) -> LedgerBase:
    """Open (and migrate) the ledger the settings name. With ``upkeep``, holds become leases
    renewed in the background, and dead processes' holds and rows past ``retain_days`` are
    cleared now and every ``maintenance_interval_s``.

    Raises:
        LedgerUnavailable: a PostgreSQL ledger that cannot be reached, or psycopg not installed
            (says what to check or install).
        sqlite3.Error, psycopg.Error: the database cannot be opened or migrated.
    """
    from ..config import ledger_path

    cfg = settings.ledger
    url = ledger_url(settings)
    ledger: LedgerBase
    if url:
        from .postgres import PostgresLedger

        ledger = PostgresLedger(url)
    else:
        ledger = Ledger(ledger_path(settings), busy_timeout_s=cfg.busy_timeout_s)
    if upkeep:
        tz = ZoneInfo(settings.budget.timezone)
        try:
            ledger.start_upkeep(
                lease_s=cfg.lease_s, interval_s=cfg.maintenance_interval_s, retain_days=cfg.retain_days,
                today=lambda: datetime.now(tz).date(),
            )
        except BaseException:
            ledger.close()
            raise
    return ledger
