"""The three things the router needs from the MCP SDK (2.3) that it keeps private, and only here.

Everything else the MCP surface does goes through the SDK's public API. What is left has no
public way yet; each use below says why it is needed, and ``tests/test_sdk_seams.py`` holds one
test per use that fails loudly (naming the attribute) if an SDK release moves it, rather than
letting a subscription, a log level or a progress stream go quietly missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.server import Server
    from mcp.server.connection import Connection
    from mcp.server.mcpserver import MCPServer
    from mcp.server.session import ServerSession

__all__ = ["connection_of", "lowlevel_server_of", "progress_callback_given"]

_DISPATCH_WRAPPERS = 4
"""How many of the SDK's dispatch-context wrappers are looked through for a progress callback."""


def connection_of(session: ServerSession) -> Connection:
    """The client connection behind a request's session.

    Why: ``ServerSession`` is a per-request proxy, while a handshake-era ``resources/subscribe`` and
    ``logging/setLevel`` belong to the connection: the subscriber to notify later (from another
    request), and where its log level is kept (``Connection.state``). The SDK's ``Context`` has a
    public ``connection``, but the runner hands handlers a ``ServerRequestContext``, which has none.
    """
    connection: Connection = session._connection
    return connection


def progress_callback_given(session: ServerSession) -> bool:
    """Whether an in-process caller (embedding, tests) passed a progress callback.

    Why: a JSON-RPC request shows that it wants progress by a token in its ``_meta``, which the
    router reads publicly; the SDK's in-process transport passes a callback instead, visible only on
    its private dispatch context (possibly behind the SDK's own wrappers). Streaming from the
    provider and reporting it costs a little, so it is done only when asked for.
    """
    outbound: Any = getattr(session, "_request_outbound", None)
    for _ in range(_DISPATCH_WRAPPERS):
        if outbound is None:
            break
        if getattr(outbound, "_on_progress", None) is not None or getattr(outbound, "_progress_token", None) is not None:
            return True
        outbound = getattr(outbound, "_inner", None)
    return False


def lowlevel_server_of(server: MCPServer) -> Server[Any]:
    """The low-level ``Server`` inside an ``MCPServer``.

    Why: ``stdio.serve_stdio`` serves a low-level server on the router's own transport, and the
    benchmark's bare floor (an ``MCPServer``) is served on it too, so that the comparison measures
    the router's own work alone. ``MCPServer`` runs only on the SDK's transports publicly.
    """
    low: Server[Any] = server._lowlevel_server
    return low
