"""``llm-router-mcp demo``: the server on mock providers, driven through a real MCP client over stdio.

Every tool and resource is used once or more, and what an assistant would see is printed.
No keys, no network: the providers are mocks named after real ones, priced like the real models.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import tempfile
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from .types import plural

__all__ = ["run_demo"]


def _say(title: str) -> None:
    print(f"\n== {title}")


def _show(text: str, width: int = 100) -> None:
    for line in text.splitlines() or [""]:
        print(textwrap.indent(textwrap.fill(line, width) if len(line) > width else line, "   "))


def _parts(parts: dict[str, Any]) -> str:
    """Score parts in words: ``quality fit 1, cost 0.25, speed 0.5, reliability 1``."""
    return ", ".join(f"{name.replace('_', ' ')} {value:g}" if isinstance(value, (int, float)) else f"{name.replace('_', ' ')} {value}"
                     for name, value in parts.items())


def _error_of(result: Any) -> dict[str, Any]:
    """The machine-readable error of a tool error: in ``_meta`` (``llm-router/error``), or, from
    servers that still send it, in the structured content."""
    meta = getattr(result, "meta", None) or {}
    err = meta.get("llm-router/error") if isinstance(meta, dict) else None
    if not isinstance(err, dict):
        err = (result.structured_content or {}).get("error")
    return err if isinstance(err, dict) else {}


async def _drive(ledger: str) -> int:
    from mcp.client.stdio import StdioServerParameters, stdio_client

    # The server is started with the SDK's minimal environment (HOME, PATH, ...): no API key
    # reaches it, so every provider is a mock and nothing leaves the machine.
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "llm_router", "serve", "--demo", "--ledger", ledger]
    )
    # The server's stderr, where it says what happened besides each result (fallbacks, budget
    # warnings), one JSON object a line: written before the result it goes with, so read after it.
    folder = tempfile.TemporaryDirectory(prefix="llm-router-demo-")
    errlog = open(Path(folder.name) / "stderr.log", "a", encoding="utf-8")  # noqa: SIM115 - the server's, for as long as it runs
    said = open(errlog.name, encoding="utf-8")  # noqa: SIM115 - read as it is written

    def events() -> None:
        for line in said.read().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and "event" in event:
                print(f"   stderr ({event.get('level')}): {event.get('message')}")
            else:
                print(line, file=sys.stderr)

    try:
        return await _session(stdio_client(params, errlog=errlog), events)
    finally:
        events()
        said.close()
        errlog.close()
        folder.cleanup()


async def _session(transport: Any, events: Callable[[], None]) -> int:
    """Every tool and resource, through ``transport``; ``events`` prints what the server said on stderr."""
    from mcp import Client
    from mcp_types import TextResourceContents

    failures = 0
    async with Client(transport) as client:

        async def call(name: str, arguments: dict[str, Any], *, expect_error: bool = False,
                       quiet: bool = False) -> dict[str, Any]:
            """Call a tool and print what an assistant sees (``quiet``: only the call, and an error)."""
            nonlocal failures
            seen: list[str] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                # Routing news, not the streamed text (which arrives whole in the result).
                if message and (message.startswith("asking") or "falling back" in message):
                    seen.append(message)

            print(f"-> {name}({json.dumps(arguments)})")
            result = await client.call_tool(name, arguments, progress_callback=on_progress)
            for msg in seen:
                print(f"   progress: {msg}")
            events()
            text = "".join(getattr(block, "text", "") for block in result.content)
            if not quiet or result.is_error:
                _show(("ERROR: " if result.is_error else "") + text.rstrip())
            if result.is_error:
                # What a program reads instead of the text: the code, and the field or request it concerns.
                err = _error_of(result)
                facts = {k: err[k] for k in ("code", "field", "request_id") if err.get(k)}
                print(f"   machine-readable: {json.dumps(facts) if facts else 'none'}")
            if result.is_error != expect_error:
                failures += 1
                print("   !! unexpected outcome")
            return _error_of(result) if result.is_error else result.structured_content or {}

        async def read(uri: str) -> Any:
            result = await client.read_resource(uri)
            content = result.contents[0]
            if not isinstance(content, TextResourceContents):  # every resource the server has is JSON text
                raise TypeError(f"{uri} was sent as {type(content).__name__}, not text")
            return json.loads(content.text)

        print("Started llm-router-mcp over stdio with the built-in demo configuration.")
        print("Its providers are MOCKS named after real ones (no network, no keys), priced with real prices.")

        _say("tools/list — what an assistant is offered")
        for tool in (await client.list_tools()).tools:
            print(f"   {tool.name}: {tool.description}")

        _say("resource llm-router://providers")
        for p in (await read("llm-router://providers"))["providers"]:
            models = ", ".join(f"{m['model'].split(':', 1)[1]} ({m['tier']})" for m in p["models"])
            print(f"   {p['name']}: {p['imitates']} — {models}")

        _say("route_explain — which model would take a quick summary, and why (nothing is spent)")
        explained = await call("route_explain", {"prompt": "Summarise the plot of Hamlet in two lines.", "quality": "low"})
        for c in explained.get("candidates", [])[:3]:
            print(f"   candidate {c['model']}: score {c['score']} ({_parts(c['score_parts'])}), about ${c['estimated_cost_usd']}")

        _say("complete — the same request, answered by the model route_explain put first")
        done = await call("complete", {"prompt": "Summarise the plot of Hamlet in two lines.", "quality": "low", "tag": "demo"})
        if explained.get("chain") and done.get("model") != explained["chain"][0]:
            failures += 1
            print("   !! complete did not follow route_explain")

        _say("complete with task_type — a routing rule picks the chain")
        await call("complete", {"prompt": "Write a Python function that reverses a string.", "task_type": "code_generation", "max_tokens": 300})

        _say("complete, twice, on the summarize rule — the mock Gemini is rate-limited every other call; watch the fallback")
        await call("complete", {"prompt": "Summarise: the meeting moved to Tuesday.", "task_type": "summarize", "max_tokens": 100})
        second = await call("complete", {"prompt": "Summarise: the launch slipped a week.", "task_type": "summarize", "max_tokens": 100})
        for a in second.get("attempts", []):
            print(f"   attempt {a['model']}: {a['outcome']}" + (f" ({a['error_code']})" if a.get("error_code") else ""))

        _say("complete with an explicit model")
        await call("complete", {"model": "ollama:llama3.1", "prompt": "Say hello in French."})

        _say("complete with response_format — the answer is JSON checked against your schema")
        person = {"type": "object", "additionalProperties": False, "required": ["name", "born", "fields"],
                  "properties": {"name": {"type": "string"}, "born": {"type": "integer"},
                                 "fields": {"type": "array", "items": {"enum": ["mathematics", "computing", "poetry"]}}}}
        extracted = await call("complete", {"prompt": "Ada Lovelace (1815) wrote the first published program.",
                                            "response_format": {"type": "json_schema", "schema": person}, "tag": "demo"})
        print(f"   json: {json.dumps(extracted.get('json'))}")

        _say("complete with tools — the model asks for a function call; the conversation goes on with its result")
        weather = {"name": "get_weather", "description": "Current weather for a city",
                   "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
        asked = await call("complete", {"prompt": "What's the weather in Oslo?", "tools": [weather], "tool_choice": "required"})
        for c in asked.get("tool_calls") or []:
            print(f"   tool call {c['id']}: {c['name']}({json.dumps(c['arguments'])})")
            await call("complete", {"tools": [weather], "messages": [
                {"role": "user", "content": "What's the weather in Oslo?"},
                {"role": "assistant", "tool_calls": [c]},
                {"role": "tool", "tool_call_id": c["id"], "content": "-3 C, light snow"}]})

        _say("complete with an image — only models with vision are asked")
        await call("complete", {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image", "data": _tiny_png(), "mimeType": "image/png"}]}]})

        _say("rate — the assistant checked a delegated answer; the router learns from it")
        for task, prompt, score in (("classify", "Is this review positive? 'Loved it.'", 5),
                                    ("classify", "Is this review positive? 'Meh, fine.'", 4),
                                    ("math", "Solve 3x + 7 = 22, showing the steps.", 2)):
            asked = await call("complete", {"prompt": prompt, "task_type": task, "model": "openai:gpt-4o-mini",
                                            "max_tokens": 60}, quiet=True)
            if asked.get("request_id"):
                await call("rate", {"request_id": asked["request_id"], "score": score})

        _say("route_explain with strategy adaptive — what it learned, and the models it still has to try")
        for task in ("classify", "math"):
            plan = (await call("route_explain", {"prompt": "…", "task_type": task, "strategy": "adaptive"},
                               quiet=True)).get("adaptive") or {}
            known = (plan.get("estimates") or {}).get("openai:gpt-4o-mini", {})
            print(f"   {task}: gpt-4o-mini estimated {known.get('estimate')} ({plural(known.get('ratings') or 0, 'rating')}); "
                  f"{plan.get('mode')}: {plan.get('why')}")

        _say("route_explain with quality auto — the tier is judged from the request itself")
        judged = (await call("route_explain", {"prompt": "Prove that there are infinitely many primes, step by step.",
                                               "quality": "auto"}, quiet=True)).get("quality_auto") or {}
        print(f"   verdict {judged.get('verdict')} (score {judged.get('score')}): {', '.join(judged.get('reasons', []))}")

        _say("set_budget — cap today's spend at $0.002, then ask for a critical-quality answer")
        await call("set_budget", {"scope": "global", "period": "daily", "limit_usd": 0.002})
        await call("complete", {"prompt": "Draft a detailed migration plan.", "quality": "critical", "max_tokens": 4000}, expect_error=True)

        _say("resource llm-router://budgets")
        for b in (await read("llm-router://budgets"))["budgets"]:
            extra = f", spent ${b['spent_usd']}, held ${b['reserved_usd']}, resets {b['resets_at']}" if "spent_usd" in b else ""
            print(f"   {b['scope']} {b['period']}: limit ${b['limit_usd']} ({b['source']}){extra}")
        await call("set_budget", {"scope": "global", "period": "daily", "limit_usd": 5})

        _say("cost_report — today, by model")
        report = await call("cost_report", {"period": "today", "group_by": "model"})
        if report.get("savings"):
            s = report["savings"]
            print(f"   savings: ${s['saved_usd']} against always using {s['reference_model']} (${s['reference_cost_usd']})")

        _say("dashboard — today (a page in hosts with MCP Apps; this text elsewhere)")
        await call("dashboard", {"period": "today"})

        _say("resource llm-router://ledger — the rows behind the report")
        for row in (await read("llm-router://ledger"))["entries"][:8]:
            # A call refused before any model was asked has no model: say what stopped it instead.
            who = f"{row['provider']}:{row['model']}" if row["model"] else f"no model asked ({row.get('error_code') or row['status']})"
            print(f"   {row['ts']} {row['status']:<8} {who} "
                  f"{row['input_tokens']}+{row['output_tokens']} tok ${row['cost_usd']}, {plural(len(row['attempts']), 'attempt')}")
        today = (await read("llm-router://budgets"))["budgets"][0].get("period_start")
        if today:
            day = await read(f"llm-router://ledger/{today}")
            print(f"   llm-router://ledger/{today}: {plural(len(day['entries']), 'entry', 'entries')}")

        _say("bad input is a clear tool error, and the server keeps serving")
        await call("complete", {"prompt": ""}, expect_error=True)
        await call("complete", {"prompt": "hi", "model": "anthropic:claude-haiku-9"}, expect_error=True)
        # A misspelt argument is refused, not dropped: this one would have silently removed a spending cap.
        await call("complete", {"prompt": "hi", "max_cost": 0.01}, expect_error=True)
        await call("set_budget", {"scope": "global", "period": "daily", "limit_usd": -1}, expect_error=True)

    print("\nDemo finished" + (f" with {plural(failures, 'unexpected outcome')}." if failures else ": every tool and resource answered as expected."))
    return 1 if failures else 0


def _tiny_png() -> str:
    """A 2x2 PNG, as base64: an image to send without a file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    pixels = zlib.compress(b"\x00\xff\x00\x00\x00\x00\xff\x00" * 2)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


def run_demo(ledger: str | None = None) -> int:
    if ledger:
        return anyio.run(_drive, ledger)
    with tempfile.TemporaryDirectory(prefix="llm-router-demo-") as tmp:
        return anyio.run(_drive, str(Path(tmp) / "ledger.db"))
