"""Spend waiting in the journal is said plainly wherever spend is shown (issue 14, point 2).

Regression: calls whose rows waited in the ledger's journal (the ledger locked past its busy
timeout, the disk full, PostgreSQL unreachable) counted only as reserved holds in ``cost_report``,
``llm-router://ledger``, ``llm-router://budgets`` and ``llm-router-mcp report``: an answered call
was missing from every report without a word. Now each gives the journaled calls and their cost,
and a note that they are held against every limit and will be written at the ledger's next write;
a member token sees only its own tag's (never another tag's count or cost); and when nothing waits
no journal file is read."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from llm_router.calls import CompleteArgs
from llm_router.cli import main
from llm_router.config import ledger_path
from llm_router.engine import Engine
from llm_router.http_app import load_tokens
from llm_router.ledger import Journal, Ledger, RequestRow
from llm_router.ledger.journal import Entry
from llm_router.mcp_server import BUDGETS_URI, LEDGER_URI
from llm_router.types import usd_str

from .fakes import FakeProvider, Usage
from .http_server import mcp_client, serve
from .ledger_faults import BILLED_NUSD, INPUT_TOKENS, MODEL, OUTPUT_TOKENS, LockHolder, account, settings, wait_for

pytestmark = pytest.mark.anyio

ALICE = "alice-member-token-0123456789"
BOB = "bob-member-token-9876543210ab"
OPS = "ops-admin-token-0123456789abc"
PROM = "prom-metrics-token-0123456789"
TOKENS = {"LLM_ROUTER_HTTP_TOKENS": f"alice={ALICE},bob={BOB},ops={OPS}:admin,prom={PROM}:metrics"}


class _HeldAnswers:
    """Wraps a provider: each answer, once the upstream has sent (and billed) it, waits for ``go``."""

    def __init__(self, inner: Any, calls: int) -> None:
        self.inner = inner
        self.arrived = [anyio.Event() for _ in range(calls)]
        self._count = 0
        self.go = anyio.Event()

    async def complete(self, model: str, request: Any, on_text: Any = None) -> Any:
        try:
            return await self.inner.complete(model, request, on_text=on_text)
        finally:
            self.arrived[self._count].set()
            self._count += 1
            await self.go.wait()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _journal_calls(engine: Engine, holder: LockHolder, tags: list[str]) -> dict[str, str]:
    """Calls billed to ``tags``, answered upstream, whose rows meet the write lock another server
    takes (and keeps) before they are written: each goes to the journal. Returns id -> tag."""
    held = engine.providers["openai"] = _HeldAnswers(engine.providers["openai"], len(tags))
    ids: dict[str, str] = {}

    async def call(tag: str) -> None:
        answer = await engine.complete(CompleteArgs(prompt=f"{tag} asks", tag=tag))
        assert "journal" in answer.notes[-1], answer.notes
        ids[answer.request_id] = tag

    async with anyio.create_task_group() as tg:
        for tag in tags:
            tg.start_soon(call, tag)
        for arrived in held.arrived:
            await wait_for(arrived, "the upstream's answers")
        await anyio.to_thread.run_sync(holder.lock)
        held.go.set()
    engine.providers["openai"] = held.inner
    return ids


def _fake() -> FakeProvider:
    return FakeProvider("openai", models=[MODEL], usage=Usage(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS))


async def _read(client: Any, uri: str) -> tuple[dict[str, Any], str]:
    text = (await client.read_resource(uri)).contents[0].text
    return json.loads(text), text


@pytest.mark.slow
async def test_journaled_calls_are_in_cost_report_and_the_ledger_and_budgets_resources_and_a_member_sees_only_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _fake() as fake:
        cfg = settings(tmp_path, fake, monkeypatch, ledger={"busy_timeout_s": 0.2})
        path = ledger_path(cfg)
        engine = Engine(cfg)
        holder = LockHolder(path)
        try:
            ids = await _journal_calls(engine, holder, ["alice", "bob", "bob"])
            alice_id = next(i for i, t in ids.items() if t == "alice")
            bob_ids = {i for i, t in ids.items() if t == "bob"}
            assert account(path).rows == {} and set(account(path).journaled) == set(ids)

            # cost_report: the journaled calls beside the ledger's figures, and the note.
            report = await engine.cost_report(period="today")
            assert report.totals["requests"] == 0 and report.totals["cost_usd"] == "0"
            assert (report.totals["journaled_requests"], report.totals["journaled_cost_usd"]) == (
                3, usd_str(3 * BILLED_NUSD))
            assert report.notes == [
                f"3 calls costing ${usd_str(3 * BILLED_NUSD)} in all are waiting in the ledger's journal "
                f"({path}.journal): the ledger could not take their rows yet, so they are not in these figures; "
                "they are counted against every limit (as held) and will be written to the ledger at its next write"
            ]
            only_alice = await engine.cost_report(period="today", tag="alice")
            assert (only_alice.totals["journaled_requests"], only_alice.totals["journaled_cost_usd"]) == (
                1, usd_str(BILLED_NUSD))
            assert only_alice.notes[0].startswith(f"1 call costing ${usd_str(BILLED_NUSD)} is waiting")
            other_provider = await engine.cost_report(period="today", provider="anthropic")
            yesterday = await engine.cost_report(period="yesterday")
            for none in (other_provider, yesterday):
                assert none.totals["journaled_requests"] == 0 and not any("journal" in n for n in none.notes)
            daily = next(b for b in report.budgets if (b["scope"], b["period"]) == ("global", "daily"))
            assert int(float(daily["reserved_usd"]) * 1e9 + 0.5) >= 3 * BILLED_NUSD  # held against the limit

            # The resources, over HTTP: an admin sees all three, a member only its own tag's.
            day = report.period["first_day"]
            with serve(engine, tokens=load_tokens(TOKENS)) as url:
                async with mcp_client(url, OPS) as ops:
                    admin = {uri: await _read(ops, uri) for uri in (LEDGER_URI, f"{LEDGER_URI}/{day}", BUDGETS_URI)}
                    admin_report = (await ops.call_tool("cost_report", {"period": "today"})).structured_content
                async with mcp_client(url, ALICE) as alice:
                    seen = {uri: await _read(alice, uri) for uri in (LEDGER_URI, f"{LEDGER_URI}/{day}", BUDGETS_URI)}
                    alice_report = await alice.call_tool("cost_report", {"period": "today"})
                async with httpx.AsyncClient(timeout=30) as http:
                    scraped = await http.get(f"{url}/metrics", headers={"authorization": f"Bearer {PROM}"})
                    as_member = await http.get(f"{url}/metrics", headers={"authorization": f"Bearer {ALICE}"})

            for uri, (parsed, _) in admin.items():
                assert parsed["journaled"]["requests"] == 3, uri
                assert parsed["journaled"]["cost_usd"] == usd_str(3 * BILLED_NUSD), uri
                assert parsed["notes"] and parsed["notes"][0].startswith("3 calls costing"), uri
            ledger_page = admin[LEDGER_URI][0]
            assert ledger_page["entries"] == []
            assert {e["id"] for e in ledger_page["journaled"]["entries"]} == set(ids)
            assert {e["tag"] for e in ledger_page["journaled"]["entries"]} == {"alice", "bob"}
            assert all(e["status"] == "ok" and e["cost_usd"] == usd_str(BILLED_NUSD)
                       for e in ledger_page["journaled"]["entries"])
            assert admin_report["totals"]["journaled_requests"] == 3

            for uri, (parsed, text) in seen.items():
                assert parsed["journaled"]["requests"] == 1, uri
                assert parsed["journaled"]["cost_usd"] == usd_str(BILLED_NUSD), uri
                assert parsed["notes"] == [only_alice.notes[0]], uri
                assert "bob" not in text.lower() and not any(i in text for i in bob_ids), uri
                assert "3 calls" not in text and usd_str(3 * BILLED_NUSD) not in text, uri
            assert [e["id"] for e in seen[LEDGER_URI][0]["journaled"]["entries"]] == [alice_id]
            shown = alice_report.structured_content
            assert (shown["totals"]["journaled_requests"], shown["totals"]["journaled_cost_usd"]) == (
                1, usd_str(BILLED_NUSD))
            alice_text = json.dumps({"content": [c.text for c in alice_report.content], "structured": shown})
            assert "bob" not in alice_text.lower() and usd_str(3 * BILLED_NUSD) not in alice_text
            # /metrics: no tag and nothing of the journal for a metrics token; none at all for a member.
            assert scraped.status_code == 200 and as_member.status_code == 403
            assert "alice" not in scraped.text and "bob" not in scraped.text and "journal" not in scraped.text

            # Written at the next write: the figures take them in, and nothing is said any more.
            await anyio.to_thread.run_sync(holder.release)
            await engine.ledger.run(engine.ledger.reclaim)  # any write transaction replays the journal first
            acc = account(path)
            assert set(acc.rows) == set(ids) and acc.journaled == {} and acc.holds == 0

            def no_read(*_: Any, **__: Any) -> Any:
                raise AssertionError("the journal was read while nothing waited in it")

            monkeypatch.setattr(Journal, "waiting", no_read)  # nothing waits: no file is read
            after = await engine.cost_report(period="today")
            assert after.totals["requests"] == 3 and after.totals["cost_usd"] == usd_str(3 * BILLED_NUSD)
            assert (after.totals["journaled_requests"], after.totals["journaled_cost_usd"]) == (0, "0")
            assert after.notes == []
            assert await engine.journaled(entries=True) == {"requests": 0, "cost_usd": "0", "note": None, "entries": []}
        finally:
            holder.close()
            await engine.aclose()


@pytest.mark.slow
def test_the_report_command_says_what_waits_in_the_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    day = "2025-03-14"
    path = tmp_path / "ledger.db"
    led = Ledger(path)
    led.record(RequestRow(id="r0", ts=f"{day}T11:00:00+00:00", day=day, status="ok", provider="openai", model="m",
                          input_tokens=1, output_tokens=1, cost_nusd=1_000, cost_usd="0.000001"))
    led.close()
    args = ["report", "--demo", "--ledger", str(path), "--since", day, "--until", day]
    holder = LockHolder(path)  # another server, inside a write transaction: the journal cannot be replayed
    try:
        holder.lock()
        # Another server's answered call, whose row the ledger could not take.
        Journal(Path(f"{path}.journal")).append(Entry("row", (), RequestRow(
            id="r1", ts=f"{day}T12:00:00+00:00", day=day, status="ok", provider="openai", model="m", input_tokens=1,
            output_tokens=1, cost_nusd=2_500, cost_usd="0.0000025")))
        t0 = time.monotonic()
        assert main(args) == 0
        took = time.monotonic() - t0
    finally:
        holder.close()
    out = capsys.readouterr().out
    assert took < 10, f"the report waited {took:.1f} s for the write lock"  # it once waited 30 s, then failed busy
    assert "$0.000001 over 1 call\n" in out
    assert (f"note: 1 call costing $0.0000025 is waiting in the ledger's journal ({path}.journal): the ledger could "
            "not take its row yet") in out

    assert main(args) == 0  # the lock gone: the ledger opened replays the journal, and the report counts it
    out = capsys.readouterr().out
    assert "$0.0000035 over 2 calls\n" in out and "journal" not in out


def test_a_journal_holding_only_refusals_that_cost_nothing_is_not_said_to_count_against_any_limit() -> None:
    from llm_router.ledger.base import journaled_note

    note = journaled_note(1, 0, "/x/ledger.db.journal")
    assert note is not None and "cost nothing" in note and "counted against every limit" not in note, note
    assert "counted against every limit" in (journaled_note(2, 5, "/x/ledger.db.journal") or "")
