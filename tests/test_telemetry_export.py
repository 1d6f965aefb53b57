"""Real server processes export their spans over OTLP/HTTP to a collector on 127.0.0.1 (written
here: it decodes ``/v1/traces`` with ``opentelemetry-proto``), flushed when the server ends (stdio
closed, HTTP shut down); print each event on stderr as one JSON object a line; and, with clients
of both protocol eras, never an ``MCPDeprecationWarning``. A collector that is down costs the
calls nothing and is said once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from opentelemetry import context
from opentelemetry.propagate import extract
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .conftest import FAKE_MODELS
from .fakes import refused_url
from .http_server import mcp_client
from .test_keys_never_leak_processes import http_server_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
CHAIN = ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]
PROMPT = "a prompt only the providers may see, PLUGH-2093"


@dataclass
class Received:
    """One span as the collector decoded it."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    service: str


@dataclass
class Collector:
    url: str
    spans: list[Received] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def named(self, name: str) -> list[Received]:
        return [s for s in self.spans if s.name == name]


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which)


@contextmanager
def collector() -> Iterator[Collector]:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps what it is sent."""
    box: list[Collector] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            got = box[0]
            with got.arrived:
                got.posts.append(self.path)
                for rs in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            got.spans.append(Received(
                                s.name, s.kind, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                {a.key: _value(a.value) for a in s.attributes}, resource.get("service.name", "")))
                got.arrived.notify_all()
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Collector(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _config(tmp_path: Path, fakes: dict[str, Any], extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    text = f'[ledger]\npath = "{tmp_path / "ledger.db"}"\n\n[resilience]\nmax_retries = 0\n{extra}'
    for kind, fake in fakes.items():
        text += (f'\n[[providers]]\nname = "{kind}"\nkind = "{kind}"\nbase_url = "{fake.base_url}"\n'
                 f'models = ["{FAKE_MODELS[kind]}"]\ntimeout_s = 10\n')
        if fake.api_key:
            text += f'api_key_env = "TEST_{kind.upper()}_KEY"\n'
    path.write_text(text)
    return path


def _env(fakes: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH", "LANG", "TMPDIR", "PYTHONPATH")}
    env |= {f"TEST_{kind.upper()}_KEY": fake.api_key for kind, fake in fakes.items() if fake.api_key}
    # Exported only when the server ends: what arrives was flushed on shutdown.
    return env | {"PYTHONUNBUFFERED": "1", "OTEL_BSP_SCHEDULE_DELAY": "600000"} | extra


def _events(stderr: str) -> list[dict[str, Any]]:
    """The event lines of stderr, each parsed whole: one JSON object a line, nothing around it."""
    out = []
    for line in stderr.splitlines():
        if '"event"' in line:
            event = json.loads(line)  # the whole line, or it fails
            assert isinstance(event, dict), line
            out.append(event)
    return out


async def _fallback(client: Client, fakes: dict[str, Any]) -> dict[str, Any]:
    fakes["anthropic"].fault("status", status=429, retry_after=600)
    # In the client's context too: a client SDK that traces (this process's, once another test made
    # a tracer provider its own) injects its own span's context into _meta, a child of this one.
    token = context.attach(extract({"traceparent": TRACEPARENT}))
    try:
        done = await client.call_tool("complete", {"prompt": PROMPT, "model": CHAIN}, meta={"traceparent": TRACEPARENT})
    finally:
        context.detach(token)
    assert not done.is_error, done
    return dict(done.structured_content or {})


def _check_spans(got: Collector, request_id: str, service: str) -> None:
    assert set(got.posts) == {"/v1/traces"}
    [tool] = got.named("tools/call complete")
    [chat] = got.named("chat")
    tries = got.named("chat claude-haiku-4-5") + got.named("chat gpt-4o-mini")
    assert tool.trace_id == TRACE_ID and tool.parent_id  # the client's span, or its own (the traceparent's)
    assert chat.parent_id == tool.span_id and chat.attributes["llm_router.request_id"] == request_id
    assert chat.attributes["gen_ai.provider.name"] == "openai" and isinstance(chat.attributes["llm_router.cost_usd"], str)
    assert [t.attributes["llm_router.attempt.outcome"] for t in tries] == ["error", "ok"]
    assert all(t.parent_id == chat.span_id and t.trace_id == TRACE_ID and t.kind == 3 for t in tries)  # 3: CLIENT
    assert {s.service for s in got.spans} == {service}
    text = json.dumps([s.attributes for s in got.spans])
    assert "PLUGH" not in text and "test-anthropic-key" not in text and "test-openai-key" not in text


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_stdio_server_flushes_its_spans_to_the_collector_when_its_client_leaves(
    tmp_path: Path, fakes: dict[str, Any], mode: str,
) -> None:
    with collector() as got:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "llm_router", "serve", "--config", str(_config(tmp_path, fakes))],
            env=_env(fakes, OTEL_EXPORTER_OTLP_ENDPOINT=got.url, OTEL_SERVICE_NAME="router-under-test"),
        )
        logs: list[Any] = []

        async def on_log(params: Any) -> None:
            logs.append(params)

        with (tmp_path / "stderr.txt").open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), mode=mode, logging_callback=on_log) as client:
                result = await _fallback(client, fakes)
                assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
                with got.arrived:
                    assert got.spans == []  # nothing sent yet: the batch waits
        # The client closed stdin; the server ended and flushed on the way out.
        stderr = (tmp_path / "stderr.txt").read_text()
        with got.arrived:
            _check_spans(got, result["request_id"], "router-under-test")
    assert "Deprecation" not in stderr and "deprecated" not in stderr, stderr
    [event] = _events(stderr)
    assert event["event"] == "fallback" and event["request_id"] == result["request_id"]
    assert [getattr(p, "level", None) for p in logs] == (["warning"] if mode == "legacy" else [])


async def test_an_http_server_flushes_on_shutdown_and_serves_both_eras_without_deprecation_warnings(
    tmp_path: Path, fakes: dict[str, Any],
) -> None:
    config = _config(tmp_path, fakes, '\n[telemetry]\nservice_name = "router-over-http"\n')
    with collector() as got:
        env = _env(fakes, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{got.url}/v1/traces")
        with http_server_process(config, env, tmp_path / "stdout.txt", log_level="info") as (base_url, stderr):
            ids = {}
            for mode in ("legacy", "auto"):
                logs: list[Any] = []

                async def on_log(params: Any, logs: list[Any] = logs) -> None:
                    logs.append(params)

                async with mcp_client(base_url, mode=mode, logging_callback=on_log) as client:
                    ids[mode] = (await _fallback(client, fakes))["request_id"]
                assert len(logs) == (1 if mode == "legacy" else 0), logs
        text = "".join(stderr)  # all of it: the process has ended
        with got.arrived:
            assert {s.attributes.get("llm_router.request_id") for s in got.named("chat")} == set(ids.values())
            assert {s.service for s in got.spans} == {"router-over-http"}
            assert len(got.named("tools/call complete")) == 2
    assert "Deprecation" not in text and "deprecated" not in text, text
    assert [e["request_id"] for e in _events(text)] == [ids["legacy"], ids["auto"]]


async def test_a_collector_that_is_down_fails_no_call_and_is_said_once(tmp_path: Path, fakes: dict[str, Any]) -> None:
    with refused_url() as down:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "llm_router", "serve", "--config", str(_config(tmp_path, fakes))],
            env=_env(fakes, OTEL_EXPORTER_OTLP_ENDPOINT=down, OTEL_BSP_SCHEDULE_DELAY="10", OTEL_EXPORTER_OTLP_TIMEOUT="1"),
        )
        with (tmp_path / "stderr.txt").open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                for _ in range(3):
                    done = await client.call_tool("complete", {"prompt": "hello", "model": "openai:gpt-4o-mini"})
                    assert not done.is_error, done
    stderr = (tmp_path / "stderr.txt").read_text()
    assert stderr.count("spans could not be sent") == 1, stderr
    assert "Traceback" not in stderr and "Failed to export" not in stderr, stderr


def test_the_demo_says_nothing_of_deprecation(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "llm_router", "demo", "--ledger", str(tmp_path / "demo.db")],
                          capture_output=True, text=True, timeout=300, env=_env({}))
    assert done.returncode == 0, done.stderr
    assert "eprecat" not in done.stdout + done.stderr
