"""The six tools, served: ``tools/list`` and ``tools/call``, each tool a function of the server's
state, the request, the caller's access and its parsed arguments.

Around each call, and only in MCP's own terms: who to bill when the transport identified the
caller, what the caller's role lets it do and see (``access``: asked before each tool acts, its
views applied to every result and error on the way out), events for fallbacks and budget
warnings (``Notifier.log``: a JSON line on stderr, a span event, a log message for handshake-era
clients), resource-updated notifications for subscribers, and the observer (metrics). An unknown
tool is a JSON-RPC error (-32602), as the spec says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, Generic, TypeVar

from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolRequestParams, ListToolsResult, PaginatedRequestParams, Tool
from pydantic import BaseModel

from .access import Access, check_budget_change, check_mcp, check_rating, error_view, report_tag, result_view
from .answers import Kept
from .arguments import ToolArguments
from .calls import BudgetArgs, CompleteArgs, CompleteResult, RateArgs, ReportArgs
from .dashboard import DashboardArgs, dashboard_data
from .dashboard import summary as dashboard_summary
from .engine import new_request_id
from .limit_ask import StateRefused
from .mcp_calls import AS_TASK, KeptCall
from .mcp_notify import wants_progress
from .mcp_state import Ctx, ServerState, Wire, caller_access, error, ok
from .mcp_surface import (
    BUDGET_ARGS,
    BUDGET_TOOL,
    BUDGETS_URI,
    COMPLETE_ARGS,
    COMPLETE_TOOL,
    DASHBOARD_ARGS,
    DASHBOARD_TOOL,
    EXPLAIN_ARGS,
    EXPLAIN_TOOL,
    PROVIDERS_URI,
    RATE_ARGS,
    RATE_TOOL,
    REPORT_ARGS,
    REPORT_TOOL,
    with_apps,
)
from .mcp_tasks import task_created
from .types import EMPTY_GROUP, AllAttemptsFailed, BudgetExceeded, Forbidden, InvalidInput, RouterError, plural

__all__ = ["TOOLS", "TOOL_LIST", "ServedTool", "ToolRun", "call_tool", "list_tools"]

_log = logging.getLogger("llm_router.mcp")

A = TypeVar("A", bound=BaseModel)
ToolRun = Callable[[ServerState, Ctx, Access, A], Awaitable[tuple[Any, Wire]]]
"""A tool's handler: (state, request, caller, parsed arguments) -> (the engine's result, the wire
reply). Not ``mcp_types.Tool``, which is a tool's listing."""


class _Unexpected(RouterError):
    """A tool failed in a way the router did not foresee (a bug): the details go to the server's log,
    never to the caller."""

    code = "internal"


def _billing_tag(access: Access, args: CompleteArgs) -> str:
    """Bill the token's tag, with a note when a tag argument was overridden. A token's tag wins
    (whatever its role): otherwise a caller could move its spend out of its own tag's budget."""
    caller = access.tag
    if caller is None:
        return ""
    given = args.tag
    args.tag = caller
    return f" (billed to {caller!r}, this connection's token, not {given.strip()!r})" if given and given.strip() != caller else ""


async def _refused(state: ServerState, ctx: Ctx, access: Access, e: RouterError) -> None:
    """What a failed ``complete`` tells besides its error: a log message for a budget refusal or for
    every attempt failing (the call already said the ledger changed)."""
    shown = error_view(access, e)
    facts: dict[str, str | int | bool] = {"request_id": e.request_id} if e.request_id else {}
    if isinstance(shown, BudgetExceeded):
        await state.notifier.log(ctx, "warning", "budget_refusal", f"budget refusal: {shown}",
                                 facts={**facts, "limit": shown.limit_name or "", "resets_at": shown.resets_at or ""})
    elif isinstance(shown, AllAttemptsFailed):
        await state.notifier.log(ctx, "error", "all_failed", str(shown), facts={**facts, "deadline_hit": shown.deadline_hit},
                                 attempts=[a.to_dict() for a in shown.attempts])


async def complete(state: ServerState, ctx: Ctx, access: Access, args: CompleteArgs) -> tuple[Any, Wire]:
    note = _billing_tag(access, args)
    call = KeptCall(state, access, args, note, new_request_id())
    if AS_TASK.get():  # the Tasks extension runs it as a task: validated first, then not waited for
        try:
            state.engine.prepare(args)
        except InvalidInput:
            state.engine.answers.discard(call.kept)
            raise
        if call.start_task():
            return call.kept, task_created(call.kept, state.engine.answers.keep_s)
    step = 0

    async def progress(_value: float, _total: float | None, message: str) -> None:
        nonlocal step
        step += 1  # MCP progress must increase with every notification
        await ctx.session.report_progress(step, None, state.redact(message))

    raised: list[str] = []
    first = [call]

    async def run() -> tuple[CompleteResult, dict[str, Any], str]:
        # A call made again after a limit was raised (limit_ask) is a new request, with its own id.
        this = first.pop() if first else KeptCall(state, access, args, note, new_request_id())
        try:
            # Streaming from the provider and reporting it costs a little: only when asked for.
            return await this.run(progress if wants_progress(ctx) else None, args.on_cancel or "finish")
        except RouterError as e:
            await _refused(state, ctx, access, e)
            raise

    if state.asker is None:
        result, raw, summary = await run()
    else:  # an admin may be asked to raise a limit that refuses the call (limit_ask)
        try:
            outcome = await state.asker.complete(ctx, access, run, partial(_raise_limit, state, access, raised))
        finally:
            if first:  # a retry's answer was refused before the call was made: nothing to keep
                state.engine.answers.discard(call.kept)
        if isinstance(outcome, dict):  # 2026-07-28: input_required, the question for the client
            return None, outcome
        result, raw, summary = outcome
    structured = result_view(access, "complete", raw)
    failed = [a for a in result.attempts if a.outcome != "ok"]
    if failed:
        what = "; ".join(f"{a.model} {a.outcome} ({a.error_code})" for a in failed)
        await state.notifier.log(ctx, "warning", "fallback", f"fallback: {what}; answered by {result.model}",
                                 facts={"request_id": result.request_id, "model": result.model,
                                        "left": ",".join(f"{a.model} {a.error_code or a.outcome}" for a in failed)},
                                 attempts=structured["attempts"])
    budget = structured["budget"]
    if budget.get("tier", "normal") != "normal":
        tight = budget.get("tightest") or {}
        used = f"{tight['percent_used']}% used" if "percent_used" in tight else "shared by every tag"
        await state.notifier.log(
            ctx, "warning", "budget_warning", f"budget {tight.get('scope', '')} {tight.get('period', '')} is {used} "
            f"(tier {budget['tier']}): " + ("cheaper models go first" if budget["tier"] == "cautious"
                                            else "only free models are used"),
            facts={"request_id": result.request_id, "tier": budget["tier"], "scope": str(tight.get("scope", "")),
                   "period": str(tight.get("period", ""))},
            budget=budget)
    summary += "".join(f"\n{line}" for line in raised)
    return result, ok(state, structured, summary)


async def _raise_limit(state: ServerState, access: Access, said: list[str], scope: str, period: str,
                       limit_usd: Decimal) -> None:
    """What ``set_budget`` does, for a raise an admin agreed to when asked (said in ``said``)."""
    await check_budget_change(access, scope, period, limit_usd, state.engine.limit_in_force)
    result = await state.engine.set_budget(scope, period, limit_usd)
    await state.notifier.updated(BUDGETS_URI)
    said.append(f"{scope} {period} limit raised to ${result.changed['limit_usd']}, as asked, before this call.")


ON_CANCEL_STEP = {
    "finish": "on_cancel finish: if your client gives up after a model is asked, the call still ends, billed, "
              "its answer kept at llm-router://answers/{request_id}",
    "abort": "on_cancel abort: if your client gives up, the call stops (what was streamed is billed)",
}


async def route_explain(state: ServerState, ctx: Ctx, access: Access, args: CompleteArgs) -> tuple[Any, Wire]:
    note = _billing_tag(access, args)
    result = await state.engine.explain(args)
    structured = result_view(access, "route_explain", result.to_json())
    head = result.chain[0] if result.chain else "no model"
    summary = (f"Would try {', '.join(result.chain) or 'nothing'} (first: {head}); budget tier {result.budget_tier}"
               f"{note}.\n" + "\n".join(structured["steps"]))
    if result.excluded:
        summary += "\nexcluded: " + "; ".join(f"{x['model']} ({x['reason']})" for x in result.excluded)
    if args.on_cancel is not None:  # not routing's, but what complete would do with it is said
        step = ON_CANCEL_STEP[args.on_cancel]
        structured["steps"] = [*structured["steps"], step]
        summary += "\n" + step
    return result, ok(state, structured, summary)


async def cost_report(state: ServerState, ctx: Ctx, access: Access, args: ReportArgs) -> tuple[Any, Wire]:
    if args.period is not None and (args.since or args.until):
        raise InvalidInput("period", "give a period or since/until, not both", allowed="one of them")
    result = await state.engine.cost_report(period=args.period, group_by=args.group_by, since=args.since,
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
    return result, ok(state, result_view(access, "cost_report", result.to_json()), "\n".join(lines))


async def set_budget(state: ServerState, ctx: Ctx, access: Access, args: BudgetArgs) -> tuple[Any, Wire]:
    engine = state.engine
    await check_budget_change(access, args.scope, args.period, args.limit_usd, engine.limit_in_force)
    result = await engine.set_budget(args.scope, args.period, args.limit_usd)
    await state.notifier.updated(BUDGETS_URI)
    what = "removed" if args.limit_usd is None else f"set to ${result.changed['limit_usd']}"
    return result, ok(state, result_view(access, "set_budget", result.to_json()), f"{args.scope} {args.period} limit {what}.")


async def rate(state: ServerState, ctx: Ctx, access: Access, args: RateArgs) -> tuple[Any, Wire]:
    engine = state.engine
    subject = await engine.rated_request(args.request_id)
    check_rating(access, subject.tag)
    result = await engine.rate(subject, args.score, args.comment)
    await state.notifier.updated(PROVIDERS_URI)  # its estimates changed
    e = result.estimate
    where = f" on {e['task_type']}" if e["task_type"] else ""
    replaced = f" (replacing {result.rating['previous_score']})" if result.rating["replaced"] else ""
    return result, ok(state, result.to_json(), (
        f"Rated {result.rating['score']}/5{replaced}: {e['model']}{where} is now estimated at {e['estimate']:.0%} "
        f"good ({plural(e['ratings'], 'rating')}, confidence {e['confidence']:.0%})."))


async def dashboard(state: ServerState, ctx: Ctx, access: Access, args: DashboardArgs) -> tuple[Any, Wire]:
    result = await dashboard_data(state.engine, access, args)
    return result, ok(state, result.to_json(), dashboard_summary(result))


@dataclass(frozen=True, slots=True)
class ServedTool(Generic[A]):
    """One tool as served: its listing, how its arguments are parsed, and its handler, side by side."""

    listing: Tool
    arguments: ToolArguments[A]
    run: ToolRun[A]


TOOLS: dict[str, ServedTool[Any]] = {
    served.listing.name: served
    for served in (
        ServedTool(COMPLETE_TOOL, COMPLETE_ARGS, complete),
        ServedTool(EXPLAIN_TOOL, EXPLAIN_ARGS, route_explain),
        ServedTool(REPORT_TOOL, REPORT_ARGS, cost_report),
        ServedTool(BUDGET_TOOL, BUDGET_ARGS, set_budget),
        ServedTool(RATE_TOOL, RATE_ARGS, rate),
        ServedTool(DASHBOARD_TOOL, DASHBOARD_ARGS, dashboard),
    )
}
"""Every tool this server offers, by name: the one table both ``tools/list`` and ``tools/call`` read.

Regression: the listings and the handlers were two tables keyed by name, with nothing tying them;
a tool whose handler was dropped stayed listed and answered "Unknown tool" when called. Here a
tool is listed only with its handler, and a handler is typed against its arguments' parser."""
TOOL_LIST = ListToolsResult(tools=[served.listing for served in TOOLS.values()])
TOOL_LIST_APPS = ListToolsResult(tools=with_apps(TOOL_LIST.tools))
"""What a client that negotiated MCP Apps is listed: the same tools, ``dashboard`` and
``cost_report`` linked to the dashboard page."""
TOOL_NAMES = ", ".join(TOOLS)


async def list_tools(state: ServerState, ctx: Ctx, params: PaginatedRequestParams | None) -> ListToolsResult:
    from mcp.server.apps import client_supports_apps

    return TOOL_LIST_APPS if client_supports_apps(ctx) else TOOL_LIST


async def call_tool(state: ServerState, ctx: Ctx, params: CallToolRequestParams) -> Wire:
    """One ``tools/call``: who asks, may they, the arguments parsed, the tool run, the observer told;
    every failure as a tool error (an unexpected one logged here, never shown)."""
    served = TOOLS.get(params.name)
    if served is None:
        raise MCPError(INVALID_PARAMS, f"Unknown tool: {params.name[:100]!r}; this server has {TOOL_NAMES}",
                       data={"tool": params.name[:100]})
    observer = state.observer
    t0 = time.perf_counter()
    try:
        access = caller_access(ctx, tokens=state.tokens)
    except Forbidden as e:
        return error(state, e)
    try:
        check_mcp(access, f"the tool {params.name}")
        result, wire = await served.run(state, ctx, access, served.arguments.parse(params.arguments))
    except StateRefused:  # a request state that cannot be used: a JSON-RPC error, as the spec has it
        raise
    except RouterError as e:
        if observer is not None:
            observer.tool_done(params.name, time.perf_counter() - t0, None, e)
        return error(state, error_view(access, e))
    except Exception:
        _log.exception("tool %s failed unexpectedly", params.name)
        failure = _Unexpected(f"{params.name} failed unexpectedly; the server's log has the details")
        if observer is not None:
            observer.tool_done(params.name, time.perf_counter() - t0, None, failure)
        return error(state, failure)
    # A task's call tells the observer when it ends; a question (input_required) is counted once answered.
    if observer is not None and not isinstance(result, Kept) and wire.get("resultType") != "input_required":
        observer.tool_done(params.name, time.perf_counter() - t0, result, None)
    return wire
