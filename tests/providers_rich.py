"""What the rich wire tests (``test_providers_rich_<dialect>.py``) share: asking an adapter for a
completion, JSON or streamed, with the text deltas it streamed collected."""

from __future__ import annotations

from llm_router.providers.base import Provider
from llm_router.types import Completion, CompletionRequest


async def complete_collecting(
    provider: Provider, model: str, request: CompletionRequest, *, stream: bool = False
) -> tuple[Completion, list[str]]:
    """``provider.complete``, streamed when ``stream``; the completion and every text delta."""
    deltas: list[str] = []

    async def on_text(text: str) -> None:
        deltas.append(text)

    result = await provider.complete(model, request, on_text=on_text if stream else None)
    return result, deltas
