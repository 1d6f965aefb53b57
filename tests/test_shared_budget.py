"""One budget shared by several real server processes (``llm-router-mcp serve`` over stdio, driven
by the MCP client), on one SQLite file and on one PostgreSQL schema: concurrent calls never
overspend, nobody is refused while the budget had room for them, every paid call is in the ledger,
and a server killed mid-call leaves nothing held once a server starts again."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from llm_router.ledger import LedgerBase
from llm_router.types import usd_str, usd_to_nusd

from .backends import Store

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MODEL = "mock:m"
OUTPUT_PER_MTOK = 10  # USD; input is free, so a call's worst case is max_tokens' worth of output
MAX_TOKENS = 1000
WORST_NUSD = usd_to_nusd(Decimal(OUTPUT_PER_MTOK) * MAX_TOKENS / 1_000_000)


def toml_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str | bool) else repr(v)


def write_config(
    path: Path, store: Store, *, daily_usd: str, providers: dict[str, float], ledger: dict[str, Any] | None = None,
) -> Path:
    """A config with one priced mock model per provider (``{name: latency_ms}``), on ``store``."""
    lines = ["[ledger]"] + [f"{k} = {toml_value(v)}" for k, v in (store.config() | (ledger or {})).items()]
    for name, latency in providers.items():
        lines += [
            "[[providers]]", f'name = "{name}"', 'kind = "mock"', 'models = ["m"]',
            "[providers.mock]", f"latency_ms = {latency}",
            '[providers.prices."m"]', "input_per_mtok = 0", f"output_per_mtok = {OUTPUT_PER_MTOK}",
        ]
    lines += ["[budget]", f"daily_usd = {daily_usd}", "[resilience]", "max_retries = 0"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def server(config: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "llm_router", "serve", "--config", str(config)],
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
    )


async def read_json(client: Client, uri: str) -> Any:
    return json.loads((await client.read_resource(uri)).contents[0].text)


def nusd(usd: str) -> int:
    return usd_to_nusd(Decimal(usd))


# -- many processes, one budget -----------------------------------------------------------------

SERVERS = 8
CALLS_EACH = 25
LIMIT_USD = "0.05"  # fits five worst cases at once, and about half of the calls' actual cost


async def test_eight_servers_sharing_one_budget_never_overspend_and_refuse_only_what_did_not_fit(
    store: Store, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.toml", store, daily_usd=LIMIT_USD, providers={"mock": 40})
    limit = nusd(LIMIT_USD)
    ok: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    other: list[Any] = []

    async def one(client: Client, name: str) -> None:
        result = await client.call_tool("complete", {"prompt": f"question {name}", "model": MODEL,
                                                     "max_tokens": MAX_TOKENS})
        data = result.structured_content or {}
        error = (result.meta or {}).get("llm-router/error") or {}
        if not result.is_error:
            ok.append(data)
        elif error.get("code") == "budget_exceeded":
            refused.append(error)
        else:
            other.append(result.content)

    async def serve(i: int) -> None:
        async with Client(server(config)) as client, anyio.create_task_group() as tg:
            for j in range(CALLS_EACH):
                tg.start_soon(one, client, f"{i}-{j}")

    t0 = time.monotonic()
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(SERVERS):
                tg.start_soon(serve, i)
    elapsed = time.monotonic() - t0

    led = store.open()
    try:
        totals = led.totals()
        left = led.reservations_total()
    finally:
        led.close()
    spent = sum(nusd(r["cost_usd"]) for r in ok)
    print(f"\n{store.kind}: {SERVERS}x{CALLS_EACH} calls in {elapsed:.1f} s: {len(ok)} ok, {len(refused)} refused; "
          f"spent ${Decimal(spent) / 10**9} of ${LIMIT_USD} (worst case per call ${Decimal(WORST_NUSD) / 10**9})")

    assert other == []
    assert len(ok) + len(refused) == SERVERS * CALLS_EACH
    assert ok and refused, "the limit should fit some calls but not all"
    # 1. Total spend never exceeds the limit.
    assert totals["cost_nusd"] <= limit
    # 2. Nobody was refused for budget that was actually free: each refusal's figures, read when it
    #    was refused, show that what was already spent (holds of calls in flight aside, which are
    #    waited for) left less than the call's worst case.
    assert all(nusd(e["spent_usd"]) + nusd(e["needed_usd"]) > nusd(e["limit_usd"]) for e in refused)
    assert all(nusd(e["needed_usd"]) == WORST_NUSD and e["limit"] == "global daily" for e in refused)
    #    ...and, in the end, what is left would not fit one more call.
    assert limit - totals["cost_nusd"] < WORST_NUSD
    # 3. The ledger's sum is the total of the successful calls; every call has its row.
    assert totals["cost_nusd"] == spent
    assert totals["requests"] == SERVERS * CALLS_EACH
    assert left == 0


# -- a server killed mid-call -------------------------------------------------------------------


async def wait_for(predicate: Any, what: str, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)
    assert predicate(), what


async def test_a_server_killed_mid_call_leaves_its_holds_reclaimed_and_its_completed_calls_recorded(
    store: Store, tmp_path: Path
) -> None:
    # Four slow calls' worst cases fill the limit, so while they are held no other call fits.
    config = write_config(tmp_path / "config.toml", store, daily_usd="0.045",
                          providers={"fast": 0, "slow": 60_000})
    watcher: LedgerBase = store.open()
    completed: list[str] = []
    try:
        lost: list[BaseException] = []

        async def first_server() -> None:
            async with Client(server(config)) as client:
                for i in range(3):
                    done = await client.call_tool("complete", {"prompt": f"fast {i}", "model": "fast:m"})
                    assert not done.is_error, done.content
                    completed.append(done.structured_content["request_id"])  # type: ignore[index]

                async def slow(i: int) -> None:
                    try:
                        await client.call_tool("complete", {"prompt": f"slow {i}", "model": "slow:m",
                                                            "max_tokens": MAX_TOKENS})
                    except Exception as e:  # noqa: BLE001 - the server is killed under it
                        lost.append(e)

                async with anyio.create_task_group() as tg:
                    for i in range(4):
                        tg.start_soon(slow, i)
                    await wait_for(lambda: len(holds()) == 4, "four calls in flight")
                    pids = {h["pid"] for h in holds()}
                    assert len(pids) == 1
                    os.kill(pids.pop(), signal.SIGKILL)

        def holds() -> list[dict[str, Any]]:
            return watcher.query("SELECT pid, amount_nusd FROM reservations")

        with anyio.fail_after(60):
            try:
                await first_server()
            except* (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # closing a session whose server was killed
        assert len(lost) == 4, "the killed server's calls ended without an answer"
        assert len(completed) == 3
        dead = {h["pid"] for h in holds()}
        assert len(holds()) == 4, "nothing reclaimed the holds before a server started again"

        async with Client(server(config)) as client:
            budgets = (await read_json(client, "llm-router://budgets"))["budgets"]
            again = await client.call_tool("complete", {"prompt": "after the crash", "model": "fast:m",
                                                        "deadline_s": 5})
            entries = (await read_json(client, "llm-router://ledger"))["entries"]

        # Reclaimed at start, and logged.
        assert holds() == []
        events = [e["detail"] for e in watcher.events() if e["kind"] == "reservation_reclaimed"]
        assert sorted((e["pid"], e["reason"], e["amount_nusd"]) for e in events) == [
            (dead.copy().pop(), "process_gone", WORST_NUSD)
        ] * 4
        daily = next(b for b in budgets if b["period"] == "daily")
        assert daily["reserved_usd"] == "0"
        assert daily["reclaimed"] == {"holds": 4, "usd": usd_str(4 * WORST_NUSD)}
        # Every completed call is in the ledger, and the budget is usable again.
        assert not again.is_error, again.content
        recorded = {e["id"] for e in entries}
        assert set(completed) <= recorded
        assert again.structured_content["request_id"] in recorded  # type: ignore[index]
    finally:
        watcher.close()
