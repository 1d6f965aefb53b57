"""Spans of ``complete``, collected with the OpenTelemetry SDK's in-memory exporter through a real
MCP session: the SDK's ``tools/call`` span continues the client's ``_meta.traceparent``, the
router's ``chat`` span is its child, and each try at a model is a CLIENT span under that, in the
GenAI conventions' names; no prompt, answer or key in any of it. Also: when telemetry is on or
off, and which sessions still get MCP log messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llm_router.calls import CompleteArgs
from llm_router.config import Settings, settings_from_dict
from llm_router.engine import Engine
from llm_router.mcp_server import create_server
from llm_router.redaction import Redactor
from llm_router.telemetry import OFF, Tracing, build_telemetry, traces_endpoint

from .conftest import FAKE_MODELS, settings_for_fakes
from .test_mcp_niceties import FALLBACK_CHAIN, Seen, fail_haiku_once

pytestmark = pytest.mark.anyio

PROMPT = "the quiet prompt XYZZY-4417 nobody may trace"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class _Collecting(SimpleSpanProcessor):
    """Exports only while a test of this module collects (the provider, once the process's own,
    stays so: the SDK's tracer keeps the first provider it finds)."""

    collecting = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.collecting:
            super().on_end(span)


@pytest.fixture(scope="session")
def _process_tracing() -> tuple[TracerProvider, InMemorySpanExporter, _Collecting]:
    exporter = InMemorySpanExporter()
    processor = _Collecting(exporter)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("another tracer provider is already the process's own")
    trace.set_tracer_provider(provider)
    return provider, exporter, processor


@pytest.fixture
def spans(_process_tracing: tuple[TracerProvider, InMemorySpanExporter, _Collecting]) -> Iterator[InMemorySpanExporter]:
    _, exporter, processor = _process_tracing
    exporter.clear()
    processor.collecting = True
    try:
        yield exporter
    finally:
        processor.collecting = False
        exporter.clear()


def _traced(settings: Settings, provider: TracerProvider) -> Engine:
    return Engine(settings, telemetry=Tracing(provider.get_tracer("llm_router"), settings, Redactor.from_environment(settings)))


@pytest.fixture
async def traced_engine(settings: Settings, _process_tracing: Any, spans: InMemorySpanExporter) -> AsyncIterator[Engine]:
    engine = _traced(settings, _process_tracing[0])
    yield engine
    await engine.aclose()


def _by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def _no_secret_anywhere(finished: tuple[ReadableSpan, ...], secrets: list[str]) -> None:
    """No attribute or event value of any span holds a secret (the prompt, the answer, a key)."""
    for s in finished:
        values = [json.dumps(list(v) if isinstance(v, tuple) else v) for v in (s.attributes or {}).values()]
        values += [json.dumps(list(v) if isinstance(v, tuple) else v) for e in s.events for v in (e.attributes or {}).values()]
        values += [s.name, s.status.description or ""]
        for secret in secrets:
            assert not any(secret in v for v in values), (s.name, secret)


async def test_a_fallback_is_a_chat_span_under_the_tools_call_span_with_a_client_span_per_model_asked(
    tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, _process_tracing: Any,
    spans: InMemorySpanExporter,
) -> None:
    engine = _traced(settings_for_fakes(tmp_path, fakes, monkeypatch), _process_tracing[0])
    fakes["anthropic"].fault("status", status=429, retry_after=600)  # past the retry cap: falls back
    try:
        async with Client(create_server(engine)) as client:
            done = await client.call_tool(
                "complete", {"prompt": PROMPT, "model": ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"],
                             "max_tokens": 64, "temperature": 0.5, "task_type": "chat", "tag": "team-a"},
                meta={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"})
    finally:
        await engine.aclose()
    assert not done.is_error, done
    result = done.structured_content
    finished = spans.get_finished_spans()

    [tool] = _by_name(finished, "tools/call complete")  # the SDK's, continuing the client's trace
    assert tool.kind is SpanKind.SERVER
    assert tool.parent is not None and f"{tool.parent.span_id:016x}" == PARENT_ID
    assert f"{tool.context.trace_id:032x}" == TRACE_ID
    assert tool.context.trace_state.get("vendor") == "abc"

    [chat] = _by_name(finished, "chat")  # two models asked for: no single model in its name
    assert chat.kind is SpanKind.INTERNAL and chat.parent is not None and chat.parent.span_id == tool.context.span_id
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.response.model"] == FAKE_MODELS["openai"]
    assert attrs["gen_ai.usage.input_tokens"] == result["usage"]["input_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == result["usage"]["output_tokens"]
    assert attrs["llm_router.cost_usd"] == result["cost_usd"] and isinstance(attrs["llm_router.cost_usd"], str)
    assert attrs["llm_router.request_id"] == result["request_id"]
    assert attrs["llm_router.task_type"] == "chat" and attrs["llm_router.tag"] == "team-a"
    assert attrs["llm_router.route.strategy"] and attrs["llm_router.budget.tier"] == "normal"
    assert attrs["llm_router.route.chain"] == "anthropic:claude-haiku-4-5,openai:gpt-4o-mini"
    assert attrs["llm_router.outcome"] == "ok" and attrs["llm_router.attempts"] == 2
    assert chat.status.status_code is not StatusCode.ERROR

    first, second = sorted(_by_name(finished, "chat claude-haiku-4-5") + _by_name(finished, "chat gpt-4o-mini"),
                           key=lambda s: s.start_time or 0)
    for s in (first, second):
        assert s.kind is SpanKind.CLIENT and s.parent is not None and s.parent.span_id == chat.context.span_id
        assert s.context.trace_id == tool.context.trace_id
    a, b = dict(first.attributes or {}), dict(second.attributes or {})
    assert first.name == "chat claude-haiku-4-5" and a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.model"] == "claude-haiku-4-5" and a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.temperature"] == 0.5 and a["gen_ai.operation.name"] == "chat"
    assert a["error.type"] == "rate_limited" and a["http.response.status_code"] == 429
    assert a["llm_router.attempt.outcome"] == "error" and a["llm_router.attempt"] == 1
    assert first.status.status_code is StatusCode.ERROR and not first.status.description
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", int(fakes["anthropic"].root_url.rsplit(":", 1)[1]))
    assert b["gen_ai.provider.name"] == "openai" and b["llm_router.fallback_reason"] == "rate_limited"
    assert b["llm_router.retry"] is False and b["llm_router.attempt"] == 2 and b["llm_router.attempt.outcome"] == "ok"
    assert b["gen_ai.response.model"] == FAKE_MODELS["openai"] and b["gen_ai.usage.output_tokens"] > 0
    assert b["gen_ai.response.finish_reasons"] == ("stop",)
    assert b["llm_router.cost_usd"] == result["attempts"][-1].get("cost_usd", result["cost_usd"])
    assert (b["server.address"], b["server.port"]) == ("127.0.0.1", int(fakes["openai"].root_url.rsplit(":", 1)[1]))
    assert "error.type" not in b

    [event] = [e for e in tool.events if e.name == "llm_router.fallback"]  # the same event stderr has
    assert (event.attributes or {})["llm_router.request_id"] == result["request_id"]
    _no_secret_anywhere(finished, [PROMPT, "XYZZY", *(f.api_key for f in fakes.values() if f.api_key)])


async def test_a_retry_on_the_same_model_is_a_client_span_of_its_own_marked_as_a_retry(
    tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, _process_tracing: Any,
    spans: InMemorySpanExporter,
) -> None:
    engine = _traced(settings_for_fakes(tmp_path, fakes, monkeypatch, resilience={"max_retries": 1}), _process_tracing[0])
    fakes["anthropic"].fault("status", status=503)
    try:
        async with Client(create_server(engine)) as client:
            done = await client.call_tool("complete", {"prompt": PROMPT, "model": "anthropic:claude-haiku-4-5"})
    finally:
        await engine.aclose()
    assert not done.is_error, done
    finished = spans.get_finished_spans()
    [chat] = [s for s in finished if s.kind is SpanKind.INTERNAL]
    assert chat.name == "chat claude-haiku-4-5"  # one model asked for: named after it
    assert (chat.attributes or {})["gen_ai.request.model"] == "claude-haiku-4-5"
    tries = sorted((s for s in finished if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert [(t.attributes or {})["llm_router.attempt.outcome"] for t in tries] == ["error", "ok"]
    assert (tries[1].attributes or {})["llm_router.retry"] is True
    assert (tries[1].attributes or {})["llm_router.fallback_reason"] == (tries[0].attributes or {})["error.type"]
    assert all(t.parent is not None and t.parent.span_id == chat.context.span_id for t in tries)


async def test_every_model_failing_ends_the_chat_span_in_error_with_each_try_under_it(
    tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, _process_tracing: Any,
    spans: InMemorySpanExporter,
) -> None:
    engine = _traced(settings_for_fakes(tmp_path, fakes, monkeypatch), _process_tracing[0])
    fakes["anthropic"].fault("status", status=500, message=f"upstream quotes {PROMPT}")
    fakes["openai"].fault("status", status=500, message=f"upstream quotes {PROMPT}")
    try:
        async with Client(create_server(engine)) as client:
            done = await client.call_tool(
                "complete", {"prompt": PROMPT, "model": ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]})
    finally:
        await engine.aclose()
    assert done.is_error
    finished = spans.get_finished_spans()
    [chat] = _by_name(finished, "chat")
    assert chat.status.status_code is StatusCode.ERROR and not chat.status.description
    assert (chat.attributes or {})["error.type"] == "all_failed" and (chat.attributes or {})["llm_router.outcome"] == "error"
    tries = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert len(tries) == 2 and all(t.status.status_code is StatusCode.ERROR for t in tries)
    [tool] = _by_name(finished, "tools/call complete")
    assert [e.name for e in tool.events] == ["llm_router.all_failed"]
    _no_secret_anywhere(finished, [PROMPT, "XYZZY"])


async def test_a_budget_warning_and_a_refusal_are_span_events_and_the_refusal_a_refused_chat_span(
    traced_engine: Engine, spans: InMemorySpanExporter,
) -> None:
    engine = traced_engine
    async with Client(create_server(engine), mode="legacy") as client:
        first = await client.call_tool("complete", {"prompt": PROMPT, "model": "openai:gpt-4o-mini"})
        # A daily limit the first call has used a little more than half of: the next call is warned
        # (tier cautious), the one after, for a dear model, refused.
        limit = str(Decimal(first.structured_content["cost_usd"]) * Decimal("1.9"))
        assert not (await client.call_tool("set_budget", {"scope": "global", "period": "daily", "limit_usd": limit})).is_error
        spans.clear()
        warned = await client.call_tool("complete", {"prompt": PROMPT, "model": "ollama:llama3.1"})
        refused = await client.call_tool("complete", {"prompt": PROMPT, "model": "openai:gpt-4o"})
    assert not warned.is_error and refused.is_error
    finished = spans.get_finished_spans()
    tools = sorted(_by_name(finished, "tools/call complete"), key=lambda s: s.start_time or 0)
    assert [[e.name for e in t.events] for t in tools] == [["llm_router.budget_warning"], ["llm_router.budget_refusal"]]
    warning = dict(tools[0].events[0].attributes or {})
    assert warning["llm_router.tier"] == "cautious" and warning["llm_router.scope"] == "global"
    assert warning["llm_router.level"] == "warning"
    [ok] = [s for s in _by_name(finished, "chat llama3.1") if s.kind is SpanKind.INTERNAL]
    assert ok.kind is SpanKind.INTERNAL and (ok.attributes or {})["llm_router.budget.tier"] == "cautious"
    assert (ok.attributes or {})["gen_ai.provider.name"] == "llm_router.mock"
    [no] = [s for s in _by_name(finished, "chat gpt-4o") if s.kind is SpanKind.INTERNAL]
    attrs = dict(no.attributes or {})
    assert no.status.status_code is StatusCode.ERROR and attrs["error.type"] == "budget_exceeded"
    assert attrs["llm_router.outcome"] == "refused" and attrs["llm_router.attempts"] == 0
    assert [e.name for e in no.events] == ["llm_router.skipped"]  # never asked: not a CLIENT span
    assert not any(s.kind is SpanKind.CLIENT and s.parent and s.parent.span_id == no.context.span_id for s in finished)
    _no_secret_anywhere(finished, [PROMPT, "XYZZY"])


async def test_a_2026_session_gets_no_log_message_and_a_2025_11_25_session_still_does(engine: Engine) -> None:
    heard: dict[str, Seen] = {}
    for mode in ("legacy", "auto"):
        seen = heard[mode] = Seen()
        async with Client(create_server(engine), mode=mode, logging_callback=seen.on_log, log_level="debug") as client:
            assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
            fail_haiku_once(engine)
            assert not (await client.call_tool("complete", {"prompt": "hello", "model": FALLBACK_CHAIN})).is_error
    assert heard["auto"].logs == []
    assert [m.split(";")[0] for m in heard["legacy"].messages("warning")] == [
        "fallback: anthropic:claude-haiku-4-5 error (rate_limited)"]


async def test_events_go_to_the_events_logger_as_one_json_object_each(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="llm_router.events")
    async with Client(create_server(engine)) as client:
        fail_haiku_once(engine)
        done = await client.call_tool("complete", {"prompt": "hello", "model": FALLBACK_CHAIN})
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_router.events"]
    assert len(lines) == 1 and "\n" not in lines[0]
    event = json.loads(lines[0])
    assert event["event"] == "fallback" and event["level"] == "warning"
    assert event["request_id"] == done.structured_content["request_id"]
    assert event["message"].startswith("fallback: anthropic:claude-haiku-4-5 error (rate_limited)")


def _settings(**telemetry: Any) -> Settings:
    return settings_from_dict({"telemetry": telemetry} if telemetry else {}, source="test")


def test_telemetry_is_on_only_with_an_endpoint_the_standard_variables_winning_and_turning_it_off() -> None:
    configured = _settings(otlp_endpoint="http://127.0.0.1:4318")
    assert traces_endpoint(_settings(), {}) is None
    assert traces_endpoint(configured, {}) == "http://127.0.0.1:4318/v1/traces"
    assert traces_endpoint(_settings(otlp_endpoint="http://c:4318/v1/traces"), {}) == "http://c:4318/v1/traces"
    assert traces_endpoint(configured, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4318/"}) == "http://e:4318/v1/traces"
    assert traces_endpoint(configured, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4318",
                                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9/spans"}) == "http://t:9/spans"
    assert traces_endpoint(configured, {"OTEL_SDK_DISABLED": "TRUE"}) is None
    assert traces_endpoint(configured, {"OTEL_TRACES_EXPORTER": "none"}) is None
    assert build_telemetry(_settings(), {}, Redactor()) is OFF


def test_a_bad_endpoint_is_refused_by_name() -> None:
    from llm_router.types import ConfigError

    with pytest.raises(ConfigError, match=r"telemetry\.otlp_endpoint.*not an http\(s\) URL"):
        _settings(otlp_endpoint="127.0.0.1:4318")
    with pytest.raises(ConfigError, match=r"telemetry\.service_nam.*did you mean 'service_name'"):
        settings_from_dict({"telemetry": {"service_nam": "x"}}, source="test")


async def test_off_every_hook_is_the_same_constant_doing_nothing(engine: Engine) -> None:
    assert engine.telemetry is OFF and engine.caller.telemetry is OFF
    prepared = engine.prepare(CompleteArgs(prompt="hi"))
    entry = next(iter(engine.catalog))
    assert OFF.call(prepared, "r1") is OFF.call(prepared, "r2")
    assert OFF.attempt(entry, prepared, []) is OFF.attempt(entry, prepared, [])


async def test_a_span_hook_that_breaks_fails_no_call(
    traced_engine: Engine, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Tracing, text: str | None) -> str | None:
        raise RuntimeError("a bug in the tracing")

    monkeypatch.setattr(Tracing, "upstream", broken)  # used by both the call's and the try's ending
    async with Client(create_server(traced_engine)) as client:
        done = await client.call_tool("complete", {"prompt": "hello", "model": "openai:gpt-4o-mini"})
    assert not done.is_error, done
    ended = {(s.name, s.kind) for s in spans.get_finished_spans()}
    assert {("tools/call complete", SpanKind.SERVER), ("chat gpt-4o-mini", SpanKind.INTERNAL),
            ("chat gpt-4o-mini", SpanKind.CLIENT)} <= ended  # ended all the same


async def test_the_judges_calls_are_traces_of_their_own_not_children_of_the_call_it_judges(
    tmp_path: Path, _process_tracing: Any, spans: InMemorySpanExporter,
) -> None:
    from .test_judge import ask, judged_settings, settled

    engine = _traced(judged_settings(tmp_path), _process_tracing[0])
    assert engine.judge is not None
    try:
        first = await ask(engine)
        second = await ask(engine)
        await settled(engine.judge, 2)
    finally:
        await engine.aclose()
    calls = {(s.attributes or {})["llm_router.request_id"]: s for s in spans.get_finished_spans() if s.kind is SpanKind.INTERNAL}
    judging = [s for rid, s in calls.items() if rid not in (first.request_id, second.request_id)]
    assert len(judging) == 2 and all((s.attributes or {})["llm_router.tag"] == "judge" for s in judging)
    assert all(s.parent is None for s in judging)  # roots: not under the call that started the judge's worker
    asked = {calls[first.request_id].context.trace_id, calls[second.request_id].context.trace_id}
    assert not asked & {s.context.trace_id for s in judging}
