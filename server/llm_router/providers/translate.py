"""What every adapter needs to translate a rich request and its answer: ids for tool calls that
came without one, tool arguments read strictly, images as data URLs, and the finish reason in
the router's words. The wire shapes themselves are each adapter's own."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from ..content import FinishReason, ImagePart
from ..types import InvalidOutput, Usage
from .wire import clean_text, redact

__all__ = ["new_call_id", "tool_arguments", "valid_text", "data_url", "finish_of"]


def new_call_id() -> str:
    """An id for a tool call the provider sent none for (Gemini, Ollama): unique, so that the
    caller's ``tool`` turn can name the call it answers."""
    return "call_" + os.urandom(12).hex()


def valid_text(value: Any) -> Any:
    """``value`` (decoded JSON) with every string made valid Unicode: JSON may carry lone
    surrogate halves, which would end the stdio writer once they reach MCP."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_text(v) for v in value]
    return value


def tool_arguments(
    raw: Any, *, tool: str, provider: str, model: str, usage: Usage | None, secrets: Sequence[str] = ()
) -> dict[str, Any]:
    """A tool call's arguments as an object of valid text: a JSON object already decoded, or text
    holding one (OpenAI sends a string). Anything else is the model's mistake, an
    ``InvalidOutput`` (billed): an empty string counts as no arguments, as the APIs send for a
    tool without parameters; arguments nested too deep to read are one too. What it quotes of
    broken arguments is without ``secrets`` (the adapter's credentials, which an upstream may echo)."""
    try:
        return _arguments(raw, tool=tool, provider=provider, model=model, usage=usage, secrets=secrets)
    except RecursionError:
        raise InvalidOutput(f"{provider} called {tool} with arguments nested too deep to read",
                            provider=provider, model=model, usage=usage) from None


def _arguments(
    raw: Any, *, tool: str, provider: str, model: str, usage: Usage | None, secrets: Sequence[str]
) -> dict[str, Any]:
    if isinstance(raw, dict):
        return valid_text(raw)  # type: ignore[no-any-return]  # a dict in, a dict out
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidOutput(
                f"{provider} called {tool} with arguments that are not JSON ({exc}): "
                f"{redact(clean_text(raw[:200]), secrets)!r}",
                provider=provider, model=model, usage=usage,
            ) from None
        if isinstance(value, dict):
            return valid_text(value)  # type: ignore[no-any-return]  # a dict in, a dict out
        raw = value
    raise InvalidOutput(
        f"{provider} called {tool} with arguments that are a JSON {type(raw).__name__}, not an object",
        provider=provider, model=model, usage=usage,
    )


def data_url(image: ImagePart) -> str:
    """An image as OpenAI takes one: its URL, or its bytes as a ``data:`` URL."""
    if image.url is not None:
        return image.url
    return f"data:{image.mime_type};base64,{image.data}"


def finish_of(native: str | None, table: dict[str, FinishReason], *, tool_calls: bool) -> FinishReason:
    """A provider's stop reason in the router's words: ``tool_calls`` whenever the answer holds
    tool calls, else ``table``'s word for it, else ``stop`` (a reason the table does not know
    is a normal end)."""
    if tool_calls:
        return "tool_calls"
    if native is None:
        return "stop"
    return table.get(native, "stop")
