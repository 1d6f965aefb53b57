"""Independent clients: the official MCP Inspector in CLI mode, 0.15 and 2.12 (pinned in
``tests/node/package.json``), against the server on the demo configuration, over stdio (as Claude
Desktop runs it) and over Streamable HTTP (2.12 with a bearer token; 0.15's CLI cannot send a
header, so it talks to a loopback server without tokens). They are written in TypeScript on the
other official SDK, validate structured content against each tool's output schema even on an
error result, and negotiate their own protocol version, which is the point: every answer and
every error message must reach the person running them.

Rich calls too (over stdio with both, over HTTP with 2.12 and its token): a tool call asked for
beside a schema and an image, then the conversation that answers it, its JSON read from the
structured result and checked against the schema with ``jsonschema``. 0.15 sends each argument as
``key=value`` text and parses it as JSON only where the property's schema says ``object`` or
``array`` outright, which ours (each optional, so ``anyOf`` with ``null``) do not: the server
takes those texts as the JSON they hold, and these calls show it does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .node_peers import (
    INVOICE_SCHEMA,
    NODE_DIR,
    TOKEN,
    TOOLS,
    demo_server_command,
    http_server,
    image_turn,
    require,
    run_node,
)

pytestmark = pytest.mark.slow

CLI = {
    "0.15": ["node_modules/inspector-0.15/cli/build/cli.js", "--cli"],
    "2.12": ["node_modules/inspector-2.12/clients/launcher/build/index.js", "--cli", "--format", "json"],
}
PACKAGE = {"0.15": "inspector-0.15", "2.12": "inspector-2.12"}
ASK = {"prompt": "Summarise the plot of Hamlet in two lines.", "quality": "low", "tag": "inspector"}


class Inspector:
    """One Inspector version pointed at one server (a command, or a URL with its own flags)."""

    def __init__(self, version: str, target: list[str]) -> None:
        require(PACKAGE[version])
        self.version = version
        self.target = target

    def _run(self, *args: str) -> tuple[int, str, str]:
        proc = run_node([*CLI[self.version], *self.target, *args], ok=False)
        return proc.returncode, proc.stdout, proc.stderr

    def _result(self, out: str) -> dict[str, Any]:
        # 2.12 prints {"result": ...} (and, for an error result, an error line on stderr); 0.15 the result itself.
        data: dict[str, Any] = json.loads(out) if self.version == "0.15" else json.loads(out.splitlines()[0])["result"]
        return data

    def tools(self) -> dict[str, Any]:
        code, out, err = self._run("--method", "tools/list")
        assert code == 0, err
        return {t["name"]: t for t in self._result(out)["tools"]}

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The tool's result, which must have reached the user, error or not."""
        if self.version == "0.15":
            pairs = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in arguments.items()]
            args = ["--method", "tools/call", "--tool-name", tool, *(a for p in pairs for a in ("--tool-arg", p))]
        else:
            args = ["--method", "tools/call", "--tool-name", tool, "--tool-args-json", json.dumps(arguments)]
        code, out, err = self._run(*args)
        assert out.strip(), f"nothing reached the user (exit {code}): {err[-3000:]}"
        result = self._result(out)
        if result.get("isError"):
            assert "structuredContent" not in result
            assert code in (0, 5), err  # 2.12 exits 5 after showing an error result
        else:
            assert code == 0, err
        return result

    def read(self, uri: str) -> Any:
        code, out, err = self._run("--method", "resources/read", "--uri", uri)
        assert code == 0, err
        return json.loads(self._result(out)["contents"][0]["text"])

    def failure(self, *args: str) -> str:
        """What a request the server refuses with a JSON-RPC error shows."""
        code, out, err = self._run(*args)
        assert code != 0, out
        return err + out


def text_of(result: dict[str, Any]) -> str:
    return "".join(block.get("text", "") for block in result["content"])


RECEIPT = "Extract this receipt as the schema says; look up the local time with get_time first."
FORMAT = {"type": "json_schema", "schema": INVOICE_SCHEMA, "name": "invoice"}
RICH_ASK = {"quality": "low", "tag": "inspector"}
"""As ``ASK``: on the demo the cheapest models are free, which the later $0 limit relies on."""


def exercise_rich(inspector: Inspector, tools: dict[str, Any]) -> None:
    """A call with tools, a schema and an image, and the turn that answers its tool call: what
    each gives back is read from the structured result, as a client would use it."""
    offered = tools["complete"]["inputSchema"]["properties"]
    assert {"response_format", "tools", "tool_choice", "stop", "top_p", "seed"} <= set(offered)
    asked = inspector.call("complete", {"messages": [image_turn(RECEIPT)], "tools": TOOLS, "tool_choice": "required",
                                        "response_format": FORMAT, **RICH_ASK})
    called = asked["structuredContent"]
    assert not asked.get("isError") and called["finish_reason"] == "tool_calls", text_of(asked)
    [call] = called["tool_calls"]
    assert call["name"] == "get_time" and call["id"]
    jsonschema.Draft202012Validator(TOOLS[1]["inputSchema"]).validate(call["arguments"])

    turns = [image_turn(RECEIPT), {"role": "assistant", "tool_calls": [call]},
             {"role": "tool", "tool_call_id": call["id"], "content": "14:05"}]
    done = inspector.call("complete", {"messages": turns, "tools": TOOLS, "response_format": FORMAT, **RICH_ASK})
    answer = done["structuredContent"]
    assert not done.get("isError") and answer["finish_reason"] == "stop", text_of(done)
    jsonschema.Draft202012Validator(INVOICE_SCHEMA).validate(answer["json"])
    assert json.loads(answer["text"]) == answer["json"] and text_of(done).startswith(answer["text"])
    assert [a["outcome"] for a in answer["attempts"]] == ["ok"]


def exercise(inspector: Inspector, *, expected_tag: str, rich: bool = False) -> None:
    """Every tool's answer and errors, and (``rich``) the rich calls, before the budget is set to $0."""
    tools = inspector.tools()
    assert sorted(tools) == ["complete", "cost_report", "dashboard", "rate", "route_explain", "set_budget"]
    assert tools["route_explain"]["annotations"]["readOnlyHint"] is True
    assert tools["complete"]["inputSchema"]["additionalProperties"] is False

    explained = inspector.call("route_explain", ASK)
    chain = explained["structuredContent"]["chain"]
    assert chain and "Would try" in text_of(explained)
    done = inspector.call("complete", ASK)
    answer = done["structuredContent"]
    assert answer["attempts"][0]["model"] == chain[0], "complete walks the chain route_explain showed"
    assert answer["text"] and answer["request_id"] in text_of(done)
    row = next(e for e in inspector.read("llm-router://ledger")["entries"] if e["id"] == answer["request_id"])
    assert (row["status"], row["tag"], row["cost_usd"]) == ("ok", expected_tag, answer["cost_usd"])
    shown = inspector.call("dashboard", {"period": "today"})
    assert not shown.get("isError") and text_of(shown).startswith("Dashboard, today")
    assert [c["id"] for c in shown["structuredContent"]["calls"]][:1] == [answer["request_id"]]
    if rich:
        exercise_rich(inspector, tools)

    # Errors: each message reaches the user, with its code.
    typo = inspector.call("complete", {"prompt": "hi", "max_token": 50})
    assert text_of(typo) == "max_token: is not an argument of complete; did you mean 'max_tokens'?\n\n(invalid_input)"
    assert typo["_meta"]["llm-router/error"]["field"] == "max_token"
    assert text_of(inspector.call("complete", {"prompt": "hi", "quality": "hgih"})).startswith(
        "quality: 'hgih' is not allowed (allowed: low, medium, high, critical, auto)")
    assert text_of(inspector.call("cost_report", {"period": "fortnight"})).startswith("period: 'fortnight' is not allowed")
    assert not inspector.call("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0}).get("isError")
    refused = inspector.call("complete", {"prompt": "hello", "model": "openai:gpt-4o"})
    facts = refused["_meta"]["llm-router/error"]
    assert "budget global daily of $0 would be exceeded" in text_of(refused)
    assert text_of(refused).endswith(f"(budget_exceeded; request {facts['request_id']})")
    assert "no such resource: 'llm-router://nothing'" in inspector.failure("--method", "resources/read",
                                                                           "--uri", "llm-router://nothing")


@pytest.mark.parametrize("version", ["0.15", "2.12"])
def test_the_inspector_cli_shows_every_answer_and_every_error_over_stdio(version: str, tmp_path: Path) -> None:
    inspector = Inspector(version, demo_server_command(tmp_path / "ledger.db"))
    exercise(inspector, expected_tag="inspector", rich=True)
    if version == "2.12":
        templates = run_node([*CLI[version], *inspector.target, "--method", "resources/templates/list"]).stdout
        assert [t["uriTemplate"] for t in json.loads(templates.splitlines()[0])["result"]["resourceTemplates"]] == [
            "llm-router://ledger/{date}", "llm-router://answers/{request_id}"]


def test_the_inspector_0_15_cli_shows_every_answer_and_every_error_over_http(tmp_path: Path) -> None:
    with http_server(tmp_path / "http.db", token=None) as url:
        exercise(Inspector("0.15", [url]), expected_tag="inspector")


def test_the_inspector_2_12_cli_shows_every_answer_and_every_error_over_http_with_a_bearer_token(tmp_path: Path) -> None:
    with http_server(tmp_path / "http.db") as url:
        target = ["--transport", "http", "--server-url", url, "--header", f"Authorization: Bearer {TOKEN}"]
        # The token's tag, not the "inspector" tag argument, is what the ledger row carries.
        exercise(Inspector("2.12", target), expected_tag="ci", rich=True)
        # The newest protocol era works too.
        modern = Inspector("2.12", [*target, "--protocol-era", "modern"])
        assert sorted(modern.tools()) == ["complete", "cost_report", "dashboard", "rate", "route_explain", "set_budget"]
        done = modern.call("complete", {"prompt": "hello", "model": "ollama:llama3.1"})
        assert done["structuredContent"]["model"] == "ollama:llama3.1"
        typo = modern.call("complete", {"prompt": "hello", "temprature": 0})
        assert text_of(typo).startswith("temprature: is not an argument of complete; did you mean 'temperature'?")
        # No token, no service.
        refused = Inspector("2.12", ["--transport", "http", "--server-url", url, "--stored-auth-only"])
        shown = refused.failure("--method", "tools/list")
        assert "401" in shown or "auth" in shown.lower()


def test_the_pinned_inspectors_are_the_ones_installed() -> None:
    for version, package in PACKAGE.items():
        require(package)
        installed = json.loads((NODE_DIR / "node_modules" / package / "package.json").read_text())
        assert installed["name"] == "@modelcontextprotocol/inspector" and installed["version"].startswith(version + ".")
