"""What the MCP server offers, as its clients see it: the instructions, the six tools (names,
descriptions, input and output schemas, annotations) and the resources, all worked out once, at
import. Only data here; ``mcp_tools`` and ``mcp_resources`` serve it (``mcp_tools.TOOLS`` puts each
tool's listing beside its handler).

``complete`` and ``route_explain`` take the same steering parameters (prompt or messages, quality,
strategy, model, max_cost_usd, tag ...): both are ``calls.CompleteArgs``, and what each may be is
said once, in ``STEERING_ALLOWED``, so the two published schemas and their error messages cannot
drift apart.
"""

from __future__ import annotations

import re

from mcp.server.caching import CacheableMethod, CacheHint
from mcp_types import (
    ListResourcesResult,
    ListResourceTemplatesResult,
    Resource,
    ResourceTemplate,
    Tool,
    ToolAnnotations,
)

from .arguments import ToolArguments
from .calls import (
    DATE_PATTERN,
    BudgetArgs,
    BudgetResult,
    CompleteArgs,
    CompleteResult,
    ExplainResult,
    RateArgs,
    RateResult,
    ReportArgs,
    ReportResult,
)
from .dashboard import DashboardArgs, DashboardResult
from .icons import TOOL_ICONS

__all__ = [
    "ANSWERS_URI",
    "BUDGETS_URI",
    "CACHE_HINTS",
    "BUDGET_ARGS",
    "BUDGET_TOOL",
    "COMPLETE_ARGS",
    "COMPLETE_TOOL",
    "DASHBOARD_ARGS",
    "DASHBOARD_TOOL",
    "DASHBOARD_URI",
    "DAY",
    "ERROR_META_KEY",
    "EXPLAIN_ARGS",
    "EXPLAIN_TOOL",
    "INSTRUCTIONS",
    "LEDGER_URI",
    "PROVIDERS_URI",
    "RATE_ARGS",
    "RATE_TOOL",
    "REPORT_ARGS",
    "REPORT_TOOL",
    "RESOURCES",
    "RESOURCE_NAMES",
    "RESOURCE_NOT_FOUND",
    "STEERING_ALLOWED",
    "SUBSCRIBABLE",
    "TEMPLATES",
    "UI_RESOURCES",
    "with_apps",
]

INSTRUCTIONS = """\
This server hands LLM work to other models and keeps a spend ledger.
Use `complete` to delegate self-contained work a cheaper or different model can do (summaries,
drafts, classification, code snippets, second opinions); set `quality` when the work needs a strong
model, `task_type` so routing rules apply, `tag` to bill it. Use `route_explain` first when you want
to know which model would answer and what it may cost, or afterwards to explain a choice. Use
`cost_report` for questions about spend ("what did I spend this week on Anthropic?") and
`set_budget` to cap it ("set a $2 daily cap"). Every call is within a hard budget; a refusal says
which limit and when it resets. After you check a delegated answer, `rate` it (1-5): with
`strategy: "adaptive"` the router learns, per task_type, which cheaper model is good enough.
If your client gives up on a `complete` (its tool timeout) after a model was asked, the call still
finishes and is billed: read its answer at `llm-router://answers/{request_id}` (the first progress
message and the answer's text give the request id; `llm-router://answers` lists your recent calls)."""

PROVIDERS_URI = "llm-router://providers"
LEDGER_URI = "llm-router://ledger"
BUDGETS_URI = "llm-router://budgets"
ANSWERS_URI = "llm-router://answers"
ERROR_META_KEY = "llm-router/error"
"""Where an error result carries its machine-readable facts (``RouterError.to_dict``), in ``_meta``."""
RESOURCE_NOT_FOUND = -32002
"""The MCP spec's code for a resource that does not exist (JSON-RPC's range for servers)."""

DAY = re.compile(DATE_PATTERN)
SUBSCRIBABLE = re.compile(r"^llm-router://(providers|ledger|budgets|ledger/\d{4}-\d{2}-\d{2})$")


# -- the tools -----------------------------------------------------------------------------------

STEERING_ALLOWED = {
    "model": '"provider:model", or a list of them (an explicit fallback chain)',
    "max_cost_usd": "a number of dollars from 0 to 10000",
    "tool_choice": '"auto", "required", "none", or {"name": "<one of the tools>"}',
    "messages.*.content": 'a non-empty string, or a list of parts: {"type": "text", "text"}, '
    '{"type": "image", "data", "mimeType"} or {"type": "image", "url"}',
    "tools.*.name": 'letters, digits, "_" and "-", 1 to 64 of them (what every provider takes)',
    "response_format.name": 'letters, digits, "_" and "-", 1 to 64 of them',
    "response_format.type": "json_object, json_schema",
    "stop": "a list of 1 to 16 strings",
    "messages.*.tool_calls.*.arguments": "an object (or JSON text of one)",
}
"""What the steering parameters ``complete`` and ``route_explain`` share may be, in words, where the
schema alone would say it less well."""

COMPLETE_ARGS = ToolArguments("complete", CompleteArgs, allowed=STEERING_ALLOWED)
EXPLAIN_ARGS = ToolArguments("route_explain", CompleteArgs, allowed=STEERING_ALLOWED)
REPORT_ARGS = ToolArguments("cost_report", ReportArgs)
RATE_ARGS = ToolArguments("rate", RateArgs, allowed={"score": "a whole number from 1 to 5"})
BUDGET_ARGS = ToolArguments("set_budget", BudgetArgs, allowed={
    "scope": '"global", "provider:NAME" or "tag:NAME"', "limit_usd": "a number of dollars >= 0, or null to remove the limit",
})


def _annotations(*, read_only: bool, idempotent: bool, open_world: bool) -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=read_only, destructive_hint=False, idempotent_hint=idempotent,
                           open_world_hint=open_world)


_READ_ONLY = _annotations(read_only=True, idempotent=True, open_world=False)
COMPLETE_TOOL = Tool(
    name="complete",
    description="Send a prompt to the best-suited LLM (cheapest that meets the quality asked), with "
    "fallback across providers and a hard budget. Returns the answer, the model used, tokens and exact cost. "
    "For structured work: response_format gets JSON valid for your schema (returned parsed as json; a model "
    "whose answer does not match is passed over for the next), tools lets the model call functions "
    "(tool_calls come back for you to run; answer them in a tool turn), and messages may hold images. Only "
    "models that can do what the call asks are tried. If your client times out, the call still ends (billed): its "
    "answer is kept at llm-router://answers/{request_id} (on_cancel: \"abort\" stops it instead).",
    input_schema=COMPLETE_ARGS.schema,
    output_schema=CompleteResult.model_json_schema(),
    annotations=_annotations(read_only=False, idempotent=False, open_world=True),
    icons=TOOL_ICONS["complete"],
)
EXPLAIN_TOOL = Tool(
    name="route_explain",
    description="Explain, without calling any model or spending anything, which models `complete` would try "
    "for these arguments, in what order, why others were excluded, and the estimated cost.",
    input_schema=EXPLAIN_ARGS.schema,
    output_schema=ExplainResult.model_json_schema(),
    annotations=_READ_ONLY,
    icons=TOOL_ICONS["route_explain"],
)
REPORT_TOOL = Tool(
    name="cost_report",
    description="Spend from the ledger for a period, grouped by provider, model, task_type, tag or day, "
    "with every budget's status, a month-end projection and savings against the reference model.",
    input_schema=REPORT_ARGS.schema,
    output_schema=ReportResult.model_json_schema(),
    annotations=_READ_ONLY,
    icons=TOOL_ICONS["cost_report"],
)
BUDGET_TOOL = Tool(
    name="set_budget",
    description="Set, change or remove (limit_usd null) a spending limit. Persisted; applies to every later call.",
    input_schema=BUDGET_ARGS.schema,
    output_schema=BudgetResult.model_json_schema(),
    annotations=_annotations(read_only=False, idempotent=True, open_world=False),
    icons=TOOL_ICONS["set_budget"],
)
RATE_TOOL = Tool(
    name="rate",
    description="Rate a delegated answer once you have checked it: score 1 (wrong or useless) to 5 (right and "
    "complete), with the request_id complete returned and an optional comment. Rate when you actually checked "
    "the answer (you used it, verified it, or had to redo it), especially for cheap models and recurring "
    "task_types: the router learns from it which model is good enough for each task_type (strategy adaptive). "
    "A later rating of the same request replaces the earlier one. Returns the rating and the model's updated "
    "quality estimate.",
    input_schema=RATE_ARGS.schema,
    output_schema=RateResult.model_json_schema(),
    annotations=_annotations(read_only=False, idempotent=True, open_world=False),
    icons=TOOL_ICONS["rate"],
)
"""Each tool's listing. What serves them, and so what ``tools/list`` shows, is ``mcp_tools.TOOLS``:
one table with each listing beside its handler, so no tool can be listed and not served."""


# -- the resources -------------------------------------------------------------------------------

RESOURCES = ListResourcesResult(resources=[
    Resource(uri=PROVIDERS_URI, name="providers", mime_type="application/json",
             description="Each provider: usable or not and why, circuit state, latency, models with prices."),
    Resource(uri=LEDGER_URI, name="ledger", mime_type="application/json", description="The 50 most recent ledger entries."),
    Resource(uri=BUDGETS_URI, name="budgets", mime_type="application/json",
             description="Every limit with spent, reserved and remaining, and when it resets."),
    Resource(uri=ANSWERS_URI, name="answers", mime_type="application/json",
             description="Your recent complete calls, newest first (id, model, status, first line), running or kept "
             "after they ended: find a request_id your client never saw."),
])
TEMPLATES = ListResourceTemplatesResult(resource_templates=[
    ResourceTemplate(uri_template=LEDGER_URI + "/{date}", name="ledger_day", mime_type="application/json",
                     description="Every ledger entry of one day (YYYY-MM-DD, budget time zone)."),
    ResourceTemplate(uri_template=ANSWERS_URI + "/{request_id}", name="answer", mime_type="application/json",
                     description="One complete call's outcome, kept after it ends (also when your client timed out): "
                     "its result as the tool returned it, model, status, created and expires."),
])
RESOURCE_NAMES = ", ".join([*(r.uri for r in RESOURCES.resources), LEDGER_URI + "/YYYY-MM-DD",
                            ANSWERS_URI + "/{request_id}", "ui://llm-router/dashboard.html"])


# -- caching hints (2026-07-28) --------------------------------------------------------------------

CACHE_HINTS: dict[CacheableMethod, CacheHint] = {
    # Made once at import and the same for every caller: they change only with a new version of
    # the server, which a client meets on a new connection.
    "tools/list": CacheHint(ttl_ms=3_600_000, scope="public"),
    "resources/list": CacheHint(ttl_ms=3_600_000, scope="public"),
    "resources/templates/list": CacheHint(ttl_ms=3_600_000, scope="public"),
    # Spend, holds, circuits and ledger rows move with every call, and each caller sees its own view.
    "resources/read": CacheHint(ttl_ms=0, scope="private"),
}
"""How long a 2026-07-28 client may keep each list (``ttlMs``, ``cacheScope``); none is ever stale:
the lists are fixed for the server's life, and what changes (``resources/read``) is never cached."""


# -- the dashboard, and what an MCP Apps host is shown besides -----------------------------------

DASHBOARD_URI = "ui://llm-router/dashboard.html"
"""The spend dashboard as an MCP App (``text/html;profile=mcp-app``): the ``dashboard`` and
``cost_report`` results render in it on hosts that negotiated the Apps extension."""
DASHBOARD_ARGS = ToolArguments("dashboard", DashboardArgs)
DASHBOARD_TOOL = Tool(
    name="dashboard",
    description="The spend dashboard for a period (default last_7_days): spend per day, by provider and by model, "
    "every budget as spent / held / left, savings against the reference model, and the latest calls with their "
    "attempts. Hosts that render MCP Apps show it as a page; others get the same facts as text.",
    input_schema=DASHBOARD_ARGS.schema,
    output_schema=DashboardResult.model_json_schema(),
    annotations=_READ_ONLY,
    icons=TOOL_ICONS["dashboard"],
)
_UI = {"ui": {"resourceUri": DASHBOARD_URI}}
UI_RESOURCES = [
    Resource(uri=DASHBOARD_URI, name="dashboard", title="Spend dashboard", mime_type="text/html;profile=mcp-app",
             description="The spend dashboard (MCP App): what the dashboard and cost_report tools return, drawn.",
             _meta={"ui": {"prefersBorder": True}}),
]


def with_apps(tools: list[Tool]) -> list[Tool]:
    """The tools as an MCP Apps host is shown them: ``dashboard`` and ``cost_report`` linked to the
    dashboard page (``_meta.ui.resourceUri``), the rest as every client sees them."""
    return [t.model_copy(update={"meta": {**(t.meta or {}), **_UI}}) if t.name in ("dashboard", "cost_report") else t
            for t in tools]
