"""One request end to end: validate → route → reserve → call with fallback → settle → record.

``Engine.complete`` is the path to read first. Everything it needs is built once, in
``Engine.__init__``: the catalog (prices looked up once), the providers (one connection pool
each), the ledger connection, the budget and the health board.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio

from . import timings
from .budget import Budget, BudgetSnapshot, LimitState, Tier, parse_scope, tier_of, worst_tier
from .calls import (
    Answer,
    AnswerUsage,
    BudgetResult,
    CompleteArgs,
    ExplainResult,
    ReportResult,
    prompt_hash,
)
from .catalog import Catalog, ModelEntry, Prices, worst_case_input_tokens
from .config import Settings
from .estimates import estimate_usage, note_for, prompt_tokens_by_chars
from .holds import Holds
from .ledger import Ledger, LedgerUnavailable, RequestRow, open_ledger
from .providers import Provider, availability, build_provider
from .redaction import Redactor
from .resilience import HealthBoard, Window, counts_against_circuit
from .routing import Candidate, Decision, Excluded, RouteRequest, decide
from .types import (
    AllAttemptsFailed,
    AttemptRecord,
    BudgetExceeded,
    Completion,
    CompletionRequest,
    ContextTooLong,
    InvalidInput,
    LedgerBusy,
    MalformedResponse,
    Message,
    NoRoute,
    ProviderError,
    RouterError,
    SpendNotRecorded,
    Timeout,
    Usage,
    parse_model_ref,
    usd_str,
    usd_to_nusd,
)

__all__ = ["Engine", "Progress"]

Progress = Callable[[float, float | None, str], Awaitable[None]]
"""(progress, total, message) — how the engine tells the caller what it is doing."""


log = logging.getLogger("llm_router.engine")


@dataclass(slots=True)
class Prepared:
    """A validated call: what the provider is sent, and what routing is asked."""

    request: CompletionRequest
    route: RouteRequest
    tag: str
    task_type: str
    deadline_s: float
    ttl_s: float
    """How long a hold for this call may live at most (renewed as a lease until then)."""
    prompt_hash: str
    prompt_text: str | None


@dataclass(slots=True)
class _Billed:
    """What failed attempts of one call still cost (a withheld answer is billed), and the holds
    kept for them until the call's row records that cost."""

    usage: Usage = field(default_factory=Usage)
    nusd: int = 0
    held: list[str] = field(default_factory=list)

    def add(self, usage: Usage, nusd: int, reservation: str) -> None:
        self.usage += usage
        self.nusd += nusd
        self.held.append(reservation)


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] = os.environ,
        ledger: Ledger | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.ledger = ledger or open_ledger(settings)
        self.budget = Budget(settings.budget, self.ledger)
        self.holds = Holds(self.ledger, self.budget)
        self.health = HealthBoard(settings.resilience.breaker_failures, settings.resilience.breaker_cooldown_s)
        self.availability = {p.name: availability(p, env) for p in settings.providers}
        self.redact = Redactor.from_environment(settings, env)
        """Every key this engine's providers send: no error is kept (attempts, rows) before crossing it."""
        self.providers: dict[str, Provider] = dict(providers) if providers is not None else {
            p.name: build_provider(p, env) for p in settings.providers if self.availability[p.name][0]
        }
        self.rules = {r.task_type: tuple(r.chain) for r in settings.routing.rules}
        ref = settings.routing.reference_model
        self.reference: ModelEntry | None = self.catalog.entries.get(ref) if ref else None
        self._freed: anyio.Event | None = None  # made on first use: an Event needs a running loop
        self._windows_unasked = [e for e in self.catalog if not e.context_known and e.provider in self.providers]
        """Models whose window is only assumed, whose server is to be asked for it."""
        self._windows_ask_at = 0.0  # monotonic time of the next ask
        self._windows_reask_s = timings.WINDOW_REASK_S[0]
        self._check_timezone()
        self.ledger.reclaim()

    def _check_timezone(self) -> None:
        """Days are stored in the budget's time zone; if it changed, re-file every row."""
        tz = self.budget.clock.tz_name
        stored = self.ledger.meta("timezone")
        if stored != tz:
            if stored is not None:
                self.ledger.rebuild_rollups(self.budget.clock.day_of)
            self.ledger.set_meta("timezone", tz)

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()
        self.ledger.close()

    # -- validation -----------------------------------------------------------------------------

    def prepare(self, args: CompleteArgs) -> Prepared:
        """Turn tool arguments into a provider request and a routing request.

        Raises:
            InvalidInput: naming the field and what is allowed.
        """
        limits = self.settings.limits
        if args.prompt is not None and args.messages is not None:
            raise InvalidInput("prompt", "give prompt or messages, not both", allowed="one of prompt, messages")
        if args.prompt is not None:
            if not args.prompt.strip():
                raise InvalidInput("prompt", "is empty", allowed="a non-empty string")
            messages = (Message(role="user", content=args.prompt),)
        elif args.messages:
            if len(args.messages) > limits.max_messages:
                raise InvalidInput("messages", f"{len(args.messages)} turns is too many", allowed=f"at most {limits.max_messages}")
            if args.messages[-1].role != "user":
                raise InvalidInput("messages", "the last turn must be the user's", allowed="a list ending with role user")
            if not any(m.content.strip() for m in args.messages):
                raise InvalidInput("messages", "every turn is blank", allowed="at least one non-blank turn")
            messages = tuple(Message(role=m.role, content=m.content) for m in args.messages)
        else:
            raise InvalidInput("prompt", "nothing to send", allowed="a prompt string or a messages list")
        request = CompletionRequest(
            messages=messages,
            system=args.system or None,
            max_tokens=args.max_tokens or self.settings.routing.default_max_tokens,
            temperature=args.temperature,
        )
        try:
            text_bytes = request.text_bytes()
        except UnicodeEncodeError:  # only an in-process caller can send one: the transports repair them
            raise _not_text(_first_not_text(args)) from None
        size = len(request.system or "") + sum(len(m.content) for m in messages)
        if size > limits.max_prompt_chars:
            raise InvalidInput("prompt", f"{size} characters is too long", allowed=f"at most {limits.max_prompt_chars} characters in all")

        models: tuple[str, ...] = ()
        if args.model is not None:
            refs = [args.model] if isinstance(args.model, str) else list(args.model)
            if not refs or len(refs) > 8:
                raise InvalidInput("model", "a chain lists 1 to 8 models", allowed='"provider:model" or a list of them')
            for ref in refs:
                parse_model_ref(ref)
                self.catalog.get(ref)
            models = tuple(dict.fromkeys(refs))
        tag = _clean_label(args.tag, "tag")
        task_type = _clean_label(args.task_type, "task_type")
        pairs = [(m.role, m.content) for m in messages]
        route = RouteRequest(
            models=models,
            task_type=task_type or None,
            quality=args.quality,
            strategy=args.strategy,
            max_cost_nusd=usd_to_nusd(args.max_cost_usd) if args.max_cost_usd is not None else None,
            tag=tag,
            input_tokens_bound=worst_case_input_tokens(text_bytes, len(messages)),
            input_tokens_typical=prompt_tokens_by_chars(request),
            max_tokens=request.max_tokens,
        )
        return Prepared(
            request=request,
            route=route,
            tag=tag,
            task_type=task_type,
            deadline_s=(deadline_s := args.deadline_s or self.settings.resilience.deadline_s),
            ttl_s=max(self.settings.budget.reservation_ttl_s, deadline_s + 60),
            prompt_hash=prompt_hash(request.system, pairs),
            prompt_text=json.dumps({"system": request.system, "messages": pairs}, ensure_ascii=False)
            if self.settings.ledger.store_prompts
            else None,
        )

    # -- routing --------------------------------------------------------------------------------

    def _decide(self, route: RouteRequest, snapshot: BudgetSnapshot, *, explain: bool = True) -> Decision:
        return decide(
            route,
            catalog=self.catalog,
            rules=self.rules,
            default_strategy=self.settings.routing.strategy,
            default_quality=self.settings.routing.default_quality,
            availability=self.availability,
            circuit=self.health.allows,
            latency_of=self.health.p50_ms,
            error_rate_of=self.health.error_rate,
            budget=snapshot,
            explain=explain,
        )

    async def decision(self, prepared: Prepared, *, explain: bool = True, wait_s: float | None = None) -> Decision:
        """Route the call on the budget as the ledger has it now, waiting for the ledger at most
        ``wait_s`` (None: the call's whole deadline).

        Regression: routing's read waited for this server's ledger connection without end, so a
        call queued behind another call of the same server waiting for a frozen process's write
        lock waited that call's whole deadline, not its own.

        Raises:
            LedgerBusy: the ledger could not be read within the wait.
        """
        if self._windows_unasked and time.monotonic() >= self._windows_ask_at:
            await self._ask_windows()
        snapshot = await self.holds.snapshot(tag=prepared.tag, wait_s=prepared.deadline_s if wait_s is None else wait_s)
        return self._decide(prepared.route, snapshot, explain=explain)

    async def _ask_windows(self) -> None:
        """Ask the servers, before the first decision, for the windows we only assume (llama.cpp
        ``/props``, Ollama ``/api/show``): all at once, waiting at most timings.WINDOW_ASK_S. Calls that
        start meanwhile do not wait; a model whose server did not say is asked again later
        (timings.WINDOW_REASK_S), so a server down or busy at start still teaches its window."""
        unasked, self._windows_unasked = self._windows_unasked, []
        self._windows_ask_at = time.monotonic() + self._windows_reask_s
        self._windows_reask_s = min(self._windows_reask_s * 2, timings.WINDOW_REASK_S[1])

        async def ask(entry: ModelEntry) -> None:
            try:
                window = await self.providers[entry.provider].context_window(entry.model)
            except Exception:  # whatever a server answers, it only leaves the window assumed
                log.debug("asking %s for its window failed", entry.ref, exc_info=True)
                return
            if window is not None and self.catalog.learn_window(entry.ref, window, "reported by the server"):
                log.info("%s: the server runs it with a %s-token window", entry.ref, window)

        with anyio.move_on_after(timings.WINDOW_ASK_S):
            async with anyio.create_task_group() as tg:
                for entry in unasked:
                    tg.start_soon(ask, entry)
        self._windows_unasked += [e for e in unasked if not e.context_known]

    async def explain(self, args: CompleteArgs) -> ExplainResult:
        prepared = self.prepare(args)
        decision = await self.decision(prepared)
        return ExplainResult(**decision.explain(), input_tokens_estimate=prepared.route.input_tokens_typical)

    # -- the call -------------------------------------------------------------------------------

    async def complete(self, args: CompleteArgs, *, progress: Progress | None = None) -> Answer:
        """Route, then walk the chain: reserve the worst case, call, settle to the actual cost.

        Exactly one ledger row is written per call that passed validation, before this returns
        or raises (or, when the ledger cannot take it by the deadline, journaled: see
        ``LedgerBase.settle``); no reservation outlives the call, whatever happens (cancellation
        included), but a journaled call's, which counts until its row is written.
        Every model routing or the walk passed over is in the attempts, as ``skipped`` with why.
        The deadline is shared along the chain (``resilience.model_window``): a slow first model
        cannot leave a healthy later one no time.

        Raises:
            InvalidInput, NoRoute, BudgetExceeded, AllAttemptsFailed (all but the first carrying
            the call's ``request_id``).
        """
        prepared = self.prepare(args)
        request_id = os.urandom(16).hex()
        started = time.perf_counter()
        deadline = anyio.current_time() + prepared.deadline_s  # routing's wait for the ledger included
        try:
            decision = await self.decision(prepared, explain=False)
        except LedgerBusy as e:
            e.request_id = request_id
            await self._record_failure(prepared, request_id, None, [], e, started, wait_s=0.0)
            raise
        if not decision.chain:
            error = self._no_route_error(decision)
            error.request_id = request_id
            skipped = [_skipped(x) for x in decision.walk if isinstance(x, Excluded)]
            await self._record_failure(prepared, request_id, decision, skipped, error, started, status="refused")
            raise error

        attempts: list[AttemptRecord] = []
        billed = _Billed()
        budget_error: BudgetExceeded | None = None
        context_floor = 0  # after a context-length error, only models with a larger known window
        to_try = min(len(decision.chain), self.settings.routing.max_attempts)
        tried = 0
        answered: tuple[Candidate, Completion] | None = None
        reservation: str | None = None
        try:
            for item in decision.walk:
                if isinstance(item, Excluded):  # left out by routing: said, not tried
                    attempts.append(_skipped(item))
                    continue
                cand, entry = item, item.entry
                tried += 1
                skip = self._passed_over(entry, tried, to_try, deadline, context_floor, prepared)
                if skip is not None:
                    attempts.append(skip)
                    continue
                # This model's share of the time left, a wait for budget included; the models after
                # it keep theirs.
                window = Window.share_of(deadline, later=to_try - tried, reserve_s=self.settings.resilience.fallback_reserve_s)
                try:
                    reservation = await self._reserve(decision, entry, cand.worst_case_nusd, request_id, prepared, window.end)
                except BudgetExceeded as e:
                    budget_error = e
                    attempts.append(AttemptRecord(entry.ref, "skipped", e.code, str(e)))
                    continue
                if progress is not None:
                    await progress(0, None, f"asking {entry.ref} ({tried}/{to_try})")
                try:
                    answered = cand, await self._call_with_retries(entry, prepared, attempts, window, progress)
                    break
                except ProviderError as e:
                    await self._failed(e, entry, reservation, billed)
                    reservation = None
                    if isinstance(e, ContextTooLong) and entry.context_known:
                        context_floor = max(context_floor, entry.context_window)
                    if not e.fallback_ok:
                        break
                    if progress is not None and tried < to_try:
                        await progress(0, None, f"{entry.ref} failed ({e.code}); falling back")
        except BaseException as e:
            # Cancelled by the client, the ledger busy past the deadline (or a bug): record the
            # call, free its holds (or journal them with its row), re-raise.
            cancelled = isinstance(e, anyio.get_cancelled_exc_class())
            known = isinstance(e, RouterError) and not cancelled
            if known and e.request_id is None:
                e.request_id = request_id
            with anyio.CancelScope(shield=True):
                row = self._failure_row(
                    prepared, request_id, decision, attempts, billed, status="cancelled" if cancelled else "error",
                    error_code="cancelled" if cancelled else e.code if known else "internal",
                    error=None if cancelled else str(e) if known else self.redact(repr(e)), started=started,
                )
                # A busy ledger will not be less busy now: the row goes straight to the journal.
                wait = 0.0 if isinstance(e, LedgerBusy) else self._wait_left(prepared, started)
                try:
                    await self.holds.settle(row, reservation_id=reservation, held=billed.held, wait_s=wait)
                except SpendNotRecorded as lost:
                    if not known:
                        log.error("%s", lost)  # the cancellation (or the bug) goes on
                    else:
                        raise _also_unrecorded(e, lost) from e
                except LedgerUnavailable as gone:  # its file was replaced: the error that ends the call says so
                    if not known:
                        log.error("request %s: %s", request_id, gone)
                self._budget_freed()
            raise
        if answered is not None:
            cand, completion = answered
            assert reservation is not None
            return await self._settle(
                prepared, request_id, decision, cand, completion, attempts, reservation, started, billed, deadline
            )

        error: RouterError
        if budget_error is not None and all(a.outcome == "skipped" for a in attempts):
            error = budget_error
        else:
            error = AllAttemptsFailed(attempts, deadline_hit=anyio.current_time() >= deadline)
        error.request_id = request_id
        await self._record_failure(prepared, request_id, decision, attempts, error, started, billed=billed)
        raise error

    async def _failed(self, e: ProviderError, entry: ModelEntry, reservation: str, billed: _Billed) -> None:
        """After a model is given up on: bill what it reported (its hold stays until the call's row
        records the cost) or free its hold; remember a window it stated."""
        if e.usage is not None:
            billed.add(e.usage, entry.cost_nusd(e.usage) or 0, reservation)
        else:
            await self.holds.free(reservation)  # never fails the call: a release it cannot make is journaled
            self._budget_freed()
        if isinstance(e, ContextTooLong) and e.context_window is not None:
            self.catalog.learn_window(entry.ref, e.context_window, "reported by the server in an error")

    def _passed_over(
        self, entry: ModelEntry, tried: int, to_try: int, deadline: float, context_floor: int, prepared: Prepared
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

    @staticmethod
    def _wait_left(prepared: Prepared, started: float) -> float:
        """How long a row may wait for the ledger: what is left of the call's deadline (at least
        timings.SETTLE_MIN_WAIT_S); a row that cannot be written by then goes to the journal."""
        return max(prepared.deadline_s - (time.perf_counter() - started), timings.SETTLE_MIN_WAIT_S)

    async def _reserve(
        self, decision: Decision, entry: ModelEntry, amount_nusd: int, request_id: str, prepared: Prepared,
        deadline: float,
    ) -> str:
        """Hold the worst case against every limit. When only other calls' holds stand in the way
        (what is spent leaves room), wait for them to settle rather than refuse: they usually
        settle far below their worst case.

        Raises:
            BudgetExceeded: when what is spent leaves no room, or ``deadline`` (the end of this
            model's share of the call's time) comes first.
        """
        ttl = prepared.ttl_s
        poll = False
        while True:
            try:
                return await self.holds.reserve(
                    decision.budget, provider=entry.provider, amount_nusd=amount_nusd, request_id=request_id,
                    ttl_s=ttl, poll=poll, wait_s=deadline - anyio.current_time(),
                )
            except BudgetExceeded as e:
                if e.reserved_nusd == 0 or e.spent_nusd + e.needed_nusd > e.limit_nusd:
                    raise
                if anyio.current_time() + timings.HOLD_POLL_S >= deadline:
                    raise
                # Woken by a settle or release in this process; polls for other processes.
                poll = True
                if self._freed is None:
                    self._freed = anyio.Event()
                with anyio.move_on_after(timings.HOLD_POLL_S):
                    await self._freed.wait()

    def _budget_freed(self) -> None:
        if self._freed is not None:
            self._freed.set()
            self._freed = None

    async def _call_with_retries(
        self, entry: ModelEntry, prepared: Prepared, attempts: list[AttemptRecord], window: Window,
        progress: Progress | None,
    ) -> Completion:
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
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    on_text = _streamer(progress) if progress else None  # each try streams its own text
                    completion = await self._try_once(provider, entry, prepared, window, on_text)
                except ProviderError as e:
                    ms = _ms(t0)
                    cost = None if e.usage is None else usd_str(entry.cost_nusd(e.usage) or 0)
                    attempts.append(AttemptRecord(entry.ref, "error", e.code, self.redact.quote(str(e)), ms, e.status, cost))
                    wait = self._retry_wait(e, retries, ms / 1000, window.end)
                    if wait is None:
                        self.health.record(entry.ref, ok=False, latency_ms=ms, counts_against_circuit=counts_against_circuit(e))
                        raise
                    if progress is not None:
                        await progress(0, None, f"{entry.ref} failed ({e.code}); retrying in {wait:.1f} s")
                    t0 = time.perf_counter()
                    await anyio.sleep(wait)
                    retries += 1
                    continue
                ms = _ms(t0)
                self.health.record(entry.ref, ok=True, latency_ms=ms)
                attempts.append(AttemptRecord(entry.ref, "ok", latency_ms=ms))
                return completion
        except ProviderError:
            raise
        except BaseException as e:
            self.health.record(entry.ref, ok=False, latency_ms=_ms(t0), counts_against_circuit=False)
            if isinstance(e, anyio.get_cancelled_exc_class()):
                attempts.append(AttemptRecord(entry.ref, "cancelled", "cancelled", latency_ms=_ms(t0)))
            raise

    async def _try_once(
        self, provider: Provider, entry: ModelEntry, prepared: Prepared, window: Window,
        on_text: Callable[[str], Awaitable[None]] | None,
    ) -> Completion:
        """One try, cut at the model's window. Whatever the adapter lets escape fails this try
        only (a ``MalformedResponse``), never the call.

        Raises:
            ProviderError: Timeout when the window ends first.
        """
        with anyio.CancelScope(deadline=window.end):
            try:
                return await provider.complete(entry.model, prepared.request, on_text=on_text)
            except ProviderError:
                raise
            except Exception as e:
                log.warning("%s: the adapter failed on the answer", entry.ref, exc_info=True)
                raise MalformedResponse(
                    f"{entry.provider} sent an answer that could not be read ({type(e).__name__}: {self.redact.clip(str(e), 200)})",
                    provider=entry.provider, model=entry.model,
                ) from e
        if window.later:
            raise Timeout(
                f"no answer within its {window.share_s:.1f} s share of the call's {prepared.deadline_s:g} s deadline "
                f"(the rest is kept for the {window.later} model{'s' if window.later > 1 else ''} after it)",
                provider=entry.provider, model=entry.model,
            )
        raise Timeout(f"the call's deadline of {prepared.deadline_s:g} s passed", provider=entry.provider, model=entry.model)

    def _retry_wait(self, e: ProviderError, retries: int, took_s: float, window_end: float) -> float | None:
        """How long to wait before retrying this failure on the same model, or None to move on:
        not retryable, out of retries, a Retry-After longer than is worth waiting, or a window
        without room for the wait plus another try as long as this one."""
        policy = self.settings.resilience
        if not e.retryable or retries >= policy.max_retries:
            return None
        if e.retry_after is not None and e.retry_after > policy.retry_after_cap_s:
            return None
        wait = e.retry_after if e.retry_after is not None else _backoff(retries, policy.backoff_base_s, policy.backoff_max_s)
        if anyio.current_time() + wait + took_s >= window_end:
            return None
        return wait

    def _notes(self, prepared: Prepared, method: str | None) -> tuple[str, ...]:
        """What the answer should tell the caller about how its call was handled."""
        notes: list[str] = []
        route = prepared.route
        if route.task_type and not route.models and route.task_type not in self.rules:
            close = difflib.get_close_matches(route.task_type, list(self.rules), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (
                f" (rules exist for: {', '.join(self.rules)})" if self.rules else " (no rules are configured)")
            notes.append(f"no routing rule for task_type {route.task_type!r}: every configured model was a candidate{hint}")
        if method is not None:
            notes.append(note_for(method))
        return tuple(notes)

    async def _settle(
        self,
        prepared: Prepared,
        request_id: str,
        decision: Decision,
        cand: Candidate,
        completion: Completion,
        attempts: list[AttemptRecord],
        reservation: str,
        started: float,
        billed: _Billed,
        deadline: float,
    ) -> Answer:
        entry = cand.entry
        method: str | None = None
        if completion.usage is not None:
            answer = completion.usage
        else:
            # Shielded, and bounded: a call cancelled now still gets its row and frees its hold.
            with anyio.CancelScope(shield=True):
                answer, method = await estimate_usage(
                    self.providers[entry.provider], entry.model, prepared.request, completion.text,
                    wait_s=min(timings.COUNT_TOKENS_S, deadline - anyio.current_time()),
                )
        ref_cost = self.reference.cost_nusd(answer) if self.reference is not None else None
        # The call's cost: the answer's, plus what withheld answers of earlier attempts were billed.
        usage = answer + billed.usage
        cost_nusd = (entry.cost_nusd(answer) or 0) + billed.nusd
        now = datetime.now(UTC)
        row = RequestRow(
            id=request_id,
            ts=now.isoformat(timespec="milliseconds"),
            day=self.budget.clock.day_at(now),
            status="ok",
            tag=prepared.tag,
            task_type=prepared.task_type,
            provider=entry.provider,
            model=entry.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost_nusd=cost_nusd,
            cost_usd=usd_str(cost_nusd),
            cost_estimated=int(method is not None),
            prices=_prices_json(entry),
            reference_cost_nusd=ref_cost,
            latency_ms=_ms(started),
            attempts=json.dumps([a.to_dict() for a in attempts]),
            prompt_hash=prepared.prompt_hash,
            prompt=prepared.prompt_text,
            strategy=decision.strategy,
        )
        # The row is durable before the answer is returned (ledger.run is not cancellable). The
        # same transaction may keep a spare hold, which the next call then takes over.
        spare = self.holds.spare_for(
            decision.budget, provider=entry.provider, amount_nusd=cand.worst_case_nusd, ttl_s=prepared.ttl_s
        )
        # A row the ledger cannot take by the deadline (locked, disk full, unreachable) goes to its
        # journal: the answer is returned all the same, saying so, and its holds keep counting.
        journaled = await self.holds.settle(
            row, reservation_id=reservation, held=billed.held, spare=spare,
            wait_s=max(deadline - anyio.current_time(), timings.SETTLE_MIN_WAIT_S),
        )
        self._budget_freed()
        notes = self._notes(prepared, method) if method is not None or prepared.route.task_type else ()
        if journaled is not None:
            notes = (*notes, journaled)
        return Answer(
            request_id=request_id,
            text=completion.text,
            provider=entry.provider,
            model=entry.ref,
            provider_model=completion.model,
            finish_reason=completion.finish_reason,
            usage=AnswerUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                estimated=method is not None,
                estimate_method=method,
            ),
            cost_usd=row.cost_usd,
            latency_ms=row.latency_ms,
            attempts=attempts,
            budget=_budget_after(decision.budget, entry.provider, cost_nusd),
            notes=notes,
        )

    def _failure_row(
        self, prepared: Prepared, request_id: str, decision: Decision | None, attempts: list[AttemptRecord],
        billed: _Billed | None = None, *, status: str, error_code: str, error: str | None, started: float,
    ) -> RequestRow:
        billed = billed or _Billed()
        now = datetime.now(UTC)
        last = next((a for a in reversed(attempts) if a.outcome != "skipped"), attempts[-1] if attempts else None)
        provider, model = parse_model_ref(last.model) if last else (None, None)
        return RequestRow(
            id=request_id,
            ts=now.isoformat(timespec="milliseconds"),
            day=self.budget.clock.day_at(now),
            status=status,
            tag=prepared.tag,
            task_type=prepared.task_type,
            provider=provider,
            model=model,
            input_tokens=billed.usage.input_tokens,
            output_tokens=billed.usage.output_tokens,
            cached_tokens=billed.usage.cached_tokens,
            cache_write_tokens=billed.usage.cache_write_tokens,
            cost_nusd=billed.nusd,
            cost_usd=usd_str(billed.nusd),
            latency_ms=_ms(started),
            attempts=json.dumps([a.to_dict() for a in attempts]),
            error_code=error_code,
            error=self.redact.clip(error, 2000) if error else None,
            prompt_hash=prepared.prompt_hash,
            prompt=prepared.prompt_text,
            strategy=None if decision is None else decision.strategy,  # None: not routed (the ledger busy)
        )

    async def _record_failure(
        self, prepared: Prepared, request_id: str, decision: Decision | None, attempts: list[AttemptRecord],
        error: Exception, started: float, *, status: str = "error", billed: _Billed | None = None,
        wait_s: float | None = None,
    ) -> None:
        """Record a call that ends with ``error``, its row waiting for the ledger at most ``wait_s``
        (None: what is left of the call's deadline)."""
        code = getattr(error, "code", "error")
        if isinstance(error, BudgetExceeded) and not (billed and billed.nusd):
            status = "refused"
        row = self._failure_row(
            prepared, request_id, decision, attempts, billed, status=status, error_code=code, error=str(error),
            started=started,
        )
        with anyio.CancelScope(shield=True):
            try:
                await self.holds.settle(row, held=billed.held if billed is not None else (),
                                         wait_s=self._wait_left(prepared, started) if wait_s is None else wait_s)
            except SpendNotRecorded as lost:
                raise _also_unrecorded(error, lost) from error
        self._budget_freed()

    def _no_route_error(self, decision: Decision) -> RouterError:
        """Name the limit when the budget is what left no model; otherwise list every exclusion."""
        reasons = {e.model: f"{e.reason}: {e.detail}" for e in decision.excluded}
        # Models that fit the call but were excluded for budget: then the budget is the answer to give.
        budget_reasons = [e for e in decision.excluded if e.reason in ("over_budget", "budget_restricted")]
        if budget_reasons:
            snap = decision.budget
            first = budget_reasons[0]
            provider = parse_model_ref(first.model)[0]
            entry = self.catalog.entries[first.model]
            need = entry.worst_case_nusd(decision.request.input_tokens_bound, decision.request.max_tokens) or 0
            room, state = snap.headroom(provider)
            over = room is not None and need > room
            if state is not None and state.check is not None and (first.reason == "budget_restricted" or over):
                return BudgetExceeded(
                    limit_name=state.check.name, limit_nusd=state.limit.limit_nusd, spent_nusd=state.spent_nusd,
                    reserved_nusd=state.reserved_nusd, needed_nusd=need, resets_at=state.check.resets_at,
                    restricted=not over,
                )
            if snap.per_request_nusd is not None:
                return BudgetExceeded(
                    limit_name="global per_request", limit_nusd=snap.per_request_nusd, spent_nusd=0, reserved_nusd=0,
                    needed_nusd=need, resets_at=None,
                )
        return NoRoute("no model can take this call", reasons)

    # -- reports and budgets --------------------------------------------------------------------

    async def cost_report(
        self, *, period: str | None = None, group_by: str = "provider", since: str | None = None, until: str | None = None,
        tag: str | None = None, provider: str | None = None,
    ) -> ReportResult:
        """Spend for a period, grouped, with every budget's state, a projection and savings. A
        provider that is not configured is still reported (its past calls count), with a note."""
        from .reports import cost_report

        where = {k: v for k, v in (("tag", tag), ("provider", provider)) if v is not None}
        report = await cost_report(
            self.ledger, self.budget, self.reference, period=period, group_by=group_by, since=since, until=until,
            where=where,
        )
        report.filters = where
        if provider is not None and provider not in self.availability:
            import difflib

            close = difflib.get_close_matches(provider, list(self.availability), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"configured: {', '.join(self.availability) or 'none'}"
            report.notes.append(f"no provider named {provider!r} is configured ({hint}); only calls the ledger "
                                "holds for that name are counted")
        return report

    async def set_budget(self, scope: str, period: str, limit_usd: Decimal | None) -> BudgetResult:
        kind, name = parse_scope(scope)
        if kind == "provider" and name not in self.availability:
            raise InvalidInput("scope", f"unknown provider {name!r}", allowed=", ".join(f"provider:{p}" for p in self.availability))
        stored = None if limit_usd is None or not limit_usd.is_finite() else usd_to_nusd(limit_usd)
        if stored == 0 and limit_usd:
            raise InvalidInput("limit_usd", f"${limit_usd:f} is less than half a billionth of a dollar, the ledger's "
                               "smallest amount", allowed="0 (nothing may be spent), or at least 0.000000001")
        await self.ledger.run(self.budget.set_limit, scope, period, limit_usd)
        states = await self.ledger.run(self.budget.all_states)
        return BudgetResult(
            # As stored: whole nano-dollars, written plainly ("0.0000001", not "1E-7")
            changed={"scope": scope, "period": period, "limit_usd": None if stored is None else usd_str(stored)},
            budgets=[s.to_dict() for s in states],
        )

    async def budgets(self) -> list[dict[str, Any]]:
        states = await self.ledger.run(self.budget.all_states)
        return [s.to_dict() for s in states]

    async def journaled(self, *, tag: str | None = None, day: str | None = None, entries: bool = False) -> dict[str, Any]:
        """What waits in the ledger's journal, for a resource: ``{"requests", "cost_usd", "note"}``
        (``note`` None when nothing waits), with each row's plain facts under ``entries`` when
        asked. Only ``tag``'s rows when one is given (a member's view: never another tag's count or
        cost), only ``day``'s when one is. Free when nothing waits (see ``reports.journaled``)."""
        from .reports import journaled

        waiting = await journaled(self.ledger, where={"tag": tag} if tag is not None else None, first_day=day, last_day=day)
        out: dict[str, Any] = {**waiting.totals(), "note": waiting.note}
        if entries:
            out["entries"] = [
                {"id": r.id, "ts": r.ts, "day": r.day, "tag": r.tag, "task_type": r.task_type, "provider": r.provider,
                 "model": r.model, "status": r.status, "error_code": r.error_code, "cost_usd": usd_str(r.cost_nusd),
                 "cost_estimated": bool(r.cost_estimated)}
                for r in reversed(waiting.rows)  # newest first, as the ledger's entries
            ]
        return out

    async def limit_in_force(self, scope: str, period: str) -> int | None:
        """The limit on ``scope``'s ``period`` now, in nano-dollars (None: there is none), read from
        the ledger itself rather than any cache: a member's change is checked against it."""
        overrides = await self.ledger.run(self.ledger.budget_overrides)
        if (scope, period) in overrides:
            return overrides[(scope, period)]
        b = self.settings.budget
        kind, name = parse_scope(scope)
        if kind == "global":
            value = getattr(b, f"{period}_usd", None)
        else:
            limits = (b.providers if kind == "provider" else b.tags).get(name or "")
            value = getattr(limits, f"{period}_usd", None) if limits is not None else None
        return None if value is None else usd_to_nusd(value)

    def providers_status(self) -> list[dict[str, Any]]:
        out = []
        for cfg in self.settings.providers:
            usable, why = self.availability[cfg.name]
            models = [e for e in self.catalog if e.provider == cfg.name]
            out.append(
                {
                    "name": cfg.name,
                    "kind": cfg.kind,
                    "imitates": cfg.mock.imitates if cfg.mock else None,
                    "base_url": cfg.base_url,
                    "usable": usable,
                    "why": why,
                    "models": [{**e.describe(), "health": self.health.describe(e.ref)} for e in models],
                }
            )
        return out

    async def ledger_rows(self, *, day: str | None = None, limit: int = 50, tag: str | None = None) -> list[dict[str, Any]]:
        """The newest rows (of one day), newest first; only ``tag``'s when one is given (a member's view)."""
        if day is not None:
            try:
                day = datetime.fromisoformat(day).date().isoformat()
            except ValueError:
                raise InvalidInput("date", f"{day!r} is not a date", allowed="YYYY-MM-DD") from None
        if tag is None:
            rows = await self.ledger.run(self.ledger.rows, day=day, limit=limit)
        else:
            # The tag is filtered in the query, so a member gets its own newest rows, however many
            # other tags' rows are newer. (``rows`` has no tag filter; this is its query with one.)
            tie = getattr(self.ledger, "_NEWEST_LAST_TIE", "id")
            sql = "SELECT * FROM requests WHERE tag = ?" + (" AND day = ?" if day is not None else "")
            sql += f" ORDER BY ts DESC, {tie} DESC LIMIT ?"
            params = [tag, *([day] if day is not None else []), limit]
            rows = await self.ledger.run(self.ledger.query, sql, params)
        for r in rows:
            r["cost_usd"] = usd_str(r.pop("cost_nusd") or 0)
            ref = r.pop("reference_cost_nusd")
            r["reference_cost_usd"] = None if ref is None else usd_str(ref)
            r["attempts"] = json.loads(r["attempts"] or "[]")
            r["prices"] = json.loads(r["prices"]) if r["prices"] else None
            r["cost_estimated"] = bool(r["cost_estimated"])
        return rows


def _also_unrecorded(error: Exception, lost: SpendNotRecorded) -> SpendNotRecorded:
    """The error a failed call ends with, when its billed spend could not be recorded either."""
    return SpendNotRecorded(f"{error}. Besides, {lost}", request_id=lost.request_id or "", cost_nusd=lost.cost_nusd)


def _clean_label(value: str | None, field_name: str) -> str:
    if value is None:
        return ""
    value = value.strip()
    if any(ord(ch) < 32 for ch in value):
        raise InvalidInput(field_name, "contains control characters", allowed="printable text")
    if not value.isascii() and not _is_text(value):
        raise _not_text(field_name)
    return value


def _is_text(value: str) -> bool:
    """False for a string holding a lone UTF-16 surrogate: it cannot be encoded, sent or stored."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _not_text(field_name: str) -> InvalidInput:
    return InvalidInput(field_name, "holds a lone UTF-16 surrogate (half of a character), which is not text",
                        allowed="valid Unicode text")


def _first_not_text(args: CompleteArgs) -> str:
    """Which of a call's texts holds a lone surrogate."""
    if args.system and not _is_text(args.system):
        return "system"
    if args.prompt is not None:
        return "prompt"
    for i, m in enumerate(args.messages or ()):
        if not _is_text(m.content):
            return f"messages[{i}].content"
    return "prompt"


def _skipped(excluded: Excluded) -> AttemptRecord:
    """A model routing left out, as the call's attempts list it."""
    return AttemptRecord(excluded.model, "skipped", excluded.reason, excluded.detail)


def _backoff(retries: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: between half and all of base·2^retries, capped."""
    return min(base * (2**retries), cap) * random.uniform(0.5, 1.0)


def _ms(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1000)


def _prices_json(entry: ModelEntry) -> str:
    """The prices a row was charged at, as JSON."""
    return _prices_text(entry.price_source, entry.prices)


@functools.lru_cache(maxsize=1024)
def _prices_text(source: str, p: Prices | None) -> str:
    # Keyed by the prices themselves (not the entry): a genai-prices entry is repriced in place
    # when a dated price change takes effect.
    data: dict[str, Any] = {"source": source}
    if p is not None:
        data |= {
            "input_per_mtok": str(p.input),
            "output_per_mtok": str(p.output),
            "cached_input_per_mtok": str(p.cache_read),
            "cache_write_per_mtok": str(p.cache_write),
        }
    return json.dumps(data)


def _budget_after(snapshot: BudgetSnapshot, provider: str, cost_nusd: int) -> dict[str, Any]:
    """The tier after this call, and the limit touching it with the least left, this call's cost
    added (spend read at the call's start). Every limit is in ``llm-router://budgets``."""
    tightest: LimitState | None = None
    least = 0
    tier: Tier = "normal"
    for s in snapshot.for_provider(provider):
        after = LimitState(s.limit, s.check, s.spent_nusd + cost_nusd, s.reserved_nusd)
        if tightest is None or after.remaining_nusd < least:
            tightest, least = after, after.remaining_nusd
        tier = worst_tier((tier, tier_of(after.fraction)))
    return {"tier": tier, "tightest": None if tightest is None else tightest.to_dict()}


def _streamer(progress: Progress) -> Callable[[str], Awaitable[None]]:
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
