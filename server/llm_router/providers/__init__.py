"""Provider adapters, one module per wire protocol, built from configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..config import ProviderConfig
from .base import HttpSettings, ProbeResult, Provider, TextCallback

__all__ = ["Provider", "ProbeResult", "TextCallback", "build_provider", "api_key_for", "availability"]

# Ollama and keyless local OpenAI-compatible servers need no key.
_KEY_REQUIRED = {"anthropic", "openai", "gemini"}


def api_key_for(cfg: ProviderConfig, env: Mapping[str, str] = os.environ) -> str | None:
    return env.get(cfg.api_key_env) if cfg.api_key_env else None


def availability(cfg: ProviderConfig, env: Mapping[str, str] = os.environ) -> tuple[bool, str]:
    """Whether a provider can be called at all, and why not (no call is made)."""
    if not cfg.enabled:
        return False, "disabled in config (enabled = false)"
    if cfg.kind == "mock":
        return True, "mock provider: always available"
    if cfg.api_key_env and not env.get(cfg.api_key_env):
        return False, f"no API key: set the environment variable {cfg.api_key_env}"
    # An OpenAI-compatible local server (vLLM, LM Studio, llama.cpp) needs no key.
    if cfg.kind in _KEY_REQUIRED and not cfg.api_key_env and not (cfg.kind == "openai" and cfg.base_url):
        return False, "no api_key_env configured for this provider"
    return True, "key present" if cfg.api_key_env else "configured (no key needed)"


def build_provider(cfg: ProviderConfig, env: Mapping[str, str] = os.environ) -> Provider:
    """One adapter instance (and one connection pool) per configured provider."""
    if cfg.kind == "mock":
        from .mock import MockProvider

        return MockProvider(cfg.name, cfg.mock)
    from ..defaults import KNOWN_PROVIDERS

    base_url = cfg.base_url or KNOWN_PROVIDERS[cfg.kind][1]
    settings = HttpSettings(
        name=cfg.name, base_url=base_url, api_key=api_key_for(cfg, env), timeout_s=cfg.timeout_s,
        headers=dict(cfg.headers),
    )
    if cfg.kind == "anthropic":
        from .anthropic import AnthropicProvider

        return AnthropicProvider(settings)
    if cfg.kind == "openai":
        from .openai import OpenAIProvider

        return OpenAIProvider(settings)
    if cfg.kind == "gemini":
        from .gemini import GeminiProvider

        return GeminiProvider(settings)
    if cfg.kind == "ollama":
        from .ollama import OllamaProvider

        return OllamaProvider(settings)
    raise ValueError(f"unknown provider kind {cfg.kind!r}")
