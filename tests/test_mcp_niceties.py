"""What makes the server pleasant in a client: instructions, annotations, log messages for
fallbacks and budget warnings, and resource-updated notifications — on handshake-era sessions
(Claude Desktop, the Inspector) and on 2026-07-28 sessions alike."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import ResourceUpdatedNotification

from llm_router.engine import Engine
from llm_router.mcp_server import BUDGETS_URI, LEDGER_URI, create_server
from llm_router.types import RateLimited

from .handshake import ping, set_level, subscribe, unsubscribe
from .http_server import mcp_client, serve

pytestmark = pytest.mark.anyio

FALLBACK_CHAIN = ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]


def fail_haiku_once(engine: Engine) -> None:
    engine.providers["anthropic"].fail_next(  # type: ignore[attr-defined]
        RateLimited("slow down", provider="anthropic", status=429, retry_after=600)
    )


async def test_instructions_say_when_to_delegate_and_tools_carry_annotations(engine: Engine) -> None:
    async with Client(create_server(engine), mode="legacy") as client:
        assert "delegate" in (client.instructions or "") and "set_budget" in (client.instructions or "")
        tools = {t.name: t.annotations for t in (await client.list_tools()).tools}
        caps = client.server_capabilities
    for name in ("route_explain", "cost_report"):
        assert tools[name].read_only_hint is True and tools[name].destructive_hint is False
    assert tools["complete"].read_only_hint is False and tools["complete"].open_world_hint is True
    assert tools["set_budget"].read_only_hint is False and tools["set_budget"].idempotent_hint is True
    assert caps.logging is not None and caps.resources.subscribe is True


class Seen:
    def __init__(self) -> None:
        self.logs: list[Any] = []
        self.updated: list[str] = []

    async def on_log(self, params: Any) -> None:
        self.logs.append(params)

    async def on_message(self, message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            self.updated.append(message.params.uri)

    def messages(self, level: str) -> list[str]:
        return [p.data["message"] for p in self.logs if p.level == level]


async def test_a_fallback_and_a_budget_warning_are_logged_to_a_handshake_era_client(engine: Engine) -> None:
    seen = Seen()
    async with Client(create_server(engine), mode="legacy", logging_callback=seen.on_log) as client:
        fail_haiku_once(engine)
        done = await client.call_tool("complete", {"prompt": "hello", "model": FALLBACK_CHAIN})
        assert not done.is_error
        # A daily limit the first call has used half of: the next call is warned, the one after refused.
        await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0.0001})
        await client.call_tool("complete", {"prompt": "hello", "model": "ollama:llama3.1"})
        await client.call_tool("complete", {"prompt": "hello", "model": "openai:gpt-4o"})
    warnings = seen.messages("warning")
    assert any(m.startswith("fallback: anthropic:claude-haiku-4-5 error (rate_limited)") for m in warnings), warnings
    assert "budget global daily is 50.7% used (tier cautious): cheaper models go first" in warnings, warnings
    assert any(m.startswith("budget refusal") for m in warnings), warnings
    fallback = next(p.data for p in seen.logs if p.data["message"].startswith("fallback"))
    assert fallback["request_id"] == done.structured_content["request_id"]
    assert all(p.logger == "llm-router" for p in seen.logs)


async def test_a_handshake_era_client_that_set_a_higher_level_gets_no_warnings(engine: Engine) -> None:
    seen = Seen()
    async with Client(create_server(engine), mode="legacy", logging_callback=seen.on_log) as client:
        await set_level(client, "error")
        fail_haiku_once(engine)
        assert not (await client.call_tool("complete", {"prompt": "hello", "model": FALLBACK_CHAIN})).is_error
    assert seen.logs == []


@pytest.mark.parametrize("log_level", ["warning", None])
async def test_a_2026_client_gets_no_log_messages_even_when_it_opts_in(engine: Engine, log_level: str | None) -> None:
    """MCP logging is deprecated at 2026-07-28: its events go to stderr and the request's span."""
    seen = Seen()
    async with Client(create_server(engine), logging_callback=seen.on_log, log_level=log_level) as client:
        assert client.protocol_version == "2026-07-28"
        fail_haiku_once(engine)
        assert not (await client.call_tool("complete", {"prompt": "hello", "model": FALLBACK_CHAIN})).is_error
    assert seen.logs == []


async def test_a_handshake_era_subscriber_hears_when_the_ledger_and_budgets_change(engine: Engine) -> None:
    seen = Seen()
    async with Client(create_server(engine), mode="legacy", message_handler=seen.on_message) as client:
        day = (await client.call_tool("cost_report", {"period": "today"})).structured_content["period"]["first_day"]
        for uri in (LEDGER_URI, BUDGETS_URI, f"{LEDGER_URI}/{day}"):
            await subscribe(client, uri)
        await client.call_tool("complete", {"prompt": "hello"})
        await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 3})
        await unsubscribe(client, BUDGETS_URI)
        await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 4})
        await client.call_tool("complete", {"prompt": ""})  # invalid: nothing written, nothing to say
        with pytest.raises(Exception, match="no such resource"):
            await subscribe(client, "file:///etc/passwd")
        await ping(client)  # notifications sent before the answer to this have arrived
    assert seen.updated == [LEDGER_URI, f"{LEDGER_URI}/{day}", BUDGETS_URI, BUDGETS_URI]


async def test_a_2026_listener_hears_when_the_ledger_and_budgets_change(engine: Engine) -> None:
    heard: set[str] = set()
    async with Client(create_server(engine)) as client, client.listen(resource_subscriptions=[LEDGER_URI, BUDGETS_URI]) as sub:
        await client.call_tool("complete", {"prompt": "hello"})
        with anyio.fail_after(5):
            async for event in sub:
                heard.add(event.uri)
                if heard == {LEDGER_URI, BUDGETS_URI}:
                    break


async def test_with_no_listener_open_nothing_is_published(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each publish costs a trip round the event loop, listener or not: a call with nobody
    listening publishes nothing (the test above shows a listener still hears)."""
    from llm_router.mcp_notify import ListeningBus

    published: list[Any] = []
    real = ListeningBus.publish

    async def counting(self: ListeningBus, event: Any) -> None:
        published.append(event)
        await real(self, event)

    monkeypatch.setattr(ListeningBus, "publish", counting)
    async with Client(create_server(engine)) as client:
        assert not (await client.call_tool("complete", {"prompt": "hello"})).is_error
        assert published == []
        async with client.listen(resource_subscriptions=[LEDGER_URI]) as sub:
            await client.call_tool("complete", {"prompt": "hello"})
            with anyio.fail_after(5):
                assert (await sub.__anext__()).uri == LEDGER_URI
    assert len(published) == 3


async def test_the_bus_is_listening_while_any_subscription_is_open_and_delivers_to_each() -> None:
    """``ListeningBus.listening`` counts the open subscriptions through the SDK bus's public
    ``subscribe``: the same listener subscribed twice is two, an unsubscribe may be called twice."""
    from mcp.shared.subscriptions import ResourceUpdated

    from llm_router.mcp_notify import ListeningBus

    bus = ListeningBus()
    heard: list[Any] = []
    assert not bus.listening
    first, second = bus.subscribe(heard.append), bus.subscribe(heard.append)
    assert bus.listening
    await bus.publish(ResourceUpdated(uri=LEDGER_URI))
    assert heard == [ResourceUpdated(uri=LEDGER_URI)] * 2
    first()
    first()
    assert bus.listening, "the second subscription is still open"
    second()
    assert not bus.listening
    await bus.publish(ResourceUpdated(uri=LEDGER_URI))
    assert len(heard) == 2


async def test_a_subscriber_over_http_hears_another_clients_spend(engine: Engine) -> None:
    seen = Seen()
    with serve(engine) as url:
        async with mcp_client(url, mode="legacy", message_handler=seen.on_message) as watcher:
            await subscribe(watcher, BUDGETS_URI)
            async with mcp_client(url, mode="legacy") as spender:
                await spender.call_tool("set_budget", {"scope": "global", "period": "monthly", "limit_usd": 30})
            with anyio.fail_after(5):
                while not seen.updated:
                    await ping(watcher)
    assert seen.updated == [BUDGETS_URI]


async def test_output_schemas_are_published_and_every_result_matches_its_tools_schema(engine: Engine) -> None:
    """Results are built from their own pydantic models and published without a second check on
    the server; the client validates every result against the published schema, and passes."""
    from jsonschema import validate

    server = create_server(engine)
    async with Client(server) as client:
        schemas = {t.name: t.output_schema for t in (await client.list_tools()).tools}
        assert all(schemas.values()), schemas
        results = {
            "complete": await client.call_tool("complete", {"prompt": "hello", "tag": "t"}),
            "route_explain": await client.call_tool("route_explain", {"prompt": "hello"}),
            "cost_report": await client.call_tool("cost_report", {"period": "today"}),
            "set_budget": await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 5}),
        }
    for name, result in results.items():
        assert not result.is_error, result
        validate(result.structured_content, schemas[name])


async def test_text_that_looks_like_json_is_sent_as_given_and_lists_may_still_come_as_json_text(engine: Engine) -> None:
    """The SDK reads JSON out of string arguments whose parameter is not plainly a str (clients
    such as Claude Desktop send lists as JSON text). For a prompt that happens to be a JSON
    array or object that turned it into a list and refused the call; free text now goes as given,
    while messages and model chains sent as JSON text are still understood."""
    seen: list[Any] = []
    real = engine.complete

    async def spy(args: Any, **kw: Any) -> Any:
        seen.append(args)
        return await real(args, **kw)

    engine.complete = spy  # type: ignore[method-assign]
    async with Client(create_server(engine)) as client:
        for text in ('[1, 2, 3]', '{"a": 1}', '"quoted"', "42", "null"):
            result = await client.call_tool("complete", {"prompt": text, "system": text, "tag": text, "task_type": "x"})
            assert not result.is_error, (text, result.content)
            assert (seen[-1].prompt, seen[-1].system, seen[-1].tag) == (text, text, text)
        as_text = await client.call_tool("complete", {
            "messages": '[{"role": "user", "content": "[\\"keep\\", \\"me\\"]"}]',
            "model": '["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]',
        })
        assert not as_text.is_error, as_text.content
        assert seen[-1].messages[0].content == '["keep", "me"]'
        assert seen[-1].model == ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]
