"""claude_desktop_config.example.json and the README's entries work as written: valid JSON, the
console script pyproject installs, arguments the CLI accepts, keys only in ``env`` — and each
entry, with its placeholder path pointed at this checkout, starts a server a client can use."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from llm_router.cli import _parser
from llm_router.redaction import KEY_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "claude_desktop_config.example.json"
SCRIPT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def entries() -> dict[str, dict[str, Any]]:
    return json.loads(EXAMPLE.read_text())["mcpServers"]


def cli_args(entry: dict[str, Any]) -> list[str]:
    """The arguments llm-router-mcp itself receives from an entry."""
    args = list(entry.get("args", []))
    if entry["command"].endswith("/uvx"):
        assert args[0] == "--from" and args[1] == "/absolute/path/to/llm-router-mcp"
        assert args[2] in SCRIPT, "uvx runs the console script pyproject installs"
        return args[3:]
    assert entry["command"].endswith("/.venv/bin/" + next(iter(SCRIPT)))
    return args


def test_every_example_entry_runs_the_installed_script_with_arguments_it_accepts() -> None:
    assert set(entries()) == {"llm-router", "llm-router-uvx", "llm-router-demo"}
    for name, entry in entries().items():
        assert set(entry) <= {"command", "args", "env"}, name
        assert entry["command"].startswith("/"), "Claude Desktop needs absolute paths"
        args = cli_args(entry) or ["serve"]
        parsed = _parser().parse_args(args)
        assert parsed.command == "serve" and parsed.transport == "stdio", name
        assert set(entry.get("env", {})) <= set(KEY_VARIABLES), "keys are given as environment variables"


def test_the_readme_shows_the_same_entries() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", readme, re.DOTALL)]
    shown = [b["mcpServers"]["llm-router"] for b in blocks if "llm-router" in b.get("mcpServers", {})]
    assert [e["command"] for e in shown] == [entries()["llm-router"]["command"], entries()["llm-router-uvx"]["command"]]
    assert shown[1]["args"] == entries()["llm-router-uvx"]["args"]
    assert '"args": ["serve", "--demo"]' in readme


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("name", ["llm-router", "llm-router-demo"])
async def test_an_example_entry_starts_a_server_a_client_can_use(name: str, tmp_path: Path) -> None:
    entry = entries()[name]
    script = Path(sys.executable).parent / next(iter(SCRIPT))
    assert script.exists(), "the set-up command installs the console script beside python"
    args = cli_args(entry)
    if "--demo" in args:
        args += ["--ledger", str(tmp_path / "demo.db")]
    env = {"LLM_ROUTER_DB": str(tmp_path / "ledger.db"), **entry.get("env", {})}
    async with Client(StdioServerParameters(command=str(script), args=args, env=env), mode="legacy") as client:
        assert len((await client.list_tools()).tools) == 6
        providers = json.loads((await client.read_resource("llm-router://providers")).contents[0].text)["providers"]
    usable = {p["name"] for p in providers if p["usable"]}
    if name == "llm-router":
        assert usable == {"anthropic", "openai"}, "the two keys in env enable their providers"
        assert "your-anthropic-key" not in json.dumps(providers)
    else:
        assert all("mock" in p["kind"] for p in providers)
