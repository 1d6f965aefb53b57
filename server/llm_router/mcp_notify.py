"""What the MCP server tells a client besides a tool's result: events (fallbacks, budget warnings
and refusals), progress, and resource-updated notifications for subscribers (they carry only the
URI: what a subscriber then reads is filtered like any read).

Two eras of client are served. Clients of 2026-07-28 and later use ``subscriptions/listen`` (the
SDK's ``ListenHandler``, fed from ``ListeningBus``); MCP logging is deprecated for them, so they
get no log messages: an event goes to stderr as one JSON line and to the request's span, which is
where 2026-07-28 observability lives. Handshake-era clients (Claude Desktop, the Inspector, ...)
use ``resources/subscribe`` and ``logging/setLevel``, served by ``HandshakeSubscribers``, and get
each event as a log message too, sent as a plain notification (the SDK's ``send_log_message``
warns of the deprecation on every call, whatever the session's protocol).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated, ServerEvent
from mcp_types import (
    EmptyResult,
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    SetLevelRequestParams,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from opentelemetry.trace import get_current_span

from .mcp_surface import BUDGETS_URI, LEDGER_URI, RESOURCE_NOT_FOUND, SUBSCRIBABLE
from .sdk_seams import connection_of, progress_callback_given

if TYPE_CHECKING:
    from mcp.server.connection import Connection
    from mcp.server.context import ServerRequestContext
    from mcp.server.session import ServerSession

    from .redaction import Redactor

__all__ = ["EVENTS_LOGGER", "LOG_LEVELS", "HandshakeSubscribers", "ListeningBus", "Notifier", "wants_progress"]

LOG_LEVELS: tuple[LoggingLevel, ...] = (
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency",
)

EVENTS_LOGGER = "llm_router.events"
"""The logger of events: each record's message is one JSON object (``cli`` prints it bare)."""

_events = logging.getLogger(EVENTS_LOGGER)
_PY_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR, "critical": logging.CRITICAL, "alert": logging.CRITICAL, "emergency": logging.CRITICAL}


class ListeningBus(InMemorySubscriptionBus):
    """The SDK's ``InMemorySubscriptionBus`` (it feeds the ``subscriptions/listen`` streams and
    delivers as it does), that also says whether any stream is open: ``listening``.

    Why: every publish ends with a trip round the event loop, listeners or not (three per call, a
    tenth of a millisecond), so when nobody listens the router publishes nothing. The SDK's bus
    cannot say whether anyone listens without reaching into its private ``_listeners``: here the
    open subscriptions are counted through its public ``subscribe`` and the unsubscribe it returns."""

    def __init__(self) -> None:
        super().__init__()
        self._open: set[object] = set()

    @property
    def listening(self) -> bool:
        return bool(self._open)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        sdk_unsubscribe = super().subscribe(listener)
        token = object()  # one per subscription: the same listener may subscribe twice
        self._open.add(token)

        def unsubscribe() -> None:  # idempotent, as the SDK's is
            self._open.discard(token)
            sdk_unsubscribe()

        return unsubscribe


class HandshakeSubscribers:
    """``resources/subscribe`` for handshake-era clients, and their ``logging/setLevel``.
    Connections are held weakly: one that ends without unsubscribing is simply forgotten."""

    LEVEL_KEY = "llm_router.log_level"

    def __init__(self) -> None:
        self.by_uri: dict[str, weakref.WeakSet[Connection]] = {}

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        if not SUBSCRIBABLE.match(params.uri):
            raise MCPError(RESOURCE_NOT_FOUND, f"no such resource to subscribe to: {params.uri[:200]!r}",
                           data={"uri": params.uri[:200]})
        self.by_uri.setdefault(params.uri, weakref.WeakSet()).add(connection_of(ctx.session))
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        subscribers = self.by_uri.get(params.uri)
        if subscribers is not None:
            subscribers.discard(connection_of(ctx.session))
        return EmptyResult()

    async def set_level(self, ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
        connection_of(ctx.session).state[self.LEVEL_KEY] = LOG_LEVELS.index(params.level)
        return EmptyResult()

    def level(self, session: ServerSession) -> int:
        """The lowest level this session's connection asked for (an index into ``LOG_LEVELS``)."""
        level: int = connection_of(session).state.get(self.LEVEL_KEY, 0)
        return level

    async def updated(self, uri: str) -> None:
        for connection in list(self.by_uri.get(uri, ())):
            try:
                await connection.send_resource_updated(uri)
            except Exception:  # noqa: BLE001 - whatever a gone client raises, a notice must not fail the call
                self.by_uri[uri].discard(connection)


class _Line:
    """An event as one line of JSON, made only if a handler formats the record."""

    __slots__ = ("event", "level", "payload")

    def __init__(self, event: str, level: str, payload: dict[str, Any]) -> None:
        self.event, self.level, self.payload = event, level, payload

    def __str__(self) -> str:
        return json.dumps({"event": self.event, "level": self.level, **self.payload}, ensure_ascii=False,
                          separators=(",", ":"), default=str)


def wants_progress(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether the caller asked for progress: a JSON-RPC request carries a progress token; the
    in-process transport hands the dispatcher a callback instead."""
    meta = ctx.meta or {}
    if meta.get("progress_token") is not None or meta.get("progressToken") is not None:
        return True
    return progress_callback_given(ctx.session)


@dataclass(slots=True)
class Notifier:
    """Everything a server sends besides results, for one server: its subscribers of both eras,
    and the redactor every payload passes through. ``today`` is the budget clock's date (for the
    ledger's page of today)."""

    redact: Redactor
    today: Callable[[], str]
    bus: ListeningBus = field(default_factory=ListeningBus)
    subscribers: HandshakeSubscribers = field(default_factory=HandshakeSubscribers)

    async def log(self, ctx: ServerRequestContext[Any, Any], level: LoggingLevel, event: str, message: str, *,
                  facts: dict[str, str | int | bool] | None = None, **data: Any) -> None:
        """An event (``event`` names its kind: ``fallback``, ``budget_warning``, ...): one JSON line
        on stderr, an event of the request's span, and for a handshake-era session a log message
        (dropped when it asked for a higher level). The span's event carries only ``facts`` (plain
        values of the router's own: codes, ids, tiers), never the message, which may quote an upstream."""
        facts = facts or {}
        payload = self.redact.scrub({"message": message, **facts, **data})
        _events.log(_PY_LEVELS[level], "%s", _Line(event, level, payload))
        span = get_current_span()  # the request's (a no-op span when telemetry is off)
        if span.is_recording():
            span.add_event(f"llm_router.{event}",
                           {"llm_router.level": level, **{f"llm_router.{k}": v for k, v in self.redact.scrub(facts).items()}})
        if (ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS
                or LOG_LEVELS.index(level) < self.subscribers.level(ctx.session)):
            return
        notice = LoggingMessageNotification(params=LoggingMessageNotificationParams(level=level, data=payload, logger="llm-router"))
        await ctx.session.send_notification(notice, related_request_id=ctx.request_id)

    async def updated(self, *uris: str) -> None:
        """Tell whoever subscribed to these resources that they changed."""
        if self.bus.listening:
            for uri in uris:
                await self.bus.publish(ResourceUpdated(uri=uri))
        if self.subscribers.by_uri:
            for uri in uris:
                await self.subscribers.updated(uri)

    async def ledger_written(self) -> None:
        """The ledger, today's page of it and the budgets changed (worked out only if anyone listens)."""
        if self.subscribers.by_uri or self.bus.listening:
            await self.updated(LEDGER_URI, f"{LEDGER_URI}/{self.today()}", BUDGETS_URI)
