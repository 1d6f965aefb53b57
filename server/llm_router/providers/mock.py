"""A provider that needs no network: deterministic answers, usage reported like a real provider.

Used by the demo (mock providers named after real ones, priced like the real models so budgets
bite) and by tests. Rich requests (tools, structured output, images) are answered too
(``mock_rich``): a tool call with arguments valid for the tool, JSON valid for the schema, a
text that says which images it saw. Failures can be configured (a rate); outcomes can be
scripted, in order: errors to raise (``fail_next``) and answers to give (``answer_next``).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio

from ..config import MockSettings
from ..content import FinishReason, ToolCall
from ..types import (
    AuthError,
    Completion,
    CompletionRequest,
    InvalidRequest,
    Overloaded,
    ProviderError,
    RateLimited,
    ServerError,
    Timeout,
    Usage,
)
from .base import ProbeResult, TextCallback
from .mock_rich import IMAGE_TOKENS, answer, call_id, cut_at_stop, estimate_tokens, rich_key, word_pieces, words

__all__ = ["MockProvider", "Scripted", "estimate_tokens", "IMAGE_TOKENS"]

_FAILURES: dict[str, type[ProviderError]] = {
    "server": ServerError,
    "overloaded": Overloaded,
    "rate_limit": RateLimited,
    "timeout": Timeout,
    "auth": AuthError,
    "invalid_request": InvalidRequest,
}
_STATUS = {"server": 500, "overloaded": 529, "rate_limit": 429, "auth": 401, "invalid_request": 400}


@dataclass(frozen=True, slots=True)
class Scripted:
    """An answer a test scripts with ``answer_next``, made a ``Completion`` when its call comes:
    for the model asked, with ``text`` and ``tool_calls`` as given (a ``(name, arguments)`` pair
    gets an id the mock derives from the request), ``finish`` as given (by default
    ``tool_calls`` when there are calls, else ``stop``), and ``usage`` as given: None is a
    provider that reported none, ``"counted"`` (the default) what the mock counts for its own
    answers (the request's tokens, and the answer's, never past ``max_tokens``)."""

    text: str = ""
    tool_calls: tuple[ToolCall | tuple[str, dict[str, Any]], ...] = ()
    usage: Usage | None | Literal["counted"] = "counted"
    finish: FinishReason | None = None


class MockProvider:
    kind = "mock"

    def __init__(self, name: str, settings: MockSettings | None = None) -> None:
        self.name = name
        self.settings = settings or MockSettings()
        self.calls = 0
        self.script: deque[ProviderError | Completion | Scripted | None] = deque()
        """Outcomes for the next calls, in order: an error to raise, an answer to give (as is:
        a ``Completion``'s blank ``model`` is the model asked, its missing ``finish_reason``
        ``tool_calls`` or ``stop``), or None for the mock's own answer."""
        self.last_request: CompletionRequest | None = None
        """What the latest call asked (for tests: what a fallback handed this provider)."""

    def fail_next(self, *errors: ProviderError | None) -> None:
        self.script.extend(errors)

    def answer_next(self, *answers: Completion | Scripted | str) -> None:
        """Give these answers to the next calls, in order, after what is already scripted (a
        ``str`` is ``Scripted(text)``): e.g. invalid JSON first and valid JSON second."""
        self.script.extend(Scripted(a) if isinstance(a, str) else a for a in answers)

    def _digest(self, model: str, request: CompletionRequest, prompt: str, *, rich: bool) -> bytes:
        """What every choice of an answer comes from: the same request, the same answer (a plain
        request's digest is the one it always had, unless a seed is given)."""
        key = f"{self.name}:{model}:{request.system}:{prompt}"
        if request.seed is not None:
            key += f":seed={request.seed}"
        if rich:
            key += ":" + rich_key(request)
        return hashlib.sha256(key.encode()).digest()

    @staticmethod
    def _input_tokens(request: CompletionRequest, prompt: str) -> int:
        return estimate_tokens((request.system or "") + prompt) + 4 * len(request.messages)

    def _reply(self, model: str, request: CompletionRequest) -> tuple[str, Usage]:
        prompt = "\n".join(m.content for m in request.messages)
        digest = self._digest(model, request, prompt, rich=False)
        n_words = min(12 + digest[0] % 48, max(1, request.max_tokens))
        text = f"[mock {self.name}:{model}] " + " ".join(words(digest, n_words))
        # Output tokens as a provider would count them, never past max_tokens.
        output = min(estimate_tokens(text), request.max_tokens)
        return text, Usage(input_tokens=self._input_tokens(request, prompt), output_tokens=output)

    def _rich_reply(self, model: str, request: CompletionRequest) -> tuple[Completion, list[str]]:
        """The answer to a rich request, and the pieces its text streams in."""
        prompt = "\n".join(m.content for m in request.messages)
        digest = self._digest(model, request, prompt, rich=True)
        made = answer(f"[mock {self.name}:{model}] ", digest, request, self._input_tokens(request, prompt))
        done = Completion(text=made.text, model=model, usage=Usage(made.input_tokens, made.output_tokens),
                          finish_reason=made.finish, response_id=None, tool_calls=made.tool_calls)
        return done, made.pieces

    def _scripted(self, model: str, request: CompletionRequest, script: Scripted) -> Completion:
        prompt = "\n".join(m.content for m in request.messages)
        calls = tuple(
            c if isinstance(c, ToolCall) else ToolCall(id="", name=c[0], arguments=c[1]) for c in script.tool_calls
        )
        if any(not c.id for c in calls):
            digest = self._digest(model, request, prompt, rich=True)
            calls = tuple(c if c.id else replace(c, id=call_id(digest, i)) for i, c in enumerate(calls))
        usage = script.usage
        if usage == "counted":
            written = script.text + "".join(c.name + json.dumps(c.arguments, separators=(",", ":")) for c in calls)
            usage = Usage(self._input_tokens(request, prompt), min(estimate_tokens(written), request.max_tokens))
        finish = script.finish or ("tool_calls" if calls else "stop")
        return Completion(text=script.text, model=model, usage=usage, finish_reason=finish, response_id=None,
                          tool_calls=calls)

    def _outcome(self) -> ProviderError | Completion | Scripted | None:
        if self.script:
            return self.script.popleft()
        rate = self.settings.failure_rate
        # Deterministic: fail on the calls where the running share of failures falls behind the rate.
        if rate and int(self.calls * rate) > int((self.calls - 1) * rate):
            kind = self.settings.failure
            return _FAILURES[kind](
                f"{self.name} (mock) injected a {kind} failure",
                provider=self.name,
                status=_STATUS.get(kind),
                retry_after=1.0 if kind == "rate_limit" else None,
            )
        return None

    async def complete(
        self, model: str, request: CompletionRequest, *, on_text: TextCallback | None = None
    ) -> Completion:
        self.calls += 1
        self.last_request = request
        outcome = self._outcome()
        latency = self.settings.latency_ms / 1000
        if latency:
            await anyio.sleep(latency)
        if isinstance(outcome, ProviderError):
            outcome.model = outcome.model or model
            raise outcome
        if outcome is not None:
            done = self._scripted(model, request, outcome) if isinstance(outcome, Scripted) else self._given(model, outcome)
            pieces = word_pieces(done.text) if done.text else []
        elif request.rich:
            done, pieces = self._rich_reply(model, request)
        else:
            text, usage = self._reply(model, request)
            finish = "length" if usage.output_tokens >= request.max_tokens else "stop"
            if request.stop and (cut := cut_at_stop(text, request.stop)) is not None:
                text, finish = cut, "stop"
                usage = replace(usage, output_tokens=min(estimate_tokens(cut), request.max_tokens))
            done = Completion(text=text, model=model, usage=usage, finish_reason=finish, response_id=None)
            pieces = word_pieces(text) if on_text is not None else []
        if on_text is not None and pieces:
            # Streamed over a second ``latency``, as a real provider trickles tokens.
            step = latency / len(pieces) if latency else 0
            for piece in pieces:
                await on_text(piece)
                if step:
                    await anyio.sleep(step)
        return done

    @staticmethod
    def _given(model: str, given: Completion) -> Completion:
        """A scripted ``Completion`` as is, but for the model (when blank) and the finish (when missing)."""
        if given.model and given.finish_reason is not None:
            return given
        return replace(given, model=given.model or model,
                       finish_reason=given.finish_reason or ("tool_calls" if given.tool_calls else "stop"))

    async def probe(self) -> ProbeResult:
        return ProbeResult(ok=True, detail="mock provider (no network)")

    async def count_tokens(self, model: str, text: str) -> int | None:
        return None

    async def context_window(self, model: str) -> int | None:
        return None

    async def capabilities(self, model: str) -> frozenset[str] | None:
        return None

    async def aclose(self) -> None:
        return None
