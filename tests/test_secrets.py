"""Keys and tokens never leave the process, and prompts are kept only as a hash.

The whole surface is driven with recognisable fake keys, over stdio and over HTTP, against
loopback fakes of the four provider APIs that echo the key back in error bodies, headers and
even answers; `check` probes the same fakes. Then every captured output — tool results and
errors, resources, log messages, progress, the servers' stderr, `check`'s output, /metrics —
and the ledger file itself are searched for the keys, the HTTP token and the prompt text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from .fakes import FakeProvider
from .http_server import mcp_client

pytestmark = pytest.mark.slow

KEYS = {
    "anthropic": "sk-ant-FAKEKEY-anthropic-4c1d2e3f",
    "openai": "sk-proj-FAKEKEY-openai-9a8b7c6d",
    "gemini": "AIzaFAKEKEY-gemini-5e6f7a8b9c",
    "ollama": "ollama-FAKEKEY-cloud-1a2b3c4d",
}
TOKEN = "FAKETOKEN-http-bearer-0f1e2d3c4b"
PROMPT = "PROMPT-CANARY: the quarterly numbers for project bluebird"
MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash", "ollama": "llama3.1"}
VARS = {kind: f"{kind.upper()}_API_KEY" if kind != "ollama" else "OLLAMA_CLOUD_KEY" for kind in KEYS}


def _config(tmp_path: Path, fakes: dict[str, FakeProvider]) -> Path:
    lines = [f'[ledger]\npath = "{tmp_path / "ledger.db"}"\n', "[resilience]\nmax_retries = 0\nbreaker_failures = 50\n"]
    for kind, fake in fakes.items():
        lines.append(
            f'[[providers]]\nname = "{kind}"\nkind = "{kind}"\nbase_url = "{fake.base_url}"\n'
            f'api_key_env = "{VARS[kind]}"\nmodels = ["{MODELS[kind]}"]\ntimeout_s = 10\n'
        )
    lines.append('[providers.prices."llama3.1"]\ninput_per_mtok = 0.1\noutput_per_mtok = 0.1\n')
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines))
    return path


def _echo_key_everywhere(fake: FakeProvider, key: str) -> None:
    """An auth failure, a server error and a rate limit that quote the key (body and headers), then
    an answer that does too — and a model list that fails the same way."""
    echo = {"headers": {"x-echo-key": key}}
    fake.fault("status", status=401, message=f"Incorrect API key provided: {key}", **echo)
    fake.fault("status", status=500, message=f"internal error while checking {key}", **echo)
    fake.fault("status", status=429, message=f"rate limit for key {key}", retry_after=1, **echo)
    fake.reply(text=f"Your key is {key}.")
    fake.fault("status", endpoint="models", status=401, message=f"Incorrect API key provided: {key}", times=None)


def _env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    return env | {VARS[k]: v for k, v in KEYS.items()} | {"LLM_ROUTER_CONFIG": str(config)}


async def _drive(client: Client, seen: list[str]) -> None:
    """Every tool and resource; each provider fails (echoing its key) before one answers."""

    async def progress(_p: float, _t: float | None, message: str | None) -> None:
        seen.append(message or "")

    def keep(result: Any) -> Any:
        seen.append("".join(getattr(b, "text", "") for b in result.content))
        seen.append(json.dumps(result.structured_content))
        return result

    chain = [f"{k}:{m}" for k, m in MODELS.items()]
    for _ in range(4):  # auth, server error, rate limit, then the echoed answer, on each provider
        keep(await client.call_tool("complete", {"prompt": PROMPT, "model": chain, "tag": "secrets"},
                                    progress_callback=progress))
    keep(await client.call_tool("route_explain", {"prompt": PROMPT}))
    keep(await client.call_tool("cost_report", {"period": "today", "group_by": "model"}))
    keep(await client.call_tool("set_budget", {"scope": "provider:openai", "period": "daily", "limit_usd": 3}))
    keep(await client.call_tool("complete", {"prompt": ""}))
    day = None
    for uri in ("llm-router://providers", "llm-router://ledger", "llm-router://budgets"):
        text = (await client.read_resource(uri)).contents[0].text
        seen.append(text)
        if uri.endswith("budgets"):
            day = json.loads(text)["budgets"][0]["period_start"]
    seen.append((await client.read_resource(f"llm-router://ledger/{day}")).contents[0].text)


def _ledger_bytes(tmp_path: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in tmp_path.glob("ledger.db*"))


def test_no_key_token_or_prompt_appears_in_any_output_or_in_the_ledger(tmp_path: Path) -> None:
    fakes = {kind: FakeProvider(kind, api_key=key, models=[MODELS[kind]]) for kind, key in KEYS.items()}
    for fake in fakes.values():
        fake.start()
    seen: list[str] = []
    logs: list[str] = []

    async def on_log(params: Any) -> None:
        logs.append(json.dumps(params.data))

    async def over_stdio(env: dict[str, str]) -> None:
        """As Claude Desktop runs it."""
        params = StdioServerParameters(command=sys.executable, args=["-m", "llm_router", "serve"], env=env)
        with (tmp_path / "stdio.err").open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), mode="legacy", logging_callback=on_log) as client:
                await _drive(client, seen)

    async def over_http(url: str) -> None:
        """As a team runs it."""
        async with mcp_client(url, TOKEN, mode="legacy", logging_callback=on_log) as client:
            await _drive(client, seen)

    try:
        config = _config(tmp_path, fakes)
        env = _env(config)
        for kind, fake in fakes.items():
            _echo_key_everywhere(fake, KEYS[kind])
        anyio.run(over_stdio, env)

        for kind, fake in fakes.items():
            fake.clear()
            _echo_key_everywhere(fake, KEYS[kind])
        http_env = env | {"LLM_ROUTER_HTTP_TOKENS": f"team={TOKEN}"}
        server = subprocess.Popen(
            [sys.executable, "-m", "llm_router", "serve", "--transport", "http", "--port", "0"],
            env=http_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            url = _wait_for_url(server)
            anyio.run(over_http, url)
            seen.append(httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text)
            seen.append(httpx.get(f"{url}/healthz").text)
            seen.append(httpx.post(f"{url}/mcp", headers={"authorization": f"Bearer {TOKEN}x"}).text)
        finally:
            server.terminate()
            out, err = server.communicate(timeout=20)
        seen += [out, err]

        # check, probing every provider (each model list fails, quoting the key).
        check = subprocess.run([sys.executable, "-m", "llm_router", "check"], env=http_env, capture_output=True,
                               text=True, timeout=60, check=False)
        seen += [check.stdout, check.stderr]
        assert "NOT usable" in check.stdout and "http tokens: 1 (1 member), for tag(s) team" in check.stdout
    finally:
        for fake in fakes.values():
            fake.stop()

    # The keys were really sent, and really echoed back...
    for kind, fake in fakes.items():
        assert any(KEYS[kind] in json.dumps(dict(r.headers)) for r in fake.requests), kind
    everything = "\n".join(seen + logs) + (tmp_path / "stdio.err").read_text()
    assert "[redacted]" in everything
    assert any("[redacted]" in line for line in logs), "errors quoting a key reach the client as log messages"
    # ...and never came out.
    ledger = _ledger_bytes(tmp_path)
    for secret in [*KEYS.values(), TOKEN]:
        assert secret not in everything, secret
        assert secret not in ledger, secret
    assert PROMPT not in ledger, "prompts are kept only as a hash"
    assert "secrets" in ledger and "anthropic" in ledger


def _wait_for_url(server: subprocess.Popen[str]) -> str:
    """The server prints where it listens (with --port 0, the port the OS chose) before serving."""
    assert server.stderr is not None
    for line in server.stderr:
        if "MCP at " in line:
            return line.split("MCP at ", 1)[1].split()[0].removesuffix(";").removesuffix("/mcp")
    raise AssertionError("the HTTP server did not start")


@pytest.mark.anyio
async def test_prompt_text_is_kept_only_when_store_prompts_is_on(tmp_path: Path) -> None:
    from llm_router.engine import Engine
    from llm_router.mcp_server import create_server

    from .conftest import make_settings

    for store, where in ((False, tmp_path / "hashed"), (True, tmp_path / "stored")):
        where.mkdir()
        engine = Engine(make_settings(where, ledger={"path": str(where / "ledger.db"), "store_prompts": store}))
        try:
            async with Client(create_server(engine)) as client:
                assert not (await client.call_tool("complete", {"prompt": PROMPT})).is_error
            row = engine.ledger.rows()[0]
        finally:
            await engine.aclose()
        assert len(row["prompt_hash"]) == 64
        assert (PROMPT in _ledger_bytes(where)) is store
        assert (row["prompt"] is not None) is store
