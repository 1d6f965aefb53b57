"""What tracing costs a call: ``Engine.complete`` with telemetry on against it off, in the same run.

    python bench/telemetry.py [--calls N] [--quick]

(``bench/run.py`` prints the same section beside its other figures.) Two engines on the same
loopback upstream (``bench/upstream.py``), each with its own ledger: one with telemetry off (no
endpoint: the no-op hooks), one exporting its spans over OTLP/HTTP through the batch span
processor to a collector in its own process (``bench/collector.py``, which decodes what it is
sent). Interleaved, p50/p99 of each and their paired median difference: what a call's two spans
(the call's and its one try's) cost, export included (the processor's worker thread shares the
process with the calls). Then the spans the collector received against those made, and the hooks
alone: one call's two spans made, filled and ended outside any call (µs), queued to a batch
processor of their own whose exporter drops them, and with telemetry off. Timings are reported, never asserted.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import HERE, MAX_TOKENS, PROMPT, interleaved, paired_median_ms, standalone, write_config
from structured import _line, _per_call_us

SECTION_TITLE = "Telemetry, in-process: the same plain call with spans exported over OTLP/HTTP, or telemetry off"


@contextlib.contextmanager
def collector() -> Iterator[tuple[str, list[int]]]:
    """The loopback collector in its own process: its base URL, and (once the block ends) the
    number of spans it received."""
    proc = subprocess.Popen([sys.executable, str(HERE / "collector.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    received: list[int] = []
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"the collector did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}", received
    finally:
        if proc.stdin:
            proc.stdin.close()
        out = proc.stdout.read() if proc.stdout else ""
        proc.wait(10)
        received += [int(w) for w in out.split()[1:2]] if out.startswith("SPANS") else []


async def in_process(base_url: str, folder: Path, n: int, warmup: int) -> dict[str, Any]:
    from llm_router.calls import CompleteArgs
    from llm_router.config import load_settings
    from llm_router.engine import Engine

    off_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS)
    with collector() as (url, received):
        off = Engine(load_settings(write_config(folder, "telemetry-off", base_url)), env=off_env)
        on = Engine(load_settings(write_config(folder, "telemetry-on", base_url)),
                    env=off_env | {"OTEL_EXPORTER_OTLP_ENDPOINT": url})
        assert not off.telemetry.on and on.telemetry.on
        calls = 0

        async def traced() -> Any:
            nonlocal calls
            calls += 1
            return await on.complete(args)

        async def untraced() -> Any:
            return await off.complete(args)

        try:
            for _ in range(warmup):
                await traced()
                await untraced()
            pair = await interleaved(n, traced, untraced, ("Engine.complete, telemetry on", "Engine.complete, off"))
            alone = await hooks_alone(on, off, args)
            calls += 1  # hooks_alone's own call (its hooks' spans go elsewhere)
        finally:
            await on.aclose()  # flushes what the batch still holds
            await off.aclose()
    return {"pair": pair, "alone": alone, "made": 2 * calls, "received": received[0] if received else None}


async def hooks_alone(on: Any, off: Any, args: Any) -> list[tuple[str, float]]:
    """µs per call of the hooks a plain call runs (a call's span, one try's), on and off."""
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from llm_router.telemetry import Tracing
    from llm_router.types import AttemptRecord, Completion

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    result = await on.complete(args)
    prepared = on.prepare(args)
    decision = await on.decision(prepared)
    entry = decision.chain[0].entry
    completion = Completion(result.text, result.provider_model, result.usage, "stop")
    record = AttemptRecord(entry.ref, "ok", latency_ms=1)

    def one(telemetry: Any) -> Any:
        def run() -> None:
            attempts: list[AttemptRecord] = []
            with telemetry.call(prepared, result.request_id) as trace:
                trace.routed(decision, attempts)
                span = telemetry.attempt(entry, prepared, attempts)
                attempts.append(record)
                span.end(record, completion)
                trace.answered(result)

        return run

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    tracing = Tracing(provider.get_tracer("bench"), on.settings, on.redact, provider=provider)
    try:
        return [("the hooks of one call, telemetry on", _per_call_us(one(tracing), 2000, 7)),
                ("the same, telemetry off", _per_call_us(one(off.telemetry), 2000, 7))]
    finally:
        await tracing.aclose()


def print_section(r: dict[str, Any], title: str) -> None:
    print(title)
    ours, floor = r["pair"]
    print(_line(ours))
    print(_line(floor))
    print(f"  {'→ what tracing adds':<40} p50 {ours.p50 - floor.p50:8.3f} ms   p99 {ours.p99 - floor.p99:8.3f} ms"
          f"   paired median {paired_median_ms(ours, floor):.3f} ms")
    print("  the hooks alone (µs per call):")
    for name, us in r["alone"]:
        print(f"    {name:<40} {us:9.2f} µs")
    print(f"  spans: {r['made']} made, {r['received']} received by the collector\n")


def main() -> int:
    r, n = standalone("what tracing costs per call (loopback only)", in_process)
    print_section(r, f"{SECTION_TITLE}; N={n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
