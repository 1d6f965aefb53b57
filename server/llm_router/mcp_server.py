"""The MCP surface: six tools and four resources (and a dashboard page for MCP Apps hosts), translated to and from the engine. Nothing else.

Served from the SDK's low-level ``Server``, with every handler ours: the tools' input schemas,
their validation and the shape of their errors are the router's own (``arguments``), and only
what is served is advertised (no prompts capability, since there are no prompts).

Where each part lives:

* ``mcp_surface``: what is offered (instructions, tools and their schemas, resources), as data;
* ``mcp_tools``: ``tools/list`` and ``tools/call``, one function per tool, each beside its listing
  in one table (``TOOLS``);
* ``mcp_resources``: ``resources/list``, the template and ``resources/read``;
* ``mcp_notify``: events (a JSON line on stderr, a span event, a log message for handshake-era
  clients), progress and resource-updated notifications, for clients of both eras
  (``subscriptions/listen``; ``resources/subscribe`` and ``logging/setLevel``);
* ``limit_ask``: asking an admin to raise a limit before a call is refused (both eras);
* ``mcp_calls``: a ``complete`` run in the background, its outcome kept, and what a cancellation does;
* ``mcp_tasks``: the Tasks extension (``io.modelcontextprotocol/tasks``) for ``complete``;
* ``mcp_state``: the state every handler works over, and the wire shape of a result and an error;
* ``sdk_seams``: the little the SDK keeps private that the router needs, each use tested.

This module binds them into one server for one engine.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from mcp.server import Server
from mcp.server.subscriptions import ListenHandler
from mcp_types import CallToolRequestParams, SetLevelRequestParams

from . import __version__
from .engine import Engine
from .icons import SERVER_ICONS
from .limit_ask import Asker, state_boundary
from .mcp_notify import Notifier
from .mcp_resources import list_resources, list_templates, read_resource
from .mcp_state import Observer, ServerState
from .mcp_surface import (
    BUDGETS_URI,
    CACHE_HINTS,
    ERROR_META_KEY,
    INSTRUCTIONS,
    LEDGER_URI,
    PROVIDERS_URI,
    RESOURCE_NOT_FOUND,
)
from .mcp_tasks import install as install_tasks
from .mcp_tools import TOOLS, call_tool, list_tools
from .redaction import Redactor

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


def create_server(
    engine: Engine, *, observer: Observer | None = None, redact: Redactor | None = None, tokens: bool = False,
) -> Server[Any]:
    """An MCP server bound to one engine (the caller owns the engine and closes it). ``tokens``:
    it is served behind bearer tokens (``http_app``), so a request that brings none is refused
    rather than taken for the local user."""
    redact = redact if redact is not None else Redactor.from_environment(engine.settings)
    notifier = Notifier(redact, lambda: engine.budget.clock.today().isoformat())
    budget = engine.settings.budget
    asker = Asker(enabled=budget.ask_to_raise, timeout_s=budget.ask_timeout_s)
    state = ServerState(engine, redact, notifier, tokens=tokens, observer=observer, asker=asker)
    if not logging.getLogger().handlers:
        # What the server logs (a tool that failed unexpectedly, a malformed message) goes to
        # stderr, and through the redacting filter cli installs on the root logger's handlers.
        logging.basicConfig(level=logging.INFO, format="%(message)s")

    server: Server[Any] = Server(
        "llm-router",
        version=__version__,
        instructions=INSTRUCTIONS,
        icons=SERVER_ICONS,
        cache_hints=CACHE_HINTS,
        on_list_tools=partial(list_tools, state),
        on_list_resources=partial(list_resources, state),
        on_list_resource_templates=partial(list_templates, state),
        on_read_resource=partial(read_resource, state),
        on_subscribe_resource=notifier.subscribers.subscribe,
        on_unsubscribe_resource=notifier.subscribers.unsubscribe,
        on_subscriptions_listen=ListenHandler(notifier.bus),
    )
    # A tool's result goes out in its wire form (``mcp_state.Wire``), which a handler registered
    # this way may return; the constructor's on_call_tool is typed for the SDK's result models.
    server.add_request_handler("tools/call", CallToolRequestParams, partial(call_tool, state))
    # The request state a 2026-07-28 client brings back to answer a question (limit_ask): sealed
    # on the way out, verified on the way in, before any handler sees it.
    server.middleware.append(state_boundary(tokens))
    # MCP Apps: the dashboard page, linked from dashboard and cost_report for hosts that negotiate it.
    from mcp.server.apps import EXTENSION_ID

    server.extensions[EXTENSION_ID] = {}
    # The Tasks extension: its methods, its capability, and its interceptor around tools/call.
    install_tasks(server, state, partial(call_tool, state))
    # The constructor's on_set_logging_level warns that logging is deprecated from 2026-07-28 on;
    # handshake-era clients still set their level, so it is served all the same.
    server.add_request_handler("logging/setLevel", SetLevelRequestParams, notifier.subscribers.set_level)
    from .stdio import limit_messages

    limit_messages(server, engine.settings.limits.max_message_bytes)
    return server
