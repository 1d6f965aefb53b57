"""Roles for team tokens (``tag=token[:role]``): admin, member (the default) and metrics — over
real HTTP (uvicorn on loopback, a real MCP client), for every tool, every resource and /metrics.

Any token could once do anything: remove the global cap, raise its own tag's, zero another's, read
every tag's spend, rows and prompts, and add a metrics series per ``set_budget`` call."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ResourceUpdatedNotification

from llm_router.access import Access, error_view, mask
from llm_router.calls import CompleteArgs
from llm_router.config import Settings, settings_from_dict
from llm_router.defaults import demo_config
from llm_router.engine import Engine
from llm_router.http_app import Tokens, load_tokens, parse_tokens
from llm_router.mcp_server import BUDGETS_URI, LEDGER_URI, PROVIDERS_URI, create_server
from llm_router.types import BudgetExceeded, ConfigError, LedgerBusy, SpendNotRecorded

from .backends import Store
from .handshake import ping, subscribe
from .http_server import mcp_client, serve

pytestmark = pytest.mark.anyio

ALICE = "alice-member-token-0123456789"
BOB = "bob-member-token-9876543210ab"
OPS = "ops-admin-token-0123456789abc"
PROM = "prom-metrics-token-0123456789"
TOKENS_ENV = f"alice={ALICE},bob={BOB}:member,ops={OPS}:admin,prom={PROM}:metrics"
BOB_PROMPT = "bob-private-prompt: the Initech merger closes on Friday"
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
SPEND_KEYS = {"spent_usd", "reserved_usd", "remaining_usd", "percent_used", "reclaimed"}


def tokens() -> Tokens:
    return load_tokens({"LLM_ROUTER_HTTP_TOKENS": TOKENS_ENV})


def role_settings(ledger: dict[str, Any]) -> Settings:
    """The demo's mock providers (no latency, no faults), prompts stored, and a daily limit per tag."""
    data = demo_config("unused")
    data["ledger"] = ledger | {"store_prompts": True}
    for p in data["providers"]:
        p["mock"] = {"imitates": p["mock"]["imitates"]}
    data["resilience"] = {"max_retries": 0}
    data["budget"] = {"daily_usd": 5, "monthly_usd": 50, "per_request_usd": 0.5,
                      "tags": {"alice": {"daily_usd": 1}, "bob": {"daily_usd": 2}}}
    return settings_from_dict(data, source="test")


@asynccontextmanager
async def role_engine(ledger: dict[str, Any]) -> AsyncIterator[Engine]:
    engine = Engine(role_settings(ledger))
    try:
        yield engine
    finally:
        await engine.aclose()


def everything(result: Any) -> str:
    """All a client got from a tool call, as one text to search."""
    return json.dumps({"content": [getattr(c, "text", None) for c in result.content],
                       "structured": result.structured_content, "meta": result.meta}, default=str)


def error_of(result: Any) -> dict[str, Any]:
    assert result.is_error, result.content
    return result.meta["llm-router/error"]


async def read(client: Client, uri: str) -> tuple[Any, str]:
    result = await client.read_resource(uri)
    text = result.contents[0].text
    return json.loads(text), text


def limits_seen(obj: Any) -> list[dict[str, Any]]:
    """Every limit (a dict with a scope and a period) anywhere in ``obj``."""
    found: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        if "scope" in obj and "period" in obj:
            found.append(obj)
        for v in obj.values():
            found += limits_seen(v)
    elif isinstance(obj, list):
        for v in obj:
            found += limits_seen(v)
    return found


def assert_alice_sees_nothing_of_others(text: str, parsed: Any, *, named_bob: bool = False) -> None:
    """No other tag's name, prompt or spend: no limit but alice's own shows what was spent, held or is
    left, and no text quotes a shared limit's spend. (``named_bob``: alice's own request named the
    tag, which its refusal repeats.)"""
    if not named_bob:
        assert "bob" not in text.lower(), text[:3000]
    assert "Initech" not in text, text[:3000]
    for limit in limits_seen(parsed):
        if limit["scope"] != "tag:alice":
            assert not SPEND_KEYS & set(limit), limit
            assert limit["scope"] in ("global",) or limit["scope"].startswith("provider:"), limit
    for m in re.finditer(r"(\S+ (?:daily|monthly)) has \$[0-9.]+ left|budget (\S+ (?:daily|monthly)) of \$[0-9.]+ "
                         r"(?:would be exceeded: \$|is \d+% spent)", text):
        assert (m[1] or m[2]).startswith("tag:alice "), m[0]


# -- the syntax, in both sources -----------------------------------------------------------------


def test_a_token_carries_its_role_after_its_last_colon_in_the_variable_and_in_the_file(tmp_path: Path) -> None:
    colons = "abc:def:0123456789-xyz:9"  # ':' inside a token, which tokens made before roles may hold
    entries = [f"alice={ALICE}", f" ops = {OPS}:admin ", f"prom={PROM} : metrics", f"bob={BOB}:member",
               f"old={colons}", f"both={colons}Z:admin"]
    expected = [("alice", ALICE, "member"), ("ops", OPS, "admin"), ("prom", PROM, "metrics"), ("bob", BOB, "member"),
                ("old", colons, "member"), ("both", colons + "Z", "admin")]
    assert parse_tokens(",".join(entries), "env") == expected
    file = tmp_path / "tokens"
    file.write_text("# the team: tag=token[:role]\n" + "\n".join(entries) + "\n")
    for loaded in (load_tokens({"LLM_ROUTER_HTTP_TOKENS_FILE": str(file)}),
                   load_tokens({"LLM_ROUTER_HTTP_TOKENS": ",".join(entries)})):
        assert loaded.roles() == {"member": 3, "admin": 2, "metrics": 1}
        assert loaded.match(colons).access == Access("member", "old")  # type: ignore[union-attr]
        assert loaded.match(colons + "Z").access == Access("admin", "both")  # type: ignore[union-attr]
        assert loaded.match(OPS).access == Access("admin", "ops")  # type: ignore[union-attr]
        assert loaded.match(OPS + ":admin") is None, "the role is not part of the token"
    with pytest.raises(ConfigError, match="repeats"):  # one token, whatever the role each entry gives it
        parse_tokens(f"ops={OPS}:admin,alice={OPS}", "env")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (f"ops={OPS}:admni", "entry 2 (tag 'ops') names an unknown role after its last ':' (did you mean 'admin'?)"),
        (f"ops={OPS}:Admin", "(did you mean 'admin'?)"),
        (f"ops={OPS}:root", "entry 2 (tag 'ops') names an unknown role after its last ':'; a role is one of member, admin, metrics"),
        (f"ops={OPS}:", "entry 2 (tag 'ops') names no role after its last ':'"),
        (f"ops={OPS[:6]}:admin", "at least 16"),
    ],
)
def test_an_unknown_or_empty_role_is_a_config_error_naming_the_entry_and_never_the_token(
    tmp_path: Path, entry: str, expected: str
) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"alice={ALICE}\n{entry}\n")
    for env, source in (({"LLM_ROUTER_HTTP_TOKENS": f"alice={ALICE},{entry}"}, "$LLM_ROUTER_HTTP_TOKENS"),
                        ({"LLM_ROUTER_HTTP_TOKENS_FILE": str(file)}, str(file))):
        with pytest.raises(ConfigError) as caught:
            load_tokens(env)
        message = str(caught.value)
        assert expected in message and message.startswith(source), message
        assert OPS[:8] not in message and ALICE[:8] not in message, message


# -- what a member sees -----------------------------------------------------------------------------


async def test_a_member_sees_none_of_another_tags_rows_prompts_or_spend_in_any_tool_or_resource(store: Store) -> None:
    logs: list[Any] = []
    progress: list[str] = []

    async def on_log(params: Any) -> None:
        logs.append(params.data)

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with role_engine(store.config()) as engine:
        with serve(engine, tokens=tokens()) as url:
            async with mcp_client(url, BOB) as bob:
                for _ in range(2):
                    assert not (await bob.call_tool("complete", {"prompt": BOB_PROMPT, "model": "openai:gpt-4o"})).is_error
            async with mcp_client(url, OPS) as ops:
                (admin_budgets, _) = await read(ops, BUDGETS_URI)
                spent = Decimal(next(b["spent_usd"] for b in admin_budgets["budgets"]
                                     if (b["scope"], b["period"]) == ("global", "daily")))
                assert spent > 0
                # The global day now has $0.002 left: a dear model's worst case no longer fits in it.
                assert not (await ops.call_tool("set_budget", {"scope": "global", "period": "daily",
                                                               "limit_usd": str(spent + Decimal("0.002"))})).is_error

            seen: list[tuple[str, Any, bool]] = []  # (what alice got, parsed, named bob) for every tool and resource
            async with mcp_client(url, ALICE, mode="legacy", logging_callback=on_log) as alice:
                answered = await alice.call_tool("complete", {"prompt": "alice asks", "max_tokens": 4000,
                                                              "model": ["openai:gpt-4o", "ollama:llama3.1"]},
                                                 progress_callback=on_progress)
                refused = await alice.call_tool("complete", {"prompt": "alice asks", "model": "openai:gpt-4o",
                                                             "max_tokens": 4000})
                explained = await alice.call_tool("route_explain", {"prompt": "alice asks", "max_tokens": 4000})
                report = await alice.call_tool("cost_report", {"period": "today", "group_by": "tag"})
                other_report = await alice.call_tool("cost_report", {"period": "today", "tag": "bob"})
                refusals = {
                    what: await alice.call_tool("set_budget", args)
                    for what, args in {
                        "global cap removed": {"scope": "global", "period": "daily", "limit_usd": None},
                        "global cap raised": {"scope": "global", "period": "monthly", "limit_usd": 1000},
                        "another tag zeroed": {"scope": "tag:bob", "period": "daily", "limit_usd": 0},
                        "provider capped": {"scope": "provider:openai", "period": "daily", "limit_usd": 0},
                        "own tag raised": {"scope": "tag:alice", "period": "daily", "limit_usd": 2},
                        "own tag removed": {"scope": "tag:alice", "period": "daily", "limit_usd": None},
                    }.items()
                }
                lowered = await alice.call_tool("set_budget", {"scope": "tag:alice", "period": "daily", "limit_usd": 0.5})
                added = await alice.call_tool("set_budget", {"scope": "tag:alice", "period": "monthly", "limit_usd": 3})
                raised_back = await alice.call_tool("set_budget", {"scope": "tag:alice", "period": "daily", "limit_usd": 0.75})
                for result in (answered, refused, explained, report, other_report, lowered, added, raised_back,
                               *refusals.values()):
                    named_bob = result is other_report or result is refusals["another tag zeroed"]
                    seen.append((everything(result), result.structured_content or result.meta, named_bob))
                day = report.structured_content["period"]["first_day"]
                for uri in (PROVIDERS_URI, LEDGER_URI, f"{LEDGER_URI}/{day}", BUDGETS_URI):
                    parsed, text = await read(alice, uri)
                    seen.append((text, parsed, False))
                (alice_ledger, _), (alice_budgets, _) = await read(alice, LEDGER_URI), await read(alice, BUDGETS_URI)
            seen.append((json.dumps(logs), logs, False))
            seen.append((json.dumps(progress), progress, False))

            async with mcp_client(url, OPS) as ops:
                (admin_ledger, admin_ledger_text) = await read(ops, LEDGER_URI)
                (admin_budgets, _) = await read(ops, BUDGETS_URI)
                admin_explained = await ops.call_tool("route_explain", {"prompt": "ops asks", "max_tokens": 4000})
                admin_report = await ops.call_tool("cost_report", {"period": "today", "tag": "bob"})

    # What the admin sees shows the search below would find a leak: bob's rows, prompt and spend exist.
    assert BOB_PROMPT in admin_ledger_text and {r["tag"] for r in admin_ledger["entries"]} == {"alice", "bob"}
    assert Decimal(admin_report.structured_content["totals"]["cost_usd"]) > 0
    assert re.search(r"global daily has \$[0-9.]+ left", everything(admin_explained))
    assert all(SPEND_KEYS - {"reclaimed"} <= set(b) for b in admin_budgets["budgets"] if b["period"] != "per_request")

    assert len(seen) == 20
    for text, parsed, named_bob in seen:
        assert_alice_sees_nothing_of_others(text, parsed, named_bob=named_bob)

    # complete: billed to alice (whatever tag it names), the dear model skipped without the figure.
    assert not answered.is_error and answered.structured_content["model"] == "ollama:llama3.1"
    skipped = answered.structured_content["attempts"][0]
    assert skipped["outcome"] == "skipped" and "global daily has too little left" in skipped["error"], skipped
    tightest = answered.structured_content["budget"]["tightest"]
    assert (tightest["scope"], tightest["period"]) == ("global", "daily") and "tier" in tightest, tightest
    refusal = error_of(refused)
    assert refusal["code"] == "budget_exceeded" and refusal["limit"] == "global daily" and refusal["shared"] is True
    assert "shared by every tag, would be exceeded" in refused.content[0].text and "spent_usd" not in refusal
    assert any("budget refusal" in entry["message"] for entry in logs)
    # route_explain: the same exclusions, without what the shared limit has left.
    assert any(x["reason"] == "over_budget" and "global daily has too little left" in x["detail"]
               for x in explained.structured_content["excluded"]), explained.structured_content["excluded"]
    # cost_report: its own tag only; another tag's is refused by name.
    assert report.structured_content["filters"] == {"tag": "alice"}
    assert [r["tag"] for r in report.structured_content["rows"]] == ["alice"]
    assert error_of(other_report)["code"] == "forbidden" and error_of(other_report)["field"] == "tag"
    # set_budget: lower its own tag's limit (or set one where there was none), nothing else.
    for what, result in refusals.items():
        facts = error_of(result)
        assert facts["code"] == "forbidden" and facts["role"] == "member", what
        assert "a member token may" in result.content[0].text and "lower, never raise or remove" in facts["may"], what
    assert "raising the tag:alice daily limit from $1 to $2" in refusals["own tag raised"].content[0].text
    assert not lowered.is_error and not added.is_error, (lowered.content, added.content)
    assert "raising the tag:alice daily limit from $0.5 to $0.75" in raised_back.content[0].text
    # The ledger: its own rows (prompts included), and its own limits whole.
    assert {r["tag"] for r in alice_ledger["entries"]} == {"alice"} and len(alice_ledger["entries"]) == 2
    assert any(r["prompt"] and "alice asks" in r["prompt"] for r in alice_ledger["entries"])
    own = {b["period"]: b for b in alice_budgets["budgets"] if b["scope"] == "tag:alice"}
    assert own["daily"]["limit_usd"] == "0.5" and "spent_usd" in own["daily"] and own["monthly"]["limit_usd"] == "3"
    shared = next(b for b in alice_budgets["budgets"] if (b["scope"], b["period"]) == ("global", "daily"))
    assert {"tier", "limit_usd", "resets_at", "note"} <= set(shared), shared
    # Nothing a member tried changed anyone else's limits.
    admin_limits = {(b["scope"], b["period"]): b["limit_usd"] for b in admin_budgets["budgets"]}
    assert admin_limits[("global", "monthly")] == "50" and admin_limits[("tag:bob", "daily")] == "2"
    assert Decimal(admin_limits[("global", "daily")]) == spent + Decimal("0.002")
    assert ("provider:openai", "daily") not in admin_limits


async def test_a_member_subscribed_to_the_ledger_reads_only_its_own_rows_after_another_tags_call(engine: Engine) -> None:
    updates: list[str] = []
    raw: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(message.params.uri)
            raw.append(message.model_dump_json())

    with serve(engine, tokens=tokens()) as url:
        async with mcp_client(url, ALICE, mode="legacy", message_handler=on_message) as alice:
            assert not (await alice.call_tool("complete", {"prompt": "alice asks"})).is_error
            await subscribe(alice, LEDGER_URI)
            async with mcp_client(url, BOB) as bob:
                assert not (await bob.call_tool("complete", {"prompt": BOB_PROMPT})).is_error
            with anyio.fail_after(10):
                while LEDGER_URI not in updates:
                    await ping(alice)
            (entries, text) = await read(alice, LEDGER_URI)
    assert [r["tag"] for r in entries["entries"]] == ["alice"]
    assert "bob" not in text and "Initech" not in text
    assert raw and all("bob" not in r and "Initech" not in r for r in raw), "a notification carries only the URI"
    assert sorted(r["tag"] for r in engine.ledger.rows()) == ["alice", "bob"]


# -- the metrics role, and /metrics -----------------------------------------------------------------


def _rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


async def test_a_metrics_token_reads_only_metrics_and_every_mcp_request_is_refused(tmp_path: Path) -> None:
    init = _rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                               "clientInfo": {"name": "t", "version": "1"}})
    requests = [init, _rpc("tools/list", {}),
                *(_rpc("tools/call", {"name": tool, "arguments": {}}) for tool in
                  ("complete", "route_explain", "cost_report", "set_budget")),
                *(_rpc("resources/read", {"uri": uri}) for uri in
                  (PROVIDERS_URI, LEDGER_URI, f"{LEDGER_URI}/2026-01-01", BUDGETS_URI))]
    async with role_engine({"path": str(tmp_path / "ledger.db")}) as engine:
        await _metrics_role(engine, requests, init)


async def _metrics_role(engine: Engine, requests: list[dict[str, Any]], init: dict[str, Any]) -> None:
    with serve(engine, tokens=tokens()) as url:
        async with mcp_client(url, ALICE) as alice:
            assert not (await alice.call_tool("complete", {"prompt": "alice asks"})).is_error
        async with httpx.AsyncClient(timeout=30) as http:
            for body in requests:
                r = await http.post(f"{url}/mcp", json=body, headers=MCP_HEADERS | {"authorization": f"Bearer {PROM}"})
                assert r.status_code == 403, (body["method"], r.status_code, r.text)
                assert r.json()["error"] == "insufficient_scope"
                assert "has the role metrics: it may only read /metrics" in r.json()["error_description"]
                assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
            scraped = await http.get(f"{url}/metrics", headers={"authorization": f"Bearer {PROM}"})
            as_member = await http.get(f"{url}/metrics", headers={"authorization": f"Bearer {ALICE}"})
            as_admin = await http.get(f"{url}/metrics", headers={"authorization": f"Bearer {OPS}"})
            assert (await http.post(f"{url}/mcp", json=init, headers=MCP_HEADERS | {"authorization": f"Bearer {OPS}"})
                    ).status_code == 200
    assert scraped.status_code == 200 and 'llm_router_requests_total{' in scraped.text
    assert 'scope="global"' in scraped.text
    assert "tag:" not in scraped.text and "alice" not in scraped.text, "no tag unless the scraper is an admin"
    assert as_member.status_code == 403 and "has the role member" in as_member.json()["error_description"]
    assert PROM not in scraped.text and ALICE not in as_member.text
    assert as_admin.status_code == 200
    assert 'llm_router_budget_spent_usd{period="daily",scope="tag:alice"}' in as_admin.text


def _series(text: str) -> set[str]:
    return {line.rpartition(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


async def test_300_set_budget_calls_on_new_scopes_add_no_metrics_series(engine: Engine) -> None:
    """Each new tag:NAME limit once added three series (900 for 300 calls): only configured
    providers and the tags the server knows (its tokens', its config's) are labels. The first
    limits go through the tool over HTTP; the rest are stored as the tool stores them (each tool
    call answers with every limit, so 300 of them take 20 s, which proves nothing more)."""
    with serve(engine, tokens=tokens()) as url:
        async with httpx.AsyncClient(timeout=30) as http:

            async def scrape(token: str) -> set[str]:
                r = await http.get(f"{url}/metrics", headers={"authorization": f"Bearer {token}"})
                assert r.status_code == 200
                return _series(r.text)

            async with mcp_client(url, OPS) as ops:
                assert not (await ops.call_tool("complete", {"prompt": "hello"})).is_error
                assert not (await ops.call_tool("set_budget", {"scope": "tag:alice", "period": "daily",
                                                               "limit_usd": 1})).is_error
                before = {token: await scrape(token) for token in (OPS, PROM)}
                for i in range(300):
                    args = {"scope": f"tag:t{i}", "period": ("daily", "monthly")[i % 2], "limit_usd": i + 1}
                    if i < 10:
                        result = await ops.call_tool("set_budget", args)
                        assert not result.is_error, result.content
                    else:
                        await engine.ledger.run(engine.budget.set_limit, args["scope"], args["period"], Decimal(i + 1))
                async with mcp_client(url, ALICE) as alice:  # a member's own tag: a known one
                    assert not (await alice.call_tool("set_budget", {"scope": "tag:alice", "period": "monthly",
                                                                     "limit_usd": 5})).is_error
                after = {token: await scrape(token) for token in (OPS, PROM)}
                budgets = await read(ops, BUDGETS_URI)
    assert len([b for b in budgets[0]["budgets"] if b["scope"].startswith("tag:t")]) == 300, "the limits exist"
    assert after[PROM] == before[PROM]
    assert after[OPS] - before[OPS] == {f'llm_router_budget_{g}{{period="monthly",scope="tag:alice"}}'
                                        for g in ("tier", "spent_usd", "limit_usd")}, "alice is a token's tag"
    assert any('scope="tag:alice"' in s for s in after[OPS]) and not any("tag:t" in s for s in after[OPS])


# -- the one local user -------------------------------------------------------------------------------


async def test_stdio_and_http_without_tokens_are_the_one_local_user_with_every_right(engine: Engine) -> None:
    async with Client(create_server(engine)) as local:  # in memory: what stdio serves
        assert not (await local.call_tool("complete", {"prompt": BOB_PROMPT, "tag": "bob"})).is_error
        assert not (await local.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": None})).is_error
        (budgets, _) = await read(local, BUDGETS_URI)
    assert not any((b["scope"], b["period"]) == ("global", "daily") for b in budgets["budgets"])
    with serve(engine) as url:
        async with mcp_client(url) as local:
            assert not (await local.call_tool("complete", {"prompt": "alice asks", "tag": "alice"})).is_error
            assert not (await local.call_tool("set_budget", {"scope": "tag:bob", "period": "daily", "limit_usd": 9})).is_error
            (ledger, text) = await read(local, LEDGER_URI)
            (budgets, _) = await read(local, BUDGETS_URI)
        metrics = httpx.get(f"{url}/metrics", timeout=30)
    assert {r["tag"] for r in ledger["entries"]} == {"alice", "bob"}
    assert all(SPEND_KEYS - {"reclaimed"} <= set(b) for b in budgets["budgets"] if b["period"] != "per_request")
    assert metrics.status_code == 200 and 'scope="global"' in metrics.text


# -- the masking, against the messages as the router words them ---------------------------------------


async def routing_no_room_detail(tmp_path: Path) -> str:
    """What routing itself says of a model whose worst case does not fit in the global day (built
    by routing.py's own code, from a call routed on a ledger whose global day has $0.001234 left)."""
    async with role_engine({"path": str(tmp_path / "ledger.db")}) as engine:
        await engine.set_budget("global", "daily", Decimal("0.001234"))
        decision = await engine.decision(engine.prepare(CompleteArgs(prompt="alice asks", max_tokens=4000,
                                                                     model="openai:gpt-4o")))
    (detail,) = [x.detail for x in decision.excluded if x.reason == "over_budget"]
    return detail


async def test_a_shared_limits_spend_is_masked_in_the_router_own_wording_and_a_members_own_is_kept(
    tmp_path: Path,
) -> None:
    alice = Access("member", "alice")
    shared = str(BudgetExceeded(limit_name="global daily", limit_nusd=5_000_000_000, spent_nusd=4_123_456_789,
                                reserved_nusd=300_000_000, needed_nusd=900_000_000, resets_at="2026-01-02T00:00:00+00:00"))
    restricted = str(BudgetExceeded(limit_name="provider:openai monthly", limit_nusd=5_000_000_000,
                                    spent_nusd=4_700_000_001, reserved_nusd=0, needed_nusd=1, resets_at=None,
                                    restricted=True))
    own = str(BudgetExceeded(limit_name="tag:alice daily", limit_nusd=1_000_000_000, spent_nusd=987_654_321,
                             reserved_nusd=0, needed_nusd=900_000_000, resets_at=None))
    detail = await routing_no_room_detail(tmp_path)
    for text, secret in ((shared, "4.123456789"), (shared, "0.3"), (restricted, "4.700000001"), (restricted, "94%"),
                         (detail, "0.001234")):
        assert secret in text, "the router's own wording holds the figure"
        assert secret not in mask(alice, text), mask(alice, text)
    assert "budget global daily of $5 (shared by every tag) would be exceeded: this call may cost up to $0.9" in mask(alice, shared)
    assert "is 90% spent or more" in mask(alice, restricted)
    assert mask(alice, detail) == detail.replace("has $0.001234 left", "has too little left"), mask(alice, detail)
    assert mask(alice, own) == own and "0.987654321" in own
    assert mask(Access("admin", "ops"), shared) == shared
    assert mask(Access("member", "ali"), own) != own, "another tag that merely starts the same is not one's own"


def test_a_members_refusal_by_its_own_tags_limit_keeps_its_figures_and_says_an_admin_must_raise_it() -> None:
    refusal = BudgetExceeded(limit_name="tag:alice daily", limit_nusd=1_000_000_000, spent_nusd=987_654_321,
                             reserved_nusd=0, needed_nusd=900_000_000, resets_at=None)
    refusal.request_id = "r1"
    shown = error_view(Access("member", "alice"), refusal)
    assert isinstance(shown, BudgetExceeded) and shown.request_id == "r1"
    assert "0.987654321" in str(shown) and "set_budget" not in str(shown), str(shown)
    assert "Ask an admin to raise the limit" in str(shown)
    assert error_view(Access("admin", "ops"), refusal) is refusal


def test_every_error_a_member_is_shown_has_a_shared_limits_spend_masked_not_only_refusals() -> None:
    """Regression: only refusals, failed chains and no-route errors were masked; a SpendNotRecorded,
    which quotes the refusal that ended its call, showed the shared limit's spent and held."""
    alice = Access("member", "alice")
    refusal = BudgetExceeded(limit_name="global daily", limit_nusd=5_000_000_000, spent_nusd=4_123_456_789,
                             reserved_nusd=300_000_000, needed_nusd=900_000_000, resets_at=None)
    lost = SpendNotRecorded("this call was billed $0.0002, but its spend is not recorded", request_id="r1", cost_nusd=200_000)
    unrecorded = SpendNotRecorded(f"{refusal}. Besides, {lost}", request_id="r1", cost_nusd=200_000)
    assert "4.123456789" in str(unrecorded) and "0.3 held" in str(unrecorded)
    shown = error_view(alice, unrecorded)
    assert type(shown) is SpendNotRecorded and shown.code == "spend_not_recorded"
    assert "4.123456789" not in str(shown) and "0.3 held" not in str(shown), str(shown)
    assert "4.123456789" not in json.dumps(shown.to_dict()), shown.to_dict()
    assert "(shared by every tag) would be exceeded" in str(shown) and "$0.0002" in str(shown)
    assert shown.to_dict() == {**unrecorded.to_dict(), "message": str(shown)}
    assert str(unrecorded).startswith("budget global daily of $5 would be exceeded: $4.123456789 spent"), \
        "the original is left as it was (the admin's, the log's)"
    assert error_view(Access("admin", "ops"), unrecorded) is unrecorded
    busy = LedgerBusy("ledger busy: try again", retry_after=1.0, waited_s=0.5)
    assert error_view(alice, busy) is busy, "an error that quotes no shared figure is shown as it is"


async def test_a_server_built_with_tokens_refuses_a_request_that_comes_without_an_http_request(engine: Engine) -> None:
    """Regression: ``_access`` took any request without an HTTP request for the local admin, even
    on a server built to require tokens: it could remove the global cap and read every tag's rows."""
    async with Client(create_server(engine, tokens=True)) as nobody:  # in memory: no HTTP request
        removed = await nobody.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": None})
        called = await nobody.call_tool("complete", {"prompt": BOB_PROMPT})
        with pytest.raises(MCPError) as caught:
            await nobody.read_resource(LEDGER_URI)
    for result in (removed, called):
        assert error_of(result)["code"] == "forbidden", result.content
        assert "requires a bearer token" in everything(result)
    assert "requires a bearer token" in str(caught.value)
    assert await engine.ledger.run(engine.ledger.rows) == [], "nothing was called or recorded"
    assert ("global", "daily") not in await engine.ledger.run(engine.ledger.budget_overrides)
