"""The shapes of a call's arguments and results, shared by the engine and the MCP tools.

Argument types are declared once here (with the descriptions an assistant sees in the tool
schema); ``mcp_server`` uses the same annotated types for its tool signatures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, PrivateAttr, TypeAdapter
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema
from pydantic_core import PydanticCustomError

from .content import FinishReason, ToolCall
from .types import AttemptRecord, QualityChoice, Strategy, Usage

__all__ = [
    "MessageIn",
    "ToolIn",
    "ToolCallIn",
    "ToolChoiceName",
    "ResponseFormatIn",
    "CompleteArgs",
    "ReportArgs",
    "BudgetArgs",
    "RateArgs",
    "RateResult",
    "BudgetPeriod",
    "DATE_PATTERN",
    "Period",
    "Grouping",
    "CompleteResult",
    "ExplainResult",
    "ReportResult",
    "BudgetResult",
    "prompt_hash",
]


_TEXT_PART_SCHEMA = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
    "additionalProperties": False,
}
_IMAGE_PART_SCHEMA = {
    "type": "object",
    "description": "An image: its bytes as base64 with mimeType (MCP's image content), or a url.",
    "properties": {
        "type": {"const": "image"},
        "data": {"type": "string", "description": "base64 of the image's bytes"},
        "mimeType": {"type": "string", "enum": ["image/png", "image/jpeg", "image/gif", "image/webp"]},
        "url": {"type": "string", "description": "an http(s) URL the provider fetches (not every provider can)"},
    },
    "required": ["type"],
    "additionalProperties": False,
}
_CONTENT_SCHEMA = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"anyOf": [_TEXT_PART_SCHEMA, _IMAGE_PART_SCHEMA]}, "minItems": 1},
    ],
    "description": "the text of the turn, or a list of parts (text and images)",
}


def _content(value: Any) -> Any:
    """A turn's content: a string, a list of part objects (each checked by ``prepare``, which names
    the part that is wrong), or absent (an assistant turn that only made tool calls). An empty
    string is refused by ``prepare`` unless the turn made tool calls: a client that echoes back
    ``complete``'s text for a tool-call answer sends ``""`` there."""
    if isinstance(value, list):
        if not value:
            raise PydanticCustomError("too_short", "no parts")
        return value
    if value is None:
        return value
    if isinstance(value, str):
        return value  # an empty one is refused by prepare, but beside tool_calls (complete's text for them)
    raise PydanticCustomError("content_type", "not text or parts")


def _object_text(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


class ToolCallIn(BaseModel):
    """A call an earlier assistant turn made, as ``complete`` returned it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    arguments: Annotated[dict[str, Any], BeforeValidator(_object_text)] = Field(default_factory=dict)
    """An object; JSON text holding one is read (OpenAI's clients keep arguments as text)."""


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "tool"] = Field(
        description="who spoke this turn: user, assistant, or tool (the result of a tool call)"
    )
    content: Annotated[Any, PlainValidator(_content), WithJsonSchema(_CONTENT_SCHEMA)] = None
    tool_calls: list[ToolCallIn] | None = Field(
        default=None, description="on an assistant turn: the tool calls it made (as complete returned them)"
    )
    tool_call_id: str | None = Field(
        default=None, max_length=256, description="on a tool turn: the id of the call this is the result of"
    )


class ToolIn(BaseModel):
    """A tool the model may call, in MCP's shape."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="letters, digits, _ and -, at most 64")
    description: str = Field(default="", max_length=4096)
    inputSchema: dict[str, Any] = Field(  # noqa: N815 (MCP's name for it)
        default_factory=lambda: {"type": "object", "properties": {}},
        description="a JSON Schema object for the arguments",
    )


class ToolChoiceName(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)


class ResponseFormatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["json_object", "json_schema"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema", description="the JSON Schema the answer must match (json_schema)")
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a name for the schema")


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
QualityArg = Annotated[QualityChoice | None, Field(
    description="The least model quality acceptable: low, medium, high or critical; auto: judged from the request "
    "(its length, code, reasoning asked, output length, structured output).")]
StrategyArg = Annotated[Strategy | None, Field(
    description="How to rank candidates: cheapest, best, fastest, balanced, or adaptive (learns from ratings which "
    "cheaper model is good enough for each task_type, keeping overall quality near the best model's).")]
# Dollars are Decimals (never floats) and may come as a number or as a decimal string; the schema
# asks for a number, the form an assistant writes.
_Dollars = Annotated[Decimal, WithJsonSchema({"type": "number", "minimum": 0})]
MaxCost = Annotated[
    Annotated[Decimal, Field(ge=0, le=10_000), WithJsonSchema({"type": "number", "minimum": 0, "maximum": 10_000})] | None,
    Field(description="Refuse models whose worst-case cost is above this (USD)."),
]
Tag = Annotated[str | None, Field(max_length=128, description="Who or what to bill this call to (a tag in the ledger and budgets).")]
ResponseFormatArg = Annotated[
    ResponseFormatIn | None,
    Field(description='Structured output: {"type": "json_schema", "schema": {...}} or {"type": "json_object"}. '
          "The answer is then valid JSON (checked against the schema; a model that answers otherwise is "
          "passed over for the next), returned parsed as json."),
]
Tools = Annotated[
    list[ToolIn] | None,
    Field(max_length=128, description="Tools the model may call (name, description, inputSchema); its calls come "
          "back as tool_calls, for you to run and answer in a tool turn."),
]
ToolChoiceArg = Annotated[
    Literal["auto", "required", "none"] | ToolChoiceName | None,
    Field(description='Whether the model must call a tool: "auto" (default), "required", "none", or {"name": "..."}.'),
]
Stop = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
    Field(min_length=1, max_length=16, description="Strings that end the answer where the model writes them."),
]
TopP = Annotated[float | None, Field(gt=0, le=1, allow_inf_nan=False, description="Nucleus sampling, above 0 and at most 1.")]
def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # lax mode would take true for 1
        raise PydanticCustomError("int_type", "a boolean")
    return value


Seed = Annotated[
    int | None,
    BeforeValidator(_not_bool),
    Field(ge=0, le=2**31 - 1, description="A seed for repeatable sampling, where the model offers it."),
]
OnCancel = Annotated[Literal["finish", "abort"] | None, Field(
    description='What a cancellation (your client giving up, its tool timeout) does once a model has been asked: '
    '"finish" (default) lets the call end, billed as usual, its answer kept at llm-router://answers/{request_id}; '
    '"abort" stops it (what was streamed is billed). Before any model is asked, a cancellation always aborts.')]
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
    response_format: ResponseFormatArg = None
    tools: Tools = None
    tool_choice: ToolChoiceArg = None
    stop: Stop = None
    top_p: TopP = None
    seed: Seed = None
    on_cancel: OnCancel = None


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


class RateArgs(BaseModel):
    """Arguments of ``rate``."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64, description="The request_id complete returned.")
    score: Annotated[int, BeforeValidator(_not_bool)] = Field(
        ge=1, le=5, description="1 (wrong or useless) to 5 (right and complete, nothing to fix).")
    comment: str | None = Field(default=None, max_length=2000, description="What was good or wrong, in a few words.")


def prompt_hash(system: str | None, messages: Sequence[Sequence[Any]], *, extra: dict[str, Any] | None = None) -> str:
    """SHA-256 of the prompt, what the ledger keeps instead of the text (unless store_prompts):
    of its compact JSON ``{"system": …, "messages": [[role, content], …]}``, non-ASCII kept as
    UTF-8. These bytes are what every ledger's hashes were made of: they must never change (a
    test pins known hashes). A rich request (tools, a format, images, tool turns, sampling
    parameters) adds what else it asked under ``"request"`` (``rich_args.rich_extra``), and its
    turns may carry more than text (``rich_args.hashed_turns``): a text call's bytes are as ever."""
    body: dict[str, Any] = {"system": system, "messages": messages}
    if extra:
        body["request"] = extra
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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


def _inline(kind: type[Any], *, title: str, required: list[str]) -> WithJsonSchema:
    """``kind``'s published schema, written out in place rather than as a ``$ref`` into ``$defs``:
    a client validates every result against the output schema, and resolving references is a
    third of that work. Generated from the type as it is dumped (fields marked ``exclude`` left
    out), under the title clients have always seen, without the type's docstring, and with the
    fields a result always carries as required, without a default (``Usage`` defaults every
    count to 0 for the adapters' sake)."""
    schema = TypeAdapter(kind).json_schema(mode="serialization")
    schema.pop("description", None)
    for name in required:
        schema["properties"][name].pop("default", None)
    return WithJsonSchema({**schema, "title": title, "required": required})


_PublishedUsage = Annotated[
    Usage, _inline(Usage, title="UsageOut", required=["input_tokens", "output_tokens", "cached_tokens"])
]
_PublishedToolCall = Annotated[ToolCall, _inline(ToolCall, title="ToolCallOut", required=["id", "name", "arguments"])]
_PublishedAttempt = Annotated[AttemptRecord, _inline(AttemptRecord, title="AttemptOut", required=["model", "outcome"])]


# What ``Engine.complete`` returns is this model itself: one shape from the engine to the client,
# its output schema generated from it. (Its docstring is published, as the schema's description.)
class CompleteResult(_NoNulls):
    """The published shape of ``complete``'s structured content (its output schema)."""

    request_id: str
    text: str
    provider: str
    model: str = Field(description='"provider:model" that answered')
    provider_model: str = Field(description="the model name the provider reported")
    finish_reason: FinishReason = Field(description="stop, length (max_tokens reached), tool_calls or content_filter")
    json_: Annotated[Any, WithJsonSchema({"description": "the answer parsed, valid for response_format (present "
                                                          "only when response_format was given)"})] = Field(
        default=None, alias="json")
    tool_calls: list[_PublishedToolCall] | SkipJsonSchema[None] = Field(
        default=None, description="the tools the model called, for you to run (present only when it called any)")
    usage: _PublishedUsage
    cost_usd: str = Field(description="exact cost in USD, from the provider-reported usage")
    latency_ms: int
    attempts: list[_PublishedAttempt]
    budget: dict[str, Any] = Field(
        description="budget tier after this call, and the limit with the least left (null when no limit applies)"
    )
    notes: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="what the caller should know about how the call was handled, when anything"
    )
    _structured: bool = PrivateAttr(default=False)
    """Whether ``json`` is the answer (which may be null) rather than absent."""

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude_none=True, by_alias=True)
        if self._structured:
            out["json"] = self.json_
        return out


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
    needs: list[str] = Field(default_factory=list, description="what the call asks of a model beyond text (tools, vision, json_schema, ...)")
    adaptive: dict[str, Any] | None = Field(default=None, description="strategy adaptive: explore or exploit, the "
                                            "estimates, the task type's gain per dollar, the cut-off, and why")
    quality_auto: dict[str, Any] | None = Field(default=None, description="quality auto: the request's features and "
                                                "the tier they gave")


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


class RateResult(_Result):
    rating: dict[str, Any] = Field(description="the rating as stored (request_id, score, comment, model, task_type, "
                                   "ts, replaced)")
    estimate: dict[str, Any] = Field(description="the model's quality estimate for that task type after this rating "
                                     "(estimate 0..1, ratings, confidence), and overall")


class BudgetResult(_Result):
    changed: dict[str, Any]
    budgets: list[dict[str, Any]]
