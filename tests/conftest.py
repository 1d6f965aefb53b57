"""Shared fixtures: an anyio backend, a guard against real outbound traffic, demo settings on a
temporary ledger, an engine, and a real MCP client session bound to it in memory."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from llm_router.config import Settings, settings_from_dict
from llm_router.defaults import demo_config
from llm_router.engine import Engine

from .clocks import ManualClock

# Each ledger backend as a fixture (``store``), PostgreSQL when a test server is given.
pytest_plugins = ["tests.backends"]

# Property tests try the same examples on every run and every machine: no per-example deadline
# and no "too slow" health check (a busy machine is slow, not wrong), no example database carried
# over from earlier runs. A test's own settings apply on top of these.
hypothesis_settings.register_profile(
    "suite", derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("suite")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback_only(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        if host in ("localhost", "") or host.startswith("127.") or host == "::1":
            return
        try:
            if ipaddress.ip_address(host.split("%")[0]).is_loopback:
                return
        except ValueError:
            pass
        raise RuntimeError(f"test tried to reach {address!r}: only loopback is allowed in tests")


@pytest.fixture(autouse=True, scope="session")
def _no_outbound_network() -> Iterator[None]:
    """Any connection beyond 127.0.0.1 fails loudly."""

    def connect(self: socket.socket, address: Any) -> Any:
        _loopback_only(address)
        return _real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        _loopback_only(address)
        return _real_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own config, keys or ledger."""
    for var in ("LLM_ROUTER_CONFIG", "LLM_ROUTER_DB", "LLM_ROUTER_DB_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY",
                "GEMINI_API_KEY", "GOOGLE_API_KEY", "OLLAMA_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("llm_router.config.default_config_path", lambda: tmp_path / "no-such-config.toml")
    monkeypatch.setattr("llm_router.config.default_ledger_path", lambda: tmp_path / "default-ledger.db")


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """The demo configuration on a ledger in ``tmp_path``, with top-level sections replaced or merged."""
    data = demo_config(str(tmp_path / "ledger.db"))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return settings_from_dict(data, source="test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No mock latency and no injected failures: unit and e2e tests script their own faults.
    data = demo_config(str(tmp_path / "ledger.db"))
    for p in data["providers"]:
        p["mock"] = {"imitates": p["mock"]["imitates"]}
    # Fallback moves straight on; retry tests configure their own policy.
    data["resilience"] = {"max_retries": 0}
    return settings_from_dict(data, source="test")


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[Engine]:
    eng = Engine(settings)
    yield eng
    await eng.aclose()


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[Any]:
    from mcp import Client

    from llm_router.mcp_server import create_server

    async with Client(create_server(engine)) as c:
        yield c


# -- the real adapters against loopback fakes -------------------------------------------------

# A priced model per kind (Ollama is free).
FAKE_MODELS = {
    "anthropic": "claude-haiku-4-5",
    "openai": "gpt-4o-mini",
    "gemini": "gemini-2.5-flash",
    "ollama": "llama3.1",
}


@pytest.fixture
def fakes() -> Iterator[dict[str, Any]]:
    """One loopback server per provider kind, speaking that provider's wire format."""
    from .fakes import FakeProvider

    servers = {kind: FakeProvider(kind, models=[FAKE_MODELS[kind]]) for kind in FAKE_MODELS}
    for server in servers.values():
        server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def settings_for_fakes(
    tmp_path: Path, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, *, timeout_s: float = 5,
    base_urls: dict[str, str] | None = None, **sections: Any,
) -> Settings:
    """Settings whose providers are the real adapters pointed at ``fakes`` (keys set in the env)."""
    providers = []
    for kind, fake in fakes.items():
        entry: dict[str, Any] = {"name": kind, "kind": kind, "base_url": (base_urls or {}).get(kind, fake.base_url),
                                 "models": [FAKE_MODELS[kind]], "timeout_s": timeout_s}
        if fake.api_key:
            monkeypatch.setenv(f"TEST_{kind.upper()}_KEY", fake.api_key)
            entry["api_key_env"] = f"TEST_{kind.upper()}_KEY"
        providers.append(entry)
    data = {"ledger": {"path": str(tmp_path / "ledger.db")}, "providers": providers,
            "resilience": {"max_retries": 0}} | sections
    return settings_from_dict(data, source="test")


@pytest.fixture
def breaker_clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """The circuit breakers' clock (monotonic time, and the unix time ``retry_at`` is dated from),
    moved only by the test: a cool-down then lasts exactly as long as the test says, however long
    a busy machine takes between two calls."""
    from types import SimpleNamespace

    from llm_router import resilience

    clock = ManualClock()
    monkeypatch.setattr(resilience, "time", SimpleNamespace(monotonic=clock, time=clock))
    return clock


def held_by_calls(engine: Engine) -> int:
    """Nano-dollars still held for calls: every hold but the spare kept for the next call. Both are
    read under the ledger's lock: upkeep lets an idle spare go, and between two separate reads it
    could count in the total but no longer as the spare."""
    led = engine.ledger
    with led._lock:
        return led.reservations_total() - led.spare_nusd
