"""Usage estimated for an answer that came without any: never more output than the call allowed,
and a note that says how it was counted without claiming what it does not know."""

from __future__ import annotations

import anyio
import pytest

from llm_router import timings
from llm_router.estimates import BY_CHARS, BY_TOKENIZER, estimate_usage, note_for
from llm_router.types import CompletionRequest, Message

pytestmark = pytest.mark.anyio


class Tokenizer:
    """A provider whose tokenizer gives ``counts`` in turn (prompt, then answer), or never answers."""

    name = "local"

    def __init__(self, *counts: int, hangs: bool = False) -> None:
        self.counts = list(counts)
        self.hangs = hangs

    async def count_tokens(self, model: str, text: str) -> int | None:
        if self.hangs:
            await anyio.sleep_forever()
        return self.counts.pop(0)


def ask(max_tokens: int) -> CompletionRequest:
    return CompletionRequest(messages=(Message(role="user", content="Name three colours."),), max_tokens=max_tokens)


async def test_an_answer_counted_by_the_servers_tokenizer_never_passes_max_tokens() -> None:
    """Seen: 49 output tokens estimated for a call with max_tokens 40 (the text counted again
    comes out longer than what the model wrote), so the estimated cost passed what was held."""
    usage, method = await estimate_usage(Tokenizer(5, 49), "m", ask(40), "red, green and blue " * 5)
    assert method == BY_TOKENIZER and (usage.input_tokens, usage.output_tokens) == (5 + 4 + 3, 40)
    usage, _ = await estimate_usage(Tokenizer(5, 12), "m", ask(40), "red, green and blue")
    assert usage.output_tokens == 12, "a count under the cap is kept as it is"


async def test_an_answer_counted_by_characters_never_passes_max_tokens() -> None:
    """Seen: 205 output tokens estimated by characters for a call with max_tokens 200."""
    text = "x" * 820  # 205 tokens at four characters a token
    usage, method = await estimate_usage(Tokenizer(hangs=True), "m", ask(200), text, wait_s=0.05)
    assert method == BY_CHARS and usage.output_tokens == 200
    usage, _ = await estimate_usage(Tokenizer(hangs=True), "m", ask(300), text, wait_s=0.05)
    assert usage.output_tokens == 205


async def test_a_tokenizer_too_slow_to_count_is_not_said_to_be_missing() -> None:
    """The note said "the server offers no tokenizer" whenever characters were counted, even for a
    server that has one and was only slow to answer."""
    _usage, method = await estimate_usage(Tokenizer(hangs=True), "m", ask(40), "red", wait_s=0.05)
    note = note_for(method)
    assert method == BY_CHARS and "offers no tokenizer" not in note
    assert note.startswith("usage and cost are estimated: the provider reported no usage; about 4 characters a token")
    assert "it has none, or it did not answer in time" in note
    assert "server's own tokenizer" in note_for(BY_TOKENIZER)


async def test_a_patched_tokenizer_wait_is_what_an_estimate_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the wait was a default bound when ``estimate_usage`` was defined, so a patch of
    ``timings.COUNT_TOKENS_S`` (1 s) was ignored: here a hanging tokenizer is given up on in time."""
    monkeypatch.setattr(timings, "COUNT_TOKENS_S", 0.05)
    with anyio.fail_after(0.9):
        _usage, method = await estimate_usage(Tokenizer(hangs=True), "m", ask(40), "red")
    assert method == BY_CHARS
