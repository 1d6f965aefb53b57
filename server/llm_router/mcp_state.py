"""One MCP server's state, and the two shapes every tool call ends in.

``ServerState`` is what every handler (``mcp_tools``, ``mcp_resources``) works over: the engine it
translates to, the redactor everything shown passes through, whether it is served behind bearer
tokens, the observer told about each call, and the notifier. ``ok`` and ``error`` build a tool's
result in its wire form; ``caller_access`` says who is asking.

A tool's failure is a tool error (``isError``) with **no structured content**: schema-checking
clients (the TypeScript SDK, MCP Inspector) validate structured content against the tool's output
schema even on an error, and refused the ``{"error": ...}`` that was sent there, so the user never
saw the message. The text says what happened and what to do, then the error code and request id;
the same facts, machine-readable (code, field, allowed, limit figures, attempts ...), are in the
result's ``_meta`` under ``llm-router/error``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mcp.server.context import ServerRequestContext

from .access import ACCESS_SCOPE_KEY, LOCAL, Access, parse_role
from .mcp_notify import Notifier
from .mcp_surface import ERROR_META_KEY
from .types import Forbidden, RouterError

if TYPE_CHECKING:
    from .engine import Engine
    from .limit_ask import Asker
    from .redaction import Redactor

__all__ = ["Ctx", "Observer", "ServerState", "Wire", "caller_access", "error", "ok"]

Ctx = ServerRequestContext[Any, Any]
Wire = dict[str, Any]
"""A ``CallToolResult`` in its wire form, built as a dict (the SDK validates and shapes it for the
connection's protocol version on the way out; ``resultType`` is what 2026-07-28 requires and the
handshake era drops)."""


class Observer(Protocol):
    """Told about every tool call (``metrics.Metrics`` in HTTP mode)."""

    def tool_done(self, tool: str, seconds: float, result: Any = None, error: RouterError | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class ServerState:
    """What one server's handlers share. ``tokens``: it is served behind bearer tokens
    (``http_app``), so a request that brings none is refused rather than taken for the local user."""

    engine: Engine
    redact: Redactor
    notifier: Notifier
    tokens: bool = False
    observer: Observer | None = None
    asker: Asker | None = None
    """Asks an admin whether to raise a limit before a ``complete`` is refused (``limit_ask``)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid(value: Any) -> Any:
    """``value`` with any string in it made encodable (``stdio_wire.valid_text``). The adapters clean what
    providers send; this is for what slips past them, which would otherwise end an HTTP response
    without an answer (its encoder raises) after the call was billed. Checked on the text, which
    holds the answer and any error message."""
    from .stdio_wire import valid_text

    if isinstance(value, str):
        return valid_text(value)
    return json.loads(valid_text(json.dumps(value, ensure_ascii=False)))


def ok(state: ServerState, structured: dict[str, Any], summary: str) -> Wire:
    """A tool's answer: the summary as text, the facts as structured content (both redacted)."""
    redact = state.redact
    text, facts = redact(summary), redact.scrub(structured)
    if _SURROGATE.search(text):
        text, facts = _valid(text), _valid(facts)
    return {"content": [{"type": "text", "text": text}], "structuredContent": facts, "resultType": "complete"}


def error(state: ServerState, exc: RouterError) -> Wire:
    """The one shape of every tool's every failure (see the module docstring)."""
    redact = state.redact
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


def caller_access(ctx: Ctx, *, tokens: bool = False) -> Access:
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
        if isinstance(access, Access):
            return access
        # Served without http_app's guard (embedded): a token's user, if any, is at most a member.
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

        user = scope.get("user")
        if isinstance(user, AuthenticatedUser):
            scopes = user.access_token.scopes
            role = parse_role(scopes[0]) if scopes else None
            return Access(role or "member", user.access_token.client_id)
    if tokens:
        refusal = Forbidden("", role="none", may="nothing: this server takes requests with a bearer token only")
        refusal.args = ("this server requires a bearer token, and this request came without an HTTP request to carry "
                        "one, so it is refused: send it to the server's /mcp endpoint with Authorization: Bearer <token>",)
        raise refusal
    return LOCAL
