"""The engine on the real adapters, each against a loopback server speaking its provider's format:
what the ledger records is what the provider reported, call for call, and is priced from that."""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from llm_router.calls import CompleteArgs
from llm_router.engine import Engine
from llm_router.types import AllAttemptsFailed, Usage, usd_to_nusd

from .conftest import FAKE_MODELS, held_by_calls, settings_for_fakes
from .fakes import FakeProvider
from .fakes import Usage as WireUsage

pytestmark = pytest.mark.anyio

MODELS = FAKE_MODELS


def expected(kind: str, wire: WireUsage) -> Usage:
    """Our convention: input counts every input token, cached ones included."""
    if kind == "anthropic":
        total = wire.input_tokens + wire.cached_tokens + wire.cache_write_tokens
        return Usage(total, wire.output_tokens, wire.cached_tokens, wire.cache_write_tokens)
    if kind == "ollama":
        return Usage(wire.input_tokens, wire.output_tokens)
    return Usage(wire.input_tokens + wire.cached_tokens, wire.output_tokens, wire.cached_tokens)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_ledger_tokens_and_cost_equal_what_each_provider_reported(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch))
    sent: dict[str, Usage] = {}
    try:
        for i in range(3):
            for kind, fake in fakes.items():
                cached = 0 if kind == "ollama" else 7 * i
                written = 3 * i if kind == "anthropic" else 0
                wire = WireUsage(input_tokens=40 + i, output_tokens=9 + 2 * i, cached_tokens=cached, cache_write_tokens=written)
                fake.reply(text=f"answer {i} from {kind}", usage=wire)
                deltas: list[str] = []

                async def progress(_v: float, _t: float | None, message: str, deltas: list[str] = deltas) -> None:
                    deltas.append(message)

                result = await engine.complete(
                    CompleteArgs(prompt=f"q{i}", model=f"{kind}:{MODELS[kind]}"), progress=progress if stream else None
                )
                assert result.text == f"answer {i} from {kind}"
                sent[result.request_id] = expected(kind, wire)
                if stream:
                    assert fake.last_request.json is not None
                    assert deltas and deltas[0].startswith("asking ")
        rows = engine.ledger.rows(limit=100)
        assert len(rows) == len(sent) == 12
        for row in rows:
            want = sent[row["id"]]
            got = Usage(row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["cache_write_tokens"])
            assert got == want, row["provider"]
            entry = engine.catalog.get(f"{row['provider']}:{row['model']}")
            assert row["cost_nusd"] == usd_to_nusd(entry.cost_usd(want))
            assert row["cost_estimated"] == 0
            prices = json.loads(row["prices"])
            assert prices["source"] == entry.price_source
        totals = engine.ledger.totals()
        assert totals["input_tokens"] == sum(u.input_tokens for u in sent.values())
        assert totals["output_tokens"] == sum(u.output_tokens for u in sent.values())
    finally:
        await engine.aclose()


async def test_cached_tokens_are_priced_at_the_cached_rate(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch))
    try:
        fakes["anthropic"].reply(usage=WireUsage(input_tokens=1000, output_tokens=100, cached_tokens=9000))
        result = await engine.complete(CompleteArgs(prompt="q", model="anthropic:claude-haiku-4-5"))
        # Haiku 4.5: $1/M input, $0.10/M cache read, $5/M output.
        assert Decimal(result.cost_usd) == Decimal("0.001") + Decimal("0.0009") + Decimal("0.0005")
        assert result.usage.cached_tokens == 9000 and result.usage.input_tokens == 10000
    finally:
        await engine.aclose()


async def test_a_reply_without_usage_is_estimated_and_marked(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch))
    try:
        fakes["openai"].fault("no_usage")
        result = await engine.complete(CompleteArgs(prompt="q", model="openai:gpt-4o-mini"))
        assert result.usage.estimated
        assert engine.ledger.rows()[0]["cost_estimated"] == 1
    finally:
        await engine.aclose()


async def test_a_stream_cut_midway_is_a_failed_attempt_and_the_next_provider_answers(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch))
    try:
        fakes["anthropic"].fault("cut_stream", after_chunks=1)

        async def progress(_v: float, _t: float | None, _m: str) -> None:
            return None

        result = await engine.complete(
            CompleteArgs(prompt="q", model=["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]), progress=progress
        )
        assert [(a.model, a.outcome, a.error_code) for a in result.attempts] == [
            ("anthropic:claude-haiku-4-5", "error", "malformed_response"), ("openai:gpt-4o-mini", "ok", None)]
        assert result.provider == "openai"
    finally:
        await engine.aclose()


@pytest.mark.slow
async def test_serve_demo_uses_the_mock_providers_even_when_a_key_and_base_url_are_set(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    anthropic = fakes["anthropic"]
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH")}
    env |= {"ANTHROPIC_API_KEY": anthropic.api_key, "ANTHROPIC_BASE_URL": anthropic.base_url}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "llm_router", "serve", "--demo", "--ledger", str(tmp_path / "d.db")], env=env
    )
    async with Client(params) as client:
        providers = json.loads((await client.read_resource("llm-router://providers")).contents[0].text)["providers"]
        assert {p["name"]: p["kind"] for p in providers} == {
            "anthropic": "mock", "openai": "mock", "gemini": "mock", "ollama": "mock"}
        result = await client.call_tool("complete", {"prompt": "hello", "model": "anthropic:claude-haiku-4-5"})
        assert not result.is_error, result.content
        assert result.structured_content["text"].startswith("[mock anthropic:claude-haiku-4-5]")
    assert anthropic.requests == []


def _config_for(tmp_path: Path, fake: FakeProvider, model: str) -> Path:
    """A config file whose one provider is the real OpenAI adapter pointed at ``fake`` (keyless)."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'''[ledger]
path = "{tmp_path / 'ledger.db'}"

[[providers]]
name = "local"
kind = "openai"
base_url = "{fake.base_url}"
models = ["{model}"]
[providers.prices."{model}"]
input_per_mtok = 0.5
output_per_mtok = 1.5
'''
    )
    return path


@pytest.mark.slow
async def test_a_lone_surrogate_from_an_upstream_never_ends_the_stdio_server(tmp_path: Path) -> None:
    """A JavaScript server sent "\\ud83d" alone (and split pairs across chunks): the stdio writer
    raised UnicodeEncodeError and the process exited after billing. Now the text arrives valid (the
    adapters repair it, and the stdio writer would too: this test holds the whole path)."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    with FakeProvider("openai", api_key=None, models=["local-model"]) as fake:
        env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH")}
        env["LLM_ROUTER_CONFIG"] = str(_config_for(tmp_path, fake, "local-model"))
        params = StdioServerParameters(command=sys.executable, args=["-m", "llm_router", "serve"], env=env)
        seen: list[str] = []

        async def on_progress(_v: float, _t: float | None, message: str | None) -> None:
            seen.append(message or "")

        async with Client(params) as client:
            fake.fault("lone_surrogate")
            result = await client.call_tool("complete", {"prompt": "hi", "model": "local:local-model"})
            assert not result.is_error, result.content
            assert result.structured_content["text"] == "half \ufffd and \ufffd end"

            fake.fault("split_surrogate")
            result = await client.call_tool(
                "complete", {"prompt": "hi", "model": "local:local-model"}, progress_callback=on_progress
            )
            assert not result.is_error, result.content
            assert result.structured_content["text"] == "smile \U0001f600 done"
            assert fake.last_request.json["stream"] is True

            fake.fault("lone_surrogate")  # the server is still there, and still answers
            result = await client.call_tool(
                "complete", {"prompt": "hi", "model": "local:local-model"}, progress_callback=on_progress
            )
            assert result.structured_content["text"] == "half \ufffd and \ufffd end"
        assert fake.counts["/v1/chat/completions"] == 3


async def test_a_tool_call_only_answer_is_a_billed_failed_attempt_and_the_chain_goes_on(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch))
    try:
        fakes["openai"].fault("tool_call", usage=WireUsage(input_tokens=300, output_tokens=20))
        fakes["anthropic"].reply(text="a real answer", usage=WireUsage(input_tokens=20, output_tokens=5))
        result = await engine.complete(
            CompleteArgs(prompt="q", model=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"])
        )
        assert result.text == "a real answer" and result.provider == "anthropic"
        assert [(a.model, a.outcome, a.error_code) for a in result.attempts] == [
            ("openai:gpt-4o-mini", "error", "tool_call_only"), ("anthropic:claude-haiku-4-5", "ok", None)]
        called = engine.catalog.get("openai:gpt-4o-mini").cost_nusd(Usage(300, 20))
        answered = engine.catalog.get("anthropic:claude-haiku-4-5").cost_nusd(Usage(20, 5))
        row = engine.ledger.rows()[0]
        assert called and row["cost_nusd"] == called + answered  # the tool call was billed, and counted
        assert json.loads(row["attempts"])[0]["cost_usd"]
    finally:
        await engine.aclose()


async def test_a_withheld_answer_is_still_billed_and_the_row_says_so(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(settings_for_fakes(tmp_path, fakes, monkeypatch))
    try:
        fakes["openai"].fault("blocked", usage=WireUsage(input_tokens=1000, output_tokens=10))
        fakes["anthropic"].reply(usage=WireUsage(input_tokens=20, output_tokens=5))
        result = await engine.complete(
            CompleteArgs(prompt="q", model=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"])
        )
        blocked = engine.catalog.get("openai:gpt-4o-mini").cost_nusd(Usage(1000, 10))
        answered = engine.catalog.get("anthropic:claude-haiku-4-5").cost_nusd(Usage(20, 5))
        assert blocked and answered
        row = engine.ledger.rows()[0]
        assert row["cost_nusd"] == blocked + answered == usd_to_nusd(Decimal(result.cost_usd))
        assert (row["input_tokens"], row["output_tokens"]) == (1020, 15)
        first = json.loads(row["attempts"])[0]
        assert first["error_code"] == "content_filtered" and first["cost_usd"]
        assert held_by_calls(engine) == 0

        # ...and when nothing answers, the failed call's row still carries what was billed.
        fakes["openai"].fault("blocked", usage=WireUsage(input_tokens=1000, output_tokens=10))
        with pytest.raises(AllAttemptsFailed):
            await engine.complete(CompleteArgs(prompt="q", model="openai:gpt-4o-mini"))
        failed = engine.ledger.rows()[0]
        assert failed["status"] == "error" and failed["cost_nusd"] == blocked
        assert engine.ledger.totals()["cost_nusd"] == 2 * blocked + answered
        assert held_by_calls(engine) == 0
    finally:
        await engine.aclose()
