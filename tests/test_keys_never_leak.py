"""An upstream that echoes the request's key in everything it sends never gets it onto the disk.

A hostile loopback server (one per adapter, raw HTTP on 127.0.0.1: ``tests/fakes/echoing_upstream``)
answers every request with the request's own headers (the API key included, in the provider's
header form) quoted again and again in whatever it sends: 4xx and 5xx error bodies, a 200 that is
not JSON, a 200 of the wrong shape, an unreadable usage object, an error inside a 200, and,
streaming, an error event, an event that is not JSON, an event of the wrong shape, unreadable
usage at the end, a body that is no stream, and one whose lines are no SSE fields. The key is long
(160 characters, as real keys are) and repeated, so that redacting within a head cut before it
shrinks the head and pulls the start of a key cut in half into what is quoted. A second set of
keys holds the characters regular expressions, URLs, JSON, HTML and Python's ``repr`` quote.

Every call goes through the engine and an in-memory MCP session; every tool result, resource,
log message, progress message, stderr and logging record is kept; the engine is closed; then the
ledger (SQLite: its files as bytes and every row; PostgreSQL: every row of its schema) and all of
those outputs are searched for any 8 consecutive characters of any key, as they are and unquoted
(``tests/key_leaks``). The same search over real server processes is in
``test_keys_never_leak_processes``; disguised keys and URLs in ``test_keys_disguised``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from llm_router.calls import CompleteArgs
from llm_router.engine import Engine

from .backends import Store
from .conftest import settings_for_fakes
from .fakes.echoing_upstream import JSON_CASES, STREAM_CASES, echoing_upstreams
from .key_leaks import (
    all_leaks,
    drive_every_path,
    files_under,
    leaks,
    ledger_files,
    pg_rows,
    redacting_logs,
    sqlite_rows,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEYS = {  # long, random, no public prefix: any 8 characters of one are found only where it leaked
    "anthropic": "gNSWPH8prVqsUeQCtDR3zzX6hqo35uwZqxZOOHjkJQQrkaPehMvbfrn2yzL7C5Mg3PR4hLLOOxl3gV3FGRmrCNnFZsGqgh0f"
                 "rrhbkVAhRHLfBERkIyDtFDBAM0gqEzpC3N8FeKjFTrKCb0Tz8BbwTKx8EqwtHmcO",
    "openai": "JEZqgygcmtbaLGsH7Zwqhc9jXmaoq3GqlpnMR6vsUW5xcJ6MV8YWkGP1mxFyp9yIJX6uF68NcpP7BEXvfqZgimdS7jnqFCiI"
              "5ydYgqTxIBAiCofjZUljbQ6oP3Q0w7MQ0JTcKADr9Eu7e3xdRP7PI0g63eB1h3d1",
    "gemini": "P7keaYRtciy4Lja4CDY3FTHbsfrpsRLPGaJYpUa7w5h2hzyCswU7vbqis9KZXTt9nHL15Cb5PeCvKyYMBqRW9AmYby3TEpy0"
              "HhWo0pmq23epYfD3QJdbmRZRMPsXBDo5VeOeTTlTxDSmygMxEnWRwvFI1tdlNODi",
    "ollama": "520rE5tIdjdHbRtFxOsxQ9VliZbnGXei4Lo53t2zLE0MZwlwp23JOwv0HBhact35rktmZYmhG2Vo7ysMChyXhCXMWZeT0I07"
              "pdLInIIWLymIfix3OE1hfXV8f3JLoo58giEJEuyGePQ44xh5Gv2rkDETXgOwcICu",
}
SPECIAL_KEYS = {  # characters regular expressions, URLs, JSON, HTML and Python's repr treat specially
    "anthropic": "sk-ant-api03-.*+?^$()[]{}|\\" + KEYS["anthropic"][:40] + '"' + KEYS["anthropic"][40:70],
    "openai": KEYS["openai"][:20] + "%2B%41%" + KEYS["openai"][20:40] + "+/=" + KEYS["openai"][40:80] + "&amp;",
    "gemini": "AIza" + KEYS["gemini"][:20] + "?key=a&b#c;d,e" + KEYS["gemini"][20:50] + "\\u0041" + KEYS["gemini"][50:70],
    "ollama": KEYS["ollama"][:20] + "<b>'x'</b>" + KEYS["ollama"][20:50] + "%%" + KEYS["ollama"][50:70],
}


@pytest.mark.parametrize("keys", [KEYS, SPECIAL_KEYS], ids=["random_keys", "keys_with_special_characters"])
async def test_a_key_an_upstream_echoes_in_every_error_and_malformed_body_never_reaches_disk_or_output(
    store: Store, keys: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    """On SQLite the ledger's files are searched as bytes, open and closed, and every row of every
    table; on PostgreSQL every row of every table in the ledger's schema, each whole row as text."""
    caplog.set_level(logging.DEBUG)  # every record the process makes, not only what reaches a client
    async with echoing_upstreams(keys) as ups:
        settings = settings_for_fakes(tmp_path, ups, monkeypatch, ledger=store.config(),
                                      resilience={"max_retries": 0, "breaker_failures": 100})
        sqlite_file = Path(store.target) if store.kind == "sqlite" else None
        with redacting_logs(settings):  # as ``serve`` does, on the handlers capturing here
            outputs = await drive_every_path(settings, ups, ledger=sqlite_file)

    captured = capfd.readouterr()
    outputs += [("stderr", captured.err), ("stdout", captured.out),
                ("logging", "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records))]
    stored = {f"file {n}": data for n, data in files_under(tmp_path).items()}  # the journal's too, were there one
    if sqlite_file is not None:
        stored |= {f"sqlite table {t}": rows for t, rows in sqlite_rows(sqlite_file).items()}
        assert "file ledger.db" in stored
    else:
        stored |= {f"postgres table {t}": rows for t, rows in pg_rows(store.target).items()}
        assert {"requests", "reservations", "budgets"} <= {t.removeprefix("postgres table ") for t in stored}
        assert not list(tmp_path.glob("ledger.db*"))
    # The hostile answers were really given, and their errors really reached the ledger...
    requests = next(rows for name, rows in stored.items() if name.endswith("table requests"))
    assert requests.count("leak") >= len(ups) * (len(JSON_CASES) + len(STREAM_CASES))
    assert "unreadable usage" in requests and "[redacted]" in requests
    assert any("[redacted]" in text for _w, text in outputs)
    # ...and not one piece of a key came out anywhere, as it is or once unquoted.
    leaks = all_leaks([*stored.items(), *outputs], keys)
    assert not leaks, "\n".join(leaks)


async def test_an_adapter_failure_quoting_a_key_past_200_characters_leaves_no_part_of_it_in_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What an adapter lets escape is quoted by the engine up to 200 characters: redacted first,
    so a key that the cut would split leaves nothing of itself in the attempt, the row or the error."""
    from .conftest import make_settings

    key = KEYS["anthropic"]
    engine = Engine(make_settings(tmp_path), env={"ANTHROPIC_API_KEY": key})
    name, provider = next(iter(engine.providers.items()))
    ref = next(e.ref for e in engine.catalog if e.provider == name)

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("unexpected field in " + "x" * 150 + key + " of the answer")

    monkeypatch.setattr(provider, "complete", broken)
    try:
        with pytest.raises(Exception) as raised:
            await engine.complete(CompleteArgs(prompt="hello", model=[ref]))
    finally:
        await engine.aclose()
    text = f"{raised.value} {getattr(raised.value, 'to_dict', dict)()}"
    assert "RuntimeError" in text and "xxxx" in text  # the failure is quoted...
    ledger = ledger_files(tmp_path)
    assert "RuntimeError" in "".join(ledger.values())  # the row and its attempt were written
    found = all_leaks([("error", text), *ledger.items()], {"anthropic": key})
    assert not found, "\n".join(found)  # ...without any of the key


def test_the_start_of_a_key_cut_off_at_the_end_of_a_head_is_redacted_with_the_whole_keys() -> None:
    from llm_router.redaction import clip, mask

    key = KEYS["openai"]
    head = (f"Bearer {key}\n" * 5 + f"Bearer {key}")[:900]  # a body read up to a cap, the last key cut
    assert mask(head, [key]).endswith("Bearer [redacted]") and not leaks("mask", mask(head, [key]), KEYS)
    assert not leaks("clip", clip(head, [key], 200), KEYS)  # redacting first shrinks the head: the cut start moves in
    assert mask("ends with the word sk", [key]) == "ends with the word sk"
