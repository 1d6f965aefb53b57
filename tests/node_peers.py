"""Clients written by others, on Node: where they are, how to run them, and a server for them.

They are pinned in ``tests/node/package.json`` (with its lockfile) and installed by ``npm ci`` in
``tests/node`` (``.ci/run`` does it), which also brings Node 22 (the ``node`` package) for the ones
that need it. Without them the tests that use them are skipped, saying what to run; in CI
(``CI=true``, or ``LLM_ROUTER_REQUIRE_NODE=1`` as ``.ci/run`` sets) they fail instead, so a broken
install can never pass for a green run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "NODE_DIR", "TOKEN", "demo_server_command", "http_server", "node", "require", "run_node", "server_env",
    "INVOICE_SCHEMA", "PNG_B64", "TOOLS", "image_turn", "tiny_png",
]

NODE_DIR = Path(__file__).resolve().parent / "node"
TOKEN = "peer-clients-ci-token-5f4e3d2c1b0a"
RUN_TIMEOUT_S = 180


def _required() -> bool:
    return os.environ.get("LLM_ROUTER_REQUIRE_NODE") == "1" or os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(why: str) -> None:
    message = f"{why}: run `npm ci` in {NODE_DIR} (.ci/run does)"
    if _required():
        pytest.fail(message + " -- required in CI (CI=true or LLM_ROUTER_REQUIRE_NODE=1)", pytrace=False)
    pytest.skip(message)


def node() -> str:
    """The pinned Node 22 from ``tests/node``, else a ``node`` on PATH."""
    pinned = NODE_DIR / "node_modules" / ".bin" / "node"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("node")
    if found is None:
        _missing("Node.js is not installed")
    return found  # type: ignore[return-value]


def require(*packages: str) -> None:
    """Skip (or, in CI, fail) unless each package is installed under ``tests/node``."""
    for package in packages:
        if not (NODE_DIR / "node_modules" / package / "package.json").exists():
            _missing(f"{package} is not installed")


def server_env(**extra: str) -> dict[str, str]:
    """The environment a peer and the server it starts run with: no keys, no router settings, and
    the pinned Node first on PATH (the Inspector starts ``node`` by name)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLM_ROUTER_", "ANTHROPIC_", "OPENAI_", "GEMINI_", "GOOGLE_", "OLLAMA_"))}
    env["PATH"] = os.pathsep.join([str(Path(node()).parent), env.get("PATH", "")])
    env["NO_COLOR"] = "1"
    return env | extra


def demo_server_command(ledger: Path) -> list[str]:
    return [sys.executable, "-m", "llm_router", "serve", "--demo", "--ledger", str(ledger)]


def run_node(args: list[str], *, stdin: str = "", ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([node(), *args], input=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env=server_env(), cwd=NODE_DIR, check=False)
    if ok:
        assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-4000:]}"
    return proc


def run_json(args: list[str], *, stdin: str = "") -> Any:
    return json.loads(run_node(args, stdin=stdin).stdout)


@contextmanager
def http_server(ledger: Path, *, token: str | None = TOKEN) -> Iterator[str]:
    """``serve --demo --transport http`` as a team would run it, on a port the OS picks; yields
    the MCP URL."""
    # An admin token: the peers set the global limit, which only an admin may do.
    env = server_env(**({"LLM_ROUTER_HTTP_TOKENS": f"ci={token}:admin"} if token else {}))
    proc = subprocess.Popen([*demo_server_command(ledger), "--transport", "http", "--port", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url: list[str] = []
    ready = threading.Event()

    def read_stderr() -> None:  # also keeps the pipe drained while the server runs
        assert proc.stderr is not None
        for line in proc.stderr:
            if not url and "MCP at " in line:
                url.append(line.split("MCP at ", 1)[1].split(";")[0])
                ready.set()
        ready.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert ready.wait(60) and url, "the HTTP server did not start"
        yield url[0]
    finally:
        proc.terminate()
        proc.wait(20)
        reader.join(5)
        assert proc.stderr is not None
        proc.stderr.close()


# What the peers ask in rich calls: a schema, tools and an image, as a caller would send them.

INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "vendor": {
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1}, "country": {"type": "string", "enum": ["FR", "DE", "US"]}},
            "required": ["name", "country"],
            "additionalProperties": False,
        },
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {"item": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1},
                               "unit_price": {"type": "number", "minimum": 0}},
                "required": ["item", "quantity", "unit_price"],
                "additionalProperties": False,
            },
        },
        "currency": {"enum": ["EUR", "USD"]},
        "paid": {"type": "boolean"},
        "notes": {"type": ["string", "null"]},
    },
    "required": ["vendor", "lines", "currency", "paid"],
    "additionalProperties": False,
}
"""A real extraction schema: nested objects, an array of objects, enums, required fields."""

TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "The current weather in a city.",
     "inputSchema": {"type": "object", "properties": {"city": {"type": "string", "minLength": 1},
                                                      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                     "required": ["city", "unit"], "additionalProperties": False}},
    {"name": "get_time", "description": "The local time at a place.",
     "inputSchema": {"type": "object",
                     "properties": {"place": {"type": "object", "properties": {"city": {"type": "string"},
                                                                                "country": {"type": "string"}},
                                              "required": ["city"]},
                                    "format": {"enum": ["12h", "24h"]}},
                     "required": ["place"]}},
]
"""Two tools in MCP's shape (``name``, ``description``, ``inputSchema``)."""


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A real PNG (signature, IHDR, one zlib IDAT of red RGB pixels, IEND; PNG spec, 5.2-5.6)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))  # filter byte 0, then pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG_B64 = base64.b64encode(tiny_png()).decode("ascii")


def image_turn(text: str) -> dict[str, Any]:
    """A user turn of text and the tiny PNG, in MCP's image content shape."""
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image", "data": PNG_B64, "mimeType": "image/png"}]}
