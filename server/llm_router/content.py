"""The provider-neutral pieces of a rich request: content parts, tools, tool calls, output formats.

What ``prepare`` builds from a call's arguments (already checked: a part's image decoded and its
type known, a schema a valid JSON Schema) and every adapter translates to its own wire format.
Plain frozen dataclasses: built once per call, read by the adapter of each attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "TextPart",
    "ImagePart",
    "Part",
    "ToolSpec",
    "ToolCall",
    "ToolChoice",
    "ResponseFormat",
    "FinishReason",
    "FINISH_REASONS",
    "CAPABILITY_NAMES",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "tool_calls", "content_filter")

CAPABILITY_NAMES = (
    "text", "streaming", "system_prompt", "tools", "tool_choice", "vision", "image_url",
    "json_schema", "json_mode", "stop", "top_p", "seed",
)
"""Everything a model may or may not be able to do that a request can need, in the order shown:
``tool_choice`` is forcing a tool (``"required"`` or a named one), ``image_url`` taking an image
by its URL rather than its bytes; ``stop``, ``top_p`` and ``seed`` the sampling parameters."""


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, as bytes (``data``: base64, as the caller sent it, checked to decode) or by
    ``url`` (never fetched here: only a provider that takes URLs is sent one)."""

    mime_type: str
    """image/png, image/jpeg, image/gif or image/webp (from the bytes when ``data`` is given)."""
    data: str | None = None
    url: str | None = None
    size_bytes: int = 0
    """The decoded size (0 for a URL)."""
    width: int | None = None
    height: int | None = None
    """Pixels, read from the image's header (None for a URL or a header not understood)."""
    type: Literal["image"] = "image"


Part = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call, in MCP's shape."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made (in an answer), or one an earlier assistant turn made (in a request)."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


ToolChoice = Literal["auto", "required", "none"] | str
"""``auto``, ``required``, ``none``, or the name of the one tool the model must call
(``prepare`` keeps a named choice as the bare name, checked against the tools offered)."""


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """Structured output: any JSON object (``json_object``) or one matching ``schema``."""

    type: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = "response"
    """A name for the schema where a provider wants one (OpenAI's ``json_schema.name``, the
    forced tool Anthropic is given): letters, digits, ``_`` and ``-``, at most 64."""
