"""TOML and environment → validated settings.

Where the config comes from: ``--config``, else ``$LLM_ROUTER_CONFIG``, else
``llm-router/config.toml`` in the platform's config folder, else built-in defaults (each known
provider enabled when its key is set). Keys are never read from the file, only the name of the
environment variable that holds them.
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from . import timings
from .config_problems import NOT_KEYS, ConfigProblems, keys_at, unknown_key, validation_problems
from .types import ConfigError, InvalidInput, Quality, QualityChoice, Strategy, parse_model_ref

__all__ = [
    "ProviderKind",
    "PriceOverride",
    "ModelOverride",
    "MockSettings",
    "ProviderConfig",
    "RoutingRule",
    "RoutingConfig",
    "QualityConfig",
    "TelemetryConfig",
    "ScopeLimits",
    "BudgetConfig",
    "LedgerConfig",
    "LimitsConfig",
    "ResilienceConfig",
    "HttpConfig",
    "Settings",
    "ConfigProblems",
    "load_settings",
    "settings_from_dict",
    "default_config_path",
    "default_ledger_path",
    "ledger_path",
]

ProviderKind = Literal["anthropic", "openai", "gemini", "ollama", "mock"]
Usd = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=9)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceOverride(_Strict):
    """A model's price in USD per million tokens, for models genai-prices does not know (or to override it)."""

    input_per_mtok: Usd
    output_per_mtok: Usd
    cached_input_per_mtok: Usd | None = None
    """Price of input tokens read from the prompt cache; defaults to the input price."""
    cache_write_per_mtok: Usd | None = None
    """Price of input tokens written to the prompt cache; defaults to the input price."""


CapabilityName = Literal[
    "text", "streaming", "system_prompt", "tools", "tool_choice", "vision", "image_url",
    "json_schema", "json_mode", "stop", "top_p", "seed",
]
"""``content.CAPABILITY_NAMES``, as a config may name them (a test keeps the two equal)."""


class ModelOverride(_Strict):
    """Per-model facts that override the catalog's."""

    tier: Quality | None = None
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    capabilities: list[CapabilityName] | dict[CapabilityName, bool] | None = None
    """What the model can be asked for: a list is the whole set (replacing what the server says
    and the protocol's default); a table changes single ones (``{vision = false}``)."""


class MockSettings(_Strict):
    """Behaviour of a ``kind = "mock"`` provider: deterministic, offline."""

    latency_ms: float = Field(default=0, ge=0, le=60_000)
    """Time to first token; the rest of the answer streams over another ``latency_ms``."""
    failure_rate: float = Field(default=0, ge=0, le=1)
    """Share of calls that fail, chosen deterministically from the call counter."""
    failure: Literal["server", "overloaded", "rate_limit", "timeout", "auth", "invalid_request"] = "server"
    imitates: str | None = None
    """The real provider this mock stands in for; shown wherever the provider is shown."""


class ProviderConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)
    """The id used in model strings: ``name:model``."""
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the key (keys are never read from the file)."""
    models: list[str] = Field(default_factory=list, validate_default=True)
    timeout_s: float = Field(default=60, gt=0, le=3600)
    enabled: bool = True
    pricing_provider: str | None = None
    """The genai-prices provider id to price models by; default: this provider's name, then kind."""
    prices: dict[str, PriceOverride] = Field(default_factory=dict)
    model_overrides: dict[str, ModelOverride] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    mock: MockSettings | None = None

    # Field validators rather than one model validator: each problem is reported at its own key,
    # and all of them at once (a model validator runs only once every field is valid).

    @field_validator("models")
    @classmethod
    def _models(cls, models: list[str]) -> list[str]:
        if not models:
            raise ValueError("list at least one model this provider serves")
        twice = sorted({m for m in models if models.count(m) > 1})
        if twice:
            raise ValueError(f"{', '.join(map(repr, twice))} listed twice")
        return models

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} must start with http:// or https://")
        return url

    @field_validator("prices", "model_overrides")
    @classmethod
    def _listed(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        models = info.data.get("models")
        if models is None:  # models itself is wrong, and said so
            return value
        unknown = [k for k in value if k not in models]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not in models {models}")
        return value

    @field_validator("mock")
    @classmethod
    def _mock_only(cls, mock: MockSettings | None, info: ValidationInfo) -> MockSettings | None:
        if mock is not None and info.data.get("kind", "mock") != "mock":
            raise ValueError('settings only apply to kind = "mock"')
        return mock


def _check_ref(ref: str) -> None:
    """parse_model_ref raises InvalidInput, which pydantic would let escape: make it a ValueError."""
    try:
        parse_model_ref(ref)
    except InvalidInput as e:
        raise ValueError(f"{e.problem} (write {e.allowed})") from None


class RoutingRule(_Strict):
    task_type: str = Field(min_length=1, max_length=64)
    chain: list[str] = Field(min_length=1)

    @field_validator("chain")
    @classmethod
    def _refs(cls, chain: list[str]) -> list[str]:
        for ref in chain:
            _check_ref(ref)
        return chain


class RoutingConfig(_Strict):
    strategy: Strategy = "balanced"
    default_quality: QualityChoice = "medium"
    """The quality floor when a call names none; ``auto``: estimated from each request
    (``complexity.assess``)."""
    default_max_tokens: int = Field(default=1024, gt=0, le=1_000_000)
    max_attempts: int = Field(default=4, ge=1, le=16)
    """How many models one ``complete`` call may try, fallbacks included."""
    reference_model: str | None = None
    """What "always using one model" would have cost, for the savings figure in ``cost_report``."""
    rules: list[RoutingRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> RoutingConfig:
        problems: list[str] = []
        task_types = [rule.task_type for rule in self.rules]
        for twice in sorted({t for t in task_types if task_types.count(t) > 1}):
            problems.append(f"rules: task_type {twice!r} has two rules")
        if self.reference_model:
            try:
                _check_ref(self.reference_model)
            except ValueError as e:
                problems.append(f"reference_model: {e}")
        _raise_all(problems)
        return self


class QualityConfig(_Strict):
    """``[quality]``: what the router learns of its models' answers, and how ``adaptive`` uses it."""

    judge_model: str | None = None
    """A model ("provider:model") that scores a sample of answers, after they are returned."""
    judge_sample_rate: float = Field(default=0.05, ge=0, le=1)
    """The share of answers the judge scores."""
    judge_tag: str = Field(default="judge", min_length=1, max_length=128)
    """The tag the judge's own calls are billed to (and capped by)."""
    judge_daily_usd: Usd | None = Decimal("1")
    """The judge's daily cap, applied as ``[budget.tags.<judge_tag>] daily_usd`` unless that is set."""
    target: float = Field(default=0.95, gt=0, le=1)
    """adaptive: keep the traffic's expected quality at this share of always using the best
    candidate, at the least cost."""
    explore_share: float = Field(default=0.05, ge=0, le=0.5)
    """adaptive: at most this share of calls (and of spend) goes to models tried to learn them."""
    half_life_days: float = Field(default=14, gt=0, le=3650)
    """A rating counts half as much after this many days (a model that changed is re-learned)."""

    @field_validator("judge_model")
    @classmethod
    def _judge_ref(cls, ref: str | None) -> str | None:
        if ref is not None:
            _check_ref(ref)
        return ref


class ScopeLimits(_Strict):
    daily_usd: Usd | None = None
    monthly_usd: Usd | None = None


class BudgetConfig(_Strict):
    daily_usd: Usd | None = None
    monthly_usd: Usd | None = None
    per_request_usd: Usd | None = None
    timezone: str = "UTC"
    """The time zone in which days and months begin and end."""
    providers: dict[str, ScopeLimits] = Field(default_factory=dict)
    tags: dict[str, ScopeLimits] = Field(default_factory=dict)
    reservation_ttl_s: float = Field(default=900, ge=10, le=86_400)
    """A reservation whose process stopped renewing it is reclaimed after this long."""
    ask_to_raise: bool = True
    """Before refusing a call over a daily or monthly limit, ask an admin whose client can show a form
    whether to raise it (``limit_ask``)."""
    ask_timeout_s: float = Field(default=120, gt=0, le=3600)
    """How long such a question waits for its answer (2025-11-25 clients); no answer is a no."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {name!r} (use an IANA name such as 'Europe/Paris')") from None
        return name


class LedgerConfig(_Strict):
    path: str | None = None
    """The SQLite ledger file, shared by every server process on this machine (``$LLM_ROUTER_DB`` wins)."""
    url: str | None = None
    """A PostgreSQL ledger shared by servers on several machines, ``postgresql://user@host/db``
    (``$LLM_ROUTER_DB_URL`` wins). Needs the ``postgres`` extra; keep the password in
    ``PGPASSWORD`` or ``~/.pgpass`` rather than here."""
    store_prompts: bool = False
    """Keep prompt text in the ledger. Off: only a SHA-256 of it is kept."""
    retain_days: int | None = Field(default=None, ge=1, le=36_500)
    """Delete raw request rows older than this many days (their per-day sums are kept, so reports
    of any period still work). None keeps every row."""
    lease_s: float = Field(default=60, ge=5, le=3600)
    """A running server renews its budget holds every ``lease_s / 4``; the holds of one that died
    or froze lapse after ``lease_s`` and are reclaimed, from any machine."""
    maintenance_interval_s: float = Field(default=60, ge=1, le=86_400)
    """How often a running server reclaims dead processes' holds and prunes past ``retain_days``."""
    busy_timeout_s: float = Field(default=30, gt=0, le=600)
    """How long a write waits for another process's write lock (SQLite) or any lock (PostgreSQL's
    ``lock_timeout``) before it gives up, saying who holds it; a call's deadline may cut it shorter."""
    journal_path: str | None = None
    """Where rows the ledger cannot take yet wait (locked, disk full, PostgreSQL unreachable):
    default beside the SQLite file (``ledger.db.journal``), or for PostgreSQL a file in the
    platform's state folder. Every server sharing a ledger on one machine must use the same one."""
    keep_answers_s: float = Field(default=3600, ge=0, le=7 * 86_400, allow_inf_nan=False)
    """How long a ``complete`` call's outcome stays readable at ``llm-router://answers/{request_id}``
    (and as its task) after the call ends, in this server's memory; 0 keeps none."""

    @model_validator(mode="after")
    def _check(self) -> LedgerConfig:
        if self.url is not None:
            if not self.url.startswith(("postgresql://", "postgres://")):
                raise ValueError(f"url: {self.url!r} must start with postgresql:// (a SQLite file goes in path)")
            if self.path is not None:
                raise ValueError("url: give path (SQLite) or url (PostgreSQL), not both")
        return self


class ResilienceConfig(_Strict):
    """Retries on the same model, circuit breakers, and the whole call's deadline."""

    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of a retryable failure on the same model before moving down the chain."""
    backoff_base_s: float = Field(default=0.5, ge=0, le=60)
    """First backoff; doubled on each retry, with jitter."""
    backoff_max_s: float = Field(default=8, ge=0, le=300)
    retry_after_cap_s: float = Field(default=20, ge=0, le=600)
    """A provider's Retry-After longer than this moves on to the next model instead of waiting."""
    breaker_failures: int = Field(default=3, ge=1, le=100)
    """Consecutive failures that open a model's circuit."""
    breaker_cooldown_s: float = Field(default=30, gt=0, le=3600)
    """How long an open circuit waits before one trial call."""
    deadline_s: float = Field(default=55, gt=0, le=3600)
    """The whole ``complete`` call's deadline (Claude Desktop gives up on a tool call after about 60 s)."""
    fallback_reserve_s: float = Field(default_factory=lambda: timings.FALLBACK_RESERVE_S, ge=0, le=600)
    """Time each later model in a chain keeps for itself: a model may use what is left of the deadline
    less this for every model after it (or an equal share, when that leaves it less). Its default
    is ``timings.FALLBACK_RESERVE_S``, read when the settings are made, so there is one figure."""


class LimitsConfig(_Strict):
    max_prompt_chars: int = Field(default=400_000, gt=0)
    max_messages: int = Field(default=500, gt=0)
    max_image_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    """The largest image a call may send, decoded (5 MiB: Anthropic's limit, the smallest of the
    four APIs'). Its base64 must also fit in ``max_message_bytes``."""
    max_images: int = Field(default=20, gt=0)
    """The most images one call may send, over all its turns (Anthropic allows 20 a request on
    its API at this size; OpenAI and Gemini more)."""
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """The longest MCP message a client may send, in bytes (stdio and HTTP): a longer one is refused
    before it is read whole."""


_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class HttpConfig(_Strict):
    """``serve --transport http``. Bearer tokens are read from the environment, never from this file."""

    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names clients may address the server by (e.g. ``"router.internal"``), besides ``localhost``
    and IP addresses; any other ``Host`` header is refused, which defeats DNS rebinding."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call (e.g. ``"https://tools.example.com"``), besides loopback ones
    and the server's own; a request with any other ``Origin`` header is refused."""

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for h in hosts:
            if not _HOST_NAME.match(h.lower()):
                raise ValueError(f"allowed_hosts: {h!r} is not a host name (write it without scheme or port)")
        return [h.lower() for h in hosts]

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for o in origins:
            if not re.fullmatch(r"https?://[^/\s]+", o.rstrip("/")):
                raise ValueError(f"allowed_origins: {o!r} is not an origin (scheme://host[:port], no path)")
        return [o.rstrip("/").lower() for o in origins]


class TelemetryConfig(_Strict):
    """Traces of every ``complete`` (OpenTelemetry, OTLP over HTTP/protobuf). Off unless an endpoint
    is given here or in ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
    (which win); ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn it off."""

    otlp_endpoint: str | None = None
    """The collector's OTLP/HTTP base URL, e.g. ``http://127.0.0.1:4318`` (``/v1/traces`` is added
    unless the URL already ends with it)."""
    service_name: str = Field(default="llm-router-mcp", min_length=1, max_length=200)
    """The traces' ``service.name`` (``OTEL_SERVICE_NAME`` wins)."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, url: str | None) -> str | None:
        if url is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
            raise ValueError(f"otlp_endpoint: {url[:200]!r} is not an http(s) URL (e.g. http://127.0.0.1:4318)")
        return url


class Settings(_Strict):
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    providers: list[ProviderConfig] = Field(default_factory=list)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    source: str = "built-in defaults"
    """Where these settings were read from (not a config key)."""

    demo: bool = False
    """The built-in demo configuration (not a config key): mock providers only, and its ledger is
    the one named here, whatever ``$LLM_ROUTER_DB`` or ``$LLM_ROUTER_DB_URL`` say, so that mock
    spend never lands in a real ledger."""

    @model_validator(mode="after")
    def _check(self) -> Settings:
        problems: list[str] = []
        names = [p.name for p in self.providers]
        for twice in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"providers: the name {twice!r} is used twice")
        known = set(names)
        models = {f"{p.name}:{m}" for p in self.providers for m in p.models}
        for i, rule in enumerate(self.routing.rules):
            for ref in rule.chain:
                if ref not in models:
                    problems.append(f"routing.rules[{i}].chain: {ref!r} is not a configured model ({_hint(ref, models)})")
        reference = self.routing.reference_model
        if reference and reference not in models:
            problems.append(f"routing.reference_model: {reference!r} is not a configured model ({_hint(reference, models)})")
        for name in self.budget.providers:
            if name not in known:
                problems.append(f"budget.providers: {name!r} is not a configured provider ({_hint(name, known)})")
        judge = self.quality.judge_model
        if judge and judge not in models:
            problems.append(f"quality.judge_model: {judge!r} is not a configured model ({_hint(judge, models)})")
        _raise_all(problems)
        if judge and self.quality.judge_daily_usd is not None:
            # The judge's cap is a tag limit like any other: shown in budgets, held like any call's.
            own = self.budget.tags.get(self.quality.judge_tag) or ScopeLimits()
            if own.daily_usd is None:
                self.budget.tags[self.quality.judge_tag] = own.model_copy(update={"daily_usd": self.quality.judge_daily_usd})
        return self

    def provider(self, name: str) -> ProviderConfig | None:
        for p in self.providers:
            if p.name == name:
                return p
        return None


def _hint(ref: str, models: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(ref, sorted(models), n=1)
    return f"did you mean {close[0]!r}?" if close else f"configured: {', '.join(sorted(models)) or 'none'}"


def _raise_all(problems: list[str]) -> None:
    """A model validator's several problems as one ValueError, one ``key: message`` a line;
    ``settings_from_dict`` lists each line as a problem of its own."""
    if problems:
        raise ValueError("\n".join(problems))


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("llm-router")) / "config.toml"


def default_ledger_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("llm-router")) / "ledger.db"


def ledger_path(settings: Settings) -> Path:
    """``$LLM_ROUTER_DB``, else ``[ledger] path``, else the platform's data folder. The demo's
    ledger is always its own ``[ledger] path``."""
    raw = (None if settings.demo else os.environ.get("LLM_ROUTER_DB")) or settings.ledger.path
    return Path(raw).expanduser() if raw else default_ledger_path()


def settings_from_dict(data: dict[str, Any], *, source: str, demo: bool = False) -> Settings:
    """Validate a configuration's data.

    Raises:
        ConfigProblems: every problem at once, each naming ``source`` and its key.
    """
    problems: list[tuple[str | None, str]] = [
        (k, unknown_key(k, keys_at(Settings, ()))) for k in data if k in NOT_KEYS
    ]
    try:
        settings = Settings.model_validate({**data, "source": source, "demo": demo})
    except ValidationError as e:
        problems += validation_problems(e, data, Settings)
    if problems:
        raise ConfigProblems(problems, file=source) from None
    return settings


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the configuration; see the module docstring for where it is looked for.

    Raises:
        ConfigError: naming the file and the key of each problem (``ConfigProblems``: all of them).
    """
    if path is None:
        env = os.environ.get("LLM_ROUTER_CONFIG")
        if env:
            path = env
        else:
            candidate = default_config_path()
            if candidate.is_file():
                path = candidate
    if path is None:
        from .defaults import builtin_config

        return settings_from_dict(builtin_config(os.environ), source="built-in defaults")
    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no such file", file=str(file)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", file=str(file)) from None
    return settings_from_dict(data, source=str(file))


