"""The protocol's edges, as the MCP spec (2025-11-25) puts them: an unknown tool is a JSON-RPC
error, an unknown resource -32002, a malformed ledger day invalid params; only what is served is
advertised; a cancelled request gets no response."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND

from llm_router.engine import Engine
from llm_router.mcp_server import RESOURCE_NOT_FOUND, create_server

from .handshake import subscribe

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_an_unknown_tool_is_a_json_rpc_invalid_params_error_naming_the_tools_there_are(
    engine: Engine, mode: str
) -> None:
    async with Client(create_server(engine), mode=mode) as client:  # type: ignore[arg-type]
        with pytest.raises(MCPError) as caught:
            await client.call_tool("compelte", {"prompt": "hi"})
    assert caught.value.code == INVALID_PARAMS
    assert "Unknown tool: 'compelte'" in caught.value.message
    assert "complete, route_explain, cost_report, set_budget" in caught.value.message
    assert engine.ledger.rows() == []


async def test_every_listed_tool_is_served_none_answers_unknown_tool(engine: Engine) -> None:
    """Regression: the tools' listings and their handlers were two tables keyed by name, so a tool
    whose handler was dropped stayed listed and answered "Unknown tool" when called. Every listed
    tool is called here (with arguments it may refuse, so nothing is spent): each answers as a
    tool, with a result or a tool error, never with the JSON-RPC error for a tool that is not there."""
    unserved: list[str] = []
    async with Client(create_server(engine)) as client:
        listed = [tool.name for tool in (await client.list_tools()).tools]
        for name in listed:
            try:
                assert (await client.call_tool(name, {})).content, f"{name} answered as a tool"
            except MCPError as e:
                unserved.append(f"{name}: {e.message}")
    assert listed == ["complete", "route_explain", "cost_report", "set_budget", "rate", "dashboard"]
    assert unserved == []
    assert engine.ledger.rows() == []


@pytest.mark.parametrize(
    "uri", ["llm-router://nothing", "llm-router://ledgers", "file:///etc/passwd", "llm-router://providers/x"]
)
async def test_an_unknown_resource_is_resource_not_found(client: Client, uri: str) -> None:
    with pytest.raises(MCPError) as caught:
        await client.read_resource(uri)
    assert caught.value.code == RESOURCE_NOT_FOUND == -32002
    assert caught.value.data == {"uri": uri}
    assert "llm-router://providers" in caught.value.message, "it says which resources there are"


@pytest.mark.parametrize(
    "day", ["20260101", "2026-01-01T00:00", "2026-1-1", "2026-01-01 ", " 2026-01-01", "2026-02-30", "yesterday", ""]
)
async def test_a_ledger_day_that_is_not_yyyy_mm_dd_is_invalid_params(client: Client, day: str) -> None:
    """``datetime.fromisoformat`` used to take ``20260101`` and ``2026-01-01T00:00`` too."""
    with pytest.raises(MCPError) as caught:
        await client.read_resource(f"llm-router://ledger/{day}")
    assert caught.value.code == INVALID_PARAMS
    assert caught.value.message.startswith("date: ") and "(allowed: YYYY-MM-DD)" in caught.value.message


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_no_prompts_capability_is_advertised_while_there_are_no_prompts(engine: Engine, mode: str) -> None:
    async with Client(create_server(engine), mode=mode) as client:  # type: ignore[arg-type]
        caps = client.server_capabilities
        assert caps is not None and caps.prompts is None
        assert caps.tools is not None and caps.resources is not None
        with pytest.raises(MCPError) as caught:
            await client.list_prompts()
    assert caught.value.code == METHOD_NOT_FOUND


async def test_a_subscription_to_an_unknown_resource_is_resource_not_found(engine: Engine) -> None:
    async with Client(create_server(engine), mode="legacy") as client:
        with pytest.raises(MCPError) as caught:
            await subscribe(client, "llm-router://nothing")
    assert caught.value.code == RESOURCE_NOT_FOUND
