"""A ledger that cannot be opened stops the server with one line naming the file, the cause and
what to do: corrupt, truncated and foreign files, a folder where the file should be, a folder that
cannot be made, a read-only or unreadable file. They were 40-line sqlite3 tracebacks that named no
path. (An unreachable PostgreSQL ledger is covered in ``test_ledger_open.py``.)"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llm_router.config import LedgerConfig
from llm_router.ledger import Ledger, LedgerUnavailable, RequestRow, open_ledger, sqlite_unavailable

from .conftest import make_settings


def _valid_ledger_cut_in_half(path: Path) -> None:
    led = Ledger(path)
    for n in range(200):
        led.record(RequestRow(id=f"r{n}", ts=f"2025-03-14T12:00:00.{n:03d}+00:00", day="2025-03-14", status="ok",
                              tag="", provider="p", model="m", input_tokens=1, output_tokens=1, cost_nusd=1,
                              cost_usd="0"))
    led.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)


def _make(kind: str, tmp_path: Path) -> Path:
    if kind == "foreign file":
        (path := tmp_path / "notes.db").write_text("these are my notes, not a database\n" * 20)
    elif kind == "random bytes":
        (path := tmp_path / "random.db").write_bytes(bytes(range(256)) * 16)
    elif kind == "only a header":
        (path := tmp_path / "header.db").write_bytes(b"SQLite format 3\x00")
    elif kind == "truncated ledger":
        _valid_ledger_cut_in_half(path := tmp_path / "cut.db")
    elif kind == "a folder":
        (path := tmp_path / "ledger.db").mkdir()
    elif kind == "folder cannot be made":
        (tmp_path / "plain-file").write_text("x")
        path = tmp_path / "plain-file" / "sub" / "ledger.db"
    else:
        raise AssertionError(kind)
    return path


KINDS = ["foreign file", "random bytes", "only a header", "truncated ledger", "a folder", "folder cannot be made"]
WHAT_TO_DO = {
    "foreign file": "Move it aside (mv", "random bytes": "Move it aside (mv", "only a header": "Move it aside (mv",
    "truncated ledger": "Move it aside (mv", "a folder": "it is a folder. Name a file in it",
    "folder cannot be made": "Create it yourself",
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_ledger_that_cannot_be_opened_is_one_line_naming_the_path_the_cause_and_what_to_do(
    tmp_path: Path, kind: str
) -> None:
    path = _make(kind, tmp_path)
    settings = make_settings(tmp_path).model_copy(update={"ledger": LedgerConfig(path=str(path))})
    with pytest.raises(LedgerUnavailable) as caught:
        open_ledger(settings, upkeep=False)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    assert WHAT_TO_DO[kind] in message, message
    assert "$LLM_ROUTER_DB or [ledger] path" in message


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["foreign file", "a folder"])
def test_the_server_stops_at_start_with_that_one_line_and_no_traceback(tmp_path: Path, kind: str) -> None:
    path = _make(kind, tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'[ledger]\npath = "{path.as_posix()}"\n[[providers]]\nname = "m"\nkind = "mock"\n'
                      'models = ["m"]\n[providers.prices."m"]\ninput_per_mtok = 1\noutput_per_mtok = 1\n')
    for command in (["serve"], ["report"]):
        proc = subprocess.run([sys.executable, "-m", "llm_router", *command, "--config", str(config)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 1, proc
        assert "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (sqlite3.OperationalError("attempt to write a readonly database"), "is read-only for this user"),
        (sqlite3.OperationalError("unable to open database file"), "cannot be read or written by this user"),
        (sqlite3.DatabaseError("database disk image is malformed"), "is not a readable SQLite database"),
        (sqlite3.OperationalError("disk I/O error"), "cannot open the ledger"),
    ],
)
def test_read_only_and_unreadable_ledgers_are_said_as_such(tmp_path: Path, error: sqlite3.Error, words: str) -> None:
    """As root (where CI runs) permission bits do not stop a read, so these causes are checked on
    SQLite's own wording of them."""
    path = tmp_path / "ledger.db"
    message = str(sqlite_unavailable(path, error))
    assert words in message and str(path) in message and "\n" not in message
