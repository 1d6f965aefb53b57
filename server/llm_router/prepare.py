"""A call's arguments checked and turned into what the provider is sent and what routing is asked.

Every refusal here is an ``InvalidInput`` naming the field: nothing has been routed, reserved or
written yet, so a refused call leaves no ledger row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from . import timings
from .calls import CompleteArgs, prompt_hash
from .catalog import Catalog, worst_case_input_tokens
from .complexity import assess
from .config import Settings
from .estimates import prompt_tokens_by_chars
from .rich_args import conversation, format_of, hashed_turns, needs_of, rich_extra, rich_tokens, tools_of
from .routing import RouteRequest
from .structured import OutputCheck
from .types import CompletionRequest, InvalidInput, Message, Quality, parse_model_ref, usd_to_nusd

__all__ = ["Prepared", "prepare"]


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
    checks: OutputCheck | None = None
    """What every answer is checked against (a schema, tools); None for a plain text call."""

    def wait_left(self, started: float) -> float:
        """How long the row of a call ``started`` (``time.perf_counter``) may wait for the ledger:
        what is left of its deadline (at least timings.SETTLE_MIN_WAIT_S); a row that cannot be
        written by then goes to the journal."""
        return max(self.deadline_s - (time.perf_counter() - started), timings.SETTLE_MIN_WAIT_S)


def prepare(args: CompleteArgs, settings: Settings, catalog: Catalog) -> Prepared:
    """Turn tool arguments into a provider request and a routing request.

    Raises:
        InvalidInput: naming the field and what is allowed.
    """
    limits = settings.limits
    if args.prompt is not None and args.messages is not None:
        raise InvalidInput("prompt", "give prompt or messages, not both", allowed="one of prompt, messages")
    if args.prompt is not None:
        if not args.prompt.strip():
            raise InvalidInput("prompt", "is empty", allowed="a non-empty string")
        messages: tuple[Message, ...] = (Message(role="user", content=args.prompt),)
    elif args.messages:
        if len(args.messages) > limits.max_messages:
            raise InvalidInput("messages", f"{len(args.messages)} turns is too many", allowed=f"at most {limits.max_messages}")
        messages = conversation(args.messages, limits)
    else:
        raise InvalidInput("prompt", "nothing to send", allowed="a prompt string or a messages list")
    tools, tool_choice = tools_of(args)
    response_format = format_of(args)
    request = CompletionRequest(
        messages=messages,
        system=args.system or None,
        max_tokens=args.max_tokens or settings.routing.default_max_tokens,
        temperature=args.temperature,
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
        stop=tuple(args.stop) if args.stop else (),
        top_p=args.top_p,
        seed=args.seed,
    )
    try:
        text_bytes = request.text_bytes()
    except UnicodeEncodeError:  # only an in-process caller can send one: the transports repair them
        raise _not_text(_first_not_text(args)) from None
    size = len(request.system or "") + sum(len(m.content) for m in messages)
    if size > limits.max_prompt_chars:
        raise InvalidInput("prompt", f"{size} characters is too long", allowed=f"at most {limits.max_prompt_chars} characters in all")
    checks = OutputCheck.build(response_format, tools, tool_choice)

    models: tuple[str, ...] = ()
    if args.model is not None:
        refs = [args.model] if isinstance(args.model, str) else list(args.model)
        if not refs or len(refs) > 8:
            raise InvalidInput("model", "a chain lists 1 to 8 models", allowed='"provider:model" or a list of them')
        for ref in refs:
            parse_model_ref(ref)
            catalog.get(ref)
        models = tuple(dict.fromkeys(refs))
    tag = _clean_label(args.tag, "tag")
    task_type = _clean_label(args.task_type, "task_type")
    rich = request.rich or request.stop or request.top_p is not None or request.seed is not None
    asked = args.quality or (settings.routing.default_quality if settings.routing.default_quality == "auto" else None)
    judged = assess(request) if asked == "auto" else None
    quality: Quality | None = judged.quality if judged is not None else asked if asked != "auto" else None
    pairs = hashed_turns(messages) if rich else [(m.role, m.content) for m in messages]
    route = RouteRequest(
        models=models,
        task_type=task_type or None,
        quality=quality,
        strategy=args.strategy,
        max_cost_nusd=usd_to_nusd(args.max_cost_usd) if args.max_cost_usd is not None else None,
        tag=tag,
        input_tokens_bound=worst_case_input_tokens(text_bytes, len(messages)),
        input_tokens_typical=prompt_tokens_by_chars(request) + (rich_tokens(request) if rich else 0),
        max_tokens=request.max_tokens,
        needs=needs_of(request) if rich else frozenset(),
        images=tuple(image for m in messages for image in m.images()) if rich else (),
        quality_auto=judged.to_dict() if judged is not None else None,
    )
    return Prepared(
        request=request,
        route=route,
        tag=tag,
        task_type=task_type,
        deadline_s=(deadline_s := args.deadline_s or settings.resilience.deadline_s),
        ttl_s=max(settings.budget.reservation_ttl_s, deadline_s + 60),
        prompt_hash=prompt_hash(request.system, pairs, extra=rich_extra(request) if rich else None),
        prompt_text=json.dumps({"system": request.system, "messages": pairs}, ensure_ascii=False)
        if settings.ledger.store_prompts
        else None,
        checks=checks,
    )


def _clean_label(value: str | None, field_name: str) -> str:
    if value is None:
        return ""
    value = value.strip()
    if any(ord(ch) < 32 for ch in value):
        raise InvalidInput(field_name, "contains control characters", allowed="printable text")
    if not value.isascii() and not is_text(value):
        raise _not_text(field_name)
    return value


def is_text(value: str) -> bool:
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
    if args.system and not is_text(args.system):
        return "system"
    if args.prompt is not None:
        return "prompt"
    for i, m in enumerate(args.messages or ()):
        if isinstance(m.content, str) and not is_text(m.content):
            return f"messages[{i}].content"
        for j, part in enumerate(m.content if isinstance(m.content, list) else ()):
            if isinstance(part.get("text"), str) and not is_text(part["text"]):
                return f"messages[{i}].content[{j}].text"
    return "prompt"
