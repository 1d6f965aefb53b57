"""Where ``Engine.complete`` spends its time: per-stage attribution, a what-if, and a profile.

    python bench/profile_engine.py [--calls N] [--profile cprofile|pyinstrument|none] [--top K]

Same loopback upstream and config as ``bench/run.py``. Nothing under ``server/`` is changed: the
attribution wraps engine methods with timers on one engine instance, and the what-if patches that
instance only. Nothing is asserted.

1. Stages, measured inside real calls (interleaved with the direct-httpx floor, as in run.py):
   the ledger calls (run inline on the event loop, as shipped), the provider call, prepare,
   routing, building the answer. Measured in place, because on a small machine a stage costs
   several times more right after an HTTP call (cold caches) than in a tight loop.
2. What-if on the same machine in the same run: the ledger called on a worker thread (as it was
   before it ran inline), to show what the thread round trip would cost.
3. Optionally, a cProfile (or pyinstrument) profile of N whole calls.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import GENAI_MODEL, MAX_TOKENS, PROMPT, floor_calls, pct, pooled_client, upstream, write_config


def _engine(folder: Path, name: str, base_url: str, **kw: Any) -> Any:
    from llm_router.config import load_settings
    from llm_router.engine import Engine

    return Engine(load_settings(write_config(folder, name, base_url, **kw)))


async def _drive(engine: Any, base_url: str, n: int, warmup: int = 50) -> tuple[list[float], list[float]]:
    """n engine calls interleaved with n floor calls; returns (engine seconds, floor seconds)."""
    from llm_router.calls import CompleteArgs

    args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS)
    ours_t: list[float] = []
    floor_t: list[float] = []
    async with pooled_client(base_url) as client:
        plain, _ = floor_calls(client)
        for _ in range(warmup):
            await engine.complete(args)
            await plain()
        for i in range(n):
            pair = [(lambda: engine.complete(args), ours_t), (plain, floor_t)]
            for fn, out in pair if i % 2 == 0 else pair[::-1]:
                t0 = time.perf_counter()
                await fn()
                out.append(time.perf_counter() - t0)
    return ours_t, floor_t


# -- 1. attribution -------------------------------------------------------------------------------


async def attribution(
    base_url: str, folder: Path, n: int, *, genai: bool = False
) -> tuple[dict[str, list[float]], int]:
    import llm_router.engine as engine_mod

    rec: dict[str, list[float]] = defaultdict(list)
    active = False

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            async def awrap(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await fn(*a, **k)
                finally:
                    if active:
                        rec[name].append(time.perf_counter() - t0)

            return awrap

        def wrap(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if active:
                    rec[name].append(time.perf_counter() - t0)

        return wrap

    from llm_router import prepare as prepare_mod
    from llm_router import rows as rows_mod
    from llm_router import views as views_mod

    saved = {
        (mod, k): getattr(mod, k)
        for mod, k in ((views_mod, "budget_after"), (rows_mod, "prices_json"), (prepare_mod, "prompt_hash"),
                       (engine_mod, "decide"))
    }
    for (mod, k), fn in saved.items():
        setattr(mod, k, timed(f"  {k}", fn))
    try:
        kw = {"model": GENAI_MODEL, "genai_priced": True} if genai else {}
        engine = _engine(folder, "attr-genai" if genai else "attr", base_url, **kw)
        ledger = engine.ledger

        shipped_run = ledger.run

        async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            name = getattr(fn, "__qualname__", "fn")
            t0 = time.perf_counter()
            try:
                return await shipped_run(fn, *args, **kwargs)
            finally:
                if active:
                    rec[f"ledger {name}"].append(time.perf_counter() - t0)

        ledger.run = run
        for name in ("prepare", "_decide", "_settle"):
            setattr(engine, name, timed(name, getattr(engine, name)))
        engine.caller.call = timed("ModelCaller.call", engine.caller.call)  # type: ignore[method-assign]
        provider = next(iter(engine.providers.values()))
        provider.complete = timed("provider.complete (HTTP)", provider.complete)
        entry_cls = type(next(iter(engine.catalog)))
        saved_cost = entry_cls.cost_usd
        entry_cls.cost_usd = timed("  ModelEntry.cost_usd", saved_cost)
        try:
            from llm_router.calls import CompleteArgs

            args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS)
            async with pooled_client(base_url) as client:
                plain, _ = floor_calls(client)
                for _ in range(50):
                    await engine.complete(args)
                    await plain()
                active = True
                for _ in range(n):
                    t0 = time.perf_counter()
                    await engine.complete(args)
                    rec["Engine.complete (whole call)"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    await plain()
                    rec["direct httpx (floor)"].append(time.perf_counter() - t0)
                active = False
        finally:
            entry_cls.cost_usd = saved_cost
            await engine.aclose()
    finally:
        for (mod, k), fn in saved.items():
            setattr(mod, k, fn)
    r = rec
    r["ModelCaller.call minus provider.complete"] = [
        a - b for a, b in zip(r["ModelCaller.call"], r["provider.complete (HTTP)"], strict=True)
    ]
    r["provider.complete minus floor (paired)"] = [
        a - b for a, b in zip(r["provider.complete (HTTP)"], r["direct httpx (floor)"], strict=True)
    ]
    r["OVERHEAD: whole call minus floor (paired)"] = [
        a - b for a, b in zip(r["Engine.complete (whole call)"], r["direct httpx (floor)"], strict=True)
    ]
    return r, n


def print_attribution(rec: dict[str, list[float]], n: int, title: str) -> None:
    print(
        f"{title} — median µs per call over {n} calls (stages overlap: indented rows are inside the row above)"
    )
    order = [
        "Engine.complete (whole call)",
        "direct httpx (floor)",
        "OVERHEAD: whole call minus floor (paired)",
        "ledger Budget.snapshot",
        "ledger Budget.reserve",
        "ledger Ledger.record",
        "prepare",
        "  prompt_hash",
        "_decide",
        "  decide",
        "ModelCaller.call minus provider.complete",
        "provider.complete minus floor (paired)",
        "_settle",
        "  ModelEntry.cost_usd",
        "  budget_after",
        "  prices_json",
    ]
    for k in order + sorted(set(rec) - set(order)):
        if k in rec and rec[k] and k not in ("ModelCaller.call", "provider.complete (HTTP)"):
            v = rec[k]
            print(f"  {k:<52} {statistics.median(v) * 1e6:9.1f} µs   (mean {statistics.fmean(v) * 1e6:8.1f})")
    print("  (_settle includes the Ledger.record call above)\n")


# -- 2. what-ifs ----------------------------------------------------------------------------------


async def what_ifs(
    base_url: str, folder: Path, n: int, rounds: int
) -> list[tuple[str, list[float], list[float], list[float]]]:
    variants = ["as shipped", "ledger on a worker thread"]
    results: dict[str, tuple[list[float], list[float], list[float]]] = {v: ([], [], []) for v in variants}
    for r in range(rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            engine = _engine(folder, f"whatif-{variants.index(v)}-{r}", base_url)
            if v == "ledger on a worker thread":
                ledger = engine.ledger

                async def threaded(fn: Callable[..., Any], *a: Any, ledger: Any = ledger, **k: Any) -> Any:
                    return await anyio.to_thread.run_sync(lambda: fn(*a, **k), limiter=ledger._limiter)

                engine.ledger.run = threaded
            try:
                a, b = await _drive(engine, base_url, n, warmup=30)
            finally:
                await engine.aclose()
            results[v][0].extend(a)
            results[v][1].extend(b)
            results[v][2].extend(x - y for x, y in zip(a, b, strict=True))
    return [(v, *results[v]) for v in variants]


def print_what_ifs(rows: list[tuple[str, list[float], list[float], list[float]]]) -> None:
    print("What-if, same run, same machine (this engine instance patched; nothing under server/ changed):")
    print(
        f"  {'variant':<28} {'engine p50':>10} {'p99':>8} {'floor p50':>10} {'overhead (paired median)':>26} {'overhead p99':>13}"
    )
    for v, a, b, d in rows:
        print(
            f"  {v:<28} {pct(a, 50) * 1e3:8.3f}ms {pct(a, 99) * 1e3:6.2f}ms {pct(b, 50) * 1e3:8.3f}ms "
            f"{statistics.median(d) * 1e3:24.3f}ms {pct(d, 99) * 1e3:11.2f}ms"
        )
    print()


# -- 3. profile -----------------------------------------------------------------------------------


async def profile_calls(base_url: str, folder: Path, n: int, tool: str, top: int) -> str:
    from llm_router.calls import CompleteArgs

    engine = _engine(folder, "profiled", base_url)
    args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS)
    try:
        for _ in range(50):
            await engine.complete(args)
        if tool == "pyinstrument":
            from pyinstrument import Profiler

            prof = Profiler(interval=0.0005, async_mode="enabled")
            prof.start()
            for _ in range(n):
                await engine.complete(args)
            prof.stop()
            return prof.output_text(unicode=True, color=False)
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(n):
            await engine.complete(args)
        pr.disable()
    finally:
        await engine.aclose()
    buf = io.StringIO()
    st = pstats.Stats(pr, stream=buf)
    st.sort_stats("cumulative").print_stats(r"llm_router|sqlite3", top)
    st.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main() -> int:
    p = argparse.ArgumentParser(description="stage attribution, what-ifs and a profile of Engine.complete")
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--rounds", type=int, default=2, help="what-if rounds (each runs both variants once)")
    p.add_argument("--profile", choices=["cprofile", "pyinstrument", "none"], default="none")
    p.add_argument("--top", type=int, default=30)
    a = p.parse_args()
    n = max(20, min(a.calls, 5000))
    with tempfile.TemporaryDirectory(prefix="llm-router-profile-") as tmp, upstream() as base_url:
        folder = Path(tmp)
        rec, count = anyio.run(attribution, base_url, folder, n)
        print_attribution(rec, count, "1a. Stages inside real calls, config-priced model")
        rec, count = anyio.run(lambda: attribution(base_url, folder, n, genai=True))
        print_attribution(rec, count, f"1b. The same on {GENAI_MODEL}, priced by genai-prices")
        print_what_ifs(anyio.run(what_ifs, base_url, folder, n, max(1, min(a.rounds, 5))))
        if a.profile != "none":
            print(
                f"3. Profile of {n} whole Engine.complete calls ({a.profile}):"
            )
            print(anyio.run(profile_calls, base_url, folder, n, a.profile, a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
