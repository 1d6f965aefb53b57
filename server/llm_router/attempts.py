"""One model asked for an answer: try, classify the failure, retry it or give the model up.

``ModelCaller.call`` is the inner loop of ``Engine.complete``'s chain: every try becomes an
``AttemptRecord`` (an error quoted through the redactor first), a retryable failure is tried
again after a backoff (or the provider's Retry-After) while the model's share of the deadline has
room, and the model's health is told once per call. ``passed_over`` and ``skipped`` are the
attempts of models the chain walks past without asking.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from . import timings
from .catalog import ModelEntry
from .config import ResilienceConfig
from .estimates import BY_CHARS, prompt_tokens_by_chars
from .prepare import Prepared
from .providers import Provider
from .providers.mock import estimate_tokens
from .redaction import Redactor
from .resilience import HealthBoard, Window, counts_against_circuit
from .routing import Excluded
from .telemetry import OFF, Telemetry
from .types import AttemptRecord, Completion, InvalidOutput, MalformedResponse, ProviderError, Timeout, Usage, usd_str

__all__ = ["Answer", "ModelCaller", "Progress", "backoff", "elapsed_ms", "passed_over", "skipped", "streamer"]

Progress = Callable[[float, float | None, str], Awaitable[None]]
"""(progress, total, message) — how the engine tells the caller what it is doing."""

log = logging.getLogger("llm_router.engine")


@dataclass(slots=True)
class Answer:
    """A model's answer that passed its checks: the completion, and for structured output the
    JSON value it holds (``structured``: whether one was asked, since the value may be null)."""

    completion: Completion
    value: Any = None
    structured: bool = False


@dataclass
class ModelCaller:
    """What asking a model needs: the providers (the engine's own mapping, so a provider swapped
    in it is the one asked), the health board, the redactor, the retry policy and the telemetry
    (a span per try). (No slots: one per engine, and a profiler may wrap its ``call``.)"""

    providers: Mapping[str, Provider]
    health: HealthBoard
    redact: Redactor
    policy: ResilienceConfig
    telemetry: Telemetry = OFF

    async def call(
        self, entry: ModelEntry, prepared: Prepared, attempts: list[AttemptRecord], window: Window,
        progress: Progress | None,
    ) -> Answer:
        """Call one model; retry a retryable failure with backoff (honouring Retry-After) while
        retries remain and the model's window (its share of the deadline) still has room for
        another try. Every try is appended to ``attempts``, a cancelled one with how long it ran.
        The model's health is told once, however many tries it took.

        Raises:
            ProviderError: the last failure, when this model is given up on.
        """
        provider = self.providers[entry.provider]
        retries = 0
        t0 = time.perf_counter()
        self.health.before_call(entry.ref)
        span = self.telemetry.attempt(entry, prepared, attempts)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    on_text = streamer(progress) if progress else None  # each try streams its own text
                    answer = await self._try_once(provider, entry, prepared, window, on_text)
                except ProviderError as e:
                    ms = elapsed_ms(t0)
                    cost = None if e.usage is None else usd_str(entry.cost_nusd(e.usage) or 0)
                    attempts.append(AttemptRecord(entry.ref, "error", e.code, self.redact.quote(str(e)), ms, e.status, cost))
                    span.end(attempts[-1], usage=e.usage)
                    wait = self.retry_wait(e, retries, ms / 1000, window.end)
                    if wait is None:
                        self.health.record(entry.ref, ok=False, latency_ms=ms, counts_against_circuit=counts_against_circuit(e))
                        raise
                    if progress is not None:
                        await progress(0, None, f"{entry.ref} failed ({e.code}); retrying in {wait:.1f} s")
                    t0 = time.perf_counter()
                    await anyio.sleep(wait)
                    retries += 1
                    span = self.telemetry.attempt(entry, prepared, attempts)
                    continue
                ms = elapsed_ms(t0)
                self.health.record(entry.ref, ok=True, latency_ms=ms)
                attempts.append(AttemptRecord(entry.ref, "ok", latency_ms=ms))
                span.end(attempts[-1], answer.completion)
                return answer
        except ProviderError:
            raise
        except BaseException as e:
            self.health.record(entry.ref, ok=False, latency_ms=elapsed_ms(t0), counts_against_circuit=False)
            if isinstance(e, anyio.get_cancelled_exc_class()):
                attempts.append(AttemptRecord(entry.ref, "cancelled", "cancelled", latency_ms=elapsed_ms(t0)))
                span.end(attempts[-1])
            else:  # a bug: the try's span says what escaped (a span already ended ignores it)
                span.end(AttemptRecord(entry.ref, "error", type(e).__qualname__, latency_ms=elapsed_ms(t0)))
            raise

    async def _try_once(
        self, provider: Provider, entry: ModelEntry, prepared: Prepared, window: Window,
        on_text: Callable[[str], Awaitable[None]] | None,
    ) -> Answer:
        """One try, cut at the model's window, its answer checked against what the call asked
        (``structured.OutputCheck``). Whatever the adapter lets escape fails this try only (a
        ``MalformedResponse``), never the call.

        Raises:
            ProviderError: Timeout when the window ends first; InvalidOutput for an answer that
            is not what was asked (billed: usage as reported, or estimated from the text).
        """
        with anyio.CancelScope(deadline=window.end):
            completion: Completion | None = None
            try:
                completion = await provider.complete(entry.model, prepared.request, on_text=on_text)
                if prepared.checks is None:
                    return Answer(completion)
                usage = completion.usage or _estimated(prepared, completion)
                value = prepared.checks.answer(completion, provider=entry.provider, model=entry.model, usage=usage)
                return Answer(completion, value, prepared.checks.format is not None and not completion.tool_calls)
            except ProviderError:
                raise
            except Exception as e:
                log.warning("%s: the adapter failed on the answer", entry.ref, exc_info=True)
                why = f"{type(e).__name__}: {self.redact.clip(str(e), 200)}"
                if completion is not None:  # it answered, and the answer could not be checked: billed, not retried
                    raise InvalidOutput(f"the answer could not be checked ({why})", provider=entry.provider,
                                        model=entry.model, usage=completion.usage or _estimated(prepared, completion)) from e
                raise MalformedResponse(
                    f"{entry.provider} sent an answer that could not be read ({why})",
                    provider=entry.provider, model=entry.model,
                ) from e
        if window.later:
            raise Timeout(
                f"no answer within its {window.share_s:.1f} s share of the call's {prepared.deadline_s:g} s deadline "
                f"(the rest is kept for the {window.later} model{'s' if window.later > 1 else ''} after it)",
                provider=entry.provider, model=entry.model,
            )
        raise Timeout(f"the call's deadline of {prepared.deadline_s:g} s passed", provider=entry.provider, model=entry.model)

    def retry_wait(self, e: ProviderError, retries: int, took_s: float, window_end: float) -> float | None:
        """How long to wait before retrying this failure on the same model, or None to move on:
        not retryable, out of retries, a Retry-After longer than is worth waiting, or a window
        without room for the wait plus another try as long as this one."""
        policy = self.policy
        if not e.retryable or retries >= policy.max_retries:
            return None
        if e.retry_after is not None and e.retry_after > policy.retry_after_cap_s:
            return None
        wait = e.retry_after if e.retry_after is not None else backoff(retries, policy.backoff_base_s, policy.backoff_max_s)
        if anyio.current_time() + wait + took_s >= window_end:
            return None
        return wait


def _estimated(prepared: Prepared, completion: Completion) -> Usage:
    """What an answer that came without usage is billed if it fails its checks: counted from the
    text (a failed attempt is not worth a question to the server's tokenizer)."""
    output = min(estimate_tokens(completion.text + _compact_calls(completion)), prepared.request.max_tokens)
    return Usage(prompt_tokens_by_chars(prepared.request), output, estimated=True, estimate_method=BY_CHARS)


def _compact_calls(completion: Completion) -> str:
    return "".join(f"{c.name}{c.arguments}" for c in completion.tool_calls)


def passed_over(
    entry: ModelEntry, tried: int, to_try: int, deadline: float, context_floor: int, prepared: Prepared
) -> AttemptRecord | None:
    """Why the walk passes over this candidate without asking it (None: ask it): past
    ``max_attempts``, out of time, or a known window no larger than one already too small."""
    if tried > to_try:
        return AttemptRecord(entry.ref, "skipped", "max_attempts",
                             f"[routing] max_attempts = {to_try} models were tried first")
    if tried > 1 and anyio.current_time() >= deadline:
        return AttemptRecord(entry.ref, "skipped", "deadline", f"the call's deadline of {prepared.deadline_s:g} s had passed")
    if entry.context_known and entry.context_window <= context_floor:
        return AttemptRecord(entry.ref, "skipped", "context_too_small",
                             f"its {entry.context_window}-token window is no larger than one that was too small")
    return None


def skipped(excluded: Excluded) -> AttemptRecord:
    """A model routing left out, as the call's attempts list it."""
    return AttemptRecord(excluded.model, "skipped", excluded.reason, excluded.detail)


def backoff(retries: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: between half and all of base·2^retries, capped."""
    return min(base * 2.0**retries, cap) * random.uniform(0.5, 1.0)


def elapsed_ms(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1000)


def streamer(progress: Progress) -> Callable[[str], Awaitable[None]]:
    """Forward streamed text as progress, at most every timings.PROGRESS_INTERVAL_S."""
    parts: list[str] = []
    last = 0.0

    async def on_text(delta: str) -> None:
        nonlocal last
        parts.append(delta)
        now = time.monotonic()
        if now - last >= timings.PROGRESS_INTERVAL_S:
            last = now
            text = "".join(parts)
            try:
                await progress(len(text), None, text)
            except Exception:  # progress is a courtesy: failing to send it never fails the answer
                log.debug("progress could not be sent; no more for this answer", exc_info=True)
                last = float("inf")

    return on_text
