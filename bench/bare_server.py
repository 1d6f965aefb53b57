"""The floor for the MCP comparison: a bare MCPServer with one tool that posts straight upstream.

    BENCH_UPSTREAM_URL=http://127.0.0.1:PORT/v1 python bench/bare_server.py

Speaks MCP over stdio. No routing, no budget, no ledger: one pooled ``httpx.AsyncClient``, the
same JSON body the router sends, the answer's text returned. By default it serves with the SDK's
own stdio transport, as any MCPServer does; with ``BENCH_BARE_STDIO=router`` it serves with the
router's (``llm_router.stdio``), so the difference to the router is the router's own work alone.
"""

from __future__ import annotations

import logging
import os

import anyio
import httpx
from mcp.server.mcpserver import MCPServer

URL = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8000/v1")
MODEL = os.environ.get("BENCH_MODEL", "bench-model")


async def main() -> None:
    async with httpx.AsyncClient(base_url=URL, timeout=30) as http:
        server = MCPServer("bare")
        # MCPServer sets up INFO logging; httpx would then write a line per request to stderr,
        # a cost the router does not pay (it quiets httpx the same way).
        logging.getLogger("httpx").setLevel(logging.WARNING)

        @server.tool(description="Post the prompt to the upstream and return the answer's text.")
        async def complete(prompt: str, max_tokens: int = 256) -> str:
            r = await http.post(
                "/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                },
            )
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"]

        if os.environ.get("BENCH_BARE_STDIO") == "router":
            from llm_router.stdio import serve_stdio

            await serve_stdio(server)
        else:
            await server.run_stdio_async()


if __name__ == "__main__":
    anyio.run(main)
