"""What we know about each configured model, and where each figure came from.

Prices come from genai-prices (input, output, cache read, cache write), or from a config's
``[providers.prices."model"]``; context windows from ``model_overrides`` or genai-prices, else
from the server itself (asked once, or stated in a context-length error), else assumed; quality
tiers from the pattern table in ``defaults.py`` or ``model_overrides``. Everything is looked up
once, when the catalog is built; per call only arithmetic remains.

An assumed window is a guess: it never excludes a model (routing lets the provider say), only a
known one does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .capabilities import Capabilities, capabilities_for, learned
from .config import ProviderConfig, Settings
from .defaults import KIND_CAPABILITIES, PRICING_IDS, is_local_url, tier_for
from .types import NUSD_PER_USD, InvalidInput, Quality, Usage, parse_model_ref, usd_to_nusd

__all__ = ["ModelEntry", "Catalog", "worst_case_input_tokens", "DEFAULT_CONTEXT_WINDOW"]

DEFAULT_CONTEXT_WINDOW = 128_000
MAX_PLAUSIBLE_WINDOW = 100_000_000
"""A window a server states above this is taken as garbage, not remembered."""
_MTOK = Decimal(1_000_000)
_MTOK_INT = 1_000_000


def worst_case_input_tokens(text_bytes: int, n_messages: int) -> int:
    """An upper bound on input tokens: a token is at least one byte of UTF-8 in every tokenizer in
    use, plus a few tokens of chat framing per message. Reservations use it so they never fall short."""
    return text_bytes + 8 * n_messages + 16


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    nano: tuple[int, int, int, int] | None = field(init=False, compare=False, repr=False)
    """The same four prices in whole nano-dollars per million tokens, so that a call's cost is
    integer arithmetic; None when a price is finer than that (the Decimal path is used then)."""

    def __post_init__(self) -> None:
        scaled = [v * NUSD_PER_USD for v in (self.input, self.output, self.cache_read, self.cache_write)]
        exact = all(v == v.to_integral_value() for v in scaled)
        object.__setattr__(self, "nano", tuple(int(v) for v in scaled) if exact else None)


@dataclass(slots=True)
class ModelEntry:
    ref: str
    provider: str
    model: str
    kind: str
    prices: Prices | None
    price_source: str
    context_window: int
    context_source: str
    tier: Quality
    tier_source: str
    max_output_tokens: int | None = None
    context_known: bool = True
    """False while ``context_window`` is only assumed (no override, genai-prices or server said)."""
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(KIND_CAPABILITIES["mock"], "assumed"))
    """What it can be asked for, and where that came from (``capabilities.py``)."""
    _genai: Any = field(default=None, repr=False)
    """(ModelInfo, Provider) from genai-prices, when the price comes from there."""
    _tiers: tuple[tuple[int, Prices], ...] = field(default=(), repr=False)
    """Long-context prices: (start, prices) that apply to a whole call above ``start`` input tokens."""
    _priced_day: int = field(default=0, repr=False)

    @property
    def free(self) -> bool:
        return self.prices is not None and self.prices.input == 0 and self.prices.output == 0

    def cost_usd(self, usage: Usage) -> Decimal | None:
        """Exact cost of reported usage, or None when no price is known.

        Plain arithmetic on prices extracted once from genai-prices (about 40 times faster than
        asking it per call; a test checks that both agree), re-read when the day changes so that a
        dated price change takes effect. Long-context tiers follow genai-prices' rule: the tier
        reached by the call's total input applies to all of its tokens."""
        if self.prices is None:
            return None
        if self._genai is not None and self._priced_day != _today():
            self._reprice()
        p = self._prices_for(usage.input_tokens)
        fresh = max(usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
        return (
            fresh * p.input
            + usage.cached_tokens * p.cache_read
            + usage.cache_write_tokens * p.cache_write
            + usage.output_tokens * p.output
        ) / _MTOK

    def _prices_for(self, input_tokens: int) -> Prices:
        p = self.prices
        assert p is not None
        for start, tier_prices in self._tiers:
            if input_tokens > start:
                p = tier_prices
        return p

    def _reprice(self) -> None:
        info, _provider = self._genai
        self.prices, self._tiers = _genai_price_table(info)
        self._priced_day = _today()

    def cost_nusd(self, usage: Usage) -> int | None:
        """``cost_usd`` in nano-dollars (rounded half to even), in integers when the prices allow."""
        if self.prices is None:
            return None
        if self._genai is not None and self._priced_day != _today():
            self._reprice()
        n = self._prices_for(usage.input_tokens).nano
        if n is None:
            cost = self.cost_usd(usage)
            return None if cost is None else usd_to_nusd(cost)
        fresh = max(usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
        nusd_per_mtok = (
            fresh * n[0] + usage.output_tokens * n[1] + usage.cached_tokens * n[2] + usage.cache_write_tokens * n[3]
        )
        # Exact: the quotient has no more digits than the sum (at most 22, under Decimal's 28), and
        # round() of a Decimal rounds half to even, as usd_to_nusd does on the Decimal path.
        return round(Decimal(nusd_per_mtok) / _MTOK)

    def worst_case_nusd(self, input_tokens: int, max_tokens: int) -> int | None:
        """The most a call can cost: every input token uncached at the dearest input price, and all
        ``max_tokens`` produced. Rounded up, for reservations."""
        if self.prices is None:
            return None
        p = self._prices_for(input_tokens)
        if p.nano is not None:
            n_in, n_out, n_read, n_write = p.nano
            return -(-(input_tokens * max(n_in, n_read, n_write) + max_tokens * n_out) // _MTOK_INT)
        dearest_in = max(p.input, p.cache_write, p.cache_read)
        return math.ceil((input_tokens * dearest_in + max_tokens * p.output) * NUSD_PER_USD / _MTOK)

    def typical_nusd(self, input_tokens: int, output_tokens: int) -> int | None:
        if self.prices is None:
            return None
        p = self.prices
        if p.nano is not None:
            return -(-(input_tokens * p.nano[0] + output_tokens * p.nano[1]) // _MTOK_INT)
        return math.ceil((input_tokens * p.input + output_tokens * p.output) * NUSD_PER_USD / _MTOK)

    def describe(self) -> dict[str, Any]:
        p = self.prices
        return {
            "model": self.ref,
            "tier": self.tier,
            "tier_source": self.tier_source,
            "context_window": self.context_window,
            "context_source": self.context_source,
            "context_known": self.context_known,
            "max_output_tokens": self.max_output_tokens,
            "price_per_mtok": None
            if p is None
            else {
                "input": str(p.input),
                "output": str(p.output),
                "cached_input": str(p.cache_read),
                "cache_write": str(p.cache_write),
            },
            "price_source": self.price_source,
            "free": self.free,
            "capabilities": self.capabilities.listed(),
            "capability_source": self.capabilities.source,
        }


def _genai_lookup(provider_ids: list[str], model: str) -> tuple[Any, Any] | None:
    from genai_prices.data_snapshot import get_snapshot

    snapshot = get_snapshot()
    for pid in provider_ids:
        try:
            provider, info = snapshot.find_provider_model(model, None, pid, None)
        except LookupError:
            continue
        if info is not None:
            return info, provider
    return None


def _price_of(value: Any, input_tokens: int = 0) -> Decimal:
    """A genai-prices price field: a Decimal, a tiered price, or None (→ 0). A tiered price is
    its base, or the tier a call of ``input_tokens`` falls in (genai-prices' "cliff" rule)."""
    if value is None:
        return Decimal(0)
    price = getattr(value, "base", value)
    for tier in getattr(value, "tiers", ()):
        if input_tokens > tier.start:
            price = tier.price
    return Decimal(price)


def _genai_prices(mp: Any, input_tokens: int = 0) -> Prices:
    inp = _price_of(mp.input_mtok, input_tokens)
    return Prices(
        input=inp,
        output=_price_of(mp.output_mtok, input_tokens),
        cache_read=_price_of(mp.cache_read_mtok, input_tokens) if mp.cache_read_mtok is not None else inp,
        cache_write=_price_of(mp.cache_write_mtok, input_tokens) if mp.cache_write_mtok is not None else inp,
    )


def _genai_price_table(info: Any) -> tuple[Prices, tuple[tuple[int, Prices], ...]]:
    """Today's prices of a genai-prices model, and its long-context tiers."""
    mp = info.get_prices(datetime.now(tz=UTC))
    starts = sorted(
        {
            t.start
            for v in (mp.input_mtok, mp.output_mtok, mp.cache_read_mtok, mp.cache_write_mtok)
            for t in getattr(v, "tiers", ())
        }
    )
    return _genai_prices(mp), tuple((start, _genai_prices(mp, start + 1)) for start in starts)


def _genai_version() -> str:
    import genai_prices

    return str(genai_prices.__version__)


def _today() -> int:
    return int(time.time() // 86_400)


def _entry(cfg: ProviderConfig, model: str) -> ModelEntry:
    override = cfg.model_overrides.get(model)
    genai = None
    prices: Prices | None = None
    tiers: tuple[tuple[int, Prices], ...] = ()
    price_source = f'unknown: set [providers.prices."{model}"] in the config'
    configured = cfg.prices.get(model)
    self_hosted = cfg.kind == "openai" and cfg.base_url is not None and is_local_url(cfg.base_url)
    found = None
    if configured is None or not (override and override.context_window):
        # A model the config prices and sizes itself needs no look-up (nor genai-prices' import:
        # 80 ms of a server's start).
        # A server of one's own that speaks OpenAI's protocol is not OpenAI: its kind alone never
        # prices it at OpenAI's prices (its name, or pricing_provider, still can).
        by_kind = None if self_hosted else PRICING_IDS.get(cfg.kind)
        ids = [i for i in (cfg.pricing_provider, cfg.name, by_kind) if i]
        found = _genai_lookup(list(dict.fromkeys(ids)), model)
    if configured is not None:
        prices = Prices(
            input=configured.input_per_mtok,
            output=configured.output_per_mtok,
            cache_read=configured.cached_input_per_mtok
            if configured.cached_input_per_mtok is not None
            else configured.input_per_mtok,
            cache_write=configured.cache_write_per_mtok
            if configured.cache_write_per_mtok is not None
            else configured.input_per_mtok,
        )
        price_source = "config"
    elif found is not None:
        info, provider = found
        prices, tiers = _genai_price_table(info)
        genai = found
        price_source = f"genai-prices {_genai_version()}: {provider.id}/{info.id}"
    elif cfg.kind == "ollama":
        prices = Prices(Decimal(0), Decimal(0), Decimal(0), Decimal(0))
        price_source = "free (local Ollama)"

    if override and override.context_window:
        context, context_source = override.context_window, "config"
    elif found is not None and found[0].context_window:
        context, context_source = found[0].context_window, "genai-prices"
    else:
        context, context_source = DEFAULT_CONTEXT_WINDOW, f"assumed ({DEFAULT_CONTEXT_WINDOW} tokens; set model_overrides)"

    if override and override.tier:
        tier, tier_source = override.tier, "config"
    elif (pattern_tier := tier_for(model)) is not None:
        tier, tier_source = pattern_tier, "built-in table"
    elif prices is not None:
        tier, tier_source = _tier_from_price(prices), "inferred from output price"
    else:
        tier, tier_source = "medium", "assumed (no tier pattern and no price; set model_overrides)"

    return ModelEntry(
        ref=f"{cfg.name}:{model}",
        provider=cfg.name,
        model=model,
        kind=cfg.kind,
        prices=prices,
        price_source=price_source,
        context_window=context,
        context_source=context_source,
        tier=tier,
        tier_source=tier_source,
        max_output_tokens=override.max_output_tokens if override else None,
        context_known=not context_source.startswith("assumed"),
        capabilities=capabilities_for(cfg, model),
        _genai=genai if configured is None else None,
        _tiers=tiers,
        _priced_day=_today(),
    )


def _tier_from_price(prices: Prices | None) -> Quality:
    if prices is None:
        return "medium"
    out = prices.output
    if out >= 40:
        return "critical"
    if out >= 8:
        return "high"
    if out >= Decimal("1.5"):
        return "medium"
    return "low"


class Catalog:
    """Every configured model, by ``provider:model``."""

    def __init__(self, settings: Settings) -> None:
        self.entries: dict[str, ModelEntry] = {}
        for cfg in settings.providers:
            for model in cfg.models:
                entry = _entry(cfg, model)
                self.entries[entry.ref] = entry

    def get(self, ref: str, *, field_name: str = "model") -> ModelEntry:
        """Raises InvalidInput naming what exists ("did you mean ...") for an unknown model."""
        entry = self.entries.get(ref)
        if entry is not None:
            return entry
        import difflib

        provider, _ = parse_model_ref(ref, field_name=field_name)
        close = difflib.get_close_matches(ref, list(self.entries), n=2)
        known_providers = sorted({e.provider for e in self.entries.values()})
        if provider not in known_providers:
            problem = f"unknown provider {provider!r}"
            allowed = ", ".join(known_providers) or "no provider is configured"
        else:
            problem = f"unknown model {ref!r}" + (f"; did you mean {' or '.join(map(repr, close))}?" if close else "")
            allowed = ", ".join(r for r in self.entries if r.startswith(provider + ":"))
        raise InvalidInput(field_name, problem, allowed=allowed)

    def learn_window(self, ref: str, window: int, source: str) -> bool:
        """Remember a window the server itself gave for ``ref`` (asked, or stated in an error).

        It replaces an assumed window or genai-prices' figure (the server knows what it runs
        with); a configured one only when smaller (the server cannot take more than it runs
        with, while a user may mean to stay below it). An implausible figure is ignored.
        Returns whether the entry changed."""
        entry = self.entries.get(ref)
        if entry is None or type(window) is not int or not 0 < window <= MAX_PLAUSIBLE_WINDOW:
            return False
        if entry.context_known and entry.context_window == window:
            return False
        if entry.context_source == "config" and window > entry.context_window:
            return False
        entry.context_window, entry.context_source, entry.context_known = window, source, True
        return True

    def learn_capabilities(self, ref: str, said: frozenset[str], source: str) -> bool:
        """Take what a model's server said it can do (tools, vision) over the protocol's default,
        unless the config settled it. Returns whether the entry changed."""
        entry = self.entries.get(ref)
        if entry is None or not entry.capabilities.askable:
            return False
        entry.capabilities = learned(entry.capabilities, said, source)
        return True

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)
