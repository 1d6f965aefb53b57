"""Traces of ``complete`` in OpenTelemetry's GenAI conventions, exported over OTLP when configured.

A call is one span (``chat``, or ``chat {model}`` when the caller named one model; kind INTERNAL)
with a child per try at a model (``chat {model}``, kind CLIENT): each try the attempts module
records, retries included. Models the walk passed over without asking are events of the call's
span (``llm_router.skipped``). The call's span is a child of whatever span is current: the SDK's
span for the ``tools/call`` request (``mcp.server._otel``), which already continues the trace the
client sent in the request's ``_meta`` (``traceparent`` / ``tracestate``), so nothing here reads
``_meta`` again.

Attributes are ``gen_ai.*`` and ``server.*`` as the conventions name them, and the router's own
under ``llm_router.``: cost as a decimal string of dollars (never a float), the budget tier, the
route's strategy, why the previous try was left (``llm_router.fallback_reason``), the request id,
task type and tag, each try's outcome, and whether usage was estimated. Never prompt or answer
text, never an error message (an upstream's may quote either), never a key: what comes from an
upstream (the model name it answered as, its response id) passes through the redactor.

Off (``OFF``: nothing configured, or ``OTEL_SDK_DISABLED`` / ``OTEL_TRACES_EXPORTER=none``) every
hook is a constant that does nothing, and the OpenTelemetry SDK is never imported. On
(``Tracing``), spans go through a batch span processor: its worker thread exports, so a call never
waits for the collector nor fails for it; when the collector cannot take them they are dropped,
and that is said once on stderr. ``aclose`` flushes what is left (the engine's own ``aclose``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec
from urllib.parse import urlsplit

import anyio

# The API only (the SDK imports it already, for its own request spans); the SDK is imported when on.
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, StatusCode

from .types import AttemptRecord, BudgetExceeded, Completion, NoRoute, RouterError, Usage, usd_str

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import Span, Tracer

    from .calls import CompleteResult
    from .catalog import ModelEntry
    from .config import Settings
    from .prepare import Prepared
    from .redaction import Redactor
    from .routing import Decision

__all__ = ["OFF", "AttemptTrace", "CallTrace", "Telemetry", "Tracing", "build_telemetry", "traces_endpoint"]

log = logging.getLogger("llm_router.telemetry")

PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "ollama": "ollama",
                  "mock": "llm_router.mock"}
"""``gen_ai.provider.name`` by provider kind: the conventions' well-known values, and our own for
the two they do not list."""

CLOSE_WAIT_S = 5.0
"""How long ``aclose`` waits for the last spans to reach the collector before it gives them up."""

_UPSTREAM_TEXT = 200
"""The longest string taken from an upstream (a model name, a response id)."""

P = ParamSpec("P")


def _never_fails(hook: Callable[P, None]) -> Callable[P, None]:
    """A hook of the spans that, whatever goes wrong in it, leaves the call alone (logged at debug)."""

    @functools.wraps(hook)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:  # noqa: BLE001 - telemetry never fails a call
            log.debug("telemetry: %s failed", hook.__qualname__, exc_info=True)

    return guarded


class AttemptTrace:
    """One try at one model. Off: does nothing."""

    __slots__ = ()

    def end(self, record: AttemptRecord, completion: Completion | None = None, usage: Usage | None = None) -> None:
        """The try ended as ``record`` says (the answer, or a failed one's billed ``usage``)."""


class CallTrace:
    """One ``complete``, as a context manager around its walk. Off: does nothing."""

    __slots__ = ()

    def __enter__(self) -> CallTrace:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def routed(self, decision: Decision, attempts: list[AttemptRecord]) -> None:
        """Routing chose; ``attempts`` is the list the walk appends to (read when the call ends)."""

    def answered(self, result: CompleteResult) -> None:
        """The call was answered, its row written."""


_NO_CALL = CallTrace()
_NO_ATTEMPT = AttemptTrace()


class Telemetry:
    """The off switch, and the interface the engine calls: every hook returns a constant that does nothing."""

    __slots__ = ()

    on = False

    def call(self, prepared: Prepared, request_id: str) -> CallTrace:
        return _NO_CALL

    def attempt(self, entry: ModelEntry, prepared: Prepared, attempts: Sequence[AttemptRecord]) -> AttemptTrace:
        return _NO_ATTEMPT

    async def aclose(self) -> None:
        return None


OFF = Telemetry()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def traces_endpoint(settings: Settings, env: Mapping[str, str]) -> str | None:
    """Where spans go (the OTLP/HTTP traces URL), or None when telemetry is off: the standard
    variables first (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is, ``OTEL_EXPORTER_OTLP_ENDPOINT``
    with ``/v1/traces`` added), then ``[telemetry] otlp_endpoint``; off whatever is set when
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``."""
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return None
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    if "none" in exporters:
        return None
    if url := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return url
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or settings.telemetry.otlp_endpoint
    if not base:
        return None
    return base if base.rstrip("/").endswith("/v1/traces") else base.rstrip("/") + "/v1/traces"


def build_telemetry(settings: Settings, env: Mapping[str, str], redact: Redactor) -> Telemetry:
    """``OFF`` unless an endpoint is configured (``traces_endpoint``); else tracing that exports
    there, its provider made the process's own when none was set (so the SDK's request spans,
    our calls' parents, are exported with them)."""
    endpoint = traces_endpoint(settings, env)
    if endpoint is None:
        return OFF
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol.strip() != "http/protobuf":
        log.warning("telemetry: spans are sent as OTLP http/protobuf, not %s", redact.clip(protocol, 40))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from . import __version__

    attributes: dict[str, Any] = {"service.version": __version__}
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = settings.telemetry.service_name
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    # The exporter logs every failed batch (and every retry of one): said once, by _SaidOnce, instead.
    logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
    provider.add_span_processor(BatchSpanProcessor(_said_once(OTLPSpanExporter(endpoint=endpoint), redact.quote(endpoint))))
    if isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider):
        otel_trace.set_tracer_provider(provider)
    return Tracing(provider.get_tracer("llm_router", __version__), settings, redact, provider=provider)


def _said_once(exporter: SpanExporter, where: str) -> SpanExporter:
    """``exporter``, saying on stderr once when spans cannot be sent (and once when they can again)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class SaidOnce(SpanExporter):
        def __init__(self) -> None:
            self.failing = False

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            try:
                result = exporter.export(spans)
            except Exception:  # noqa: BLE001 - an exporter's bug drops spans, never more
                result = SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                if self.failing:
                    self.failing = False
                    log.warning("telemetry: the collector at %s takes spans again", where)
            elif not self.failing:
                self.failing = True
                log.warning("telemetry: spans could not be sent to %s; they are dropped until it takes them", where)
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return SaidOnce()


def _server(base_url: str) -> tuple[str, int] | None:
    parts = urlsplit(base_url)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class Tracing(Telemetry):
    """Telemetry on: spans made with ``tracer`` (``provider``, when given, is flushed and shut
    down by ``aclose``)."""

    __slots__ = ("_provider", "_servers", "redact", "tracer")

    on = True

    def __init__(self, tracer: Tracer, settings: Settings, redact: Redactor, *, provider: TracerProvider | None = None) -> None:
        from .defaults import KNOWN_PROVIDERS

        self.tracer = tracer
        self.redact = redact
        self._provider = provider
        self._servers: dict[str, dict[str, Any]] = {}
        """Per configured provider, the attributes every try at its models carries."""
        for p in settings.providers:
            attrs: dict[str, Any] = {"gen_ai.provider.name": PROVIDER_NAMES.get(p.kind, p.kind)}
            known = KNOWN_PROVIDERS.get(p.kind)
            base = p.base_url or (known[1] if known is not None and p.kind != "mock" else None)
            if base and (server := _server(base)) is not None:
                attrs["server.address"], attrs["server.port"] = server
            self._servers[p.name] = attrs

    def call(self, prepared: Prepared, request_id: str) -> CallTrace:
        try:
            return _CallSpan(self, prepared, request_id)
        except Exception:  # noqa: BLE001 - telemetry never fails a call: this one goes untraced
            log.debug("telemetry: the call's span could not be made", exc_info=True)
            return _NO_CALL

    def attempt(self, entry: ModelEntry, prepared: Prepared, attempts: Sequence[AttemptRecord]) -> AttemptTrace:
        try:
            return _AttemptSpan(self, entry, prepared, attempts)
        except Exception:  # noqa: BLE001 - as above
            log.debug("telemetry: a try's span could not be made", exc_info=True)
            return _NO_ATTEMPT

    def upstream(self, text: str | None) -> str | None:
        """A string an upstream sent, as a span may carry it."""
        return None if text is None else self.redact.clip(text, _UPSTREAM_TEXT)

    async def aclose(self) -> None:
        provider = self._provider
        if provider is None:
            return
        self._provider = None
        with anyio.move_on_after(CLOSE_WAIT_S):
            await anyio.to_thread.run_sync(provider.shutdown, abandon_on_cancel=True)


def _request_attributes(prepared: Prepared) -> dict[str, Any]:
    request = prepared.request
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.max_tokens": request.max_tokens}
    if request.temperature is not None:
        attrs["gen_ai.request.temperature"] = request.temperature
    if request.top_p is not None:
        attrs["gen_ai.request.top_p"] = request.top_p
    if request.seed is not None:
        attrs["gen_ai.request.seed"] = request.seed
    return attrs


def _usage_attributes(usage: Usage) -> dict[str, Any]:
    attrs: dict[str, Any] = {"gen_ai.usage.input_tokens": usage.input_tokens,
                             "gen_ai.usage.output_tokens": usage.output_tokens}
    if usage.cached_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
    if usage.cache_write_tokens:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    if usage.estimated:
        attrs["llm_router.usage.estimated"] = True
        if usage.estimate_method:
            attrs["llm_router.usage.estimate_method"] = usage.estimate_method
    return attrs


class _CallSpan(CallTrace):
    """The call's span. Its attributes are gathered here and set once, when it ends: the SDK checks
    each attribute on every set, and a span set once costs least."""

    __slots__ = ("_attempts", "_attrs", "_span", "_token", "_tracing")

    def __init__(self, tracing: Tracing, prepared: Prepared, request_id: str) -> None:
        self._tracing = tracing
        self._attempts: list[AttemptRecord] = []
        models = prepared.route.models
        start: dict[str, Any] = {"gen_ai.operation.name": "chat"}
        name = "chat"
        if len(models) == 1:
            start["gen_ai.request.model"] = model = models[0].partition(":")[2]
            name = f"chat {model}"
        attrs: dict[str, Any] = {"llm_router.request_id": request_id}
        if prepared.task_type:
            attrs["llm_router.task_type"] = prepared.task_type
        if prepared.tag:
            attrs["llm_router.tag"] = prepared.tag
        self._attrs = attrs
        self._span: Span = tracing.tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=start)
        self._token: object = None

    def __enter__(self) -> CallTrace:
        self._token = otel_context.attach(otel_trace.set_span_in_context(self._span))
        return self

    @_never_fails
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        span, attrs = self._span, self._attrs
        try:
            asked = 0
            for a in self._attempts:
                if a.outcome == "skipped":
                    span.add_event("llm_router.skipped", {"llm_router.model": a.model, "llm_router.reason": a.error_code or ""})
                else:
                    asked += 1
            attrs["llm_router.attempts"] = asked
            if exc is not None:
                if isinstance(exc, RouterError):
                    attrs["error.type"] = exc.code
                    attrs["llm_router.outcome"] = "refused" if isinstance(exc, BudgetExceeded | NoRoute) else "error"
                    if isinstance(exc, BudgetExceeded) and exc.limit_name:
                        attrs["llm_router.budget.limit"] = exc.limit_name
                elif isinstance(exc, anyio.get_cancelled_exc_class()):
                    attrs["error.type"] = attrs["llm_router.outcome"] = "cancelled"
                else:
                    attrs["error.type"], attrs["llm_router.outcome"] = type(exc).__qualname__, "error"
                span.set_status(StatusCode.ERROR)  # no description: an error's text may quote an upstream
            span.set_attributes(attrs)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)  # type: ignore[arg-type]
            span.end()

    def routed(self, decision: Decision, attempts: list[AttemptRecord]) -> None:
        self._attempts = attempts
        attrs = self._attrs
        attrs["llm_router.route.strategy"] = decision.strategy
        attrs["llm_router.route.chain"] = ",".join(c.entry.ref for c in decision.chain)
        attrs["llm_router.budget.tier"] = decision.budget_tier

    @_never_fails
    def answered(self, result: CompleteResult) -> None:
        tracing = self._tracing
        attrs = self._attrs
        attrs |= _usage_attributes(result.usage)
        attrs["gen_ai.provider.name"] = tracing._servers.get(result.provider, {}).get("gen_ai.provider.name", result.provider)
        attrs["llm_router.model"] = result.model
        attrs["llm_router.cost_usd"] = result.cost_usd
        attrs["llm_router.outcome"] = "ok"
        attrs["llm_router.budget.tier_after"] = result.budget.get("tier", "normal")
        if (model := tracing.upstream(result.provider_model)) is not None:
            attrs["gen_ai.response.model"] = model


class _AttemptSpan(AttemptTrace):
    __slots__ = ("_entry", "_span", "_tracing")

    def __init__(self, tracing: Tracing, entry: ModelEntry, prepared: Prepared, attempts: Sequence[AttemptRecord]) -> None:
        self._tracing = tracing
        self._entry = entry
        attrs = _request_attributes(prepared) | tracing._servers.get(entry.provider, {})
        attrs["gen_ai.request.model"] = entry.model
        attrs["llm_router.model"] = entry.ref
        asked = [a for a in attempts if a.outcome != "skipped"]
        attrs["llm_router.attempt"] = len(asked) + 1
        if asked:
            previous = asked[-1]
            attrs["llm_router.fallback_reason"] = previous.error_code or previous.outcome
            attrs["llm_router.retry"] = previous.model == entry.ref
        self._span: Span = tracing.tracer.start_span(f"chat {entry.model}", kind=SpanKind.CLIENT, attributes=attrs)

    @_never_fails
    def end(self, record: AttemptRecord, completion: Completion | None = None, usage: Usage | None = None) -> None:
        span = self._span
        if not span.is_recording():  # ended already
            return
        try:
            self._fill(span, record, completion, usage)
        finally:
            span.end()

    def _fill(self, span: Span, record: AttemptRecord, completion: Completion | None, usage: Usage | None) -> None:
        attrs: dict[str, Any] = {"llm_router.attempt.outcome": record.outcome, "llm_router.latency_ms": record.latency_ms}
        if record.outcome != "ok":  # first: what a try's span must say, whatever comes after
            span.set_status(StatusCode.ERROR)  # no description: the error's text may quote the upstream
            attrs["error.type"] = record.error_code or record.outcome
            if record.status is not None:
                attrs["http.response.status_code"] = record.status
            span.set_attributes(attrs)
        if completion is not None:
            usage = completion.usage
            if (model := self._tracing.upstream(completion.model)) is not None:
                attrs["gen_ai.response.model"] = model
            if (response_id := self._tracing.upstream(completion.response_id)) is not None:
                attrs["gen_ai.response.id"] = response_id
            attrs["gen_ai.response.finish_reasons"] = [
                "tool_calls" if completion.tool_calls else (completion.finish_reason or "stop")]
        if usage is not None:
            attrs |= _usage_attributes(usage)
            if (cost := self._entry.cost_nusd(usage)) is not None:
                attrs["llm_router.cost_usd"] = usd_str(cost)
        span.set_attributes(attrs)
