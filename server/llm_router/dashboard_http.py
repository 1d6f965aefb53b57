"""``GET /dashboard`` and ``GET /dashboard/data`` in HTTP mode: the spend dashboard's page with its
data embedded, and its data alone (JSON) for the page to fetch when the period changes.

Behind ``http_app``'s guard, like ``/mcp``: Host and Origin checked, and with tokens configured a
valid token whose role may read (``admin`` every tag, ``member`` its own; ``metrics`` refused).
Without tokens the loopback local user is an admin.

A browser cannot send an ``Authorization`` header when a person opens a link, and a token in a
URL's query is logged (ours, a proxy's) and kept in history. So with tokens configured, a
``GET /dashboard`` that brings none is given the page without any data; the page reads the token
from the URL's fragment (``/dashboard#token=...``, which the browser never sends), takes it out of
the address bar, and fetches ``/dashboard/data`` same-origin with ``Authorization: Bearer``. A
request that does bring a token (a script, ``curl``) gets the page with its data at once.

The page is served under a strict Content-Security-Policy (``dashboard.Page.csp``): its own inline
script and style by hash, no other script, style, font, frame or form target, and no connection
but to this origin.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .access import ACCESS_SCOPE_KEY, Access, check_mcp
from .dashboard import DEFAULT_PERIOD, DashboardArgs, dashboard_data, embedded, page
from .types import Forbidden, InvalidInput, RouterError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from .engine import Engine
    from .redaction import Redactor

__all__ = ["DASHBOARD_PATH", "DATA_PATH", "routes"]

DASHBOARD_PATH = "/dashboard"
DATA_PATH = "/dashboard/data"
_QUERY_KEYS = ("period", "since", "until", "tag")
_SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def _args(request: Request) -> DashboardArgs:
    """The query as the dashboard's arguments.

    Raises:
        InvalidInput: an unknown or repeated parameter, or a value not allowed (naming it).
    """
    query = request.query_params
    for key in query:
        if key not in _QUERY_KEYS:
            raise InvalidInput(key[:40], "is not a parameter of /dashboard", allowed=", ".join(_QUERY_KEYS))
        if len(query.getlist(key)) > 1:
            raise InvalidInput(key, "is given more than once", allowed="one value")
    from .mcp_surface import DASHBOARD_ARGS

    return DASHBOARD_ARGS.parse(dict(query))  # the tool's own parser: the same errors as over MCP


def _error(e: RouterError, redact: Redactor) -> Response:
    from starlette.responses import JSONResponse

    status = 403 if isinstance(e, Forbidden) else 400 if isinstance(e, InvalidInput) else 500
    facts = {k: v for k, v in redact.scrub(e.to_dict()).items() if k not in ("code", "message")}
    body = {"error": e.code, "error_description": redact(str(e)), **facts}
    return JSONResponse(body, status_code=status, headers=_SECURITY_HEADERS)


def routes(engine: Engine, redact: Redactor) -> list[Route]:
    """The two routes, for ``http_app.build_app``."""
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def data_of(request: Request) -> tuple[Any, Response | None]:
        access = request.scope.get(ACCESS_SCOPE_KEY)
        if not isinstance(access, Access):
            return None, None
        try:
            check_mcp(access, f"reading {DASHBOARD_PATH}")
            result = await dashboard_data(engine, access, _args(request))
        except RouterError as e:
            return None, _error(e, redact)
        return redact.scrub(result.to_json()), None

    async def dashboard(request: Request) -> Response:
        data, failed = await data_of(request)
        if failed is not None:
            return failed
        if data is None:  # tokens are configured and none came: the page asks for one
            try:
                args = _args(request)
            except InvalidInput as e:
                return _error(e, redact)
            payload: dict[str, Any] = {"data": None, "needs_token": True, "period": args.period or DEFAULT_PERIOD}
        else:
            payload = {"data": data}
        headers = {**_SECURITY_HEADERS, "content-security-policy": page().csp}
        return Response(embedded(payload), media_type="text/html; charset=utf-8", headers=headers)

    async def data(request: Request) -> Response:
        data, failed = await data_of(request)
        if failed is not None:
            return failed
        if data is None:
            return JSONResponse({"error": "invalid_token", "error_description": "send Authorization: Bearer <token>"},
                                status_code=401, headers={**_SECURITY_HEADERS,
                                                          "www-authenticate": 'Bearer realm="llm-router"'})
        return Response(json.dumps(data), media_type="application/json", headers=_SECURITY_HEADERS)

    return [Route(DASHBOARD_PATH, endpoint=dashboard, methods=["GET"], include_in_schema=False),
            Route(DATA_PATH, endpoint=data, methods=["GET"], include_in_schema=False)]
