"""What a server's start does not load: heavy libraries its configuration does not need.

Checked in a fresh interpreter, since this test session has imported everything already."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from llm_router.config import load_settings
from llm_router.engine import Engine
from llm_router.mcp_server import create_server

engine = Engine(load_settings(sys.argv[1]))
create_server(engine)
engine.ledger.close()
print(",".join(m for m in ("genai_prices", "sqlite_utils", "opentelemetry.sdk") if m in sys.modules))
"""


def _loaded(config: Path, env: dict[str, str] | None = None) -> set[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(config)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return set(filter(None, out.stdout.strip().split(",")))


def _config(tmp_path: Path, providers: str) -> Path:
    config = tmp_path / "c.toml"
    config.write_text(f'[ledger]\npath = "{(tmp_path / "l.db").as_posix()}"\n{providers}', encoding="utf-8")
    return config


def test_a_migrated_ledger_and_a_self_described_model_load_neither_sqlite_utils_nor_genai_prices(tmp_path: Path) -> None:
    config = _config(tmp_path, """
[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
models = ["m"]
[providers.prices."m"]
input_per_mtok = 0.15
output_per_mtok = 0.60
[providers.model_overrides."m"]
context_window = 128000
""")
    assert _loaded(config) == set()  # a new ledger file is migrated by the ledger's own DDL
    assert _loaded(config) == set()  # already migrated; prices and window from the config


def test_a_hosted_model_is_priced_from_genai_prices(tmp_path: Path) -> None:
    config = _config(tmp_path, """
[[providers]]
name = "openai"
kind = "openai"
models = ["gpt-4o-mini"]
""")
    assert "genai_prices" in _loaded(config)


def test_telemetry_off_leaves_the_opentelemetry_sdk_unloaded_and_on_loads_it(tmp_path: Path) -> None:
    """Off (no endpoint) the SDK is never imported; the API is, by the MCP SDK itself."""
    import os

    config = _config(tmp_path, "")
    bare = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    assert "opentelemetry.sdk" not in _loaded(config, bare)
    assert "opentelemetry.sdk" in _loaded(config, bare | {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert "opentelemetry.sdk" not in _loaded(config, bare | {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                                             "OTEL_SDK_DISABLED": "true"})
