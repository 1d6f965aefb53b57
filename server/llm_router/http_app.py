"""``serve --transport http``: the MCP endpoint at ``/mcp`` behind bearer tokens and Host/Origin
checks, ``/metrics`` for Prometheus, the spend dashboard at ``/dashboard`` (``dashboard_http``),
and ``/healthz``.

Imported only in HTTP mode, so the stdio path never loads Starlette, uvicorn or prometheus-client.

Who may call: every request to ``/mcp`` and ``/metrics`` must carry ``Authorization: Bearer
<token>`` for one of the tokens in ``$LLM_ROUTER_HTTP_TOKENS`` (``tag=token[:role],...``) or in the
file named by ``$LLM_ROUTER_HTTP_TOKENS_FILE`` (one a line). Tokens are kept only as SHA-256 digests
and compared in constant time. The token's tag is who the call is billed to (see ``mcp_server``);
its role (``member`` by default, ``admin``, ``metrics``: see ``access``) what it may do: a
``metrics`` token gets ``403`` at ``/mcp``, a ``member`` token at ``/metrics``. Without tokens the
server listens on loopback only, and its one local user is an admin.

Where from: the ``Host`` header must be ``localhost``, an IP address, or a name listed in ``[http]
allowed_hosts``. A DNS-rebinding attack reaches the server under the attacker's own host name, so it
fails here; IP literals cannot be rebound. A browser's ``Origin`` must be loopback, the server's own,
or listed in ``[http] allowed_origins``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .access import ACCESS_SCOPE_KEY, LOCAL, ROLES, Access, Role, close_role, parse_role
from .types import ConfigError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .config import HttpConfig
    from .engine import Engine
    from .metrics import Metrics

__all__ = [
    "MIN_TOKEN_CHARS",
    "TOKENS_ENV",
    "TOKENS_FILE_ENV",
    "Caller",
    "HostPolicy",
    "Tokens",
    "build_app",
    "check_bind",
    "is_loopback",
    "load_tokens",
    "parse_tokens",
    "serve_http",
    "uvicorn_config",
]

TOKENS_ENV = "LLM_ROUTER_HTTP_TOKENS"
TOKENS_FILE_ENV = "LLM_ROUTER_HTTP_TOKENS_FILE"
MIN_TOKEN_CHARS = 16
MCP_PATH = "/mcp"
DASHBOARD_PATHS = ("/dashboard", "/dashboard/data")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:/+-]{0,127}$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII without spaces: what an HTTP header carries intact
_ROLE_WORD = re.compile(r"^[A-Za-z]*$")
"""What follows a token's last ``:`` when it is meant as a role. A token may itself hold ``:``
(``_TOKEN`` allows it), so the text after the last one is a role only when it is letters alone;
anything else there is part of the token."""
_MAKE_ONE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


# -- tokens ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request came from: the token's tag, which token (by position, never its value), and
    the token's role."""

    tag: str
    token_id: str
    role: Role = "member"

    @property
    def access(self) -> Access:
        return Access(self.role, self.tag)


class Tokens:
    """The accepted bearer tokens, held as SHA-256 digests. Entries are ``(tag, token)`` or
    ``(tag, token, role)``; the role is ``member`` when not given."""

    def __init__(self, entries: Sequence[tuple[str, str] | tuple[str, str, Role]]) -> None:
        self._entries = [
            (hashlib.sha256(e[1].encode()).digest(), Caller(e[0], f"token {i}", e[2] if len(e) == 3 else "member"))
            for i, e in enumerate(entries, 1)
        ]
        # Kept only so that they can be scrubbed from anything shown; never logged or compared as text.
        self._values = tuple(e[1] for e in entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tags(self) -> list[str]:
        return sorted({caller.tag for _, caller in self._entries})

    @property
    def values(self) -> tuple[str, ...]:
        return self._values

    def roles(self) -> dict[str, int]:
        """How many tokens have each role (for what the server says at start and ``check``)."""
        counts = {role: 0 for role in ROLES}
        for _, caller in self._entries:
            counts[caller.role] += 1
        return {role: n for role, n in counts.items() if n}

    def match(self, presented: str | None) -> Caller | None:
        """The caller a presented token belongs to, or None.

        Digests are compared with ``hmac.compare_digest`` against every entry, without stopping at a
        match, so neither the time taken nor the order of entries tells anything about a token.
        """
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode(errors="surrogateescape")).digest()
        found = None
        for expected, caller in self._entries:
            if hmac.compare_digest(digest, expected):
                found = caller
        return found


def _role_of(value: str, where: str, source: str) -> tuple[str, Role]:
    """Split ``token[:role]``: the role is what follows the last ``:`` when that is letters alone.

    Raises:
        ConfigError: an empty or unknown role (with a "did you mean"); never quoting the token.
    """
    token, colon, word = value.rpartition(":")
    if not colon or not _ROLE_WORD.match(word.strip()):
        return value, "member"
    role = parse_role(word.strip())
    if role is None:
        close = close_role(word.strip()) if word.strip() else None
        hint = f" (did you mean {close!r}?)" if close else ""
        what = "names no role after its last ':'" if not word.strip() else "names an unknown role after its last ':'"
        raise ConfigError(
            f"{where} {what}{hint}; a role is one of {', '.join(ROLES)} (tag=token:role). A token may contain ':', "
            "but not end with ':' and letters alone",
            file=source,
        )
    return token.strip(), role


def parse_tokens(text: str, source: str) -> list[tuple[str, str, Role]]:
    """``tag=token[:role]`` entries separated by commas or new lines (``#`` starts a comment line).

    Raises:
        ConfigError: naming the source and the entry's position; never quoting a token.
    """
    entries: list[tuple[str, str, Role]] = []
    seen: set[str] = set()
    pieces = [p.strip() for line in text.splitlines() if not line.strip().startswith("#") for p in line.split(",")]
    for n, piece in enumerate((p for p in pieces if p), 1):
        tag, sep, value = (s.strip() for s in piece.partition("="))
        where = f"entry {n}"
        if not sep or not value:
            raise ConfigError(f"{where} is not tag=token[:role]", file=source)
        if not _TAG.match(tag):
            raise ConfigError(
                f"{where}: the tag {tag[:40]!r} must be 1-128 letters, digits or _ . @ : / + - "
                "(starting with a letter or digit)",
                file=source,
            )
        token, role = _role_of(value, f"{where} (tag {tag!r})", source)
        if len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token):
            raise ConfigError(
                f"{where} (tag {tag!r}): a token must be at least {MIN_TOKEN_CHARS} printable characters without "
                f"spaces or commas; make one with {_MAKE_ONE}",
                file=source,
            )
        if token in seen:
            raise ConfigError(f"{where} (tag {tag!r}) repeats an earlier entry's token: give each one its own", file=source)
        seen.add(token)
        entries.append((tag, token, role))
    return entries


def load_tokens(env: Mapping[str, str] = os.environ) -> Tokens:
    """The tokens from ``$LLM_ROUTER_HTTP_TOKENS`` or the file named by ``$LLM_ROUTER_HTTP_TOKENS_FILE``.

    Raises:
        ConfigError: both are set, the file cannot be read, or an entry is malformed.
    """
    inline, path = env.get(TOKENS_ENV), env.get(TOKENS_FILE_ENV)
    if inline and path:
        raise ConfigError(f"set {TOKENS_ENV} or {TOKENS_FILE_ENV}, not both")
    if path:
        file = Path(path).expanduser()
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the tokens file ({e.strerror or e})", file=str(file)) from None
        entries = parse_tokens(text, str(file))
        if not entries:
            raise ConfigError("the tokens file lists no tag=token entry", file=str(file))
        return Tokens(entries)
    return Tokens(parse_tokens(inline or "", f"${TOKENS_ENV}"))


# -- where requests may come from -----------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True


def _hostname(host_header: str) -> str | None:
    try:
        parsed = urlsplit("//" + host_header)
        parsed.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parsed.path or parsed.query or parsed.fragment or parsed.username is not None:
        return None
    return parsed.hostname


class HostPolicy:
    """Which ``Host`` and ``Origin`` headers are accepted (see the module docstring)."""

    def __init__(self, allowed_hosts: Sequence[str] = (), allowed_origins: Sequence[str] = ()) -> None:
        self.names = {"localhost", *(h.lower() for h in allowed_hosts)}
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}

    def host_ok(self, host_header: str | None) -> bool:
        name = _hostname(host_header) if host_header else None
        return name is not None and (name in self.names or _is_ip(name))

    def origin_ok(self, origin: str | None, host_header: str | None) -> bool:
        if origin is None:
            return True  # not a browser: nothing to forge
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        parsed = urlsplit(origin)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path:
            return False  # "null" (sandboxed frames, file://) and anything odd
        if is_loopback(parsed.hostname):
            return True
        # The server's own origin; its Host has already passed host_ok, so it cannot be a rebound name.
        return host_header is not None and parsed.netloc == host_header.lower()


def check_bind(host: str, tokens: Tokens) -> None:
    """Refuse to listen beyond loopback without tokens: anyone who can reach the port could spend.

    Raises:
        ConfigError: saying which variable to set.
    """
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without bearer tokens: anyone who can reach it could spend your "
            f"budget. Set {TOKENS_ENV}=tag=token[,tag=token...] (or {TOKENS_FILE_ENV}=PATH), or bind to "
            "127.0.0.1"
        )


# -- the ASGI application -------------------------------------------------------------------------


async def _respond(send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": data})


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            text: str = value.decode("latin-1")
            return text
    return None


class _Guard:
    """Every HTTP request passes here first: /healthz answers at once; /mcp and /metrics need an
    allowed Host and Origin and, when tokens are configured, a valid token whose role may use
    that path (``403`` otherwise); nothing else exists."""

    def __init__(self, app: ASGIApp, tokens: Tokens, policy: HostPolicy) -> None:
        self.app = app
        self.tokens = tokens
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        path = scope["path"]
        if path == "/healthz":
            if scope["method"] not in ("GET", "HEAD"):
                await _respond(send, 405, {"error": "method not allowed"}, [(b"allow", b"GET, HEAD")])
            else:
                await _respond(send, 200, {"status": "ok"})
            return
        if path.rstrip("/") not in (MCP_PATH, "/metrics", *DASHBOARD_PATHS):
            await _respond(send, 404, {"error": "not found"})
            return
        host = _header(scope, b"host")
        if not self.policy.host_ok(host):
            await _respond(send, 421, {"error": "misdirected_request",
                                       "error_description": "this Host is not served here; an operator can add it "
                                       "to [http] allowed_hosts"})
            return
        if not self.policy.origin_ok(_header(scope, b"origin"), host):
            await _respond(send, 403, {"error": "forbidden",
                                       "error_description": "requests from this Origin are refused; an operator can "
                                       "add it to [http] allowed_origins"})
            return
        access = LOCAL  # without tokens: loopback only, one local user
        if self.tokens:
            presented = _bearer(scope)
            if presented is None and path.rstrip("/") == DASHBOARD_PATHS[0]:
                # A person opening the page: it comes without data, and asks for the token
                # (dashboard_http), which then goes with each fetch of the data.
                await self.app(scope, receive, send)
                return
            caller = self.tokens.match(presented)
            if caller is None:
                why = "the bearer token is not valid" if presented else "send Authorization: Bearer <token>"
                await _respond(send, 401, {"error": "invalid_token", "error_description": why},
                               [(b"www-authenticate", b'Bearer realm="llm-router"')])
                return
            access = caller.access
            refusal = _role_refusal(access, path.rstrip("/"))
            if refusal is not None:
                await _respond(send, 403, {"error": "insufficient_scope", "error_description": refusal},
                               [(b"www-authenticate", b'Bearer realm="llm-router", error="insufficient_scope"')])
                return
            scope["user"], scope["auth"] = _authenticated(caller)
        scope[ACCESS_SCOPE_KEY] = access
        if scope["method"] == "GET" and _header(scope, b"last-event-id") is not None:
            # No event history is kept (and no event ids are sent), so there is nothing to resume
            # from; the SDK would end such a request without any response (a 500).
            await _respond(send, 400, {"error": "resumption_unsupported",
                                       "error_description": "this server keeps no event history, so a stream "
                                       "cannot be resumed: open a new one without Last-Event-ID"})
            return
        await self.app(scope, receive, send)


def _role_refusal(access: Access, path: str) -> str | None:
    """Why this role may not use this path, or None when it may."""
    if path in DASHBOARD_PATHS and access.role == "metrics":
        return (f"the token of tag {access.tag!r} has the role metrics: it may only read /metrics (GET); the "
                "dashboard needs a member or admin token")
    if path == MCP_PATH and access.role == "metrics":
        return (f"the token of tag {access.tag!r} has the role metrics: it may only read /metrics (GET); MCP needs a "
                "member or admin token")
    if path == "/metrics" and access.role == "member":
        return (f"the token of tag {access.tag!r} has the role member: /metrics shows every tag's spend by model, so "
                "it is for metrics and admin tokens (tag=token:metrics)")
    return None


def _authenticated(caller: Caller) -> tuple[Any, Any]:
    """The SDK's own user type: it binds each MCP session to the credential that opened it, and
    ``mcp_server`` reads the tag back from it."""
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.auth.provider import AccessToken
    from starlette.authentication import AuthCredentials

    token = AccessToken(token="", client_id=caller.tag, scopes=[caller.role], subject=caller.token_id)
    return AuthenticatedUser(token), AuthCredentials([])


def build_app(engine: Engine, *, tokens: Tokens, http: HttpConfig, metrics: Metrics | None = None,
              redact: Any = None) -> ASGIApp:
    """The whole HTTP application: the MCP server for ``engine`` behind the guard."""
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from .mcp_server import create_server

    server = create_server(engine, observer=metrics, redact=redact, tokens=bool(tokens))
    routes: list[Route] = []
    if metrics is not None:
        # The tags whose limits an admin's scrape shows: the tokens' and the config's, a bounded set
        # (a limit set_budget made for any other tag adds no series).
        known_tags = frozenset(tokens.tags) | frozenset(engine.settings.budget.tags)

        async def _metrics(request: Request) -> Response:
            admin = request.scope.get(ACCESS_SCOPE_KEY, LOCAL).role == "admin"
            await metrics.refresh(engine, tags=known_tags if admin else frozenset())
            body, content_type = metrics.render()  # no await since refresh: no other scrape comes between
            return Response(body, media_type=content_type)

        routes.append(Route("/metrics", endpoint=_metrics, methods=["GET"], include_in_schema=False))
    from .dashboard_http import routes as dashboard_routes
    from .redaction import Redactor

    routes += dashboard_routes(engine, redact if redact is not None else Redactor.from_environment(engine.settings))

    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        # Host and Origin are checked by the guard, under the rules above, for /metrics as well.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        custom_starlette_routes=routes,
        max_request_body_size=engine.settings.limits.max_message_bytes,
    )
    return _Guard(app, tokens, HostPolicy(http.allowed_hosts, http.allowed_origins))


def uvicorn_config(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> Any:
    import uvicorn

    # No Server header: what runs here is nobody else's business.
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False, lifespan="on",
                          timeout_graceful_shutdown=5)


async def serve_http(engine: Engine, *, host: str, port: int, tokens: Tokens, http: HttpConfig,
                     redact: Any = None, sock: socket.socket | None = None, log_level: str = "info") -> None:
    """Serve until cancelled. ``check_bind`` must have passed. uvicorn's own records (startup,
    one per request) follow ``log_level``, as ``serve --log-level`` gives it."""
    import uvicorn

    from .metrics import Metrics

    app = build_app(engine, tokens=tokens, http=http, metrics=Metrics(), redact=redact)
    config = uvicorn_config(app, host=host, port=port, log_level=log_level)
    if redact is not None:  # after uvicorn has set up its loggers
        for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error"):
            redact.install(logging.getLogger(name))
    if sock is None:
        sock = config.bind_socket()
    # Listening before the address is printed: a client that connects as soon as it reads it
    # would otherwise be refused (a bound socket refuses until uvicorn calls listen() itself).
    sock.listen(config.backlog)
    port = sock.getsockname()[1]  # the one the OS chose, for --port 0
    where = f"[{host}]" if ":" in host else host
    roles = ", ".join(f"{n} {role}" for role, n in tokens.roles().items())
    who = (f"{len(tokens)} bearer token(s) ({roles}), billed to tag(s) {', '.join(tokens.tags)}" if tokens
           else f"no bearer tokens (loopback only, one local user with every right; set {TOKENS_ENV} to require them)")
    print(f"llm-router-mcp: MCP at http://{where}:{port}{MCP_PATH}; {who}; /metrics, /healthz", file=sys.stderr,
          flush=True)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            # Closed here: uvicorn then raises again the signal that stopped it, which ends the
            # process before the caller's Engine.aclose. Calls their clients gave up on (uvicorn's
            # graceful shutdown cancels the requests still open) finish or are cancelled here,
            # each recording its row, and the spans are flushed.
            await engine.aclose()

    await Server(config).serve(sockets=[sock])
