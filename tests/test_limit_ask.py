"""Ask before refusing: an admin whose client can show a form is asked whether to raise the limit a
``complete`` would exceed; yes raises it (as ``set_budget`` does) and the call goes on, anything
else is the refusal of old, saying so. Through real client sessions of both eras (in memory, over
HTTP with tokens), the TypeScript SDK 1.x client, and raw retries of a 2026-07-28 tools/call
with request states it did not get from the server."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequestParams, ElicitResult, InputRequiredResult, ResourceUpdatedNotification

from llm_router.access import Access
from llm_router.config import Settings
from llm_router.engine import Engine
from llm_router.http_app import Tokens
from llm_router.limit_ask import ASK_KEY, question_for
from llm_router.mcp_server import create_server
from llm_router.mcp_surface import BUDGETS_URI
from llm_router.types import NUSD_PER_USD, BudgetExceeded

from .conftest import held_by_calls, make_settings
from .handshake import subscribe
from .http_server import mcp_client, serve
from .node_peers import TOKEN, demo_server_command, http_server, require, run_json

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]
"""legacy: the 2025-11-25 handshake (elicitation/create); 2026-07-28: multi round-trip."""
DEAR = {"prompt": "hello", "model": "openai:gpt-4o"}
ADMIN, MEMBER = "ops-admin-token-0123456789ab", "alice-secret-token-0123456789"
TOKENS = Tokens([("ops", ADMIN, "admin"), ("alice", MEMBER)])

Answer = Callable[[ElicitRequestParams], Awaitable[ElicitResult]]


class Asked:
    """An elicitation callback answering as told, and what it was asked."""

    def __init__(self, action: str = "accept", content: dict[str, Any] | None = None) -> None:
        self.action, self.content = action, content
        self.questions: list[ElicitRequestParams] = []

    async def __call__(self, ctx: Any, params: ElicitRequestParams) -> ElicitResult:
        self.questions.append(params)
        if self.action != "accept":
            return ElicitResult(action=self.action)  # type: ignore[arg-type]
        fields = params.requested_schema["properties"]  # type: ignore[union-attr]
        return ElicitResult(action="accept", content=self.content or {k: v["default"] for k, v in fields.items()})


def statuses(engine: Engine) -> list[tuple[str, str]]:
    return sorted((r["status"], r["cost_usd"]) for r in engine.ledger.rows())


async def daily_limit(engine: Engine) -> int | None:
    return await engine.limit_in_force("global", "daily")


@pytest.mark.parametrize("mode", ERAS)
async def test_yes_raises_the_limit_as_set_budget_does_and_the_call_goes_on(engine: Engine, mode: str) -> None:
    asked, updated = Asked(), []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updated.append(message.params.uri)

    async with Client(create_server(engine), mode=mode, elicitation_callback=asked, message_handler=on_message) as c:
        if mode == "legacy":
            await subscribe(c, BUDGETS_URI)
        await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0.001})
        done = await c.call_tool("complete", DEAR)
        budgets = json.loads((await c.read_resource(BUDGETS_URI)).contents[0].text)["budgets"]  # type: ignore[union-attr]
        report = await c.call_tool("cost_report", {"period": "today"})

    assert not done.is_error, done.content
    [question] = asked.questions
    assert question.mode == "form"
    text = question.message
    assert "global daily" in text and "$0.001" in text and "$0 is spent" in text and "held by calls in flight" in text
    schema = question.requested_schema
    assert schema["required"] == ["raise", "limit_usd"] and schema["properties"]["raise"]["type"] == "boolean"
    proposal = Decimal(str(schema["properties"]["limit_usd"]["default"]))
    assert f"${proposal}" in text and "this call may cost up to $" in text
    assert f"global daily limit raised to ${proposal}" in done.content[0].text  # type: ignore[union-attr]

    # Persisted through the engine: the ledger, the resource and cost_report all show it.
    assert await daily_limit(engine) == int(proposal * NUSD_PER_USD)
    daily = next(b for b in budgets if b["scope"] == "global" and b["period"] == "daily")
    assert Decimal(daily["limit_usd"]) == proposal and daily["source"] == "set_budget"
    assert any(b["scope"] == "global" and Decimal(b["limit_usd"]) == proposal
               for b in report.structured_content["budgets"])  # type: ignore[index]
    if mode == "legacy":
        assert updated.count(BUDGETS_URI) >= 2  # set_budget's, and the raise's
    # The refused try keeps its row (nothing billed, nothing held); the call made after, once.
    [(refused, nothing), (ok, cost)] = sorted(statuses(engine), key=lambda s: s[0] != "refused")
    assert (refused, nothing) == ("refused", "0") and ok == "ok" and Decimal(cost) > 0
    assert held_by_calls(engine) == 0


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize(("action", "said"), [("decline", "declined"), ("cancel", "cancelled")])
async def test_no_or_cancel_is_the_refusal_of_old_saying_so(engine: Engine, mode: str, action: str, said: str) -> None:
    asked = Asked(action)
    async with Client(create_server(engine), mode=mode, elicitation_callback=asked) as c:
        await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0})
        refused = await c.call_tool("complete", DEAR)
    assert len(asked.questions) == 1
    assert refused.is_error and refused.meta["llm-router/error"]["code"] == "budget_exceeded"  # type: ignore[index]
    assert refused.meta["llm-router/error"]["limit"] == "global daily"  # type: ignore[index]
    text = refused.content[0].text  # type: ignore[union-attr]
    assert text.startswith("budget global daily of $0 would be exceeded")
    assert f"Raising the limit was asked about: {said}." in text
    assert await daily_limit(engine) == 0 and statuses(engine) == [("refused", "0")] and held_by_calls(engine) == 0


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("content", [
    {"raise": False, "limit_usd": 5},
    {"raise": True, "limit_usd": 0},          # not a raise
    {"raise": True, "limit_usd": "lots"},
    {"raise": "yes", "limit_usd": 5},
    {"raise": True, "limit_usd": 1e12},       # beyond any sane limit
])
async def test_a_no_or_a_malformed_answer_raises_nothing(engine: Engine, mode: str, content: dict[str, Any]) -> None:
    async with Client(create_server(engine), mode=mode, elicitation_callback=Asked("accept", content)) as c:
        await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0})
        refused = await c.call_tool("complete", DEAR)
    assert refused.is_error and "Raising the limit was asked about: " in refused.content[0].text  # type: ignore[union-attr]
    assert await daily_limit(engine) == 0 and statuses(engine) == [("refused", "0")]


async def test_a_handshake_era_client_that_does_not_answer_in_time_is_refused(tmp_path: Path) -> None:
    engine = Engine(make_settings(tmp_path, budget={"daily_usd": 0, "ask_timeout_s": 0.2}))
    never = anyio.Event()

    async def silent(ctx: Any, params: ElicitRequestParams) -> ElicitResult:
        await never.wait()
        raise AssertionError("unreachable")

    try:
        async with Client(create_server(engine), mode="legacy", elicitation_callback=silent) as c:
            with anyio.fail_after(30):
                refused = await c.call_tool("complete", DEAR)
            assert not (await c.call_tool("route_explain", DEAR)).is_error  # the connection goes on
        assert refused.is_error and "Raising the limit was asked about: not answered." in refused.content[0].text  # type: ignore[union-attr]
        assert statuses(engine) == [("refused", "0")]
    finally:
        never.set()
        await engine.aclose()


@pytest.mark.parametrize("mode", ERAS)
async def test_a_client_without_elicitation_gets_the_plain_refusal(engine: Engine, mode: str) -> None:
    async with Client(create_server(engine), mode=mode) as c:
        await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0})
        refused = await c.call_tool("complete", DEAR)
    assert refused.is_error and "asked about" not in refused.content[0].text  # type: ignore[union-attr]
    assert statuses(engine) == [("refused", "0")]


@pytest.mark.parametrize("mode", ERAS)
async def test_the_per_request_limit_and_max_cost_usd_are_never_asked_about(tmp_path: Path, mode: str) -> None:
    engine = Engine(make_settings(tmp_path, budget={"per_request_usd": 0.0000001}))
    asked = Asked()
    try:
        async with Client(create_server(engine), mode=mode, elicitation_callback=asked) as c:
            per_request = await c.call_tool("complete", DEAR)
            await c.call_tool("set_budget", {"scope": "global", "period": "per_request", "limit_usd": None})
            own_cap = await c.call_tool("complete", {**DEAR, "max_cost_usd": 0.0000001})
    finally:
        await engine.aclose()
    assert asked.questions == []
    assert per_request.is_error and "per_request" in per_request.content[0].text  # type: ignore[union-attr]
    assert own_cap.is_error and "max_cost_usd" in own_cap.content[0].text  # type: ignore[union-attr]


async def test_ask_to_raise_false_never_asks(tmp_path: Path) -> None:
    engine = Engine(make_settings(tmp_path, budget={"daily_usd": 0, "ask_to_raise": False}))
    asked = Asked()
    try:
        async with Client(create_server(engine), mode="legacy", elicitation_callback=asked) as c:
            refused = await c.call_tool("complete", DEAR)
    finally:
        await engine.aclose()
    assert refused.is_error and asked.questions == []


async def test_a_second_limit_is_asked_about_in_turn_and_one_still_too_low_is_not_asked_again(engine: Engine) -> None:
    asked = Asked()
    async with Client(create_server(engine), mode="2026-07-28", elicitation_callback=asked) as c:
        for scope in ("global", "provider:openai"):
            await c.call_tool("set_budget", {"scope": scope, "period": "daily", "limit_usd": 0})
        done = await c.call_tool("complete", DEAR)
    assert not done.is_error
    assert [q.message.split(" budget")[0] for q in asked.questions] == ["The global daily", "The provider:openai daily"]

    low = Asked("accept", {"raise": True, "limit_usd": 0.0000002})
    async with Client(create_server(engine), mode="legacy", elicitation_callback=low) as c:
        await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0.0000001})
        refused = await c.call_tool("complete", DEAR)
    assert len(low.questions) == 1
    assert "Raising the limit was asked about: raised, and still too low for this call." in refused.content[0].text  # type: ignore[union-attr]


# -- over HTTP: who is asked -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_over_http_an_admin_token_is_asked_a_member_token_never(engine: Engine, mode: str) -> None:
    admin, member = Asked(), Asked()
    with serve(engine, tokens=TOKENS) as url:
        async with mcp_client(url, MEMBER, mode=mode, elicitation_callback=member) as c:
            await c.call_tool("set_budget", {"scope": "tag:alice", "period": "daily", "limit_usd": 0})
            own = await c.call_tool("complete", DEAR)
        async with mcp_client(url, ADMIN, mode=mode, elicitation_callback=admin) as c:
            await c.call_tool("set_budget", {"scope": "tag:ops", "period": "daily", "limit_usd": 0})
            done = await c.call_tool("complete", DEAR)
    assert member.questions == [] and own.is_error and "asked about" not in own.content[0].text  # type: ignore[union-attr]
    assert "Ask an admin to raise the limit" in own.content[0].text  # type: ignore[union-attr]
    assert not done.is_error and len(admin.questions) == 1 and "tag:ops daily" in admin.questions[0].message
    assert await engine.limit_in_force("tag:alice", "daily") == 0
    assert (await engine.limit_in_force("tag:ops", "daily") or 0) > 0


# -- 2026-07-28: the request state is the server's own ------------------------------------------


async def _first_round(c: Client, arguments: dict[str, Any]) -> InputRequiredResult:
    first = await c.session.call_tool("complete", arguments, allow_input_required=True)
    assert isinstance(first, InputRequiredResult), first
    assert first.input_requests is not None and set(first.input_requests) == {ASK_KEY}
    assert first.request_state is not None and "global" not in first.request_state  # sealed, not readable
    return first


YES = {ASK_KEY: ElicitResult(action="accept", content={"raise": True, "limit_usd": 5})}


async def test_a_tampered_state_or_one_for_other_arguments_raises_nothing(engine: Engine) -> None:
    async with Client(create_server(engine), mode="2026-07-28", elicitation_callback=Asked()) as c:
        await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0})
        first = await _first_round(c, DEAR)
        state = first.request_state
        assert state is not None
        flipped = state[:-3] + ("A" if state[-3] != "A" else "B") + state[-2:]
        for bad, arguments in ((flipped, DEAR), ("v1.not-a-state", DEAR), (json.dumps({"v": 1}), DEAR),
                               (state, {**DEAR, "prompt": "something else"})):
            with pytest.raises(MCPError) as refused:
                await c.session.call_tool("complete", arguments, input_responses=YES, request_state=bad)
            assert "requestState is invalid, expired, or for another call or caller" in refused.value.error.message
        assert await daily_limit(engine) == 0
        # The genuine one still works, once.
        done = await c.session.call_tool("complete", DEAR, input_responses=YES, request_state=state)
        assert not done.is_error and await daily_limit(engine) == 5 * NUSD_PER_USD
        await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0})
        with pytest.raises(MCPError) as replayed:
            await c.session.call_tool("complete", DEAR, input_responses=YES, request_state=state)
        assert "already answered" in replayed.value.error.message
    assert await daily_limit(engine) == 0
    assert sorted(s for s, _ in statuses(engine)) == ["ok", "refused"]


async def test_an_answer_raises_only_the_limit_it_was_asked_about(engine: Engine) -> None:
    async with Client(create_server(engine), mode="2026-07-28", elicitation_callback=Asked()) as c:
        for scope in ("global", "provider:anthropic"):
            await c.call_tool("set_budget", {"scope": scope, "period": "daily", "limit_usd": 0})
        first = await _first_round(c, DEAR)
        other = {ASK_KEY: ElicitResult(action="accept", content={
            "raise": True, "limit_usd": 5, "scope": "provider:anthropic", "period": "monthly"})}
        done = await c.session.call_tool("complete", DEAR, input_responses=other, request_state=first.request_state)
    assert not done.is_error
    assert await daily_limit(engine) == 5 * NUSD_PER_USD
    assert await engine.limit_in_force("provider:anthropic", "daily") == 0
    assert await engine.limit_in_force("provider:anthropic", "monthly") is None


async def test_a_state_minted_for_one_token_is_refused_for_another(engine: Engine) -> None:
    tokens = Tokens([("ops", ADMIN, "admin"), ("ops2", "ops2-admin-token-0123456789", "admin")])
    with serve(engine, tokens=tokens) as url:
        async with mcp_client(url, ADMIN, mode="2026-07-28", elicitation_callback=Asked()) as c:
            await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0})
            first = await _first_round(c, DEAR)
        async with mcp_client(url, "ops2-admin-token-0123456789", mode="2026-07-28") as other:
            with pytest.raises(MCPError) as refused:
                await other.session.call_tool("complete", DEAR, input_responses=YES, request_state=first.request_state)
    assert "requestState is invalid" in refused.value.error.message
    assert await daily_limit(engine) == 0


async def test_a_retry_without_an_answer_is_the_refusal(engine: Engine) -> None:
    async with Client(create_server(engine), mode="2026-07-28", elicitation_callback=Asked()) as c:
        await c.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0})
        first = await _first_round(c, DEAR)
        refused = await c.session.call_tool("complete", DEAR, request_state=first.request_state)
    assert refused.is_error and "Raising the limit was asked about: not answered." in refused.content[0].text  # type: ignore[union-attr]
    assert await daily_limit(engine) == 0 and statuses(engine) == [("refused", "0")]
    # Regression: the retry's kept call, never made, stayed "working" for ever (one per retry).
    assert engine.answers.stats()["working"] == 0


# -- an independent peer: the TypeScript SDK 1.x client (2025-11-25) -------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize(("action", "proceeds"), [("accept", True), ("decline", False)])
def test_the_typescript_sdk_client_answers_the_question(tmp_path: Path, action: str, proceeds: bool,
                                                        transport: str) -> None:
    require("@modelcontextprotocol/sdk")
    plan = {"elicit": {"action": action}, "steps": [
        {"tool": "set_budget", "arguments": {"scope": "global", "period": "daily", "limit_usd": 0}},
        {"tool": "complete", "arguments": {"prompt": "hello", "model": "openai:gpt-4o"}},
        {"read": BUDGETS_URI},
    ]}
    ledger = tmp_path / "ledger.db"
    if transport == "stdio":
        out = run_json(["sdk_client.mjs", "stdio", *demo_server_command(ledger)], stdin=json.dumps(plan))
    else:  # over Streamable HTTP, with an admin token: the question rides the call's SSE stream
        with http_server(ledger) as url:
            out = run_json(["sdk_client.mjs", "http", url, TOKEN], stdin=json.dumps(plan))
    [question] = out["elicited"]
    assert question["mode"] == "form" and "global daily" in question["message"]
    proposal = question["requestedSchema"]["properties"]["limit_usd"]["default"]
    _, call, read = out["steps"]
    assert call["outcome"] == "result" and call["isError"] is not proceeds, call
    daily = next(b for b in json.loads(read["text"])["budgets"] if b["scope"] == "global" and b["period"] == "daily")
    if proceeds:
        assert call["structuredContent"]["model"] == "openai:gpt-4o"
        assert Decimal(daily["limit_usd"]) == Decimal(str(proposal))
    else:
        assert "Raising the limit was asked about: declined." in call["text"] and daily["limit_usd"] == "0"


def _refusal(name: str, *, limit: int, spent: int, held: int, needed: int, restricted: bool = False) -> BudgetExceeded:
    return BudgetExceeded(limit_name=name, limit_nusd=limit, spent_nusd=spent, reserved_nusd=held, needed_nusd=needed,
                          resets_at=None, restricted=restricted)


def test_who_and_what_is_asked_about_and_the_proposal_lets_the_call_through() -> None:
    cent = NUSD_PER_USD // 100
    e = _refusal("provider:openai monthly", limit=10 * cent, spent=9 * cent, held=cent // 2, needed=cent)
    q = question_for(Access("admin"), e)
    assert q is not None and (q.scope, q.period) == ("provider:openai", "monthly")
    assert q.proposal_nusd == 11 * cent  # 0.09 + 0.005 + 0.01, up to the cent
    assert question_for(Access("member", "alice"), e) is None
    assert question_for(Access("admin"), _refusal("global per_request", limit=1, spent=0, held=0, needed=2)) is None
    # 90% spent: the proposal brings it back under 90%, with room for the call.
    r = question_for(Access("admin"), _refusal("tag:x daily", limit=100 * cent, spent=95 * cent, held=0, needed=0,
                                                restricted=True))
    assert r is not None and r.proposal_nusd * 9 // 10 > 95 * cent
    assert r.answer("accept", {"raise": True, "limit_usd": 2}) == Decimal(2)
    assert r.answer("accept", {"raise": True, "limit_usd": 0.5}) != Decimal("0.5")  # not above the limit


def test_settings_default_to_asking(settings: Settings) -> None:
    assert settings.budget.ask_to_raise is True and settings.budget.ask_timeout_s == 120
