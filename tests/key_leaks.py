"""Looking for any part of a key in what the server kept or showed.

A key has leaked when any 8 consecutive characters of it appear in some output, as they are or
once the quoting a reader would undo is undone: JSON string escapes (``\\u0067``, ``\\"``),
percent-encoding, HTML character references, base64 (either alphabet, any alignment). Only the
8 characters that lie wholly inside a vendor's public prefix (``sk-ant-api03-``: the same in
every key of that vendor) are no leak. The search is independent of ``llm_router.redaction``: it
shares none of its code.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
from mcp import Client

from llm_router.calls import CompleteArgs
from llm_router.config import Settings
from llm_router.engine import Engine
from llm_router.mcp_server import create_server
from llm_router.redaction import Redactor

from .conftest import FAKE_MODELS
from .fakes.echoing_upstream import ANSWERED, JSON_CASES, STREAM_CASES, EchoingUpstream

__all__ = ["PIECE", "all_leaks", "call_every_case", "redacting_logs", "drive_every_path", "files_under", "ledger_files", "leaks", "pg_rows", "sqlite_rows", "views"]

PIECE = 8
"""This many consecutive characters of a key make a leak."""

_JSON_ESCAPE = re.compile(r'\\u([0-9a-fA-F]{4})|\\(["\\/bfnrt\'])')
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}")


def _json_unescaped(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return chr(int(m.group(1), 16))
        return _SIMPLE.get(m.group(2), m.group(2))

    return _JSON_ESCAPE.sub(one, text)


def _base64_decoded(text: str) -> str:
    """Every run of base64 characters decoded, from each of its first four offsets."""
    out = []
    for m in _BASE64_RUN.finditer(text):
        run = m.group().replace("-", "+").replace("_", "/")
        for offset in range(4):
            part = run[offset:]
            part = part[: len(part) - len(part) % 4]
            try:
                out.append(base64.b64decode(part).decode("latin-1"))
            except (binascii.Error, ValueError):
                continue
    return "\n".join(out)


def views(text: str) -> list[str]:
    """``text`` and what it reads as once its quoting is undone."""
    unescaped = _json_unescaped(text)
    seen = [text, unescaped, unquote(text), unquote(unescaped), html.unescape(text), html.unescape(unescaped)]
    seen += [_base64_decoded(text), _base64_decoded(unescaped)]
    return list(dict.fromkeys(seen))


_VENDOR_PREFIX = re.compile(r"(?:sk|pk|rk)-(?:(?:ant|proj|svcacct|admin)-)?(?:(?:api|admin)\d\d-)?")


def _pieces(key: str) -> set[str]:
    """Every 8 consecutive characters of ``key`` but those inside its vendor's public prefix."""
    public = m.end() if (m := _VENDOR_PREFIX.match(key)) else 0
    return {key[i : i + PIECE] for i in range(len(key) - PIECE + 1) if i + PIECE > public}


def leaks(where: str, text: str, keys: Mapping[str, str]) -> list[str]:
    """One line per key any piece of which is in ``text`` (in any of its views), with where."""
    found = []
    all_views = views(text)
    for name, key in keys.items():
        pieces = _pieces(key)
        for n, view in enumerate(all_views):
            hits = [p for p in pieces if p in view]
            if hits:
                at = view.find(hits[0])
                how = "as it is" if n == 0 else "once unquoted"
                found.append(f"{where}: {len(hits)} pieces of the {name} key {how}, e.g. "
                             f"...{view[max(0, at - 60):at + 20]!r}")
                break
    return found


def all_leaks(outputs: Iterable[tuple[str, str]], keys: Mapping[str, str]) -> list[str]:
    return [leak for where, text in outputs for leak in leaks(where, text, keys)]


def ledger_files(folder: Path, name: str = "ledger.db") -> dict[str, str]:
    """The bytes of a SQLite ledger's files (``.db``, ``-wal``, ``-shm``, journals), as text."""
    return {p.name: p.read_bytes().decode("latin-1") for p in sorted(folder.glob(f"{name}*"))}


def files_under(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (a ledger's files, its journal, logs written there...), as text."""
    return {str(p.relative_to(folder)): p.read_bytes().decode("latin-1") for p in sorted(folder.rglob("*")) if p.is_file()}


def sqlite_rows(path: Path) -> dict[str, str]:
    """Every row of every table of a SQLite file, each table's rows as one text."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: "\n".join(repr(row) for row in db.execute(f'SELECT * FROM "{t}"')) for t in names}
    finally:
        db.close()


def pg_rows(url: str) -> dict[str, str]:
    """Every row of every table in the URL's schema (each whole row cast to text), per table."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_type = 'BASE TABLE'")]
        return {t: "\n".join(r[0] for r in conn.execute(f'SELECT t::text FROM "{t}" t')) for t in names}


@contextmanager
def redacting_logs(settings: Settings) -> Iterator[None]:
    """The redacting filter ``serve`` installs, on the root logger's handlers (pytest's capturing
    ones among them) while the block runs: left behind, it would rewrite later tests' records."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    flt = Redactor.from_environment(settings).install(root)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(flt)


async def call_every_case(client: Client, ups: Mapping[str, EchoingUpstream]) -> list[tuple[str, str]]:
    """Every case of every upstream's script through ``complete`` (streamed ones asking for
    progress), then ``cost_report``, ``route_explain`` and every resource: each tool result (text,
    structured content, error facts), resource and progress message, as ``(where, text)``."""
    outputs: list[tuple[str, str]] = []
    progress_seen: list[str] = []

    async def progress(_p: float, _t: float | None, message: str | None) -> None:
        progress_seen.append(message or "")

    for up in ups.values():
        up.script = [(c, False) for c in JSON_CASES] + [(c, True) for c in STREAM_CASES]
    for kind, up in ups.items():
        ref = f"{kind}:{FAKE_MODELS[kind]}"
        for case, stream in list(up.script):
            with anyio.fail_after(30):
                result = await client.call_tool(
                    "complete", {"prompt": f"hello {case}", "model": [ref], "tag": "leak"},
                    progress_callback=progress if stream else None,
                )
            text = "".join(getattr(b, "text", "") for b in result.content)
            assert result.is_error is (case not in ANSWERED), (kind, case, text)
            outputs.append((f"complete {kind} {case} {'stream' if stream else 'json'}", text))
            outputs.append((f"structured {kind} {case}", json.dumps(result.structured_content)))
            outputs.append((f"error meta {kind} {case}", json.dumps(result.meta)))
        assert len(up.served) == len(JSON_CASES) + len(STREAM_CASES) <= up.saw_key, kind
    for tool, args in (("cost_report", {"period": "today", "group_by": "model"}),
                       ("route_explain", {"prompt": "hello"})):
        result = await client.call_tool(tool, args)
        outputs.append((tool, "".join(getattr(b, "text", "") for b in result.content)))
        outputs.append((f"{tool} structured", json.dumps(result.structured_content)))
    listed = [str(r.uri) for r in (await client.list_resources()).resources]
    today = f"llm-router://ledger/{datetime.now(UTC).date().isoformat()}"  # the ledger's days are UTC here
    for uri in dict.fromkeys([*listed, "llm-router://ledger", "llm-router://providers", "llm-router://budgets", today]):
        outputs.append((uri, (await client.read_resource(uri)).contents[0].text))
    outputs.append(("progress", "\n".join(progress_seen)))
    return outputs


async def drive_every_path(settings: Settings, ups: Mapping[str, EchoingUpstream], ledger: Path | None = None,
                           ) -> list[tuple[str, str]]:
    """``call_every_case`` through the engine and an in-memory MCP session, the log messages the
    client was sent, and the errors the engine raises when called directly, as ``(where, text)``.
    With ``ledger`` (a SQLite file), also its files while the engine is open."""
    logs: list[str] = []
    progress_seen: list[str] = []

    async def on_log(params: Any) -> None:
        logs.append(json.dumps(params.data))

    async def engine_progress(_value: float, _total: float | None, message: str) -> None:
        progress_seen.append(message)

    engine = Engine(settings)
    try:
        async with Client(create_server(engine), logging_callback=on_log) as client:
            outputs = await call_every_case(client, ups)
        # The same calls straight through the engine, errors as the engine raises them.
        for kind, up in ups.items():
            up.script = [("bad_usage", True), ("wrong_shape", False)]
            for _ in range(2):
                stream = up.script[0][1]
                try:
                    await engine.complete(CompleteArgs(prompt="direct", model=[f"{kind}:{FAKE_MODELS[kind]}"]),
                                          progress=engine_progress if stream else None)
                except Exception as e:  # noqa: BLE001 - the error itself is what is searched
                    outputs.append((f"engine error {kind}", f"{e!s} {e!r} {getattr(e, 'to_dict', dict)()}"))
        outputs += [("engine progress", "\n".join(progress_seen)), ("client log", "\n".join(logs))]
        if ledger is not None:
            outputs += [(f"ledger file {n} (open)", data) for n, data in ledger_files(ledger.parent, ledger.name).items()]
    finally:
        await engine.aclose()
    return outputs
