"""The HTTP application served by uvicorn on a loopback port, in a thread of its own (as in
production, the server has its own event loop), and an MCP client that sends a bearer token."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from llm_router.config import HttpConfig
from llm_router.engine import Engine
from llm_router.http_app import Tokens, build_app, uvicorn_config
from llm_router.metrics import Metrics

__all__ = ["mcp_client", "serve"]


@contextmanager
def serve(engine: Engine, *, tokens: Tokens | None = None, http: HttpConfig | None = None,
          redact: Any = None) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) while the app is being served."""
    app = build_app(engine, tokens=tokens or Tokens([]), http=http or HttpConfig(), metrics=Metrics(), redact=redact)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        # Waited for, not assumed: after a fixed 5 s this went on with a server still starting on a
        # busy machine, and the test failed on a refused connection far from the cause.
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the HTTP server did not start")
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start within 60 s")
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@asynccontextmanager
async def mcp_client(base_url: str, token: str | None = None, **kwargs: Any) -> AsyncIterator[Client]:
    """A connected MCP client; the HTTP client it is given is ours to close."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http), **kwargs) as client,
    ):
        yield client
