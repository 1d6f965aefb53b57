"""The words every module shares: messages, requests, completions, usage, money and errors.

Money is never a float. Amounts are integer nano-dollars (``nusd``, 1e-9 USD) wherever they are
stored, summed or compared: a micro-dollar is too coarse for one short call to a cheap model
(ten tokens at $0.05 per million tokens cost half a micro-dollar). ``Decimal`` is used at the
edges, where a price from genai-prices meets a token count and where figures are shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from .content import ImagePart, Part, ResponseFormat, ToolCall, ToolChoice, ToolSpec

__all__ = [
    "NUSD_PER_USD",
    "Quality",
    "QUALITIES",
    "Strategy",
    "QualityChoice",
    "Message",
    "CompletionRequest",
    "Usage",
    "Completion",
    "usd_to_nusd",
    "usd_str",
    "plural",
    "EMPTY_GROUP",
    "parse_model_ref",
    "RouterError",
    "InvalidInput",
    "ConfigError",
    "Forbidden",
    "BudgetExceeded",
    "NoRoute",
    "ProviderError",
    "AuthError",
    "RateLimited",
    "Overloaded",
    "ServerError",
    "Timeout",
    "ConnectionFailed",
    "InvalidRequest",
    "ContextTooLong",
    "ContentFiltered",
    "MalformedResponse",
    "ToolCallOnly",
    "InvalidOutput",
    "AttemptRecord",
    "AllAttemptsFailed",
    "LedgerBusy",
    "SpendNotRecorded",
]

NUSD_PER_USD = 1_000_000_000

Quality = Literal["low", "medium", "high", "critical"]
QUALITIES: tuple[Quality, ...] = ("low", "medium", "high", "critical")
Strategy = Literal["cheapest", "best", "fastest", "balanced", "adaptive"]
QualityChoice = Literal["low", "medium", "high", "critical", "auto"]
"""What a call (or ``[routing] default_quality``) may ask: a tier, or ``auto`` (``complexity.assess``
picks the tier from the request itself)."""


def usd_to_nusd(amount: Decimal | int | str, *, round_up: bool = False) -> int:
    """Dollars as integer nano-dollars. ``round_up`` is for reservations, which must never fall short."""
    value = Decimal(amount) * NUSD_PER_USD
    return int(value.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_HALF_EVEN))


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 call``, ``2 calls``."""
    return f"{n} {word if n == 1 else many or word + 's'}"


EMPTY_GROUP = {"provider": "(refused: no model)", "model": "(refused: no model)", "task_type": "(no task type)",
               "tag": "(no tag)"}
"""What an empty group of a spend report is called (``report`` and ``cost_report`` alike): a call
refused before any model was asked has no provider and no model."""


def usd_str(amount: int) -> str:
    """Nano-dollars as a plain decimal string of dollars ("0.0000001", "50", "1.25"): never in
    exponent form, exact, and cheap (integer arithmetic only)."""
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), NUSD_PER_USD)
    return f"{sign}{whole}.{frac:09d}".rstrip("0") if frac else f"{sign}{whole}"


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation. System text travels apart, in ``CompletionRequest.system``.

    ``content`` is the turn's text. ``parts`` is set only when the turn holds an image: then it
    is the whole content, text parts and images in their order (and ``content`` their text
    joined, for what counts or hashes text). An assistant turn may carry the ``tool_calls`` it
    made; a ``tool`` turn answers one (``tool_call_id``, with the tool's ``name`` as the
    assistant turn called it: some wire formats want the name, not the id).

    Built from arguments the MCP layer has already validated, so a plain dataclass: nothing is
    checked twice on every call."""

    role: Literal["user", "assistant", "tool"]
    content: str
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.parts if isinstance(p, ImagePart))


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """What a provider adapter is asked to do: provider-neutral, already validated.

    Every field beyond ``temperature`` has a neutral "not asked" value (empty, None, ``auto``),
    and an adapter sends what is asked or refuses it: routing has already left out the models
    whose capabilities lack what the request needs, so an adapter never drops one silently."""

    messages: tuple[Message, ...]
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    """``auto``, ``required``, ``none``, or the name of the tool that must be called."""
    response_format: ResponseFormat | None = None
    stop: tuple[str, ...] = ()
    top_p: float | None = None
    seed: int | None = None

    def text_bytes(self) -> int:
        """UTF-8 size of everything sent as text (tool definitions, schemas and the arguments of
        earlier tool calls included); a hard upper bound for its input tokens. Images are
        counted apart (``catalog.image_tokens``)."""
        total = len(self.system.encode()) if self.system else 0
        for m in self.messages:
            total += len(m.content.encode())
            for call in m.tool_calls:
                total += len(call.name) + len(_compact(call.arguments)) + len(call.id)
        for tool in self.tools:
            total += len(tool.name) + len(tool.description.encode()) + len(_compact(tool.input_schema))
        if self.response_format is not None and self.response_format.schema is not None:
            total += len(_compact(self.response_format.schema))
        return total

    @property
    def rich(self) -> bool:
        """Whether anything beyond text is asked: tools, a format, images or tool turns."""
        return bool(self.tools or self.response_format is not None
                    or any(m.parts or m.tool_calls or m.role == "tool" for m in self.messages))


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens as the provider reported them, or as they were counted here when it reported none
    (``estimated``): the one usage shape, from the adapter through the ledger row to the result.

    ``input_tokens`` counts every input token, cached ones included (the OpenAI and genai-prices
    convention); ``cached_tokens`` and ``cache_write_tokens`` say how many of those were read
    from or written to the provider's prompt cache. Adapters normalise to this.

    The field descriptions are what ``complete``'s output schema publishes (``calls.CompleteResult``).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: Annotated[
        bool, Field(description="true when the provider reported no usage and it was estimated")
    ] = False
    estimate_method: Annotated[
        str | SkipJsonSchema[None],
        Field(description="how an estimated usage was counted (present only when estimated)"),
    ] = None

    def __add__(self, other: Usage) -> Usage:
        """Both counts together; estimated when either was."""
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.estimated or other.estimated,
            self.estimate_method or other.estimate_method,
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """A provider's answer. ``usage`` is None when the provider reported none.

    ``finish_reason`` is one of ``content.FINISH_REASONS`` (each adapter maps its provider's
    words): ``tool_calls`` when the answer is ``tool_calls``. For structured output ``text`` is
    the JSON as the model wrote it (an adapter that forces a tool for it gives the tool's
    input, serialised); the engine parses and validates it."""

    text: str
    model: str
    """The model name the provider says answered (may be a dated variant of the one asked for)."""
    usage: Usage | None
    finish_reason: str | None = None
    response_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


def parse_model_ref(ref: str, *, field_name: str = "model") -> tuple[str, str]:
    """Split ``"provider:model"``. Model names may themselves contain ``:`` (``llama3.1:8b``)."""
    provider, sep, model = ref.partition(":")
    if not sep or not provider or not model:
        raise InvalidInput(
            field_name,
            f"{ref!r} is not a model reference",
            allowed='"provider:model", e.g. "anthropic:claude-haiku-4-5"',
        )
    return provider, model


# ---------------------------------------------------------------------------------------------
# Errors: one small vocabulary. Callers decide by type and attributes, never by message text.
# ---------------------------------------------------------------------------------------------


class RouterError(Exception):
    """Base of every error this package raises on purpose."""

    code: str = "error"
    request_id: str | None = None
    """The ledger row of the call this error ended (set by the engine once a call has one)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": str(self)}
        if self.request_id is not None:
            out["request_id"] = self.request_id
        return out


class InvalidInput(RouterError):
    """A caller's argument is wrong. Names the field and what it may be."""

    code = "invalid_input"

    def __init__(self, field_name: str, problem: str, *, allowed: str | None = None) -> None:
        self.field = field_name
        self.problem = problem
        self.allowed = allowed
        text = f"{field_name}: {problem}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field, "allowed": self.allowed}


class ConfigError(RouterError):
    """The configuration is wrong. Names the file and the key."""

    code = "config_error"

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = " ".join(p for p in (file, f"[{key}]" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class Forbidden(RouterError):
    """The caller's token has a role that does not allow this (HTTP tokens carry one: ``admin``,
    ``member`` or ``metrics``). Says what was refused, the role, and what that role may do."""

    code = "forbidden"

    def __init__(self, problem: str, *, role: str, may: str, field_name: str | None = None) -> None:
        self.role = role
        self.may = may
        self.field = field_name
        super().__init__(f"{problem}: a {role} token may {may}")

    def to_dict(self) -> dict[str, Any]:
        out = {**super().to_dict(), "role": self.role, "may": self.may}
        if self.field is not None:
            out["field"] = self.field
        return out


class BudgetExceeded(RouterError):
    """A call would push spend past a limit; nothing was sent."""

    code = "budget_exceeded"

    def __init__(
        self,
        *,
        limit_name: str,
        limit_nusd: int,
        spent_nusd: int,
        reserved_nusd: int,
        needed_nusd: int,
        resets_at: str | None,
        restricted: bool = False,
        raise_it: str = "Raise the limit with set_budget",
    ) -> None:
        """``raise_it``: how this caller can have the limit raised (a member token cannot itself)."""
        self.limit_name = limit_name
        self.limit_nusd = limit_nusd
        self.spent_nusd = spent_nusd
        self.reserved_nusd = reserved_nusd
        self.needed_nusd = needed_nusd
        self.resets_at = resets_at
        self.restricted = restricted
        """True when the call would fit, but the limit is 90% spent and only free models may run."""
        when = f"; it resets at {resets_at}" if resets_at else ""
        if restricted:
            used = spent_nusd * 100 // limit_nusd if limit_nusd else 100
            text = (
                f"budget {limit_name} of ${usd_str(limit_nusd)} is {used}% spent (${usd_str(spent_nusd)}): from 90% "
                f"only free models are used, and none can take this call{when}. "
                f"{raise_it}, or name a free (local) model."
            )
        else:
            text = (
                f"budget {limit_name} of ${usd_str(limit_nusd)} would be exceeded: "
                f"${usd_str(spent_nusd)} spent, ${usd_str(reserved_nusd)} held by calls in flight, "
                f"this call may cost up to ${usd_str(needed_nusd)}{when}. "
                f"{raise_it}, lower max_tokens, or ask for a cheaper model."
            )
        super().__init__(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "limit": self.limit_name,
            "limit_usd": usd_str(self.limit_nusd),
            "spent_usd": usd_str(self.spent_nusd),
            "reserved_usd": usd_str(self.reserved_nusd),
            "needed_usd": usd_str(self.needed_nusd),
            "resets_at": self.resets_at,
            "restricted": self.restricted,
        }


class NoRoute(RouterError):
    """No candidate survived routing. ``reasons`` maps each excluded model to why."""

    code = "no_route"

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        self.reasons = reasons or {}
        detail = "; ".join(f"{m}: {r}" for m, r in self.reasons.items())
        super().__init__(f"{message}. {detail}" if detail else message)


class ProviderError(RouterError):
    """A provider call failed.

    ``retryable``: the same model may succeed if asked again (after ``retry_after`` seconds when
    set). ``fallback_ok``: another model or provider may succeed where this one failed.
    """

    code = "provider_error"
    retryable = False
    fallback_ok = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        body: str | None = None,
        usage: Usage | None = None,
        context_window: int | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after
        self.body = body[:500] if body else body
        self.usage = usage
        """Tokens the provider reported, and bills, for this failed answer (a withheld answer)."""
        self.context_window = context_window
        """The model's context window as the provider stated it (in a context-length error), if it did."""
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "retryable": self.retryable,
            "retry_after_s": self.retry_after,
        }


class AuthError(ProviderError):
    code = "auth"


class RateLimited(ProviderError):
    code = "rate_limited"
    retryable = True


class Overloaded(ProviderError):
    code = "overloaded"
    retryable = True


class ServerError(ProviderError):
    code = "server_error"
    retryable = True


class Timeout(ProviderError):
    code = "timeout"
    retryable = True


class ConnectionFailed(ProviderError):
    code = "connection"
    retryable = True


class InvalidRequest(ProviderError):
    """The provider rejected the request itself; another provider may still accept it."""

    code = "invalid_request"


class ContextTooLong(ProviderError):
    code = "context_too_long"


class ContentFiltered(ProviderError):
    code = "content_filtered"


class MalformedResponse(ProviderError):
    """The answer could not be read, or a stream ended before its end marker."""

    code = "malformed_response"
    retryable = True


class ToolCallOnly(ProviderError):
    """The model answered with a tool call and no text, though the request offered no tools.
    Not an answer to return: the attempt failed (billed when the provider reported usage), and
    another model may answer in text."""

    code = "tool_call_only"


class InvalidOutput(ProviderError):
    """The model answered, but not as asked: JSON that does not parse or does not match the
    request's schema, or a tool call whose arguments do not match the tool's ``inputSchema``.
    Billed (``usage``) like any answer; the chain goes on to the next model, which may do better.
    The message says what was wrong (the validation error, with where in the value)."""

    code = "invalid_output"


@dataclass
class AttemptRecord:
    """One try at one model, as the ledger and the tool result show it. The ledger keeps every
    field (``to_dict``); ``complete`` publishes it without ``status`` (marked ``exclude``),
    leaving out what is None (``calls.CompleteResult``)."""

    model: str
    outcome: Literal["ok", "error", "skipped", "cancelled"]
    error_code: str | SkipJsonSchema[None] = None
    error: str | SkipJsonSchema[None] = None
    latency_ms: int = 0
    status: Annotated[int | None, Field(exclude=True)] = None
    cost_usd: Annotated[
        str | SkipJsonSchema[None],
        Field(description="what this attempt cost: the answer's, or a failed answer's the provider billed"),
    ] = None
    """What the attempt cost: the answer's, or a failed one's when the provider reported billed usage."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class AllAttemptsFailed(RouterError):
    """Every model in the chain failed or was skipped. ``attempts`` lists them all."""

    code = "all_failed"

    def __init__(self, attempts: list[AttemptRecord], *, deadline_hit: bool = False) -> None:
        self.attempts = attempts
        self.deadline_hit = deadline_hit
        tried = "; ".join(f"{a.model}: {a.error_code or a.outcome} ({a.error})" for a in attempts)
        head = "the deadline passed" if deadline_hit else "every model in the chain failed"
        super().__init__(f"{head}: {tried}" if tried else "no model could be tried")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "attempts": [a.to_dict() for a in self.attempts]}


class LedgerBusy(RouterError):
    """The ledger's write lock could not be had in time: another process holds it (frozen, say).
    Nothing was reserved or written by the step that waited; asking again later may succeed."""

    code = "ledger_busy"
    retryable = True

    def __init__(
        self, message: str, *, retry_after: float, waited_s: float, holder_pid: int | None = None,
        stuck_s: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.waited_s = waited_s
        """How long the step that gave up waited for the lock."""
        self.holder_pid = holder_pid
        """The process that holds the lock, when the system says (SQLite on Linux; PostgreSQL)."""
        self.stuck_s = stuck_s
        """How long the lock has been out of reach: since this server last wrote, or how long the
        holding transaction has been open (PostgreSQL)."""
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        out = {**super().to_dict(), "retryable": True, "retry_after_s": self.retry_after,
               "waited_s": round(self.waited_s, 3)}
        if self.holder_pid is not None:
            out["holder_pid"] = self.holder_pid
        if self.stuck_s is not None:
            out["stuck_s"] = round(self.stuck_s, 1)
        return out


class SpendNotRecorded(RouterError):
    """A call cost money, and neither the ledger nor its journal could take its row: the spend is
    not recorded anywhere on disk (the server keeps it in memory, and its holds, until it can)."""

    code = "spend_not_recorded"

    def __init__(self, message: str, *, request_id: str, cost_nusd: int) -> None:
        self.cost_nusd = cost_nusd
        super().__init__(message)
        self.request_id = request_id

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "cost_usd": usd_str(self.cost_nusd), "recorded": False}
