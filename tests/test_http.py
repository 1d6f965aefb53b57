"""Streamable HTTP: bearer tokens, Host/Origin checks, /healthz, /metrics, and the token's tag in
the ledger — through a real uvicorn server on loopback and a real MCP client."""

from __future__ import annotations

import hmac
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_router.cli import main
from llm_router.config import HttpConfig, Settings
from llm_router.engine import Engine
from llm_router.http_app import HostPolicy, Tokens, check_bind, load_tokens, parse_tokens
from llm_router.types import ConfigError

from .http_server import mcp_client, serve

ALICE = "alice-secret-token-0123456789"
BOB = "bob-secret-token-9876543210ab"
PROM = "prom-scraper-token-0123456789"
OPS = "ops-admin-token-0123456789ab"
TOKENS = Tokens([("alice", ALICE), ("bob", BOB), ("prom", PROM, "metrics"), ("ops", OPS, "admin")])
INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@pytest.fixture
def server_engine(settings: Settings) -> Iterator[Engine]:
    """An engine for tests that are not async themselves (the server runs its own event loop)."""
    import anyio

    eng = Engine(settings)
    yield eng
    anyio.run(eng.aclose)


def post(url: str, body: Any = INIT, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/mcp", json=body, headers=MCP_HEADERS | headers, timeout=10)


# -- tokens -----------------------------------------------------------------------------------------


def test_tokens_are_tag_token_pairs_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert parse_tokens(f" alice={ALICE} ,bob = {BOB}", "env") == [("alice", ALICE, "member"), ("bob", BOB, "member")]
    file = tmp_path / "tokens"
    file.write_text(f"# team tokens\nalice={ALICE}\n\nbob={BOB}\n")
    assert load_tokens({"LLM_ROUTER_HTTP_TOKENS_FILE": str(file)}).tags == ["alice", "bob"]
    assert load_tokens({"LLM_ROUTER_HTTP_TOKENS": f"alice={ALICE}"}).tags == ["alice"]
    assert len(load_tokens({})) == 0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LLM_ROUTER_HTTP_TOKENS": "alice=short-secret"}, "at least 16"),
        ({"LLM_ROUTER_HTTP_TOKENS": f"{ALICE}"}, "entry 1 is not tag=token"),
        ({"LLM_ROUTER_HTTP_TOKENS": f"al ice={ALICE}"}, "the tag"),
        ({"LLM_ROUTER_HTTP_TOKENS": f"alice={ALICE},bob={ALICE}"}, "repeats"),
        ({"LLM_ROUTER_HTTP_TOKENS": f"alice={ALICE}", "LLM_ROUTER_HTTP_TOKENS_FILE": "/x"}, "not both"),
        ({"LLM_ROUTER_HTTP_TOKENS_FILE": "/no/such/tokens"}, "cannot read"),
    ],
)
def test_a_malformed_token_setting_is_refused_without_quoting_any_token(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_tokens(env)
    assert expected in str(caught.value)
    assert ALICE not in str(caught.value) and "short-secret" not in str(caught.value)


def test_a_presented_token_is_compared_in_constant_time_with_every_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("llm_router.http_app.hmac.compare_digest", spy)
    assert TOKENS.match(ALICE).tag == "alice"  # type: ignore[union-attr]
    assert len(calls) == len(TOKENS), "no early exit at the first match"
    assert all(len(a) == len(b) == 32 for a, b in calls), "digests, so lengths never differ"
    assert TOKENS.match(ALICE[:-1] + "X") is None and TOKENS.match("") is None and TOKENS.match(None) is None


# -- where requests may come from -------------------------------------------------------------------


def test_host_names_other_than_loopback_ip_addresses_and_configured_ones_are_refused() -> None:
    policy = HostPolicy(["router.internal"], ["https://tools.example.com"])
    for ok in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "10.1.2.3:8765", "router.internal", "ROUTER.internal:80"):
        assert policy.host_ok(ok), ok
    for bad in ("evil.example:8765", "localhost.evil.example", "", None, "127.0.0.1:notaport", "a@127.0.0.1", "x/y"):
        assert not policy.host_ok(bad), bad
    assert policy.origin_ok(None, "127.0.0.1:8765")
    assert policy.origin_ok("http://localhost:6274", "127.0.0.1:8765")
    assert policy.origin_ok("https://tools.example.com", "router.internal")
    assert policy.origin_ok("http://10.1.2.3:8765", "10.1.2.3:8765"), "the server's own origin"
    for bad in ("https://evil.example", "null", "http://10.1.2.3:9999", "file://x"):
        assert not policy.origin_ok(bad, "10.1.2.3:8765"), bad


def test_serve_refuses_a_non_loopback_host_without_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--demo", "--transport", "http", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0" in err and "LLM_ROUTER_HTTP_TOKENS" in err
    check_bind("0.0.0.0", TOKENS)  # with tokens it may
    check_bind("127.0.0.1", Tokens([]))
    check_bind("localhost", Tokens([]))
    with pytest.raises(ConfigError):
        check_bind("192.168.1.10", Tokens([]))


def test_stdio_mode_never_imports_metrics_or_the_http_app() -> None:
    code = (
        "import sys; from llm_router.cli import main; from llm_router.mcp_server import create_server; "
        "print(sorted(m for m in ('prometheus_client', 'llm_router.http_app', 'llm_router.metrics') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- through the server -----------------------------------------------------------------------------


def test_mcp_and_metrics_answer_401_without_or_with_a_wrong_token(server_engine: Engine) -> None:
    with serve(server_engine, tokens=TOKENS) as url:
        for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": f"Basic {ALICE}"}):
            r = post(url, **headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert ALICE not in r.text
            assert httpx.get(f"{url}/metrics", headers=headers).status_code == 401
        assert post(url, authorization=f"Bearer {ALICE}").status_code == 200
        assert httpx.get(f"{url}/metrics", headers={"authorization": f"bearer {PROM}"}).status_code == 200


def test_healthz_needs_no_token_and_reveals_nothing(server_engine: Engine) -> None:
    with serve(server_engine, tokens=TOKENS) as url:
        r = httpx.get(f"{url}/healthz", headers={"host": "anything.example"})
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert "server" not in r.headers
        assert httpx.post(f"{url}/healthz").status_code == 405
        assert httpx.get(f"{url}/admin").status_code == 404
        assert httpx.get(f"{url}/.well-known/oauth-protected-resource").status_code == 404


def test_a_rebound_host_or_a_foreign_origin_is_refused_even_with_a_token(server_engine: Engine) -> None:
    auth = f"Bearer {ALICE}"
    with serve(server_engine, tokens=TOKENS, http=HttpConfig(allowed_hosts=["router.internal"])) as url:
        assert post(url, authorization=auth, host="attacker.example:8765").status_code == 421
        assert post(url, authorization=auth, host="router.internal:8765").status_code == 200
        assert post(url, authorization=auth, origin="https://attacker.example").status_code == 403
        assert post(url, authorization=auth, origin="http://localhost:6274").status_code == 200
    with serve(server_engine) as url:  # no tokens on loopback: the Host/Origin checks are the only defence
        assert post(url, host="attacker.example").status_code == 421
        assert post(url, origin="https://attacker.example").status_code == 403
        assert post(url).status_code == 200


def test_a_session_opened_with_one_token_cannot_be_used_with_another(server_engine: Engine) -> None:
    with serve(server_engine, tokens=TOKENS) as url:
        opened = post(url, authorization=f"Bearer {ALICE}")
        session = opened.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        assert post(url, ping, authorization=f"Bearer {BOB}", **{"mcp-session-id": session}).status_code == 404


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_each_call_is_billed_to_the_tag_of_its_token(engine: Engine, mode: str) -> None:
    with serve(engine, tokens=TOKENS) as url:
        async with mcp_client(url, ALICE, mode=mode) as client:
            plain = await client.call_tool("complete", {"prompt": "hello", "model": "openai:gpt-4o-mini"})
            moved = await client.call_tool("complete", {"prompt": "hello", "tag": "someone-else"})
            explained = await client.call_tool("route_explain", {"prompt": "hello", "tag": "someone-else"})
        async with mcp_client(url, BOB, mode=mode) as client:
            await client.call_tool("complete", {"prompt": "hi", "tag": "bob"})
    assert not plain.is_error and not moved.is_error and not explained.is_error
    assert "billed to 'alice'" in moved.content[0].text and "billed to" not in plain.content[0].text
    assert "billed to 'alice'" in explained.content[0].text
    assert sorted(r["tag"] for r in engine.ledger.rows()) == ["alice", "alice", "bob"]


@pytest.mark.anyio
async def test_without_tokens_the_tag_argument_is_billed(engine: Engine) -> None:
    with serve(engine) as url:
        async with mcp_client(url) as client:
            assert not (await client.call_tool("complete", {"prompt": "hello", "tag": "research"})).is_error
    assert [r["tag"] for r in engine.ledger.rows()] == ["research"]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Exposition lines as {(name, labels): value}."""
    import re

    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            out[(name, frozenset(re.findall(r'(\w+)="([^"]*)"', labels)))] = float(value)
    return out


def _get(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.anyio
async def test_metrics_count_requests_latency_tokens_cost_fallbacks_breakers_and_budget_tiers(engine: Engine) -> None:
    from llm_router.types import ServerError

    # Haiku fails once: the chain falls back to gpt-4o-mini.
    engine.providers["anthropic"].fail_next(ServerError("boom", provider="anthropic", status=500))  # type: ignore[attr-defined]
    with serve(engine, tokens=TOKENS) as url:
        async with mcp_client(url, ALICE) as client:
            ok = await client.call_tool("complete", {"prompt": "hello", "model": ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]})
            assert not ok.is_error, ok.content
        async with mcp_client(url, OPS) as client:
            await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0.000001})
        async with mcp_client(url, ALICE) as client:
            refused = await client.call_tool("complete", {"prompt": "hello", "model": "openai:gpt-4o"})
            assert refused.is_error
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{url}/metrics", headers={"authorization": f"Bearer {PROM}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = _samples(r.text)
    mini = {"provider": "openai", "model": "gpt-4o-mini"}
    assert _get(m, "llm_router_requests_total", **mini, status="ok") == 1
    assert _get(m, "llm_router_request_latency_seconds_count", **mini) == 1
    assert _get(m, "llm_router_tokens_total", **mini, kind="input") > 0
    assert _get(m, "llm_router_tokens_total", **mini, kind="output") > 0
    assert _get(m, "llm_router_cost_usd_total", **mini) > 0
    assert _get(m, "llm_router_fallbacks_total", model="anthropic:claude-haiku-4-5", error_code="server_error") == 1
    assert _get(m, "llm_router_requests_total", provider="", model="", status="budget_exceeded") == 1
    assert _get(m, "llm_router_tool_calls_total", tool="complete", outcome="budget_exceeded") == 1
    assert _get(m, "llm_router_tool_latency_seconds_count", tool="complete") == 2
    assert _get(m, "llm_router_circuit_state", model="openai:gpt-4o-mini") == 0
    assert _get(m, "llm_router_budget_tier", scope="global", period="daily") == 3
    assert _get(m, "llm_router_budget_limit_usd", scope="global", period="daily") == pytest.approx(0.000001)
    assert "alice" not in r.text, "no tag reaches a metrics token's scrape"


# -- the transport's edges ----------------------------------------------------------------------------


def test_a_stream_resumption_with_last_event_id_is_refused_cleanly_never_a_500(server_engine: Engine) -> None:
    """No event history is kept, so nothing can be replayed; the SDK ended such a GET without any
    response, which the HTTP server turned into a 500."""
    with serve(server_engine, tokens=TOKENS) as url:
        opened = post(url, authorization=f"Bearer {ALICE}")
        headers = {"authorization": f"Bearer {ALICE}", "accept": "text/event-stream",
                   "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
        resumed = httpx.get(f"{url}/mcp", headers=headers | {"last-event-id": "0"}, timeout=10)
        assert resumed.status_code == 400
        assert resumed.json() == {"error": "resumption_unsupported", "error_description": (
            "this server keeps no event history, so a stream cannot be resumed: open a new one without Last-Event-ID")}
        assert httpx.get(f"{url}/mcp", headers={"last-event-id": "0"}, timeout=10).status_code == 401, "a token first"
        with httpx.stream("GET", f"{url}/mcp", headers=headers, timeout=10) as fresh:
            assert fresh.status_code == 200, "a new stream still opens"


def test_a_request_body_above_the_message_limit_is_refused(settings: Settings) -> None:
    import anyio

    from llm_router.config import LimitsConfig

    engine = Engine(settings.model_copy(update={"limits": LimitsConfig(max_message_bytes=4096)}))
    try:
        with serve(engine) as url:
            big = INIT | {"params": INIT["params"] | {"_meta": {"pad": "x" * 8000}}}
            assert post(url, big).status_code == 413
            assert post(url).status_code == 200
    finally:
        anyio.run(engine.aclose)


@pytest.mark.anyio
async def test_a_lone_surrogate_that_slips_into_an_answer_still_arrives_over_http(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP transport's encoder raised on it: the response ended without the answer, which
    had been billed. What reaches the MCP surface is made valid there too (the adapters clean
    what providers send; this is the net under them)."""
    from llm_router.providers.mock import MockProvider

    real = MockProvider._reply

    def broken(self: MockProvider, model: str, request: Any) -> Any:
        text, usage = real(self, model, request)
        return text + " half \ud83d, whole \ud83d\ude00", usage

    monkeypatch.setattr(MockProvider, "_reply", broken)
    with serve(engine) as url:
        async with mcp_client(url, mode="legacy") as client:
            done = await client.call_tool("complete", {"prompt": "hi"})
    assert not done.is_error, done.content
    assert done.structured_content["text"].endswith(" half \ufffd, whole \U0001F600")
    assert " half \ufffd, whole \U0001F600\n" in done.content[0].text


def test_the_printed_address_accepts_connections_before_uvicorn_has_started(
    server_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: the address was printed when the socket was bound but not yet listening, so a
    client connecting as soon as it read the line could be refused until uvicorn listened."""
    import socket

    import anyio
    import uvicorn

    from llm_router.http_app import serve_http

    connected: list[bool] = []

    async def serve_late(self: Any, sockets: list[socket.socket]) -> None:  # uvicorn not started yet
        try:
            port = sockets[0].getsockname()[1]
            assert f":{port}/mcp" in capsys.readouterr().err, "the address was printed first"
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                connected.append(True)
        finally:
            sockets[0].close()

    monkeypatch.setattr(uvicorn.Server, "serve", serve_late)
    anyio.run(lambda: serve_http(server_engine, host="127.0.0.1", port=0, tokens=Tokens([]), http=HttpConfig()))
    assert connected == [True]
