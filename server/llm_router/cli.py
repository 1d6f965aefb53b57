"""Command line: ``serve`` (the default) | ``demo`` | ``report`` | ``check``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .types import ConfigError, RouterError

__all__ = ["main"]


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .config import load_settings, settings_from_dict
    from .defaults import demo_config

    if getattr(args, "demo", False):
        ledger = getattr(args, "ledger", None) or os.environ.get("LLM_ROUTER_DB") or str(
            Path(tempfile.gettempdir()) / "llm-router-demo.db"
        )
        # A provider whose key is set is served by its real adapter; the rest are mocks.
        return settings_from_dict(demo_config(ledger, os.environ), source="built-in demo configuration")
    return load_settings(args.config)


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from .engine import Engine
    from .redaction import Redactor

    settings = _settings(args)
    redact = Redactor.from_environment(settings)
    if args.transport == "http":
        # Checked before anything is opened: a refusal leaves no trace.
        from .http_app import check_bind, load_tokens

        tokens = load_tokens()
        check_bind(args.host, tokens)
        redact.add(*tokens.values)

    # One log line per upstream request is noise in a client's server log, and costs time per call.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def run() -> None:
        engine = Engine(settings)
        try:
            if args.transport == "http":
                from .http_app import serve_http

                await serve_http(engine, host=args.host, port=args.port, tokens=tokens, http=settings.http, redact=redact)
            else:
                from .mcp_server import create_server
                from .stdio import serve_stdio

                server = create_server(engine, redact=redact)
                redact.install()
                # What start-up built lives as long as the server: out of every later collection
                # (a full one otherwise walks it all, a pause of tens of milliseconds).
                gc.freeze()
                await serve_stdio(server)
        finally:
            await engine.aclose()

    anyio.run(run)
    return 0


def _check(args: argparse.Namespace) -> int:
    import anyio

    from .catalog import Catalog
    from .ledger import ledger_location
    from .providers import availability, build_provider
    from .redaction import Redactor

    settings = _settings(args)
    redact = Redactor.from_environment(settings)

    def say(line: str) -> None:
        print(redact(line))

    say(f"config: {settings.source}")
    say(f"ledger: {ledger_location(settings)}")
    _check_http_tokens(say)
    if not settings.providers:
        say("no provider is configured or has its key set: set ANTHROPIC_API_KEY, OPENAI_API_KEY, "
            "GEMINI_API_KEY or OLLAMA_HOST, or write a config file (see README)")
        return 1
    catalog = Catalog(settings)
    usable_count = 0

    async def probe_all() -> None:
        nonlocal usable_count
        for cfg in settings.providers:
            usable, why = availability(cfg)
            label = f" — {cfg.mock.imitates}" if cfg.mock and cfg.mock.imitates else ""
            line = f"{cfg.name} ({cfg.kind}{label}): "
            if usable and not args.offline:
                provider = build_provider(cfg)
                try:
                    with anyio.move_on_after(cfg.timeout_s):
                        result = await provider.probe()
                        usable = result.ok
                        why = result.detail
                finally:
                    await provider.aclose()
            usable_count += usable
            say(line + ("usable" if usable else "NOT usable") + f" — {why}")
            for entry in catalog:
                if entry.provider == cfg.name:
                    price = "no price" if entry.prices is None else f"${entry.prices.input}/${entry.prices.output} per Mtok"
                    say(f"    {entry.ref}: tier {entry.tier}, {entry.context_window} tokens, {price} ({entry.price_source})")

    anyio.run(probe_all)
    return 0 if usable_count else 1


def _check_http_tokens(say: Any) -> None:
    """The HTTP bearer tokens, when set: how many and their tags (never the tokens)."""
    from .http_app import TOKENS_ENV, TOKENS_FILE_ENV, load_tokens

    if not (os.environ.get(TOKENS_ENV) or os.environ.get(TOKENS_FILE_ENV)):
        return
    try:
        tokens = load_tokens()
    except ConfigError as e:
        say(f"http tokens: NOT usable — {e}")
    else:
        say(f"http tokens: {len(tokens)}, for tag(s) {', '.join(tokens.tags)}")


def _report(args: argparse.Namespace) -> int:
    import anyio

    from .engine import Engine

    settings = _settings(args)

    async def run() -> Any:
        engine = Engine(settings, providers={})
        try:
            return await engine.cost_report(period=args.period, group_by=args.group_by, since=args.since, until=args.until)
        finally:
            await engine.aclose()

    report = anyio.run(run)
    p = report.period
    print(f"Spend {p['name']} ({p['first_day']} .. {p['last_day']}, {p['timezone']})")
    width = max([len(str(r[args.group_by] or "(none)")) for r in report.rows] + [len(args.group_by), 5])
    print(f"{args.group_by:<{width}}  {'calls':>7}  {'errors':>6}  {'in tok':>10}  {'out tok':>10}  {'cost USD':>14}")
    for r in report.rows:
        print(f"{r[args.group_by] or '(none)'!s:<{width}}  {r['requests']:>7}  {r['errors']:>6}  {r['input_tokens']:>10}  "
              f"{r['output_tokens']:>10}  {r['cost_usd']:>14}")
    t = report.totals
    print(f"{'total':<{width}}  {t['requests']:>7}  {t['errors']:>6}  {t['input_tokens']:>10}  {t['output_tokens']:>10}  {t['cost_usd']:>14}")
    print(f"month-end projection: ${report.projection['month_end_usd']} ({report.projection['method']})")
    for b in report.budgets:
        if "spent_usd" in b:
            print(f"budget {b['scope']} {b['period']}: ${b['spent_usd']} of ${b['limit_usd']} spent, "
                  f"${b['reserved_usd']} held, resets {b['resets_at']}")
        else:
            print(f"budget {b['scope']} {b['period']}: ${b['limit_usd']} per call")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(ledger=args.ledger)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-router-mcp",
        description="An MCP server that routes LLM work to the right model within a hard budget.",
    )
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="config file (default: $LLM_ROUTER_CONFIG, then the platform config folder)")
        p.add_argument("--demo", action="store_true", help="use the built-in demo configuration (mock providers)")
        p.add_argument("--ledger", help="with --demo: the ledger file to use")

    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    common(serve)
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1",
                       help="HTTP: address to listen on (default 127.0.0.1; any other needs bearer tokens)")
    serve.add_argument("--port", type=int, default=8765, help="HTTP: port (default 8765)")
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="drive every tool and resource on mock providers (no keys, no network)")
    demo.add_argument("--ledger", help="keep the demo ledger in this file (default: a temporary one)")
    demo.set_defaults(func=_demo)

    report = sub.add_parser("report", help="the spend table")
    common(report)
    report.add_argument("--period", choices=["today", "yesterday", "this_week", "this_month", "last_7_days", "last_30_days"])
    report.add_argument("--since", help="first day, YYYY-MM-DD")
    report.add_argument("--until", help="last day, YYYY-MM-DD")
    report.add_argument("--group-by", default="provider", choices=["provider", "model", "task_type", "tag", "day"])
    report.set_defaults(func=_report)

    check = sub.add_parser("check", help="validate the config and say which providers are usable")
    common(check)
    check.add_argument("--offline", action="store_true", help="do not probe the providers over the network")
    check.set_defaults(func=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("serve", "demo", "report", "check", "-h", "--help"):
        argv = ["serve", *argv]  # a client entry needs no arguments: serving over stdio is the default
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except RouterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `llm-router-mcp report | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
