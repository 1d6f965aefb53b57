"""Real server processes, at their most verbose, facing upstreams that echo the key in everything
they send, leave no part of it anywhere a person or a program could read.

``llm-router-mcp serve --log-level debug`` runs as a client starts it (stdio) and as a team runs
it (``--transport http`` behind a bearer token), its four providers pointed at the echoing
upstreams of ``tests/fakes/echoing_upstream`` (every error and malformed-body path of every
adapter), with keys holding the characters regular expressions, URLs, JSON, HTML and Python's
``repr`` quote. Searched for any 8 consecutive characters of any key (and of the bearer token),
as they are and unquoted (``tests/key_leaks``): the process's stderr and stdout (debug records of
httpx and httpcore included, were they let through: httpcore prints raw response headers), every
tool result and resource the client read, ``/metrics`` and ``/healthz``, and the ledger's files
(``.db``, ``-wal``, ``-shm``) and rows once the process has exited.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from .conftest import FAKE_MODELS
from .fakes.echoing_upstream import EchoingUpstream, echoing_upstreams
from .http_server import mcp_client
from .key_leaks import all_leaks, call_every_case, files_under, sqlite_rows
from .test_keys_never_leak import SPECIAL_KEYS

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "Tq3bearer-TOKEN-" + SPECIAL_KEYS["openai"][:24]


def _config(tmp_path: Path, ups: dict[str, EchoingUpstream]) -> Path:
    """A config file naming the four echoing upstreams, each key in a variable of its own."""
    path = tmp_path / "config.toml"
    text = f'[ledger]\npath = "{tmp_path / "ledger.db"}"\n\n[resilience]\nmax_retries = 0\nbreaker_failures = 100\n'
    for kind, up in ups.items():
        text += (f'\n[[providers]]\nname = "{kind}"\nkind = "{kind}"\nbase_url = "{up.base_url}"\n'
                 f'api_key_env = "LEAK_{kind.upper()}_KEY"\nmodels = ["{FAKE_MODELS[kind]}"]\ntimeout_s = 10\n')
    path.write_text(text)
    return path


def _env(ups: dict[str, EchoingUpstream], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH", "LANG", "TMPDIR", "PYTHONPATH")}
    env |= {f"LEAK_{kind.upper()}_KEY": up.api_key for kind, up in ups.items()}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def _searched(tmp_path: Path, outputs: list[tuple[str, str]]) -> list[str]:
    stored = {f"file {n}": data for n, data in files_under(tmp_path).items()}  # ledger, -wal, -shm, journal, logs
    stored |= {f"sqlite table {t}": rows for t, rows in sqlite_rows(tmp_path / "ledger.db").items()}
    assert "file ledger.db" in stored
    requests = stored["sqlite table requests"]
    assert "unreadable usage" in requests and "[redacted]" in requests  # the hostile answers were recorded
    return all_leaks([*stored.items(), *outputs], {**SPECIAL_KEYS, "bearer token": TOKEN})


async def test_a_stdio_server_at_debug_level_leaks_no_part_of_a_key_anywhere(tmp_path: Path) -> None:
    async with echoing_upstreams(SPECIAL_KEYS) as ups:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "llm_router", "serve", "--config", str(_config(tmp_path, ups)),
                                          "--log-level", "debug"],
            env=_env(ups),
        )
        logs: list[str] = []

        async def on_log(params: object) -> None:
            logs.append(repr(params))

        with (tmp_path / "stderr.txt").open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), logging_callback=on_log) as client:
                outputs = await call_every_case(client, ups)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "DEBUG mcp.server" in stderr  # the server did log at debug level...
    assert " httpcore" not in stderr and " httpx" not in stderr  # ...but never httpcore's raw headers nor httpx's URLs
    outputs += [("stderr", stderr), ("client log", "\n".join(logs))]
    found = _searched(tmp_path, outputs)
    assert not found, "\n".join(found)


@contextmanager
def http_server_process(config: Path | None, env: dict[str, str], out: Path,
                        log_level: str = "debug") -> Iterator[tuple[str, list[str]]]:
    """``serve --transport http --port 0 --log-level LEVEL`` (debug unless told), on ``config`` or
    the demo's mock providers; yields its base URL and the stderr lines read so far (all of them
    once the block ends)."""
    where = ["--config", str(config)] if config is not None else ["--demo", "--ledger", str(out.with_name("ledger.db"))]
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_router", "serve", "--transport", "http", "--port", "0", *where,
             "--log-level", log_level],
            env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
        )
    lines: list[str] = []
    url: list[str] = []
    ready = threading.Event()

    def read_stderr() -> None:  # also keeps the pipe drained while the server runs
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if not url and "MCP at " in line:
                url.append(line.split("MCP at ", 1)[1].split(";")[0].removesuffix("/mcp"))
                ready.set()
        ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert ready.wait(60) and url, "the HTTP server did not start:\n" + "".join(lines)
        yield url[0], lines
    finally:
        proc.terminate()
        proc.wait(20)
        reader.join(10)
        assert proc.stderr is not None
        proc.stderr.close()


async def test_an_http_server_at_debug_level_leaks_no_part_of_a_key_anywhere(tmp_path: Path) -> None:
    async with echoing_upstreams(SPECIAL_KEYS) as ups:
        env = _env(ups, LLM_ROUTER_HTTP_TOKENS=f"leak={TOKEN}:admin")  # an admin is shown the most
        with http_server_process(_config(tmp_path, ups), env, tmp_path / "stdout.txt") as (base_url, stderr):
            logs: list[str] = []

            async def on_log(params: object) -> None:
                logs.append(repr(params))

            async with mcp_client(base_url, TOKEN, logging_callback=on_log) as client:
                outputs = await call_every_case(client, ups)
            async with httpx.AsyncClient(timeout=30) as http:
                metrics = await http.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
                health = await http.get(f"{base_url}/healthz")
            assert metrics.status_code == 200 and "llm_router_requests_total" in metrics.text
    text = "".join(stderr)  # all of it: the process has exited and its pipe was read to the end
    assert "DEBUG mcp.server" in text  # the server did log at debug level...
    assert " httpcore" not in text and " httpx" not in text  # ...but never httpcore's raw headers nor httpx's URLs
    outputs += [("stderr", text), ("stdout", (tmp_path / "stdout.txt").read_text()), ("client log", "\n".join(logs)),
                ("/metrics", metrics.text), ("/healthz", health.text)]
    found = _searched(tmp_path, outputs)
    assert not found, "\n".join(found)


async def test_check_probing_upstreams_that_echo_the_key_prints_no_part_of_it(tmp_path: Path) -> None:
    """``check`` asks each server for its models; each answers 404 quoting the request's headers."""
    async with echoing_upstreams(SPECIAL_KEYS) as ups:
        done = await anyio.run_process(
            [sys.executable, "-m", "llm_router", "check", "--config", str(_config(tmp_path, ups))],
            env=_env(ups), check=False,
        )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert out.count("answered HTTP 404") == len(ups) and "[redacted]" in out  # the echoes were shown, redacted
    found = all_leaks([("stdout", out), ("stderr", err)], SPECIAL_KEYS)
    assert not found, "\n".join(found)
