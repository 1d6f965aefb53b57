"""What each model can be asked for (``content.CAPABILITY_NAMES``), and where that came from.

In order of precedence: the config (``[providers.model_overrides."m"] capabilities``: a list is
the whole set, a table changes single ones), then what the model's own server says (Ollama's
``/api/show``, llama.cpp's ``/props``: asked once, like the window, by ``windows.WindowAsker``),
then the documented default of the protocol the model is reached by
(``defaults.KIND_CAPABILITIES``). Never a table of model names.

Routing leaves out a model that lacks what a request needs (``capability_missing``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelOverride, ProviderConfig
from .content import CAPABILITY_NAMES
from .defaults import KIND_CAPABILITIES, is_local_url

__all__ = ["Capabilities", "capabilities_for", "learned", "how_to_change", "SERVER_SAYS"]

SERVER_SAYS = frozenset({"tools", "vision"})
"""What a server's own answer decides (the rest of a protocol's capabilities are the protocol's)."""
_ORDER = {name: i for i, name in enumerate(CAPABILITY_NAMES)}
_DEFAULT_SOURCE = {
    "openai-local": "default of an OpenAI-compatible server on this machine or a private network, whose /props "
                    "has not said it takes tools or images",
    "ollama": "default of the ollama API, until /api/show says",
}
"""Where the default of a protocol whose servers may say more came from, in words a user knows."""
_HINT = 'set [providers.model_overrides."{model}"] capabilities to say what it can do'


def how_to_change(entry_model: str, capabilities: Capabilities) -> str:
    """What a user can do about a capability a model lacks by default."""
    return "" if capabilities.source == "config" else "; " + _HINT.format(model=entry_model)


@dataclass(frozen=True, slots=True)
class Capabilities:
    names: frozenset[str]
    source: str
    askable: bool = False
    """Whether the model's server may be asked (the config has not settled it)."""

    def listed(self) -> list[str]:
        return sorted(self.names, key=_ORDER.__getitem__)

    def missing(self, needs: frozenset[str]) -> list[str]:
        return sorted(needs - self.names, key=_ORDER.__getitem__)


def _protocol(cfg: ProviderConfig) -> str:
    if cfg.kind == "openai" and cfg.base_url is not None and is_local_url(cfg.base_url):
        return "openai-local"
    return cfg.kind


def capabilities_for(cfg: ProviderConfig, model: str) -> Capabilities:
    """The model's capabilities before its server has said anything."""
    protocol = _protocol(cfg)
    base = KIND_CAPABILITIES.get(protocol, frozenset({"text", "streaming", "system_prompt"}))
    askable = protocol in ("ollama", "openai-local")
    source = _DEFAULT_SOURCE.get(protocol, f"default of the {protocol} API")
    override: ModelOverride | None = cfg.model_overrides.get(model)
    wanted = override.capabilities if override is not None else None
    if wanted is None:
        return Capabilities(base, source, askable)
    if isinstance(wanted, list):
        return Capabilities(frozenset(wanted) | {"text"}, "config")
    switched: dict[str, bool] = {str(n): on for n, on in wanted.items()}
    names = {n for n in base if switched.get(n, True)} | {n for n, on in switched.items() if on}
    changed = ", ".join(f"{n} {'on' if on else 'off'}" for n, on in switched.items())
    return Capabilities(frozenset(names), f"{_DEFAULT_SOURCE.get(protocol, f'default of the {protocol} API')}, changed by config ({changed})",
                        askable and not SERVER_SAYS & set(wanted))


def learned(current: Capabilities, said: frozenset[str], how: str) -> Capabilities:
    """``current`` with what the server said decided: the tools and vision it names, and no other."""
    names = (current.names - SERVER_SAYS) | (said & SERVER_SAYS)
    return Capabilities(frozenset(names), f"{how}; the rest the API's default")
