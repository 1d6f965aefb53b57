"""Built-in data: the known providers, their default models, quality tiers, and the demo setup.

This is the one place that names models. Prices are never written here: they come from
genai-prices (see ``catalog.py``) or from a config's ``[providers.prices."model"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from .types import Quality

__all__ = ["KNOWN_PROVIDERS", "TIER_PATTERNS", "tier_for", "builtin_config", "demo_config"]

# name → (kind, base_url, key variables in order of preference, default models)
KNOWN_PROVIDERS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    "anthropic": (
        "anthropic",
        "https://api.anthropic.com",
        ("ANTHROPIC_API_KEY",),
        ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"),
    ),
    "openai": (
        "openai",
        "https://api.openai.com/v1",
        ("OPENAI_API_KEY",),
        ("gpt-4.1-nano", "gpt-4o-mini", "gpt-4.1", "gpt-4o"),
    ),
    "gemini": (
        "gemini",
        "https://generativelanguage.googleapis.com",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash", "gemini-2.5-pro"),
    ),
    "ollama": ("ollama", "http://127.0.0.1:11434", (), ("llama3.1",)),
}

# The genai-prices provider id for each wire protocol (Gemini's prices live under "google").
PRICING_IDS: dict[str, str] = {"anthropic": "anthropic", "openai": "openai", "gemini": "google"}

# First match wins; a model that matches none gets a tier inferred from its output price.
TIER_PATTERNS: tuple[tuple[str, Quality], ...] = (
    ("*opus*", "critical"),
    ("gpt-5-pro*", "critical"),
    ("gpt-5.*-pro*", "critical"),
    ("o1-mini*", "high"),
    ("o1*", "critical"),
    ("o3", "critical"),
    ("gemini-*-pro*", "high"),
    ("*sonnet*", "high"),
    ("gpt-4.1", "high"),
    ("gpt-4o", "high"),
    ("gpt-5", "high"),
    ("gpt-5.?", "high"),
    ("o3-mini*", "high"),
    ("o4-mini*", "high"),
    ("deepseek-reasoner", "high"),
    ("mistral-large*", "high"),
    ("*haiku*", "medium"),
    ("gpt-4.1-mini", "medium"),
    ("gpt-4o-mini", "medium"),
    ("gpt-5-mini", "medium"),
    ("gemini-*-flash", "medium"),
    ("deepseek-chat", "medium"),
    ("*70b*", "medium"),
    ("*-nano*", "low"),
    ("*flash-lite*", "low"),
    ("*8b*", "low"),
    ("*7b*", "low"),
    ("llama3*", "low"),
    ("qwen*", "low"),
)


def tier_for(model: str) -> Quality | None:
    """The tier the pattern table gives ``model``, or None when no pattern matches."""
    name = model.lower()
    for pattern, tier in TIER_PATTERNS:
        if fnmatchcase(name, pattern):
            return tier
    return None


# Base-URL variables honoured for the known providers, as the providers' own SDKs and tools do.
BASE_URL_VARS = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL", "gemini": "GEMINI_BASE_URL"}


def _real_entry(name: str, env: Mapping[str, str], models: list[str]) -> dict[str, Any] | None:
    """A known provider's real entry when its key (or, for local servers, its address) is set."""
    kind, base_url, key_vars, _ = KNOWN_PROVIDERS[name]
    url = env.get(BASE_URL_VARS.get(name, ""), base_url)
    entry: dict[str, Any] = {"name": name, "kind": kind, "base_url": url, "models": models}
    if key_vars:
        present = next((v for v in key_vars if env.get(v)), None)
        if present is not None:
            return entry | {"api_key_env": present}
        if name == "openai" and env.get("OPENAI_BASE_URL"):
            return entry  # a keyless OpenAI-compatible server (vLLM, LM Studio, llama.cpp)
        return None
    host = env.get("OLLAMA_HOST")
    if not host:
        return None
    return entry | {"base_url": host if host.startswith("http") else f"http://{host}"}


def builtin_config(env: Mapping[str, str]) -> dict[str, Any]:
    """Used when no config file exists: each known provider whose key is set (Ollama: when
    ``OLLAMA_HOST`` is set; a keyless OpenAI-compatible server: ``OPENAI_BASE_URL``) is enabled
    with its default models."""
    providers = [
        entry
        for name, (_, _, _, models) in KNOWN_PROVIDERS.items()
        if (entry := _real_entry(name, env, list(models))) is not None
    ]
    return {"providers": providers}


# The demo: mock providers named after real ones, priced like the real models, no network.
_DEMO_MOCKS: tuple[tuple[str, str, tuple[str, ...], float], ...] = (
    ("anthropic", "Anthropic", ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"), 40),
    ("openai", "OpenAI", ("gpt-4.1-nano", "gpt-4o-mini", "gpt-4o"), 30),
    ("gemini", "Google Gemini", ("gemini-2.5-flash-lite", "gemini-2.5-flash", "gemini-2.5-pro"), 25),
)


# One sick provider, so the demo shows fallback: the mock Gemini is rate-limited every other call
# and asks for a 1 s wait, longer than the demo's retry_after_cap_s, so the router moves on.
_DEMO_FAULTS: dict[str, dict[str, Any]] = {"gemini": {"failure_rate": 0.5, "failure": "rate_limit"}}


def demo_config(ledger_path: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The built-in demo configuration. A provider whose key is in ``env`` (Ollama: ``OLLAMA_HOST``;
    a keyless OpenAI-compatible server: ``OPENAI_BASE_URL``) is the real adapter; every other one
    is a mock that says so. ``env=None`` (the ``demo`` command) means mocks only."""
    env = env or {}
    providers: list[dict[str, Any]] = []
    for name, label, models, latency in _DEMO_MOCKS:
        real = _real_entry(name, env, list(models))
        providers.append(
            real
            or {
                "name": name,
                "kind": "mock",
                "models": list(models),
                "pricing_provider": PRICING_IDS.get(name, name),
                "mock": {"latency_ms": latency, "imitates": f"{label} (mock: no network, real prices)"}
                | _DEMO_FAULTS.get(name, {}),
            }
        )
    ollama: dict[str, Any] = {
        "name": "ollama",
        "models": ["llama3.1"],
        "prices": {"llama3.1": {"input_per_mtok": 0, "output_per_mtok": 0}},
        "model_overrides": {"llama3.1": {"context_window": 131072}},
    }
    real_ollama = _real_entry("ollama", env, ["llama3.1"])
    if real_ollama:
        providers.append(ollama | real_ollama)
    else:
        providers.append(ollama | {"kind": "mock", "mock": {"latency_ms": 60, "imitates": "Ollama (mock: local and free)"}})
    return {
        "ledger": {"path": ledger_path},
        "providers": providers,
        "routing": {
            "strategy": "balanced",
            "reference_model": "anthropic:claude-sonnet-4-5",
            "rules": [
                {
                    "task_type": "code_generation",
                    "chain": ["anthropic:claude-sonnet-4-5", "openai:gpt-4o", "ollama:llama3.1"],
                },
                {"task_type": "summarize", "chain": ["gemini:gemini-2.5-flash-lite", "openai:gpt-4o-mini"]},
            ],
        },
        "budget": {"daily_usd": 5, "monthly_usd": 50, "per_request_usd": 0.5},
        "resilience": {"retry_after_cap_s": 0.5},
    }
