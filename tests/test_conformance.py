"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, pinned in
``tests/node/package.json``) against ``serve --transport http`` on the demo configuration.

The suite's server scenarios are written against its own reference server: most call fixture
tools, resources and prompts it expects to find (``test_simple_text``, ``test://static-text``,
``prompts/get``, ``completion/complete``). Those cannot apply to this server, which has its four
tools and no prompts; each of them must fail only for that reason, with this server's clear
refusal. Every scenario that can apply must pass.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .node_peers import http_server, require, run_node

pytestmark = pytest.mark.slow

SUITE = "node_modules/@modelcontextprotocol/conformance/dist/index.js"
APPLIES = {
    "server-initialize", "logging-set-level", "ping", "tools-list", "resources-list",
    "server-sse-multiple-streams", "dns-rebinding-protection",
}
"""The scenarios about what this server offers: the handshake, logging, ping, listing, SSE streams, Host checks."""
FIXTURE_MISSING = re.compile(
    r"Unknown tool: 'test_|Tool 'json_schema_2020_12_tool' not found|no such resource(?: to subscribe to)?: 'test://"
    r"|MCP error -32601: Method not found"
)
"""How this server refuses the suite's fixtures: an unknown tool (-32602), an unknown resource
(-32002), a method it does not serve (prompts, completion: -32601)."""


def test_every_conformance_scenario_that_applies_passes_and_the_rest_fail_only_for_want_of_the_suites_fixtures(
    tmp_path: Path,
) -> None:
    require("@modelcontextprotocol/conformance")
    out = tmp_path / "results"
    with http_server(tmp_path / "ledger.db", token=None) as url:
        run = run_node([SUITE, "server", "--url", url, "--suite", "all", "-o", str(out)], ok=False)
    results: dict[str, list[dict[str, object]]] = {}
    for checks in out.glob("*/checks.json"):
        scenario = re.sub(r"^server-|-\d{4}-\d{2}-\d{2}T.*$", "", checks.parent.name)
        results[scenario] = json.loads(checks.read_text())
    assert set(results) >= APPLIES, (sorted(results), run.stdout[-3000:])
    for scenario, checks in sorted(results.items()):
        statuses = {str(c["status"]) for c in checks}
        if scenario in APPLIES:
            assert statuses <= {"SUCCESS", "INFO", "WARNING"} and "SUCCESS" in statuses, (scenario, checks)
            continue
        for check in checks:
            if check["status"] == "FAILURE":
                assert FIXTURE_MISSING.search(str(check.get("errorMessage", ""))), (scenario, check)
