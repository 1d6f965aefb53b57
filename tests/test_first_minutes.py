"""A new user's first minutes: --version, commands that read without creating, a server started by
hand, a demo that is always the demo, and `check` saying what will not work."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import selectors
import subprocess
import sys
from pathlib import Path

import pytest

from llm_router import cli
from llm_router.cli import main

from .fakes import FakeProvider

pytestmark = pytest.mark.anyio

MOCK_PROVIDER = '[[providers]]\nname = "m"\nkind = "mock"\nmodels = ["claude-haiku-4-5"]\npricing_provider = "anthropic"\n'


def _config(tmp_path: Path, text: str, ledger: Path | None = None) -> Path:
    ledger = ledger or tmp_path / "not-yet" / "ledger.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[ledger]\npath = "{ledger.as_posix()}"\n{text}', encoding="utf-8")
    return cfg


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A child's environment with no keys and every platform folder inside ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "SYSTEMROOT", "LANG")}
    return env | {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                  "XDG_DATA_HOME": str(tmp_path / "data")} | extra


# -- --version ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag_prints_the_installed_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([flag])

    assert info.value.code == 0
    assert capsys.readouterr().out == f"llm-router-mcp {importlib.metadata.version('llm-router-mcp')}\n"


# -- report and check read, they do not create --------------------------------------------------


def test_check_creates_no_ledger_and_says_where_it_would_be(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "not-yet" / "ledger.db"

    assert main(["check", "--offline", "--config", str(_config(tmp_path, MOCK_PROVIDER, ledger))]) == 0

    assert f"ledger: {ledger} (does not exist yet: the server's first call creates it)" in capsys.readouterr().out
    assert not ledger.parent.exists()


def test_report_without_a_ledger_prints_an_empty_report_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "not-yet" / "ledger.db"
    cfg = _config(tmp_path, MOCK_PROVIDER + "[budget]\ndaily_usd = 2\n[budget.tags.research]\nmonthly_usd = 20\n", ledger)

    assert main(["report", "--config", str(cfg), "--period", "today"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Spend today (") and out[0].endswith(", UTC)")
    assert out[1:] == [
        f"No ledger yet at {ledger}: nothing has been spent. The server creates it on its first call.",
        "budget global daily: $2 (config), nothing spent",
        "budget tag:research monthly: $20 (config), nothing spent",
    ]
    assert not ledger.parent.exists()


def test_report_without_a_ledger_still_refuses_a_bad_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--config", str(_config(tmp_path, MOCK_PROVIDER)), "--since", "yesterday"]) == 1

    assert "since: is not a date (allowed: YYYY-MM-DD)" in capsys.readouterr().err


def test_report_says_1_call_and_names_a_refused_call_as_refused_not_as_a_model_named_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import anyio

    from llm_router.calls import CompleteArgs
    from llm_router.engine import Engine
    from llm_router.types import BudgetExceeded

    from .conftest import make_settings

    async def refused() -> None:
        engine = Engine(make_settings(tmp_path, budget={"daily_usd": 0.000001}))
        try:
            with pytest.raises(BudgetExceeded):  # refused before any model is asked: the row names none
                await engine.complete(CompleteArgs(prompt="hello", quality="critical"))
        finally:
            await engine.aclose()

    anyio.run(refused)
    assert main(["report", "--demo", "--ledger", str(tmp_path / "ledger.db"), "--since", "2000-01-01", "--until", "2999-12-31",
                 "--group-by", "model"]) == 0

    out = capsys.readouterr().out
    rows = [line.rsplit(None, 5) for line in out.splitlines()[2:4]]  # a label, then five figures
    assert rows == [["(refused: no model)", "1", "1", "0", "0", "0"], ["total", "1", "1", "0", "0", "0"]]
    assert "$0 over 1 call, 1 error\n" in out
    assert "(none)" not in out and "1 calls" not in out


def test_ledger_is_an_option_of_the_demo_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["report", "--ledger", str(tmp_path / "mine.db")])

    assert info.value.code == 2
    assert "--ledger applies with --demo only" in capsys.readouterr().err
    assert not (tmp_path / "mine.db").exists()


def test_demo_and_a_config_file_are_not_mixed_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--demo", "--config", str(_config(tmp_path, MOCK_PROVIDER))])

    assert info.value.code == 2
    assert "give --demo or --config, not both" in capsys.readouterr().err


# -- a server started by hand -------------------------------------------------------------------


def _stderr_lines(proc: subprocess.Popen[bytes], n: int, timeout: float = 30) -> list[str]:
    """The first ``n`` lines the process writes to stderr, read straight from the pipe (a buffered
    reader would hold lines the selector no longer sees)."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while seen.count(b"\n") < n:
            assert sel.select(timeout), f"the server said only {seen!r} on stderr"
            chunk = os.read(fd, 4096)
            assert chunk, f"stderr closed after {seen!r}"
            seen += chunk
    return seen.decode().splitlines()[:n]


@pytest.mark.slow
def test_a_bare_server_in_a_terminal_says_on_stderr_that_it_waits_for_an_mcp_client(tmp_path: Path) -> None:
    terminal, tty = pty.openpty()
    try:
        with subprocess.Popen([sys.executable, "-m", "llm_router"], stdin=tty, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=_clean_env(tmp_path)) as proc:
            try:
                first, second = _stderr_lines(proc, 2)
                os.write(terminal, b"\x04")  # Ctrl-D: the end of input, as a person would type it
                assert proc.wait(timeout=30) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert proc.stdout is not None and proc.stdout.read() == b"", "stdout is the MCP wire: nothing else goes there"
    finally:
        os.close(tty)
        os.close(terminal)
    assert first.startswith("llm-router-mcp ") and "waiting for an MCP client on stdin" in first
    assert "Ctrl-C to stop" in second and "llm-router-mcp demo" in second


@pytest.mark.slow
def test_a_server_started_by_a_client_says_nothing_on_stderr(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "llm_router"], stdin=subprocess.DEVNULL, capture_output=True,
                          env=_clean_env(tmp_path), timeout=60)

    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


# -- the demo is always the demo ----------------------------------------------------------------


def _real_looking_env(fake: FakeProvider, tmp_path: Path) -> dict[str, str]:
    """Keys and base URLs for every provider, all pointing at one loopback fake, plus ledger variables."""
    assert fake.api_key
    return {
        "ANTHROPIC_API_KEY": fake.api_key, "ANTHROPIC_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-real-looking", "OPENAI_BASE_URL": fake.base_url,
        "GEMINI_API_KEY": "g-real-looking", "GEMINI_BASE_URL": fake.base_url,
        "OLLAMA_HOST": fake.root_url,
        "LLM_ROUTER_DB": str(tmp_path / "real-ledger.db"),
    }


def test_check_demo_uses_the_mock_providers_whatever_keys_and_base_urls_are_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeProvider("anthropic") as fake:
        for name, value in _real_looking_env(fake, tmp_path).items():
            monkeypatch.setenv(name, value)

        assert main(["check", "--demo"]) == 0  # online: each provider is probed

        assert fake.requests == []
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith((" ", "config:", "ledger:"))]
    assert [line.split(":")[0] for line in lines] == ["anthropic (mock — Anthropic (mock", "openai (mock — OpenAI (mock",
                                                       "gemini (mock — Google Gemini (mock", "ollama (mock — Ollama (mock"]
    assert all(line.endswith("usable — mock provider (no network)") for line in lines)


@pytest.mark.slow
async def test_serve_demo_answers_from_mocks_and_its_own_ledger_whatever_keys_base_urls_and_ledger_variables_say(
    tmp_path: Path,
) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    with FakeProvider("anthropic") as fake:
        env = _clean_env(tmp_path, **_real_looking_env(fake, tmp_path), LLM_ROUTER_DB_URL="postgresql://nobody@192.0.2.1/x")
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "llm_router", "serve", "--demo", "--ledger", str(tmp_path / "demo.db")],
            env=env,
        )
        async with Client(params) as client:
            providers = json.loads((await client.read_resource("llm-router://providers")).contents[0].text)["providers"]
            result = await client.call_tool("complete", {"prompt": "hello", "model": "anthropic:claude-haiku-4-5"})
        assert fake.requests == []
    assert {p["name"]: p["kind"] for p in providers} == {"anthropic": "mock", "openai": "mock", "gemini": "mock", "ollama": "mock"}
    assert not result.is_error
    assert result.structured_content["text"].startswith("[mock anthropic:claude-haiku-4-5]")
    assert (tmp_path / "demo.db").exists() and not (tmp_path / "real-ledger.db").exists()


@pytest.mark.slow
def test_the_demo_prints_no_warning_words_not_dicts_and_says_1_call(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "llm_router", "demo", "--ledger", str(tmp_path / "demo.db")],
        capture_output=True, text=True, timeout=120, env=_clean_env(tmp_path, PYTHONWARNINGS="error"),
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert "score_parts" not in out and "{'" not in out
    assert "(quality fit 1, cost 1, speed 0.5, reliability 1)" in out
    assert "(none)" not in out and "1 calls" not in out and "(s)" not in out
    assert "refused  no model asked (budget_exceeded) 0+0 tok $0, 0 attempts" in out
    assert "ERROR: budget global daily of $0.002 would be exceeded" in out
    assert '   machine-readable: {"code": "invalid_input", "field": "prompt"' in out
    assert "ERROR: max_cost: is not an argument of complete; did you mean 'max_cost_usd'?" in out


# -- check says what will not work --------------------------------------------------------------


def test_check_fails_and_says_so_for_a_model_that_can_never_be_called(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, MOCK_PROVIDER + '[[providers]]\nname = "lab"\nkind = "openai"\n'
                  'base_url = "http://127.0.0.1:9/v1"\nmodels = ["mystery-13b"]\n')

    assert main(["check", "--offline", "--config", str(cfg)]) == 1

    out = capsys.readouterr().out
    assert "lab:mystery-13b: tier medium, 128000 tokens assumed (set model_overrides context_window), NO PRICE: never called, it could not be budgeted" in out
    assert out.endswith('1 model can never be called, having no price: lab:mystery-13b. Give each a '
                        '[providers.prices."MODEL"] table (input_per_mtok, output_per_mtok) in the config file, '
                        "or remove it from models.\n")


def test_check_says_when_a_configured_model_is_not_in_the_servers_own_list(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeProvider("openai", api_key=None, models=["qwen2.5-7b-instruct"]) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)

        assert main(["check"]) == 0
        unlisted = capsys.readouterr().out

        monkeypatch.setenv("LLM_ROUTER_LOCAL_MODELS", "qwen2.5-7b-instruct")
        assert main(["check"]) == 0
        listed = capsys.readouterr().out

    assert f"local (openai at {fake.base_url}): usable — local answered with 1 model" in unlisted
    assert ("    local:default: tier low, 128000 tokens assumed (set model_overrides context_window), $0/$0 per Mtok "
            "(config); NOT in local's model list\n") in unlisted
    assert ("    local does not list default: calls to it may fail (some servers, llama.cpp among them, answer any "
            "name). It lists: qwen2.5-7b-instruct\n") in unlisted
    assert "local:qwen2.5-7b-instruct: tier low" in listed and "NOT in" not in listed and "does not list" not in listed


@pytest.mark.parametrize(
    ("model", "served", "listed"),
    [
        ("gpt-4o-mini", {"gpt-4o-mini", "gpt-4o"}, True),
        ("gpt-4o", {"gpt-4o-mini"}, False),
        ("llama3.1", {"llama3.1:latest"}, True),  # Ollama's name for the untagged model
        ("llama3.1", {"llama3.1:8b"}, False),
        ("claude-haiku-4-5", {"claude-haiku-4-5-20251001"}, True),  # Anthropic lists aliases by dated id
        ("claude-3-5-sonnet-latest", {"claude-3-5-sonnet-20241022"}, True),
        ("claude-haiku-4", {"claude-haiku-4-5-20251001"}, False),
    ],
)
def test_a_model_counts_as_listed_under_the_name_its_server_lists_it_by(model: str, served: set[str], listed: bool) -> None:
    assert cli._listed(model, served) is listed


def test_check_shows_an_assumed_window_as_assumed_and_asks_the_server_for_the_one_it_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """check printed the 128,000-token guess as if it were the model's window, and never asked
    the server, which knows it."""
    with FakeProvider("openai", api_key=None, models=["default"], llama_cpp=True, n_ctx=2048) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "    local:default: tier low, 2048 tokens (as the server runs it), $0/$0 per Mtok" in out

    assert main(["check", "--offline"]) == 0
    assert "local:default: tier low, 128000 tokens assumed (set model_overrides context_window)" in capsys.readouterr().out
