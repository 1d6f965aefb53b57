"""The resources, served: the providers, the ledger (its 50 latest entries, or one day's), the
budgets, and the kept answers (``mcp_answers``), each as JSON and each filtered by the caller's
role (``access``) and redacted; and the dashboard page for MCP Apps hosts. The dashboard page
(``ui://llm-router/dashboard.html``, ``text/html;profile=mcp-app``) holds no data (the host hands
it the tool's result): it is listed to clients that negotiated MCP Apps, and readable by any
caller that may read resources.

An unknown resource is -32002 and a malformed ``llm-router://ledger/{date}`` -32602, as the spec
says; a caller whose role may not read is refused with -32600.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    ListResourcesResult,
    ListResourceTemplatesResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    TextResourceContents,
)

from .access import check_mcp, limits_view, providers_view, rows_tag, rows_view
from .mcp_answers import answers_resource
from .mcp_state import Ctx, ServerState, caller_access
from .mcp_surface import (
    ANSWERS_URI,
    BUDGETS_URI,
    DASHBOARD_URI,
    DAY,
    LEDGER_URI,
    PROVIDERS_URI,
    RESOURCE_NAMES,
    RESOURCE_NOT_FOUND,
    RESOURCES,
    TEMPLATES,
    UI_RESOURCES,
)
from .types import Forbidden, InvalidInput

__all__ = ["list_resources", "list_templates", "read_resource"]


def _with_journal(data: dict[str, Any], waiting: dict[str, Any]) -> dict[str, Any]:
    """A ledger or budgets resource with what waits in the journal (already only the caller's own
    tag's for a member): ``journaled`` (requests, cost, and for the ledger the waiting entries) and,
    while any wait, a note saying they are held against every limit but not yet in the figures."""
    note = waiting.pop("note", None)
    return {**data, "journaled": waiting, "notes": [note] if note else []}


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


_RESOURCES_APPS = ListResourcesResult(resources=[*RESOURCES.resources, *UI_RESOURCES])


async def list_resources(state: ServerState, ctx: Ctx, params: PaginatedRequestParams | None) -> ListResourcesResult:
    from mcp.server.apps import client_supports_apps

    return _RESOURCES_APPS if client_supports_apps(ctx) else RESOURCES


def _dashboard_page() -> ReadResourceResult:
    from mcp.server.apps import APP_MIME_TYPE

    from .dashboard import page

    # No data in it, and no network: the host's default CSP for an app (no connect-src) fits.
    return ReadResourceResult(contents=[TextResourceContents(uri=DASHBOARD_URI, text=page().html, mime_type=APP_MIME_TYPE,
                                                             _meta={"ui": {"prefersBorder": True}})])


async def list_templates(state: ServerState, ctx: Ctx, params: PaginatedRequestParams | None) -> ListResourceTemplatesResult:
    return TEMPLATES


async def read_resource(state: ServerState, ctx: Ctx, params: ReadResourceRequestParams) -> ReadResourceResult:
    engine, redact = state.engine, state.redact
    uri = params.uri
    try:
        access = caller_access(ctx, tokens=state.tokens)
        check_mcp(access, f"reading {uri[:200]}")
    except Forbidden as e:
        raise MCPError(INVALID_REQUEST, str(e), data=e.to_dict()) from None
    if uri == PROVIDERS_URI:
        text = _json({"providers": providers_view(access, engine.providers_status()),
                      "quality": engine.quality_status()})
    elif uri == LEDGER_URI:
        rows = await engine.ledger_rows(limit=50, tag=rows_tag(access))
        text = _json(_with_journal({"entries": rows_view(access, rows)},
                                   await engine.journaled(tag=rows_tag(access), entries=True)))
    elif uri == BUDGETS_URI:
        text = _json(_with_journal({"budgets": limits_view(access, await engine.budgets())},
                                   await engine.journaled(tag=rows_tag(access))))
    elif uri == DASHBOARD_URI:
        return _dashboard_page()
    elif uri.startswith(LEDGER_URI + "/"):
        day = uri[len(LEDGER_URI) + 1:]
        try:
            if not DAY.match(day):
                raise InvalidInput("date", f"{day[:40]!r} is not a date", allowed="YYYY-MM-DD")
            rows = await engine.ledger_rows(day=day, limit=10_000, tag=rows_tag(access))
        except InvalidInput as e:
            raise MCPError(INVALID_PARAMS, redact(str(e)), data={"uri": redact(uri[:200])}) from None
        text = _json(_with_journal({"date": day, "entries": rows_view(access, rows)},
                                   await engine.journaled(tag=rows_tag(access), day=day, entries=True)))
    elif uri == ANSWERS_URI or uri.startswith(ANSWERS_URI + "/"):
        text = _json(answers_resource(state, access, uri[len(ANSWERS_URI) + 1:] if uri != ANSWERS_URI else None))
    else:
        raise MCPError(RESOURCE_NOT_FOUND, f"no such resource: {uri[:200]!r}; this server has {RESOURCE_NAMES}",
                       data={"uri": uri[:200]})
    return ReadResourceResult(contents=[TextResourceContents(uri=uri, text=redact(text), mime_type="application/json")])
