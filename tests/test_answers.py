"""Answers that outlive the client: a client whose tool timeout is shorter than the model's answer
finds the answer afterwards at ``llm-router://answers/{id}`` (listed in ``llm-router://answers``),
billed once; ``on_cancel: "abort"`` cancels as before; kept answers expire, are bounded, and are
their tag's only."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from llm_router.answers import ENTRY_BYTES, Answers
from llm_router.config import settings_from_dict
from llm_router.engine import Engine
from llm_router.http_app import Tokens
from llm_router.mcp_server import create_server
from llm_router.mcp_surface import RESOURCE_NOT_FOUND
from llm_router.types import NoRoute

from .clocks import ManualClock
from .conftest import FAKE_MODELS, held_by_calls, settings_for_fakes
from .http_server import mcp_client, serve

pytestmark = pytest.mark.anyio

SLOW_S = 2.0
"""How long the slow fake takes to answer: well past the clients' timeouts below."""
TIMEOUT_S = 0.3
OPENAI = f"openai:{FAKE_MODELS['openai']}"


def read_json(result: Any) -> Any:
    return json.loads(result.contents[0].text)


def ledger_rows(path: Path, request_id: str) -> list[dict[str, Any]]:
    """The request's rows, read from the SQLite file itself."""
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM requests WHERE id = ?", (request_id,))]


async def only_kept(engine: Engine) -> Any:
    """The one call the engine has kept, once it has ended (waited for, not slept for)."""
    with anyio.fail_after(30):
        while not (calls := engine.answers.listing(tag=None)):
            await anyio.sleep(0.01)
        assert len(calls) == 1
        await calls[0].done.wait()
    return calls[0]


# -- the store --------------------------------------------------------------------------------


async def test_an_answer_expires_keep_answers_s_after_its_call_ends() -> None:
    clock = ManualClock()
    answers = Answers(60, clock=clock)
    kept = answers.start("a" * 32, "t")
    clock.advance(100)  # a call under way never expires
    assert answers.get(kept.request_id, tag=None) is kept
    answers.failed(kept, NoRoute("nothing fits", {}))
    clock.advance(59)
    assert answers.get(kept.request_id, tag="t") is kept
    clock.advance(1)
    assert answers.get(kept.request_id, tag=None) is None
    assert answers.listing(tag=None) == []


async def test_the_store_is_bounded_by_count_and_bytes_oldest_ended_first() -> None:
    answers = Answers(3600, max_kept=3, max_bytes=10 * ENTRY_BYTES)
    ids = [f"{i:032x}" for i in range(5)]
    for rid in ids:
        answers.answered(answers.start(rid, "t"), OPENAI, {"text": "x"}, "x")
    assert [k.request_id for k in answers.listing(tag=None)] == ids[:1:-1]  # newest first, the first two evicted
    big = answers.start("b" * 32, "t")
    answers.answered(big, OPENAI, {"text": "y" * (8 * ENTRY_BYTES)}, "y")
    assert answers.stats()["bytes"] <= 10 * ENTRY_BYTES
    assert answers.get(big.request_id, tag=None) is big


async def test_keep_answers_s_is_validated_by_name(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="keep_answers_s"):
        settings_from_dict({"ledger": {"path": str(tmp_path / "l.db"), "keep_answers_s": -1}}, source="test")
    off = settings_from_dict({"ledger": {"path": str(tmp_path / "l.db"), "keep_answers_s": 0}}, source="test")
    assert off.ledger.keep_answers_s == 0


# -- a client that gives up ---------------------------------------------------------------------


@pytest.fixture
def slow_engine_settings(tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    fakes["openai"].reply(text="the slow answer", delay=SLOW_S)
    return settings_for_fakes(tmp_path, fakes, monkeypatch, timeout_s=30)


async def test_a_python_client_that_times_out_finds_the_answer_kept_and_billed_once(
        slow_engine_settings: Any, tmp_path: Path) -> None:
    engine = Engine(slow_engine_settings)
    try:
        async with Client(create_server(engine)) as client:
            with pytest.raises(Exception):  # noqa: B017 - the SDK's timeout error, whatever its type
                await client.call_tool("complete", {"prompt": "take your time", "model": OPENAI, "tag": "slow"},
                                       read_timeout_seconds=TIMEOUT_S)
            kept = await only_kept(engine)
            listed = read_json(await client.read_resource("llm-router://answers"))["answers"]
            assert [(a["request_id"], a["status"], a["model"]) for a in listed] == [(kept.request_id, "ok", OPENAI)]
            assert listed[0]["first_line"] == "the slow answer"
            one = read_json(await client.read_resource(f"llm-router://answers/{kept.request_id}"))
    finally:
        await engine.aclose()
    assert one["status"] == "ok" and one["model"] == OPENAI and one["expires"] > one["created"]
    result = one["result"]
    assert "isError" not in result and result["structuredContent"]["text"] == "the slow answer"
    assert f"request {kept.request_id}" in result["content"][0]["text"]
    rows = ledger_rows(tmp_path / "ledger.db", kept.request_id)
    assert [(r["status"], r["tag"], r["input_tokens"], r["output_tokens"]) for r in rows] == [("ok", "slow", 12, 8)]
    entry = engine.catalog.entries[OPENAI]
    assert rows[0]["cost_nusd"] == entry.cost_nusd(_usage(12, 8)) > 0  # the fake's usage at the model's price
    assert Decimal(result["structuredContent"]["cost_usd"]) * 10**9 == rows[0]["cost_nusd"]


def _usage(input_tokens: int, output_tokens: int) -> Any:
    from llm_router.types import Usage

    return Usage(input_tokens=input_tokens, output_tokens=output_tokens)


async def test_on_cancel_abort_cancels_the_call_frees_its_hold_and_leaves_one_cancelled_row(
        slow_engine_settings: Any, tmp_path: Path) -> None:
    engine = Engine(slow_engine_settings)
    try:
        async with Client(create_server(engine)) as client:
            with pytest.raises(Exception):  # noqa: B017
                await client.call_tool("complete", {"prompt": "take your time", "model": OPENAI, "on_cancel": "abort"},
                                       read_timeout_seconds=TIMEOUT_S)
            kept = await only_kept(engine)
            one = read_json(await client.read_resource(f"llm-router://answers/{kept.request_id}"))
            assert held_by_calls(engine) == 0
    finally:
        await engine.aclose()
    assert one["status"] == "cancelled" and one["result"] is None
    rows = ledger_rows(tmp_path / "ledger.db", kept.request_id)
    assert [(r["status"], r["cost_nusd"]) for r in rows] == [("cancelled", 0)]


async def test_an_expired_or_unknown_answer_is_not_found_saying_what_is_kept(engine: Engine) -> None:
    clock = ManualClock()
    engine.answers.clock = clock
    async with Client(create_server(engine)) as client:
        done = await client.call_tool("complete", {"prompt": "hello"})
        rid = done.structured_content["request_id"]
        assert read_json(await client.read_resource(f"llm-router://answers/{rid}"))["status"] == "ok"
        clock.advance(engine.answers.keep_s)
        for uri in (f"llm-router://answers/{rid}", "llm-router://answers/" + "0" * 32):
            with pytest.raises(MCPError) as e:
                await client.read_resource(uri)
            assert e.value.error.code == RESOURCE_NOT_FOUND
            assert "kept 3600 s after it ends, and 0 are kept for this caller" in e.value.error.message
        assert read_json(await client.read_resource("llm-router://answers"))["answers"] == []


async def test_a_member_reads_only_its_own_tags_answers(settings: Any) -> None:
    engine = Engine(settings)
    try:
        with serve(engine, tokens=Tokens([("alice", "tok-alice-1234567890"), ("bob", "tok-bob-1234567890")])) as url:
            async with mcp_client(url, "tok-alice-1234567890") as alice, mcp_client(url, "tok-bob-1234567890") as bob:
                done = await alice.call_tool("complete", {"prompt": "mine"})
                rid = done.structured_content["request_id"]
                mine = read_json(await alice.read_resource(f"llm-router://answers/{rid}"))
                assert mine["status"] == "ok" and mine["result"]["structuredContent"]["request_id"] == rid
                assert [a["request_id"] for a in read_json(await alice.read_resource("llm-router://answers"))["answers"]] == [rid]
                assert read_json(await bob.read_resource("llm-router://answers"))["answers"] == []
                messages = []
                for other in (rid, "f" * 32):  # another tag's id and one that never was: the same refusal
                    with pytest.raises(MCPError) as e:
                        await bob.read_resource(f"llm-router://answers/{other}")
                    assert e.value.error.code == RESOURCE_NOT_FOUND
                    messages.append(e.value.error.message.replace(other, "ID"))
                assert messages[0] == messages[1]
    finally:
        await engine.aclose()


async def test_a_cancellation_before_any_model_is_asked_aborts_the_call_with_nothing_spent(
        slow_engine_settings: Any, tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(slow_engine_settings)
    routing = anyio.Event()

    async def routing_never_ends(*args: Any, **kwargs: Any) -> Any:
        routing.set()
        await anyio.sleep_forever()

    monkeypatch.setattr(engine, "decision", routing_never_ends)
    try:
        async with Client(create_server(engine)) as client:
            with pytest.raises(Exception):  # noqa: B017
                await client.call_tool("complete", {"prompt": "never routed", "model": OPENAI},
                                       read_timeout_seconds=TIMEOUT_S)
            assert routing.is_set()
            kept = await only_kept(engine)
    finally:
        await engine.aclose()
    assert (kept.status, kept.asked) == ("cancelled", False)
    assert "no model was asked" in kept.message
    assert fakes["openai"].requests == [] and ledger_rows(tmp_path / "ledger.db", kept.request_id) == []


async def test_shutdown_lets_a_call_its_client_gave_up_on_finish_and_record_its_row(
        slow_engine_settings: Any, tmp_path: Path) -> None:
    engine = Engine(slow_engine_settings)
    try:
        async with Client(create_server(engine)) as client:
            with pytest.raises(Exception):  # noqa: B017
                await client.call_tool("complete", {"prompt": "take your time", "model": OPENAI},
                                       read_timeout_seconds=TIMEOUT_S)
        assert len(engine.background) == 1  # the client is gone; the call is not
    finally:
        await engine.aclose()
    (kept,) = engine.answers.listing(tag=None)
    assert kept.status == "ok" and len(engine.background) == 0
    assert [r["status"] for r in ledger_rows(tmp_path / "ledger.db", kept.request_id)] == ["ok"]


async def test_a_kept_failure_holds_no_traceback_and_keeps_its_facts() -> None:
    answers = Answers(60)
    try:
        raise NoRoute("nothing fits", {"openai:gpt-4o-mini": "no key"})
    except NoRoute as e:
        e.request_id = "r" * 32
        error = e
        kept = answers.start(e.request_id, "t")
        answers.failed(kept, e)
    assert error.__traceback__ is not None
    assert kept.failure is not None and kept.failure.__traceback__ is None
    assert kept.failure.to_dict() == error.to_dict() and str(kept.failure) == str(error)
    assert (kept.status, kept.first_line()) == ("error", str(error).split("\n")[0])


async def test_a_call_cancelled_while_its_request_waits_is_a_cancelled_error_not_a_bug(
        slow_engine_settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``tasks/cancel`` on the id, or shutdown, cancels a call whose request still waits: that
    request ends with the call's cancellation, not with "failed unexpectedly"."""
    engine = Engine(slow_engine_settings)
    try:
        async with Client(create_server(engine)) as client, anyio.create_task_group() as tg:
            got: list[Any] = []

            async def ask() -> None:
                got.append(await client.call_tool("complete", {"prompt": "take your time", "model": OPENAI}))

            tg.start_soon(ask)
            with anyio.fail_after(30):
                while not (calls := engine.answers.listing(tag=None)) or not calls[0].asked:
                    await anyio.sleep(0.01)
            assert calls[0].scope is not None
            calls[0].scope.cancel()  # what tasks/cancel does with the id
        (result,) = got
        assert result.is_error and result.meta["llm-router/error"]["code"] == "cancelled"
        assert "unexpectedly" not in result.content[0].text
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        assert [r["status"] for r in ledger_rows(tmp_path / "ledger.db", calls[0].request_id)] == ["cancelled"]
        assert held_by_calls(engine) == 0
    finally:
        await engine.aclose()
