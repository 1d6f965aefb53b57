"""A ledger like a team's first week, for the dashboard's tests and the README's screenshot:
calls over six days, on three providers and five models, for two tags, with limits set, and one
call that fell back from one model to another.

The earlier days' rows go into the SQLite file through the ledger's own ``record`` (as the engine
writes them: the rows, their rollups and day totals); today's calls are made through a real MCP
client session, one of them with its first model failing, so that the engine's own fallback is
what the ledger holds.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from llm_router.engine import Engine
from llm_router.ledger import RequestRow
from llm_router.types import ServerError, usd_str

__all__ = ["ALICE", "RESEARCH", "PAST", "TAGS", "record_past_days", "today_calls"]

ALICE = "alice-dashboard-token-0123456789"
RESEARCH = "research-admin-token-0123456789ab"
"""The admin token (its tag: research)."""
TAGS = ("alice", "research")

# (days ago, provider, model, tag, task_type, cost in nano-dollars, reference cost, status)
PAST: list[tuple[int, str, str, str, str, int, int | None, str]] = [
    (5, "anthropic", "claude-haiku-4-5", "alice", "summarize", 410_000, 2_050_000, "ok"),
    (5, "openai", "gpt-4o-mini", "research", "classify", 36_000, 540_000, "ok"),
    (4, "anthropic", "claude-sonnet-4-5", "research", "code", 6_150_000, 6_150_000, "ok"),
    (4, "gemini", "gemini-2.5-flash", "alice", "draft", 95_000, 1_320_000, "ok"),
    (3, "openai", "gpt-4o-mini", "alice", "summarize", 52_000, 780_000, "ok"),
    (3, "openai", "gpt-4o", "research", "code", 2_240_000, 3_360_000, "ok"),
    (2, "anthropic", "claude-haiku-4-5", "research", "summarize", 388_000, 1_940_000, "ok"),
    (2, "openai", "gpt-4o-mini", "alice", "classify", 0, None, "error"),
    (1, "gemini", "gemini-2.5-flash", "research", "draft", 120_000, 1_610_000, "ok"),
    (1, "anthropic", "claude-haiku-4-5", "alice", "code", 505_000, 2_525_000, "ok"),
]


def _attempts(provider: str, model: str, status: str, fallback_from: str | None = None) -> str:
    tried: list[dict[str, Any]] = []
    if fallback_from is not None:
        tried.append({"model": fallback_from, "outcome": "error", "error_code": "server_error", "latency_ms": 840,
                      "status": 503, "error": "anthropic: 503 overloaded"})
    tried.append({"model": f"{provider}:{model}", "outcome": "ok" if status == "ok" else "error", "latency_ms": 610,
                  **({} if status == "ok" else {"error_code": "timeout", "error": "no answer within 30 s"})})
    return json.dumps(tried)


def record_past_days(engine: Engine) -> list[RequestRow]:
    """The earlier days' rows, recorded in the engine's ledger; one (3 days ago) fell back."""
    today = engine.budget.clock.today()
    rows = []
    for n, (ago, provider, model, tag, task_type, cost, ref, status) in enumerate(PAST):
        day = (today - timedelta(days=ago)).isoformat()
        fallback = "anthropic:claude-haiku-4-5" if (ago, model) == (3, "gpt-4o-mini") else None
        rows.append(RequestRow(
            id=f"past-{n:02d}", ts=f"{day}T{9 + n % 8:02d}:{(n * 7) % 60:02d}:00.000+00:00", day=day, status=status,
            tag=tag, task_type=task_type, provider=provider, model=model, input_tokens=1200 + 90 * n,
            output_tokens=240 + 30 * n if status == "ok" else 0, cost_nusd=cost, cost_usd=usd_str(cost),
            reference_cost_nusd=ref if status == "ok" else None, latency_ms=610 + (840 if fallback else 0),
            attempts=_attempts(provider, model, status, fallback), error_code=None if status == "ok" else "timeout",
            strategy="cheapest",
        ))
    for r in rows:
        engine.ledger.record(r)
    return rows


async def today_calls(admin: Any, alice: Any, engine: Engine) -> None:
    """Today's calls and the limits, through MCP sessions: ``admin`` (an admin's, or the local
    user's) and ``alice`` (the member token of tag alice, or the same session)."""
    for scope, period, limit in (("global", "daily", "5"), ("global", "monthly", "60"), ("tag:alice", "monthly", "10"),
                                 ("tag:research", "monthly", "15"),
                                 ("provider:anthropic", "monthly", "25")):
        done = await admin.call_tool("set_budget", {"scope": scope, "period": period, "limit_usd": limit})
        assert not done.is_error, done.content
    calls = [
        (admin, {"prompt": "Summarise the incident report in three bullet points.", "model": "anthropic:claude-haiku-4-5",
                 "tag": "research", "task_type": "summarize"}),
        (alice, {"prompt": "Classify this ticket: 'the export button does nothing'.", "model": "openai:gpt-4o-mini",
                 "tag": "alice", "task_type": "classify"}),
        (alice, {"prompt": "Draft a two-line reply to the customer.", "model": "gemini:gemini-2.5-flash", "tag": "alice",
                 "task_type": "draft"}),
    ]
    for client, args in calls:
        done = await client.call_tool("complete", args)
        assert not done.is_error, done.content
    # The fallback: haiku answers 503 once, and the chain moves on to gpt-4o-mini.
    engine.providers["anthropic"].fail_next(ServerError("overloaded", provider="anthropic", status=503))  # type: ignore[attr-defined]
    done = await alice.call_tool("complete", {"prompt": "Write a regex for ISO dates.", "tag": "alice", "task_type": "code",
                                              "model": ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]})
    assert not done.is_error, done.content
    assert [a["outcome"] for a in done.structured_content["attempts"]] == ["error", "ok"]
