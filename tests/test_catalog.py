"""catalog.py: prices, context windows and tiers for each configured model, and where each came from.

Prices are checked against genai-prices' own ``calc_price``, so the tests hold whatever the
installed snapshot says a model costs; only the shape and provenance of each figure is fixed here.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from llm_router.catalog import DEFAULT_CONTEXT_WINDOW, Catalog, ModelEntry, Prices
from llm_router.config import Settings, settings_from_dict
from llm_router.defaults import demo_config
from llm_router.types import NUSD_PER_USD, InvalidInput, Usage, usd_to_nusd

GENAI = f"genai-prices {genai_prices.__version__}"


def catalog_of(*providers: dict[str, Any]) -> Catalog:
    return Catalog(settings_from_dict({"providers": list(providers)}, source="test"))


@functools.cache
def _catalog() -> Catalog:
    """One catalog with a model of every kind of provenance (built once: lookups are not free)."""
    return catalog_of(
        {
            "name": "anthropic",
            "kind": "anthropic",
            "models": ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"],
            "model_overrides": {"claude-opus-4-5": {"tier": "high", "context_window": 1_000_000}},
        },
        {
            "name": "openai",
            "kind": "openai",
            "models": ["gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo", "gpt-4-turbo"],
            "prices": {"gpt-4o": {"input_per_mtok": 2, "output_per_mtok": 8, "cached_input_per_mtok": 0.5}},
        },
        {"name": "gemini", "kind": "gemini", "models": ["gemini-2.5-flash", "gemini-2.5-pro"]},
        {"name": "ollama", "kind": "ollama", "models": ["llama3.1", "mystery:13b"]},
        {
            "name": "local",
            "kind": "openai",
            "base_url": "http://127.0.0.1:8000/v1",
            "models": ["my-finetune", "house-large", "house-small"],
            "prices": {
                "house-large": {"input_per_mtok": 5, "output_per_mtok": 20},
                "house-small": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
            },
        },
    )


@pytest.fixture
def catalog() -> Catalog:
    return _catalog()


def genai_cost(model: str, provider_id: str, usage: Usage) -> Decimal:
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        model,
        provider_id=provider_id,
    )
    return calc.total_price


def genai_prices_of(model: str, provider_id: str) -> dict[str, str]:
    """The base prices genai-prices lists, in describe()'s shape."""
    from datetime import UTC, datetime

    from genai_prices.data_snapshot import get_snapshot

    _, info = get_snapshot().find_provider_model(model, None, provider_id, None)
    mp = info.get_prices(datetime.now(UTC))

    def base(v: Any) -> str:
        return str(getattr(v, "base", v))

    return {
        "input": base(mp.input_mtok),
        "output": base(mp.output_mtok),
        "cached_input": base(mp.cache_read_mtok if mp.cache_read_mtok is not None else mp.input_mtok),
        "cache_write": base(mp.cache_write_mtok if mp.cache_write_mtok is not None else mp.input_mtok),
    }


# -- prices and where they come from ------------------------------------------------------------


def test_model_known_to_genai_prices_gets_its_prices_and_says_so(catalog: Catalog) -> None:
    assert catalog.get("anthropic:claude-haiku-4-5").describe() == {
        "model": "anthropic:claude-haiku-4-5",
        "tier": "medium",
        "tier_source": "built-in table",
        "context_window": 200_000,
        "context_source": "genai-prices",
        "context_known": True,
        "max_output_tokens": None,
        "price_per_mtok": genai_prices_of("claude-haiku-4-5", "anthropic"),
        "price_source": f"{GENAI}: anthropic/claude-haiku-4-5",
        "free": False,
        "capabilities": ["text", "streaming", "system_prompt", "tools", "tool_choice", "vision", "image_url",
                         "json_schema", "json_mode", "stop", "top_p"],
        "capability_source": "default of the anthropic API",
    }


def test_gemini_models_are_priced_under_genai_prices_provider_google(catalog: Catalog) -> None:
    entry = catalog.get("gemini:gemini-2.5-flash")

    assert entry.price_source == f"{GENAI}: google/gemini-2.5-flash"
    assert entry.describe()["price_per_mtok"] == genai_prices_of("gemini-2.5-flash", "google")


def test_mock_provider_is_priced_by_its_pricing_provider(tmp_path: Any) -> None:
    demo = Catalog(settings_from_dict(demo_config(str(tmp_path / "l.db")), source="demo"))

    assert demo.get("gemini:gemini-2.5-pro").price_source == f"{GENAI}: google/gemini-2.5-pro"
    assert demo.get("openai:gpt-4o-mini").price_source == f"{GENAI}: openai/gpt-4o-mini"
    assert demo.get("ollama:llama3.1").describe()["price_source"] == "config"


def test_config_prices_override_genai_prices_and_say_config(catalog: Catalog) -> None:
    entry = catalog.get("openai:gpt-4o")

    assert (entry.prices, entry.price_source) == (
        Prices(input=Decimal(2), output=Decimal(8), cache_read=Decimal("0.5"), cache_write=Decimal(2)),
        "config",
    )
    # the cost follows the configured price, not genai-prices'
    assert entry.cost_usd(
        Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=500_000)
    ) == (Decimal("1.0") + Decimal("0.25") + Decimal(8))
    # the context window still comes from genai-prices
    assert entry.context_source == "genai-prices"


def test_ollama_model_without_a_price_is_free(catalog: Catalog) -> None:
    entry = catalog.get("ollama:mystery:13b")

    assert (entry.prices, entry.price_source, entry.free) == (
        Prices(Decimal(0), Decimal(0), Decimal(0), Decimal(0)),
        "free (local Ollama)",
        True,
    )
    assert entry.cost_usd(Usage(input_tokens=10_000, output_tokens=5_000)) == 0
    assert entry.worst_case_nusd(10_000, 5_000) == 0


def test_unknown_model_on_a_paid_provider_has_no_price_and_says_which_key_to_set(catalog: Catalog) -> None:
    entry = catalog.get("local:my-finetune")

    assert entry.prices is None
    assert entry.price_source == 'unknown: set [providers.prices."my-finetune"] in the config'
    assert entry.free is False
    assert entry.cost_usd(Usage(input_tokens=10, output_tokens=10)) is None
    assert entry.cost_nusd(Usage(input_tokens=10, output_tokens=10)) is None
    assert entry.worst_case_nusd(10, 10) is None
    assert entry.typical_nusd(10, 10) is None


# -- tiers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "tier", "source"),
    [
        ("anthropic:claude-haiku-4-5", "medium", "built-in table"),
        ("anthropic:claude-sonnet-4-5", "high", "built-in table"),
        ("gemini:gemini-2.5-pro", "high", "built-in table"),
        ("ollama:llama3.1", "low", "built-in table"),
        ("anthropic:claude-opus-4-5", "high", "config"),  # the table says critical
        ("local:house-large", "high", "inferred from output price"),  # $20 output
        ("local:house-small", "low", "inferred from output price"),  # $0.2 output
        ("openai:gpt-3.5-turbo", "medium", "inferred from output price"),  # genai-prices: $1.5
        ("openai:gpt-4-turbo", "high", "inferred from output price"),  # genai-prices: $30
        ("local:my-finetune", "medium", "assumed (no tier pattern and no price; set model_overrides)"),
    ],
)
def test_tier_comes_from_table_then_override_then_price(
    catalog: Catalog, ref: str, tier: str, source: str
) -> None:
    entry = catalog.get(ref)

    assert (entry.tier, entry.tier_source) == (tier, source)


# -- context windows ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "window", "source"),
    [
        ("anthropic:claude-haiku-4-5", 200_000, "genai-prices"),
        ("openai:gpt-4o-mini", 128_000, "genai-prices"),
        ("anthropic:claude-opus-4-5", 1_000_000, "config"),
        (
            "ollama:llama3.1",
            DEFAULT_CONTEXT_WINDOW,
            f"assumed ({DEFAULT_CONTEXT_WINDOW} tokens; set model_overrides)",
        ),
        (
            "local:my-finetune",
            DEFAULT_CONTEXT_WINDOW,
            f"assumed ({DEFAULT_CONTEXT_WINDOW} tokens; set model_overrides)",
        ),
    ],
)
def test_context_window_comes_from_override_then_genai_prices_then_a_default(
    catalog: Catalog, ref: str, window: int, source: str
) -> None:
    entry = catalog.get(ref)

    assert (entry.context_window, entry.context_source) == (window, source)


@pytest.mark.parametrize(
    ("ref", "known"),
    [("anthropic:claude-haiku-4-5", True), ("anthropic:claude-opus-4-5", True), ("ollama:llama3.1", False),
     ("local:my-finetune", False)],
)
def test_only_a_window_from_config_genai_prices_or_the_server_is_known(catalog: Catalog, ref: str, known: bool) -> None:
    assert catalog.get(ref).context_known is known


def test_a_window_the_server_states_is_remembered_with_where_it_came_from() -> None:
    cat = catalog_of(
        {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "models": ["a", "b"],
         "prices": {m: {"input_per_mtok": 0, "output_per_mtok": 0} for m in ("a", "b")},
         "model_overrides": {"b": {"context_window": 32_768}}},
    )
    assert cat.learn_window("local:a", 2_048, "reported by the server in an error")
    a = cat.get("local:a")
    assert (a.context_window, a.context_source, a.context_known) == (2_048, "reported by the server in an error", True)
    assert a.describe()["context_source"] == "reported by the server in an error"
    # A configured window gives way only to a smaller one: the server cannot take more than it runs with.
    assert not cat.learn_window("local:b", 65_536, "reported by the server")
    assert cat.learn_window("local:b", 4_096, "reported by the server")
    assert cat.get("local:b").context_window == 4_096
    # Garbage is not remembered.
    for junk in (0, -1, 10**12, 2.5, True, "4096"):
        assert not cat.learn_window("local:a", junk, "reported by the server")  # type: ignore[arg-type]
    assert cat.get("local:a").context_window == 2_048


def test_model_overrides_set_max_output_tokens() -> None:
    cat = catalog_of(
        {
            "name": "ollama",
            "kind": "ollama",
            "models": ["llama3.1"],
            "model_overrides": {"llama3.1": {"max_output_tokens": 2048}},
        }
    )

    assert cat.get("ollama:llama3.1").max_output_tokens == 2048


# -- cost ---------------------------------------------------------------------------------------

USAGES = [
    Usage(input_tokens=1_000, output_tokens=500),
    Usage(input_tokens=12_345, output_tokens=678, cached_tokens=10_000),
    Usage(input_tokens=50_000, output_tokens=1, cached_tokens=49_000),
    Usage(input_tokens=3, output_tokens=0),
    Usage(),
]
REAL_MODELS = [
    ("anthropic:claude-haiku-4-5", "claude-haiku-4-5", "anthropic"),
    ("openai:gpt-4o-mini", "gpt-4o-mini", "openai"),
    ("gemini:gemini-2.5-flash", "gemini-2.5-flash", "google"),
]


@pytest.mark.parametrize("usage", USAGES, ids=repr)
@pytest.mark.parametrize(("ref", "model", "provider_id"), REAL_MODELS)
def test_cost_equals_genai_prices_calc_price_for_the_same_usage(
    catalog: Catalog, ref: str, model: str, provider_id: str, usage: Usage
) -> None:
    assert catalog.get(ref).cost_usd(usage) == genai_cost(model, provider_id, usage)


@pytest.mark.parametrize("usage", USAGES, ids=repr)
@pytest.mark.parametrize(("ref", "model", "provider_id"), REAL_MODELS)
def test_config_priced_twin_costs_the_same_as_genai_prices(
    catalog: Catalog, ref: str, model: str, provider_id: str, usage: Usage
) -> None:
    """Our own arithmetic (used for config prices) follows genai-prices' convention that
    ``input_tokens`` includes the cached ones."""
    p = catalog.get(ref).prices
    assert p is not None
    provider, name = ref.split(":", 1)
    twin = catalog_of(
        {
            "name": provider,
            "kind": "openai",
            "models": [name],
            "prices": {
                name: {
                    "input_per_mtok": p.input,
                    "output_per_mtok": p.output,
                    "cached_input_per_mtok": p.cache_read,
                    "cache_write_per_mtok": p.cache_write,
                }
            },
        }
    ).get(ref)

    assert twin.price_source == "config"
    assert twin.cost_usd(usage) == genai_cost(model, provider_id, usage)


def test_cache_write_tokens_are_priced_at_the_cache_write_price(catalog: Catalog) -> None:
    usage = Usage(input_tokens=20_000, output_tokens=100, cache_write_tokens=15_000)

    assert catalog.get("anthropic:claude-haiku-4-5").cost_usd(usage) == genai_cost(
        "claude-haiku-4-5", "anthropic", usage
    )


def test_cost_nusd_is_the_usd_cost_in_integer_nano_dollars(catalog: Catalog) -> None:
    entry = catalog.get("openai:gpt-4o")  # $2 in, $8 out per million

    assert entry.cost_nusd(Usage(input_tokens=1, output_tokens=1)) == 10_000


def test_long_context_cost_uses_the_tier_price_for_every_token(catalog: Catalog) -> None:
    """genai-prices' cliff rule: past 200k input tokens the whole call is priced at the tier."""
    entry = catalog.get("anthropic:claude-sonnet-4-5")
    usage = Usage(input_tokens=300_000, output_tokens=1_000)

    assert entry.cost_usd(usage) == genai_cost("claude-sonnet-4-5", "anthropic", usage)
    assert entry.worst_case_nusd(300_000, 1_000) >= entry.cost_usd(usage) * NUSD_PER_USD  # type: ignore[operator]


def test_worst_case_for_a_long_context_call_is_not_priced_at_the_base_rate(catalog: Catalog) -> None:
    """Regression: reservations for calls past a price tier used the base price and fell short."""
    entry = catalog.get("gemini:gemini-2.5-pro")
    usage = Usage(input_tokens=500_000, output_tokens=8_000)

    assert entry.worst_case_nusd(500_000, 8_000) >= entry.cost_usd(usage) * NUSD_PER_USD  # type: ignore[operator]


PRICED = [
    "anthropic:claude-haiku-4-5",
    "anthropic:claude-sonnet-4-5",
    "anthropic:claude-opus-4-5",
    "openai:gpt-4o-mini",
    "openai:gpt-4o",
    "gemini:gemini-2.5-flash",
    "gemini:gemini-2.5-pro",
    "local:house-large",
]


@st.composite
def call_within_bounds(draw: st.DrawFn) -> tuple[str, int, int, Usage]:
    ref = draw(st.sampled_from(PRICED))
    input_bound = draw(st.integers(0, 2_000_000))
    max_tokens = draw(st.integers(0, 200_000))
    input_tokens = draw(st.integers(0, input_bound) | st.just(input_bound))
    cache_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cache_read))
    output_tokens = draw(st.integers(0, max_tokens) | st.just(max_tokens))
    return ref, input_bound, max_tokens, Usage(input_tokens, output_tokens, cache_read, cache_write)


@hypothesis_settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(call_within_bounds())
def test_worst_case_is_never_below_the_real_cost_of_any_usage_within_its_bounds(
    call: tuple[str, int, int, Usage],
) -> None:
    ref, input_bound, max_tokens, usage = call
    entry: ModelEntry = _catalog().get(ref)

    worst = entry.worst_case_nusd(input_bound, max_tokens)
    cost = entry.cost_usd(usage)

    assert worst is not None and cost is not None
    assert worst >= cost * NUSD_PER_USD


_PRICE = st.one_of(
    st.decimals(0, 100, places=3),  # what providers publish
    st.decimals(0, 1, places=12),  # finer than a nano-dollar per million tokens: the Decimal path
    st.sampled_from([Decimal("0.075"), Decimal("0.0375"), Decimal("3.75"), Decimal("0.3")]),
)


@hypothesis_settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(call_within_bounds(), st.tuples(_PRICE, _PRICE, _PRICE, _PRICE))
def test_integer_costs_equal_the_decimal_definitions_exactly(
    call: tuple[str, int, int, Usage], four: tuple[Decimal, Decimal, Decimal, Decimal]
) -> None:
    """cost_nusd, worst_case_nusd and typical_nusd take an integer shortcut when the prices are
    whole nano-dollars per million tokens; it must give the very figure the Decimal formula does."""
    import math

    _ref, input_bound, max_tokens, usage = call
    p = Prices(*four)
    entry = ModelEntry(ref="p:m", provider="p", model="m", kind="openai", prices=p, price_source="config",
                       context_window=1_000_000, context_source="config", tier="medium", tier_source="config")
    mtok = Decimal(1_000_000)
    fresh = max(usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
    usd = (fresh * p.input + usage.cached_tokens * p.cache_read + usage.cache_write_tokens * p.cache_write
           + usage.output_tokens * p.output) / mtok
    worst = math.ceil((input_bound * max(p.input, p.cache_read, p.cache_write) + max_tokens * p.output) * NUSD_PER_USD / mtok)
    typical = math.ceil((input_bound * p.input + max_tokens * p.output) * NUSD_PER_USD / mtok)

    assert entry.cost_usd(usage) == usd
    assert entry.cost_nusd(usage) == usd_to_nusd(usd)
    assert entry.worst_case_nusd(input_bound, max_tokens) == worst
    assert entry.typical_nusd(input_bound, max_tokens) == typical


@pytest.mark.parametrize(("input_tokens", "nusd"), [(1, 0), (2, 1), (3, 2), (5, 2), (7, 4)])
def test_cost_nusd_rounds_half_a_nano_dollar_to_even(input_tokens: int, nusd: int) -> None:
    """$0.0005 per million tokens is half a nano-dollar a token: an odd count lands on a tie."""
    half = Decimal("0.0005")
    entry = ModelEntry(ref="p:m", provider="p", model="m", kind="openai", prices=Prices(half, half, half, half),
                       price_source="config", context_window=1000, context_source="config", tier="low", tier_source="config")
    assert entry.prices is not None and entry.prices.nano is not None  # the integer path
    assert entry.cost_nusd(Usage(input_tokens=input_tokens, output_tokens=0)) == nusd
    assert nusd == usd_to_nusd(entry.cost_usd(Usage(input_tokens=input_tokens, output_tokens=0)) or 0)


def test_typical_estimate_uses_uncached_input_and_output_prices(catalog: Catalog) -> None:
    entry = catalog.get("openai:gpt-4o")  # $2 in, $8 out per million

    assert entry.typical_nusd(1_000, 1_000) == 10_000_000


# -- lookups ------------------------------------------------------------------------------------


def test_unknown_model_is_invalid_input_with_a_did_you_mean(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput) as info:
        catalog.get("anthropic:claude-haiku-4.5")

    assert info.value.to_dict() == {
        "code": "invalid_input",
        "message": "model: unknown model 'anthropic:claude-haiku-4.5'; did you mean 'anthropic:claude-haiku-4-5'"
        " or 'anthropic:claude-opus-4-5'? (allowed: anthropic:claude-haiku-4-5, anthropic:claude-sonnet-4-5, anthropic:claude-opus-4-5)",
        "field": "model",
        "allowed": "anthropic:claude-haiku-4-5, anthropic:claude-sonnet-4-5, anthropic:claude-opus-4-5",
    }


def test_unknown_provider_is_invalid_input_naming_the_configured_providers(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput) as info:
        catalog.get("antropic:claude-haiku-4-5", field_name="chain")

    assert info.value.to_dict() == {
        "code": "invalid_input",
        "message": "chain: unknown provider 'antropic' (allowed: anthropic, gemini, local, ollama, openai)",
        "field": "chain",
        "allowed": "anthropic, gemini, local, ollama, openai",
    }


def test_malformed_reference_is_invalid_input_naming_the_field(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput) as info:
        catalog.get("claude-haiku-4-5")

    assert info.value.field == "model"


def test_catalog_with_no_providers_says_none_is_configured() -> None:
    with pytest.raises(InvalidInput, match="no provider is configured"):
        Catalog(Settings()).get("anthropic:claude-haiku-4-5")


def test_catalog_lists_every_configured_model_once(catalog: Catalog) -> None:
    assert len(catalog) == 14
    assert [e.ref for e in catalog][:3] == [
        "anthropic:claude-haiku-4-5",
        "anthropic:claude-sonnet-4-5",
        "anthropic:claude-opus-4-5",
    ]


@hypothesis_settings(max_examples=200, deadline=None, derandomize=True)
@given(
    ref=st.sampled_from(["anthropic:claude-sonnet-4-5", "anthropic:claude-haiku-4-5", "openai:gpt-4o-mini",
                         "gemini:gemini-2.5-pro", "gemini:gemini-2.5-flash"]),
    fresh=st.integers(0, 1_500_000),
    cached=st.integers(0, 500_000),
    written=st.integers(0, 200_000),
    output=st.integers(0, 100_000),
)
def test_our_per_call_arithmetic_always_equals_genai_prices(
    ref: str, fresh: int, cached: int, written: int, output: int
) -> None:
    """The hot path prices with extracted figures; genai-prices itself is the reference."""
    entry = _catalog().get(ref)
    provider_id = "google" if ref.startswith("gemini:") else ref.split(":")[0]
    if provider_id != "anthropic":
        written = 0  # only Anthropic reports cache writes
    usage = Usage(input_tokens=fresh + cached + written, output_tokens=output, cached_tokens=cached,
                  cache_write_tokens=written)
    assert entry.cost_usd(usage) == genai_cost(entry.model, provider_id, usage)


def test_a_server_of_ones_own_is_never_priced_as_openai_by_its_kind_alone() -> None:
    """A local OpenAI-compatible server serving a model named like one of OpenAI's was billed at
    OpenAI's prices, because the kind "openai" was a pricing fallback."""
    cat = Catalog(settings_from_dict({"providers": [
        {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "models": ["gpt-4o-mini"]},
        {"name": "lan", "kind": "openai", "base_url": "http://192.168.1.20:8000/v1", "models": ["gpt-4o-mini"]},
        {"name": "proxy", "kind": "openai", "base_url": "http://127.0.0.1:4000/v1", "models": ["gpt-4o-mini"],
         "pricing_provider": "openai"},
    ]}, source="test"))

    for ref in ("local:gpt-4o-mini", "lan:gpt-4o-mini"):
        entry = cat.get(ref)
        assert (entry.prices, entry.price_source) == (None, 'unknown: set [providers.prices."gpt-4o-mini"] in the config')
    # A local gateway that forwards to OpenAI says so, and is priced as OpenAI.
    assert cat.get("proxy:gpt-4o-mini").price_source.startswith("genai-prices")
