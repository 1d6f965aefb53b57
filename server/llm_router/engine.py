"""One request end to end: validate → route → reserve → call with fallback → settle → record.

``Engine.complete`` is the path to read first: the chain of models, each tried (``attempts``:
try, classify the failure, retry or give the model up), until one answers or none is left. The
rest has its own module: the arguments checked (``prepare``), the decision and why it refuses
(``routing``), the row (``rows``), the resources' shapes (``views``). Everything it needs is
built once, in ``Engine.__init__``: the catalog (prices looked up once), the providers (one
connection pool each), the ledger connection, the budget and the health board.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio

from . import timings, views
from .adaptive import Planner
from .answers import Answers
from .attempts import Answer, ModelCaller, Progress, passed_over, skipped
from .background import Background
from .budget import Budget, BudgetSnapshot, limit_to_store
from .calls import BudgetResult, CompleteArgs, CompleteResult, ExplainResult, RateResult, ReportResult
from .catalog import Catalog, ModelEntry
from .config import Settings
from .content import FINISH_REASONS, FinishReason
from .estimates import estimate_usage
from .feedback import Feedback
from .holds import Holds
from .judge import Judge, JudgeCase
from .ledger import Ledger, LedgerUnavailable, RequestRow, open_ledger
from .ledger.records import RatedRequest
from .prepare import Prepared, prepare
from .providers import Provider, availability, build_provider
from .quality import QualityBoard
from .redaction import Redactor
from .resilience import HealthBoard, Window
from .routing import Candidate, Decision, Excluded, RouteRequest, decide
from .rows import Billed, request_row
from .telemetry import CallTrace, Telemetry, build_telemetry
from .types import (
    AllAttemptsFailed,
    AttemptRecord,
    BudgetExceeded,
    Completion,
    ContextTooLong,
    LedgerBusy,
    ProviderError,
    Quality,
    RouterError,
    SpendNotRecorded,
    usd_str,
)
from .windows import WindowAsker

__all__ = ["Engine", "Progress", "new_request_id"]

log = logging.getLogger("llm_router.engine")


@dataclass(slots=True)
class _Call:
    """One ``complete`` as it walks its chain: what it was asked, what it has tried and billed,
    and the hold of the model being asked."""

    prepared: Prepared
    request_id: str
    decision: Decision
    started: float
    """``time.perf_counter`` at the call's start (the row's latency)."""
    deadline: float
    """anyio clock time by which the call ends, answered or not."""
    to_try: int
    tried: int = 0
    attempts: list[AttemptRecord] = field(default_factory=list)
    billed: Billed = field(default_factory=Billed)
    reservation: str | None = None
    budget_error: BudgetExceeded | None = None
    context_floor: int = 0
    """After a context-length error, only models with a larger known window are asked."""
    status: Callable[[str, str], None] | None = None
    """Told (message, model) before each model is asked and at each fallback."""


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] = os.environ,
        ledger: Ledger | None = None,
        providers: Mapping[str, Provider] | None = None,
        telemetry: Telemetry | None = None,
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
        self.telemetry = telemetry if telemetry is not None else build_telemetry(settings, env, self.redact)
        """Spans of every call when an exporter is configured; else ``telemetry.OFF``, which does nothing."""
        self.caller = ModelCaller(self.providers, self.health, self.redact, settings.resilience, self.telemetry)
        self.rules = {r.task_type: tuple(r.chain) for r in settings.routing.rules}
        ref = settings.routing.reference_model
        self.reference: ModelEntry | None = self.catalog.entries.get(ref) if ref else None
        self._closed = False
        self._freed: anyio.Event | None = None  # made on first use: an Event needs a running loop
        self.windows = WindowAsker(self.catalog, self.providers)
        self._check_timezone()
        self.ledger.reclaim()
        # What was learned of the models' answers: rebuilt from the ledger's ratings, then kept in step.
        self.board = QualityBoard(half_life_days=settings.quality.half_life_days,
                                  tiers={e.ref: e.tier for e in self.catalog})
        self.feedback = Feedback(self.ledger, self.board)
        self.feedback.load()
        self.planner = Planner(settings.quality, self.board)
        self._answered_as: dict[str, str] = {}
        """model ref → the model name its provider last reported: a new one means a new version."""
        self.answers = Answers(settings.ledger.keep_answers_s)
        """Every call's outcome for ``keep_answers_s`` after it ends (``answers``)."""
        self.background = Background()
        """Calls that outlive their request (``background``): closed first, they need everything else."""
        self.judge: Judge | None = None
        """Scores a sample of answers after they are returned, when ``[quality] judge_model`` is set."""
        if (judge := settings.quality.judge_model) is not None:
            formats = "json_schema" in self.catalog.entries[judge].capabilities.names
            self.judge = Judge(settings.quality, self.complete, self.feedback.judged, can_format=formats)

    def _check_timezone(self) -> None:
        """Days are stored in the budget's time zone; if it changed, re-file every row."""
        tz = self.budget.clock.tz_name
        stored = self.ledger.meta("timezone")
        if stored != tz:
            if stored is not None:
                self.ledger.rebuild_rollups(self.budget.clock.day_of)
            self.ledger.set_meta("timezone", tz)

    async def aclose(self) -> None:
        """Close once (HTTP closes it at uvicorn's shutdown, and the caller again after)."""
        if self._closed:
            return
        self._closed = True
        await self.background.aclose()  # a call finishing may still offer its answer to the judge
        if self.judge is not None:  # first: its call in flight still has its providers and ledger
            await self.judge.aclose()
        for p in self.providers.values():
            await p.aclose()
        self.ledger.close()
        await self.telemetry.aclose()  # last: the judge's spans too

    # -- validation -----------------------------------------------------------------------------

    def prepare(self, args: CompleteArgs) -> Prepared:
        """See ``prepare.prepare``."""
        return prepare(args, self.settings, self.catalog)

    # -- routing --------------------------------------------------------------------------------

    def _decide(self, route: RouteRequest, snapshot: BudgetSnapshot, *, explain: bool = True) -> Decision:
        return decide(
            route, catalog=self.catalog, rules=self.rules, default_strategy=self.settings.routing.strategy,
            default_quality=self._default_quality, availability=self.availability,
            circuit=self.health.allows, latency_of=self.health.p50_ms, error_rate_of=self.health.error_rate,
            budget=snapshot, explain=explain, adaptive=self.planner,
        )

    @property
    def _default_quality(self) -> Quality:
        """The floor routing applies when a call names none (``auto`` is resolved by ``prepare``)."""
        default = self.settings.routing.default_quality
        return "medium" if default == "auto" else default

    async def decision(self, prepared: Prepared, *, explain: bool = True, wait_s: float | None = None) -> Decision:
        """Route the call on the budget as the ledger has it now, waiting for the ledger at most
        ``wait_s`` (None: the call's whole deadline).

        Regression: routing's read waited for this server's ledger connection without end, so a
        call queued behind another call of the same server waiting for a frozen process's write
        lock waited that call's whole deadline, not its own.

        Raises:
            LedgerBusy: the ledger could not be read within the wait.
        """
        await self.windows.ask_if_due()
        await self.feedback.refresh_if_due()
        snapshot = await self.holds.snapshot(tag=prepared.tag, wait_s=prepared.deadline_s if wait_s is None else wait_s)
        return self._decide(prepared.route, snapshot, explain=explain)

    async def explain(self, args: CompleteArgs) -> ExplainResult:
        prepared = self.prepare(args)
        decision = await self.decision(prepared)
        return ExplainResult(**decision.explain(), input_tokens_estimate=prepared.route.input_tokens_typical,
                             needs=sorted(prepared.route.needs))

    # -- quality feedback -----------------------------------------------------------------------

    async def rated_request(self, request_id: str) -> RatedRequest:
        """See ``Feedback.subject``."""
        return await self.feedback.subject(request_id)

    async def rate(self, subject: RatedRequest, score: int, comment: str | None) -> RateResult:
        """See ``Feedback.rate``."""
        return await self.feedback.rate(subject, score, comment)

    # -- the call -------------------------------------------------------------------------------

    async def complete(self, args: CompleteArgs, *, progress: Progress | None = None, request_id: str | None = None,
                       status: Callable[[str, str], None] | None = None) -> CompleteResult:
        """Route, then walk the chain: reserve the worst case, call, settle to the actual cost.

        Exactly one ledger row is written per call that passed validation, before this returns
        or raises (or, when the ledger cannot take it by the deadline, journaled: see
        ``ledger.settling.settle``); no reservation outlives the call, whatever happens (cancellation
        included), but a journaled call's, which counts until its row is written.
        Every model routing or the walk passed over is in the attempts, as ``skipped`` with why.
        The deadline is shared along the chain (``resilience.model_window``): a slow first model
        cannot leave a healthy later one no time. ``request_id``: the caller's (so it can say it
        before the call ends), else a new one; ``status`` is told (message, model) before each model
        is asked and at each fallback: once it was told, a model has been asked.

        Raises:
            InvalidInput, NoRoute, BudgetExceeded, AllAttemptsFailed (all but the first carrying
            the call's ``request_id``).
        """
        prepared = self.prepare(args)
        request_id = request_id or new_request_id()
        with self.telemetry.call(prepared, request_id) as trace:
            result = await self._complete(prepared, request_id, progress, status, trace)
            trace.answered(result)
            return result

    async def _complete(self, prepared: Prepared, request_id: str, progress: Progress | None,
                        status: Callable[[str, str], None] | None, trace: CallTrace) -> CompleteResult:
        started = time.perf_counter()
        deadline = anyio.current_time() + prepared.deadline_s  # routing's wait for the ledger included
        try:
            decision = await self.decision(prepared, explain=False)
        except LedgerBusy as e:
            e.request_id = request_id
            await self._record_failure(prepared, request_id, None, [], e, started, wait_s=0.0)
            raise
        if decision.strategy == "adaptive" and decision.source == "catalog" and decision.chain:
            # Committed before any await: concurrent calls each see the split the one before left.
            self.planner.routed(decision.adaptive, prepared.route.task_type, decision.chain[0].typical_nusd)
        if not decision.chain:
            error = decision.refusal()
            error.request_id = request_id
            said = [skipped(x) for x in decision.walk if isinstance(x, Excluded)]
            trace.routed(decision, said)
            await self._record_failure(prepared, request_id, decision, said, error, started, status="refused")
            raise error

        call = _Call(prepared, request_id, decision, started, deadline,
                     to_try=min(len(decision.chain), self.settings.routing.max_attempts), status=status)
        trace.routed(decision, call.attempts)
        answered: tuple[Candidate, Answer] | None = None
        try:
            for item in decision.walk:
                if isinstance(item, Excluded):  # left out by routing: said, not tried
                    call.attempts.append(skipped(item))
                    continue
                call.tried += 1
                skip = passed_over(item.entry, call.tried, call.to_try, deadline, call.context_floor, prepared)
                if skip is not None:
                    call.attempts.append(skip)
                    continue
                # This model's share of the time left, a wait for budget included; the models after
                # it keep theirs.
                window = Window.share_of(deadline, later=call.to_try - call.tried,
                                         reserve_s=self.settings.resilience.fallback_reserve_s)
                try:
                    call.reservation = await self._reserve(call, item, window.end)
                except BudgetExceeded as e:  # no room for its worst case: a cheaper model may fit
                    call.budget_error = e
                    call.attempts.append(AttemptRecord(item.entry.ref, "skipped", e.code, str(e)))
                    continue
                if status is not None:
                    status(f"asking {item.entry.ref} ({call.tried}/{call.to_try})", item.entry.ref)
                if progress is not None:
                    await progress(0, None, f"asking {item.entry.ref} ({call.tried}/{call.to_try})")
                try:
                    answered = item, await self.caller.call(item.entry, prepared, call.attempts, window, progress)
                    break
                except ProviderError as e:  # given up on, after its retries
                    if not await self._given_up(call, item.entry, e, progress):
                        break
        except BaseException as e:
            await self._interrupted(call, e)
            raise
        if answered is not None:
            result = await self._settle(call, *answered)
            if self.judge is not None and self.judge.sampled(request_id, prepared.tag):  # judged after it is returned
                self.judge.offer(JudgeCase.of(prepared, request_id, answered[0].entry, answered[1].completion))
            return result
        raise await self._chain_failed(call)

    async def _given_up(self, call: _Call, entry: ModelEntry, e: ProviderError, progress: Progress | None) -> bool:
        """After a model is given up on (its retries spent): bill what it reported or free its hold,
        and say whether the walk moves on to the next model (not after a failure no other model
        would fix, ``fallback_ok``)."""
        assert call.reservation is not None  # a model is only asked once its hold is had
        await self._failed(e, entry, call.reservation, call.billed)
        call.reservation = None
        if isinstance(e, ContextTooLong) and entry.context_known:
            call.context_floor = max(call.context_floor, entry.context_window)
        if not e.fallback_ok:
            return False
        if call.status is not None and call.tried < call.to_try:
            call.status(f"{entry.ref} failed ({e.code}); falling back", entry.ref)
        if progress is not None and call.tried < call.to_try:
            await progress(0, None, f"{entry.ref} failed ({e.code}); falling back")
        return True

    async def _interrupted(self, call: _Call, e: BaseException) -> None:
        """Cancelled by the client, the ledger busy past the deadline (or a bug): record the call,
        free its holds (or journal them with its row); the caller re-raises ``e``.

        Raises:
            SpendNotRecorded: ``e`` is one of ours, and the call's billed spend could not be
            recorded either (the cancellation or the bug goes on, the loss logged).
        """
        cancelled = isinstance(e, anyio.get_cancelled_exc_class())
        known = e if isinstance(e, RouterError) and not cancelled else None
        if known is not None and known.request_id is None:
            known.request_id = call.request_id
        request_id, reservation, billed = call.request_id, call.reservation, call.billed
        with anyio.CancelScope(shield=True):
            error: str | None
            if cancelled:
                status, code, error = "cancelled", "cancelled", None
            elif known is not None:
                status, code, error = "error", known.code, str(known)
            else:  # a bug: its repr may quote anything, a key included
                status, code, error = "error", "internal", self.redact(repr(e))
            row = self._row(call.prepared, request_id, call.decision, call.attempts, call.started, status=status,
                            error_code=code, error=error, billed=billed)
            # A busy ledger will not be less busy now: the row goes straight to the journal.
            wait = 0.0 if isinstance(e, LedgerBusy) else call.prepared.wait_left(call.started)
            try:
                await self.holds.settle(row, reservation_id=reservation, held=billed.held, wait_s=wait)
            except SpendNotRecorded as lost:
                if known is None:
                    log.error("%s", lost)  # the cancellation (or the bug) goes on
                else:
                    raise _also_unrecorded(known, lost) from e
            except LedgerUnavailable as gone:  # its file was replaced: the error that ends the call says so
                if known is None:
                    log.error("request %s: %s", request_id, gone)
            self._budget_freed()

    async def _chain_failed(self, call: _Call) -> RouterError:
        """The error a call ends with when no model answered, once its row is recorded: the budget's
        refusal when every model was skipped and one was for budget, else every attempt."""
        error: RouterError
        if call.budget_error is not None and all(a.outcome == "skipped" for a in call.attempts):
            error = call.budget_error
        else:
            error = AllAttemptsFailed(call.attempts, deadline_hit=anyio.current_time() >= call.deadline)
        error.request_id = call.request_id
        await self._record_failure(call.prepared, call.request_id, call.decision, call.attempts, error, call.started,
                                   billed=call.billed)
        return error

    async def _failed(self, e: ProviderError, entry: ModelEntry, reservation: str, billed: Billed) -> None:
        """After a model is given up on: bill what it reported (its hold stays until the call's row
        records the cost) or free its hold; remember a window it stated."""
        if e.usage is not None:
            billed.add(e.usage, entry.cost_nusd(e.usage) or 0, reservation)
        else:
            await self.holds.free(reservation)  # never fails the call: a release it cannot make is journaled
            self._budget_freed()
        if isinstance(e, ContextTooLong) and e.context_window is not None:
            self.catalog.learn_window(entry.ref, e.context_window, "reported by the server in an error")

    async def _reserve(self, call: _Call, cand: Candidate, deadline: float) -> str:
        """Hold ``cand``'s worst case against every limit. When only other calls' holds stand in
        the way (what is spent leaves room), wait for them to settle rather than refuse: they
        usually settle far below their worst case.

        Raises:
            BudgetExceeded: when what is spent leaves no room, or ``deadline`` (the end of this
            model's share of the call's time) comes first.
        """
        poll = False
        while True:
            try:
                return await self.holds.reserve(
                    call.decision.budget, provider=cand.entry.provider, amount_nusd=cand.worst_case_nusd,
                    request_id=call.request_id, ttl_s=call.prepared.ttl_s, poll=poll,
                    wait_s=deadline - anyio.current_time(),
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

    async def _settle(self, call: _Call, cand: Candidate, answered: Answer) -> CompleteResult:
        """Record the answered call (its cost from the usage reported, or estimated when none
        was), free or pass on its holds, and build its result."""
        prepared, decision, billed, deadline = call.prepared, call.decision, call.billed, call.deadline
        completion = answered.completion
        reservation = call.reservation
        assert reservation is not None  # a model is only asked once its hold is had
        entry = cand.entry
        method: str | None = None
        if completion.usage is not None:
            answer = completion.usage
        else:
            # Shielded, and bounded: a call cancelled now still gets its row and frees its hold.
            with anyio.CancelScope(shield=True):
                answer, method = await estimate_usage(
                    self.providers[entry.provider], entry.model, prepared.request, answer_text(completion),
                    wait_s=min(timings.COUNT_TOKENS_S, deadline - anyio.current_time()),
                )
        ref_cost = self.reference.cost_nusd(answer) if self.reference is not None else None
        # The call's cost: the answer's, plus what withheld answers of earlier attempts were billed.
        answer_nusd = entry.cost_nusd(answer) or 0
        if billed.nusd:  # earlier attempts were billed too: each attempt shows its own cost
            call.attempts[-1].cost_usd = usd_str(answer_nusd)
        usage = answer + billed.usage
        cost_nusd = answer_nusd + billed.nusd
        if decision.strategy == "adaptive" and decision.source == "catalog":  # adaptive traffic's typical tokens
            self.planner.observed(prepared.route.task_type, answer)
        if completion.model and self._answered_as.setdefault(entry.ref, completion.model) != completion.model:
            log.info("%s now answers as %r (was %r): its ratings count less until it is re-learned", entry.ref,
                     completion.model, self._answered_as[entry.ref])
            self._answered_as[entry.ref] = completion.model
            self.board.forget_some(entry.ref)
        row = request_row(
            prepared, call.request_id, self.budget.clock, status="ok", attempts=call.attempts, started=call.started,
            strategy=decision.strategy, answered_by=entry, usage=usage, cost_nusd=cost_nusd,
            reference_cost_nusd=ref_cost,
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
        notes = views.answer_notes(prepared.route, self.rules, method) if method is not None or prepared.route.task_type else []
        if journaled is not None:
            notes.append(journaled)
        # Built without validation, like the row: every field comes from the engine itself, once per
        # call, and the answer is paid for and recorded by now (nothing may fail it any more).
        result = CompleteResult.model_construct(
            request_id=call.request_id,
            text=completion.text,
            provider=entry.provider,
            model=entry.ref,
            provider_model=completion.model,
            finish_reason=finish_reason(completion),
            json_=answered.value,
            tool_calls=list(completion.tool_calls) or None,
            usage=usage,
            cost_usd=row.cost_usd,
            latency_ms=row.latency_ms,
            attempts=call.attempts,
            budget=views.budget_after(decision.budget, entry.provider, cost_nusd),
            notes=notes or None,
        )
        result._structured = answered.structured
        return result

    def _row(
        self, prepared: Prepared, request_id: str, decision: Decision | None, attempts: list[AttemptRecord],
        started: float, *, status: str, error_code: str, error: str | None = None, billed: Billed | None = None,
    ) -> RequestRow:
        """The row of a call that ends without an answer: what failed attempts still cost, the
        error passed through the redactor."""
        billed = billed or Billed()
        return request_row(
            prepared, request_id, self.budget.clock, status=status, attempts=attempts, started=started,
            strategy=None if decision is None else decision.strategy,  # None: not routed (the ledger busy)
            usage=billed.usage, cost_nusd=billed.nusd, error_code=error_code,
            error=self.redact.clip(error, 2000) if error else None,
        )

    async def _record_failure(
        self, prepared: Prepared, request_id: str, decision: Decision | None, attempts: list[AttemptRecord],
        error: RouterError, started: float, *, status: str = "error", billed: Billed | None = None,
        wait_s: float | None = None,
    ) -> None:
        """Record a call that ends with ``error``, its row waiting for the ledger at most ``wait_s``
        (None: what is left of the call's deadline)."""
        if isinstance(error, BudgetExceeded) and not (billed and billed.nusd):
            status = "refused"
        row = self._row(prepared, request_id, decision, attempts, started, status=status, error_code=error.code,
                        error=str(error), billed=billed)
        with anyio.CancelScope(shield=True):
            try:
                await self.holds.settle(row, held=billed.held if billed is not None else (),
                                         wait_s=prepared.wait_left(started) if wait_s is None else wait_s)
            except SpendNotRecorded as lost:
                raise _also_unrecorded(error, lost) from error
        self._budget_freed()

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
            report.notes.append(views.unknown_provider_note(provider, self.availability))
        return report

    async def set_budget(self, scope: str, period: str, limit_usd: Decimal | None) -> BudgetResult:
        stored = limit_to_store(scope, limit_usd, self.availability)
        await self.holds.set_limit(scope, period, limit_usd)
        return BudgetResult(
            # As stored: whole nano-dollars, written plainly ("0.0000001", not "1E-7")
            changed={"scope": scope, "period": period, "limit_usd": None if stored is None else usd_str(stored)},
            budgets=views.budgets_view(await self.holds.states()),
        )

    async def budgets(self) -> list[dict[str, Any]]:
        return views.budgets_view(await self.holds.states())

    async def journaled(self, *, tag: str | None = None, day: str | None = None, entries: bool = False) -> dict[str, Any]:
        """What waits in the ledger's journal, for a resource: ``{"requests", "cost_usd", "note"}``
        (``note`` None when nothing waits), with each row's plain facts under ``entries`` when
        asked. Only ``tag``'s rows when one is given (a member's view: never another tag's count or
        cost), only ``day``'s when one is. Free when nothing waits (see ``reports.journaled``)."""
        from .reports import journaled

        waiting = await journaled(self.ledger, where={"tag": tag} if tag is not None else None, first_day=day, last_day=day)
        out: dict[str, Any] = {**waiting.totals(), "note": waiting.note}
        if entries:
            out["entries"] = views.journal_entries(waiting.rows)
        return out

    async def limit_in_force(self, scope: str, period: str) -> int | None:
        """See ``Holds.limit_in_force``."""
        return await self.holds.limit_in_force(scope, period)

    def quality_status(self) -> dict[str, Any]:
        """What the router does with what it learns: the adaptive strategy's counts and the judge's."""
        q = self.settings.quality
        return {"target": q.target, "explore_share": q.explore_share, "half_life_days": q.half_life_days,
                "adaptive": self.planner.status(), "judge": self.judge.status() if self.judge is not None else None}

    def providers_status(self) -> list[dict[str, Any]]:
        return views.providers_view(self.settings.providers, self.availability, self.catalog, self.health, self.board)

    async def ledger_rows(self, *, day: str | None = None, limit: int = 50, tag: str | None = None) -> list[dict[str, Any]]:
        """The newest rows (of one day), newest first; only ``tag``'s when one is given (a member's
        view: filtered in the query, so a member gets its own newest rows however many are newer)."""
        day = views.ledger_day(day) if day is not None else None
        rows = await self.ledger.run(self.ledger.rows, day=day, limit=limit, tag=tag)
        return [views.ledger_row_view(r) for r in rows]


def new_request_id() -> str:
    """A call's id: 128 random bits, as hex."""
    return os.urandom(16).hex()


def answer_text(completion: Completion) -> str:
    """What the model wrote, as a token count sees it: its text, and its tool calls' names and arguments."""
    if not completion.tool_calls:
        return completion.text
    calls = "".join(f"{c.name}{json.dumps(c.arguments, ensure_ascii=False)}" for c in completion.tool_calls)
    return completion.text + calls


def finish_reason(completion: Completion) -> FinishReason:
    """The answer's finish reason in the router's words (adapters map their own; a provider that
    said nothing, or something else, ended normally)."""
    if completion.tool_calls:
        return "tool_calls"
    reason = completion.finish_reason
    return reason if reason in FINISH_REASONS else "stop"


def _also_unrecorded(error: Exception, lost: SpendNotRecorded) -> SpendNotRecorded:
    """The error a failed call ends with, when its billed spend could not be recorded either."""
    return SpendNotRecorded(f"{error}. Besides, {lost}", request_id=lost.request_id or "", cost_nusd=lost.cost_nusd)
