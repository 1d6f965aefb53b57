"""Usage for an answer that came without any (llama.cpp does not report it when streaming).

The estimate is made from the server's own tokenizer where it offers one (``count_tokens``: the
prompt's text plus a framing allowance, and the answer), else from the text's length: about four
characters a token, as tokenizers give for English, plus the same framing. The answer's count is
never more than the call's ``max_tokens`` (the model cannot have written more, though its text
counted again may come out a little longer), so an estimated cost never passes what was held for
the call. Either way the answer says it was estimated and how (``usage.estimated``,
``usage.estimate_method`` and a note), and its ledger row has ``cost_estimated = 1``.
"""

from __future__ import annotations

import logging

import anyio

from . import timings
from .providers import Provider
from .providers.mock import estimate_tokens
from .types import CompletionRequest, Usage

__all__ = [
    "BY_CHARS",
    "BY_TOKENIZER",
    "FRAMING_TOKENS_PER_MESSAGE",
    "REPLY_FRAMING_TOKENS",
    "estimate_usage",
    "note_for",
    "prompt_tokens_by_chars",
]

FRAMING_TOKENS_PER_MESSAGE = 4
REPLY_FRAMING_TOKENS = 3
"""Chat framing a tokenizer does not see in the bare text: a few tokens a message (its role and
separators; the system text counts as one) and a few for the start of the reply, as chat
templates add and as OpenAI documents for its own count."""
BY_TOKENIZER = "server_tokenizer"
BY_CHARS = "about_4_chars_per_token"

log = logging.getLogger("llm_router.estimates")


def prompt_tokens_by_chars(request: CompletionRequest) -> int:
    """About four characters a token for the system text and each turn, plus the framing per turn."""
    n = estimate_tokens(request.system) if request.system else 0
    return n + sum(estimate_tokens(m.content) + FRAMING_TOKENS_PER_MESSAGE for m in request.messages)


async def estimate_usage(
    provider: Provider, model: str, request: CompletionRequest, text: str, *, wait_s: float | None = None
) -> tuple[Usage, str]:
    """The usage of an answer ``text`` to ``request``, and how it was counted (BY_TOKENIZER or
    BY_CHARS). Waits at most ``wait_s`` (by default ``timings.COUNT_TOKENS_S``, read at each call)
    for the tokenizer; whatever it answers (None, garbage, an error, nothing in time) only means
    the count by characters. The answer's tokens are capped at ``request.max_tokens``."""
    parts = ([request.system] if request.system else []) + [m.content for m in request.messages]
    prompt_n: object = None
    answer_n: object = None
    if wait_s is None:
        wait_s = timings.COUNT_TOKENS_S
    with anyio.move_on_after(max(wait_s, 0.05)):
        try:
            prompt_n = await provider.count_tokens(model, "\n".join(parts))
            if prompt_n is not None:
                answer_n = await provider.count_tokens(model, text)
        except Exception:
            log.debug("%s:%s: counting tokens failed", provider.name, model, exc_info=True)
    if type(prompt_n) is int and type(answer_n) is int and prompt_n >= 0 and answer_n >= 0:
        framing = FRAMING_TOKENS_PER_MESSAGE * len(parts) + REPLY_FRAMING_TOKENS
        usage = Usage(prompt_n + framing, min(answer_n, request.max_tokens), estimated=True, estimate_method=BY_TOKENIZER)
        return usage, BY_TOKENIZER
    output = min(estimate_tokens(text), request.max_tokens)
    return Usage(prompt_tokens_by_chars(request), output, estimated=True, estimate_method=BY_CHARS), BY_CHARS


def note_for(method: str) -> str:
    """What the answer's notes say about an estimate made by ``method``."""
    if method == BY_TOKENIZER:
        how = (f"counted with the server's own tokenizer, plus {FRAMING_TOKENS_PER_MESSAGE} tokens a message and "
               f"{REPLY_FRAMING_TOKENS} for the reply for chat framing")
    else:
        # Not "the server offers no tokenizer": one that has one but did not answer in time (or
        # failed this once) is counted this way too.
        how = (f"about 4 characters a token, plus {FRAMING_TOKENS_PER_MESSAGE} tokens a message (no count came from "
               "a tokenizer of the server's own: it has none, or it did not answer in time)")
    return f"usage and cost are estimated: the provider reported no usage; {how}"
