"""The MCP surface: four tools and four resources, translated to and from the engine. Nothing else.

Served from the SDK's low-level ``Server``, with every handler ours: the tools' input schemas,
their validation and the shape of their errors are the router's own (``arguments``), and only
what is served is advertised (no prompts capability, since there are no prompts).

A tool's failure is a tool error (``isError``) with **no structured content**: schema-checking
clients (the TypeScript SDK, MCP Inspector) validate structured content against the tool's output
schema even on an error, and refused the ``{"error": ...}`` that was sent there, so the user never
saw the message. The text says what happened and what to do, then the error code and request id;
the same facts, machine-readable (code, field, allowed, limit figures, attempts ...), are in the
result's ``_meta`` under ``llm-router/error``. An unknown tool is a JSON-RPC error (-32602), an
unknown resource -32002 and a malformed ``llm-router://ledger/{date}`` -32602, as the spec says.

Around each call, and only in MCP's own terms: who to bill when the transport identified the
caller, what the caller's role lets it do and see (``access``: asked before each tool acts, its
views applied to every result, error, log message and resource on the way out), log messages for
fallbacks and budget warnings, resource-updated notifications for subscribers (they carry only the
URI: what a subscriber then reads is filtered like any read), and an optional observer (metrics).
"""

from __future__ import annotations

import json
import logging
import re
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolRequestParams,
    EmptyResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextResourceContents,
    Tool,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from . import __version__
from .access import (
    ACCESS_SCOPE_KEY,
    LOCAL,
    ROLES,
    Access,
    check_budget_change,
    check_mcp,
    error_view,
    limits_view,
    report_tag,
    result_view,
    rows_tag,
    rows_view,
)
from .arguments import ToolArguments
from .calls import (
    DATE_PATTERN,
    BudgetArgs,
    BudgetResult,
    CompleteArgs,
    CompleteResult,
    ExplainResult,
    ReportArgs,
    ReportResult,
)
from .engine import Engine
from .redaction import Redactor
from .types import EMPTY_GROUP, AllAttemptsFailed, BudgetExceeded, Forbidden, InvalidInput, RouterError, plural

__all__ = [
    "BUDGETS_URI",
    "ERROR_META_KEY",
    "INSTRUCTIONS",
    "LEDGER_URI",
    "PROVIDERS_URI",
    "RESOURCE_NOT_FOUND",
    "TOOLS",
    "Observer",
    "create_server",
]

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
ERROR_META_KEY = "llm-router/error"
"""Where an error result carries its machine-readable facts (``RouterError.to_dict``), in ``_meta``."""
RESOURCE_NOT_FOUND = -32002
"""The MCP spec's code for a resource that does not exist (JSON-RPC's range for servers)."""

_DAY = re.compile(DATE_PATTERN)
_SUBSCRIBABLE = re.compile(r"^llm-router://(providers|ledger|budgets|ledger/\d{4}-\d{2}-\d{2})$")
_LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_log = logging.getLogger("llm_router.mcp")

# Log messages are deprecated from protocol 2026-07-28 on, but handshake-era clients (Claude Desktop
# among them) show them, and 2026 clients can still opt in per request: sent on purpose.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=r"llm_router\.mcp_server")


# -- what the tools are: names, descriptions, schemas (worked out once, at import) ---------------

_MODEL_ALLOWED = '"provider:model", or a list of them (an explicit fallback chain)'
COMPLETE_ARGS = ToolArguments("complete", CompleteArgs, allowed={
    "model": _MODEL_ALLOWED, "max_cost_usd": "a number of dollars from 0 to 10000",
})
EXPLAIN_ARGS = ToolArguments("route_explain", CompleteArgs, allowed={
    "model": _MODEL_ALLOWED, "max_cost_usd": "a number of dollars from 0 to 10000",
})
REPORT_ARGS = ToolArguments("cost_report", ReportArgs)
BUDGET_ARGS = ToolArguments("set_budget", BudgetArgs, allowed={
    "scope": '"global", "provider:NAME" or "tag:NAME"', "limit_usd": "a number of dollars >= 0, or null to remove the limit",
})

_READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
TOOLS: dict[str, tuple[Tool, ToolArguments[Any]]] = {
    tool.name: (tool, arguments)
    for tool, arguments in (
        (Tool(
            name="complete",
            description="Send a prompt to the best-suited LLM (cheapest that meets the quality asked), with "
            "fallback across providers and a hard budget. Returns the answer, the model used, tokens and exact cost.",
            input_schema=COMPLETE_ARGS.schema,
            output_schema=CompleteResult.model_json_schema(),
            annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False,
                                        openWorldHint=True),
        ), COMPLETE_ARGS),
        (Tool(
            name="route_explain",
            description="Explain, without calling any model or spending anything, which models `complete` would try "
            "for these arguments, in what order, why others were excluded, and the estimated cost.",
            input_schema=EXPLAIN_ARGS.schema,
            output_schema=ExplainResult.model_json_schema(),
            annotations=_READ_ONLY,
        ), EXPLAIN_ARGS),
        (Tool(
            name="cost_report",
            description="Spend from the ledger for a period, grouped by provider, model, task_type, tag or day, "
            "with every budget's status, a month-end projection and savings against the reference model.",
            input_schema=REPORT_ARGS.schema,
            output_schema=ReportResult.model_json_schema(),
            annotations=_READ_ONLY,
        ), REPORT_ARGS),
        (Tool(
            name="set_budget",
            description="Set, change or remove (limit_usd null) a spending limit. Persisted; applies to every later call.",
            input_schema=BUDGET_ARGS.schema,
            output_schema=BudgetResult.model_json_schema(),
            annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True,
                                        openWorldHint=False),
        ), BUDGET_ARGS),
    )
}
"""Each tool's listing and its arguments, by name."""
_TOOL_LIST = ListToolsResult(tools=[tool for tool, _ in TOOLS.values()])
_TOOL_NAMES = ", ".join(TOOLS)

_RESOURCES = ListResourcesResult(resources=[
    Resource(uri=PROVIDERS_URI, name="providers", mime_type="application/json",
             description="Each provider: usable or not and why, circuit state, latency, models with prices."),
    Resource(uri=LEDGER_URI, name="ledger", mime_type="application/json", description="The 50 most recent ledger entries."),
    Resource(uri=BUDGETS_URI, name="budgets", mime_type="application/json",
             description="Every limit with spent, reserved and remaining, and when it resets."),
])
_TEMPLATES = ListResourceTemplatesResult(resource_templates=[
    ResourceTemplate(uri_template=LEDGER_URI + "/{date}", name="ledger_day", mime_type="application/json",
                     description="Every ledger entry of one day (YYYY-MM-DD, budget time zone)."),
])
_RESOURCE_NAMES = ", ".join([*(r.uri for r in _RESOURCES.resources), LEDGER_URI + "/YYYY-MM-DD"])
class Observer(Protocol):
    """Told about every tool call (``metrics.Metrics`` in HTTP mode)."""

    def tool_done(self, tool: str, seconds: float, result: Any = None, error: RouterError | None = None) -> None: ...


class _Unexpected(RouterError):
    """A tool failed in a way the router did not foresee (a bug): the details go to the server's log,
    never to the caller."""

    code = "internal"


# -- the SDK's objects, where it keeps a detail private -------------------------------------------


def _connection(session: Any) -> Any:
    """The client connection behind a request's session. ``ServerSession`` is a per-request proxy
    and keeps its connection private; subscriptions and log levels belong to the connection."""
    return session._connection


def _nobody_listens(bus: InMemorySubscriptionBus) -> bool:
    """Whether no ``subscriptions/listen`` stream is open. The SDK's bus ends every publish with a
    trip round the event loop, listeners or not: three per call, a tenth of a millisecond."""
    return not getattr(bus, "_listeners", True)


def _wants_progress(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether the caller asked for progress: a JSON-RPC request carries a progress token; the
    in-process transport hands the dispatcher a callback instead."""
    meta = ctx.meta or {}
    if meta.get("progress_token") is not None or meta.get("progressToken") is not None:
        return True
    # The in-process transport (embedding, tests) passes no token: look for the callback through
    # the SDK's dispatch-context wrappers. Tests cover both paths, so an SDK change shows there.
    outbound = getattr(ctx.session, "_request_outbound", None)
    for _ in range(4):
        if outbound is None:
            break
        if getattr(outbound, "_on_progress", None) is not None or getattr(outbound, "_progress_token", None) is not None:
            return True
        outbound = getattr(outbound, "_inner", None)
    return False


def _access(ctx: ServerRequestContext[Any, Any], *, tokens: bool = False) -> Access:
    """Who is asking: the role and tag of the bearer token the HTTP request came with, as the
    guard found it; the local user (an admin) over stdio or HTTP without tokens.

    Regression: a request without an HTTP request (or one the guard never saw, without a token's
    user) was the local admin even on a server built to require tokens. Such a server now refuses
    it (``tokens``): only a server without tokens has a local user.

    Raises:
        Forbidden: ``tokens`` is set and the request carries no token's access.
    """
    request = ctx.request
    scope = getattr(request, "scope", None) if request is not None else None
    if scope is not None:
        access = scope.get(ACCESS_SCOPE_KEY)
        if access is not None:
            return access
        # Served without http_app's guard (embedded): a token's user, if any, is at most a member.
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

        user = scope.get("user")
        if isinstance(user, AuthenticatedUser):
            scopes = user.access_token.scopes
            return Access(scopes[0] if scopes and scopes[0] in ROLES else "member", user.access_token.client_id)  # type: ignore[arg-type]
    if tokens:
        refusal = Forbidden("", role="none", may="nothing: this server takes requests with a bearer token only")
        refusal.args = ("this server requires a bearer token, and this request came without an HTTP request to carry "
                        "one, so it is refused: send it to the server's /mcp endpoint with Authorization: Bearer <token>",)
        raise refusal
    return LOCAL


def _with_journal(data: dict[str, Any], waiting: dict[str, Any]) -> dict[str, Any]:
    """A ledger or budgets resource with what waits in the journal (already only the caller's own
    tag's for a member): ``journaled`` (requests, cost, and for the ledger the waiting entries) and,
    while any wait, a note saying they are held against every limit but not yet in the figures."""
    note = waiting.pop("note", None)
    return {**data, "journaled": waiting, "notes": [note] if note else []}


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid(value: Any) -> Any:
    """``value`` with any string in it made encodable (``stdio.valid_text``). The adapters clean what
    providers send; this is for what slips past them, which would otherwise end an HTTP response
    without an answer (its encoder raises) after the call was billed. Checked on the text, which
    holds the answer and any error message."""
    from .stdio import valid_text

    if isinstance(value, str):
        return valid_text(value)
    return json.loads(valid_text(json.dumps(value, ensure_ascii=False)))


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
            raise MCPError(RESOURCE_NOT_FOUND, f"no such resource to subscribe to: {params.uri[:200]!r}",
                           data={"uri": params.uri[:200]})
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


Ctx = ServerRequestContext[Any, Any]
Wire = dict[str, Any]
"""A ``CallToolResult`` in its wire form, built as a dict (the SDK validates and shapes it for the
connection's protocol version on the way out; ``resultType`` is what 2026-07-28 requires and the
handshake era drops)."""


@dataclass(frozen=True, slots=True)
class _Bound:
    arguments: ToolArguments[Any]
    run: Callable[[Ctx, Access, Any], Awaitable[tuple[Any, Wire]]]


def create_server(
    engine: Engine, *, observer: Observer | None = None, redact: Redactor | None = None, tokens: bool = False,
) -> Server[Any]:
    """An MCP server bound to one engine (the caller owns the engine and closes it). ``tokens``:
    it is served behind bearer tokens (``http_app``), so a request that brings none is refused
    rather than taken for the local user."""
    redact = redact if redact is not None else Redactor.from_environment(engine.settings)
    subscribers = _Subscribers()
    bus = InMemorySubscriptionBus()
    if not logging.getLogger().handlers:
        # What the server logs (a tool that failed unexpectedly, a malformed message) goes to
        # stderr, and through the redacting filter cli installs on the root logger's handlers.
        logging.basicConfig(level=logging.INFO, format="%(message)s")

    def ok(structured: dict[str, Any], summary: str) -> Wire:
        text, facts = redact(summary), redact.scrub(structured)
        if _SURROGATE.search(text):
            text, facts = _valid(text), _valid(facts)
        return {"content": [{"type": "text", "text": text}], "structuredContent": facts, "resultType": "complete"}

    def error(exc: RouterError) -> Wire:
        """The one shape of every tool's every failure (see the module docstring)."""
        tail = exc.code if exc.request_id is None else f"{exc.code}; request {exc.request_id}"
        text, facts = redact(f"{exc}\n\n({tail})"), redact.scrub(exc.to_dict())
        if _SURROGATE.search(text):
            text, facts = _valid(text), _valid(facts)
        return {
            "content": [{"type": "text", "text": text}],
            "isError": True,
            "_meta": {ERROR_META_KEY: facts},
            "resultType": "complete",
        }

    async def log(ctx: Ctx, level: str, message: str, **data: Any) -> None:
        """A log message to the client (dropped when it asked for a higher level)."""
        # The SDK filters 2026-07-28 sessions itself, by each request's opt-in.
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS and _LOG_LEVELS.index(level) < subscribers.level(ctx.session):
            return
        payload = redact.scrub({"message": message, **data})
        await ctx.session.send_log_message(level, payload, logger="llm-router", related_request_id=ctx.request_id)  # type: ignore[arg-type]

    async def updated(*uris: str) -> None:
        if not _nobody_listens(bus):
            for uri in uris:
                await bus.publish(ResourceUpdated(uri=uri))
        if subscribers.by_uri:
            for uri in uris:
                await subscribers.updated(uri)

    async def ledger_written() -> None:
        """The ledger, today's page of it and the budgets changed (worked out only if anyone listens)."""
        if subscribers.by_uri or not _nobody_listens(bus):
            await updated(LEDGER_URI, f"{LEDGER_URI}/{engine.budget.clock.today().isoformat()}", BUDGETS_URI)

    def billing_tag(access: Access, args: CompleteArgs) -> str:
        """Bill the token's tag, with a note when a tag argument was overridden. A token's tag wins
        (whatever its role): otherwise a caller could move its spend out of its own tag's budget."""
        caller = access.tag
        if caller is None:
            return ""
        given = args.tag
        args.tag = caller
        return f" (billed to {caller!r}, this connection's token, not {given.strip()!r})" if given and given.strip() != caller else ""

    # -- the tools ---------------------------------------------------------------------------------

    async def complete(ctx: Ctx, access: Access, args: CompleteArgs) -> tuple[Any, Wire]:
        note = billing_tag(access, args)
        step = 0

        async def progress(_value: float, _total: float | None, message: str) -> None:
            nonlocal step
            step += 1  # MCP progress must increase with every notification
            await ctx.session.report_progress(step, None, redact(message))

        try:
            # Streaming from the provider and reporting it costs a little: only when asked for.
            result = await engine.complete(args, progress=progress if _wants_progress(ctx) else None)
        except RouterError as e:
            if not isinstance(e, InvalidInput):  # past validation, every call leaves a ledger row
                await ledger_written()
            shown = error_view(access, e)
            if isinstance(shown, BudgetExceeded):
                await log(ctx, "warning", f"budget refusal: {shown}", limit=shown.limit_name, resets_at=shown.resets_at)
            elif isinstance(shown, AllAttemptsFailed):
                await log(ctx, "error", str(shown), attempts=[a.to_dict() for a in shown.attempts])
            raise
        await ledger_written()
        structured = result_view(access, "complete", result.to_json())
        failed = [a for a in result.attempts if a.outcome != "ok"]
        if failed:
            what = "; ".join(f"{a.model} {a.outcome} ({a.error_code})" for a in failed)
            await log(ctx, "warning", f"fallback: {what}; answered by {result.model}", request_id=result.request_id,
                      attempts=structured["attempts"])
        budget = structured["budget"]
        if budget.get("tier", "normal") != "normal":
            tight = budget.get("tightest") or {}
            used = f"{tight['percent_used']}% used" if "percent_used" in tight else "shared by every tag"
            await log(ctx, "warning", f"budget {tight.get('scope', '')} {tight.get('period', '')} is {used} "
                      f"(tier {budget['tier']}): "
                      + ("cheaper models go first" if budget["tier"] == "cautious" else "only free models are used"),
                      budget=budget)
        u = result.usage
        tokens = f"{u.input_tokens} in / {u.output_tokens} out" + (" (estimated)" if u.estimated else "")
        summary = (
            f"{result.text}\n\n— {result.model}, {tokens}, "
            f"${result.cost_usd}{' after fallback' if failed else ''}; request {result.request_id}{note}"
        )
        if result.notes:
            summary += "".join(f"\n{line}" for line in result.notes)
        return result, ok(structured, summary)

    async def route_explain(ctx: Ctx, access: Access, args: CompleteArgs) -> tuple[Any, Wire]:
        note = billing_tag(access, args)
        result = await engine.explain(args)
        structured = result_view(access, "route_explain", result.to_json())
        head = result.chain[0] if result.chain else "no model"
        summary = (f"Would try {', '.join(result.chain) or 'nothing'} (first: {head}); budget tier {result.budget_tier}"
                   f"{note}.\n" + "\n".join(structured["steps"]))
        if result.excluded:
            summary += "\nexcluded: " + "; ".join(f"{x['model']} ({x['reason']})" for x in result.excluded)
        return result, ok(structured, summary)

    async def cost_report(ctx: Ctx, access: Access, args: ReportArgs) -> tuple[Any, Wire]:
        if args.period is not None and (args.since or args.until):
            raise InvalidInput("period", "give a period or since/until, not both", allowed="one of them")
        result = await engine.cost_report(period=args.period, group_by=args.group_by, since=args.since,
                                          until=args.until, tag=report_tag(access, args.tag), provider=args.provider)
        totals = result.totals
        only = ", ".join(f"{k} {v!r}" for k, v in result.filters.items())
        lines = [(f"{result.period['name']} ({result.period['first_day']}..{result.period['last_day']})"
                  f"{f', only {only}' if only else ''}: ${totals['cost_usd']} over {plural(totals['requests'], 'call')}")]
        if totals.get("estimated_requests"):
            lines.append(f"  of which ${totals['estimated_cost_usd']} over {plural(totals['estimated_requests'], 'call')} is "
                         "estimated (the provider reported no usage)")
        empty = EMPTY_GROUP.get(args.group_by, "(none)")
        lines += [f"  {r[args.group_by] or empty}: ${r['cost_usd']} ({plural(r['requests'], 'call')})" for r in result.rows]
        lines += [f"note: {n}" for n in result.notes]
        return result, ok(result_view(access, "cost_report", result.to_json()), "\n".join(lines))

    async def set_budget(ctx: Ctx, access: Access, args: BudgetArgs) -> tuple[Any, Wire]:
        await check_budget_change(access, args.scope, args.period, args.limit_usd, engine.limit_in_force)
        result = await engine.set_budget(args.scope, args.period, args.limit_usd)
        await updated(BUDGETS_URI)
        what = "removed" if args.limit_usd is None else f"set to ${result.changed['limit_usd']}"
        return result, ok(result_view(access, "set_budget", result.to_json()), f"{args.scope} {args.period} limit {what}.")

    runs = {"complete": complete, "route_explain": route_explain, "cost_report": cost_report, "set_budget": set_budget}
    bound = {name: _Bound(arguments, runs[name]) for name, (_, arguments) in TOOLS.items()}

    async def list_tools(ctx: Ctx, params: PaginatedRequestParams | None) -> ListToolsResult:
        return _TOOL_LIST

    async def call_tool(ctx: Ctx, params: CallToolRequestParams) -> Wire:
        tool = bound.get(params.name)
        if tool is None:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name[:100]!r}; this server has {_TOOL_NAMES}",
                           data={"tool": params.name[:100]})
        t0 = time.perf_counter()
        try:
            access = _access(ctx, tokens=tokens)
        except Forbidden as e:
            return error(e)
        try:
            check_mcp(access, f"the tool {params.name}")
            result, wire = await tool.run(ctx, access, tool.arguments.parse(params.arguments))
        except RouterError as e:
            if observer is not None:
                observer.tool_done(params.name, time.perf_counter() - t0, None, e)
            return error(error_view(access, e))
        except Exception:
            _log.exception("tool %s failed unexpectedly", params.name)
            failure = _Unexpected(f"{params.name} failed unexpectedly; the server's log has the details")
            if observer is not None:
                observer.tool_done(params.name, time.perf_counter() - t0, None, failure)
            return error(failure)
        if observer is not None:
            observer.tool_done(params.name, time.perf_counter() - t0, result, None)
        return wire

    # -- the resources -----------------------------------------------------------------------------

    async def list_resources(ctx: Ctx, params: PaginatedRequestParams | None) -> ListResourcesResult:
        return _RESOURCES

    async def list_templates(ctx: Ctx, params: PaginatedRequestParams | None) -> ListResourceTemplatesResult:
        return _TEMPLATES

    async def read_resource(ctx: Ctx, params: ReadResourceRequestParams) -> ReadResourceResult:
        uri = params.uri
        try:
            access = _access(ctx, tokens=tokens)
            check_mcp(access, f"reading {uri[:200]}")
        except Forbidden as e:
            raise MCPError(INVALID_REQUEST, str(e), data=e.to_dict()) from None
        if uri == PROVIDERS_URI:
            text = _json({"providers": engine.providers_status()})
        elif uri == LEDGER_URI:
            rows = await engine.ledger_rows(limit=50, tag=rows_tag(access))
            text = _json(_with_journal({"entries": rows_view(access, rows)},
                                       await engine.journaled(tag=rows_tag(access), entries=True)))
        elif uri == BUDGETS_URI:
            text = _json(_with_journal({"budgets": limits_view(access, await engine.budgets())},
                                       await engine.journaled(tag=rows_tag(access))))
        elif uri.startswith(LEDGER_URI + "/"):
            day = uri[len(LEDGER_URI) + 1:]
            try:
                if not _DAY.match(day):
                    raise InvalidInput("date", f"{day[:40]!r} is not a date", allowed="YYYY-MM-DD")
                rows = await engine.ledger_rows(day=day, limit=10_000, tag=rows_tag(access))
            except InvalidInput as e:
                raise MCPError(INVALID_PARAMS, redact(str(e)), data={"uri": redact(uri[:200])}) from None
            text = _json(_with_journal({"date": day, "entries": rows_view(access, rows)},
                                       await engine.journaled(tag=rows_tag(access), day=day, entries=True)))
        else:
            raise MCPError(RESOURCE_NOT_FOUND, f"no such resource: {uri[:200]!r}; this server has {_RESOURCE_NAMES}",
                           data={"uri": uri[:200]})
        return ReadResourceResult(contents=[TextResourceContents(uri=uri, text=redact(text), mime_type="application/json")])

    server: Server[Any] = Server(
        "llm-router",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribers.subscribe,
        on_unsubscribe_resource=subscribers.unsubscribe,
        on_subscriptions_listen=ListenHandler(bus),
    )
    # The constructor's on_set_logging_level warns that logging is deprecated from 2026-07-28 on;
    # handshake-era clients still set their level, so it is served all the same.
    server.add_request_handler("logging/setLevel", SetLevelRequestParams, subscribers.set_level)
    from .stdio import limit_messages

    limit_messages(server, engine.settings.limits.max_message_bytes)
    return server
