"""The MCP surface: four tools and four resources, translated to and from the engine. Nothing else.

Errors from the engine become tool errors (``isError``) whose text says what happened and what to
do, with the same facts as structured content.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from . import __version__
from .calls import (
    BudgetResult,
    CompleteArgs,
    CompleteResult,
    DeadlineS,
    ExplainResult,
    Grouping,
    MaxCost,
    MaxTokens,
    Messages,
    ModelChoice,
    Period,
    Prompt,
    QualityArg,
    ReportResult,
    StrategyArg,
    System,
    Tag,
    TaskType,
    Temperature,
)
from .engine import Engine
from .types import InvalidInput, RouterError

__all__ = ["create_server", "INSTRUCTIONS"]

INSTRUCTIONS = """\
This server hands LLM work to other models and keeps a spend ledger.
Use `complete` to delegate self-contained work a cheaper or different model can do (summaries,
drafts, classification, code snippets, second opinions); set `quality` when the work needs a strong
model, `task_type` so routing rules apply, `tag` to bill it. Use `route_explain` first when you want
to know which model would answer and what it may cost. Use `cost_report` for questions about spend
and `set_budget` to cap it. Every call is within a hard budget; a refusal says which limit and when
it resets."""

_READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)


def _error(exc: RouterError) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=str(exc))],
        structured_content={"error": exc.to_dict()},
        is_error=True,
    )


def _ok(result: BaseModel, summary: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=summary)],
        structured_content=result.model_dump(mode="json"),
    )


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def create_server(engine: Engine) -> MCPServer:
    """An MCP server bound to one engine (the caller owns the engine and closes it)."""
    server = MCPServer("llm-router", instructions=INSTRUCTIONS, version=__version__)

    @server.tool(
        description="Send a prompt to the best-suited LLM (cheapest that meets the quality asked), with "
        "fallback across providers and a hard budget. Returns the answer, the model used, tokens and exact cost."
    )
    async def complete(
        ctx: Context,
        prompt: Prompt = None,
        messages: Messages = None,
        system: System = None,
        max_tokens: MaxTokens = None,
        temperature: Temperature = None,
        model: ModelChoice = None,
        task_type: TaskType = None,
        quality: QualityArg = None,
        strategy: StrategyArg = None,
        max_cost_usd: MaxCost = None,
        tag: Tag = None,
        deadline_s: DeadlineS = None,
    ) -> Annotated[CallToolResult, CompleteResult]:
        args = CompleteArgs(
            prompt=prompt, messages=messages, system=system, max_tokens=max_tokens, temperature=temperature,
            model=model, task_type=task_type, quality=quality, strategy=strategy, max_cost_usd=max_cost_usd,
            tag=tag, deadline_s=deadline_s,
        )
        step = 0

        async def progress(_value: float, _total: float | None, message: str) -> None:
            nonlocal step
            step += 1  # MCP progress must increase with every notification
            await ctx.report_progress(step, None, message)

        try:
            result = await engine.complete(args, progress=progress)
        except RouterError as e:
            return _error(e)
        fell_back = len(result.attempts) > 1
        summary = (
            f"{result.text}\n\n— {result.model}, {result.usage.input_tokens} in / {result.usage.output_tokens} out, "
            f"${result.cost_usd}{' after fallback' if fell_back else ''}; request {result.request_id}"
        )
        return _ok(result, summary)

    @server.tool(
        description="Explain, without calling any model or spending anything, which models `complete` would try "
        "for these arguments, in what order, why others were excluded, and the estimated cost.",
        annotations=_READ_ONLY,
    )
    async def route_explain(
        prompt: Prompt = None,
        messages: Messages = None,
        system: System = None,
        max_tokens: MaxTokens = None,
        temperature: Temperature = None,
        model: ModelChoice = None,
        task_type: TaskType = None,
        quality: QualityArg = None,
        strategy: StrategyArg = None,
        max_cost_usd: MaxCost = None,
        tag: Tag = None,
    ) -> Annotated[CallToolResult, ExplainResult]:
        args = CompleteArgs(
            prompt=prompt, messages=messages, system=system, max_tokens=max_tokens, temperature=temperature,
            model=model, task_type=task_type, quality=quality, strategy=strategy, max_cost_usd=max_cost_usd, tag=tag,
        )
        try:
            result = await engine.explain(args)
        except RouterError as e:
            return _error(e)
        head = result.chain[0] if result.chain else "no model"
        summary = f"Would try {', '.join(result.chain) or 'nothing'} (first: {head}); budget tier {result.budget_tier}.\n" + "\n".join(
            result.steps
        )
        return _ok(result, summary)

    @server.tool(
        description="Spend from the ledger for a period, grouped by provider, model, task_type, tag or day, "
        "with every budget's status, a month-end projection and savings against the reference model.",
        annotations=_READ_ONLY,
    )
    async def cost_report(
        period: Annotated[Period | None, Field(description="A named period; default this_month. Or give since/until.")] = None,
        group_by: Annotated[Grouping, Field(description="How to group the rows.")] = "provider",
        since: Annotated[str | None, Field(description="First day, YYYY-MM-DD (inclusive).")] = None,
        until: Annotated[str | None, Field(description="Last day, YYYY-MM-DD (inclusive).")] = None,
        tag: Annotated[str | None, Field(max_length=128, description="Only calls billed to this tag.")] = None,
        provider: Annotated[str | None, Field(max_length=64, description="Only calls to this provider.")] = None,
    ) -> Annotated[CallToolResult, ReportResult]:
        try:
            if period is not None and (since or until):
                raise InvalidInput("period", "give a period or since/until, not both", allowed="one of them")
            result = await engine.cost_report(period=period, group_by=group_by, since=since, until=until, tag=tag, provider=provider)
        except RouterError as e:
            return _error(e)
        lines = [f"{result.period['name']} ({result.period['first_day']}..{result.period['last_day']}): "
                 f"${result.totals['cost_usd']} over {result.totals['requests']} calls"]
        lines += [f"  {r[group_by] or '(none)'}: ${r['cost_usd']} ({r['requests']} calls)" for r in result.rows]
        return _ok(result, "\n".join(lines))

    @server.tool(
        description="Set, change or remove (limit_usd null) a spending limit. Persisted; applies to every later call.",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False),
    )
    async def set_budget(
        scope: Annotated[str, Field(max_length=140, description='"global", "provider:NAME" or "tag:NAME".')],
        period: Annotated[str, Field(description="daily, monthly or per_request.")],
        limit_usd: Annotated[Decimal | None, Field(description="The limit in USD; null removes it.")],
    ) -> Annotated[CallToolResult, BudgetResult]:
        try:
            if limit_usd is not None and limit_usd < 0:
                raise InvalidInput("limit_usd", "a limit cannot be negative", allowed="a number of dollars >= 0, or null")
            result = await engine.set_budget(scope, period, limit_usd)
        except RouterError as e:
            return _error(e)
        what = "removed" if limit_usd is None else f"set to ${limit_usd}"
        return _ok(result, f"{scope} {period} limit {what}.")

    @server.resource("llm-router://providers", name="providers", mime_type="application/json",
                     description="Each provider: usable or not and why, circuit state, latency, models with prices.")
    async def providers() -> str:
        return _json({"providers": engine.providers_status()})

    @server.resource("llm-router://ledger", name="ledger", mime_type="application/json",
                     description="The 50 most recent ledger entries.")
    async def ledger() -> str:
        return _json({"entries": await engine.ledger_rows(limit=50)})

    @server.resource("llm-router://ledger/{date}", name="ledger_day", mime_type="application/json",
                     description="Every ledger entry of one day (YYYY-MM-DD, budget time zone).")
    async def ledger_day(date: str) -> str:
        try:
            rows = await engine.ledger_rows(day=date, limit=10_000)
        except InvalidInput as e:
            from mcp.server.mcpserver.exceptions import ResourceError

            raise ResourceError(str(e)) from None
        return _json({"date": date, "entries": rows})

    @server.resource("llm-router://budgets", name="budgets", mime_type="application/json",
                     description="Every limit with spent, reserved and remaining, and when it resets.")
    async def budgets() -> str:
        return _json({"budgets": await engine.budgets()})

    return server
