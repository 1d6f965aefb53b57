"""Random and hostile arguments to every tool: each answer is a clean tool error or a valid result,
the server keeps serving, no budget hold is left behind, and the ledger's SQL is never steered
by what a caller sends."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from mcp import Client
from pydantic import BaseModel

from llm_router.calls import BudgetResult, CompleteResult, ExplainResult, ReportResult
from llm_router.config import LimitsConfig, Settings, settings_from_dict
from llm_router.defaults import demo_config
from llm_router.engine import Engine
from llm_router.mcp_server import create_server

from .conftest import held_by_calls

pytestmark = pytest.mark.anyio

HOSTILE = [
    "", " ", "\x00", "\n", "'; DROP TABLE requests; --", "\" OR 1=1 --", "x' OR '1'='1", "%", "_", "*", "\\",
    "{0}{1}", "%s%s%n", "../../etc/passwd", "llm-router://ledger", "\u202e\u200b", "🙂" * 20, "a" * 3000,
    ":", "anthropic:", ":claude", "anthropic:claude-haiku-4-5", "global", "tag:", "provider:openai",
    "2026-02-30", "9999-99-99", "NaN", "-1", "1e309",
]
hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), hostile_text,
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
models = st.sampled_from(["openai:gpt-4o-mini", "ollama:llama3.1", "anthropic:claude-haiku-4-5", "gemini:gemini-2.5-pro"])
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": hostile_text}),
    max_size=12,
)
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "prompt": hostile_text, "messages": messages, "system": hostile_text,
    "max_tokens": st.integers(min_value=-5, max_value=2_000_000), "temperature": st.floats(min_value=-1, max_value=3),
    "model": st.one_of(models, st.lists(st.one_of(models, hostile_text), max_size=10)),
    "task_type": st.one_of(st.sampled_from(["code_generation", "summarize"]), hostile_text),
    "quality": st.sampled_from(["low", "medium", "high", "critical", "superb"]),
    "strategy": st.sampled_from(["cheapest", "best", "fastest", "balanced", "random"]),
    "max_cost_usd": st.one_of(st.decimals(min_value=-1, max_value=20_000, allow_nan=False, places=6), hostile_text),
    "tag": hostile_text, "deadline_s": st.floats(min_value=-1, max_value=5000),
    "period": st.one_of(st.sampled_from(["today", "this_week", "daily", "monthly", "per_request"]), hostile_text),
    "group_by": st.one_of(st.sampled_from(["provider", "model", "task_type", "tag", "day"]), hostile_text),
    "since": st.one_of(st.dates().map(str), hostile_text), "until": st.one_of(st.dates().map(str), hostile_text),
    "provider": hostile_text,
    "scope": st.one_of(st.sampled_from(["global", "provider:openai", "tag:team"]), hostile_text),
    "limit_usd": st.one_of(st.none(), st.decimals(min_value=-10, max_value=10**12, allow_nan=False, places=4), hostile_text),
}
TOOLS: dict[str, tuple[list[str], type[BaseModel]]] = {
    "complete": (["prompt", "messages", "system", "max_tokens", "temperature", "model", "task_type", "quality",
                  "strategy", "max_cost_usd", "tag", "deadline_s"], CompleteResult),
    "route_explain": (["prompt", "messages", "system", "max_tokens", "temperature", "model", "task_type", "quality",
                       "strategy", "max_cost_usd", "tag"], ExplainResult),
    "cost_report": (["period", "group_by", "since", "until", "tag", "provider"], ReportResult),
    "set_budget": (["scope", "period", "limit_usd"], BudgetResult),
}


@st.composite
def tool_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    tool = draw(st.sampled_from(sorted(TOOLS)))
    names = TOOLS[tool][0]
    if draw(st.booleans()):  # anything at all, in any field
        args = draw(st.fixed_dictionaries({}, optional={n: st.one_of(FIELDS[n], json_values) for n in names}))
    else:  # plausible: each field of its own type (often valid), so calls get through to the engine too
        args = draw(st.fixed_dictionaries({}, optional={n: FIELDS[n] for n in names if n != "messages"}))
        if tool in ("complete", "route_explain"):
            args["prompt"] = draw(st.text(min_size=1, max_size=300).filter(str.strip))
    if draw(st.booleans()):
        args |= draw(st.dictionaries(st.sampled_from(["ctx", "unknown", "__class__", "progress"]), json_values, max_size=2))
    return tool, {k: str(v) if hasattr(v, "is_finite") else v for k, v in args.items()}


def _json_safe(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_json_safe(v) for v in value.values())
    if isinstance(value, list):
        return all(_json_safe(v) for v in value)
    return True


@pytest.fixture
def small_limits(settings: Settings) -> Settings:
    return settings.model_copy(update={"limits": LimitsConfig(max_prompt_chars=2000, max_messages=8)})


@pytest.fixture
async def hostile_client(small_limits: Settings) -> AsyncIterator[tuple[Client, Engine]]:
    engine = Engine(small_limits)
    async with Client(create_server(engine)) as client:
        yield client, engine
    await engine.aclose()


@hsettings(max_examples=250, deadline=None, derandomize=True, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(call=tool_calls())
async def test_random_and_hostile_arguments_get_a_clean_error_or_a_valid_result(
    hostile_client: tuple[Client, Engine], call: tuple[str, dict[str, Any]]
) -> None:
    client, engine = hostile_client
    tool, args = call
    assert _json_safe(args)
    result = await client.call_tool(tool, args)
    text = "".join(getattr(block, "text", "") for block in result.content)
    if result.is_error:
        assert text.strip(), "an error says what went wrong"
        assert "Traceback" not in text
        assert result.structured_content is None, "an error result carries no structured content"
        error = (result.meta or {}).get("llm-router/error")
        assert error is not None, result
        assert error["code"] != "internal" and error["message"]
    else:
        TOOLS[tool][1].model_validate(result.structured_content)
    assert held_by_calls(engine) == 0, "no hold outlives its call"
    # ...and the server is still there.
    assert not (await client.call_tool("cost_report", {"period": "today"})).is_error


async def test_hostile_tags_and_names_reach_the_ledger_only_as_parameters(client: Client, engine: Engine) -> None:
    tags = ["'; DROP TABLE requests; --", "%", "_", "x' OR '1'='1", "\" OR 1=1 --", "tag\\", "🙂"]
    for tag in tags:
        done = await client.call_tool("complete", {"prompt": "hello", "tag": tag, "model": "openai:gpt-4o-mini"})
        assert not done.is_error, done.content
        assert not (await client.call_tool("set_budget", {"scope": f"tag:{tag}", "period": "daily", "limit_usd": 1})).is_error
    for tag in tags:
        report = (await client.call_tool("cost_report", {"period": "today", "group_by": "tag", "tag": tag})).structured_content
        assert [(r["tag"], r["requests"]) for r in report["rows"]] == [(tag, 1)], "an exact match, never a pattern"
        assert any(b["scope"] == f"tag:{tag}" for b in report["budgets"])
        nothing = (await client.call_tool("cost_report", {"period": "today", "provider": tag})).structured_content
        assert nothing["rows"] == [] and nothing["totals"]["requests"] == 0
    for model in ("openai:gpt-4o-mini' OR '1'='1", "x'; DROP TABLE requests; --:y", "openai:%"):
        assert (await client.call_tool("complete", {"prompt": "hello", "model": model})).is_error
    with pytest.raises(Exception, match="date"):
        await client.read_resource("llm-router://ledger/2026-01-01' OR '1'='1")
    rows = engine.ledger.rows(limit=100)
    assert sorted(r["tag"] for r in rows) == sorted(tags)
    with sqlite3.connect(engine.ledger.location) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"requests", "budgets", "reservations", "rollups"} <= tables


def _with_output_limit(tmp_path: Path) -> Settings:
    data = demo_config(str(tmp_path / "ledger.db"))
    for p in data["providers"]:
        p["mock"] = {"imitates": p["mock"]["imitates"]}
        if p["name"] == "openai":
            p["model_overrides"] = {"gpt-4o-mini": {"max_output_tokens": 2000}}
    return settings_from_dict(data, source="test")


async def test_max_tokens_above_a_models_output_limit_excludes_it_in_route_explain_and_complete(tmp_path: Path) -> None:
    engine = Engine(_with_output_limit(tmp_path))
    try:
        async with Client(create_server(engine)) as client:
            forced = {"prompt": "hello", "model": "openai:gpt-4o-mini", "max_tokens": 4000}
            explained = (await client.call_tool("route_explain", forced)).structured_content
            assert explained["chain"] == []
            assert explained["excluded"] == [{
                "model": "openai:gpt-4o-mini", "reason": "output_limit",
                "detail": "max_tokens 4000 is above its output limit of 2000",
            }]
            refused = await client.call_tool("complete", forced)
            assert refused.is_error and refused.meta["llm-router/error"]["code"] == "no_route"
            assert "output_limit: max_tokens 4000 is above its output limit of 2000" in refused.content[0].text
            # Within the limit, the same model is used; left to the router, the others serve 4000 tokens.
            assert not (await client.call_tool("complete", forced | {"max_tokens": 2000})).is_error
            free = {"prompt": "hello", "max_tokens": 4000, "quality": "low"}
            explained = (await client.call_tool("route_explain", free)).structured_content
            assert "openai:gpt-4o-mini" not in explained["chain"] and explained["chain"]
            done = (await client.call_tool("complete", free)).structured_content
            assert done["attempts"][0]["model"] == explained["chain"][0]
        assert held_by_calls(engine) == 0
    finally:
        await engine.aclose()
