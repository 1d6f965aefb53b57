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
            "ask_to_raise": True,
            "ask_timeout_s": 120.0,
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
    (
        "unknown top-level key",
        EXAMPLE + "\n[budgets]\ndaily_usd = 1\n",
        "budgets",
        "unknown key (did you mean 'budget'?)",
    ),
    (
        "unknown key in a provider",
        EXAMPLE.replace("timeout_s = 60", 'timeout_s = 60\napi_key = "sk-oops"'),
        "providers[0] (name = 'anthropic').api_key",
        "unknown key (did you mean 'api_key_env'?)",
    ),
    (
        "unknown key far from any",
        EXAMPLE + "\n[limits]\nzzz = 1\n",
        "limits.zzz",
        f"unknown key (allowed: {', '.join(config.LimitsConfig.model_fields)})",
    ),
    (
        "unknown key in a table of tables",
        EXAMPLE + "[budget.tags.research]\ndaly_usd = 1\n",
        "budget.tags.research.daly_usd",
        "unknown key (did you mean 'daily_usd'?)",
    ),
    (
        "bad kind",
        EXAMPLE.replace('name = "local"\nkind = "openai"', 'name = "local"\nkind = "vllm"'),
        "providers[3] (name = 'local').kind",
        "'vllm' is not allowed (allowed: 'anthropic', 'openai', 'gemini', 'ollama' or 'mock')"
        ' (any OpenAI-compatible server, such as vLLM, LM Studio or llama.cpp, is kind = "openai")',
    ),
    (
        "misspelt kind",
        EXAMPLE.replace('name = "local"\nkind = "openai"', 'name = "local"\nkind = "openia"'),
        "providers[3] (name = 'local').kind",
        "'openia' is not allowed (allowed: 'anthropic', 'openai', 'gemini', 'ollama' or 'mock') (did you mean 'openai'?)",
    ),
    (
        "negative timeout",
        EXAMPLE.replace("timeout_s = 60", "timeout_s = -5"),
        "providers[0] (name = 'anthropic').timeout_s",
        "-5 is too small (allowed: more than 0)",
    ),
    (
        "bad strategy",
        EXAMPLE.replace('strategy = "balanced"', 'strategy = "cheap"'),
        "routing.strategy",
        "'cheap' is not allowed (allowed: 'cheapest', 'best', 'fastest', 'balanced' or 'adaptive') (did you mean 'cheapest'?)",
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
        "-1 is too small (allowed: at least 0)",
    ),
    (
        "budget for an unconfigured provider",
        EXAMPLE + "[budget.providers.anthropix]\ndaily_usd = 1\n",
        "budget.providers",
        "'anthropix' is not a configured provider (did you mean 'anthropic'?)",
    ),
    (
        "a model listed twice",
        EXAMPLE.replace('models = ["gpt-4o"]', 'models = ["gpt-4o", "gpt-4o"]'),
        "providers[1] (name = 'openai').models",
        "'gpt-4o' listed twice",
    ),
    (
        "a provider without models",
        EXAMPLE.replace('models = ["gpt-4o"]\n', ""),
        "providers[1] (name = 'openai').models",
        "list at least one model this provider serves",
    ),
    (
        "a base_url without a scheme",
        EXAMPLE.replace('base_url = "http://127.0.0.1:11434"', 'base_url = "127.0.0.1:11434"'),
        "providers[2] (name = 'ollama').base_url",
        "'127.0.0.1:11434' must start with http:// or https://",
    ),
    (
        "the loader's own fields are not config keys",
        'source = "elsewhere"\n' + EXAMPLE,
        "source",
        "unknown key (allowed: ledger, providers, routing, budget, limits, resilience, http, quality, telemetry)",
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


def test_every_config_mistake_is_listed_at_once_each_naming_the_file_and_its_key(tmp_path: Path) -> None:
    error, path = load_error(
        tmp_path,
        "[routing]\nstrategy = 'x'\nmax_attempts = 0\n[limits]\nmax_messages = 0\n"
        "[[providers]]\nname = 'a'\nkind = 'openai'\ntimout_s = 3\nmodels = ['m', 'm']\n",
    )

    assert error.problems == [
        ("providers[0] (name = 'a').models", "'m' listed twice"),
        ("providers[0] (name = 'a').timout_s", "unknown key (did you mean 'timeout_s'?)"),
        ("routing.strategy", "'x' is not allowed (allowed: 'cheapest', 'best', 'fastest', 'balanced' or 'adaptive')"),
        ("routing.max_attempts", "0 is too small (allowed: at least 1)"),
        ("limits.max_messages", "0 is too small (allowed: more than 0)"),
    ]
    assert error.key == "providers[0] (name = 'a').models"
    assert str(error) == f"{path}: 5 problems:" + "".join(f"\n  {path} [{k}]: {m}" for k, m in error.problems)


def test_every_cross_reference_mistake_is_listed_at_once(tmp_path: Path) -> None:
    error, _ = load_error(
        tmp_path,
        EXAMPLE.replace('"openai:gpt-4o", "ollama:llama3.1"', '"openai:gpt-4o-mini", "ollama:llama3.2"')
        + "[budget.providers.anthropix]\ndaily_usd = 1\n",
    )

    assert error.problems == [
        ("routing.rules[0].chain", "'openai:gpt-4o-mini' is not a configured model (did you mean 'openai:gpt-4o'?)"),
        ("routing.rules[0].chain", "'ollama:llama3.2' is not a configured model (did you mean 'ollama:llama3.1'?)"),
        ("budget.providers", "'anthropix' is not a configured provider (did you mean 'anthropic'?)"),
    ]


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


# -- OPENAI_BASE_URL: OpenAI, or a server of one's own ------------------------------------------


def test_a_keyless_openai_base_url_is_the_free_local_provider_not_openai() -> None:
    providers = builtin_config({"OPENAI_BASE_URL": "http://gpu-box:8000/v1"})["providers"]

    assert providers == [
        {
            "name": "local",
            "kind": "openai",
            "base_url": "http://gpu-box:8000/v1",
            "models": ["default"],
            "prices": {"default": {"input_per_mtok": 0, "output_per_mtok": 0}},
        }
    ]


def test_an_openai_base_url_on_this_machine_is_local_even_with_a_key_set() -> None:
    # LM Studio's and llama.cpp's own instructions set a dummy OPENAI_API_KEY.
    for url in ("http://localhost:1234/v1", "http://127.0.0.1:8080/v1", "http://[::1]:8000/v1", "http://192.168.1.20:8000/v1"):
        (entry,) = builtin_config({"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "lm-studio"})["providers"]
        assert (entry["name"], entry["base_url"], entry["api_key_env"]) == ("local", url, "OPENAI_API_KEY")


def test_a_hosted_openai_base_url_with_a_key_is_openai_at_openai_prices() -> None:
    (entry,) = builtin_config({"OPENAI_BASE_URL": "https://gateway.example.com/v1", "OPENAI_API_KEY": "sk-o"})["providers"]

    assert entry == {"name": "openai", "kind": "openai", "base_url": "https://gateway.example.com/v1",
                     "models": list(KNOWN_PROVIDERS["openai"][3]), "api_key_env": "OPENAI_API_KEY"}


def test_the_local_providers_models_come_from_llm_router_local_models() -> None:
    (entry,) = builtin_config({"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
                               "LLM_ROUTER_LOCAL_MODELS": " qwen2.5-7b, llama-3.2-3b ,,qwen2.5-7b"})["providers"]

    assert entry["models"] == ["qwen2.5-7b", "llama-3.2-3b"]
    assert set(entry["prices"]) == {"qwen2.5-7b", "llama-3.2-3b"}


def test_a_local_model_named_like_an_openai_one_is_not_billed_at_openai_prices(tmp_path: Path) -> None:
    from llm_router.catalog import Catalog
    from llm_router.types import Usage

    data = builtin_config({"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1", "LLM_ROUTER_LOCAL_MODELS": "gpt-4o-mini"})
    catalog = Catalog(settings_from_dict(data, source="built-in defaults"))

    (entry,) = catalog
    assert entry.ref == "local:gpt-4o-mini"
    assert entry.cost_nusd(Usage(input_tokens=1_000_000, output_tokens=1_000_000)) == 0


# -- the demo -----------------------------------------------------------------------------------


def test_the_demo_keeps_its_own_ledger_whatever_the_ledger_variables_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_router.ledger import ledger_url

    monkeypatch.setenv("LLM_ROUTER_DB", str(tmp_path / "real.db"))
    monkeypatch.setenv("LLM_ROUTER_DB_URL", "postgresql://team@db.internal/spend")
    demo = settings_from_dict(demo_config(str(tmp_path / "demo.db")), source="demo", demo=True)

    assert (ledger_path(demo), ledger_url(demo)) == (tmp_path / "demo.db", None)


def test_demo_is_not_a_key_a_config_file_can_set(tmp_path: Path) -> None:
    error, _ = load_error(tmp_path, "demo = true\n")

    assert error.problems == [("demo", "unknown key (allowed: ledger, providers, routing, budget, limits, resilience, http, quality, telemetry)")]


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


@pytest.mark.parametrize(
    "text",
    [
        "[routing]\nmax_attempts = 'many'\n", "[routing]\ndefault_max_tokens = -3\n", "[budget]\ndaily_usd = 'x'\n",
        "[budget]\nmonthly_usd = 0.0000000001\n", "[ledger]\nstore_prompts = 'maybe'\n", "[http]\nallowed_hosts = 3\n",
        "[[providers]]\nname = 'Bad Name'\nkind = 'openai'\nmodels = ['m']\n",
        "[[providers]]\nname = 'p'\nkind = 'mock'\nmodels = ['m']\n[providers.mock]\nfailure_rate = 2\n",
        "[[providers]]\nname = 'p'\nkind = 'openai'\n",
    ],
)
def test_a_config_mistake_is_worded_by_the_router_never_in_pydantics_text(tmp_path: Path, text: str) -> None:
    """Past the key, config errors were pydantic's own text ("Input should be greater than 0",
    "String should match pattern ..."): the problem now says what is wrong and what is allowed."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    for pydantic_words in ("Input should", "String should", "should be", "pydantic", "Value error"):
        assert pydantic_words not in message, message
