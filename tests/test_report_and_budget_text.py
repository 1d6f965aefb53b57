"""What ``cost_report`` and ``set_budget`` say in words: the filters a report was limited to, how
much of its spend is estimated, a provider filter that names nothing configured, and limits as
they are stored (never in exponent form)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from llm_router.config import settings_from_dict
from llm_router.defaults import demo_config
from llm_router.engine import Engine
from llm_router.mcp_server import ERROR_META_KEY, create_server
from llm_router.providers.base import ProbeResult
from llm_router.types import Completion, CompletionRequest

pytestmark = pytest.mark.anyio


class _NoUsage:
    """A provider that answers without reporting usage (as llama.cpp does when streaming)."""

    kind = "mock"

    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, model: str, request: CompletionRequest, *, on_text: Any = None) -> Completion:
        return Completion(text="an answer of some words", model=model, usage=None, finish_reason="stop")

    async def probe(self) -> ProbeResult:
        return ProbeResult(ok=True, detail="test")

    async def count_tokens(self, model: str, text: str) -> int | None:
        return None

    async def context_window(self, model: str) -> int | None:
        return None

    async def aclose(self) -> None:
        return None


async def test_the_report_text_names_its_filters_and_how_much_of_the_spend_is_estimated(tmp_path: Path) -> None:
    """The text said neither which tag or provider it was limited to nor that part of the spend
    was an estimate (only the structured totals had it)."""
    engine = Engine(settings_from_dict(demo_config(str(tmp_path / "l.db")), source="test"),
                    providers={"openai": _NoUsage("openai")})
    try:
        async with Client(create_server(engine)) as client:
            done = await client.call_tool("complete", {"prompt": "hi", "model": "openai:gpt-4o-mini", "tag": "t1"})
            assert not done.is_error, done
            result = await client.call_tool("cost_report", {"period": "today", "tag": "t1", "provider": "openai"})
        text = result.content[0].text
        totals = result.structured_content["totals"]
        assert totals["estimated_requests"] == 1 and totals["estimated_cost_usd"] == done.structured_content["cost_usd"]
        assert "only tag 't1', provider 'openai'" in text.splitlines()[0]
        assert f"of which ${totals['estimated_cost_usd']} over 1 call is estimated" in text
        assert result.structured_content["filters"] == {"tag": "t1", "provider": "openai"}
    finally:
        await engine.aclose()


async def test_a_provider_filter_naming_no_configured_provider_is_said_with_the_one_meant(client: Client) -> None:
    """A typo (``provider: "openaj"``) silently gave "$0 over 0 calls"."""
    result = await client.call_tool("cost_report", {"provider": "openaj"})
    assert not result.is_error
    notes = result.structured_content["notes"]
    assert notes and "no provider named 'openaj' is configured (did you mean 'openai'?)" in notes[0]
    assert f"note: {notes[0]}" in result.content[0].text


@pytest.mark.parametrize(
    ("given", "stored"),
    [("1e-7", "0.0000001"), ("1e2", "100"), ("-0", "0"), ("0.0000000015", "0.000000002"), (2.5, "2.5")],
)
async def test_a_limit_is_said_as_it_is_stored_never_in_exponent_form(client: Client, given: Any, stored: str) -> None:
    """``1e-7`` was answered "set to $1E-7", ``-0`` "set to $-0"."""
    result = await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": given})
    assert not result.is_error, result
    assert result.content[0].text == f"global daily limit set to ${stored}."
    assert result.structured_content["changed"]["limit_usd"] == stored


async def test_a_limit_finer_than_the_ledger_can_hold_is_refused_rather_than_stored_as_zero(client: Client) -> None:
    """A limit of $1e-10 was stored as 0 (nothing may be spent) while the answer said "$1E-10"."""
    result = await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": "0.0000000001"})
    error = result.meta[ERROR_META_KEY]
    assert (error["code"], error["field"]) == ("invalid_input", "limit_usd")
    assert "$0.0000000001 is less than half a billionth of a dollar" in error["message"]
