"""The command line: check, report, demo, and serve's defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llm_router.cli import main


def test_check_lists_each_provider_and_why_it_is_usable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--demo", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "anthropic (mock — Anthropic (mock: no network, real prices)): usable" in out
    assert "anthropic:claude-haiku-4-5: tier medium, 200000 tokens, $1/$5 per Mtok (genai-prices" in out


def test_check_without_any_key_says_which_variables_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--offline"]) == 1
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().out


def test_check_explains_a_missing_key_in_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[providers]]\nname = "anthropic"\nkind = "anthropic"\napi_key_env = "ANTHROPIC_API_KEY"\n'
                   'models = ["claude-haiku-4-5"]\n')
    assert main(["check", "--offline", "--config", str(cfg)]) == 1
    assert "NOT usable — no API key: set the environment variable ANTHROPIC_API_KEY" in capsys.readouterr().out


def test_a_config_error_names_the_file_and_key_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[routing]\nstrategy = "random"\n')
    assert main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "routing.strategy" in err


def test_report_prints_the_spend_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import anyio

    from llm_router.calls import CompleteArgs
    from llm_router.engine import Engine

    from .conftest import make_settings

    ledger = tmp_path / "ledger.db"

    async def spend() -> None:
        engine = Engine(make_settings(tmp_path))
        try:
            await engine.complete(CompleteArgs(prompt="hello", model="openai:gpt-4o-mini"))
        finally:
            await engine.aclose()

    anyio.run(spend)
    # A fixed range, not "today": a call made just before midnight is still in it.
    assert main(["report", "--demo", "--ledger", str(ledger), "--since", "2000-01-01", "--until", "2999-12-31"]) == 0
    out = capsys.readouterr().out
    assert "openai" in out and "total" in out and "budget global daily" in out


def test_report_says_how_much_of_the_spend_is_estimated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The terminal report never said that part of a period's spend was an estimate."""
    from llm_router.ledger import RequestRow
    from llm_router.ledger.sqlite import Ledger

    ledger = tmp_path / "ledger.db"
    led = Ledger(ledger)
    for n, (cost, estimated) in enumerate([(1_000, 0), (2_500, 1)]):
        led.record(RequestRow(id=f"r{n}", ts=f"2025-03-14T12:00:00.00{n}+00:00", day="2025-03-14", status="ok",
                              tag="", provider="openai", model="m", input_tokens=1, output_tokens=1,
                              cost_nusd=cost, cost_usd="0", cost_estimated=estimated))
    led.close()
    assert main(["report", "--demo", "--ledger", str(ledger), "--since", "2025-03-14", "--until", "2025-03-14"]) == 0
    out = capsys.readouterr().out
    assert "$0.0000035 over 2 calls\nof which $0.0000025 over 1 call is estimated (the provider reported no usage)\n" in out


@pytest.mark.slow
def test_demo_drives_every_tool_and_resource_offline(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llm_router", "demo", "--ledger", str(tmp_path / "demo.db")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for marker in ("tools/list", "route_explain", "falling back", "set_budget", "cost_report",
                   "llm-router://ledger", "llm-router://budgets", "llm-router://providers",
                   "every tool and resource answered as expected"):
        assert marker in proc.stdout
