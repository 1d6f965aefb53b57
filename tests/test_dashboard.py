"""The spend dashboard: the ``dashboard`` tool, the MCP App page (``ui://llm-router/dashboard.html``)
and ``GET /dashboard`` in HTTP mode.

Its figures are checked where a person reads them: in the page as headless Chromium rendered it,
from a real SQLite ledger (``dashboard_fixture``) behind a real uvicorn server, against what
``cost_report`` and ``llm-router://budgets`` say through real MCP sessions. The App path runs in a
host page of ours that loads the ``ui://`` HTML (read over MCP) in an iframe and speaks the Apps
protocol with it (``ui/initialize``, the tool's input and result, ``tools/call`` proxied).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from llm_router.engine import Engine
from llm_router.http_app import Tokens
from llm_router.mcp_server import BUDGETS_URI, LEDGER_URI, create_server

from . import browser
from .dashboard_fixture import ALICE, RESEARCH, record_past_days, today_calls
from .http_server import mcp_client, serve

PROM = "prom-dashboard-token-0123456789ab"
TOKENS = Tokens([("alice", ALICE, "member"), ("research", RESEARCH, "admin"), ("prom", PROM, "metrics")])
UI_URI = "ui://llm-router/dashboard.html"
APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
PERIOD = "last_7_days"

pytestmark = pytest.mark.anyio


@pytest.fixture
async def site(engine: Engine) -> AsyncIterator[str]:
    """The fixture ledger behind a real HTTP server with tokens; yields its base URL."""
    record_past_days(engine)
    with serve(engine, tokens=TOKENS) as url:
        async with mcp_client(url, RESEARCH) as admin, mcp_client(url, ALICE) as alice:
            await today_calls(admin, alice, engine)
        yield url


def _text(result: Any) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


async def _read_json(client: Any, uri: str) -> Any:
    return json.loads((await client.read_resource(uri)).contents[0].text)


async def _expected(url: str, token: str) -> dict[str, str]:
    """What the page must show, hook by hook, from cost_report and the resources (read over MCP
    with the same token): never from the dashboard's own data."""
    want: dict[str, str] = {}
    async with mcp_client(url, token) as client:
        for group in ("day", "provider", "model"):
            report = (await client.call_tool("cost_report", {"period": PERIOD, "group_by": group})).structured_content
            for r in report["rows"]:
                want[f"{group}.{r[group]}.cost_usd"] = r["cost_usd"]
                want[f"{group}.{r[group]}.requests"] = str(r["requests"])
        t = report["totals"]
        want |= {"totals.cost_usd": t["cost_usd"], "totals.requests": str(t["requests"]), "totals.errors": str(t["errors"]),
                 "projection.month_end_usd": report["projection"]["month_end_usd"]}
        if report["savings"] is not None:
            want["savings.saved_usd"] = report["savings"]["saved_usd"]
        for b in (await _read_json(client, BUDGETS_URI))["budgets"]:
            # What is held, and so what is left, moves when the spare hold is let go (after 2 s idle):
            # those two are checked against the page's own limit and spend (``_budgets_add_up``).
            for field in ("limit_usd", "spent_usd"):
                if field in b:
                    want[f"budget.{b['scope']} {b['period']}.{field}"] = b[field]
        for row in (await _read_json(client, LEDGER_URI))["entries"][:20]:
            want[f"call.{row['id']}.cost_usd"] = row["cost_usd"]
            want[f"call.{row['id']}.tag"] = row["tag"]
    return want


def _embedded(html: str) -> Any:
    found = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', html)
    assert found, "the page has its data tag"
    return json.loads(found.group(1))


def _budgets_add_up(hooks: browser.Hooks) -> int:
    """Every budget the page shows with its spend: left = limit - spent - held, to the nano-dollar.
    Returns how many there were."""
    from decimal import Decimal

    names = {k.rsplit(".", 1)[0] for k in hooks.keys_under("budget.") if k.endswith(".spent_usd")}
    for name in names:
        limit, spent, held, left = (Decimal(hooks.value(f"{name}.{f}")) for f in
                                    ("limit_usd", "spent_usd", "reserved_usd", "remaining_usd"))
        assert left == max(limit - spent - held, Decimal(0)), name
    return len(names)


def _shown(hooks: browser.Hooks, want: dict[str, str]) -> dict[str, str]:
    """The hooks the page shows for the keys wanted, each checked to read as its value."""
    got = {}
    for key in want:
        if key in hooks:
            value, text = hooks[key]
            got[key] = value
            assert text.endswith(value) or text == value, (key, value, text)  # "$0.0012" shows 0.0012
    return got


# -- MCP: the tool, the listing, the resource --------------------------------------------------


async def test_an_apps_host_is_offered_the_page_and_other_clients_today_s_listing(engine: Engine) -> None:
    async with Client(create_server(engine), extensions=[APPS]) as host, Client(create_server(engine)) as plain:
        assert EXTENSION_ID in (host.server_capabilities.extensions or {})
        linked = {t.name: (t.meta or {}).get("ui") for t in (await host.list_tools()).tools}
        assert linked["dashboard"] == {"resourceUri": UI_URI} and linked["cost_report"] == {"resourceUri": UI_URI}
        assert all(linked[name] is None for name in ("complete", "route_explain", "set_budget", "rate"))
        assert all(t.meta is None for t in (await plain.list_tools()).tools)
        listed = {r.uri: r for r in (await host.list_resources()).resources}
        assert listed[UI_URI].mime_type == APP_MIME_TYPE
        assert UI_URI not in {r.uri for r in (await plain.list_resources()).resources}
        page = (await host.read_resource(UI_URI)).contents[0]
        assert page.mime_type == APP_MIME_TYPE and page.text.startswith("<!DOCTYPE html>")
        assert '<script type="application/json" id="dashboard-data">null</script>' in page.text, "no data in the page"
        await host.call_tool("complete", {"prompt": "hello", "tag": "t"})
        args = {"period": "today", "group_by": "model"}
        a, b = await host.call_tool("cost_report", args), await plain.call_tool("cost_report", args)
        assert _text(a) == _text(b) and a.structured_content == b.structured_content


async def test_the_dashboard_tool_gives_its_facts_as_text_too_and_its_result_fits_its_schema(engine: Engine) -> None:
    record_past_days(engine)
    async with Client(create_server(engine)) as client:
        await today_calls(client, client, engine)
        schema = next(t for t in (await client.list_tools()).tools if t.name == "dashboard").output_schema
        result = await client.call_tool("dashboard", {"period": PERIOD})
        report = (await client.call_tool("cost_report", {"period": PERIOD})).structured_content
    assert not result.is_error
    data = result.structured_content
    jsonschema.validate(data, schema)
    assert data["totals"] == report["totals"] and data["savings"] == report["savings"]
    assert len(data["by_day"]) == 7 and data["by_day"][0]["day"] == report["period"]["first_day"]
    assert [r["provider"] for r in data["by_provider"]] == ["anthropic", "openai", "gemini"]  # dearest first
    fell_back = [c for c in data["calls"] if len(c["attempts"]) == 2]
    assert fell_back and all([a["outcome"] for a in c["attempts"]] == ["error", "ok"] for c in fell_back)
    text = _text(result)
    assert text.startswith(f"Dashboard, {PERIOD} ")
    assert f"${report['totals']['cost_usd']} over {report['totals']['requests']} calls" in text
    assert f"saved ${report['savings']['saved_usd']} against {report['savings']['reference_model']}" in text
    assert "budget tag:alice monthly: $" in text and "→" in text


async def test_the_dashboard_tool_refuses_bad_arguments_by_name(engine: Engine) -> None:
    async with Client(create_server(engine)) as client:
        both = await client.call_tool("dashboard", {"period": "today", "since": "2026-01-01"})
        bad = await client.call_tool("dashboard", {"period": "fortnight"})
    assert both.is_error and _text(both).startswith("period: give a period or since/until, not both")
    assert bad.is_error and _text(bad).startswith("period: 'fortnight' is not allowed")
    assert bad.meta["llm-router/error"]["field"] == "period"


async def test_the_dashboard_draws_at_most_a_year_and_the_last_possible_day_is_no_crash(engine: Engine) -> None:
    """Regression: every day of the period is drawn, so since=0001-01-01 held the loop for half a
    minute, and a period ending 9999-12-31 overflowed the date (an internal error)."""
    async with Client(create_server(engine)) as client:
        centuries = await client.call_tool("dashboard", {"since": "0001-01-01", "until": "9999-12-30"})
        open_ended = await client.call_tool("dashboard", {"until": "9999-12-31"})
        last_year = await client.call_tool("dashboard", {"since": "9999-01-01", "until": "9999-12-31"})
    assert centuries.is_error and _text(centuries).startswith("since: is more than 366 days from the other end")
    assert centuries.meta["llm-router/error"]["field"] == "since"
    assert open_ended.is_error and open_ended.meta["llm-router/error"]["field"] == "until"
    assert not last_year.is_error, _text(last_year)
    assert len(last_year.structured_content["by_day"]) == 365


async def test_a_member_s_dashboard_tool_shows_only_its_own_tag(site: str) -> None:
    async with mcp_client(site, ALICE) as alice:
        mine = (await alice.call_tool("dashboard", {"period": PERIOD})).structured_content
        other = await alice.call_tool("dashboard", {"period": PERIOD, "tag": "research"})
        report = (await alice.call_tool("cost_report", {"period": PERIOD})).structured_content
    assert other.is_error and "tag" in _text(other)
    assert {c["tag"] for c in mine["calls"]} == {"alice"} and mine["totals"] == report["totals"]
    assert mine["filters"] == {"tag": "alice"}
    scopes = {b["scope"]: b for b in mine["budgets"]}
    assert "tag:research" not in scopes and "spent_usd" in scopes["tag:alice"]
    assert "spent_usd" not in scopes["global"], "a shared limit is shown by its limit and tier only"


# -- HTTP: /dashboard and /dashboard/data ---------------------------------------------------------


async def test_dashboard_over_http_keeps_the_guard_s_rules_and_a_strict_csp(site: str) -> None:
    async with httpx.AsyncClient(base_url=site, timeout=30) as http:
        bare = await http.get("/dashboard")
        assert bare.status_code == 200
        assert _embedded(bare.text) == {"data": None, "needs_token": True, "period": PERIOD}, "no data without a token"
        csp = bare.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'$", csp.split(";")[1].strip())
        assert (await http.get("/dashboard/data")).status_code == 401
        assert (await http.get("/dashboard", headers={"Authorization": "Bearer not-a-token-at-all-0000"})).status_code == 401
        for path in ("/dashboard", "/dashboard/data"):
            refused = await http.get(path, headers={"Authorization": f"Bearer {PROM}"})
            assert refused.status_code == 403 and "metrics" in refused.json()["error_description"]
        bad = await http.get("/dashboard/data", params={"period": "fortnight"}, headers={"Authorization": f"Bearer {ALICE}"})
        assert bad.status_code == 400 and bad.json()["field"] == "period" and "last_7_days" in bad.json()["allowed"]
        assert (await http.get("/dashboard", params={"perod": "today"})).json()["field"] == "perod"
        assert (await http.get("/dashboard", headers={"Host": "evil.example"})).status_code == 421
        assert (await http.get("/dashboard/data", headers={"Origin": "https://evil.example",
                                                          "Authorization": f"Bearer {ALICE}"})).status_code == 403
        full = await http.get("/dashboard", params={"period": PERIOD}, headers={"Authorization": f"Bearer {RESEARCH}"})
        assert full.status_code == 200 and full.headers["cache-control"] == "no-store"
        data = _embedded(full.text)["data"]
        assert data["period"]["name"] == PERIOD
        assert RESEARCH not in full.text and ALICE not in full.text
    async with mcp_client(site, RESEARCH) as admin:
        report = (await admin.call_tool("cost_report", {"period": PERIOD})).structured_content
    assert data["totals"] == report["totals"]


async def test_without_tokens_the_local_user_gets_the_page_with_its_data(engine: Engine) -> None:
    record_past_days(engine)
    with serve(engine) as url:
        page = httpx.get(f"{url}/dashboard?period=last_30_days", timeout=30)
        got = httpx.get(f"{url}/dashboard/data?period=last_30_days", timeout=30).json()
    assert page.status_code == 200 and '"data":{"period"' in page.text
    assert got["totals"]["requests"] == 10 and len(got["by_day"]) == 30


# -- in a real browser ------------------------------------------------------------------------------


def test_the_html_asks_for_nothing_outside_its_own_origin() -> None:
    from llm_router.dashboard import page

    html = page().html
    urls = set(re.findall(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'<>)]*""", html))
    assert urls == {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace: a name, never fetched
    assert not re.search(r"@import|@font-face|url\(|<link|<img|src=", html)


async def test_the_page_shows_what_cost_report_and_the_budgets_resource_say(site: str) -> None:
    want = await _expected(site, RESEARCH)
    dom, urls = browser.requested_urls(f"{site}/dashboard#token={RESEARCH}")
    hooks = browser.hooks(dom, inside="main")
    assert _shown(hooks, want) == want
    assert _budgets_add_up(hooks) == 5
    # every day of the period is shown, the ones without calls as $0
    days = sorted({k.split(".")[1] for k in hooks.keys_under("day.")})
    assert len(days) == 7 and hooks.value(f"day.{days[0]}.cost_usd") == "0" and hooks.value(f"day.{days[0]}.requests") == "0"
    fallback = [k for k in hooks.keys_under("call.") if k.endswith(".attempt.1")]
    assert fallback and all(hooks.value(k).endswith(" ok") for k in fallback)
    # (d) the only requests: the page and its data, on our own origin; the token left the address bar
    assert urls and all(u.startswith(site + "/") for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))), urls
    assert any(u.startswith(f"{site}/dashboard/data") for u in urls)
    assert RESEARCH not in dom


async def test_a_member_token_sees_only_its_own_tag_on_the_page(site: str) -> None:
    want = await _expected(site, ALICE)
    hooks = browser.hooks(browser.dump_dom(f"{site}/dashboard#token={ALICE}"), inside="main")
    assert _shown(hooks, want) == want
    assert _budgets_add_up(hooks) == 1  # its own tag's; the shared ones by limit and tier only
    assert {hooks.value(k) for k in hooks.keys_under("call.") if k.endswith(".tag")} == {"alice"}
    budgets = {k.rsplit(".", 1)[0] for k in hooks.keys_under("budget.")}
    assert "budget.tag:research monthly" not in budgets and "budget.tag:alice monthly" in budgets
    assert "budget.global daily.spent_usd" not in hooks and "budget.global daily.tier" in hooks


# -- the App path: a host page of ours, the ui:// page in its iframe --------------------------------

HOST_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>test host</title></head><body>
<iframe id="app" sandbox="allow-scripts allow-same-origin" width="1100" height="1400"></iframe>
<pre id="out"></pre><pre id="log"></pre>
<script type="application/json" id="cfg">__CFG__</script>
<script>
const cfg = JSON.parse(document.getElementById("cfg").textContent);
const frame = document.getElementById("app");
const seen = [];
function send(msg) { frame.contentWindow.postMessage(msg, "*"); }
window.addEventListener("message", (ev) => {
  if (ev.source !== frame.contentWindow) return;
  const m = ev.data;
  seen.push(m.method ? {method: m.method, params: m.params} : {response: m.id});
  if (m.method === "ui/initialize") {
    send({jsonrpc: "2.0", id: m.id, result: {protocolVersion: "2026-01-26", hostInfo: {name: "test-host", version: "1"},
          hostCapabilities: {serverTools: {}}, hostContext: {theme: cfg.theme, displayMode: "inline", locale: "en-US"}}});
  } else if (m.method === "ui/notifications/initialized") {
    send({jsonrpc: "2.0", method: "ui/notifications/tool-input", params: {arguments: cfg.args}});
    send({jsonrpc: "2.0", method: "ui/notifications/tool-result", params: cfg.result});
  } else if (m.method === "tools/call") {
    const answer = cfg.calls[m.params.name];
    send(answer ? {jsonrpc: "2.0", id: m.id, result: answer} : {jsonrpc: "2.0", id: m.id, error: {code: -32602, message: "no"}});
  }
});
function check() {
  const doc = frame.contentDocument;
  if (doc && doc.documentElement.getAttribute("data-rendered") === "dashboard") {
    const style = getComputedStyle(doc.body);
    document.getElementById("out").textContent = JSON.stringify({
      html: doc.getElementById("main").outerHTML, background: style.backgroundColor, color: style.color,
      theme: doc.documentElement.getAttribute("data-theme")});
    document.getElementById("log").textContent = JSON.stringify(seen);
  } else {
    setTimeout(check, 50);
  }
}
frame.srcdoc = cfg.html;
check();
</script></body></html>"""


@contextmanager
def _host(pages: dict[str, str]) -> Iterator[str]:
    """A loopback web server for the host pages (its own origin, as a web host would be)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write((body or "not found").encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _wire(result: Any) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


def _host_page(html: str, result: dict[str, Any], *, theme: str, args: dict[str, Any],
               calls: dict[str, Any] | None = None) -> str:
    cfg = json.dumps({"html": html, "result": result, "theme": theme, "args": args, "calls": calls or {}})
    return HOST_PAGE.replace("__CFG__", cfg.replace("<", "\\u003c"))


async def _app_run(site: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The ui:// page, and the dashboard's and cost_report's results, all read over MCP by an Apps host."""
    async with mcp_client(site, RESEARCH, extensions=[APPS]) as client:
        assert next(t for t in (await client.list_tools()).tools if t.name == "dashboard").meta == {"ui": {"resourceUri": UI_URI}}
        html = (await client.read_resource(UI_URI)).contents[0].text
        dashboard = _wire(await client.call_tool("dashboard", {"period": PERIOD}))
        report = _wire(await client.call_tool("cost_report", {"period": PERIOD, "group_by": "model"}))
    return html, dashboard, report


async def test_as_an_mcp_app_the_page_renders_the_tool_result_the_host_sends(site: str) -> None:
    want = await _expected(site, RESEARCH)
    html, dashboard, report = await _app_run(site)
    pages = {"/dark": _host_page(html, dashboard, theme="dark", args={"period": PERIOD}),
             "/light": _host_page(html, dashboard, theme="light", args={"period": PERIOD}),
             # cost_report's result: the page shows it, then asks the host for the dashboard (tools/call)
             "/report": _host_page(html, report, theme="light", args={"period": PERIOD, "group_by": "model"},
                                   calls={"dashboard": dashboard})}
    with _host(pages) as host:
        runs = {}
        for name in pages:
            dom, urls = browser.requested_urls(f"{host}/{name.strip('/')}")
            runs[name] = (browser.parse_json_attr(dom, "out"), browser.parse_json_attr(dom, "log"), urls)
            assert all(u.startswith(host + "/") for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))), urls
    for name, (out, log, _) in runs.items():
        assert _shown(browser.hooks(out["html"]), want) == want, name
        assert _budgets_add_up(browser.hooks(out["html"])) == 5, name
        methods = [m.get("method") for m in log]
        assert methods[:2] == ["ui/initialize", "ui/notifications/initialized"], methods
        init = next(m for m in log if m.get("method") == "ui/initialize")["params"]
        assert init["protocolVersion"] == "2026-01-26" and init["appInfo"]["name"]
    # (c) the host's theme: dark and light render differently
    dark, light = runs["/dark"][0], runs["/light"][0]
    assert dark["theme"] == "dark" and light["theme"] == "light"
    assert dark["background"] != light["background"] and dark["color"] != light["color"]
    assert [m["params"] for m in runs["/report"][1] if m.get("method") == "tools/call"] == [
        {"name": "dashboard", "arguments": {"period": PERIOD}}]
    assert not [m for m in runs["/dark"][1] if m.get("method") == "tools/call"], "a dashboard result needs nothing more"


@pytest.mark.slow
def test_the_readme_screenshot_can_be_made_from_the_fixture(tmp_path: Path) -> None:
    """What ``python -m tests.dashboard_screenshot`` does for docs/dashboard.png, made here once."""
    from .dashboard_screenshot import make

    shot = tmp_path / "dashboard.png"
    make(shot, tmp_path)
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and (int.from_bytes(head[16:20]), int.from_bytes(head[20:24])) == (1200, 1350)
