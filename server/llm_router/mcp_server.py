"""The MCP surface: four tools and four resources, translated to and from the engine. Nothing else.

Errors from the engine become tool errors (``isError``) whose text says what happened and what to
do, with the same facts as structured content. Around each call, and only in MCP's own terms:
who to bill when the transport identified the caller, log messages for fallbacks and budget
warnings, resource-updated notifications for subscribers, and an optional observer (metrics).
"""

from __future__ import annotations

import json
import re
import time
import warnings
import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Protocol

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolResult,
    EmptyResult,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from . import __version__
from .calls import (
    Answer,
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
from .redaction import Redactor
from .types import AllAttemptsFailed, BudgetExceeded, InvalidInput, RouterError

__all__ = ["BUDGETS_URI", "INSTRUCTIONS", "LEDGER_URI", "PROVIDERS_URI", "Observer", "create_server"]

INSTRUCTIONS = """\
This server hands LLM work to other models and keeps a spend ledger.
Use `complete` to delegate self-contained work a cheaper or different model can do (summaries,
drafts, classification, code snippets, second opinions); set `quality` when the work needs a strong
model, `task_type` so routing rules apply, `tag` to bill it. Use `route_explain` first when you want
to know which model would answer and what it may cost, or afterwards to explain a choice. Use
`cost_report` for questions about spend ("what did I spend this week on Anthropic?") and
`set_budget` to cap it ("set a $2 daily cap"). Every call is within a hard budget; a refusal says
which limit and when it resets."""

PROVIDERS_URI = "llm-router://providers"
LEDGER_URI = "llm-router://ledger"
BUDGETS_URI = "llm-router://budgets"
_SUBSCRIBABLE = re.compile(r"^llm-router://(providers|ledger|budgets|ledger/\d{4}-\d{2}-\d{2})$")
_LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

# Log messages are deprecated from protocol 2026-07-28 on, but handshake-era clients (Claude Desktop
# among them) show them, and 2026 clients can still opt in per request: sent on purpose.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=r"llm_router\.mcp_server")

_READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)


class Observer(Protocol):
    """Told about every tool call (``metrics.Metrics`` in HTTP mode)."""

    def tool_done(self, tool: str, seconds: float, result: Any = None, error: RouterError | None = None) -> None: ...


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def _wants_progress(ctx: Context) -> bool:
    """Whether the caller asked for progress: a JSON-RPC request carries a progress token; the
    in-process transport hands the dispatcher a callback instead."""
    meta = ctx.request_context.meta or {}
    if meta.get("progress_token") is not None or meta.get("progressToken") is not None:
        return True
    # The in-process transport (embedding, tests) passes no token: look for the callback through
    # the SDK's dispatch-context wrappers. Tests cover both paths, so an SDK change shows there.
    outbound = getattr(ctx.request_context.session, "_request_outbound", None)
    for _ in range(4):
        if outbound is None:
            break
        if getattr(outbound, "_on_progress", None) is not None or getattr(outbound, "_progress_token", None) is not None:
            return True
        outbound = getattr(outbound, "_inner", None)
    return False


FREE_TEXT = frozenset({"prompt", "system", "tag", "task_type"})
"""Arguments that are text to pass on as given, whatever it looks like."""


class _Arguments(FuncMetadata):
    """The SDK reads a string argument as JSON when the parameter is not plainly ``str`` (Claude
    Desktop sends lists as JSON text). For free text that is wrong: a prompt that is a JSON array
    or object was turned into a list or dict and the call refused. Free text is taken as given;
    every other argument keeps the SDK's leniency."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        maybe_json = {k: v for k, v in data.items() if isinstance(v, str) and k not in FREE_TEXT}
        return data | super().pre_parse_json(maybe_json) if maybe_json else data


def _nobody_listens(server: MCPServer) -> bool:
    """Whether no ``subscriptions/listen`` stream is open. The SDK's bus ends every publish with a
    trip round the event loop, listeners or not: three per call, a tenth of a millisecond."""
    bus = getattr(server, "_subscriptions", None)
    return isinstance(bus, InMemorySubscriptionBus) and not getattr(bus, "_listeners", True)


def _caller_tag(ctx: Context) -> str | None:
    """The tag of the bearer token the HTTP request came with (None over stdio or without tokens)."""
    request = ctx.request_context.request
    if request is None:
        return None
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

    user = getattr(request, "scope", {}).get("user")
    return user.access_token.client_id if isinstance(user, AuthenticatedUser) else None


def _connection(session: Any) -> Any:
    """The client connection behind a request's session. ``ServerSession`` is a per-request proxy
    and keeps its connection private; subscriptions and log levels belong to the connection."""
    return session._connection


class _Subscribers:
    """``resources/subscribe`` for handshake-era clients (Claude Desktop, the Inspector, ...), and
    their ``logging/setLevel``. Clients of 2026-07-28 and later use ``subscriptions/listen`` and
    per-request log levels, which the SDK serves itself. Connections are held weakly: one that
    ends without unsubscribing is simply forgotten."""

    LEVEL_KEY = "llm_router.log_level"

    def __init__(self) -> None:
        self.by_uri: dict[str, weakref.WeakSet[Any]] = {}

    async def subscribe(self, ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        if not _SUBSCRIBABLE.match(params.uri):
            raise MCPError(INVALID_PARAMS, f"no such resource to subscribe to: {params.uri[:200]!r}")
        self.by_uri.setdefault(params.uri, weakref.WeakSet()).add(_connection(ctx.session))
        return EmptyResult()

    async def unsubscribe(self, ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscribers = self.by_uri.get(params.uri)
        if subscribers is not None:
            subscribers.discard(_connection(ctx.session))
        return EmptyResult()

    async def set_level(self, ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        _connection(ctx.session).state[self.LEVEL_KEY] = _LOG_LEVELS.index(params.level)
        return EmptyResult()

    def level(self, session: Any) -> int:
        return _connection(session).state.get(self.LEVEL_KEY, 0)

    async def updated(self, uri: str) -> None:
        for connection in list(self.by_uri.get(uri, ())):
            try:
                await connection.send_resource_updated(uri)
            except Exception:  # noqa: BLE001 - whatever a gone client raises, a notice must not fail the call
                self.by_uri[uri].discard(connection)


def create_server(engine: Engine, *, observer: Observer | None = None, redact: Redactor | None = None) -> MCPServer:
    """An MCP server bound to one engine (the caller owns the engine and closes it)."""
    server = MCPServer("llm-router", instructions=INSTRUCTIONS, version=__version__)
    redact = redact if redact is not None else Redactor.from_environment(engine.settings)
    subscribers = _Subscribers()
    # MCPServer has no decorator for these handshake-era methods; the low-level server serves them.
    low = server._lowlevel_server
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribers.subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, subscribers.unsubscribe)
    low.add_request_handler("logging/setLevel", SetLevelRequestParams, subscribers.set_level)

    def ok(result: ExplainResult | ReportResult | BudgetResult | Answer, summary: str) -> CallToolResult:
        return CallToolResult(
            content=[TextContent(type="text", text=redact(summary))],
            structured_content=redact.scrub(result.to_json()),
        )

    def error(exc: RouterError) -> CallToolResult:
        return CallToolResult(
            content=[TextContent(type="text", text=redact(str(exc)))],
            structured_content={"error": redact.scrub(exc.to_dict())},
            is_error=True,
        )

    async def log(ctx: Context, level: str, message: str, **data: Any) -> None:
        """A log message to the client (dropped when it asked for a higher level)."""
        # The SDK filters 2026-07-28 sessions itself, by each request's opt-in.
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS and _LOG_LEVELS.index(level) < subscribers.level(ctx.session):
            return
        payload = redact.scrub({"message": message, **data})
        await ctx.log(level, payload, logger_name="llm-router")  # type: ignore[arg-type]

    async def updated(ctx: Context, *uris: str) -> None:
        if not _nobody_listens(server):
            for uri in uris:
                await ctx.notify_resource_updated(uri)
        if subscribers.by_uri:
            for uri in uris:
                await subscribers.updated(uri)

    async def ledger_written(ctx: Context) -> None:
        """The ledger, today's page of it and the budgets changed (worked out only if anyone listens)."""
        if subscribers.by_uri or not _nobody_listens(server):
            await updated(ctx, LEDGER_URI, f"{LEDGER_URI}/{engine.budget.clock.today().isoformat()}", BUDGETS_URI)

    def done(tool: str, t0: float, result: Any = None, err: RouterError | None = None) -> None:
        if observer is not None:
            observer.tool_done(tool, time.perf_counter() - t0, result, err)

    def billing_tag(ctx: Context, tag: str | None) -> tuple[str | None, str]:
        """The tag to bill, and a note when a tag argument was overridden. A token's tag wins:
        otherwise a caller could move its spend out of its own tag's budget."""
        caller = _caller_tag(ctx)
        if caller is None:
            return tag, ""
        note = f" (billed to {caller!r}, this connection's token, not {tag.strip()!r})" if tag and tag.strip() != caller else ""
        return caller, note

    @server.tool(
        description="Send a prompt to the best-suited LLM (cheapest that meets the quality asked), with "
        "fallback across providers and a hard budget. Returns the answer, the model used, tokens and exact cost.",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=True),
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
        t0 = time.perf_counter()
        tag, note = billing_tag(ctx, tag)
        args = CompleteArgs(
            prompt=prompt, messages=messages, system=system, max_tokens=max_tokens, temperature=temperature,
            model=model, task_type=task_type, quality=quality, strategy=strategy, max_cost_usd=max_cost_usd,
            tag=tag, deadline_s=deadline_s,
        )
        step = 0

        async def progress(_value: float, _total: float | None, message: str) -> None:
            nonlocal step
            step += 1  # MCP progress must increase with every notification
            await ctx.report_progress(step, None, redact(message))

        try:
            # Streaming from the provider and reporting it costs a little: only when asked for.
            result = await engine.complete(args, progress=progress if _wants_progress(ctx) else None)
        except RouterError as e:
            done("complete", t0, err=e)
            if not isinstance(e, InvalidInput):  # past validation, every call leaves a ledger row
                await ledger_written(ctx)
            if isinstance(e, BudgetExceeded):
                await log(ctx, "warning", f"budget refusal: {e}", limit=e.limit_name, resets_at=e.resets_at)
            elif isinstance(e, AllAttemptsFailed):
                await log(ctx, "error", str(e), attempts=[a.to_dict() for a in e.attempts])
            return error(e)
        done("complete", t0, result)
        await ledger_written(ctx)
        failed = [a for a in result.attempts if a.outcome != "ok"]
        if failed:
            what = "; ".join(f"{a.model} {a.outcome} ({a.error_code})" for a in failed)
            await log(ctx, "warning", f"fallback: {what}; answered by {result.model}", request_id=result.request_id,
                      attempts=[a.published() for a in result.attempts])
        if result.budget.get("tier", "normal") != "normal":
            tight = result.budget.get("tightest") or {}
            await log(ctx, "warning", f"budget {tight.get('scope', '')} {tight.get('period', '')} is "
                      f"{tight.get('percent_used', '?')}% used (tier {result.budget['tier']}): "
                      + ("cheaper models go first" if result.budget["tier"] == "cautious" else "only free models are used"),
                      budget=result.budget)
        summary = (
            f"{result.text}\n\n— {result.model}, {result.usage.input_tokens} in / {result.usage.output_tokens} out, "
            f"${result.cost_usd}{' after fallback' if failed else ''}; request {result.request_id}{note}"
        )
        return ok(result, summary)

    @server.tool(
        description="Explain, without calling any model or spending anything, which models `complete` would try "
        "for these arguments, in what order, why others were excluded, and the estimated cost.",
        annotations=_READ_ONLY,
    )
    async def route_explain(
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
    ) -> Annotated[CallToolResult, ExplainResult]:
        t0 = time.perf_counter()
        tag, note = billing_tag(ctx, tag)
        args = CompleteArgs(
            prompt=prompt, messages=messages, system=system, max_tokens=max_tokens, temperature=temperature,
            model=model, task_type=task_type, quality=quality, strategy=strategy, max_cost_usd=max_cost_usd, tag=tag,
        )
        try:
            result = await engine.explain(args)
        except RouterError as e:
            done("route_explain", t0, err=e)
            return error(e)
        done("route_explain", t0, result)
        head = result.chain[0] if result.chain else "no model"
        summary = (f"Would try {', '.join(result.chain) or 'nothing'} (first: {head}); budget tier {result.budget_tier}"
                   f"{note}.\n" + "\n".join(result.steps))
        if result.excluded:
            summary += "\nexcluded: " + "; ".join(f"{x['model']} ({x['reason']})" for x in result.excluded)
        return ok(result, summary)

    @server.tool(
        description="Spend from the ledger for a period, grouped by provider, model, task_type, tag or day, "
        "with every budget's status, a month-end projection and savings against the reference model.",
        annotations=_READ_ONLY,
    )
    async def cost_report(
        period: Annotated[Period | None, Field(description="A named period; default this_month. Or give since/until.")] = None,
        group_by: Annotated[Grouping, Field(description="How to group the rows.")] = "provider",
        since: Annotated[str | None, Field(max_length=32, description="First day, YYYY-MM-DD (inclusive).")] = None,
        until: Annotated[str | None, Field(max_length=32, description="Last day, YYYY-MM-DD (inclusive).")] = None,
        tag: Annotated[str | None, Field(max_length=128, description="Only calls billed to this tag.")] = None,
        provider: Annotated[str | None, Field(max_length=64, description="Only calls to this provider.")] = None,
    ) -> Annotated[CallToolResult, ReportResult]:
        t0 = time.perf_counter()
        try:
            if period is not None and (since or until):
                raise InvalidInput("period", "give a period or since/until, not both", allowed="one of them")
            result = await engine.cost_report(period=period, group_by=group_by, since=since, until=until, tag=tag, provider=provider)
        except RouterError as e:
            done("cost_report", t0, err=e)
            return error(e)
        done("cost_report", t0, result)
        lines = [(f"{result.period['name']} ({result.period['first_day']}..{result.period['last_day']}): "
                  f"${result.totals['cost_usd']} over {result.totals['requests']} calls")]
        lines += [f"  {r[group_by] or '(none)'}: ${r['cost_usd']} ({r['requests']} calls)" for r in result.rows]
        return ok(result, "\n".join(lines))

    @server.tool(
        description="Set, change or remove (limit_usd null) a spending limit. Persisted; applies to every later call.",
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False),
    )
    async def set_budget(
        ctx: Context,
        scope: Annotated[str, Field(max_length=140, description='"global", "provider:NAME" or "tag:NAME".')],
        period: Annotated[str, Field(max_length=32, description="daily, monthly or per_request.")],
        limit_usd: Annotated[Decimal | None, Field(description="The limit in USD; null removes it.")],
    ) -> Annotated[CallToolResult, BudgetResult]:
        t0 = time.perf_counter()
        try:
            if limit_usd is not None and not limit_usd.is_finite():
                raise InvalidInput("limit_usd", "is not a finite amount", allowed="a number of dollars >= 0, or null")
            if limit_usd is not None and limit_usd < 0:
                raise InvalidInput("limit_usd", "a limit cannot be negative", allowed="a number of dollars >= 0, or null")
            result = await engine.set_budget(scope, period, limit_usd)
        except RouterError as e:
            done("set_budget", t0, err=e)
            return error(e)
        done("set_budget", t0, result)
        await updated(ctx, BUDGETS_URI)
        what = "removed" if limit_usd is None else f"set to ${limit_usd}"
        return ok(result, f"{scope} {period} limit {what}.")

    def resource(uri: str, name: str, description: str) -> Callable[[Any], Any]:
        return server.resource(uri, name=name, mime_type="application/json", description=description)

    @resource(PROVIDERS_URI, "providers", "Each provider: usable or not and why, circuit state, latency, models with prices.")
    async def providers() -> str:
        return redact(_json({"providers": engine.providers_status()}))

    @resource(LEDGER_URI, "ledger", "The 50 most recent ledger entries.")
    async def ledger() -> str:
        return redact(_json({"entries": await engine.ledger_rows(limit=50)}))

    @resource(LEDGER_URI + "/{date}", "ledger_day", "Every ledger entry of one day (YYYY-MM-DD, budget time zone).")
    async def ledger_day(date: str) -> str:
        try:
            rows = await engine.ledger_rows(day=date, limit=10_000)
        except InvalidInput as e:
            from mcp.server.mcpserver.exceptions import ResourceError

            raise ResourceError(redact(str(e))) from None
        return redact(_json({"date": date, "entries": rows}))

    @resource(BUDGETS_URI, "budgets", "Every limit with spent, reserved and remaining, and when it resets.")
    async def budgets() -> str:
        return redact(_json({"budgets": await engine.budgets()}))

    # Every result is built as its own pydantic model and dumped here; the SDK would validate the
    # dump against that same model again, per call. The output schema stays published (and
    # clients validate against it); only the server's second check goes.
    for tool in server._tool_manager.list_tools():
        tool.fn_metadata.output_model = None
        tool.fn_metadata = _Arguments.model_construct(**dict(tool.fn_metadata))
    return server
