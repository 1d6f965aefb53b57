"""Built-in data: the known providers, their default models, quality tiers, and the demo setup.

This is the one place that names models. Prices are never written here: they come from
genai-prices (see ``catalog.py``) or from a config's ``[providers.prices."model"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from .types import Quality

__all__ = [
    "KNOWN_PROVIDERS", "TIER_PATTERNS", "KIND_CAPABILITIES", "LOCAL_MODELS_VAR", "tier_for", "is_local_url", "builtin_config", "demo_config",
]

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

# What a model can be asked for, by the wire protocol it is reached by, when nothing better is
# known: the model's server does not say (Ollama's ``/api/show`` and llama.cpp's ``/props`` do,
# and are asked) and the config names none (``[providers.model_overrides."m"] capabilities``).
# Per protocol, never per model name: each is what that API offers every current model.
_COMMON = frozenset({"text", "streaming", "system_prompt", "json_schema", "json_mode", "stop", "top_p"})
KIND_CAPABILITIES: dict[str, frozenset[str]] = {
    # Messages API: tools and images for every Claude model; structured output by forcing a
    # tool; images by URL; no seed parameter.
    "anthropic": _COMMON | {"tools", "tool_choice", "vision", "image_url"},
    # Chat Completions at OpenAI (and hosted APIs that speak it): everything.
    "openai": _COMMON | {"tools", "tool_choice", "vision", "image_url", "seed"},
    # The same protocol served locally (llama.cpp, vLLM, LM Studio): tools and images depend on
    # how the model was loaded, so only what the server says (llama.cpp's /props) or the config.
    "openai-local": _COMMON | {"seed"},
    # generateContent: tools, images (as bytes, or by a public or signed HTTPS URL Gemini
    # fetches itself, since January 2026), seed.
    "gemini": _COMMON | {"tools", "tool_choice", "vision", "image_url", "seed"},
    # /api/chat: images as bytes only, no way to force a tool; tools and images as /api/show's
    # ``capabilities`` say for the model (until asked: neither).
    "ollama": _COMMON | {"seed"},
    "mock": frozenset({"text", "streaming", "system_prompt", "json_schema", "json_mode", "stop", "top_p", "seed",
                       "tools", "tool_choice", "vision", "image_url"}),
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

LOCAL_MODELS_VAR = "LLM_ROUTER_LOCAL_MODELS"
"""The models a local OpenAI-compatible server given by ``OPENAI_BASE_URL`` serves, comma-separated."""
LOCAL_DEFAULT_MODEL = "default"
"""Its model name when that variable is unset: llama.cpp answers any name; ``check`` says when the
server lists others."""


def is_local_url(url: str) -> bool:
    """Whether ``url`` names this machine or a private network (a self-hosted server, not a cloud API)."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _local_entry(url: str, env: Mapping[str, str]) -> dict[str, Any]:
    """``OPENAI_BASE_URL`` naming a server of one's own (vLLM, LM Studio, llama.cpp): the provider
    ``local``, free unless a config file prices it, with the models ``LLM_ROUTER_LOCAL_MODELS``
    names. It is not OpenAI: its answers are never billed at OpenAI's prices."""
    models = [m.strip() for m in env.get(LOCAL_MODELS_VAR, "").split(",") if m.strip()]
    models = list(dict.fromkeys(models)) or [LOCAL_DEFAULT_MODEL]
    entry: dict[str, Any] = {
        "name": "local",
        "kind": "openai",
        "base_url": url,
        "models": models,
        "prices": {m: {"input_per_mtok": 0, "output_per_mtok": 0} for m in models},
    }
    if env.get("OPENAI_API_KEY"):
        entry["api_key_env"] = "OPENAI_API_KEY"  # LM Studio and llama.cpp docs set a dummy one
    return entry


def _real_entry(name: str, env: Mapping[str, str], models: list[str]) -> dict[str, Any] | None:
    """A known provider's entry when its key (or, for Ollama, its address) is set.

    ``OPENAI_BASE_URL`` is OpenAI (or a hosted service or proxy that speaks for it, billed at
    OpenAI's prices) only with ``OPENAI_API_KEY`` and an address that is neither this machine nor
    a private network; otherwise it is the free ``local`` provider (see ``_local_entry``)."""
    kind, base_url, key_vars, _ = KNOWN_PROVIDERS[name]
    url = env.get(BASE_URL_VARS.get(name, "")) or base_url
    entry: dict[str, Any] = {"name": name, "kind": kind, "base_url": url, "models": models}
    if name == "openai" and env.get("OPENAI_BASE_URL") and (not env.get("OPENAI_API_KEY") or is_local_url(url)):
        return _local_entry(url, env)
    if key_vars:
        present = next((v for v in key_vars if env.get(v)), None)
        return None if present is None else entry | {"api_key_env": present}
    host = env.get("OLLAMA_HOST")
    if not host:
        return None
    return entry | {"base_url": host if host.startswith("http") else f"http://{host}"}


def builtin_config(env: Mapping[str, str]) -> dict[str, Any]:
    """Used when no config file exists: each known provider whose key is set (Ollama: when
    ``OLLAMA_HOST`` is set) is enabled with its default models; ``OPENAI_BASE_URL`` naming a
    server of one's own is the free provider ``local`` instead of ``openai``."""
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


def demo_config(ledger_path: str) -> dict[str, Any]:
    """The built-in demo configuration: mock providers only, whatever keys or base URLs the
    environment holds, so the demo never reaches the network nor spends real money."""
    providers: list[dict[str, Any]] = [
        {
            "name": name,
            "kind": "mock",
            "models": list(models),
            "pricing_provider": PRICING_IDS.get(name, name),
            "mock": {"latency_ms": latency, "imitates": f"{label} (mock: no network, real prices)"}
            | _DEMO_FAULTS.get(name, {}),
        }
        for name, label, models, latency in _DEMO_MOCKS
    ]
    providers.append(
        {
            "name": "ollama",
            "kind": "mock",
            "models": ["llama3.1"],
            "prices": {"llama3.1": {"input_per_mtok": 0, "output_per_mtok": 0}},
            "model_overrides": {"llama3.1": {"context_window": 131072}},
            "mock": {"latency_ms": 60, "imitates": "Ollama (mock: local and free)"},
        }
    )
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
