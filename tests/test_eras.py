"""Both protocol eras over both transports, one matrix: a 2025-11-25 client (``initialize``
handshake) and a 2026-07-28 client (``server/discover``, per-request capabilities), each over stdio
(the server as a subprocess) and over Streamable HTTP (uvicorn on loopback, behind an admin token).

Every cell: the server's info with its icon and capabilities; ``tools/list`` with each tool's icon
and, on 2026-07-28, its caching hints; a ``complete`` answered by a fake OpenAI-compatible provider
on 127.0.0.1; a resource read. Over HTTP, per era: a request without a token refused when tokens
are set, a rebound Host and a foreign Origin refused, ``/healthz`` as it was.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from llm_router.config import settings_from_dict
from llm_router.engine import Engine
from llm_router.http_app import Tokens
from llm_router.mcp_surface import BUDGETS_URI, LEDGER_URI

from .fakes import FakeProvider
from .http_server import mcp_client, serve

pytestmark = pytest.mark.anyio

ERAS = {"2025-11-25": "legacy", "2026-07-28": "auto"}
"""Each era and the client mode that reaches it: ``auto`` probes ``server/discover`` first."""
TRANSPORTS = ["stdio", "http"]
TOKEN = "eras-admin-token-0123456789abcdef"
MODEL = "local-model"
HOUR_MS = 3_600_000
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def _config(tmp_path: Path, fake: FakeProvider) -> dict[str, Any]:
    return {
        "ledger": {"path": str(tmp_path / "ledger.db")},
        "providers": [{"name": "local", "kind": "openai", "base_url": fake.base_url, "models": [MODEL],
                       "prices": {MODEL: {"input_per_mtok": 0.5, "output_per_mtok": 1.5}}}],
    }


def _toml(config: dict[str, Any]) -> str:
    [p] = config["providers"]
    return (f'[ledger]\npath = "{config["ledger"]["path"]}"\n\n[[providers]]\nname = "local"\nkind = "openai"\n'
            f'base_url = "{p["base_url"]}"\nmodels = ["{MODEL}"]\n[providers.prices."{MODEL}"]\n'
            'input_per_mtok = 0.5\noutput_per_mtok = 1.5\n')


@asynccontextmanager
async def connected(era: str, transport: str, tmp_path: Path) -> AsyncIterator[tuple[Client, FakeProvider]]:
    """A client of ``era`` connected over ``transport`` to a server whose one provider is ``fake``."""
    with FakeProvider("openai", api_key=None, models=[MODEL]) as fake:
        config = _config(tmp_path, fake)
        if transport == "stdio":
            path = tmp_path / "config.toml"
            path.write_text(_toml(config))
            env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH")} | {"LLM_ROUTER_CONFIG": str(path)}
            params = StdioServerParameters(command=sys.executable, args=["-m", "llm_router", "serve"], env=env)
            async with Client(params, mode=ERAS[era]) as client:
                yield client, fake
            return
        engine = Engine(settings_from_dict(config, source="test"))
        try:
            with serve(engine, tokens=Tokens([("ops", TOKEN, "admin")])) as url:
                async with mcp_client(url, TOKEN, mode=ERAS[era]) as client:
                    yield client, fake
        finally:
            await engine.aclose()


def _is_our_svg(icons: Any) -> None:
    assert icons, "no icons"
    [icon] = icons
    assert icon.mime_type == "image/svg+xml" and icon.sizes == ["any"]
    prefix = "data:image/svg+xml;base64,"
    assert icon.src.startswith(prefix)
    svg = base64.b64decode(icon.src[len(prefix):]).decode()
    assert svg.startswith("<svg ") and svg.endswith("</svg>") and "<script" not in svg and "href" not in svg


@pytest.mark.slow
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("era", ERAS)
async def test_each_era_over_each_transport(era: str, transport: str, tmp_path: Path) -> None:
    async with connected(era, transport, tmp_path) as (client, fake):
        # initialize / server/discover: who the server is, its icon, what it serves
        assert client.protocol_version == era
        info = client.server_info
        assert info is not None and info.name == "llm-router"
        _is_our_svg(info.icons)
        caps = client.server_capabilities
        assert caps.tools is not None and caps.resources is not None and caps.prompts is None

        # tools/list: each tool's icon; on 2026-07-28 the hint that the list is the server's for an hour
        listed = await client.list_tools()
        assert sorted(t.name for t in listed.tools) == ["complete", "cost_report", "dashboard", "rate",
                                                         "route_explain", "set_budget"]
        for tool in listed.tools:
            _is_our_svg(tool.icons)
        icons = {t.icons[0].src for t in listed.tools if t.icons}
        assert len(icons) == len(listed.tools), "each tool has its own icon"
        if era == "2026-07-28":
            assert (listed.ttl_ms, listed.cache_scope) == (HOUR_MS, "public")
            resources = await client.list_resources()
            assert (resources.ttl_ms, resources.cache_scope) == (HOUR_MS, "public")

        # complete through the fake provider on 127.0.0.1
        done = await client.call_tool("complete", {"prompt": "hello", "model": f"local:{MODEL}"})
        assert not done.is_error, done.content
        assert done.structured_content is not None
        assert done.structured_content["text"] == "echo: hello" and done.structured_content["model"] == f"local:{MODEL}"
        assert fake.counts["/v1/chat/completions"] == 1

        # a resource read: the row is there, and on 2026-07-28 never cached
        read = await client.read_resource(LEDGER_URI)
        rows = json.loads(read.contents[0].text)["entries"]  # type: ignore[union-attr]
        assert [r["id"] for r in rows] == [done.structured_content["request_id"]]
        if era == "2026-07-28":
            assert (read.ttl_ms, read.cache_scope) == (0, "private")
        budgets = await client.read_resource(BUDGETS_URI)
        assert "budgets" in json.loads(budgets.contents[0].text)  # type: ignore[union-attr]


# -- HTTP's own checks, per era ---------------------------------------------------------------------

FIRST = {
    "2025-11-25": {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}},
    "2026-07-28": {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}},
}
"""The first message a client of each era sends."""
ERA_HEADERS = {"2025-11-25": {}, "2026-07-28": {"mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover"}}


@pytest.fixture
def http_url(tmp_path: Path) -> Any:
    import anyio

    with FakeProvider("openai", api_key=None, models=[MODEL]) as fake:
        engine = Engine(settings_from_dict(_config(tmp_path, fake), source="test"))
        try:
            with serve(engine, tokens=Tokens([("ops", TOKEN, "admin")])) as url:
                yield url
        finally:
            anyio.run(engine.aclose)


@pytest.mark.parametrize("era", ERAS)
def test_over_http_tokens_host_origin_and_healthz_hold_in_each_era(http_url: str, era: str) -> None:
    def post(**headers: str) -> httpx.Response:
        return httpx.post(f"{http_url}/mcp", json=FIRST[era], headers=MCP_HEADERS | ERA_HEADERS[era] | headers,
                          timeout=30)

    auth = f"Bearer {TOKEN}"
    answered = _json_rpc(post(authorization=auth))["result"]
    info = answered["serverInfo"] if era == "2025-11-25" else answered["_meta"]["io.modelcontextprotocol/serverInfo"]
    assert info["name"] == "llm-router" and info["icons"][0]["mimeType"] == "image/svg+xml"
    refused = post()
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert post(authorization="Bearer not-the-token-0123456789").status_code == 401
    assert post(authorization=auth, host="attacker.example:8765").status_code == 421
    assert post(authorization=auth, origin="https://attacker.example").status_code == 403
    health = httpx.get(f"{http_url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json() == {"status": "ok"}


async def test_a_client_of_either_era_without_a_token_cannot_connect(http_url: str) -> None:
    for mode in ERAS.values():
        with pytest.raises(Exception):  # noqa: B017,PT011 - each era's SDK client fails in its own way on a 401
            async with mcp_client(http_url, None, mode=mode) as client:
                await client.list_tools()


def test_a_handshake_era_list_carries_no_caching_hints_on_the_wire(http_url: str) -> None:
    headers = MCP_HEADERS | {"authorization": f"Bearer {TOKEN}"}
    opened = httpx.post(f"{http_url}/mcp", json=FIRST["2025-11-25"], headers=headers, timeout=30)
    session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    httpx.post(f"{http_url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
               headers=headers | session, timeout=30)
    listed = httpx.post(f"{http_url}/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                        headers=headers | session, timeout=30)
    body = _json_rpc(listed)
    tools = body["result"]["tools"]
    assert len(tools) == 6 and all(t["icons"][0]["mimeType"] == "image/svg+xml" for t in tools)
    assert "ttlMs" not in body["result"] and "cacheScope" not in body["result"]


def _json_rpc(response: httpx.Response) -> Any:
    """The one JSON-RPC message of a response, whether JSON or one SSE event."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1])
