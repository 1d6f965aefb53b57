"""What llama.cpp's ``GET /props`` says of a model: the window one request may fill and what the
model can be asked for. One answer serves both questions (``OpenAIProvider`` asks it once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..defaults import KIND_CAPABILITIES

__all__ = ["Props", "read_props"]


@dataclass(frozen=True, slots=True)
class Props:
    """``status`` of the answer (None: no answer), and what it stated (None: it did not say)."""

    status: int | None
    n_ctx: int | None = None
    capabilities: frozenset[str] | None = None


def read_props(status: int | None, data: Any) -> Props:
    """The per-slot ``n_ctx`` (``default_generation_settings.n_ctx``; older servers put it at the
    top) and the capabilities: the protocol's local defaults, with ``vision`` where
    ``modalities.vision`` is true (a multimodal projector is loaded) and ``tools`` where
    ``chat_template_caps.supports_tools`` is (the chat template renders tools, under ``--jinja``)
    and ``supports_tool_calls`` is not false (a template that renders tools but not the model's
    calls back cannot carry a tool conversation). None when the server states neither."""
    if status != 200 or not isinstance(data, dict):
        return Props(status)
    settings = data.get("default_generation_settings")
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    if n_ctx is None:
        n_ctx = data.get("n_ctx")
    return Props(status, n_ctx if type(n_ctx) is int and n_ctx > 0 else None, _capabilities(data))


def _capabilities(data: dict[str, Any]) -> frozenset[str] | None:
    stated = False
    extra: set[str] = set()
    for holder, key, name in (("modalities", "vision", "vision"), ("chat_template_caps", "supports_tools", "tools")):
        section = data.get(holder)
        if not isinstance(section, dict) or not isinstance(section.get(key), bool):
            continue
        stated = True
        if section[key] and (name != "tools" or section.get("supports_tool_calls") is not False):
            extra.add(name)
    return KIND_CAPABILITIES["openai-local"] | extra if stated else None
