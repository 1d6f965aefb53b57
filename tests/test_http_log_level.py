"""``serve --transport http --log-level`` sets uvicorn's level too: its startup and per-request
records are info records, so ``warning`` keeps stderr to the server's own line and real trouble."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from .test_keys_never_leak_processes import http_server_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.mark.parametrize("log_level", ["warning", "info"])
async def test_an_http_server_logs_uvicorns_records_at_the_level_serve_is_given(tmp_path: Path, log_level: str) -> None:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH", "LANG", "TMPDIR", "PYTHONPATH")}
    with http_server_process(None, env | {"PYTHONUNBUFFERED": "1"}, tmp_path / "stdout.txt", log_level) as (url, lines):
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await http.get(f"{url}/healthz")).status_code == 200
    stderr = "".join(lines)
    printed = stderr + (tmp_path / "stdout.txt").read_text()  # uvicorn's access records go to stdout
    assert "MCP at http://127.0.0.1:" in stderr  # the server's own line, at every level
    uvicorn_info = ["Application startup complete", "GET /healthz HTTP/1.1"]  # uvicorn.error, uvicorn.access
    assert [r for r in uvicorn_info if r in printed] == (uvicorn_info if log_level == "info" else []), printed
