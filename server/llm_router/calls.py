"""The shapes of a call's arguments and results, shared by the engine and the MCP tools.

Argument types are declared once here (with the descriptions an assistant sees in the tool
schema); ``mcp_server`` uses the same annotated types for its tool signatures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema

from .types import AttemptRecord, Quality, Strategy

__all__ = [
    "MessageIn",
    "CompleteArgs",
    "ReportArgs",
    "BudgetArgs",
    "BudgetPeriod",
    "DATE_PATTERN",
    "Answer",
    "AnswerUsage",
    "Period",
    "Grouping",
    "UsageOut",
    "AttemptOut",
    "CompleteResult",
    "ExplainResult",
    "ReportResult",
    "BudgetResult",
    "prompt_hash",
]


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"] = Field(description="who spoke this turn")
    content: str = Field(min_length=1, description="the text of the turn")


Prompt = Annotated[str | None, Field(description="The prompt (a single user turn). Give this or messages.")]
Messages = Annotated[
    list[MessageIn] | None,
    Field(description="A conversation, oldest first, ending with a user turn. Give this or prompt."),
]
System = Annotated[str | None, Field(description="System instructions for the model.")]
MaxTokens = Annotated[
    int | None,
    Field(ge=1, le=1_000_000, description="Most tokens the answer may have; also bounds the cost reserved."),
]
Temperature = Annotated[float | None, Field(ge=0, le=2, allow_inf_nan=False, description="Sampling temperature, 0 to 2.")]
ModelChoice = Annotated[
    str | list[str] | None,
    Field(
        description='Force a model ("provider:model") or an explicit fallback chain (a list). '
        "Leave out to let the router choose."
    ),
]
TaskType = Annotated[
    str | None,
    Field(max_length=64, description="What kind of work this is (e.g. code_generation, summarize); rules may route by it."),
]
QualityArg = Annotated[Quality | None, Field(description="The least model quality acceptable: low, medium, high or critical.")]
StrategyArg = Annotated[Strategy | None, Field(description="How to rank candidates: cheapest, best, fastest or balanced.")]
# Dollars are Decimals (never floats) and may come as a number or as a decimal string; the schema
# asks for a number, the form an assistant writes.
_Dollars = Annotated[Decimal, WithJsonSchema({"type": "number", "minimum": 0})]
MaxCost = Annotated[
    Annotated[Decimal, Field(ge=0, le=10_000), WithJsonSchema({"type": "number", "minimum": 0, "maximum": 10_000})] | None,
    Field(description="Refuse models whose worst-case cost is above this (USD)."),
]
Tag = Annotated[str | None, Field(max_length=128, description="Who or what to bill this call to (a tag in the ledger and budgets).")]
DeadlineS = Annotated[float | None, Field(gt=0, le=3600, allow_inf_nan=False, description="Give up (with an error listing what was tried) after this many seconds.")]


class CompleteArgs(BaseModel):
    """Arguments of ``complete`` and ``route_explain``."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt = None
    messages: Messages = None
    system: System = None
    max_tokens: MaxTokens = None
    temperature: Temperature = None
    model: ModelChoice = None
    task_type: TaskType = None
    quality: QualityArg = None
    strategy: StrategyArg = None
    max_cost_usd: MaxCost = None
    tag: Tag = None
    deadline_s: DeadlineS = None


Period = Literal["today", "yesterday", "this_week", "this_month", "last_7_days", "last_30_days"]
Grouping = Literal["provider", "model", "task_type", "tag", "day"]
BudgetPeriod = Literal["daily", "monthly", "per_request"]
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
"""A day as ``cost_report`` and ``llm-router://ledger/{date}`` take it: YYYY-MM-DD, nothing else."""

_Day = Annotated[str | None, Field(pattern=DATE_PATTERN)]


class ReportArgs(BaseModel):
    """Arguments of ``cost_report``."""

    model_config = ConfigDict(extra="forbid")

    period: Period | None = Field(default=None, description="A named period; default this_month. Or give since/until.")
    group_by: Grouping = Field(default="provider", description="How to group the rows.")
    since: _Day = Field(default=None, description="First day, YYYY-MM-DD (inclusive).")
    until: _Day = Field(default=None, description="Last day, YYYY-MM-DD (inclusive).")
    tag: str | None = Field(default=None, max_length=128, description="Only calls billed to this tag.")
    provider: str | None = Field(default=None, max_length=64, description="Only calls to this provider.")


class BudgetArgs(BaseModel):
    """Arguments of ``set_budget``. All three are required; ``limit_usd: null`` removes the limit."""

    model_config = ConfigDict(extra="forbid")

    scope: str = Field(max_length=140, description='"global", "provider:NAME" or "tag:NAME".')
    period: BudgetPeriod = Field(description="daily, monthly or per_request.")
    limit_usd: _Dollars | None = Field(ge=0, description="The limit in USD; null removes it.")


_SHA256 = hashlib.sha256()  # copied per prompt: cheaper than looking the algorithm up each time
_json_string = json.encoder.encode_basestring  # a str as JSON, non-ASCII kept (as _COMPACT writes it)
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once: json.dumps with
# arguments builds a new encoder per call


def prompt_hash(system: str | None, messages: list[tuple[str, str]]) -> str:
    """SHA-256 of the prompt, what the ledger keeps instead of the text (unless store_prompts):
    of its compact JSON ``{"system": …, "messages": [[role, content], …]}``. A lone user prompt
    without system text, the usual call, is spelled out directly (the same bytes, a test checks)."""
    if system is None and len(messages) == 1 and messages[0][0] == "user":
        text = '{"system":null,"messages":[["user",' + _json_string(messages[0][1]) + "]]}"
    else:
        text = _COMPACT.encode({"system": system, "messages": messages})
    digest = _SHA256.copy()
    digest.update(text.encode())
    return digest.hexdigest()


class UsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int = 0
    estimated: bool = Field(default=False, description="true when the provider reported no usage and it was estimated")
    estimate_method: str | SkipJsonSchema[None] = Field(
        default=None, description="how an estimated usage was counted (present only when estimated)"
    )


class _Result(BaseModel):
    def to_json(self) -> dict[str, Any]:
        """The structured content a tool returns."""
        return self.model_dump(mode="json")


class _NoNulls(_Result):
    """Optional fields are left out rather than sent as null: the output schema then has no
    ``anyOf [..., null]``, which clients validate slowly (a tenth of a millisecond per call).
    (``exclude_none`` rather than a model serializer, which would call back into Python for
    every nested model.)"""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class AttemptOut(_NoNulls):
    model: str
    outcome: Literal["ok", "error", "skipped", "cancelled"]
    error_code: str | SkipJsonSchema[None] = None
    error: str | SkipJsonSchema[None] = None
    latency_ms: int = 0


# Published inline rather than as ``$ref``s into ``$defs``: a client validates every result against
# the output schema, and resolving references is a third of that work.
_Usage = Annotated[UsageOut, WithJsonSchema(UsageOut.model_json_schema())]
_Attempt = Annotated[AttemptOut, WithJsonSchema(AttemptOut.model_json_schema())]


@dataclass(frozen=True, slots=True)
class AnswerUsage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int = 0
    estimated: bool = False
    estimate_method: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What ``Engine.complete`` returns. ``to_json`` gives the structured content of the tool, in
    the shape ``CompleteResult`` publishes (a test holds the two together). Plain data, built
    without validation: every field comes from the engine itself, once per call."""

    request_id: str
    text: str
    provider: str
    model: str
    provider_model: str
    finish_reason: str | None
    usage: AnswerUsage
    cost_usd: str
    latency_ms: int
    attempts: list[AttemptRecord]
    budget: dict[str, Any]
    notes: tuple[str, ...] = ()
    """What the caller should know about how the call was handled (an estimate, a rule that did not apply, ...)."""

    def to_json(self) -> dict[str, Any]:
        u = self.usage
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "text": self.text,
            "provider": self.provider,
            "model": self.model,
            "provider_model": self.provider_model,
        }
        if self.finish_reason is not None:
            out["finish_reason"] = self.finish_reason
        out["usage"] = {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "estimated": u.estimated,
        }
        if u.estimate_method is not None:
            out["usage"]["estimate_method"] = u.estimate_method
        out["cost_usd"] = self.cost_usd
        out["latency_ms"] = self.latency_ms
        out["attempts"] = [a.published() for a in self.attempts]
        out["budget"] = self.budget
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class CompleteResult(_NoNulls):
    """The published shape of ``complete``'s structured content (its output schema)."""

    request_id: str
    text: str
    provider: str
    model: str = Field(description='"provider:model" that answered')
    provider_model: str = Field(description="the model name the provider reported")
    finish_reason: str | SkipJsonSchema[None] = None
    usage: _Usage
    cost_usd: str = Field(description="exact cost in USD, from the provider-reported usage")
    latency_ms: int
    attempts: list[_Attempt]
    budget: dict[str, Any] = Field(
        description="budget tier after this call, and the limit with the least left (null when no limit applies)"
    )
    notes: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="what the caller should know about how the call was handled, when anything"
    )


class ExplainResult(_Result):
    chain: list[str] = Field(description="the models complete would try, in order")
    source: str
    strategy: str
    quality: str
    budget_tier: str
    estimated_cost_usd: dict[str, Any] | None
    candidates: list[dict[str, Any]]
    excluded: list[dict[str, Any]]
    steps: list[str]
    input_tokens_estimate: int


class ReportResult(_Result):
    period: dict[str, str]
    group_by: str
    totals: dict[str, Any]
    rows: list[dict[str, Any]]
    budgets: list[dict[str, Any]]
    projection: dict[str, Any]
    savings: dict[str, Any] | None
    filters: dict[str, str] = Field(default_factory=dict, description="the tag and provider the report is limited to, if any")
    notes: list[str] = Field(default_factory=list, description="what the caller should know about the report")


class BudgetResult(_Result):
    changed: dict[str, Any]
    budgets: list[dict[str, Any]]
