"""What the router costs on the path of a call, against a floor measured in the same run.

    python bench/run.py [--calls N] [--quick] [--concurrency C] [--cold-runs K] [--servers S] [--no-mcp] [--no-litellm]

Starts a loopback OpenAI-compatible upstream (``bench/upstream.py``) in its own process, then
prints, side by side:

* in-process: ``Engine.complete`` (route → reserve in SQLite → call → settle + ledger row) versus
  one pooled ``httpx.AsyncClient`` posting the same JSON — p50/p99 and the difference;
* the same, streamed (what the MCP ``complete`` tool asks the engine for);
* structured calls (``bench/structured.py``): the same call with a json_schema
  ``response_format``, or with 3 tools, against it plain, and the checks alone;
* adaptive routing (``bench/adaptive.py``): the same call ranked by ``adaptive`` (with estimates to
  plan from) and by ``balanced``, and the choice alone;
* telemetry (``bench/telemetry.py``): the same call with spans exported over OTLP/HTTP to a
  loopback collector, and with telemetry off;
* over MCP (stdio): our ``complete`` tool versus a bare MCPServer tool (``bench/bare_server.py``),
  and versus the same bare server on the router's stdio transport (so the router's own work shows
  apart from what its transport saves), the calls spread over S processes of each (default 3);
* cold start: process start to the first ``tools/list`` answer, ours versus the bare server;
* concurrency: C concurrent ``Engine.complete`` calls — wall time, throughput, errors, ledger rows;
* when ``litellm`` is importable: ``litellm.Router.acompletion`` versus the same floor (in a
  separate process, so its imports and background machinery do not disturb the other figures).

Timings are reported, never asserted. Calls inside a comparison are interleaved (ours, floor,
floor, ours, ...) so both see the same machine. Everything is bounded and loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

HERE = Path(__file__).resolve().parent
MODEL = "bench-model"
PROVIDER = "local"
PROMPT = "Summarise in one sentence: the router must cost next to nothing on the path of every call."
MAX_TOKENS = 256
PHASE_TIMEOUT_S = 120.0


# -- statistics -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(1, math.ceil(q / 100 * len(s)))
    return s[k - 1]


@dataclass
class Series:
    name: str
    seconds: list[float]

    @property
    def p50(self) -> float:
        return pct(self.seconds, 50) * 1e3

    @property
    def p99(self) -> float:
        return pct(self.seconds, 99) * 1e3

    @property
    def mean(self) -> float:
        return statistics.fmean(self.seconds) * 1e3


def paired_median_ms(ours: Series, floor: Series) -> float:
    return statistics.median(a - b for a, b in zip(ours.seconds, floor.seconds, strict=True)) * 1e3


async def interleaved(
    n: int, ours: Callable[[], Awaitable[Any]], floor: Callable[[], Awaitable[Any]], names: tuple[str, str]
) -> tuple[Series, Series]:
    """n calls of each, alternating which goes first, so drift and noise hit both alike."""
    a: list[float] = []
    b: list[float] = []
    clock = time.perf_counter
    for i in range(n):
        order = ((ours, a), (floor, b)) if i % 2 == 0 else ((floor, b), (ours, a))
        for fn, out in order:
            t0 = clock()
            await fn()
            out.append(clock() - t0)
    return Series(names[0], a), Series(names[1], b)


# -- set-up ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def upstream() -> Iterator[str]:
    """The loopback upstream in its own process; yields its base URL (ending in /v1)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py"), "--max-seconds", "600"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"the upstream did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        if proc.stdin:
            proc.stdin.close()  # the upstream stops when its stdin closes
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_config(
    folder: Path,
    name: str,
    base_url: str,
    *,
    model: str = MODEL,
    genai_priced: bool = False,
    capabilities: tuple[str, ...] = (),
) -> Path:
    """One openai-kind provider on the upstream, priced, with daily and monthly limits (so every
    call reserves), and its own ledger file.

    ``genai_priced``: give no ``[providers.prices]`` and price ``model`` from genai-prices (as
    every hosted model is priced), with ``pricing_provider = "openai"``. ``capabilities``: what
    the model is configured to take beyond the loopback (openai-local) default."""
    path = folder / f"{name}.toml"
    pricing = (
        'pricing_provider = "openai"\n'
        if genai_priced
        else f'[providers.prices."{model}"]\ninput_per_mtok = 0.15\noutput_per_mtok = 0.60\n'
    )
    path.write_text(
        f"""\
[ledger]
path = "{(folder / f"{name}.db").as_posix()}"

[[providers]]
name = "{PROVIDER}"
kind = "openai"
base_url = "{base_url}"
models = ["{model}"]
timeout_s = 30
{pricing}[providers.model_overrides."{model}"]
tier = "medium"
context_window = 128000
{_capabilities_line(capabilities)}
[budget]
daily_usd = 1000.0
monthly_usd = 10000.0
per_request_usd = 1.0
""",
        encoding="utf-8",
    )
    return path


def _capabilities_line(names: tuple[str, ...]) -> str:
    """Capabilities added to the model's default (the table form adds; a list would replace)."""
    return "capabilities = {" + ", ".join(f"{n} = true" for n in names) + "}\n" if names else ""


def ledger_file(config: Path) -> Path:
    return config.with_suffix(".db")


def count_rows(db: Path) -> tuple[int, int]:
    """(request rows, open reservations) read straight from the file."""
    with contextlib.closing(sqlite3.connect(db)) as c:
        rows = c.execute("SELECT count(*) FROM requests").fetchone()[0]
        held = c.execute("SELECT count(*) FROM reservations").fetchone()[0]
    return rows, held


def direct_body() -> dict[str, Any]:
    """The very JSON the openai adapter sends for this call."""
    return {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}


def pooled_client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
    )


def floor_calls(
    client: httpx.AsyncClient,
) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]:
    """(plain, streamed): a direct call that reads and decodes the answer, as an adapter must."""
    body = direct_body()
    stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}

    async def plain() -> Any:
        r = await client.post("/chat/completions", json=body)
        r.raise_for_status()
        data = r.json()
        return data["choices"][0]["message"]["content"], data["usage"]

    async def streamed() -> Any:
        parts = []
        async with client.stream("POST", "/chat/completions", json=stream_body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    for ch in chunk.get("choices") or ():
                        parts.append(ch["delta"].get("content") or "")
        return "".join(parts)

    return plain, streamed


def standalone(description: str, in_process: Callable[[str, Path, int, int], Awaitable[Any]]) -> tuple[Any, int]:
    """Run one in-process section alone (``bench/structured.py``, ``bench/adaptive.py``): its
    ``--calls``/``--quick`` flags, the loopback upstream, a temporary folder; its result and N."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--calls", type=int, default=None, help="calls per series (default 400; 100 with --quick)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    n = max(10, min(a.calls or (100 if a.quick else 400), 5000))
    warmup = 20 if a.quick else 50
    with tempfile.TemporaryDirectory(prefix="llm-router-bench-") as tmp, upstream() as base_url:

        async def phase() -> Any:
            with anyio.fail_after(PHASE_TIMEOUT_S):
                return await in_process(base_url, Path(tmp), n, warmup)

        return anyio.run(phase), n


# -- phases ---------------------------------------------------------------------------------------


GENAI_MODEL = "gpt-4o-mini"


async def in_process(base_url: str, folder: Path, n: int, warmup: int) -> dict[str, Any]:
    from llm_router.calls import CompleteArgs
    from llm_router.config import load_settings
    from llm_router.engine import Engine

    cfg = write_config(folder, "inproc", base_url)
    gcfg = write_config(folder, "inproc-genai", base_url, model=GENAI_MODEL, genai_priced=True)
    engine = Engine(load_settings(cfg))
    gengine = Engine(load_settings(gcfg))
    args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS)

    async def ours() -> Any:
        return await engine.complete(args)

    async def ours_genai() -> Any:
        return await gengine.complete(args)

    async def _progress(_v: float, _t: float | None, _m: str) -> None:
        return None

    async def ours_streamed() -> Any:
        return await engine.complete(args, progress=_progress)

    try:
        async with pooled_client(base_url) as client:
            plain, streamed = floor_calls(client)
            first = await ours()
            assert first.text and first.provider == PROVIDER, first
            price_source = next(iter(gengine.catalog)).price_source
            for _ in range(warmup):
                await ours()
                await plain()
                await ours_streamed()
                await streamed()
                await ours_genai()
            a, b = await interleaved(n, ours, plain, ("Engine.complete", "direct httpx"))
            c, d = await interleaved(
                n, ours_streamed, streamed, ("Engine.complete, streamed", "direct httpx, streamed")
            )
            e, f = await interleaved(
                n, ours_genai, plain, (f"Engine.complete, {GENAI_MODEL}", "direct httpx")
            )
    finally:
        await engine.aclose()
        await gengine.aclose()
    rows, held = count_rows(ledger_file(cfg))
    return {
        "plain": (a, b),
        "streamed": (c, d),
        "genai": (e, f),
        "price_source": price_source,
        "rows": rows,
        "held": held,
        "expected_rows": 1 + 2 * warmup + 2 * n,
    }


async def concurrency(base_url: str, folder: Path, c: int, bursts: int) -> dict[str, Any]:
    from llm_router.calls import CompleteArgs
    from llm_router.config import load_settings
    from llm_router.engine import Engine

    cfg = write_config(folder, "concurrent", base_url)
    db = ledger_file(cfg)
    engine = Engine(load_settings(cfg))
    args = CompleteArgs(prompt=PROMPT, max_tokens=MAX_TOKENS)

    async def one(fn: Callable[[], Awaitable[Any]], errs: list[str]) -> None:
        try:
            await fn()
        except Exception as e:  # noqa: BLE001 — counted and shown, never raised
            errs.append(f"{type(e).__name__}: {e}")

    async def burst(fn: Callable[[], Awaitable[Any]], errs: list[str]) -> float:
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(c):
                tg.start_soon(one, fn, errs)
        return time.perf_counter() - t0

    async def ours() -> Any:
        return await engine.complete(args)

    walls: list[float] = []
    floor_walls: list[float] = []
    errors: list[str] = []
    floor_errors: list[str] = []
    rows_per_burst: list[int] = []
    try:
        async with pooled_client(base_url) as client:
            plain, _ = floor_calls(client)
            warm: list[str] = []
            await burst(plain, warm)  # both pools warm, outside the figures
            await burst(ours, warm)
            for i in range(bursts):
                for kind in ("ours", "floor") if i % 2 == 0 else ("floor", "ours"):
                    if kind == "ours":
                        before, _ = count_rows(db)
                        walls.append(await burst(ours, errors))
                        rows_per_burst.append(count_rows(db)[0] - before)
                    else:
                        floor_walls.append(await burst(plain, floor_errors))
    finally:
        await engine.aclose()
    _, held = count_rows(db)
    return {
        "walls": walls,
        "floor_walls": floor_walls,
        "errors": errors,
        "floor_errors": floor_errors,
        "rows_per_burst": rows_per_burst,
        "held": held,
    }


def stdio_params(kind: str, cfg: Path, base_url: str) -> Any:
    """``ours``: the router; ``bare``: the bare server on the SDK's stdio transport; ``bare-io``: the
    same bare server on the router's stdio transport."""
    from mcp.client.stdio import StdioServerParameters

    if kind == "ours":
        return StdioServerParameters(
            command=sys.executable, args=["-m", "llm_router", "serve", "--config", str(cfg)]
        )
    env = {"BENCH_UPSTREAM_URL": base_url, "BENCH_MODEL": MODEL}
    if kind == "bare-io":
        env["BENCH_BARE_STDIO"] = "router"
    return StdioServerParameters(command=sys.executable, args=[str(HERE / "bare_server.py")], env=env)


@contextlib.asynccontextmanager
async def mcp_client(kind: str, cfg: Path, base_url: str) -> AsyncIterator[Any]:
    """A real MCP client session over stdio; the server's stderr goes to a log beside the config."""
    from mcp import Client
    from mcp.client.stdio import stdio_client

    with open(cfg.parent / f"{kind}-stderr.log", "a", encoding="utf-8") as errlog:  # noqa: ASYNC230
        async with Client(stdio_client(stdio_params(kind, cfg, base_url), errlog=errlog)) as client:
            yield client


MCP_KINDS = ("ours", "bare", "bare-io")


async def over_mcp(base_url: str, folder: Path, n: int, warmup: int, servers: int) -> dict[str, Any]:
    """n calls to each kind of server (``MCP_KINDS``), spread over ``servers`` processes of each
    kind (each of ours with its own ledger): one process's luck (its memory layout, its core) moves
    a median by several per cent, so no single process decides a ratio."""
    cfgs = [write_config(folder, f"mcp{i}", base_url) for i in range(servers)]
    call = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
    kinds = len(MCP_KINDS)

    def caller(client: Any) -> Callable[[], Awaitable[Any]]:
        async def one() -> Any:
            r = await client.call_tool("complete", call)
            if r.is_error:
                raise RuntimeError(r.content[0].text)
            return r

        return one

    async with contextlib.AsyncExitStack() as stack:
        # sets[s][k]: server process s of kind MCP_KINDS[k]
        sets = [
            [caller(await stack.enter_async_context(mcp_client(kind, cfg, base_url))) for kind in MCP_KINDS]
            for cfg in cfgs
        ]
        for fns in sets:
            for _ in range(warmup):
                for fn in fns:
                    await fn()
        times: list[list[float]] = [[] for _ in MCP_KINDS]
        per_server: list[list[list[float]]] = [[[] for _ in MCP_KINDS] for _ in sets]
        clock = time.perf_counter
        for i in range(n):
            s = i % len(sets)
            turn = (i // len(sets)) % kinds  # who goes first rotates
            for k in (*range(turn, kinds), *range(turn)):
                t0 = clock()
                await sets[s][k]()
                dt = clock() - t0
                times[k].append(dt)
                per_server[s][k].append(dt)
    counts = [count_rows(ledger_file(cfg)) for cfg in cfgs]
    return {
        "ours": Series("llm-router complete", times[0]),
        "bare": Series("bare MCPServer tool", times[1]),
        "bare-io": Series("the same on the router's stdio", times[2]),
        "per_server": [tuple(statistics.median(x) for x in server) for server in per_server],
        "rows": sum(r for r, _ in counts),
        "held": sum(h for _, h in counts),
        "expected_rows": servers * warmup + n,
    }


async def cold_start(base_url: str, folder: Path, runs: int) -> dict[str, Any]:
    cfg = write_config(folder, "cold", base_url)
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    for i in range(runs):
        for kind in ("ours", "bare") if i % 2 == 0 else ("bare", "ours"):
            t0 = time.perf_counter()
            async with mcp_client(kind, cfg, base_url) as c:
                tools = await c.list_tools()
                times[kind].append(time.perf_counter() - t0)
                assert tools.tools
    # A floor under both: the interpreter alone.
    interp = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await anyio.run_process([sys.executable, "-c", "pass"], check=True)
        interp.append(time.perf_counter() - t0)
    return {"ours": times["ours"], "bare": times["bare"], "python": interp}


def litellm_worker(base_url: str, n: int, warmup: int) -> None:
    """Runs in its own process: litellm.Router.acompletion versus the direct floor; JSON on stdout."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    router = litellm.Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": base_url,
                    "api_key": "sk-bench-local",
                },
            }
        ],
        num_retries=0,
    )
    messages = [{"role": "user", "content": PROMPT}]

    async def main() -> dict[str, Any]:
        async with pooled_client(base_url) as client:
            plain, _ = floor_calls(client)

            async def theirs() -> Any:
                r = await router.acompletion(model="bench", messages=messages, max_tokens=MAX_TOKENS)
                return r.choices[0].message.content

            assert await theirs()
            for _ in range(warmup):
                await theirs()
                await plain()
            a, b = await interleaved(n, theirs, plain, ("litellm Router.acompletion", "direct httpx"))
        return {
            "ours": a.seconds,
            "floor": b.seconds,
            "version": getattr(litellm, "__version__", None) or _dist_version("litellm"),
        }

    print(json.dumps(anyio.run(main)))


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name)
    except ValueError:  # PackageNotFoundError is a ValueError
        return "?"


def litellm_phase(base_url: str, n: int, warmup: int) -> dict[str, Any] | str:
    import importlib.util

    if importlib.util.find_spec("litellm") is None:
        return "litellm is not installed (pip install litellm to add this row)"
    try:
        out = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--litellm-worker",
                base_url,
                "--calls",
                str(n),
                "--warmup",
                str(warmup),
            ],
            capture_output=True,
            text=True,
            timeout=PHASE_TIMEOUT_S,
            check=False,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        )
    except subprocess.TimeoutExpired:
        return f"litellm: gave up after {PHASE_TIMEOUT_S:.0f} s"
    if out.returncode != 0:
        return "litellm failed: " + (out.stderr.strip().splitlines() or ["(no output)"])[-1]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["pair"] = (
        Series("litellm Router.acompletion", data.pop("ours")),
        Series("direct httpx", data.pop("floor")),
    )
    return data


# -- printing -------------------------------------------------------------------------------------


def fmt_ms(ms: float) -> str:
    return f"{ms:8.3f}"


def print_pair(ours: Series, floor: Series, *, overhead: bool = True) -> None:
    print(
        f"  {ours.name:<34} p50 {fmt_ms(ours.p50)} ms   p99 {fmt_ms(ours.p99)} ms   mean {fmt_ms(ours.mean)} ms"
    )
    print(
        f"  {floor.name:<34} p50 {fmt_ms(floor.p50)} ms   p99 {fmt_ms(floor.p99)} ms   mean {fmt_ms(floor.mean)} ms"
    )
    if overhead:
        print(
            f"  {'→ overhead over the floor':<34} p50 {fmt_ms(ours.p50 - floor.p50)} ms   p99 {fmt_ms(ours.p99 - floor.p99)} ms"
            f"   paired median {paired_median_ms(ours, floor):.3f} ms   ratio p50 {ours.p50 / floor.p50:.2f}×"
        )
    else:
        print(
            f"  {'→ ratio (ours / floor)':<34} p50 {ours.p50 / floor.p50:8.2f} ×    p99 {ours.p99 / floor.p99:8.2f} ×"
            f"    (Δ p50 {ours.p50 - floor.p50:.3f} ms)"
        )


def main() -> int:
    p = argparse.ArgumentParser(description="llm-router-mcp overhead benchmark (loopback only)")
    p.add_argument(
        "--calls", type=int, default=None, help="sequential calls per series (default 400; 100 with --quick)"
    )
    p.add_argument("--quick", action="store_true", help="fewer calls and cold-start runs (a smoke run)")
    p.add_argument("--concurrency", type=int, default=200, help="concurrent engine calls (default 200)")
    p.add_argument(
        "--cold-runs", type=int, default=None, help="cold starts per server (default 5; 3 with --quick)"
    )
    p.add_argument("--no-mcp", action="store_true", help="skip the MCP and cold-start sections")
    p.add_argument(
        "--servers", type=int, default=None, help="server processes of each kind for the MCP series (default 3; 1 with --quick)"
    )
    p.add_argument("--no-litellm", action="store_true", help="skip the litellm row")
    p.add_argument("--litellm-worker", metavar="BASE_URL", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    n = max(10, min(a.calls or (100 if a.quick else 400), 5000))
    warmup = a.warmup if a.warmup is not None else (20 if a.quick else 50)
    cold_runs = max(1, min(a.cold_runs or (3 if a.quick else 5), 20))
    conc = max(1, min(a.concurrency, 1000))
    bursts = 2 if a.quick else 3
    servers = max(1, min(a.servers or (1 if a.quick else 3), 8))

    if a.litellm_worker:
        litellm_worker(a.litellm_worker, n, warmup)
        return 0

    os.environ.pop("LLM_ROUTER_DB", None)  # the configs below name their own ledger files
    os.environ.pop("LLM_ROUTER_CONFIG", None)
    t_start = time.perf_counter()
    print(
        f"llm-router-mcp overhead benchmark — Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; N={n} sequential calls per series, warm-up {warmup}"
    )
    print(
        f"upstream: bench/upstream.py (asyncio HTTP/1.1 keep-alive, separate process, 127.0.0.1); prompt {len(PROMPT)} chars\n"
    )

    with tempfile.TemporaryDirectory(prefix="llm-router-bench-") as tmp, upstream() as base_url:
        folder = Path(tmp)

        async def phase(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
            with anyio.fail_after(PHASE_TIMEOUT_S):
                return await fn(*args)

        # 1. In-process.
        r = anyio.run(phase, in_process, base_url, folder, n, warmup)
        print(
            "1. In-process, sequential: one call end to end (validate → route → reserve → HTTP → settle + ledger row)"
        )
        print_pair(*r["plain"])
        print(
            "  the same, streamed upstream (what the `complete` tool does when the client asks for progress):"
        )
        print_pair(*r["streamed"])
        print(
            f"  the same, on a model priced by genai-prices ({r['price_source']}), as every hosted model is:"
        )
        print_pair(*r["genai"])
        print(
            f"  ledger: {r['rows']} rows written (expected {r['expected_rows']}), {r['held']} reservations left open\n"
        )

        # 1b. Structured calls (bench/structured.py, also run alone).
        import structured

        sr = anyio.run(phase, structured.in_process, base_url, folder, n, warmup)
        structured.print_section(sr, structured.validation_alone(), f"1b. {structured.SECTION_TITLE}")

        # 1c. Adaptive routing against balanced (bench/adaptive.py, also run alone).
        import adaptive

        ar = anyio.run(phase, adaptive.in_process, base_url, folder, n, warmup)
        adaptive.print_section(ar, f"1c. {adaptive.SECTION_TITLE}")

        # 1d. Telemetry on against off (bench/telemetry.py, also run alone).
        import telemetry

        tr = anyio.run(phase, telemetry.in_process, base_url, folder, n, warmup)
        telemetry.print_section(tr, f"1d. {telemetry.SECTION_TITLE}")

        # 2. litellm.
        if not a.no_litellm:
            lr = litellm_phase(base_url, n, warmup)
            print(
                "2. For comparison, in-process: litellm.Router.acompletion against the same upstream (own process)"
            )
            if isinstance(lr, str):
                print(f"  skipped: {lr}\n")
            else:
                print(f"  (litellm {lr['version']}; no budget, no durable ledger)")
                print_pair(*lr["pair"])
                ours, floor = r["plain"]
                print(
                    f"  → llm-router overhead p50 {ours.p50 - floor.p50:.3f} ms vs litellm overhead p50 "
                    f"{lr['pair'][0].p50 - lr['pair'][1].p50:.3f} ms\n"
                )

        # 3. Over MCP.
        if not a.no_mcp:
            try:
                m = anyio.run(phase, over_mcp, base_url, folder, n, warmup, servers)
            except BaseException:
                for log in sorted(folder.glob("*-stderr.log")):
                    print(
                        f"--- {log.name} (last lines) ---\n" + "\n".join(log.read_text().splitlines()[-15:]),
                        file=sys.stderr,
                    )
                raise
            print(
                "3. Over MCP (stdio, real client, sequential `complete` tool calls, no progress asked: neither streams;"
                f" {servers} processes of each, calls spread over them)"
            )
            print_pair(m["ours"], m["bare"], overhead=False)
            io = m["bare-io"]
            print(
                f"  {io.name:<34} p50 {fmt_ms(io.p50)} ms   p99 {fmt_ms(io.p99)} ms   mean {fmt_ms(io.mean)} ms"
            )
            print(
                f"  {'→ ratio to it (the router alone)':<34} p50 {m['ours'].p50 / io.p50:8.2f} ×    "
                f"p99 {m['ours'].p99 / io.p99:8.2f} ×    (Δ p50 {m['ours'].p50 - io.p50:.3f} ms; "
                f"the router's transport saves {m['bare'].p50 - io.p50:.3f} ms a call)"
            )
            print(
                "  per process, p50 ours / bare / bare on our stdio: "
                + ", ".join(f"{x * 1e3:.2f}/{y * 1e3:.2f}/{z * 1e3:.2f} ms ({x / y:.2f}×)" for x, y, z in m["per_server"])
            )
            print(
                f"  ledger: {m['rows']} rows written (expected {m['expected_rows']}), {m['held']} reservations left open\n"
            )

            # 4. Cold start.
            cs = anyio.run(phase, cold_start, base_url, folder, cold_runs)
            med = {k: statistics.median(v) * 1e3 for k, v in cs.items()}
            print(f"4. Cold start: process start → first tools/list answer (median of {cold_runs})")
            print(
                f"  {'llm-router-mcp serve':<34} {med['ours']:8.0f} ms   (runs: {', '.join(f'{x * 1e3:.0f}' for x in cs['ours'])})"
            )
            print(
                f"  {'bare MCPServer':<34} {med['bare']:8.0f} ms   (runs: {', '.join(f'{x * 1e3:.0f}' for x in cs['bare'])})"
            )
            print(f"  {'python -c pass (interpreter)':<34} {med['python']:8.0f} ms")
            print(
                f"  → ours − bare {med['ours'] - med['bare']:.0f} ms, ratio {med['ours'] / med['bare']:.2f}×\n"
            )

        # 5. Concurrency.
        cr = anyio.run(phase, concurrency, base_url, folder, conc, bursts)
        wall, fwall = statistics.median(cr["walls"]), statistics.median(cr["floor_walls"])
        print(
            f"5. Concurrency: {conc} concurrent calls in one burst (median of {bursts} bursts, pools warm, same pool limits)"
        )
        print(
            f"  {'Engine.complete':<34} wall {wall * 1e3:8.1f} ms   {conc / wall:8.0f} calls/s   "
            f"errors {len(cr['errors'])}   (bursts: {', '.join(f'{w * 1e3:.0f}' for w in cr['walls'])} ms)"
        )
        print(
            f"  {'direct httpx (floor)':<34} wall {fwall * 1e3:8.1f} ms   {conc / fwall:8.0f} calls/s   "
            f"errors {len(cr['floor_errors'])}   (bursts: {', '.join(f'{w * 1e3:.0f}' for w in cr['floor_walls'])} ms)"
        )
        ok = all(r == conc for r in cr["rows_per_burst"])
        print(
            f"  ledger: rows per burst {cr['rows_per_burst']} (expected {conc} each: {'OK' if ok else 'MISMATCH'}), "
            f"{cr['held']} reservations left open"
        )
        for e in sorted(set(cr["errors"]))[:5]:
            print(f"    error: {e}")
        print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
