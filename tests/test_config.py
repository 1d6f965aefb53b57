"""config.py: where settings come from, what a valid file turns into, and how every mistake is named.

conftest's autouse ``_isolated_env`` already clears the key variables and points
``default_config_path`` / ``default_ledger_path`` into ``tmp_path``; the tests here re-point them
explicitly where the point of the test is where a path comes from.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from llm_router import config
from llm_router.config import Settings, ledger_path, load_settings, settings_from_dict
from llm_router.defaults import KNOWN_PROVIDERS, builtin_config, demo_config
from llm_router.types import ConfigError, InvalidInput, parse_model_ref

# DESIGN.md's example, completed so that every model in the routing chain is configured.
EXAMPLE = """\
[ledger]
path = "~/.local/share/llm-router/ledger.db"

[[providers]]
name = "anthropic"                 # id used in model strings: "anthropic:claude-haiku-4-5"
kind = "anthropic"
base_url = "https://api.anthropic.com"
api_key_env = "ANTHROPIC_API_KEY"
models = ["claude-haiku-4-5", "claude-sonnet-4-5"]
timeout_s = 60

[[providers]]
name = "openai"
kind = "openai"
api_key_env = "OPENAI_API_KEY"
models = ["gpt-4o"]

[[providers]]
name = "ollama"
kind = "ollama"
base_url = "http://127.0.0.1:11434"
models = ["llama3.1", "llama3.1:8b"]

[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:8000/v1"
models = ["qwen2.5-7b"]
[providers.prices."qwen2.5-7b"]
input_per_mtok = 0.0
output_per_mtok = 0.0

[routing]
strategy = "balanced"
[[routing.rules]]
task_type = "code_generation"
chain = ["anthropic:claude-sonnet-4-5", "openai:gpt-4o", "ollama:llama3.1"]

[budget]
daily_usd = 5.0
monthly_usd = 50.0
per_request_usd = 0.50
"""


def _provider(name: str, kind: str, base_url: str | None, api_key_env: str | None, models: list[str]) -> dict:
    return {
        "name": name,
        "kind": kind,
        "base_url": base_url,
        "api_key_env": api_key_env,
        "models": models,
        "timeout_s": 60.0,
        "enabled": True,
        "pricing_provider": None,
        "prices": {},
        "model_overrides": {},
        "headers": {},
        "mock": None,
    }


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> tuple[ConfigError, Path]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value, path


# -- a valid file -------------------------------------------------------------------------------


def test_design_example_file_loads_into_the_settings_it_describes(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)

    settings = load_settings(path)

    local = _provider("local", "openai", "http://127.0.0.1:8000/v1", None, ["qwen2.5-7b"])
    local["prices"] = {
        "qwen2.5-7b": {
            "input_per_mtok": "0.0",
            "output_per_mtok": "0.0",
            "cached_input_per_mtok": None,
            "cache_write_per_mtok": None,
        }
    }
    # Sections the file leaves out (limits, resilience, ...) are exactly their defaults.
    assert settings.model_dump(mode="json") == Settings().model_dump(mode="json") | {
        "ledger": Settings().ledger.model_dump(mode="json") | {"path": "~/.local/share/llm-router/ledger.db"},
        "providers": [
            _provider(
                "anthropic",
                "anthropic",
                "https://api.anthropic.com",
                "ANTHROPIC_API_KEY",
                ["claude-haiku-4-5", "claude-sonnet-4-5"],
            ),
            _provider("openai", "openai", None, "OPENAI_API_KEY", ["gpt-4o"]),
            _provider("ollama", "ollama", "http://127.0.0.1:11434", None, ["llama3.1", "llama3.1:8b"]),
            local,
        ],
        "routing": {
            "strategy": "balanced",
            "default_quality": "medium",
            "default_max_tokens": 1024,
            "max_attempts": 4,
            "reference_model": None,
            "rules": [
                {
                    "task_type": "code_generation",
                    "chain": ["anthropic:claude-sonnet-4-5", "openai:gpt-4o", "ollama:llama3.1"],
                }
            ],
        },
        "budget": {
            "daily_usd": "5.0",
            "monthly_usd": "50.0",
            "per_request_usd": "0.5",
            "timezone": "UTC",
            "providers": {},
            "tags": {},
            "reservation_ttl_s": 900.0,
        },
        "source": str(path),
    }


def test_money_in_the_file_becomes_exact_decimals_not_floats(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[budget]\ndaily_usd = 0.1\nmonthly_usd = 3\n"))

    assert settings.budget.daily_usd == Decimal("0.1")
    assert settings.budget.monthly_usd == Decimal(3)


def test_demo_config_is_valid_and_uses_only_mock_providers(tmp_path: Path) -> None:
    settings = settings_from_dict(demo_config(str(tmp_path / "demo.db")), source="demo")

    assert {p.kind for p in settings.providers} == {"mock"}
    assert [p.name for p in settings.providers] == ["anthropic", "openai", "gemini", "ollama"]
    assert settings.routing.reference_model == "anthropic:claude-sonnet-4-5"
    assert ledger_path(settings) == tmp_path / "demo.db"


# -- every mistake names the file and the key ---------------------------------------------------


MISTAKES = [
    ("unknown top-level key", EXAMPLE + "\n[budgets]\ndaily_usd = 1\n", "budgets", "unknown key"),
    (
        "unknown key in a provider",
        EXAMPLE.replace("timeout_s = 60", 'timeout_s = 60\napi_key = "sk-oops"'),
        "providers[0] (name = 'anthropic').api_key",
        "unknown key",
    ),
    (
        "bad kind",
        EXAMPLE.replace('name = "local"\nkind = "openai"', 'name = "local"\nkind = "vllm"'),
        "providers[3] (name = 'local').kind",
        "Input should be 'anthropic', 'openai', 'gemini', 'ollama' or 'mock'",
    ),
    (
        "negative timeout",
        EXAMPLE.replace("timeout_s = 60", "timeout_s = -5"),
        "providers[0] (name = 'anthropic').timeout_s",
        "Input should be greater than 0",
    ),
    (
        "bad strategy",
        EXAMPLE.replace('strategy = "balanced"', 'strategy = "cheap"'),
        "routing.strategy",
        "Input should be 'cheapest', 'best', 'fastest' or 'balanced'",
    ),
    (
        "unknown time zone",
        EXAMPLE + 'timezone = "Europe/Pariss"\n',
        "budget.timezone",
        "unknown time zone 'Europe/Pariss' (use an IANA name such as 'Europe/Paris')",
    ),
    (
        "chain names an unconfigured model",
        EXAMPLE.replace('"openai:gpt-4o", "ollama', '"openai:gpt-4o-mini", "ollama'),
        "routing.rules[0].chain",
        "'openai:gpt-4o-mini' is not a configured model (did you mean 'openai:gpt-4o'?)",
    ),
    (
        "chain entry is not a model reference",
        EXAMPLE.replace('"openai:gpt-4o", "ollama', '"gpt-4o", "ollama'),
        "routing.rules[0].chain",
        '\'gpt-4o\' is not a model reference (write "provider:model", e.g. "anthropic:claude-haiku-4-5")',
    ),
    (
        "duplicate provider name",
        EXAMPLE.replace('name = "local"', 'name = "openai"'),
        "providers",
        "the name 'openai' is used twice",
    ),
    (
        "prices for a model not in models",
        EXAMPLE.replace('[providers.prices."qwen2.5-7b"]', '[providers.prices."qwen2.5-14b"]'),
        "providers[3] (name = 'local').prices",
        "'qwen2.5-14b' is not in models ['qwen2.5-7b']",
    ),
    (
        "negative budget",
        EXAMPLE.replace("daily_usd = 5.0", "daily_usd = -1"),
        "budget.daily_usd",
        "Input should be greater than or equal to 0",
    ),
    (
        "budget for an unconfigured provider",
        EXAMPLE + "[budget.providers.anthropix]\ndaily_usd = 1\n",
        "budget.providers",
        "'anthropix' is not a configured provider",
    ),
    (
        "reference model is not a model reference",
        EXAMPLE.replace('strategy = "balanced"', 'strategy = "balanced"\nreference_model = "gpt-4o"'),
        "routing.reference_model",
        '\'gpt-4o\' is not a model reference (write "provider:model", e.g. "anthropic:claude-haiku-4-5")',
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "message"), [pytest.param(*case, id=mistake) for mistake, *case in MISTAKES]
)
def test_config_mistake_is_an_error_naming_file_and_key(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    error, path = load_error(tmp_path, text)

    assert (error.file, error.key) == (str(path), key)
    assert str(error) == f"{path} [{key}]: {message}"


def test_invalid_toml_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    error, path = load_error(tmp_path, EXAMPLE + "\n[budget\n")

    assert error.file == str(path)
    assert str(error).startswith(f"{path}: not valid TOML: ")
    assert "line" in str(error)


def test_missing_config_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "config.toml"

    with pytest.raises(ConfigError) as info:
        load_settings(path)

    assert (info.value.file, info.value.key, str(info.value)) == (str(path), None, f"{path}: no such file")


def test_several_mistakes_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    error, path = load_error(
        tmp_path, "[routing]\nstrategy = 'x'\nmax_attempts = 0\n[limits]\nmax_messages = 0\n"
    )

    assert str(error) == (
        f"{path} [routing.strategy]: Input should be 'cheapest', 'best', 'fastest' or 'balanced'"
        " (and 2 more problem(s))"
    )


# -- where the config comes from ----------------------------------------------------------------


def test_llm_router_config_env_var_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, EXAMPLE, "from-env.toml")
    monkeypatch.setenv("LLM_ROUTER_CONFIG", str(path))

    assert load_settings().source == str(path)


def test_explicit_path_wins_over_llm_router_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_ROUTER_CONFIG", str(tmp_path / "does-not-exist.toml"))
    path = write(tmp_path, EXAMPLE)

    assert load_settings(path).source == str(path)


def test_llm_router_config_naming_a_missing_file_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_ROUTER_CONFIG", str(tmp_path / "typo.toml"))

    with pytest.raises(ConfigError, match="typo.toml: no such file"):
        load_settings()


def test_platform_config_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, EXAMPLE, "platform.toml")
    monkeypatch.setattr(config, "default_config_path", lambda: path)

    assert load_settings().source == str(path)


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, []),
        ({"ANTHROPIC_API_KEY": "sk-a"}, ["anthropic"]),
        ({"OPENAI_API_KEY": "sk-o", "GOOGLE_API_KEY": "g"}, ["openai", "gemini"]),
        ({"GEMINI_API_KEY": "g", "OLLAMA_HOST": "127.0.0.1:11434"}, ["gemini", "ollama"]),
        ({"ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "sk-o"}, ["openai"]),
        (
            {
                "ANTHROPIC_API_KEY": "a",
                "OPENAI_API_KEY": "o",
                "GEMINI_API_KEY": "g",
                "OLLAMA_HOST": "http://box:11434",
            },
            ["anthropic", "openai", "gemini", "ollama"],
        ),
    ],
)
def test_without_a_file_builtin_defaults_enable_exactly_the_providers_whose_keys_are_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], enabled: list[str]
) -> None:
    monkeypatch.setattr(config, "default_config_path", lambda: tmp_path / "absent" / "config.toml")
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    settings = load_settings()

    assert settings.source == "built-in defaults"
    assert [p.name for p in settings.providers] == enabled
    for p in settings.providers:
        assert p.models == list(KNOWN_PROVIDERS[p.name][3])


def test_builtin_defaults_use_the_key_variable_that_is_set() -> None:
    gemini_only_google = builtin_config({"GOOGLE_API_KEY": "g"})["providers"]
    gemini_both = builtin_config({"GOOGLE_API_KEY": "g", "GEMINI_API_KEY": "g2"})["providers"]

    assert [(p["name"], p["api_key_env"]) for p in gemini_only_google] == [("gemini", "GOOGLE_API_KEY")]
    assert [(p["name"], p["api_key_env"]) for p in gemini_both] == [("gemini", "GEMINI_API_KEY")]


def test_builtin_ollama_takes_its_address_from_ollama_host() -> None:
    bare = builtin_config({"OLLAMA_HOST": "10.0.0.5:11434"})["providers"]
    with_scheme = builtin_config({"OLLAMA_HOST": "https://ollama.example"})["providers"]

    assert bare == [
        {"name": "ollama", "kind": "ollama", "base_url": "http://10.0.0.5:11434", "models": ["llama3.1"]}
    ]
    assert with_scheme[0]["base_url"] == "https://ollama.example"


# -- the ledger path ----------------------------------------------------------------------------


def test_ledger_path_prefers_llm_router_db_over_the_file_and_the_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "default_ledger_path", lambda: tmp_path / "platform" / "ledger.db")
    with_path = Settings(ledger={"path": str(tmp_path / "from-file.db")})
    without_path = Settings()

    assert ledger_path(without_path) == tmp_path / "platform" / "ledger.db"
    assert ledger_path(with_path) == tmp_path / "from-file.db"

    monkeypatch.setenv("LLM_ROUTER_DB", str(tmp_path / "from-env.db"))

    assert ledger_path(with_path) == tmp_path / "from-env.db"
    assert ledger_path(without_path) == tmp_path / "from-env.db"


def test_ledger_path_from_the_file_expands_the_home_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    assert ledger_path(Settings(ledger={"path": "~/ledgers/spend.db"})) == tmp_path / "ledgers" / "spend.db"


# -- model references ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("anthropic:claude-haiku-4-5", ("anthropic", "claude-haiku-4-5")),
        ("ollama:llama3.1:8b", ("ollama", "llama3.1:8b")),
        ("local:org/model:q4_K_M", ("local", "org/model:q4_K_M")),
    ],
)
def test_parse_model_ref_splits_at_the_first_colon_only(ref: str, parts: tuple[str, str]) -> None:
    assert parse_model_ref(ref) == parts


@pytest.mark.parametrize("ref", ["anthropic", ":x", "x:", "", ":"])
def test_parse_model_ref_rejects_a_ref_without_both_parts_naming_the_field(ref: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_model_ref(ref, field_name="chain")

    assert info.value.to_dict() == {
        "code": "invalid_input",
        "message": f'chain: {ref!r} is not a model reference (allowed: "provider:model", e.g. "anthropic:claude-haiku-4-5")',
        "field": "chain",
        "allowed": '"provider:model", e.g. "anthropic:claude-haiku-4-5"',
    }
