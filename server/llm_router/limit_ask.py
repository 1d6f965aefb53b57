"""Ask before refusing: when a ``complete`` would exceed a daily or monthly limit, an admin whose
client can show a form is asked whether to raise that limit, and the call goes on when they say yes.

Who is asked: an ``admin`` caller (stdio, token-less loopback HTTP, an admin token), never a
``member``; only for a ``global``, ``provider:NAME`` or ``tag:NAME`` daily or monthly limit, never
for the per-request limit of the config nor for the caller's own ``max_cost_usd`` (those are the
caller's own ceilings, not a budget running out). ``[budget] ask_to_raise = false`` turns it off.

How, by protocol era:

* 2025-11-25 and before (handshake): an ``elicitation/create`` request in form mode, sent while
  the call waits, when the client declared form elicitation at ``initialize``; no answer within
  ``[budget] ask_timeout_s`` is a no.
* 2026-07-28: the multi round-trip pattern. The call answers ``input_required`` with the same form
  under ``inputRequests`` and a request state; the client retries the ``tools/call`` with
  ``inputResponses`` and that state. The state is sealed by the SDK's ``RequestStateBoundary``
  (AES-GCM under a key held by this process only, bound to the tool, its arguments, the caller
  and a 10-minute expiry), and carries a one-time nonce: a client cannot raise a limit it was not
  asked about, nor replay an answer for another call or twice.

Yes raises the limit as ``set_budget`` does (through the engine, persisted, the budgets resource
notified), then the call is made again. No, cancel, decline, a timeout or a malformed answer leaves
the refusal as it was, saying the raise was declined.

The ledger: the refused try is a call like any other and keeps its ``refused`` row (no cost, no
hold left); the call made after the raise is a new request with its own id and row, billed once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .types import NUSD_PER_USD, BudgetExceeded, usd_str, usd_to_nusd

if TYPE_CHECKING:
    from .access import Access
    from .mcp_state import Ctx, Wire

__all__ = ["ASK_KEY", "MAX_ASKS", "STATE_TTL_S", "Asker", "Question", "StateRefused", "question_for", "state_boundary", "with_outcome"]

ASK_KEY = "raise_limit"
"""The key of the one input request (``inputRequests``) and its response (``inputResponses``)."""
STATE_TTL_S = 600.0
"""How long a request state the client holds stays good (sealed into it by the SDK's boundary)."""
MAX_ASKS = 3
"""At most this many limits are raised for one call (each a different limit)."""
_STATE_VERSION = 1
_CENT = NUSD_PER_USD // 100
_MAX_LIMIT_NUSD = 10_000_000 * NUSD_PER_USD


class StateRefused(MCPError):
    """A request state this server cannot use (not its own, or answered before): a JSON-RPC
    invalid-params error, as the spec has it, never a tool error."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(INVALID_PARAMS, message, data={"reason": reason})


@dataclass(frozen=True, slots=True)
class Question:
    """One refusal, as the admin is asked about it: the limit, its figures, and the proposal (all
    nano-dollars)."""

    scope: str
    period: str
    limit_nusd: int
    spent_nusd: int
    reserved_nusd: int
    needed_nusd: int
    proposal_nusd: int
    resets_at: str | None
    restricted: bool
    request_id: str | None

    @property
    def name(self) -> str:
        return f"{self.scope} {self.period}"

    def message(self) -> str:
        when = f" It resets at {self.resets_at}." if self.resets_at else ""
        why = ("is 90% spent or more, so only free models may run" if self.restricted
               else "would be exceeded by this call")
        return (f"The {self.name} budget limit of ${usd_str(self.limit_nusd)} {why}: ${usd_str(self.spent_nusd)} is "
                f"spent and ${usd_str(self.reserved_nusd)} held by calls in flight; this call may cost up to "
                f"${usd_str(self.needed_nusd)} (the estimate routing used).{when} Raise the limit to "
                f"${usd_str(self.proposal_nusd)} (or the amount you give) and make the call?")

    def schema(self) -> dict[str, Any]:
        """The form (``requestedSchema``): a yes/no and the new limit, defaulting to the proposal."""
        return {
            "type": "object",
            "properties": {
                "raise": {"type": "boolean", "title": f"Raise the {self.name} limit", "default": True},
                "limit_usd": {
                    "type": "number", "title": "New limit (USD)",
                    "description": f"Above the current ${usd_str(self.limit_nusd)}; "
                                   f"${usd_str(self.proposal_nusd)} lets this call through.",
                    "minimum": float(Decimal(usd_str(self.limit_nusd))),
                    "default": float(Decimal(usd_str(self.proposal_nusd))),
                },
            },
            "required": ["raise", "limit_usd"],
        }

    def elicitation(self) -> dict[str, Any]:
        """The form's request params (``elicitation/create``), in their wire form."""
        return {"mode": "form", "message": self.message(), "requestedSchema": self.schema()}

    def answer(self, action: str, content: Any) -> Decimal | str:
        """The new limit in dollars the answer gives, or why it is no (said in the refusal)."""
        if action == "decline":
            return "declined"
        if action != "accept":
            return "cancelled" if action == "cancel" else "not answered"
        if not isinstance(content, dict):
            return "not raised: the answer had no form content"
        raise_it = content.get("raise")
        if raise_it is not True:
            return "declined" if raise_it is False else "not raised: 'raise' must be true or false"
        value = content.get("limit_usd", usd_str(self.proposal_nusd))
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return "not raised: 'limit_usd' must be a number of dollars"
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            return "not raised: 'limit_usd' must be a number of dollars"
        if not amount.is_finite() or usd_to_nusd(amount) <= self.limit_nusd or usd_to_nusd(amount) > _MAX_LIMIT_NUSD:
            return (f"not raised: 'limit_usd' must be above the current ${usd_str(self.limit_nusd)} "
                    f"and at most ${usd_str(_MAX_LIMIT_NUSD)}")
        return amount

    def refusal(self, outcome: str) -> BudgetExceeded:
        """The refusal as the engine raised it, saying what came of the question."""
        e = BudgetExceeded(limit_name=self.name, limit_nusd=self.limit_nusd, spent_nusd=self.spent_nusd,
                           reserved_nusd=self.reserved_nusd, needed_nusd=self.needed_nusd, resets_at=self.resets_at,
                           restricted=self.restricted)
        e.request_id = self.request_id
        return with_outcome(e, outcome)


def with_outcome(e: BudgetExceeded, outcome: str) -> BudgetExceeded:
    """``e`` with what came of asking to raise its limit at the end of its message."""
    e.args = (f"{e} Raising the limit was asked about: {outcome}.",)
    return e


def _cents_up(nusd: int) -> int:
    return -(-nusd // _CENT) * _CENT


def question_for(access: Access, e: BudgetExceeded) -> Question | None:
    """The question to ask about refusal ``e``, or None when it is not to be asked: a member
    caller, the per-request limit, or a scope that is not global, provider:NAME or tag:NAME."""
    if access.role != "admin":
        return None
    scope, _, period = e.limit_name.rpartition(" ")
    if period not in ("daily", "monthly") or not (scope == "global" or scope.startswith(("provider:", "tag:"))):
        return None
    used = e.spent_nusd + e.reserved_nusd
    room = used + e.needed_nusd
    if e.restricted:  # under 90% once raised, with room for this call
        room = max(room, used * 10 // 9 + 1)
    proposal = max(_cents_up(room), e.limit_nusd + _CENT)
    return Question(scope, period, e.limit_nusd, e.spent_nusd, e.reserved_nusd, e.needed_nusd, proposal,
                    e.resets_at, e.restricted, e.request_id)


RaiseLimit = Callable[[str, str, Decimal], Awaitable[None]]
"""Sets ``scope``'s ``period`` limit to the dollars given, as ``set_budget`` does."""


def _modern(ctx: Ctx) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _form_elicitation(ctx: Ctx) -> bool:
    """The client declared form-mode elicitation (an empty ``elicitation`` object means form)."""
    caps = ctx.session.client_capabilities
    have = caps.elicitation if caps is not None else None
    return have is not None and (have.form is not None or have.url is None)


class Asker:
    """One server's asking: its settings and the request-state nonces already answered."""

    def __init__(self, *, enabled: bool, timeout_s: float) -> None:
        self.enabled = enabled
        self.timeout_s = timeout_s
        self._answered: dict[str, float] = {}  # nonce -> when its state expires

    async def complete(self, ctx: Ctx, access: Access, run: Callable[[], Awaitable[Any]],
                       raise_limit: RaiseLimit) -> Any:
        """``run()`` (one ``complete`` through the engine), asking to raise a limit that refuses it.

        Returns what ``run`` returned, or (2026-07-28) the ``input_required`` wire result.

        Raises:
            BudgetExceeded: as ``run`` raised it, saying what came of asking when it was asked.
        """
        asked: list[str] = []
        retried = self._retried(ctx)
        if retried is not None:
            answered, asked, action, content = retried
            await self._apply(answered, answered.answer(action, content), raise_limit)
            asked = [*asked, answered.name]
        while True:
            try:
                return await run()
            except BudgetExceeded as e:
                question = question_for(access, e) if self.enabled else None
                if question is None or not _form_elicitation(ctx):
                    raise
                if question.name in asked:
                    raise with_outcome(e, "raised, and still too low for this call") from None
                if len(asked) >= MAX_ASKS:
                    raise
                if _modern(ctx):
                    return self._input_required(question, asked)
                if not ctx.session.can_send_request:
                    raise
                action, content = await self._ask_now(ctx, question)
                await self._apply(question, question.answer(action, content), raise_limit)
                asked.append(question.name)

    @staticmethod
    async def _apply(question: Question, answer: Decimal | str, raise_limit: RaiseLimit) -> None:
        if isinstance(answer, str):
            raise question.refusal(answer)
        await raise_limit(question.scope, question.period, answer)

    async def _ask_now(self, ctx: Ctx, question: Question) -> tuple[str, Any]:
        """2025-11-25: ask with ``elicitation/create`` and wait; a failure or a timeout is no answer."""
        import anyio
        from mcp_types import ElicitRequestFormParams
        from pydantic import ValidationError

        params = ElicitRequestFormParams.model_validate(question.elicitation())
        try:
            with anyio.fail_after(self.timeout_s):
                answer = await ctx.session.elicit_form(params.message, params.requested_schema,
                                                       related_request_id=ctx.request_id)
        except TimeoutError:
            return "timeout", None
        except (MCPError, ValidationError):
            return "error", None
        return answer.action, answer.content

    def _input_required(self, question: Question, asked: list[str]) -> Wire:
        """2026-07-28: the form as an input request, and the state to bring back (sealed on the way out)."""
        state = {"v": _STATE_VERSION, "nonce": os.urandom(16).hex(), "question": asdict(question), "asked": asked}
        return {
            "resultType": "input_required",
            "inputRequests": {ASK_KEY: {"method": "elicitation/create", "params": question.elicitation()}},
            "requestState": json.dumps(state, separators=(",", ":")),
        }

    def _retried(self, ctx: Ctx) -> tuple[Question, list[str], str, Any] | None:
        """The question this retry answers and its answer, from a state the boundary verified; None
        for a first call.

        Raises:
            MCPError: the state was answered before (a replay) or is not one this server wrote.
        """
        params = ctx.params or {}
        raw = params.get("requestState")
        if raw is None:
            return None
        try:
            state = json.loads(raw)
            question = Question(**state["question"])
            nonce, asked = str(state["nonce"]), [str(a) for a in state["asked"]]
            if state["v"] != _STATE_VERSION:
                raise ValueError("version")
        except (TypeError, ValueError, KeyError) as e:
            raise StateRefused("requestState is not one this tool wrote", "invalid_request_state") from e
        now = time.monotonic()
        self._answered = {n: t for n, t in self._answered.items() if t > now}
        if nonce in self._answered:
            raise StateRefused("requestState was already answered: an answer is used once; call complete again "
                               "without it", "request_state_replayed")
        self._answered[nonce] = now + STATE_TTL_S
        responses = params.get("inputResponses")
        response = responses.get(ASK_KEY) if isinstance(responses, dict) else None
        if not isinstance(response, dict):
            return question, asked, "none", None
        return question, asked, str(response.get("action")), response.get("content")


# -- the request state's seal -------------------------------------------------------------------


def state_boundary(tokens: bool) -> Any:
    """The SDK's ``RequestStateBoundary`` for this server: a per-process key, a 10-minute expiry,
    bound to the caller (its token's role and tag; over stdio and without tokens, the one local
    user), and a refusal that says what went wrong."""
    from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity

    from .mcp_state import caller_access

    def principal(ctx: Ctx) -> str | None:
        try:
            access = caller_access(ctx, tokens=tokens)
        except Exception:
            return None
        return f"{access.role}:{access.tag or ''}"

    security = RequestStateSecurity.ephemeral(ttl=STATE_TTL_S)
    security.bind_principal = principal
    boundary = RequestStateBoundary(security, default_audience="llm-router")

    async def guarded(ctx: Ctx, call_next: Any) -> Any:
        try:
            return await boundary(ctx, call_next)
        except MCPError as e:
            if e.error.data == {"reason": "invalid_request_state"} and ctx.method == "tools/call":
                raise StateRefused("requestState is invalid, expired, or for another call or caller: nothing was "
                                   "raised nor called; call the tool again without it", "invalid_request_state") from None
            raise

    return guarded
