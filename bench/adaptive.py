"""What ``strategy: "adaptive"`` costs on a plain call, against ``balanced`` in the same run.

    python bench/adaptive.py [--calls N] [--quick]

(``bench/run.py`` prints the same section beside its other figures.) One engine, two providers of
the loopback upstream (``bench/upstream.py``) priced like a cheap and a dear model, both serving
``bench-model``, so every call has two candidates to rank. Before timing, a few calls of each model
are rated through ``Engine.rate`` (the cheap one good on the benchmark's task type), so that
``adaptive`` has estimates and plans (mode ``exploit``), and exploration is off so that every
timed call takes the same path. Then, interleaved:

* ``Engine.complete`` with ``strategy: "adaptive"`` and ``task_type`` set;
* the same call with ``strategy: "balanced"``;

p50/p99 of each and their paired median difference: what adaptive routing adds to a call. Also the
choice alone (``Planner.choose`` on the same candidates), and the plan made afresh (the cost paid
once per change of the estimates or of the traffic), in µs. Timings are reported, never asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MAX_TOKENS, MODEL, PROMPT, interleaved, paired_median_ms, standalone
from structured import _line, _per_call_us

TASK = "summarize"
SECTION_TITLE = "Adaptive routing, in-process: the same plain call ranked by adaptive (with estimates) or balanced"


def write_config(folder: Path, base_url: str) -> Path:
    """Two openai-kind providers on the upstream (a cheap and a dear price), with limits (every call reserves)."""
    path = folder / "adaptive.toml"
    providers = ""
    for name, (price_in, price_out) in {"cheap": (0.15, 0.60), "dear": (3.0, 15.0)}.items():
        providers += f"""
[[providers]]
name = "{name}"
kind = "openai"
base_url = "{base_url}"
models = ["{MODEL}"]
timeout_s = 30
[providers.prices."{MODEL}"]
input_per_mtok = {price_in}
output_per_mtok = {price_out}
[providers.model_overrides."{MODEL}"]
tier = "medium"
context_window = 128000
"""
    path.write_text(f"""\
[ledger]
path = "{(folder / "adaptive.db").as_posix()}"
{providers}
[quality]
explore_share = 0.0

[budget]
daily_usd = 1000.0
monthly_usd = 10000.0
per_request_usd = 1.0
""", encoding="utf-8")
    return path


async def in_process(base_url: str, folder: Path, n: int, warmup: int) -> dict[str, Any]:
    from llm_router.calls import CompleteArgs
    from llm_router.config import load_settings
    from llm_router.engine import Engine

    engine = Engine(load_settings(write_config(folder, base_url)))
    adaptive_args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS, task_type=TASK, strategy="adaptive")
    balanced_args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS, task_type=TASK, strategy="balanced")
    out: dict[str, Any] = {}
    try:
        for ref, score in ((f"cheap:{MODEL}", 5), (f"dear:{MODEL}", 5)):
            for _ in range(6):
                done = await engine.complete(CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS, task_type=TASK, model=ref))
                await engine.rate(await engine.rated_request(done.request_id), score, None)
        explained = await engine.explain(adaptive_args)
        assert explained.adaptive is not None and explained.adaptive["mode"] == "exploit", explained.adaptive
        out["mode"] = explained.adaptive["mode"]

        async def adaptive() -> Any:
            return await engine.complete(adaptive_args)

        async def balanced() -> Any:
            return await engine.complete(balanced_args)

        for _ in range(warmup):
            await adaptive()
            await balanced()
        out["pair"] = await interleaved(n, adaptive, balanced, ("Engine.complete, adaptive", "Engine.complete, balanced"))
        out["alone"] = await choice_alone(engine, adaptive_args)
    finally:
        await engine.aclose()
    return out


async def choice_alone(engine: Any, args: Any) -> list[tuple[str, float]]:
    """µs per call of the choice on this call's candidates, and of a fresh plan."""
    prepared = engine.prepare(args)
    decision = await engine.decision(prepared)
    candidates, tier = decision.chain, decision.budget_tier
    planner = engine.planner

    def fresh() -> Any:
        planner._cache = None
        return planner.choose(TASK, candidates, tier)

    return [
        ("Planner.choose (plan cached)", _per_call_us(lambda: planner.choose(TASK, candidates, tier), 2000, 7)),
        ("Planner.choose, plan made afresh", _per_call_us(fresh, 500, 7)),
    ]


def print_section(r: dict[str, Any], title: str) -> None:
    print(title)
    ours, floor = r["pair"]
    print(_line(ours))
    print(_line(floor))
    print(f"  {'→ what adaptive adds':<40} p50 {ours.p50 - floor.p50:8.3f} ms   p99 {ours.p99 - floor.p99:8.3f} ms"
          f"   paired median {paired_median_ms(ours, floor):.3f} ms")
    print(f"  the choice alone (µs per call, mode {r['mode']}):")
    for name, us in r["alone"]:
        print(f"    {name:<40} {us:9.1f} µs")
    print()


def main() -> int:
    r, n = standalone("what adaptive routing costs per call (loopback only)", in_process)
    print_section(r, f"{SECTION_TITLE}; N={n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
