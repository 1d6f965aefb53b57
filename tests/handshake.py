"""What a handshake-era client sends that the SDK's client marks deprecated (logging/setLevel,
resources/subscribe, ping), sent as plain requests: the suite fails on any MCPDeprecationWarning,
and these tests play an older client on purpose."""

from __future__ import annotations

from mcp import Client
from mcp_types import (
    EmptyResult,
    LoggingLevel,
    SetLevelRequest,
    SetLevelRequestParams,
    SubscribeRequest,
    SubscribeRequestParams,
    UnsubscribeRequest,
    UnsubscribeRequestParams,
)

__all__ = ["ping", "set_level", "subscribe", "unsubscribe"]


async def set_level(client: Client, level: LoggingLevel) -> None:
    await client.session.send_request(SetLevelRequest(params=SetLevelRequestParams(level=level)), EmptyResult)


async def subscribe(client: Client, uri: str) -> None:
    await client.session.send_request(SubscribeRequest(params=SubscribeRequestParams(uri=uri)), EmptyResult)


async def unsubscribe(client: Client, uri: str) -> None:
    await client.session.send_request(UnsubscribeRequest(params=UnsubscribeRequestParams(uri=uri)), EmptyResult)


async def ping(client: Client) -> None:
    """Answered after every notification sent before it (one stream, in order)."""
    await client.session.send_ping()
