"""A provider that needs no network: deterministic answers, usage reported like a real provider.

Used by the demo (mock providers named after real ones, priced like the real models so budgets
bite) and by tests. Failures can be configured (a rate) or scripted (a queue of errors to raise).
"""

from __future__ import annotations

import hashlib
from collections import deque

import anyio

from ..config import MockSettings
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

__all__ = ["MockProvider", "estimate_tokens"]

_WORDS = ["the", "answer", "considers", "each", "part", "of", "the", "question", "and", "gives", "a", "short", "clear", "reply", "with", "the", "key", "facts", "first", "then", "the", "reasoning", "that", "supports", "them", "and", "a", "brief", "note", "on", "what", "remains", "uncertain"]

_FAILURES: dict[str, type[ProviderError]] = {
    "server": ServerError,
    "overloaded": Overloaded,
    "rate_limit": RateLimited,
    "timeout": Timeout,
    "auth": AuthError,
    "invalid_request": InvalidRequest,
}
_STATUS = {"server": 500, "overloaded": 529, "rate_limit": 429, "auth": 401, "invalid_request": 400}


def estimate_tokens(text: str) -> int:
    """A tokenizer stand-in: about four characters a token, as real tokenizers give for English."""
    return max(1, (len(text) + 3) // 4)


class MockProvider:
    kind = "mock"

    def __init__(self, name: str, settings: MockSettings | None = None) -> None:
        self.name = name
        self.settings = settings or MockSettings()
        self.calls = 0
        self.script: deque[ProviderError | None] = deque()
        """Outcomes for the next calls, in order: an error to raise, or None for a normal answer."""

    def fail_next(self, *errors: ProviderError | None) -> None:
        self.script.extend(errors)

    def _reply(self, model: str, request: CompletionRequest) -> tuple[str, Usage]:
        prompt = "\n".join(m.content for m in request.messages)
        digest = hashlib.sha256(f"{self.name}:{model}:{request.system}:{prompt}".encode()).digest()
        n_words = min(12 + digest[0] % 48, max(1, request.max_tokens))
        words = [_WORDS[(digest[i % len(digest)] + i) % len(_WORDS)] for i in range(n_words)]
        text = f"[mock {self.name}:{model}] " + " ".join(words)
        # Output tokens as a provider would count them, never past max_tokens.
        output = min(estimate_tokens(text), request.max_tokens)
        input_tokens = estimate_tokens((request.system or "") + prompt) + 4 * len(request.messages)
        return text, Usage(input_tokens=input_tokens, output_tokens=output)

    def _failure(self) -> ProviderError | None:
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
        error = self._failure()
        latency = self.settings.latency_ms / 1000
        if latency:
            await anyio.sleep(latency)
        if error is not None:
            error.model = error.model or model
            raise error
        text, usage = self._reply(model, request)
        if on_text is not None:
            # Stream word by word over a second ``latency``, as a real provider trickles tokens.
            pieces = text.split(" ")
            step = latency / len(pieces) if latency else 0
            for i, piece in enumerate(pieces):
                await on_text(piece if i == 0 else " " + piece)
                if step:
                    await anyio.sleep(step)
        finish = "length" if usage.output_tokens >= request.max_tokens else "stop"
        return Completion(text=text, model=model, usage=usage, finish_reason=finish, response_id=None)

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
