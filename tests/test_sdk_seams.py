"""The MCP SDK's private details the router relies on (``llm_router.sdk_seams``), one test each: if
an SDK release moves one, the test that names it fails here, rather than a subscription, a log level
or a progress stream going quietly missing somewhere else."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client
from mcp.server import Server
from mcp.server.connection import Connection
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, ListToolsResult, TextContent, Tool

from llm_router.sdk_seams import connection_of, lowlevel_server_of, progress_callback_given

pytestmark = pytest.mark.anyio


def _server_noting(seen: list[Any], what: Any) -> Server[Any]:
    """A low-level server with one tool, ``look``, that notes ``what(ctx)`` for each call."""

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="look", input_schema={"type": "object"})])

    async def call_tool(ctx: Any, params: Any) -> CallToolResult:
        seen.append(what(ctx))
        return CallToolResult(content=[TextContent(type="text", text="ok")])

    return Server("seams", on_list_tools=list_tools, on_call_tool=call_tool)


async def test_a_requests_session_leads_to_its_connection_the_same_one_for_every_request_of_a_client() -> None:
    """Handshake-era subscriptions and log levels are kept per connection (``ServerSession._connection``)."""
    seen: list[Any] = []
    server = _server_noting(seen, lambda ctx: connection_of(ctx.session))
    async with Client(server, mode="legacy") as first:
        await first.call_tool("look", {})
        await first.call_tool("look", {})
    async with Client(server, mode="legacy") as second:
        await second.call_tool("look", {})
    assert all(isinstance(c, Connection) for c in seen)
    assert seen[0] is seen[1] and seen[2] is not seen[0]
    assert isinstance(seen[0].state, dict), "a log level is kept in Connection.state"
    assert callable(seen[0].send_resource_updated), "a subscriber is told through its connection"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_an_in_process_callers_progress_callback_is_seen_and_its_absence_too(mode: str) -> None:
    """The in-process transport passes a callback, not a token (``_request_outbound._on_progress``,
    possibly behind the SDK's ``_inner`` wrappers)."""
    seen: list[bool] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        return None

    server = _server_noting(seen, lambda ctx: progress_callback_given(ctx.session))
    async with Client(server, mode=mode) as client:  # type: ignore[arg-type]
        await client.call_tool("look", {}, progress_callback=on_progress)
        await client.call_tool("look", {})
    assert seen == [True, False]


def test_an_mcpserver_holds_a_low_level_server_to_serve_on_the_routers_stdio() -> None:
    """``MCPServer._lowlevel_server``: the benchmark's bare floor is served on ``stdio.serve_stdio``."""
    low = lowlevel_server_of(MCPServer("bare"))
    assert isinstance(low, Server)
    assert low.name == "bare"
    assert callable(low.run) and callable(low.create_initialization_options)
