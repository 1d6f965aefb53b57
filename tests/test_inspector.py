"""An independent client: the official MCP Inspector, in CLI mode, against the server on the demo
configuration — over stdio (as Claude Desktop runs it) and over Streamable HTTP with a bearer
token. It is written in TypeScript on the other official SDK and negotiates its own protocol
version (by default the handshake era, older than this SDK's newest), which is the point.

npx fetches the Inspector itself, so the first run on a fresh machine takes a while. Without npx
(no Node.js) these tests are skipped, saying so; with npx, a failure to fetch or run it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

# Pinned: its flags and output format are what these tests read. (Unpinned, npx on Node 20 picks
# 0.15, the last release without an engines constraint, whose CLI cannot send an HTTP header.)
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
TOKEN = "inspector-ci-token-5f4e3d2c1b0a"
FIRST_RUN_TIMEOUT_S = 300  # downloading the package on a fresh machine

NPX = shutil.which("npx")
if NPX is None:
    pytest.skip("npx is not installed: the MCP Inspector tests need Node.js (npx) to fetch "
                f"{INSPECTOR}", allow_module_level=True)


def inspector(*args: str, ok: bool = True) -> Any:
    """Run one Inspector CLI call and return its result (``--format json``)."""
    assert NPX is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")} | {"NO_COLOR": "1"}
    proc = subprocess.run(
        [NPX, "-y", INSPECTOR, "--cli", "--format", "json", *args],
        capture_output=True, text=True, timeout=FIRST_RUN_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL, check=False,
    )
    if not ok:
        assert proc.returncode != 0, proc.stdout
        return proc.stderr + proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    return json.loads(proc.stdout)["result"]


def check_tools_list(result: dict[str, Any]) -> None:
    tools = {t["name"]: t for t in result["tools"]}
    assert sorted(tools) == ["complete", "cost_report", "route_explain", "set_budget"]
    assert tools["route_explain"]["annotations"]["readOnlyHint"] is True
    assert tools["complete"]["outputSchema"]["type"] == "object"


def check_route_then_complete(target: list[str], *, expected_tag: str, ledger_uri: str = "llm-router://ledger") -> None:
    ask = {"prompt": "Summarise the plot of Hamlet in two lines.", "quality": "low", "tag": "inspector"}
    explained = inspector(*target, "--method", "tools/call", "--tool-name", "route_explain",
                          "--tool-args-json", json.dumps(ask))
    assert not explained.get("isError"), explained
    chain = explained["structuredContent"]["chain"]
    assert chain and "Would try" in explained["content"][0]["text"]

    done = inspector(*target, "--method", "tools/call", "--tool-name", "complete", "--tool-args-json", json.dumps(ask))
    assert not done.get("isError"), done
    answer = done["structuredContent"]
    assert answer["attempts"][0]["model"] == chain[0], "complete walks the chain route_explain showed"
    assert answer["text"] and answer["usage"]["output_tokens"] > 0 and answer["request_id"] in done["content"][0]["text"]

    read = inspector(*target, "--method", "resources/read", "--uri", ledger_uri)
    entries = json.loads(read["contents"][0]["text"])["entries"]
    row = next(e for e in entries if e["id"] == answer["request_id"])
    assert (row["status"], row["tag"], row["cost_usd"]) == ("ok", expected_tag, answer["cost_usd"])


def test_the_inspector_drives_the_server_over_stdio(tmp_path: Path) -> None:
    target = [sys.executable, "-m", "llm_router", "serve", "--demo", "--ledger", str(tmp_path / "ledger.db")]
    check_tools_list(inspector(*target, "--method", "tools/list"))
    check_route_then_complete(target, expected_tag="inspector")
    templates = inspector(*target, "--method", "resources/templates/list")["resourceTemplates"]
    assert [t["uriTemplate"] for t in templates] == ["llm-router://ledger/{date}"]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """``serve --transport http`` as a team would run it, on a port the OS picks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    env["LLM_ROUTER_HTTP_TOKENS"] = f"ci={TOKEN}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_router", "serve", "--demo", "--ledger", str(tmp_path / "http.db"),
         "--transport", "http", "--port", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url: list[str] = []
    ready = threading.Event()

    def read_stderr() -> None:  # also keeps the pipe drained while the server runs
        assert proc.stderr is not None
        for line in proc.stderr:
            if not url and "MCP at " in line:
                url.append(line.split("MCP at ", 1)[1].split(";")[0])
                ready.set()
        ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert ready.wait(60) and url, "the HTTP server did not start"
        yield url[0]
    finally:
        proc.terminate()
        proc.wait(20)
        reader.join(5)
        assert proc.stderr is not None
        proc.stderr.close()


def test_the_inspector_drives_the_server_over_http_with_a_bearer_token(http_server: str) -> None:
    target = ["--transport", "http", "--server-url", http_server, "--header", f"Authorization: Bearer {TOKEN}"]
    check_tools_list(inspector(*target, "--method", "tools/list"))
    # The token's tag, not the "inspector" tag argument, is what the ledger row carries.
    check_route_then_complete(target, expected_tag="ci")
    # The newest protocol era works too.
    modern = [*target, "--protocol-era", "modern"]
    check_tools_list(inspector(*modern, "--method", "tools/list"))
    done = inspector(*modern, "--method", "tools/call", "--tool-name", "complete",
                     "--tool-args-json", json.dumps({"prompt": "hello", "model": "ollama:llama3.1"}))
    assert done["structuredContent"]["model"] == "ollama:llama3.1"
    # No token, no service.
    refused = inspector("--transport", "http", "--server-url", http_server, "--stored-auth-only",
                        "--method", "tools/list", ok=False)
    assert "401" in refused or "auth" in refused.lower()
