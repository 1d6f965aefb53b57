"""Command line: ``serve`` (the default) | ``demo`` | ``report`` | ``check``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .types import EMPTY_GROUP, ConfigError, RouterError, plural

if TYPE_CHECKING:
    from .config import Settings
    from .redaction import Redactor

__all__ = ["main"]

_COMMANDS = ("serve", "demo", "report", "check")


def _settings(args: argparse.Namespace) -> Settings:
    from .config import load_settings, settings_from_dict
    from .defaults import demo_config

    if getattr(args, "demo", False):
        # Mock providers and a ledger of the demo's own, whatever keys, base URLs or ledger
        # variables are set: the demo never reaches the network nor writes to a real ledger.
        ledger = getattr(args, "ledger", None) or str(Path(tempfile.gettempdir()) / "llm-router-demo.db")
        return settings_from_dict(demo_config(ledger), source="built-in demo configuration", demo=True)
    return load_settings(args.config)


# What an empty group means in the spend table: a call refused before any model was asked has
# no provider and no model; a call may name no task type and bill no tag.
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

    _configure_logging(args.log_level, redact)

    async def run() -> None:
        engine = Engine(settings)
        try:
            if args.transport == "http":
                from .http_app import serve_http

                await serve_http(engine, host=args.host, port=args.port, tokens=tokens, http=settings.http, redact=redact,
                                 log_level=args.log_level)
            else:
                from .mcp_server import create_server
                from .stdio import serve_stdio

                server = create_server(engine, redact=redact)
                if sys.stdin.isatty():
                    _say_waiting(settings)
                # What start-up built lives as long as the server: out of every later collection
                # (a full one otherwise walks it all, a pause of tens of milliseconds).
                gc.freeze()
                await serve_stdio(server)
        finally:
            await engine.aclose()

    anyio.run(run)
    return 0


_QUIET_LOGGERS = ("httpx", "httpcore", "h11", "h2", "hpack")
"""Loggers kept at WARNING whatever the level asked: httpx logs each request's URL at INFO, and
httpcore each request and the raw response headers at DEBUG (an upstream that echoes the key in
a header would have it printed); one line per upstream request is noise anyway, and costs time."""


def _configure_logging(level_name: str, redact: Redactor) -> None:
    """Logging to stderr at ``--log-level``, through the redacting filter from the first record
    on (the engine logs as it starts). Debug records say their level and logger."""
    level = getattr(logging, level_name.upper())
    fmt = "%(levelname)s %(name)s: %(message)s" if level <= logging.DEBUG else "%(message)s"
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=fmt)
        for handler in root.handlers:
            handler.setFormatter(_EventsBare(fmt))
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    redact.install(root)


class _EventsBare(logging.Formatter):
    """Events (fallbacks, budget warnings: ``mcp_notify.EVENTS_LOGGER``) as their one line of JSON
    at every level; every other record as the format says."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "llm_router.events":
            return record.getMessage()
        return super().format(record)


def _say_waiting(settings: Settings) -> None:
    """Someone ran the server by hand in a terminal: say what it is waiting for (stdout is the wire)."""
    demo = " on the demo's mock providers" if settings.demo else ""
    print(f"llm-router-mcp {__version__}: an MCP server{demo}, waiting for an MCP client on stdin "
          "(a client such as Claude Desktop starts it itself; see README).\n"
          "Press Ctrl-C to stop. To see it work: llm-router-mcp demo; to check a config: llm-router-mcp check.",
          file=sys.stderr, flush=True)


def _listed(model: str, served: set[str]) -> bool:
    """Whether a server's model list includes ``model``, allowing for the names servers list for
    an alias: Ollama's ``llama3.1`` is ``llama3.1:latest``; Anthropic lists ``claude-haiku-4-5``
    and ``claude-3-5-sonnet-latest`` by their dated ids (``...-20251001``)."""
    if model in served or (":" not in model and f"{model}:latest" in served):
        return True
    stem = model.removesuffix("-latest")
    return any(re.fullmatch(re.escape(stem) + r"-\d{8}", m) for m in served)


def _check(args: argparse.Namespace) -> int:
    import anyio

    from .catalog import Catalog
    from .config import ledger_path
    from .defaults import KNOWN_PROVIDERS
    from .ledger import ledger_location, ledger_url
    from .providers import availability, build_provider
    from .redaction import Redactor

    settings = _settings(args)
    redact = Redactor.from_environment(settings)

    def say(line: str) -> None:
        print(redact(line))

    say(f"config: {settings.source}")
    location = ledger_location(settings)
    if ledger_url(settings) is None and not ledger_path(settings).exists():
        location += " (does not exist yet: the server's first call creates it)"
    say(f"ledger: {location}")
    _check_http_tokens(say)
    if not settings.providers:
        say("no provider is configured or has its key set: set ANTHROPIC_API_KEY, OPENAI_API_KEY, "
            "GEMINI_API_KEY or OLLAMA_HOST (OPENAI_BASE_URL for a server of your own, such as vLLM or "
            "llama.cpp), or write a config file (see README)")
        return 1
    catalog = Catalog(settings)
    usable_count = 0
    unpriced: list[str] = []

    async def probe_all() -> None:
        nonlocal usable_count
        for cfg in settings.providers:
            usable, why = availability(cfg)
            if cfg.kind == "mock":
                label = f" — {cfg.mock.imitates}" if cfg.mock and cfg.mock.imitates else ""
            else:
                label = f" at {cfg.base_url or KNOWN_PROVIDERS[cfg.kind][1]}"
            line = f"{cfg.name} ({cfg.kind}{label}): "
            served: set[str] | None = None
            windows: dict[str, int] = {}  # what the server says of windows we only assume
            if usable and not args.offline:
                provider = build_provider(cfg)
                result = None
                try:
                    with anyio.move_on_after(cfg.timeout_s):
                        result = await provider.probe()
                    if result is not None and result.ok:
                        for entry in catalog:
                            if entry.provider == cfg.name and not entry.context_known:
                                with anyio.move_on_after(5):
                                    if (served_window := await provider.context_window(entry.model)) is not None:
                                        windows[entry.model] = served_window
                finally:
                    await provider.aclose()
                if result is None:
                    usable, why = False, f"no answer to a model-list request within timeout_s ({cfg.timeout_s:g} s)"
                else:
                    usable, why = result.ok, result.detail
                    if result.ok and cfg.kind != "mock":
                        served = set(result.models)
            usable_count += usable
            say(line + ("usable" if usable else "NOT usable") + f" — {why}")
            missing: list[str] = []
            for entry in catalog:
                if entry.provider != cfg.name:
                    continue
                if entry.prices is None:
                    price = "NO PRICE: never called, it could not be budgeted"
                    if cfg.enabled:
                        unpriced.append(entry.ref)
                else:
                    price = f"${entry.prices.input}/${entry.prices.output} per Mtok"
                unlisted = served is not None and not _listed(entry.model, served)
                if unlisted:
                    missing.append(entry.model)
                if entry.model in windows:
                    window = f"{windows[entry.model]} tokens (as the server runs it)"
                elif entry.context_known:
                    window = f"{entry.context_window} tokens"
                else:
                    window = f"{entry.context_window} tokens assumed (set model_overrides context_window)"
                say(f"    {entry.ref}: tier {entry.tier}, {window}, {price} ({entry.price_source})"
                    + (f"; NOT in {cfg.name}'s model list" if unlisted else ""))
            if missing and served is not None:
                shown = sorted(served)
                listed = ", ".join(shown[:12]) + (f" and {len(shown) - 12} more" if len(shown) > 12 else "")
                lenient = " (some servers, llama.cpp among them, answer any name)" if cfg.kind == "openai" else ""
                say(f"    {cfg.name} does not list {', '.join(missing)}: calls to "
                    f"{'it' if len(missing) == 1 else 'them'} may fail{lenient}. It lists: {listed or 'no models'}")

    anyio.run(probe_all)
    if unpriced:
        say(f"{plural(len(unpriced), 'model')} can never be called, having no price: {', '.join(unpriced)}. "
            'Give each a [providers.prices."MODEL"] table (input_per_mtok, output_per_mtok) in the config file, '
            "or remove it from models.")
        return 1
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
        roles = ", ".join(f"{n} {role}" for role, n in tokens.roles().items())
        say(f"http tokens: {len(tokens)} ({roles}), for tag(s) {', '.join(tokens.tags)}")


def _report(args: argparse.Namespace) -> int:
    import functools

    import anyio

    from .budget import Budget
    from .catalog import Catalog
    from .config import ledger_path
    from .ledger import ledger_url, open_ledger
    from .reports import cost_report

    settings = _settings(args)
    if ledger_url(settings) is None and not ledger_path(settings).exists():
        return _report_without_ledger(args, settings, ledger_path(settings))

    # Read only: no engine, whose start-up writes (its time zone check, a reclaim) waited for the
    # write lock (30 s, then failed "ledger busy") just when calls wait in the journal, which is
    # when a report must say so. A server re-files the days when the time zone changed.
    ledger = open_ledger(settings, upkeep=False)
    try:
        budget = Budget(settings.budget, ledger)
        ref = settings.routing.reference_model
        reference = Catalog(settings).entries.get(ref) if ref else None
        report = anyio.run(functools.partial(
            cost_report, ledger, budget, reference, period=args.period, group_by=args.group_by, since=args.since,
            until=args.until, where={},
        ))
        filed_in = ledger.meta("timezone")
    finally:
        ledger.close()
    if filed_in is not None and filed_in != budget.clock.tz_name:
        report.notes.append(f"the ledger's days are those of the time zone {filed_in}, not {budget.clock.tz_name} "
                            "as configured: the server re-files them when it next starts")
    p = report.period
    group = args.group_by
    empty = EMPTY_GROUP.get(group, "(none)")
    print(f"Spend {p['name']} ({p['first_day']} .. {p['last_day']}, {p['timezone']})")
    width = max([len(str(r[group] or empty)) for r in report.rows] + [len(group), 5])
    print(f"{group:<{width}}  {'calls':>7}  {'errors':>6}  {'in tok':>10}  {'out tok':>10}  {'cost USD':>14}")
    for r in report.rows:
        print(f"{r[group] or empty!s:<{width}}  {r['requests']:>7}  {r['errors']:>6}  {r['input_tokens']:>10}  "
              f"{r['output_tokens']:>10}  {r['cost_usd']:>14}")
    t = report.totals
    print(f"{'total':<{width}}  {t['requests']:>7}  {t['errors']:>6}  {t['input_tokens']:>10}  {t['output_tokens']:>10}  {t['cost_usd']:>14}")
    errors = f", {plural(t['errors'], 'error')}" if t["errors"] else ""
    print(f"${t['cost_usd']} over {plural(t['requests'], 'call')}{errors}")
    if t.get("estimated_requests"):
        print(f"of which ${t['estimated_cost_usd']} over {plural(t['estimated_requests'], 'call')} is estimated "
              "(the provider reported no usage)")
    for note in report.notes:  # calls waiting in the journal, say
        print(f"note: {note}")
    print(f"month-end projection: ${report.projection['month_end_usd']} ({report.projection['method']})")
    for b in report.budgets:
        if "spent_usd" in b:
            print(f"budget {b['scope']} {b['period']}: ${b['spent_usd']} of ${b['limit_usd']} spent, "
                  f"${b['reserved_usd']} held, resets {b['resets_at']}")
        else:
            print(f"budget {b['scope']} {b['period']}: ${b['limit_usd']} per call")
    return 0


def _report_without_ledger(args: argparse.Namespace, settings: Settings, path: Path) -> int:
    """Nothing was ever recorded: say so, and where the ledger will be, without creating it."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from .reports import period_days

    tz = settings.budget.timezone
    first, last, label = period_days(datetime.now(ZoneInfo(tz)).date(), args.period, args.since, args.until)
    print(f"Spend {label} ({first} .. {last}, {tz})")
    print(f"No ledger yet at {path}: nothing has been spent. The server creates it on its first call.")
    b = settings.budget
    limits = [("global", "daily", b.daily_usd), ("global", "monthly", b.monthly_usd), ("global", "per_request", b.per_request_usd)]
    for kind, scopes in (("provider", b.providers), ("tag", b.tags)):
        for name, lim in scopes.items():
            limits += [(f"{kind}:{name}", "daily", lim.daily_usd), (f"{kind}:{name}", "monthly", lim.monthly_usd)]
    for scope, period, limit in limits:
        if limit is not None:
            print(f"budget {scope} {period}: ${limit} (config), nothing spent")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(ledger=args.ledger)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-router-mcp",
        description="An MCP server that routes LLM work to the right model within a hard budget.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"llm-router-mcp {__version__}")
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
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                       help="what the server logs on stderr (default info; keys are never logged)")
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
    if not argv or argv[0] not in (*_COMMANDS, "-h", "--help", "-V", "--version"):
        argv = ["serve", *argv]  # a client entry needs no arguments: serving over stdio is the default
    args = parser.parse_args(argv)
    if getattr(args, "ledger", None) and not getattr(args, "demo", True):
        parser.error("--ledger applies with --demo only; a real ledger is named by $LLM_ROUTER_DB or [ledger] path")
    if getattr(args, "demo", False) and getattr(args, "config", None):
        parser.error("--demo serves the built-in demo configuration: give --demo or --config, not both")
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
