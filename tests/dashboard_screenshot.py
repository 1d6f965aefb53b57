"""``docs/dashboard.png``: the dashboard of the fixture ledger (``dashboard_fixture``) on the demo's
mock providers, as headless Chromium draws it. Run from the repository's root:

    .venv/bin/python -m tests.dashboard_screenshot docs/dashboard.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import anyio

from llm_router.config import settings_from_dict
from llm_router.defaults import demo_config
from llm_router.engine import Engine
from llm_router.http_app import Tokens

from . import browser
from .dashboard_fixture import ALICE, RESEARCH, record_past_days, today_calls
from .http_server import mcp_client, serve

__all__ = ["make"]


def make(out: Path, workdir: Path, *, period: str = "last_7_days") -> None:
    """Build the fixture ledger in ``workdir`` and draw its dashboard into ``out``."""
    data = demo_config(str(workdir / "ledger.db"))
    for p in data["providers"]:
        p["mock"] = {"imitates": p["mock"]["imitates"]}  # no injected latency or failures
    data["resilience"] = {"max_retries": 0}

    async def run() -> None:
        engine = Engine(settings_from_dict(data, source="screenshot"))
        try:
            record_past_days(engine)
            with serve(engine, tokens=Tokens([("alice", ALICE, "member"), ("research", RESEARCH, "admin")])) as url:
                async with mcp_client(url, RESEARCH) as admin, mcp_client(url, ALICE) as alice:
                    await today_calls(admin, alice, engine)
                await anyio.to_thread.run_sync(
                    lambda: browser.screenshot(f"{url}/dashboard?period={period}#token={RESEARCH}", out))
        finally:
            await engine.aclose()

    anyio.run(run)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        make(target.resolve(), Path(tmp))
    print(target)
