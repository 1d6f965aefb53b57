"""Every tool and resource through a real MCP client session: in memory, and once over stdio."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from llm_router.engine import Engine

from .conftest import held_by_calls

pytestmark = pytest.mark.anyio


def payload(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content


async def read(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    assert result.contents[0].mime_type == "application/json"
    return json.loads(result.contents[0].text)


async def test_the_server_offers_six_tools_with_input_and_output_schemas(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(tools) == ["complete", "cost_report", "dashboard", "rate", "route_explain", "set_budget"]
    for tool in tools.values():
        assert tool.description and tool.output_schema and tool.input_schema["type"] == "object"
    assert {"prompt", "messages", "model", "quality", "strategy", "max_cost_usd", "tag", "task_type"} <= set(
        tools["complete"].input_schema["properties"]
    )
    assert tools["route_explain"].annotations.read_only_hint is True
    assert "delegate" in (client.instructions or "")


async def test_complete_streams_progress_and_returns_text_usage_cost_and_attempts(client: Client) -> None:
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    result = await client.call_tool(
        "complete", {"prompt": "Say something.", "tag": "e2e", "max_tokens": 200}, progress_callback=on_progress
    )
    assert not result.is_error
    data = payload(result)
    assert set(data) >= {"request_id", "text", "provider", "model", "usage", "cost_usd", "latency_ms", "attempts", "budget"}
    assert data["text"] and data["attempts"][-1]["outcome"] == "ok"
    assert data["text"] in result.content[0].text
    assert progress[0].startswith(f"request {data['request_id']}: asking ")  # where a timed-out answer is found
    assert any(data["text"].startswith(p) for p in progress[1:]), "streamed text arrives as progress"


async def test_route_explain_spends_nothing_and_agrees_with_complete(client: Client, engine: Engine) -> None:
    args = {"prompt": "Classify this ticket: printer on fire.", "quality": "high", "tag": "ops"}
    explained = payload(await client.call_tool("route_explain", args))
    assert engine.ledger.rows() == []
    assert explained["excluded"] and explained["candidates"] and explained["steps"]
    assert {"typical", "worst_case", "range_over_chain"} <= set(explained["estimated_cost_usd"])
    done = payload(await client.call_tool("complete", args))
    assert done["attempts"][0]["model"] == explained["chain"][0]


async def test_cost_report_totals_match_the_ledger_rows(client: Client, engine: Engine) -> None:
    for i in range(3):
        await client.call_tool("complete", {"prompt": f"q{i}", "tag": "alpha" if i else "beta"})
    report = payload(await client.call_tool("cost_report", {"period": "today", "group_by": "tag"}))
    rows = (await read(client, "llm-router://ledger"))["entries"]
    from decimal import Decimal

    assert Decimal(report["totals"]["cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in rows)
    assert {r["tag"]: r["requests"] for r in report["rows"]} == {"alpha": 2, "beta": 1}
    assert report["budgets"] and report["projection"]["month_end_usd"]
    assert report["savings"]["reference_model"] == "anthropic:claude-sonnet-4-5"


async def test_set_budget_changes_the_limits_and_the_budgets_resource_shows_them(client: Client) -> None:
    result = payload(await client.call_tool("set_budget", {"scope": "tag:alpha", "period": "daily", "limit_usd": 1.5}))
    assert result["changed"] == {"scope": "tag:alpha", "period": "daily", "limit_usd": "1.5"}
    budgets = (await read(client, "llm-router://budgets"))["budgets"]
    alpha = next(b for b in budgets if b["scope"] == "tag:alpha")
    assert (alpha["limit_usd"], alpha["spent_usd"], alpha["remaining_usd"]) == ("1.5", "0", "1.5")
    assert alpha["resets_at"]


async def test_resources_list_providers_ledger_and_one_day(client: Client) -> None:
    listed = {r.uri for r in (await client.list_resources()).resources}
    assert listed == {"llm-router://providers", "llm-router://ledger", "llm-router://budgets", "llm-router://answers"}
    templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
    assert templates == ["llm-router://ledger/{date}", "llm-router://answers/{request_id}"]

    providers = (await read(client, "llm-router://providers"))["providers"]
    assert {p["name"] for p in providers} == {"anthropic", "openai", "gemini", "ollama"}
    assert all("mock" in p["imitates"] for p in providers), "the demo says its providers are mocks"
    haiku = next(m for p in providers for m in p["models"] if m["model"] == "anthropic:claude-haiku-4-5")
    assert haiku["price_per_mtok"]["input"] == "1" and haiku["context_window"] == 200000
    assert haiku["health"]["circuit"] == "closed"

    done = payload(await client.call_tool("complete", {"prompt": "hello"}))
    day = (await read(client, "llm-router://budgets"))["budgets"][0]["period_start"]
    entries = (await read(client, f"llm-router://ledger/{day}"))["entries"]
    assert [e["id"] for e in entries] == [done["request_id"]]
    assert (await read(client, "llm-router://ledger/1999-01-01"))["entries"] == []


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("complete", {"prompt": ""}, "prompt"),
        ("complete", {"prompt": 42}, "prompt"),
        ("complete", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("complete", {"prompt": "x", "max_tokens": 10**9}, "max_tokens"),
        ("complete", {"prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ("complete", {"prompt": "x", "model": "nowhere:model"}, "model"),
        ("complete", {"prompt": "x", "model": "openai:gpt-99"}, "model"),
        ("complete", {"prompt": "x", "quality": "superb"}, "quality"),
        ("complete", {"prompt": "x", "strategy": "random"}, "strategy"),
        ("complete", {"prompt": "x", "temperature": 9}, "temperature"),
        ("complete", {"prompt": "x", "max_cost_usd": -1}, "max_cost_usd"),
        ("complete", {"messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ("route_explain", {"prompt": ""}, "prompt"),
        ("route_explain", {"prompt": "x", "model": "openai"}, "model"),
        ("cost_report", {"period": "fortnight"}, "period"),
        ("cost_report", {"group_by": "colour"}, "group_by"),
        ("cost_report", {"since": "yesterday-ish"}, "since"),
        ("cost_report", {"since": "2026-02-01", "until": "2026-01-01"}, "until"),
        ("set_budget", {"scope": "global", "period": "daily", "limit_usd": -5}, "limit_usd"),
        ("set_budget", {"scope": "planet:mars", "period": "daily", "limit_usd": 1}, "scope"),
        ("set_budget", {"scope": "provider:nosuch", "period": "daily", "limit_usd": 1}, "scope"),
        ("set_budget", {"scope": "global", "period": "hourly", "limit_usd": 1}, "period"),
        ("set_budget", {"scope": "global", "period": "daily", "limit_usd": "lots"}, "limit_usd"),
    ],
)
async def test_bad_input_to_every_tool_is_a_tool_error_naming_the_field(
    client: Client, engine: Engine, tool: str, args: dict[str, Any], field: str
) -> None:
    result = await client.call_tool(tool, args)
    assert result.is_error
    assert field in result.content[0].text
    # ...and the server keeps serving, with nothing recorded or held.
    assert not (await client.call_tool("route_explain", {"prompt": "still there?"})).is_error
    assert engine.ledger.rows() == [] and held_by_calls(engine) == 0


async def test_a_budget_refusal_is_a_tool_error_with_the_limit_in_its_meta(client: Client) -> None:
    await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0})
    result = await client.call_tool("complete", {"prompt": "hello", "model": "openai:gpt-4o"})
    assert result.is_error and result.structured_content is None
    error = result.meta["llm-router/error"]
    assert error["code"] == "budget_exceeded" and error["limit"] == "global daily" and error["resets_at"]
    assert error["request_id"] and f"(budget_exceeded; request {error['request_id']})" in result.content[0].text


@pytest.mark.slow
async def test_the_whole_surface_over_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "llm_router", "serve", "--demo", "--ledger", str(tmp_path / "stdio.db")],
    )
    async with Client(params) as client:
        assert len((await client.list_tools()).tools) == 6
        explained = payload(await client.call_tool("route_explain", {"prompt": "hi", "quality": "medium"}))
        done = payload(await client.call_tool("complete", {"prompt": "hi", "quality": "medium", "model": explained["chain"][:2]}))
        assert done["model"] in explained["chain"][:2]
        report = payload(await client.call_tool("cost_report", {"period": "today"}))
        assert report["totals"]["requests"] == 1
        assert not (await client.call_tool("set_budget", {"scope": "global", "period": "monthly", "limit_usd": 20})).is_error
        for uri in ("llm-router://providers", "llm-router://ledger", "llm-router://budgets"):
            assert await read(client, uri)
        bad = await client.call_tool("complete", {"prompt": ""})
        assert bad.is_error and "prompt" in bad.content[0].text


async def test_an_unknown_task_type_is_accepted_and_the_answer_says_so(client: Client) -> None:
    done = await client.call_tool("complete", {"prompt": "hi", "task_type": "poetry"})
    assert not done.is_error, done.content
    notes = payload(done)["notes"]
    assert any("no routing rule for task_type 'poetry'" in note for note in notes), notes
    assert all(f"\n{note}" in done.content[0].text for note in notes), "each note is a line of the text"


async def test_an_estimated_usage_is_marked_in_the_answers_text_as_in_its_structure(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from llm_router.providers.mock import MockProvider

    real = MockProvider.complete

    async def without_usage(self: MockProvider, *args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(await real(self, *args, **kwargs), usage=None)

    monkeypatch.setattr(MockProvider, "complete", without_usage)
    done = await client.call_tool("complete", {"prompt": "hi", "model": "openai:gpt-4o-mini"})
    usage = payload(done)["usage"]
    assert usage["estimated"] is True and usage["estimate_method"]
    assert f"{usage['input_tokens']} in / {usage['output_tokens']} out (estimated), $" in done.content[0].text


async def test_cost_reports_text_says_a_refused_call_asked_no_model_and_counts_one_call(client: Client) -> None:
    await client.call_tool("complete", {"prompt": "hi", "model": "ollama:llama3.1"})
    await client.call_tool("set_budget", {"scope": "global", "period": "per_request", "limit_usd": 0.0001})
    assert (await client.call_tool("complete", {"prompt": "hi", "quality": "critical", "max_tokens": 4000})).is_error
    text = (await client.call_tool("cost_report", {"period": "today", "group_by": "model"})).content[0].text
    assert "  (refused: no model): $0 (1 call)" in text and "  llama3.1: $0 (1 call)" in text, text
    assert "over 2 calls" in text and "(none)" not in text
