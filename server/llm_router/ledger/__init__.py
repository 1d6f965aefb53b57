"""Storage for request rows, spend rollups, reservations and budget overrides.

Two backends with one interface (``LedgerBase``): a SQLite file for one machine (``Ledger``), and
PostgreSQL for a team whose servers run on several machines (``PostgresLedger``). ``open_ledger``
picks one from the settings and the environment.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from .base import (
    GROUPINGS,
    LedgerBase,
    LedgerStorageError,
    LedgerUnavailable,
    LimitCheck,
    Refusal,
    RequestRow,
    SpareRequest,
)
from .journal import Journal
from .sqlite import Ledger

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "GROUPINGS",
    "Journal",
    "Ledger",
    "LedgerBase",
    "LedgerStorageError",
    "LedgerUnavailable",
    "LimitCheck",
    "Refusal",
    "RequestRow",
    "SpareRequest",
    "ledger_location",
    "ledger_url",
    "open_ledger",
    "sqlite_unavailable",
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


def sqlite_unavailable(path: Path, error: sqlite3.Error | OSError) -> LedgerUnavailable:
    """What stops a SQLite ledger from opening, in one line: the file, the cause, what to do."""
    where = f"the ledger {path}"
    elsewhere = "or point $LLM_ROUTER_DB or [ledger] path at another file"
    if isinstance(error, OSError):  # the folder could not be made
        folder = path.parent
        return LedgerUnavailable(
            f"cannot make the folder {folder} for {where}: {error.strerror or error}. Create it yourself, {elsewhere}"
        )
    text = str(error).lower()
    if "not a database" in text or "malformed" in text:
        return LedgerUnavailable(
            f"{where} is not a readable SQLite database (corrupt, truncated, or some other file): {error}. "
            f"Move it aside (mv {path} {path}.bad) and the next start makes a new one, {elsewhere}"
        )
    if "readonly" in text or "read-only" in text:
        return LedgerUnavailable(
            f"{where} is read-only for this user ({error}): make it and its folder writable "
            f"(chmod u+w {path} {path.parent}), {elsewhere}"
        )
    if "unable to open" in text:
        if path.is_dir():
            return LedgerUnavailable(f"cannot open {where}: it is a folder. Name a file in it, {elsewhere}")
        return LedgerUnavailable(f"cannot open {where}: the file or its folder cannot be read or written by "
                                 f"this user ({error}). Fix their permissions, {elsewhere}")
    return LedgerUnavailable(f"cannot open {where}: {error}. Check the file, {elsewhere}")


def open_ledger(settings: Settings, *, upkeep: bool = True) -> LedgerBase:
    """Open (and migrate) the ledger the settings name. With ``upkeep``, holds become leases
    renewed in the background, and dead processes' holds and rows past ``retain_days`` are
    cleared now and every ``maintenance_interval_s``.

    Raises:
        LedgerUnavailable: a SQLite file that cannot be opened (corrupt, truncated, unreadable,
            read-only, a folder that cannot be made), a PostgreSQL ledger that cannot be reached,
            or psycopg not installed: one line naming the place, the cause and what to do.
        psycopg.Error: a reachable PostgreSQL database that cannot be migrated.
    """
    from ..config import ledger_path

    cfg = settings.ledger
    url = ledger_url(settings)
    ledger: LedgerBase
    journal = Path(cfg.journal_path).expanduser() if cfg.journal_path and not settings.demo else None
    if url:
        from .postgres import PostgresLedger

        ledger = PostgresLedger(url, busy_timeout_s=cfg.busy_timeout_s, journal_path=journal)
    else:
        path = ledger_path(settings)
        try:
            ledger = Ledger(path, busy_timeout_s=cfg.busy_timeout_s, journal_path=journal)
        except (sqlite3.Error, OSError) as e:
            raise sqlite_unavailable(path, e) from None
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
