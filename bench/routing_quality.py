"""How good and how cheap the router's choices are, replayed over simulated traffic.

    python bench/routing_quality.py [--dataset tasks.csv | --seed S --tasks N --types T --models weak,strong]
        [--strategy adaptive] [--rate-share 0.2] [--noisy-ratings] [--price NAME=PROVIDER:MODEL ...]
        [--quality-target 0.95] [--explore-share 0.05] [--csv-out per_task.csv] [--json summary.json]

Every task of the dataset (``bench/routing_dataset.py``: a CSV of that shape, or one generated
from the seed) goes to the ``complete`` tool of the real server, through a real MCP client
session in memory, with its ``prompt``, its ``task_type`` and ``strategy`` (default
``adaptive``). Each simulated model is a mock provider of its own (named as the dataset's column,
serving a real model's name and priced like it by genai-prices: by default the strongest like
anthropic claude-sonnet-4-5, the weakest like openai gpt-4o-mini, one in between like anthropic
claude-haiku-4-5); each run has a fresh SQLite ledger in a temporary folder.

An answer is good when the dataset's label for the model that gave it (the result's ``model``)
is 1. A share of the answers (``--rate-share``, chosen from the seed) is rated with the ``rate``
tool: 5 for a good answer, 1 for a bad one (``--noisy-ratings``: 4-5 and 1-2). A server without
a ``rate`` tool gets no ratings, and ``adaptive``, which would have nothing to learn from, is
replaced by ``balanced``; the output says so.

Against, over the same tasks: each model forced (``model`` given, through ``complete`` too, each
on its own ledger), random (each task to a model drawn with the shares of calls the router ended
with, at the costs the forced runs measured) and the oracle (``replay_baselines.oracle``: the
least-cost fixed model per task type knowing the labels, at the router's own quality). Printed
over all tasks, then over the tasks after the first 10% (the learning phase). Costs are the
ledgers' own, read back and checked against the results' ``cost_usd``. Loopback only, bounded:
it stops when the dataset is replayed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_baselines import Summary, draws, oracle, random_choice, summarise  # noqa: E402
from routing_dataset import Dataset, generate, read_csv  # noqa: E402

from llm_router.types import InvalidInput, usd_str, usd_to_nusd  # noqa: E402

__all__ = ["Price", "Run", "default_prices", "replay", "run_all", "report", "main"]

STRONG_PRICE = ("anthropic", "claude-sonnet-4-5")
WEAK_PRICE = ("openai", "gpt-4o-mini")
MIDDLE_PRICES = (("anthropic", "claude-haiku-4-5"), ("openai", "gpt-4.1-mini"), ("google", "gemini-2.5-flash"))
LEARNING_SHARE = 10  # the first 1/10 of the tasks is the learning phase
TAG = "routing-bench"


@dataclass(frozen=True, slots=True)
class Price:
    """What a simulated model is priced as: a genai-prices provider id and model name."""

    provider: str
    model: str


def default_prices(models: Sequence[str], given: dict[str, Price] | None = None) -> dict[str, Price]:
    """The weakest like gpt-4o-mini, the strongest like claude-sonnet-4-5, those between like
    ``MIDDLE_PRICES`` in turn; ``given`` wins."""
    out: dict[str, Price] = {}
    for k, name in enumerate(models):
        if k == 0:
            out[name] = Price(*WEAK_PRICE)
        elif k == len(models) - 1:
            out[name] = Price(*STRONG_PRICE)
        else:
            out[name] = Price(*MIDDLE_PRICES[(k - 1) % len(MIDDLE_PRICES)])
    unknown = sorted(set(given or {}) - set(models))
    if unknown:
        raise InvalidInput("--price", f"{', '.join(unknown)} is not a model of the dataset", allowed=", ".join(models))
    return out | (given or {})


@dataclass
class Run:
    """One replay: per task, the model (its column) that answered, what it cost, and its rating."""

    name: str
    chosen: list[int] = field(default_factory=list)
    cost_nusd: list[int] = field(default_factory=list)
    scores: dict[int, int] = field(default_factory=dict)
    """Task index -> the score it was rated with."""
    ledger_nusd: int = 0
    ledger_rows: int = 0
    seconds: float = 0.0
    rate_errors: list[str] = field(default_factory=list)
    estimates: dict[str, Any] = field(default_factory=dict)
    """Task type -> the estimate the latest rating of one of its answers returned."""
    strategy: str | None = None
    """The strategy asked (None: a forced model)."""


def _settings(folder: Path, name: str, models: Sequence[str], prices: dict[str, Price], strategy: str,
              quality: dict[str, float]) -> Any:
    from llm_router.config import settings_from_dict

    strong = f"{models[-1]}:{prices[models[-1]].model}"
    data: dict[str, Any] = {
        "ledger": {"path": str(folder / f"{name}.db")},
        "providers": [
            {"name": m, "kind": "mock", "models": [prices[m].model], "pricing_provider": prices[m].provider,
             "mock": {"imitates": f"{prices[m].provider} {prices[m].model} (simulated model {m!r})"}}
            for m in models
        ],
        "routing": {"strategy": strategy, "reference_model": strong},
        "resilience": {"max_retries": 0},
        "quality": quality,
    }
    # demo: mock providers only, so the ledger is the one named here whatever $LLM_ROUTER_DB says.
    return settings_from_dict(data, source=f"routing bench ({name})", demo=True)


@contextlib.asynccontextmanager
async def _session(settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    from mcp import Client

    from llm_router.engine import Engine
    from llm_router.mcp_server import create_server

    engine = Engine(settings)
    try:
        async with Client(create_server(engine)) as client:
            yield client, engine
    finally:
        await engine.aclose()


def _ledger_totals(db: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(db)) as c:
        n, total = c.execute("SELECT count(*), coalesce(sum(cost_nusd), 0) FROM requests").fetchone()
    return int(n), int(total)


def _score(good: int, noisy: bool, rng: random.Random) -> int:
    if not noisy:
        return 5 if good else 1
    return rng.choice((4, 5)) if good else rng.choice((1, 2))


async def replay(dataset: Dataset, folder: Path, prices: dict[str, Price], *, name: str, strategy: str = "adaptive",
                 forced: str | None = None, rated: frozenset[int] = frozenset(), noisy: bool = False, seed: int = 1,
                 quality: dict[str, float] | None = None, notes: list[str] | None = None) -> Run:
    """Every task through ``complete`` on a fresh server and ledger; ``forced``: the simulated
    model every call names. Rates the tasks ``rated`` when the server has a ``rate`` tool.

    Raises:
        RuntimeError: a tool call failed, or an answer came from a model the dataset does not name.
    """
    models = dataset.models
    refs = {f"{m}:{prices[m].model}": k for k, m in enumerate(models)}
    notes = notes if notes is not None else []
    async with _session(_settings(folder, name, models, prices, strategy, quality or {})) as (client, _):
        tools = {t.name for t in (await client.list_tools()).tools}
        can_rate = "rate" in tools
        if forced is None and not can_rate:
            notes.append("the server has no `rate` tool: no ratings sent")
            if strategy == "adaptive":
                strategy = "balanced"
                notes.append("strategy `adaptive` replaced by `balanced` (nothing to learn from without ratings)")
        run = Run(name, strategy=None if forced else strategy)
        rng = random.Random(f"{seed}:scores")
        started = time.perf_counter()
        for i, task in enumerate(dataset.tasks):
            args: dict[str, Any] = {"prompt": task.prompt, "task_type": task.task_type, "tag": TAG}
            if forced is None:
                args["strategy"] = strategy
            else:
                args["model"] = f"{forced}:{prices[forced].model}"
            result = await client.call_tool("complete", args)
            if result.is_error:
                raise RuntimeError(f"{name}: task {task.id}: {result.content[0].text}")
            data = result.structured_content
            k = refs.get(data["model"])
            if k is None:
                raise RuntimeError(f"{name}: task {task.id} answered by {data['model']!r}, not a simulated model")
            if data["cost_usd"] is None:
                raise RuntimeError(f"{name}: task {task.id}: the cost of {data['model']} is unknown")
            run.chosen.append(k)
            run.cost_nusd.append(usd_to_nusd(Decimal(data["cost_usd"])))
            if can_rate and forced is None and i in rated:
                score = _score(task.labels[k], noisy, rng)
                rating = await client.call_tool("rate", {"request_id": data["request_id"], "score": score})
                if rating.is_error:
                    run.rate_errors.append(f"task {task.id}: {rating.content[0].text}")
                else:
                    run.scores[i] = score
                    run.estimates[task.task_type] = (rating.structured_content or {}).get("estimate")
        run.seconds = time.perf_counter() - started
    run.ledger_rows, run.ledger_nusd = _ledger_totals(folder / f"{name}.db")
    return run


def rated_tasks(n: int, share: float, seed: int) -> frozenset[int]:
    """The tasks whose answers are rated: ``round(share * n)`` of them, drawn from the seed."""
    return frozenset(random.Random(f"{seed}:rated").sample(range(n), round(share * n)))


async def run_all(dataset: Dataset, prices: dict[str, Price], *, strategy: str = "adaptive", rate_share: float = 0.2,
                  noisy: bool = False, seed: int = 1, quality: dict[str, float] | None = None,
                  ) -> tuple[Run, list[Run], list[str]]:
    """The strategy's run, then each model forced; and the notes to print."""
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="routing-bench-") as tmp:
        folder = Path(tmp)
        rated = rated_tasks(len(dataset.tasks), rate_share, seed)
        main_run = await replay(dataset, folder, prices, name="strategy", strategy=strategy, rated=rated,
                                noisy=noisy, seed=seed, quality=quality, notes=notes)
        forced = [await replay(dataset, folder, prices, name=f"always-{m}", forced=m) for m in dataset.models]
    for run in (main_run, *forced):
        if run.ledger_rows != len(dataset.tasks) or run.ledger_nusd != sum(run.cost_nusd):
            notes.append(f"{run.name}: the ledger holds {run.ledger_rows} rows costing ${usd_str(run.ledger_nusd)}, "
                         f"the results said {len(dataset.tasks)} costing ${usd_str(sum(run.cost_nusd))}")
        if run.rate_errors:
            notes.append(f"{run.name}: {len(run.rate_errors)} ratings refused, the first: {run.rate_errors[0]}")
    return main_run, forced, notes


# -- the figures ----------------------------------------------------------------------------------


def report(dataset: Dataset, main_run: Run, forced: list[Run], *, seed: int = 1) -> dict[str, Any]:
    """Every row of both tables (all tasks, after the learning phase) as plain data."""
    labels = [t.labels for t in dataset.tasks]
    kinds = [t.task_type for t in dataset.tasks]
    n_models = len(dataset.models)
    per_model = [[forced[m].cost_nusd[i] for m in range(n_models)] for i in range(len(dataset.tasks))]
    everything = list(range(len(dataset.tasks)))
    picks = _random_picks(main_run, n_models, seed)
    random_costs = [per_model[i][m] for i, m in enumerate(picks)]
    cut = len(dataset.tasks) // LEARNING_SHARE
    parts = {"all": everything, "after_learning": everything[cut:]}
    out: dict[str, Any] = {"strategy": main_run.strategy, "models": list(dataset.models), "tasks": len(dataset.tasks),
                           "learning_tasks": cut, "rated": len(main_run.scores), "estimates": main_run.estimates,
                           "parts": {}}
    for part, idx in parts.items():
        rows: dict[str, Summary] = {f"router ({main_run.strategy})": summarise(idx, main_run.chosen, labels,
                                                                               main_run.cost_nusd, n_models)}
        for m, run in enumerate(forced):
            rows[f"always-{dataset.models[m]}"] = summarise(idx, [m] * len(labels), labels, run.cost_nusd, n_models)
        rows["random"] = summarise(idx, picks, labels, random_costs, n_models)
        router = next(iter(rows.values()))
        rows["oracle"] = oracle(idx, kinds, labels, per_model, router.good)
        out["parts"][part] = _rows(rows, dataset, idx, kinds, labels, per_model)
    return out


def _random_picks(main_run: Run, n_models: int, seed: int) -> list[int]:
    """The random baseline's model per task: drawn with the shares of calls the router ended with."""
    n = len(main_run.chosen)
    shares = [main_run.chosen.count(m) / n for m in range(n_models)]
    return random_choice(shares, draws(seed, n))


def _rows(rows: dict[str, Summary], dataset: Dataset, idx: list[int], kinds: list[str], labels: list[tuple[int, ...]],
          per_model: list[list[int]]) -> list[dict[str, Any]]:
    strong = rows[f"always-{dataset.models[-1]}"]
    weak = rows[f"always-{dataset.models[0]}"]
    gap = strong.good - weak.good
    out = []
    for name, s in rows.items():
        at_own = oracle(idx, kinds, labels, per_model, s.good)
        out.append({
            "name": name,
            "quality": round(s.quality, 4),
            "quality_pct_of_strong": _pct(s.good, strong.good),
            "cost_usd": usd_str(s.cost_nusd),
            "cost_pct_of_strong": _pct(s.cost_nusd, strong.cost_nusd),
            "calls": {m: round(float(c), 4) for m, c in zip(dataset.models, s.calls, strict=True)},
            "gap_recovered_pct": _pct(s.good - weak.good, gap) if gap > 0 else None,
            "cost_pct_of_oracle_at_same_quality": _pct(s.cost_nusd, at_own.cost_nusd),
        })
    return out


def _pct(a: Fraction | int, b: Fraction | int) -> float | None:
    return round(float(Fraction(a) / Fraction(b)) * 100, 1) if b else None


def _table(rows: list[dict[str, Any]], models: Sequence[str]) -> str:
    head = ["", "quality", "% strong", "cost $", "% strong", *(f"calls {m}" for m in models), "gap rec.",
            "% oracle"]
    body = []
    for r in rows:
        body.append([r["name"], f"{r['quality']:.4f}", _fmt(r["quality_pct_of_strong"]), f"{Decimal(r['cost_usd']):.4f}",
                     _fmt(r["cost_pct_of_strong"]), *(f"{r['calls'][m] * 100:.1f}%" for m in models),
                     _fmt(r["gap_recovered_pct"]), _fmt(r["cost_pct_of_oracle_at_same_quality"])])
    widths = [max(len(str(x[c])) for x in [head, *body]) for c in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w) for c, (v, w) in enumerate(zip(x, widths,
                                                                                                    strict=True)))
             for x in [head, *body]]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def write_per_task(path: Path, dataset: Dataset, main_run: Run, forced: list[Run], seed: int) -> None:
    """One row per task: what the router chose, whether it was good, what it cost, its rating,
    and each forced model's label and cost."""
    picks = _random_picks(main_run, len(dataset.models), seed)
    cut = len(dataset.tasks) // LEARNING_SHARE
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["index", "id", "task_type", "phase", "model", "good", "cost_usd", "score", "random_model",
                      *(f"good_{m}" for m in dataset.models), *(f"cost_usd_{m}" for m in dataset.models)])
        for i, t in enumerate(dataset.tasks):
            k = main_run.chosen[i]
            out.writerow([i, t.id, t.task_type, "learning" if i < cut else "after", dataset.models[k], t.labels[k],
                          usd_str(main_run.cost_nusd[i]), main_run.scores.get(i, ""), dataset.models[picks[i]],
                          *t.labels, *(usd_str(r.cost_nusd[i]) for r in forced)])


# -- the command ----------------------------------------------------------------------------------


def _price(text: str) -> tuple[str, Price]:
    name, sep, ref = text.partition("=")
    provider, colon, model = ref.partition(":")
    if not (sep and colon and name and provider and model):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PROVIDER:MODEL, e.g. strong=anthropic:claude-opus-4-5")
    return name, Price(provider, model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help="a CSV of bench/routing_dataset.py's shape (else generated)")
    parser.add_argument("--seed", type=int, default=1, help="generation, which answers are rated, random baseline")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--types", type=int, default=16)
    parser.add_argument("--models", default="weak,strong", help="simulated models when generating, weakest first")
    parser.add_argument("--strategy", default="adaptive")
    parser.add_argument("--rate-share", type=float, default=0.2, help="share of the router's answers rated")
    parser.add_argument("--noisy-ratings", action="store_true", help="good answers 4-5, bad ones 1-2")
    parser.add_argument("--price", type=_price, action="append", default=[], metavar="NAME=PROVIDER:MODEL",
                        help="price a simulated model like this genai-prices model (repeatable)")
    parser.add_argument("--quality-target", type=float, help="[quality] target (the server's default otherwise)")
    parser.add_argument("--explore-share", type=float, help="[quality] explore_share")
    parser.add_argument("--csv-out", type=Path, help="write per-task results here")
    parser.add_argument("--json", type=Path, help="write the summary here as JSON")
    args = parser.parse_args(argv)
    if not 0 <= args.rate_share <= 1:
        parser.error("--rate-share: between 0 and 1")
    t0 = time.perf_counter()
    try:
        if args.dataset:
            dataset = read_csv(args.dataset)
        else:
            dataset = generate(args.seed, args.tasks, args.types, args.models.split(","))
        prices = default_prices(dataset.models, dict(args.price))
    except InvalidInput as e:
        parser.error(str(e))
    quality = {k: v for k, v in (("target", args.quality_target), ("explore_share", args.explore_share))
               if v is not None}
    main_run, forced, notes = anyio.run(lambda: run_all(dataset, prices, strategy=args.strategy,
                                                        rate_share=args.rate_share, noisy=args.noisy_ratings,
                                                        seed=args.seed, quality=quality))
    summary = report(dataset, main_run, forced, seed=args.seed)
    wall = time.perf_counter() - t0
    summary |= {"seed": args.seed, "dataset": str(args.dataset) if args.dataset else "generated",
                "prices": {m: f"{p.provider}:{p.model}" for m, p in prices.items()}, "notes": notes,
                "wall_seconds": round(wall, 2),
                "run_seconds": {r.name: round(r.seconds, 2) for r in (main_run, *forced)}}
    src = args.dataset or f"generated (seed {args.seed})"
    print(f"{len(dataset.tasks)} tasks from {src}; models "
          + ", ".join(f"{m} (priced as {p.provider}:{p.model})" for m, p in prices.items()))
    print(f"router strategy {main_run.strategy}; {len(main_run.scores)} answers rated")
    for note in notes:
        print(f"note: {note}")
    print("\nall tasks")
    print(_table(summary["parts"]["all"], dataset.models))
    print(f"\nafter the first {summary['learning_tasks']} tasks (the learning phase)")
    print(_table(summary["parts"]["after_learning"], dataset.models))
    print("\n% strong: of always using the strongest model; gap rec.: share of the quality gap from always-weakest"
          " to always-strongest recovered;\n% oracle: cost against the oracle's at the same quality")
    calls = len(dataset.tasks) * (1 + len(forced))
    print(f"\nwall time {wall:.1f} s ({calls} complete calls; "
          + ", ".join(f"{r.name} {r.seconds:.1f} s" for r in (main_run, *forced)) + ")")
    if args.csv_out:
        write_per_task(args.csv_out, dataset, main_run, forced, args.seed)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
