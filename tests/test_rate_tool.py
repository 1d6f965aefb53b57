"""The ``rate`` tool over real MCP sessions: stored, replaced, refused for bad input and for
another tag's request, and fed into the estimates ``llm-router://providers`` shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client

from llm_router.engine import Engine
from llm_router.mcp_server import PROVIDERS_URI, create_server
from llm_router.mcp_surface import RATE_TOOL

from .http_server import mcp_client, serve
from .test_roles import ALICE, BOB, OPS, role_engine, tokens

pytestmark = pytest.mark.anyio


async def answered(client: Client, **args: Any) -> str:
    result = await client.call_tool("complete", {"prompt": "name three colours", "task_type": "listing", **args})
    assert not result.is_error, result.content
    return str(result.structured_content["request_id"])


def error_text(result: Any) -> str:
    assert result.is_error
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_rate_stores_returns_and_replaces(client: Client, engine: Engine) -> None:
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert "rate" in listed and "checked" in listed["rate"].description
    rid = await answered(client, model="openai:gpt-4o-mini")
    first = await client.call_tool("rate", {"request_id": rid, "score": 2, "comment": "missed one — ünïcode ok"})
    assert not first.is_error, first.content
    jsonschema.validate(first.structured_content, RATE_TOOL.output_schema)
    rating, estimate = first.structured_content["rating"], first.structured_content["estimate"]
    assert rating == {**rating, "request_id": rid, "score": 2, "model": "openai:gpt-4o-mini", "task_type": "listing",
                      "replaced": False}
    assert rating["comment"] == "missed one — ünïcode ok"
    assert estimate["model"] == "openai:gpt-4o-mini" and estimate["ratings"] == 1 and 0 < estimate["confidence"] < 1
    assert "Rated 2/5" in first.content[0].text
    second = await client.call_tool("rate", {"request_id": rid, "score": 5})
    assert second.structured_content["rating"]["replaced"] is True
    assert second.structured_content["rating"]["previous_score"] == 2
    assert second.structured_content["estimate"]["ratings"] == 1
    assert second.structured_content["estimate"]["estimate"] > estimate["estimate"]
    rows = engine.ledger.query("SELECT source, score, comment FROM ratings WHERE request_id = ?", [rid])
    assert rows == [{"source": "caller", "score": 5.0, "comment": None}]
    shown = json.loads((await client.read_resource(PROVIDERS_URI)).contents[0].text)
    assert shown["quality"]["judge"] is None and shown["quality"]["target"] == 0.95
    assert set(shown["quality"]["adaptive"]) >= {"calls", "explored"}
    providers = shown["providers"]
    quality = {m["model"]: m["quality"] for p in providers for m in p["models"]}
    assert quality["openai:gpt-4o-mini"]["by_task_type"]["listing"]["ratings"] == 1
    assert quality["openai:gpt-4o"]["overall"]["ratings"] == 0


@pytest.mark.parametrize(("args", "field", "says"), [
    ({"score": 0}, "score", "1 to 5"),
    ({"score": 6}, "score", "1 to 5"),
    ({"score": True}, "score", "whole number"),
    ({"score": 4.5}, "score", "whole number"),
    ({"score": 3, "comment": "x" * 2001}, "comment", "2000"),
    ({"score": 3, "stars": 5}, "stars", ""),
])
async def test_bad_arguments_name_the_field(client: Client, args: dict[str, Any], field: str, says: str) -> None:
    rid = await answered(client)
    text = error_text(await client.call_tool("rate", {"request_id": rid, **args}))
    assert field in text and says in text
    assert "pydantic" not in text.lower() and "validation error" not in text.lower()


async def test_unknown_and_unanswered_requests_are_refused(client: Client, engine: Engine) -> None:
    text = error_text(await client.call_tool("rate", {"request_id": "0" * 32, "score": 3}))
    assert "request_id" in text and "no request" in text
    text = error_text(await client.call_tool("rate", {"request_id": "not-an-id", "score": 3}))
    assert "request_id" in text and "not a request id" in text
    refused = await client.call_tool("complete", {"prompt": "hi", "max_cost_usd": 0})
    rid = refused.meta["llm-router/error"]["request_id"] if refused.meta else None
    assert rid, refused
    text = error_text(await client.call_tool("rate", {"request_id": rid, "score": 3}))
    assert "no answer to rate" in text
    assert engine.ledger.query("SELECT count(*) AS n FROM ratings") == [{"n": 0}]


async def test_a_member_rates_only_its_own_tags_requests(tmp_path: Path) -> None:
    async with role_engine({"path": str(tmp_path / "ledger.db")}) as engine:
        with serve(engine, tokens=tokens()) as url:
            async with mcp_client(url, ALICE) as alice, mcp_client(url, BOB) as bob, mcp_client(url, OPS) as ops:
                mine = await answered(alice)
                bobs = await answered(bob)
                assert not (await alice.call_tool("rate", {"request_id": mine, "score": 4})).is_error
                refused = await alice.call_tool("rate", {"request_id": bobs, "score": 1})
                text = error_text(refused)
                assert "another tag" in text and "member" in text
                assert refused.meta["llm-router/error"]["code"] == "forbidden"
                assert not (await ops.call_tool("rate", {"request_id": bobs, "score": 2})).is_error
        rows = engine.ledger.query("SELECT request_id, tag, score FROM ratings ORDER BY tag")
    assert rows == [{"request_id": mine, "tag": "alice", "score": 4.0}, {"request_id": bobs, "tag": "bob", "score": 2.0}]


async def test_rate_over_stdio_like_session_uses_the_same_engine(engine: Engine) -> None:
    async with Client(create_server(engine)) as c:
        rid = await answered(c, model="anthropic:claude-haiku-4-5")
        result = await c.call_tool("rate", {"request_id": rid.upper(), "score": 4})
        assert not result.is_error, result.content
    assert engine.board.estimate("anthropic:claude-haiku-4-5", "listing").ratings == 1


async def test_a_member_sees_no_task_type_another_tag_rated(tmp_path: Path) -> None:
    async with role_engine({"path": str(tmp_path / "ledger.db")}) as engine:
        with serve(engine, tokens=tokens()) as url:
            async with mcp_client(url, ALICE) as alice, mcp_client(url, BOB) as bob, mcp_client(url, OPS) as ops:
                secret = await answered(bob, task_type="acme-merger-review")
                assert not (await bob.call_tool("rate", {"request_id": secret, "score": 4})).is_error
                seen_by_alice = (await alice.read_resource(PROVIDERS_URI)).contents[0].text
                seen_by_ops = (await ops.read_resource(PROVIDERS_URI)).contents[0].text
    assert "acme-merger-review" not in seen_by_alice
    assert "acme-merger-review" in seen_by_ops
    models = [m for p in json.loads(seen_by_alice)["providers"] for m in p["models"]]
    assert all("by_task_type" not in m["quality"] and "overall" in m["quality"] for m in models)


@pytest.mark.parametrize("comment", ["a\x00b", "bell\x07", "lone \ud800 half"])
async def test_a_comment_that_cannot_be_stored_as_text_is_refused_by_name(client: Client, engine: Engine,
                                                                          comment: str) -> None:
    rid = await answered(client)
    result = await engine.rate(await engine.rated_request(rid), 3, "fine\nand\ttabbed")
    assert result.rating["comment"] == "fine\nand\ttabbed"
    from llm_router.types import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        await engine.rate(await engine.rated_request(rid), 3, comment)
    assert refused.value.field == "comment"
